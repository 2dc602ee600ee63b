"""Small helpers shared by the op implementations."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_int(v: Any) -> int:
    return int(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size == 1 else int(v)


def as_ints(v: Any) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


def as_bool(v: Any) -> bool:
    return bool(np.asarray(v).reshape(-1)[0])


def as_float(v: Any) -> float:
    return float(np.asarray(v).reshape(-1)[0])


def as_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    return str(np.asarray(v).reshape(-1)[0])


def norm_axes(axes: Any, rank: int) -> tuple[int, ...] | None:
    """MIL axes (None = all) → sorted non-negative tuple."""
    if axes is None:
        return None
    return tuple(sorted(a % rank if rank else 0 for a in as_ints(axes)))


def floatx(x: np.ndarray) -> np.ndarray:
    """Float compute dtype: float32 unless the input is float64."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


MIL_DTYPES: dict[str, Any] = {
    "fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
    "uint64": np.uint64, "bool": np.bool_,
}
