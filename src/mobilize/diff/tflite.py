"""TFLite: every intermediate tensor of a ``.tflite`` file, observed or fed, with LiteRT's Interpreter.

Observing uses ``experimental_preserve_all_tensors`` (the interpreter keeps every tensor after ``invoke``).
Provenance is the tensor name: litert-torch writes the PyTorch module scope of each op as
``<root class>/<class>_<attr>/…`` locations separated by ``;`` — a fused op lists every module it absorbed
(``…ReLU6_2;;…BatchNorm2d_1;;…Conv2d_0;1``). An output tensor named by the signature
(``serving_default_output_0_output``) is resolved through the names of the weights its op reads.

Feeding rewrites a copy of the flatbuffer (LiteRT's own object API): each fed tensor gets a twin that becomes a
subgraph input, and every op that read the tensor reads the twin; the original stays computed (a subgraph output).
int8 tensors are fed PyTorch's values rounded to the tensor's own scale and zero point.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.diff.graph import Graph, Tensor, dequantize, quant_record, quantize


def _constant_ids(data: bytes) -> set[int]:
    """Tensors of subgraph 0 backed by a non-empty buffer (weights, biases, shape constants)."""
    from mobilize.runtime.tflite_flatbuffer import schema

    S = schema()
    model = S.Model.GetRootAs(data, 0)
    sg = model.Subgraphs(0)
    out = set()
    for i in range(sg.TensorsLength()):
        b = sg.Tensors(i).Buffer()
        if 0 < b < model.BuffersLength():
            buf = model.Buffers(b)
            if buf.DataLength() > 0 or buf.Size() > 0:
                out.add(i)
    return out


def _interpreter(data: bytes, preserve: bool = True, xnnpack: bool = True) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from mobilize._quiet import quiet_imports

    quiet_imports()
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is intended for debugging": that is what this is
        it = Interpreter(model_content=data, experimental_preserve_all_tensors=preserve,
                         experimental_op_resolver_type=resolver, num_threads=1)
    it.allocate_tensors()
    return it


def _quant(detail: dict[str, Any]) -> dict[str, Any] | None:
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []))
    dtype = np.dtype(detail["dtype"])
    if not scales.size or dtype.kind not in "iu":
        return None
    return quant_record(scales, q.get("zero_points"), dtype.name, int(q.get("quantized_dimension", 0)))


def locations(name: str) -> list[str]:
    """``"a/b;;c/d;1"`` → ``["a/b", "c/d"]`` (empty and numeric suffix parts dropped)."""
    return [p for p in name.split(";") if p and not p.isdigit()]


def read(path: Path) -> Graph:
    data = path.read_bytes()
    it = _interpreter(data, preserve=False, xnnpack=False)  # the file's own ops, not delegate partitions
    details = {int(d["index"]): d for d in it.get_tensor_details()}
    const = _constant_ids(data)
    tensors: list[Tensor] = []
    by_tid: dict[int, Tensor] = {}
    sig = _signature(it)
    in_names = {int(d["index"]): n for n, d in sig[0].items()}
    out_names = {int(d["index"]): n for n, d in sig[1].items()}
    from mobilize.runtime.base import natural_key

    in_order = sorted(in_names, key=lambda i: natural_key(in_names[i])) or [int(d["index"])
                                                                           for d in it.get_input_details()]
    for k, tid in enumerate(in_order):
        d = details[tid]
        tensors.append(Tensor(len(tensors), d["name"], "input", d["name"], -1, [int(s) for s in d["shape"]],
                              np.dtype(d["dtype"]).name, input=k, io_name=in_names.get(tid, d["name"]), tid=tid,
                              quant=_quant(d)))
        by_tid[tid] = tensors[-1]
    for op in it._get_ops_details():  # noqa: SLF001 - the only op-level listing the interpreter offers
        ins = [int(i) for i in op["inputs"] if int(i) >= 0]
        if all(i in const for i in ins):
            const.update(int(o) for o in op["outputs"])
            continue
        for o in op["outputs"]:
            d = details[int(o)]
            t = Tensor(len(tensors), d["name"], op["op_name"], d["name"], int(op["index"]),
                       [int(s) for s in d["shape"]], np.dtype(d["dtype"]).name,
                       [by_tid[i].index for i in ins if i in by_tid], locations(d["name"]),
                       weights=[details[i]["name"] for i in ins if i in const], quant=_quant(d), tid=int(o))
            tensors.append(t)
            by_tid[t.tid] = t
    from mobilize.runtime.base import natural_key as nk

    for k, tid in enumerate(sorted(out_names, key=lambda i: nk(out_names[i]))):
        if tid in by_tid:
            by_tid[tid].output = k
            by_tid[tid].io_name = out_names[tid]
    return Graph("tflite", tensors, "ai-edge-litert")


def _signature(it: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    sigs = it.get_signature_list()
    if not sigs:
        return {}, {}
    key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
    runner = it.get_signature_runner(key)
    return runner.get_input_details(), runner.get_output_details()


def _with_fed_inputs(data: bytes, tids: Sequence[int]) -> tuple[bytes, dict[int, int]]:
    """A copy of the model where each tensor of ``tids`` has a twin subgraph input that its readers read."""
    from ai_edge_litert import schema_py_generated as S
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(data))
    sg = model.subgraphs[0]
    model.buffers.append(S.BufferT())  # an empty buffer: the twins hold run-time data
    empty = len(model.buffers) - 1
    twins: dict[int, int] = {}
    for tid in tids:
        twin = copy.copy(sg.tensors[tid])
        name = twin.name.decode() if isinstance(twin.name, bytes) else str(twin.name or "")
        twin.name = (name + "::fed").encode()
        twin.buffer = empty
        sg.tensors.append(twin)
        twins[tid] = len(sg.tensors) - 1
        sg.inputs = [*list(sg.inputs), twins[tid]]
        if tid not in list(sg.outputs):
            sg.outputs = [*list(sg.outputs), tid]
    for op in sg.operators:
        op.inputs = [twins.get(int(i), int(i)) for i in op.inputs]
    model.signatureDefs = []  # they name the original inputs only
    return bytes(fu.convert_object_to_bytearray(model)), twins


def run(path: Path, graph: Graph, samples: Sequence[dict[int, np.ndarray]],
        fed: dict[int, list[np.ndarray]] | None = None, threads: int = 1) -> list[dict[int, np.ndarray]]:
    data = path.read_bytes()
    twins: dict[int, int] = {}
    if fed:
        data, twins = _with_fed_inputs(data, [graph.tensors[i].tid for i in fed])
    try:
        return _run(data, graph, samples, fed or {}, twins, xnnpack=True)
    except Exception as exc:  # noqa: BLE001 - XNNPACK may refuse a rewritten graph; the builtin kernels run it
        if "XNNPack" not in str(exc) and "delegate" not in str(exc).lower():
            raise
        graph.notes.append("XNNPACK could not run the exposed graph; LiteRT's builtin kernels ran it")
        return _run(data, graph, samples, fed or {}, twins, xnnpack=False)


def _run(data: bytes, graph: Graph, samples: Sequence[dict[int, np.ndarray]], fed: dict[int, list[np.ndarray]],
         twins: dict[int, int], xnnpack: bool) -> list[dict[int, np.ndarray]]:
    it = _interpreter(data, preserve=True, xnnpack=xnnpack)
    results = []
    for n, sample in enumerate(samples):
        for i, v in sample.items():
            it.set_tensor(graph.tensors[i].tid, np.ascontiguousarray(v))
        for i in fed:
            t = graph.tensors[i]
            it.set_tensor(twins[t.tid], np.ascontiguousarray(_as_file(fed[i][n], t)))
        it.invoke()
        out: dict[int, np.ndarray] = {i: np.asarray(v) for i, v in sample.items()}
        for t in graph.tensors:
            if t.op == "input":
                continue
            out[t.index] = dequantize(np.array(it.get_tensor(t.tid)), t.quant)
        results.append(out)
    return results


def _as_file(value: np.ndarray, t: Tensor) -> np.ndarray:
    dtype = np.dtype(t.dtype or "float32")
    value = np.asarray(value).reshape(t.shape) if t.shape and np.asarray(value).size == int(np.prod(t.shape)) \
        else np.asarray(value)
    if t.quant and dtype.kind in "iu":
        return quantize(value, t.quant, dtype.name)
    return value.astype(dtype)
