"""int8 weights for ONNX recurrent layers (``LSTM``, ``GRU``, ``RNN``), which onnxruntime's quantizers leave float.

``quantize_static`` has no LSTM/GRU/RNN entry in its QDQ or QOperator registries, and ``quantize_dynamic``'s LSTM
path (``operators/lstm.py``) only fires when ``W``/``R`` are initializers — in a torch.onnx file they are computed
from PyTorch's weights by a Slice/Concat chain (gate reordering) that is folded only at load time. A CNN + BiLSTM
model then shrank to 0.87× of fp32 in int8. This pass runs after every int8 recipe, on the quantized file:

- ``LSTM`` (``layout`` 0) → onnxruntime's ``DynamicQuantizeLSTM`` (com.microsoft): ``W``/``R`` int8 per gate row
  (symmetric, onnxruntime's own rounding), input and hidden state quantized to int8 at run time. The node
  ``quantize_dynamic`` emits, applied to static files too::

      X ─▶ LSTM(W: f32[D,4H,I], R: f32[D,4H,H], B, …)
      X ─▶ DynamicQuantizeLSTM(W: i8[D,I,4H], R: i8[D,H,4H], B, …, W_scale: f32[D,4H], W_zp, R_scale, R_zp)

- ``GRU``, ``RNN`` (onnxruntime has no quantized kernel) and ``LSTM`` with ``layout`` 1 → weight-only int8: the
  weight is stored as int8 ``[D·kH, I]`` with one scale per row and dequantized before the op, which computes float::

      W_i8[D·kH, I] ─▶ DequantizeLinear(axis=0) ─▶ Reshape[D, kH, I] ─▶ GRU

  onnxruntime does not constant-fold a ``DequantizeLinear`` at load (its QDQ fusions need them), so the dequantize
  runs once per inference (measured: 1.1–1.2× the fp32 latency on small GRUs; ``DynamicQuantizeLSTM`` ran 0.48–0.8×
  on BiLSTMs with 32+ steps) — see docs/quantization.md.

Layers kept float (``exclude``) keep their float weights; weights that are not constant are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

RECURRENT = ("LSTM", "GRU", "RNN")
#: the inputs of each op type that hold weight matrices (what :func:`float_weights` inspects)
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1,), "ConvTranspose": (1,), "Gemm": (1,), "MatMul": (0, 1), "Gather": (0,),
    "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2),
}
_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row of a 2-D array, as onnxruntime rounds it (scale = max|w| / 127; an all-zero row gets
    scale 1). Returns (int8 values, float32 scales)."""
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def quantize_recurrent(path: Path, exclude: Iterable[str] = ()) -> list[str]:
    """Rewrite the recurrent layers of the ONNX file ``path`` (in place) to int8 weights; returns notes."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    excluded = set(exclude)
    todo = [n for n in model.graph.node if n.op_type in RECURRENT and n.domain in ("", "ai.onnx")
            and n.name not in excluded]
    if not todo:
        return []
    values = _constant_values(model, {n.input[k] for n in todo for k in (1, 2) if len(n.input) > k and n.input[k]})
    dyn: list[str] = []
    dq: list[str] = []
    skipped: list[str] = []
    inits: list[Any] = []
    replaced: dict[int, Any] = {}  # id(node) → DynamicQuantizeLSTM
    before: dict[int, list[Any]] = {}  # id(node) → DequantizeLinear/Reshape nodes feeding it
    for node in todo:
        w, r = (values.get(node.input[k]) if len(node.input) > k else None for k in (1, 2))
        if any(a is None or a.ndim != 3 or a.dtype != np.float32 for a in (w, r)):
            skipped.append(node.op_type)
            continue
        tag = _unique_tag(model, node)
        if node.op_type == "LSTM" and _attr(node, "layout", 0) == 0:  # DynamicQuantizeLSTM has no layout attribute
            replaced[id(node)] = _dynamic_lstm(node, {"W": w, "R": r}, tag, inits)
            dyn.append(node.name)
        else:
            before[id(node)] = _dequantized(node, {"W": w, "R": r}, tag, inits)
            dq.append(node.op_type)
    nodes: list[Any] = []
    for node in model.graph.node:
        nodes += before.get(id(node), [])
        nodes.append(replaced.get(id(node), node))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    if dyn and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    _prune(model)
    path.write_bytes(model.SerializeToString())
    notes = []
    if dyn:
        notes.append(f"LSTM weights int8 per gate row via onnxruntime's DynamicQuantizeLSTM ({len(dyn)} node(s); "
                     "its input and hidden state are quantized to int8 at run time)")
    for op in dict.fromkeys(dq):
        notes.append(f"{op} weights int8 per gate row, dequantized before the op (DequantizeLinear; "
                     f"{dq.count(op)} node(s), float compute: onnxruntime has no quantized {op} kernel)")
    if skipped:
        notes.append(f"{len(skipped)} recurrent layer(s) ({', '.join(sorted(set(skipped)))}) keep float weights: "
                     "W/R are not constant float32 3-D tensors")
    return notes


def _dynamic_lstm(node: Any, weights: dict[str, np.ndarray], tag: str, inits: list[Any]) -> Any:
    """The ``DynamicQuantizeLSTM`` replacing ``node``: int8 W/R transposed to [D, I, 4H] / [D, H, 4H], one scale
    per (direction, gate row) — the layout onnxruntime's own LSTM quantizer writes."""
    from onnx import helper, numpy_helper

    ins = list(node.input)[:8] + [""] * (8 - len(node.input))
    extra = []
    for k, (key, arr) in enumerate(weights.items(), start=1):
        d, rows, cols = arr.shape
        q, scale = quantize_rows(arr.reshape(d * rows, cols))
        name = f"{tag}_{key}"
        inits += [numpy_helper.from_array(q.reshape(d, rows, cols).transpose(0, 2, 1).copy(), f"{name}_int8"),
                  numpy_helper.from_array(scale.reshape(d, rows), f"{name}_scale"),
                  numpy_helper.from_array(np.zeros((d, rows), np.int8), f"{name}_zero_point")]
        ins[k] = f"{name}_int8"
        extra += [f"{name}_scale", f"{name}_zero_point"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "layout"}
    return helper.make_node("DynamicQuantizeLSTM", ins + extra, list(node.output), name=node.name,
                            domain="com.microsoft", **attrs)


def _dequantized(node: Any, weights: dict[str, np.ndarray], tag: str, inits: list[Any]) -> list[Any]:
    """Point ``node``'s W/R at int8 copies dequantized per row; returns the DequantizeLinear/Reshape nodes to insert
    before it. ``DequantizeLinear`` takes one scale axis, so [D, kH, I] is stored as [D·kH, I] and reshaped back."""
    from onnx import helper, numpy_helper

    out = []
    for k, (key, arr) in enumerate(weights.items(), start=1):
        d, rows, cols = arr.shape
        q, scale = quantize_rows(arr.reshape(d * rows, cols))
        name = f"{tag}_{key}"
        inits += [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale"),
                  numpy_helper.from_array(np.zeros(d * rows, np.int8), f"{name}_zero_point"),
                  numpy_helper.from_array(np.array(arr.shape, np.int64), f"{name}_shape")]
        out += [helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                                 [f"{name}_dequantized"], name=f"{name}_DequantizeLinear", axis=0),
                helper.make_node("Reshape", [f"{name}_dequantized", f"{name}_shape"], [f"{name}_float"],
                                 name=f"{name}_Reshape")]
        node.input[k] = f"{name}_float"
    return out


def float_weights(path: Path) -> dict[str, int]:
    """Op types whose weight matrices are stored as float in the ONNX file ``path``, with node counts.

    A weight input (:data:`WEIGHT_INPUTS`) counts as float when it is computed from float initializers of rank ≥ 2
    without passing a ``DequantizeLinear`` (directly, or through constant Slice/Concat/Reshape… chains); inputs that
    depend on a graph input are activations and never count. Quantized ops (QLinearConv, MatMulNBits,
    DynamicQuantizeLSTM …) hold integer weights and are not listed.
    """
    import onnx

    model = onnx.load(str(path))
    kind = _tensor_kinds(model.graph)
    out: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        idx = WEIGHT_INPUTS.get(node.op_type, ())
        if any(i < len(node.input) and kind.get(node.input[i]) == "float" for i in idx):
            out[node.op_type] = out.get(node.op_type, 0) + 1
    return out


def _tensor_kinds(graph: Any) -> dict[str, str]:
    """Per tensor: ``input`` (depends on a graph input), ``float`` (a float weight of rank ≥ 2 reaches it without a
    DequantizeLinear), ``quantized`` (comes out of a DequantizeLinear of constants) or ``const``."""
    from onnx import helper

    kind: dict[str, str] = {i.name: "input" for i in graph.input}
    for t in graph.initializer:
        kind[t.name] = "float" if t.data_type in _FLOAT_TYPES and len(t.dims) >= 2 else "const"
    rank = {"const": 0, "quantized": 1, "float": 2, "input": 3}
    for node in graph.node:
        ins = [kind.get(i, "const") for i in node.input if i]
        if node.op_type == "Constant":
            v = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "value"), None)
            k = "float" if v is not None and v.data_type in _FLOAT_TYPES and len(v.dims) >= 2 else "const"
        elif "input" in ins:
            k = "input"
        elif node.op_type == "DequantizeLinear":
            k = "quantized"
        else:
            k = max(ins, key=rank.__getitem__, default="const")
        for o in node.output:
            kind[o] = k
    return kind


def _constant_values(model: Any, names: set[str]) -> dict[str, np.ndarray]:
    """Values of the tensors ``names`` that are initializers or computed from constants only (evaluated with
    onnxruntime on the sub-graph that computes them); tensors that depend on a graph input are left out."""
    from onnx import ValueInfoProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = {n: numpy_helper.to_array(inits[n]) for n in names if n in inits}
    kinds = _tensor_kinds(model.graph)
    rest = sorted(n for n in names if n not in inits and kinds.get(n) in ("float", "const", "quantized"))
    if not rest:
        return out
    producer = {o: n for n in model.graph.node for o in n.output}
    cone: set[int] = set()
    stack = list(rest)
    needed_inits: set[str] = set()
    while stack:
        t = stack.pop()
        if t in inits:
            needed_inits.add(t)
            continue
        node = producer.get(t)
        if node is None or id(node) in cone:
            continue
        cone.add(id(node))
        stack.extend(i for i in node.input if i)
    sub = helper.make_graph([n for n in model.graph.node if id(n) in cone], "weights", [],
                            [ValueInfoProto(name=n) for n in rest],
                            [inits[n] for n in sorted(needed_inits)])
    sub_model = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(sub_model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        out.update(zip(rest, sess.run(rest, {})))
    except Exception:  # noqa: BLE001 - a weight that cannot be evaluated stays float (reported as skipped)
        return out
    return out


def _prune(model: Any) -> None:
    """Drop nodes whose outputs nothing reads, then unused initializers and stale value_info (after a rewrite)."""
    graph = model.graph
    used = {o.name for o in graph.output}
    live: list[Any] = []
    for node in reversed(list(graph.node)):
        if any(o in used for o in node.output if o):
            live.append(node)
            used.update(i for i in node.input if i)
            used.update(_subgraph_names(node))
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    known = used | {o for n in live for o in n.output}
    vi = [v for v in graph.value_info if v.name in known]
    del graph.value_info[:]
    graph.value_info.extend(vi)


def _subgraph_names(node: Any) -> set[str]:
    """Every tensor name read inside a node's sub-graphs (If/Loop/Scan bodies may read outer-scope values)."""
    from onnx import AttributeProto

    names: set[str] = set()
    for a in node.attribute:
        graphs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs) if a.type == AttributeProto.GRAPHS else []
        for g in graphs:
            for n in g.node:
                names.update(i for i in n.input if i)
                names.update(_subgraph_names(n))
    return names


def _unique_tag(model: Any, node: Any) -> str:
    """A prefix for the node's new tensors (``{tag}_W_int8`` …) that no existing tensor name starts with."""
    base = node.name or f"{node.op_type}_{node.output[0]}"
    taken = [n for n in [*(i.name for i in model.graph.initializer), *(o for x in model.graph.node for o in x.output)]
             if n.startswith(base)]
    tag, i = base, 0
    while any(n.startswith((f"{tag}_W_", f"{tag}_R_")) for n in taken):
        i += 1
        tag = f"{base}_{i}"
    return tag


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default
