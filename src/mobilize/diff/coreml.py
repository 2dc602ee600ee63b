"""Core ML: every intermediate tensor of an ML Program, observed or fed, with mobilize's reference interpreter.

Core ML's own runtime exposes only a model's declared outputs (and exists only on macOS); the reference interpreter
(:mod:`mobilize.runtime.coreml_ref`) executes the program op by op, so every op output can be observed
(``Program.run(observe=…)``) and replaced (``Program.run(substitute=…)``) — feeding each layer PyTorch's input.
The numbers are the interpreter's (float32 compute, fp16 rounding where the program declares it), not the Neural
Engine's.

Provenance: coremltools names each op output after the fx node of the program it converted (mobilize converts
``program.run_decompositions()``), with ``_cast_fp16`` and similar suffixes in fp16 programs; the parent process maps
those node names to PyTorch modules through the captured graph's ``nn_module_stack``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.diff.graph import Graph, Tensor, quant_record


def _program(path: Path) -> Any:
    from mobilize.runtime.coreml_ref.program import Program

    program = Program(path)
    program.check_supported()
    return program


def _bound(op: Any) -> dict[str, list[str]]:
    return {k: [b.name for b in v.arguments if b.WhichOneof("binding") == "name"] for k, v in op.inputs.items()}


def read(path: Path) -> Graph:
    from mobilize.runtime.coreml_ref.program import _dtype_name, _static_shape

    program = _program(path)
    consts = program.constants()
    tensors: list[Tensor] = []
    by_name: dict[str, Tensor] = {}
    for k, inp in enumerate(program.function.inputs):
        tt = inp.type.tensorType
        shape = [s if s is not None else -1 for s in _static_shape(tt)]
        dtype = {"FLOAT32": "float32", "FLOAT16": "float16", "INT32": "int32", "BOOL": "bool"}.get(_dtype_name(tt), "")
        t = Tensor(len(tensors), inp.name, "input", inp.name, -1, shape, dtype, input=k, io_name=inp.name)
        tensors.append(t)
        by_name[t.name] = t
    for step, op in enumerate(program.block.operations):
        if op.type == "const" or op.type.startswith("constexpr_"):
            continue
        bound = _bound(op)
        names = [n for ns in bound.values() for n in ns]
        if names and all(n in consts for n in names):
            continue  # computed from constants only
        quant = None
        if op.type == "quantize":
            scale = consts.get((bound.get("scale") or [""])[0])
            zp = consts.get((bound.get("zero_point") or [""])[0])
            if scale is None:
                scale = _immediate(program, op, "scale")
            if zp is None:
                zp = _immediate(program, op, "zero_point")
            dtype = str(_immediate(program, op, "output_dtype") or "int8")
            axis = _immediate(program, op, "axis")
            if scale is not None:
                quant = quant_record(scale, zp, dtype if dtype in ("int8", "uint8") else "int8",
                                     int(axis) if axis is not None else None)
        elif op.type == "dequantize":
            src = (bound.get("input") or [""])[0]
            quant = by_name[src].quant if src in by_name else None
        ins = [by_name[n].index for n in names if n in by_name]
        for out in op.outputs:
            t = Tensor(len(tensors), out.name, op.type, out.name, step, None, "", ins, [], out.name,
                       [n for n in names if n in consts], quant)
            tensors.append(t)
            by_name[t.name] = t
    for k, name in enumerate(program.output_names):
        if name in by_name:
            by_name[name].output = k
            by_name[name].io_name = name
    return Graph("coreml", tensors, "reference")


def _immediate(program: Any, op: Any, key: str) -> Any:
    """An op parameter given as an immediate value (not a named constant), decoded; None when absent."""
    arg = op.inputs.get(key)
    if arg is None:
        return None
    for b in arg.arguments:
        if b.WhichOneof("binding") == "value":
            return program.decode(b.value)
    return None


def run(path: Path, graph: Graph, samples: Sequence[dict[int, np.ndarray]],
        fed: dict[int, list[np.ndarray]] | None = None, threads: int = 1) -> list[dict[int, np.ndarray]]:
    from mobilize.diff.graph import dequantize

    program = _program(path)
    fed = fed or {}
    wanted = {t.name: t for t in graph.tensors if t.op != "input"}
    results = []
    for n, sample in enumerate(samples):
        feeds = {graph.tensors[i].name: v for i, v in sample.items()}
        seen: dict[str, np.ndarray] = {}

        def observe(_op: str, name: str, value: Any, seen: dict[str, np.ndarray] = seen) -> None:
            if name in wanted:
                seen[name] = np.array(value)

        substitute = {graph.tensors[i].name: np.asarray(v[n]) for i, v in fed.items()}
        program.run(feeds, observe=observe, substitute=substitute or None)
        out: dict[int, np.ndarray] = {i: np.asarray(v) for i, v in sample.items()}
        for name, t in wanted.items():
            if name in seen:
                raw = seen[name]
                if not results:
                    t.dtype, t.shape = t.dtype or raw.dtype.name, t.shape or list(raw.shape)
                out[t.index] = dequantize(raw, t.quant)
        results.append(out)
    return results
