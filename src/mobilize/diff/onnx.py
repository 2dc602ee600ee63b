"""ONNX: every intermediate tensor of a file, observed (extra graph outputs on a copy) or fed.

Provenance: torch.onnx writes ``pkg.torch.onnx.name_scopes`` (the module path, then the fx node) and
``pkg.torch.onnx.fx_node`` on every node, and names each value after its fx node. onnxruntime's quantizers drop the
node metadata but keep the value names, so a quantized file is resolved through its fp32 sibling's metadata
(:func:`scopes_by_value`).

Feeding: each fed tensor ``t`` gets a new graph input ``t::fed`` and every node that read ``t`` reads it instead;
``t`` itself stays a graph output. One run then gives every layer's output computed from PyTorch's own inputs.
Exposing a tensor keeps onnxruntime from fusing across it, so a quantized kernel may round one step differently
from the shipped graph.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.diff.graph import Graph, Tensor, dequantize, quant_record, quantize

FED = "::fed"
_RULE = "pkg.onnxscript.rewriter.rule_name"
#: QOperator ops (onnxruntime's ``qoperator`` format): positions of the output scale and zero point among the inputs
_QOUT = {"QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QGemm": (7, 8), "QLinearAdd": (6, 7),
         "QLinearMul": (6, 7), "QLinearConcat": (0, 1), "QLinearSigmoid": (3, 4), "QLinearLeakyRelu": (3, 4),
         "QLinearAveragePool": (3, 4), "QLinearGlobalAveragePool": (3, 4), "QLinearSoftmax": (3, 4),
         "QLinearReduceMean": (3, 4)}
#: ops that move integer values without changing their grid
_KEEPS_GRID = {"MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather", "Identity",
               "Split", "Concat", "Pad", "Resize", "DepthToSpace", "SpaceToDepth"}
#: suffixes onnxruntime's quantizers add to a value's name (the rest is the fx node name torch.onnx gave it)
_QSUFFIX = re.compile(r"(_output_quantized|_quantized|_QuantizeLinear_Output|_DequantizeLinear_Output|"
                      r"_DequantizeLinear|_QuantizeLinear|_output_quantized_cast_output|_cast_output|"
                      r"quant_scaled_output)+$")


def base_name(name: str) -> str:
    """``linear_quantized`` → ``linear``: the fx node name under a quantizer's suffixes."""
    return _QSUFFIX.sub("", name)


def _scopes(md: dict[str, str]) -> list[str]:
    raw = md.get("pkg.torch.onnx.name_scopes")
    if not raw:
        return []
    try:
        items = json.loads(raw.replace("'", '"'))
    except ValueError:
        return []
    # ['', 'features', 'features.0', 'features.0.1', '_native_batch_norm…'] → innermost first, the fx node dropped
    # ('' is the root module: an op of the model's own forward)
    return [str(s) for s in reversed(items[:-1])]


def _node_name(md: dict[str, str]) -> str | None:
    m = re.match(r"\s*%([\w.]+)\s*:", md.get("pkg.torch.onnx.fx_node", ""))
    return m.group(1) if m else None


def _elem_dtype(elem_type: int) -> str:
    import onnx

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return ""


def read(path: Path) -> Graph:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    init = {i.name: i for i in g.initializer}
    const = set(init) | {s.values.name for s in g.sparse_initializer}
    tensors: list[Tensor] = []
    by_name: dict[str, Tensor] = {}

    def add(t: Tensor) -> Tensor:
        tensors.append(t)
        by_name[t.name] = t
        return t

    k = 0
    for inp in g.input:
        if inp.name in const:
            continue
        tt = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        add(Tensor(len(tensors), inp.name, "input", inp.name, -1, shape, _elem_dtype(tt.elem_type), input=k,
                   io_name=inp.name))
        k += 1

    def array(name: str) -> Any:
        return numpy_helper.to_array(init[name]) if name in init else None

    for step, node in enumerate(g.node):
        ins = [x for x in node.input if x]
        if node.op_type == "Constant" or all(x in const for x in ins):
            const.update(o for o in node.output if o)
            continue
        md = {p.key: p.value for p in node.metadata_props}
        quant = None
        if node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") and len(ins) >= 2:
            scale, zp = array(ins[1]), array(ins[2]) if len(ins) > 2 else None
            if scale is not None:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                quant = quant_record(scale, zp, zp.dtype.name if zp is not None else "uint8", axis)
        elif node.op_type in _QOUT and len(node.input) > max(_QOUT[node.op_type]):
            i_s, i_z = _QOUT[node.op_type]
            scale, zp = array(node.input[i_s]), array(node.input[i_z])
            if scale is not None:
                quant = quant_record(scale, zp, zp.dtype.name if zp is not None else "uint8")
        elif node.op_type == "DequantizeLinear" and ins and ins[0] in by_name:
            quant = by_name[ins[0]].quant
        elif node.op_type in _KEEPS_GRID and ins and ins[0] in by_name:
            quant = by_name[ins[0]].quant  # integer in, integer out on the same grid (only used if it is integer)
        for out in node.output:
            if not out:
                continue
            add(Tensor(len(tensors), out, node.op_type, node.name, step, None, "",
                       [by_name[x].index for x in ins if x in by_name], _scopes(md), _node_name(md),
                       [x for x in ins if x in const], quant, md.get(_RULE)))
    for k, o in enumerate(g.output):
        if o.name in by_name:
            by_name[o.name].output = k
            by_name[o.name].io_name = o.name
    return Graph("onnx", tensors, "onnxruntime")


def scopes_by_value(path: Path) -> dict[str, list[str]]:
    """Value name → module scopes (innermost first) from a file that kept torch.onnx's node metadata."""
    return {t.name: t.scopes for t in read(path).tensors if t.scopes}


def run(path: Path, graph: Graph, samples: Sequence[dict[int, np.ndarray]],
        fed: dict[int, list[np.ndarray]] | None = None, threads: int = 1) -> list[dict[int, np.ndarray]]:
    """Every listed tensor's value per sample (dequantized to float), with ``fed`` tensors' consumers reading the
    given values instead (float, in the file's layout; cast or quantized here to the tensor's own type)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    g = model.graph
    fed = fed or {}
    new_inputs: dict[int, str] = {}
    for idx in fed:
        t = graph.tensors[idx]
        new = t.name + FED
        new_inputs[idx] = new
        for node in g.node:
            for j, x in enumerate(node.input):
                if x == t.name:
                    node.input[j] = new
        dtype = t.dtype or "float32"
        g.input.append(onnx.helper.make_tensor_value_info(
            new, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), t.shape))
    declared = {o.name for o in g.output}
    wanted = [t for t in graph.tensors if t.op != "input"]
    for t in wanted:
        if t.name not in declared:
            g.output.append(onnx.helper.make_empty_tensor_value_info(t.name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [t.name for t in wanted]
    results = []
    for sample in samples:
        feeds = {graph.tensors[i].name: v for i, v in sample.items()}
        for idx, new in new_inputs.items():
            t = graph.tensors[idx]
            feeds[new] = _as_file(fed[idx][len(results)], t)
        values = dict(zip(names, sess.run(names, feeds)))
        out = {i: np.asarray(v) for i, v in sample.items()}
        for t in wanted:
            raw = np.asarray(values[t.name])
            if not results:  # intermediate types are known once the graph has run
                t.dtype, t.shape = t.dtype or raw.dtype.name, t.shape or list(raw.shape)
            out[t.index] = dequantize(raw, t.quant)
        results.append(out)
    return results


def _as_file(value: np.ndarray, t: Tensor) -> np.ndarray:
    dtype = np.dtype(t.dtype or "float32")
    if t.quant and dtype.kind in "iu":
        return quantize(value, t.quant, dtype.name)
    return np.asarray(value).astype(dtype)
