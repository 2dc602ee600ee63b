"""Per-output error metrics between an artifact's output and the PyTorch reference."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

SNR_CAP_DB = 200.0  # an exact match reports this instead of +inf (JSON has no infinity)


@dataclasses.dataclass
class OutputMetrics:
    max_abs_error: float
    max_rel_error: float
    cosine: float | None  # None: undefined (a zero vector on either side)
    snr_db: float | None  # None: undefined (the reference has no energy: all zeros)
    mismatch_ratio: float  # share of elements outside atol + rtol*|ref|
    nan_count: int
    inf_count: int
    ref_nan_count: int
    ref_inf_count: int
    top1_agreement: float | None  # classifier-shaped outputs only
    elements: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compare(actual: np.ndarray, ref: np.ndarray, *, atol: float, rtol: float) -> OutputMetrics:
    """Compare after casting both to float64; non-finite positions are counted and excluded from the errors."""
    a = np.asarray(actual).astype(np.float64)
    r = np.asarray(ref).astype(np.float64)
    if a.shape != r.shape:
        raise ValueError(f"shape {list(a.shape)} differs from the reference's {list(r.shape)}")
    finite = np.isfinite(a) & np.isfinite(r)
    af, rf = a[finite], r[finite]
    diff = np.abs(af - rf)
    max_abs = float(diff.max()) if diff.size else 0.0
    rel = diff / np.maximum(np.abs(rf), 1e-6)
    max_rel = float(rel.max()) if rel.size else 0.0
    na, nr = float(np.linalg.norm(af)), float(np.linalg.norm(rf))
    # the cosine of a zero vector is undefined, not 1.0: an all-zero reference proves nothing about the file
    cosine = float(np.dot(af, rf) / (na * nr)) if na > 0 and nr > 0 else None
    noise = float(np.sum((af - rf) ** 2))
    signal = float(np.sum(rf**2))
    if signal == 0:
        snr = None
    elif noise == 0:
        snr = SNR_CAP_DB
    else:
        snr = min(SNR_CAP_DB, 10 * math.log10(signal / noise))
    both_nan = np.isnan(a) & np.isnan(r)
    same_inf = np.isinf(a) & np.isinf(r) & (a == r)
    outside = int((~finite & ~both_nan & ~same_inf).sum())
    outside += int((diff > atol + rtol * np.abs(rf)).sum())
    return OutputMetrics(
        max_abs_error=max_abs, max_rel_error=max_rel, cosine=cosine, snr_db=snr,
        mismatch_ratio=float(outside) / max(1, a.size),
        nan_count=int(np.isnan(a).sum()), inf_count=int(np.isinf(a).sum()),
        ref_nan_count=int(np.isnan(r).sum()), ref_inf_count=int(np.isinf(r).sum()),
        top1_agreement=_top1(a, r), elements=int(a.size),
    )


def _top1(a: np.ndarray, r: np.ndarray) -> float | None:
    """Share of rows whose argmax agrees, for classifier-shaped outputs: (N, C) or (C,) with 2 ≤ C ≤ 100000."""
    if r.ndim == 1:
        a, r = a[None], r[None]
    if r.ndim != 2 or not 2 <= r.shape[1] <= 100000:
        return None
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(r, axis=1)))


def _min_defined(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def degenerate(refs: list[np.ndarray]) -> str | None:
    """Why a reference output cannot vouch for a file (None when it can): all zeros, one constant value, or a range
    so narrow next to its magnitude that any file would match it — across every input set together."""
    finite = [np.asarray(r, dtype=np.float64)[np.isfinite(np.asarray(r, dtype=np.float64))] for r in refs]
    vals = np.concatenate([f.ravel() for f in finite]) if finite else np.zeros(0)
    if vals.size == 0:
        return "has no finite values"
    lo, hi = float(vals.min()), float(vals.max())
    scale = max(abs(lo), abs(hi))
    if scale == 0:
        return "is all zeros for every verification input"
    if hi == lo:
        return f"is the constant {lo:.6g} for every verification input"
    if hi - lo <= 1e-6 * scale:
        return f"barely varies ({lo:.6g} … {hi:.6g}) across the verification inputs"
    return None


def merge(items: list[OutputMetrics]) -> OutputMetrics:
    """Worst case over several input sets (element-weighted mismatch ratio, mean top-1 agreement)."""
    total = sum(m.elements for m in items) or 1
    tops = [m.top1_agreement for m in items if m.top1_agreement is not None]
    return OutputMetrics(
        max_abs_error=max(m.max_abs_error for m in items),
        max_rel_error=max(m.max_rel_error for m in items),
        cosine=_min_defined([m.cosine for m in items]), snr_db=_min_defined([m.snr_db for m in items]),
        mismatch_ratio=sum(m.mismatch_ratio * m.elements for m in items) / total,
        nan_count=sum(m.nan_count for m in items), inf_count=sum(m.inf_count for m in items),
        ref_nan_count=sum(m.ref_nan_count for m in items), ref_inf_count=sum(m.ref_inf_count for m in items),
        top1_agreement=(sum(tops) / len(tops)) if tops else None, elements=total,
    )
