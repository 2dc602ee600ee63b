"""Core ML reader: the ML Program's ops (nested blocks included) and every stored value — ``const`` ops and the
tensor attributes of ``constexpr_*`` ops (compressed weights). Parsed through the reference interpreter's package
loader (:class:`mobilize.runtime.coreml_ref.program.Program`), which validates the package; nothing is executed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from mobilize.analysis import Constant, FileContents

_BITS = {"INT4": 4, "UINT4": 4, "UINT1": 1, "UINT2": 2, "UINT3": 3, "UINT6": 6, "INT8": 8, "UINT8": 8, "BOOL": 8,
         "FLOAT16": 16, "BFLOAT16": 16, "INT16": 16, "UINT16": 16, "FLOAT32": 32, "INT32": 32, "UINT32": 32,
         "FLOAT64": 64, "INT64": 64, "UINT64": 64}


def read(path: Path) -> FileContents:
    from mobilize.runtime.coreml_ref.program import Program

    program = Program(path)
    ops: list[str] = []
    producers: list[tuple[Any, str]] = []  # (op, type) of value-holding ops
    consumers: dict[str, list[str]] = defaultdict(list)

    def walk(block: Any) -> None:
        for op in block.operations:
            for arg in op.inputs.values():
                for b in arg.arguments:
                    if b.WhichOneof("binding") == "name":
                        consumers[b.name].append(op.type)
            if op.type == "const" or op.type.startswith("constexpr_"):
                producers.append((op, op.type))
            else:
                ops.append(op.type)
            for inner in op.blocks:
                walk(inner)

    walk(program.block)
    consts: list[Constant] = []
    for op, kind in producers:
        out = op.outputs[0].name if len(op.outputs) else op.name
        users = tuple(consumers.get(out, []))
        for attr, value in op.attributes.items():
            if attr == "name" or value.type.WhichOneof("type") != "tensorType":
                continue
            c = _constant(program, value, out if kind == "const" else f"{out}.{attr}", users)
            if c is not None:
                consts.append(c)
    return FileContents(ops, consts)


def _constant(program: Any, value: Any, name: str, users: tuple[str, ...]) -> Constant | None:
    from coremltools.proto import MIL_pb2

    tt = value.type.tensorType
    dname = MIL_pb2.DataType.Name(tt.dataType)
    if dname == "STRING":
        return None
    dims = [d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tt.dimensions]
    if any(d is None for d in dims):
        return None
    count = 1
    for d in dims:
        count *= int(d)
    if value.WhichOneof("value") == "immediateValue":
        imm = value.immediateValue.tensor
        field = imm.WhichOneof("value")
        nbytes = len(imm.bytes.values) if field == "bytes" else (count * _BITS.get(dname, 32) + 7) // 8
    else:
        nbytes = (count * _BITS.get(dname, 32) + 7) // 8
    try:
        arr = program.decode(value)
    except Exception:  # noqa: BLE001 - undecodable values still count with their declared size
        arr = None
    dtype = arr.dtype.name if arr is not None and hasattr(arr, "dtype") else dname.lower()
    return Constant(name, tuple(int(d) for d in dims), dtype, int(nbytes), users, arr)
