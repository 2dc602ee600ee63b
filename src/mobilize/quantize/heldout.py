"""Accuracy figures on the held-out calibration samples: per-output SNR, argmax agreement along a class axis, and
the user's task metric — the numbers a quantized candidate is judged and chosen by.

Outputs whose PyTorch reference is degenerate on the held-out samples (all zeros, constant) get no SNR: matching
them proves nothing (:func:`mobilize.verify.metrics.degenerate`); they are listed under ``unjudged``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mobilize.errors import OptionError, describe

Metric = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], float]


class MetricError(OptionError):
    """The user's metric could not be loaded or did not return a finite number (CLI exit 2)."""


def load_metric(metric: Any) -> Metric | None:
    """A callable, or ``"file.py:fn"`` / ``"package.module:fn"`` loaded like a model source (user code, run
    because the user named it)."""
    if metric is None or callable(metric):
        return metric
    from mobilize.source import _load_function

    text = str(metric)
    target, sep, fn_name = text.rpartition(":")
    if not sep or not target or not fn_name.isidentifier():
        raise MetricError(f"--metric {text!r}: write file.py:fn or package.module:fn (fn(outputs, batch) -> float)")
    try:
        return _load_function(target, fn_name, f"--metric {text}")
    except OptionError:
        raise
    except Exception as exc:  # noqa: BLE001 - SourceError and friends: one clear line
        raise MetricError(describe(exc, 300)) from None


def stack(items: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per name, the samples' arrays concatenated along axis 0 (as if the model had run them as one batch)."""
    return {n: np.concatenate([np.atleast_1d(np.asarray(it[n])) for it in items]) for n in names}


def run_metric(fn: Metric, outputs: dict[str, np.ndarray], batch: dict[str, np.ndarray], name: str) -> float:
    try:
        value = fn(outputs, batch)
        value = float(value)
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise MetricError(f"--metric {name}: raised {describe(exc, 240)}") from None
    if not math.isfinite(value):
        raise MetricError(f"--metric {name}: returned {value}, not a finite number")
    return value


def agreement(a: np.ndarray, r: np.ndarray, axis: int) -> float | None:
    """Share of positions whose argmax along ``axis`` agrees (None when the axis does not exist)."""
    if not -r.ndim <= axis < r.ndim or r.shape[axis] < 2:
        return None
    return float(np.mean(np.argmax(a, axis=axis) == np.argmax(r, axis=axis)))


def figures(got: Sequence[Mapping[str, np.ndarray]], ref: Sequence[Mapping[str, np.ndarray]], names: Sequence[str],
            target: Any, *, metric: Metric | None = None, batch: dict[str, np.ndarray] | None = None,
            metric_pytorch: float | None = None) -> dict[str, Any]:
    """``{"snr_db", "top1_agreement", "metric", "outputs", "unjudged", "samples"}`` of a file's held-out outputs
    ``got`` against PyTorch's ``ref`` (one mapping per sample, keyed by the model's output names)."""
    from mobilize.verify import metrics as M

    axes = dict(getattr(target, "class_axes", {}) or {})
    per: dict[str, Any] = {}
    unjudged: list[str] = []
    for n in names:
        ref_all = np.concatenate([np.atleast_1d(r[n]) for r in ref])
        if not np.issubdtype(ref_all.dtype, np.floating):
            continue
        a = np.concatenate([np.atleast_1d(g[n]) for g in got]).reshape(ref_all.shape)
        why = M.degenerate([ref_all])
        m = M.compare(a, ref_all, atol=0.0, rtol=0.0)
        if n in axes:
            top1 = agreement(a, ref_all, axes[n])
        else:
            top1 = m.top1_agreement if ref_all.ndim == 2 and ref_all.shape[0] == len(got) else None
        per[n] = {"snr_db": None if why or m.snr_db is None else round(m.snr_db, 3),
                  "cosine": None if m.cosine is None else round(m.cosine, 6), "top1_agreement": top1,
                  "max_abs_error": m.max_abs_error}
        if why:
            unjudged.append(f"{n}: the PyTorch output {why.replace('verification input', 'held-out sample')}")
    snrs = [v["snr_db"] for v in per.values() if v["snr_db"] is not None]
    tops = [v["top1_agreement"] for v in per.values() if v["top1_agreement"] is not None]
    out: dict[str, Any] = {"snr_db": min(snrs) if snrs else None, "top1_agreement": min(tops) if tops else None,
                           "samples": len(got), "outputs": per, "unjudged": unjudged}
    if metric is not None:
        name = getattr(target, "metric_name", None) or "metric"
        value = run_metric(metric, stack(got, names), batch or {}, name)
        out["metric"] = {"name": name, "value": round(value, 6), "pytorch": metric_pytorch,
                         "min": getattr(target, "min_metric", None)}
    return out


def meets(fig: dict[str, Any] | None, target: Any) -> bool | None:
    """Whether held-out figures meet ``target`` (None: nothing was measured)."""
    if fig is None:
        return None
    if fig.get("snr_db") is not None and fig["snr_db"] < target.min_snr_db:
        return False
    if fig.get("top1_agreement") is not None and fig["top1_agreement"] < target.min_top1:
        return False
    m = fig.get("metric") or {}
    if getattr(target, "min_metric", None) is not None and m.get("value") is not None and m["value"] < \
            target.min_metric:
        return False
    if fig.get("snr_db") is None and fig.get("top1_agreement") is None and not m:
        return None  # every output degenerate and no metric: nothing says the file is good
    return True


def score(fig: dict[str, Any] | None) -> tuple[float, float, float]:
    """Higher is better: the user's metric first (when there is one), then top-1 agreement, then SNR."""
    f = fig or {}
    m = (f.get("metric") or {}).get("value")
    top = f.get("top1_agreement")
    snr = f.get("snr_db")
    return (m if m is not None else 0.0, top if top is not None else 1.0, snr if snr is not None else -1e9)
