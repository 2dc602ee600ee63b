"""Reading a ``.tflite`` flatbuffer without copying it: op codes, buffer byte ranges, constant arrays.

Shared by the quantizer's weight patching (:mod:`mobilize.quantize.tflite_bias`) and the file analysis
(:mod:`mobilize.analysis.tflite`). Uses LiteRT's generated schema (``ai_edge_litert.schema_py_generated``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def schema() -> Any:
    from ai_edge_litert import schema_py_generated as S

    return S


def opcode(model: Any, op: Any) -> int:
    """The builtin operator code of ``op`` (new and deprecated code fields both honoured)."""
    oc = model.OperatorCodes(op.OpcodeIndex())
    return max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())


def op_name(model: Any, op: Any, names: dict[int, str]) -> str:
    """``CONV_2D``, or ``custom:<code>`` for a custom op."""
    code = opcode(model, op)
    name = names.get(code, f"op{code}")
    if name == "CUSTOM":
        custom = model.OperatorCodes(op.OpcodeIndex()).CustomCode()
        return f"custom:{custom.decode(errors='replace') if custom else '?'}"
    return name


def builtin_names() -> dict[int, str]:
    S = schema()
    return {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def span(model: Any, buffer: int) -> tuple[int, int] | None:
    """Byte range of a buffer's data inside the file (inline vector or offset/size beyond the flatbuffer)."""
    if buffer <= 0:
        return None
    buf = model.Buffers(buffer)
    if buf is None:
        return None
    if buf.Offset() > 1:
        return int(buf.Offset()), int(buf.Offset() + buf.Size())
    o = buf._tab.Offset(4)  # noqa: SLF001 - the data vector's position; the schema API only hands out copies
    if not o:
        return None
    start = buf._tab.Vector(o)  # noqa: SLF001
    length = buf._tab.VectorLen(o)  # noqa: SLF001
    return (int(start), int(start + length)) if length else None


def array(data: bytes, where: tuple[int, int] | None, dtype: Any, shape: Sequence[int]) -> np.ndarray | None:
    """The buffer bytes at ``where`` viewed as ``dtype`` with ``shape`` (None when absent or the size differs)."""
    if where is None or where[1] > len(data):
        return None
    count = (where[1] - where[0]) // np.dtype(dtype).itemsize
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=where[0])
    return arr.reshape(tuple(int(s) for s in shape)) if int(np.prod(shape)) == arr.size else None


def numpy_dtypes() -> dict[int, Any]:
    """TFLite TensorType → numpy dtype, for the types a constant can have."""
    S = schema()
    T = S.TensorType
    table = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT8": np.int8, "UINT8": np.uint8,
             "INT16": np.int16, "UINT16": np.uint16, "INT32": np.int32, "UINT32": np.uint32, "INT64": np.int64,
             "UINT64": np.uint64, "BOOL": np.bool_}
    return {getattr(T, k): v for k, v in table.items() if hasattr(T, k)}
