"""Weight-only int8 for ONNX: every weight matrix stored as int8 (one scale per output channel), dequantized before
its op, which computes in float — the ONNX ``int8-weights`` recipe ``weight-only``.

onnxruntime's ``quantize_dynamic`` (recipe ``dynamic``) also stores int8 weights, but it quantizes activations at run
time and runs ConvInteger/MatMulInteger: on convolutions that was 4–13× *slower* than fp32 on this CPU. An app that
asks for ``int8-weights`` wants a file a quarter the size; this recipe gives that at float speed (the dequantize runs
once per inference, over the weights only)::

    W: f32[O, I, kH, kW] ─▶ Conv                 becomes      W: i8[O, I, kH, kW] ─▶ DequantizeLinear(axis=0) ─▶ Conv

Conv/ConvTranspose/Gemm/MatMul/Gather weights and LSTM/GRU/RNN W/R (rows per gate,
:func:`mobilize.quantize.onnx_recurrent.quantize_rows`) are covered; layers kept float (``exclude``) and weights that
are not constant stay float. The driver measures it against ``dynamic`` and keeps the faster file that meets the
target.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.quantize.onnx_recurrent import RECURRENT, _constant_values, _prune, quantize_rows
from mobilize.runtime.onnx import SESSION_CONFIG_KEY

#: op → (weight input index, the axis of that weight that indexes output channels)
_AXES: dict[str, tuple[int, int]] = {"Conv": (1, 0), "ConvTranspose": (1, 1), "Gather": (0, 0)}
#: weights smaller than this many elements stay float (1: every weight matrix is int8, as with the dynamic recipe)
MIN_ELEMENTS = 1


def _weight_axis(node: Any) -> tuple[int, int] | None:
    from mobilize.quantize.onnx_recurrent import _attr

    if node.op_type in _AXES:
        return _AXES[node.op_type]
    if node.op_type == "Gemm":
        return (1, 0) if _attr(node, "transB", 0) else (1, 1)
    if node.op_type == "MatMul":
        return (1, -1)
    return None


def quantize_weights(src: Path, dest: Path, exclude: Iterable[str] = ()) -> list[str]:
    """Write ``dest``: ``src`` with its weight matrices int8 + DequantizeLinear; returns notes."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    excluded = set(exclude)
    wanted: dict[str, tuple[int, Any]] = {}  # weight tensor → (axis, first consumer)
    recurrent: list[Any] = []
    for node in model.graph.node:
        if node.name in excluded or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in RECURRENT:
            recurrent.append(node)
            continue
        where = _weight_axis(node)
        if where is not None and where[0] < len(node.input) and node.input[where[0]]:
            wanted.setdefault(node.input[where[0]], (where[1], node))
    values = _constant_values(model, set(wanted) | {n.input[k] for n in recurrent for k in (1, 2)
                                                      if len(n.input) > k and n.input[k]})
    new_nodes: dict[int, list[Any]] = {}
    inits: list[Any] = []
    counts: dict[str, int] = {}
    renamed: dict[str, str] = {}
    for name, (axis, node) in wanted.items():
        w = values.get(name)
        if w is None or w.dtype != np.float32 or w.ndim < 2 or w.size < MIN_ELEMENTS:
            continue
        ax = axis % w.ndim
        rows = np.moveaxis(w, ax, 0)
        q, scale = quantize_rows(rows.reshape(rows.shape[0], -1))
        q = np.moveaxis(q.reshape(rows.shape), 0, ax)
        base = f"{name}_w8"
        inits += [numpy_helper.from_array(np.ascontiguousarray(q), f"{base}_int8"),
                  numpy_helper.from_array(scale, f"{base}_scale"),
                  numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{base}_zero_point")]
        new_nodes.setdefault(id(node), []).append(helper.make_node(
            "DequantizeLinear", [f"{base}_int8", f"{base}_scale", f"{base}_zero_point"], [f"{base}_float"],
            name=f"{base}_DequantizeLinear", axis=ax))
        renamed[name] = f"{base}_float"
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    for node in model.graph.node:  # every reader of a quantized weight reads the dequantized copy
        if node.name in excluded:
            continue
        for i, inp in enumerate(node.input):
            if inp in renamed:
                node.input[i] = renamed[inp]
    from mobilize.quantize.onnx_recurrent import _dequantized, _unique_tag

    for node in recurrent:
        w, r = (values.get(node.input[k]) if len(node.input) > k else None for k in (1, 2))
        if any(a is None or a.ndim != 3 or a.dtype != np.float32 for a in (w, r)):
            continue
        new_nodes.setdefault(id(node), []).extend(_dequantized(node, {"W": w, "R": r}, _unique_tag(model, node),
                                                               inits))
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    nodes: list[Any] = []
    for node in model.graph.node:
        nodes += new_nodes.get(id(node), [])
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    _prune(model)
    import json

    model.metadata_props.add(key=SESSION_CONFIG_KEY, value=json.dumps({"session.disable_quant_qdq": "1"}))
    dest.write_bytes(model.SerializeToString())
    done = ", ".join(f"{op} ×{n}" for op, n in sorted(counts.items()))
    return [f"weights int8 per output channel, dequantized before each op; activations and compute stay float "
            f"({done or 'no weight large enough'})",
            "load it with the onnxruntime session option session.disable_quant_qdq=1 (written in the file's "
            f"metadata under {SESSION_CONFIG_KEY}): the weights are then dequantized once, at load, and the file runs "
            "at fp32 speed"]
