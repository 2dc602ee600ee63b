"""Tensor and model specifications: what a model takes and returns, independent of any file format.

A :class:`ModelSpec` is what a model source (``file.py:fn``, ``zoo:NAME``, ``model.pt2``) resolves to. It carries the
module, its example inputs and everything an app needs to feed the exported file: names, dynamic dimensions,
image normalisation and class labels.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mobilize.errors import SpecError

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Image preprocessing an app applies before feeding the model: ``(pixel/scale - mean) / std`` per channel.

    ``layout`` says where the channel axis is (``NCHW`` or ``NHWC``); ``scale`` is 255 for 8-bit pixels.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 255.0
    layout: str = "NCHW"
    color: str = "RGB"

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise SpecError(f"normalization: mean has {len(self.mean)} values but std has {len(self.std)}; "
                            "give one per channel")
        if any(s == 0 for s in self.std):
            raise SpecError("normalization: std contains 0; every std value must be non-zero")
        if self.layout not in ("NCHW", "NHWC"):
            raise SpecError(f"normalization: layout {self.layout!r} is not NCHW or NHWC")

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "scale": self.scale, "layout": self.layout,
                "color": self.color}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, shape (``None`` or a string for a dynamic dim), dtype name (numpy spelling)."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str
    value_range: tuple[float, float] | None = None  # for random inputs: [low, high] (ints: inclusive)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.value_range is not None:
            d["value_range"] = list(self.value_range)
        return d


@dataclasses.dataclass
class ModelSpec:
    """A PyTorch model plus what it takes and returns.

    Args:
        module: the ``torch.nn.Module`` (put in eval mode by mobilize).
        example_inputs: a tuple of tensors the module accepts positionally.
        input_names / output_names: names the exported files use; default ``input_0``… / ``output_0``….
        dynamic_dims: ``{input_name: {axis: dim_name}}`` for dimensions that may vary at run time; a value may also
            be ``(dim_name, min, max)`` (``max`` None: unbounded). The same name on several inputs is one dimension.
        normalization: image preprocessing (recorded in the manifest, used for image calibration data).
        labels: class labels of a classifier output (recorded in the manifest).
        input_ranges: ``{input_name: (low, high)}`` for the random verification inputs; integer ranges are inclusive.
        name: a short model name for file names and reports.
    """

    module: Any
    example_inputs: tuple[Any, ...]
    input_names: Sequence[str] | None = None
    output_names: Sequence[str] | None = None
    dynamic_dims: Mapping[str, Mapping[int, str]] | None = None
    normalization: Normalization | None = None
    labels: Sequence[str] | None = None
    input_ranges: Mapping[str, tuple[float, float]] | None = None
    name: str = "model"
    description: str = ""
    exported_program: Any = dataclasses.field(default=None, repr=False, compare=False)  # set for .pt2 sources
    #: per dynamic dim name: (min, max or None), from ``dynamic_dims`` values given as (name, min, max)
    dynamic_bounds: dict[str, tuple[int, int | None]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        import torch

        if not isinstance(self.module, torch.nn.Module):
            raise SpecError(f"ModelSpec.module must be a torch.nn.Module, got {type(self.module).__name__}")
        if isinstance(self.example_inputs, torch.Tensor):
            self.example_inputs = (self.example_inputs,)
        if isinstance(self.example_inputs, list):
            self.example_inputs = tuple(self.example_inputs)
        if not isinstance(self.example_inputs, tuple) or not self.example_inputs:
            raise SpecError("ModelSpec.example_inputs must be a non-empty tuple of tensors")
        for i, t in enumerate(self.example_inputs):
            if not isinstance(t, torch.Tensor):
                raise SpecError(f"ModelSpec.example_inputs[{i}] is a {type(t).__name__}, not a torch.Tensor; "
                                "pass every input as a tensor")
            if t.is_complex() or t.dtype in (torch.bfloat16,):
                raise SpecError(f"ModelSpec.example_inputs[{i}] has dtype {t.dtype}, which mobile formats "
                                "cannot take as input; use float32, float16, int32, int64 or bool")
        n = len(self.example_inputs)
        if self.input_names is None:
            self.input_names = forward_names(self.module, n) or [f"input_{i}" for i in range(n)]
        self.input_names = list(self.input_names)
        if len(self.input_names) != n:
            raise SpecError(f"ModelSpec has {n} example inputs but {len(self.input_names)} input_names")
        if self.output_names is not None:
            self.output_names = list(self.output_names)
        for nm in list(self.input_names) + list(self.output_names or []):
            _check_name(nm)
        names = list(self.input_names) + list(self.output_names or [])
        if len(set(names)) != len(names):
            raise SpecError(f"ModelSpec input/output names must be unique, got {names}")
        if self.dynamic_dims:
            self.dynamic_dims = self._normalized_dynamic_dims()
        if self.labels is not None:
            if isinstance(self.labels, str | bytes) or not isinstance(self.labels, Sequence) or not all(
                    isinstance(x, str | int) and not isinstance(x, bool) for x in self.labels):
                raise SpecError(f"ModelSpec.labels must be a list of class names (strings), one per class, got "
                                f"{_describe(self.labels)}")
            self.labels = [str(x) for x in self.labels]
            if not self.labels:
                raise SpecError("ModelSpec.labels is empty; give one class name per class or leave it out")
        if not _NAME_RE.match(self.name.replace("-", "_")):
            raise SpecError(f"model name {self.name!r} must be letters, digits, '_' or '-'")

    def _normalized_dynamic_dims(self) -> dict[str, dict[int, str]]:
        """``dynamic_dims`` checked and with every value a dim name (axes made non-negative); bounds given as
        ``(name, min, max)`` go to :attr:`dynamic_bounds`."""
        if not isinstance(self.dynamic_dims, Mapping):
            raise SpecError("dynamic_dims must be {input_name: {axis: dim_name}}, got "
                            f"{_describe(self.dynamic_dims)}")
        out: dict[str, dict[int, str]] = {}
        bounds = dict(self.dynamic_bounds or {})
        names = list(self.input_names or ())
        for nm, axes in self.dynamic_dims.items():
            if nm not in names:
                raise SpecError(f"dynamic_dims names input {nm!r}, which is not one of {names}")
            if not isinstance(axes, Mapping):
                raise SpecError(f"dynamic_dims[{nm!r}] must map axis → dim name, e.g. {{0: 'batch'}}")
            t = self.example_inputs[names.index(nm)]
            rank = t.dim()
            out[nm] = {}
            for ax, value in axes.items():
                if isinstance(ax, bool) or not isinstance(ax, int) or not -rank <= ax < rank:
                    raise SpecError(f"dynamic_dims[{nm!r}] axis {ax!r} is out of range for a rank-{rank} input")
                name, lo, hi = _dim_value(nm, ax, value)
                size = int(t.shape[ax % rank])
                if size < lo or (hi is not None and size > hi):
                    raise SpecError(f"dynamic_dims[{nm!r}] axis {ax}: the example's size {size} is outside "
                                    f"[{lo}, {hi if hi is not None else '∞'}]; widen the bounds or change the example")
                if name in bounds and (lo, hi) != (1, None) and bounds[name] != (lo, hi):
                    raise SpecError(f"dynamic dim {name!r} has two different bounds, {bounds[name]} and {(lo, hi)}")
                if (lo, hi) != (1, None) or name not in bounds:
                    bounds[name] = (lo, hi)
                out[nm][ax % rank] = name
        self.dynamic_bounds = bounds
        return out

    def add_dynamic(self, extra: Mapping[str, Mapping[int, Any]]) -> None:
        """Declare more dynamic dims (``--dynamic``), replacing the same input axis; validated like the constructor."""
        merged: dict[str, dict[int, Any]] = {k: dict(v) for k, v in (self.dynamic_dims or {}).items()}
        names = list(self.input_names or ())
        for name, axes in extra.items():
            if name not in names:
                raise SpecError(f"--dynamic names input {name!r}; the model's inputs are {', '.join(names)}")
            rank = self.example_inputs[names.index(name)].dim()
            for ax, value in axes.items():
                if not -rank <= ax < rank:
                    raise SpecError(f"--dynamic {name}:{ax}: axis out of range for a rank-{rank} input")
                merged.setdefault(name, {})[ax % rank] = value
        self.dynamic_dims = merged
        self.dynamic_bounds = {}
        self.dynamic_dims = self._normalized_dynamic_dims()

    def input_specs(self) -> list[TensorSpec]:
        """The inputs as TensorSpecs, dynamic dims shown as their names."""
        out = []
        for nm, t in zip(self.input_names or (), self.example_inputs):
            dyn = {a % t.dim(): d for a, d in (self.dynamic_dims or {}).get(nm, {}).items()}
            shape = tuple(dyn.get(a, s) for a, s in enumerate(t.shape))
            rng = (self.input_ranges or {}).get(nm)
            bounds = (float(rng[0]), float(rng[1])) if rng else None
            out.append(TensorSpec(nm, shape, torch_dtype_name(t.dtype), bounds))
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "inputs": [s.to_dict() for s in self.input_specs()]}
        if self.normalization is not None:
            d["normalization"] = self.normalization.to_dict()
        if self.labels is not None:
            d["labels"] = list(self.labels)
        return d


def parse_dynamic(items: Sequence[str]) -> dict[str, dict[int, Any]]:
    """``["image:0=batch", "tokens:1=seq:1:512"]`` → ``{"image": {0: "batch"}, "tokens": {1: ("seq", 1, 512)}}``
    (``--dynamic INPUT:AXIS=NAME[:MIN[:MAX]]``)."""
    out: dict[str, dict[int, Any]] = {}
    for item in items:
        head, sep, tail = item.partition("=")
        name, colon, axis = head.rpartition(":")
        parts = tail.split(":")
        try:
            ax = int(axis)
            bounds = [int(p) if p else None for p in parts[1:]]
        except ValueError:
            ax, bounds = None, []
        if not sep or not colon or not name or ax is None or not parts[0] or len(parts) > 3:
            raise SpecError(f"--dynamic {item!r}: write INPUT:AXIS=NAME or INPUT:AXIS=NAME:MIN:MAX, e.g. "
                            "image:0=batch or tokens:1=seq:1:512")
        lo = bounds[0] if bounds and bounds[0] is not None else 1
        hi = bounds[1] if len(bounds) > 1 else None
        out.setdefault(name, {})[ax] = (parts[0], lo, hi)
    return out


def _dim_value(input_name: str, axis: int, value: Any) -> tuple[str, int, int | None]:
    """``"batch"`` or ``("batch", 1, 64)`` → (name, min, max)."""
    where = f"dynamic_dims[{input_name!r}][{axis}]"
    if isinstance(value, str):
        name, lo, hi = value, 1, None
    elif isinstance(value, tuple | list) and 1 <= len(value) <= 3:
        name, lo, hi = (list(value) + [1, None])[:3]
    else:
        raise SpecError(f"{where} must be a dim name or (name, min, max), got {_describe(value)}")
    if not isinstance(name, str) or not name.strip() or len(name) > 64 or not name.isprintable():
        raise SpecError(f"{where}: dim name {name!r} must be a short printable name, e.g. 'batch'")
    for bound in (lo, hi):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 1):
            raise SpecError(f"{where}: bounds must be integers ≥ 1 (max may be None), got {bound!r}")
    if lo is None:
        lo = 1
    if hi is not None and hi < lo:
        raise SpecError(f"{where}: max {hi} < min {lo}")
    return name, int(lo), None if hi is None else int(hi)


def forward_names(module: Any, n: int) -> list[str] | None:
    """The first ``n`` positional parameter names of ``module.forward`` (``forward(self, image)`` → ``["image"]``),
    or None when they cannot name the inputs (``*args``, too few, not identifiers, duplicates)."""
    import inspect

    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < n:
        return None
    names = [p.name for p in positional[:n]]
    if any(not _NAME_RE.match(x) or keyword.iskeyword(x) for x in names) or len(set(names)) != n:
        return None
    return names


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '…' if len(text) > 60 else text}"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name) or keyword.iskeyword(name):
        raise SpecError(f"tensor name {name!r} must be an identifier (letters, digits, '_', not starting with a digit)")


def torch_dtype_name(dtype: Any) -> str:
    """``torch.float32`` → ``"float32"`` (numpy spelling used across the manifest)."""
    return str(dtype).replace("torch.", "")
