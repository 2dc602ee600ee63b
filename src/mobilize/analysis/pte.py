"""ExecuTorch reader: the ops of a ``.pte`` program — portable kernel calls, and the XNNPACK nodes inside each delegate
— and its constants (portable-kernel constants, and the weights XNNPACK reads from the program's named data).

Parsed with ExecuTorch's own deserializer (``deserialize_pte_binary``) and, for XNNPACK payloads, its flatbuffer
schema decoded by the ``flatc`` that ships with ExecuTorch; nothing is loaded into a runtime. Op names: portable
kernels as ``aten::mean``, XNNPACK nodes as ``xnnpack.FullyConnected``. The record's ``delegation`` says which share
of the ops XNNPACK runs and which stay on the portable CPU kernels.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.analysis import Constant, FileContents

#: XNNPACK tensor datatypes (schema.fbs ``XNNDatatype``) → (dtype name in the record, numpy dtype to decode, or None)
_XNN_TYPES = {0: ("invalid", None), 1: ("float32", np.float32), 2: ("float16", np.float16),
              3: ("int8", np.int8), 4: ("uint8", np.uint8), 5: ("int32", np.int32), 6: ("int8", np.int8),
              7: ("int32", np.int32), 8: ("int4", None), 9: ("int8", np.int8), 10: ("int8", np.int8),
              11: ("int4", None), 12: ("bfloat16", None), 13: ("int8", np.int8)}
_XNN_NAMES = {"xnn_datatype_invalid": 0, "xnn_datatype_fp32": 1, "xnn_datatype_fp16": 2, "xnn_datatype_qint8": 3,
              "xnn_datatype_quint8": 4, "xnn_datatype_qint32": 5, "xnn_datatype_qcint8": 6,
              "xnn_datatype_qcint32": 7, "xnn_datatype_qcint4": 8, "xnn_datatype_qdint8": 9,
              "xnn_datatype_qbint4": 10, "xnn_datatype_qpint8": 11, "xnn_datatype_int32": 5,
              "xnn_datatype_pfp32": 1, "xnn_datatype_bf16": 12}
_SCALAR = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
           11: "bool", 15: "bfloat16"}
METADATA_METHOD = "mobilize_metadata"


def read(path: Path) -> FileContents:
    from mobilize.errors import RuntimeFailure

    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:6] != b"ET":
        raise RuntimeFailure(f"{Path(path).name}: not an ExecuTorch program (no ET identifier)")
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary

        pte = deserialize_pte_binary(data)
    except Exception as exc:  # noqa: BLE001 - a malformed flatbuffer raises anything
        raise RuntimeFailure(f"{Path(path).name}: not a readable ExecuTorch program ({type(exc).__name__})") from None
    program = pte.program
    named = _named_data(pte)
    ops: list[str] = []
    consts: list[Constant] = []
    seen_named: set[str] = set()
    portable: Counter[str] = Counter()
    xnn_nodes = 0
    subgraphs = 0
    methods = [p.name for p in program.execution_plan]
    for plan in program.execution_plan:
        if plan.name == METADATA_METHOD:
            continue
        op_names = [f"{o.name}" + (f".{o.overload}" if o.overload and o.overload != "out" else "")
                    for o in plan.operators]
        readers: dict[int, list[str]] = defaultdict(list)
        for chain in plan.chains:
            for ins in chain.instructions:
                args = ins.instr_args
                kind = type(args).__name__
                if kind == "KernelCall":
                    name = op_names[args.op_index] if args.op_index < len(op_names) else f"op#{args.op_index}"
                    ops.append(name)
                    portable[name] += 1
                    for a in args.args:
                        readers[a].append(name)
                elif kind == "DelegateCall":
                    subgraphs += 1
                    delegate = plan.delegates[args.delegate_index]
                    payload = _payload(program, delegate)
                    if "xnnpack" in delegate.id.lower() and payload is not None:
                        nodes, tensors = _xnn_graph(payload)
                        xnn_nodes += len(nodes)
                        ops += [f"xnnpack.{n}" for n in nodes]
                        for t in tensors:
                            if t["key"] in seen_named:
                                continue
                            seen_named.add(t["key"])
                            raw = named.get(t["key"])
                            consts.append(_xnn_constant(t, raw))
                    else:
                        ops.append(f"delegate:{delegate.id}")
        consts += _portable_constants(program, plan, readers)
    total = xnn_nodes + sum(portable.values())
    delegation = {"backend": "XnnpackBackend", "subgraphs": subgraphs, "delegated_ops": xnn_nodes,
                  "portable_ops": dict(sorted(portable.items(), key=lambda kv: (-kv[1], kv[0]))),
                  "delegated_share": round(xnn_nodes / total, 4) if total else None,
                  "methods": methods}
    return FileContents(ops, consts, extra={"delegation": delegation})


def _named_data(pte: Any) -> dict[str, bytes]:
    nd = getattr(pte, "named_data", None)
    if nd is None:
        return {}
    out = {}
    for key, entry in (nd.pte_data or {}).items():
        buf = nd.buffers[entry.buffer_index]
        out[key] = bytes(buf) if not hasattr(buf, "buffer") else bytes(buf.buffer)
    return out


def _payload(program: Any, delegate: Any) -> bytes | None:
    ref = delegate.processed
    if int(ref.location) == 0:  # INLINE (segments are restored inline by the deserializer)
        blob = program.backend_delegate_data[ref.index].data
        return bytes(blob)
    return None


def _xnn_graph(payload: bytes) -> tuple[list[str], list[dict[str, Any]]]:
    """(node types in order, constant tensors ``{"key", "dims", "datatype", "consumers"}``) of an XNNPACK payload."""
    graph = _decode_xnngraph(payload)
    values = graph.get("xvalues") or []
    tensors: dict[int, dict[str, Any]] = {}
    constant_data = graph.get("constant_data") or []
    for v in values:
        union_type = v.get("xvalue_union_type", "")
        body = v.get("xvalue_union") or {}
        tv = body.get("tensor_value", body) if "Quantized" in union_type else body
        idx = int(tv.get("constant_buffer_idx") or 0)
        if not idx or idx >= len(constant_data):
            continue
        key = (constant_data[idx] or {}).get("named_key") or f"xnnpack-constant-{idx}"
        dt = tv.get("datatype", 0)
        tensors[int(tv.get("id_out", -1))] = {"key": key, "dims": [int(d) for d in tv.get("dims") or []],
                                              "datatype": _XNN_NAMES.get(dt, dt) if isinstance(dt, str) else int(dt),
                                              "size": int((constant_data[idx] or {}).get("size") or 0),
                                              "consumers": []}
    nodes = []
    for n in graph.get("xnodes") or []:
        kind = str(n.get("xnode_union_type", "?")).removeprefix("XNN")
        nodes.append(kind)
        body = n.get("xnode_union") or {}
        for field, value in body.items():
            if field.endswith("_id") and field != "output_id" and isinstance(value, int) and value in tensors:
                tensors[value]["consumers"].append(kind)
    return nodes, list(tensors.values())


def _decode_xnngraph(payload: bytes) -> dict[str, Any]:
    """The XNNGraph flatbuffer of a payload (after its XNNHeader) as JSON, decoded by ExecuTorch's flatc."""
    import importlib.resources
    import tempfile

    from executorch.exir._serialize._flatbuffer import _flatc_decompile

    start, size = 0, len(payload)
    if payload[4:8] == b"XH00":
        start = int.from_bytes(payload[10:14], "little")
        size = int.from_bytes(payload[14:18], "little")
    fb = payload[start:start + size]
    schema = importlib.resources.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs")
    with tempfile.TemporaryDirectory(prefix="mobilize-xnn-") as tmp:
        s = Path(tmp) / "schema.fbs"
        s.write_text(schema.read_text())
        b = Path(tmp) / "graph.bin"
        b.write_bytes(fb)
        _flatc_decompile(tmp, str(s), str(b), ["--raw-binary"])
        text = (Path(tmp) / "graph.json").read_text()
    # flatc writes non-finite floats bare (``output_max: inf``), which JSON does not allow
    text = re.sub(r"(?<=[:\[,\s])(-?)inf\b", r"\1Infinity", text)
    return json.loads(re.sub(r"(?<=[:\[,\s])-?nan\b", "NaN", text))


def _xnn_constant(t: dict[str, Any], raw: bytes | None) -> Constant:
    name, np_dtype = _XNN_TYPES.get(int(t["datatype"]) if isinstance(t["datatype"], int) else 0, ("?", None))
    shape = tuple(t["dims"])
    nbytes = len(raw) if raw is not None else t["size"]
    value = None
    if raw is not None and np_dtype is not None:
        n = int(np.prod(shape)) if shape else 1
        itemsize = np.dtype(np_dtype).itemsize
        if n * itemsize <= len(raw):
            value = np.frombuffer(raw, dtype=np_dtype, count=n).reshape(shape)
    consumers = tuple(f"xnnpack.{c}" for c in t["consumers"])
    return Constant(t["key"], shape, name, nbytes, consumers, value)


def _portable_constants(program: Any, plan: Any, readers: dict[int, list[str]]) -> list[Constant]:
    """Constant tensors of the plan that live in the program's constant buffer (read by portable kernels)."""
    out = []
    buffers = program.constant_buffer or []
    for i, v in enumerate(plan.values):
        t = v.val
        if type(t).__name__ != "Tensor":
            continue
        idx = int(getattr(t, "data_buffer_idx", 0) or 0)
        if not idx or idx >= len(buffers):
            continue
        raw = bytes(buffers[idx].storage)
        dtype = _SCALAR.get(int(t.scalar_type), "?")
        shape = tuple(int(s) for s in t.sizes)
        value = None
        if dtype not in ("?", "bfloat16"):
            n = int(np.prod(shape)) if shape else 1
            if n * np.dtype(dtype).itemsize <= len(raw):
                value = np.frombuffer(raw, dtype=dtype, count=n).reshape(shape)
        out.append(Constant(f"{plan.name}/value{i}", shape, dtype, len(raw), tuple(readers.get(i, [])), value))
    return out
