"""ONNX reader: node op types (subgraphs included) and every stored tensor (initializers, sparse initializers,
``Constant`` nodes' values). The file is parsed with protobuf only; external data is never resolved."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from mobilize.analysis import Constant, FileContents

#: nodes that only hold a value (counted as constants, not as ops)
_VALUE_NODES = ("Constant",)


def read(path: Path) -> FileContents:
    import onnx

    from mobilize.errors import RuntimeFailure
    from mobilize.runtime.onnx import refuse_external_data

    data = Path(path).read_bytes()
    refuse_external_data(data, Path(path).name)
    try:
        model = onnx.ModelProto.FromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise RuntimeFailure(f"{Path(path).name}: not a readable ONNX file ({type(exc).__name__})") from None
    ops: list[str] = []
    consts: list[Constant] = []
    _graph(model.graph, ops, consts)
    return FileContents(ops, consts)


def _op_name(node: Any) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _graph(graph: Any, ops: list[str], consts: list[Constant]) -> None:
    from onnx import AttributeProto

    consumers: dict[str, list[str]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(_op_name(node))
    for init in graph.initializer:
        consts.append(_tensor(init, init.name, consumers.get(init.name, [])))
    for sp in graph.sparse_initializer:
        name = sp.values.name
        for part in (sp.values, sp.indices):
            consts.append(_tensor(part, name, consumers.get(name, [])))
    for node in graph.node:
        if node.op_type in _VALUE_NODES and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    out = node.output[0] if node.output else node.name
                    consts.append(_tensor(attr.t, out, consumers.get(out, [])))
            continue
        ops.append(_op_name(node))
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                _graph(attr.g, ops, consts)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _graph(g, ops, consts)
            elif attr.type == AttributeProto.TENSOR:
                consts.append(_tensor(attr.t, f"{node.name}.{attr.name}", [_op_name(node)]))


def _tensor(t: Any, name: str, consumers: list[str]) -> Constant:
    import numpy as np
    from onnx import helper, numpy_helper

    try:
        value = numpy_helper.to_array(t)
        dtype = value.dtype.name
        nbytes = len(t.raw_data) if t.raw_data else int(value.nbytes)
    except Exception:  # noqa: BLE001 - an odd tensor (strings, unknown type) still counts with its raw size
        value = None
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type).name if t.data_type else "unknown"
        nbytes = len(t.raw_data)
    if value is not None and value.dtype == np.dtype(object):
        value = None
    return Constant(name or "(unnamed)", tuple(int(d) for d in t.dims), dtype, nbytes, tuple(consumers), value)
