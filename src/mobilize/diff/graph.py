"""The format-neutral view of a file's computation that ``mobilize diff`` compares against PyTorch.

Each format module (:mod:`.onnx`, :mod:`.tflite`, :mod:`.coreml`) lists every non-constant tensor of the file as a
:class:`Tensor`: what produced it, which tensors its op read, and the provenance the converter kept (ONNX
``name_scopes`` metadata, TFLite tensor-name locations, Core ML op names). Constants (weights, and anything computed
only from constants, such as the DequantizeLinear of a weight) are not listed; their names are kept on the op that
reads them (``weights``) because they are provenance too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: ops that only re-encode a tensor (quantize, dequantize, cast): a layer's visible output is the tensor after them
TRANSPARENT = frozenset({
    "QuantizeLinear", "DequantizeLinear", "Cast",  # ONNX
    "QUANTIZE", "DEQUANTIZE",  # TFLite
    "quantize", "dequantize", "cast",  # Core ML
})


@dataclasses.dataclass
class Tensor:
    """One tensor of the file. ``index`` is its position in the listing (the worker's npz keys use it)."""

    index: int
    name: str
    op: str  # producing op type; "input" for a graph input
    op_name: str = ""  # the producing op's own name (ONNX node name; TFLite/Core ML: the output tensor's name)
    step: int = -1  # execution position of the producing op (-1: graph input)
    shape: list[int] | None = None
    dtype: str = ""
    inputs: list[int] = dataclasses.field(default_factory=list)  # listed tensors the producing op reads
    scopes: list[str] = dataclasses.field(default_factory=list)  # raw provenance, innermost/primary first
    node: str | None = None  # the fx node name the converter recorded, when it did
    weights: list[str] = dataclasses.field(default_factory=list)  # names of the constants the op reads
    quant: dict[str, Any] | None = None  # the integer grid the tensor is stored on / rounded to
    rule: str | None = None  # a converter rewrite that produced the op (ONNX: onnxscript rule names)
    output: int | None = None  # position among the graph's outputs
    input: int | None = None  # position among the graph's inputs
    io_name: str | None = None  # the name a runner uses for this graph input / output
    tid: int = -1  # the runtime's own tensor id (TFLite tensor index)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Graph:
    format: str
    tensors: list[Tensor]
    runtime: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "runtime": self.runtime, "notes": list(self.notes),
                "tensors": [t.to_dict() for t in self.tensors]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Graph:
        return cls(d["format"], [Tensor(**t) for t in d["tensors"]], d.get("runtime", ""), list(d.get("notes", [])))

    @property
    def inputs(self) -> list[Tensor]:
        return sorted((t for t in self.tensors if t.input is not None), key=lambda t: t.input or 0)

    def consumers(self) -> dict[int, list[int]]:
        """Tensor index → indices of the tensors whose op reads it."""
        out: dict[int, list[int]] = {t.index: [] for t in self.tensors}
        for t in self.tensors:
            for i in dict.fromkeys(t.inputs):
                out.setdefault(i, []).append(t.index)
        return out

    def visible(self, index: int, consumers: dict[int, list[int]] | None = None) -> int:
        """The tensor a layer's output becomes after the re-encoding ops that follow it alone (quantize → dequantize,
        cast): what the next layer actually reads."""
        consumers = consumers if consumers is not None else self.consumers()
        seen = {index}
        while True:
            nxt = consumers.get(index, [])
            if len(nxt) != 1:
                return index
            t = self.tensors[nxt[0]]
            if t.op not in TRANSPARENT or not t.inputs or t.inputs[0] != index or t.index in seen:
                return index
            index = t.index
            seen.add(index)


def quant_record(scale: Any, zero_point: Any, dtype: str, axis: int | None = None) -> dict[str, Any]:
    """``{"scale", "zero_point", "dtype", "axis", "qmin", "qmax"}`` with lists for per-channel grids."""
    import numpy as np

    info = np.iinfo(np.dtype(dtype))
    s = np.atleast_1d(np.asarray(scale, dtype=np.float64)).ravel()
    z = np.atleast_1d(np.asarray(zero_point if zero_point is not None else 0)).astype(np.int64).ravel()
    return {"scale": [float(v) for v in s], "zero_point": [int(v) for v in z], "dtype": np.dtype(dtype).name,
            "axis": None if s.size <= 1 else axis, "qmin": int(info.min), "qmax": int(info.max)}


def dequantize(values: Any, quant: dict[str, Any] | None) -> Any:
    """Integer values on ``quant``'s grid → float32 (other arrays pass through, floats widened to float32)."""
    import numpy as np

    arr = np.asarray(values)
    if quant is None or arr.dtype.kind not in "iu":
        return arr.astype(np.float32) if arr.dtype.kind == "f" else arr
    scale, zp = _broadcast(quant, arr.ndim)
    return ((arr.astype(np.float64) - zp) * scale).astype(np.float32)


def quantize(values: Any, quant: dict[str, Any], dtype: str) -> Any:
    """Float values → integers on ``quant``'s grid (rounded, clipped to the dtype)."""
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    scale, zp = _broadcast(quant, arr.ndim)
    info = np.iinfo(np.dtype(dtype))
    return np.clip(np.round(arr / scale + zp), info.min, info.max).astype(dtype)


def _broadcast(quant: dict[str, Any], ndim: int) -> tuple[Any, Any]:
    import numpy as np

    scale = np.asarray(quant["scale"], dtype=np.float64)
    zp = np.asarray(quant["zero_point"] or [0], dtype=np.float64)
    axis = quant.get("axis")
    if scale.size > 1 and axis is not None and ndim:
        shape = [1] * ndim
        shape[axis % ndim] = scale.size
        return scale.reshape(shape), (zp.reshape(shape) if zp.size == scale.size else zp.ravel()[0])
    return scale.ravel()[0], zp.ravel()[0]
