"""Verification inputs: the example inputs plus seeded random inputs that fit the spec.

- float inputs: uniform in ``input_ranges`` if given, else in [0, 1] / [-1, 1] when the example lies there, else
  normal with the example's mean and std;
- integer inputs: uniform integers in ``input_ranges`` (inclusive) or the example's [min, max];
- masks (integer or bool inputs whose example holds only 0 and 1) stay masks: per row, a prefix of ones of random
  length followed by zeros;
- dynamic dims: the second random set uses another size for every dynamic dim, so parity is checked on a shape
  other than the one used for capture.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mobilize.spec import ModelSpec


@dataclasses.dataclass
class InputSet:
    label: str  # "example", "random(seed=1)", ...
    arrays: dict[str, np.ndarray]  # by model input name, in the model's own dtypes

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "shapes": {k: list(v.shape) for k, v in self.arrays.items()}}


def make_input_sets(spec: ModelSpec, n_random: int = 2, seed: int = 0, *, vary_dynamic: bool = True) -> list[InputSet]:
    sets = [InputSet("example", {n: t.detach().cpu().numpy().copy() for n, t in
                                  zip(spec.input_names, spec.example_inputs)})]
    dim_sizes = _dynamic_dim_sizes(spec)
    for k in range(n_random):
        rng = np.random.default_rng(seed + k + 1)
        alt = vary_dynamic and k == n_random - 1 and bool(dim_sizes)
        arrays = {}
        for name, t in zip(spec.input_names, spec.example_inputs):
            ex = t.detach().cpu().numpy()
            shape = list(ex.shape)
            if alt:
                for ax, dname in (spec.dynamic_dims or {}).get(name, {}).items():
                    shape[ax % ex.ndim] = dim_sizes[dname]
            arrays[name] = random_like(ex, tuple(shape), rng, (spec.input_ranges or {}).get(name))
        label = f"random(seed={seed + k + 1}" + (", other dynamic sizes)" if alt else ")")
        sets.append(InputSet(label, arrays))
    return sets


def _dynamic_dim_sizes(spec: ModelSpec) -> dict[str, int]:
    """Per dynamic dim, a second size to verify at: 4 for a size-1 example (a batch of one and a batch of four),
    else 1.5× the example (halved above 4096), kept inside the dim's bounds."""
    sizes: dict[str, int] = {}
    for name, axes in (spec.dynamic_dims or {}).items():
        t = spec.example_inputs[list(spec.input_names).index(name)]
        for ax, dname in axes.items():
            s = int(t.shape[ax % t.dim()])
            want = 4 if s == 1 else (s + max(1, s // 2) if s < 4096 else max(1, s // 2))
            lo, hi = (getattr(spec, "dynamic_bounds", None) or {}).get(dname, (1, None))
            want = min(max(want, lo), hi) if hi is not None else max(want, lo)
            if want == s:  # the bounds leave no other size above: try below
                want = max(lo, s - 1)
            sizes.setdefault(dname, want)
    return sizes


def is_mask(ex: np.ndarray) -> bool:
    if ex.dtype == np.bool_:
        return True
    return np.issubdtype(ex.dtype, np.integer) and ex.size > 1 and set(np.unique(ex).tolist()) <= {0, 1} \
        and len(np.unique(ex)) == 2


def random_like(ex: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator,
                value_range: tuple[float, float] | None = None) -> np.ndarray:
    """A random array of ``shape`` with the example's dtype and a value distribution that fits it."""
    dtype = ex.dtype
    if dtype == np.bool_ or (value_range is None and is_mask(ex)):
        out = np.zeros(shape, dtype=dtype)
        if len(shape) == 0:
            return np.ones(shape, dtype=dtype)
        if out.size == 0:
            return out
        rows = out.reshape(-1, shape[-1]) if shape[-1] else out.reshape(-1, 0)
        for r in rows:
            r[: rng.integers(1, shape[-1] + 1) if shape[-1] else 0] = 1
        return rows.reshape(shape)
    if np.issubdtype(dtype, np.integer):
        lo, hi = value_range if value_range is not None else (ex.min(), ex.max()) if ex.size else (0, 0)
        return rng.integers(int(lo), int(hi) + 1, size=shape).astype(dtype)
    if value_range is not None:
        lo, hi = value_range
        return rng.uniform(lo, hi, size=shape).astype(dtype)
    if ex.size and ex.min() >= 0 and ex.max() <= 1:
        return rng.uniform(0, 1, size=shape).astype(dtype)
    if ex.size and ex.min() >= -1 and ex.max() <= 1:
        return rng.uniform(-1, 1, size=shape).astype(dtype)
    mean = float(ex.mean()) if ex.size else 0.0
    std = float(ex.std()) if ex.size and ex.std() > 0 else 1.0
    return rng.normal(mean, std, size=shape).astype(dtype)
