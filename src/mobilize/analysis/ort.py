"""ORT-format reader: node op types (subgraphs included) and every initializer, parsed with onnxruntime's own
flatbuffer schema (``onnxruntime.tools.ort_format_model.ort_flatbuffers_py``); nothing is loaded into a session."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from mobilize.analysis import Constant, FileContents

#: an ORT-format file is an ``InferenceSession`` flatbuffer with this identifier
IDENTIFIER = b"ORTM"


def read(path: Path) -> FileContents:
    from mobilize.errors import RuntimeFailure

    data = Path(path).read_bytes()
    try:
        if data[4:8] != IDENTIFIER:
            raise ValueError("no ORTM identifier")
        from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

        graph = InferenceSession.GetRootAs(data, 0).Model().Graph()
        ops: list[str] = []
        consts: list[Constant] = []
        _graph(graph, ops, consts)
    except RuntimeFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed flatbuffer raises anything from struct to IndexError
        raise RuntimeFailure(f"{Path(path).name}: not a readable ORT-format file ({type(exc).__name__})") from None
    return FileContents(ops, consts)


def _op_name(node: Any) -> str:
    domain = (node.Domain() or b"").decode()
    op = (node.OpType() or b"").decode()
    return op if domain in ("", "ai.onnx") else f"{domain}.{op}"


def _graph(graph: Any, ops: list[str], consts: list[Constant]) -> None:
    consumers: dict[str, list[str]] = defaultdict(list)
    nodes = [graph.Nodes(i) for i in range(graph.NodesLength())]
    for node in nodes:
        for j in range(node.InputsLength()):
            consumers[node.Inputs(j).decode()].append(_op_name(node))
    for i in range(graph.InitializersLength()):
        t = graph.Initializers(i)
        name = (t.Name() or b"").decode()
        consts.append(_tensor(t, name, consumers.get(name, [])))
    for node in nodes:
        ops.append(_op_name(node))
        for a in range(node.AttributesLength()):
            attr = node.Attributes(a)
            if attr.G() is not None:
                _graph(attr.G(), ops, consts)
            for g in range(attr.GraphsLength()):
                _graph(attr.Graphs(g), ops, consts)


def _tensor(t: Any, name: str, consumers: list[str]) -> Constant:
    import numpy as np
    from onnx import helper

    dims = tuple(int(d) for d in t.DimsAsNumpy()) if t.DimsLength() else ()
    raw = t.RawDataAsNumpy() if t.RawDataLength() else None
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.DataType()))
    except Exception:  # noqa: BLE001 - strings and unknown types count with their raw size
        dtype = None
    value = None
    if raw is not None and dtype is not None and dtype != np.dtype(object):
        arr = np.frombuffer(raw.tobytes(), dtype=dtype)
        if arr.size == int(np.prod(dims)):
            value = arr.reshape(dims)
    nbytes = int(raw.size) if raw is not None else 0
    return Constant(name or "(unnamed)", dims, dtype.name if dtype is not None else "unknown", nbytes,
                    tuple(consumers), value)
