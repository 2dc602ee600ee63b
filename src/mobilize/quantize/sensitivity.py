"""Per-layer sensitivity: which layers, kept in float, buy back the most accuracy — and keeping them float until the
accuracy target is met or the size limit is reached.

Format-agnostic: it only needs ``trial(exclude) -> Trial`` (quantize with those layers kept float, then measure on
the held-out samples). Sensitivity of a layer = how much the held-out SNR rises when *only that layer* is kept float
(leave-one-out against the all-int8 file). Layers are probed in order of prior suspicion — the last layer (its int8
output quantizes the logits), the first (it sees the raw input), then the rest from the output backwards — until the
time budget is spent; the probed layers are then kept float greedily, most helpful first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: seconds spent probing single layers per (format, precision); greedy steps come on top
PROBE_BUDGET_S = 90.0
#: greedy steps (each one quantization + measurement)
MAX_STEPS = 10


def prior_order(layers: list[dict[str, str]]) -> list[dict[str, str]]:
    if len(layers) <= 2:
        return list(layers)
    return [layers[-1], layers[0], *reversed(layers[1:-1])]


def size_budget(base_bytes: int, fp32_bytes: int, target: Any) -> int:
    """Bytes a static int8 file may grow to while layers are kept float: ``max_size_ratio`` × fp32, or 5 % over the
    all-int8 file when that is already larger (tiny models, where scales and graph overhead dominate)."""
    return int(max(target.max_size_ratio * fp32_bytes, 1.05 * base_bytes))


def search(
    trial: Callable[[list[str]], Any],
    layers: list[dict[str, str]],
    base: Any,
    target: Any,
    fp32_bytes: int,
    *,
    budget_s: float = PROBE_BUDGET_S,
    max_steps: int = MAX_STEPS,
) -> tuple[list[str], dict[str, Any]]:
    """Returns (layer names kept float, record). ``record["_best"]`` is the best Trial found (popped by caller)."""
    t0 = time.perf_counter()
    limit = size_budget(base.bytes, fp32_bytes, target)
    base_snr = base.figures["snr_db"]
    base_top1 = base.figures["top1_agreement"]
    probes: list[dict[str, Any]] = []
    for layer in prior_order(layers):
        if probes and time.perf_counter() - t0 > budget_s:
            break
        t = trial([layer["name"]])
        gain = t.figures["snr_db"] - base_snr
        top1_gain = (t.figures["top1_agreement"] - base_top1) if base_top1 is not None else 0.0
        probes.append(
            {
                "layer": layer["name"],
                "module": layer.get("module") or None,
                "op": layer.get("op"),
                "snr_gain_db": round(gain, 3),
                "top1_gain": round(top1_gain, 4),
                "size_ratio": round(t.bytes / fp32_bytes, 4),
            }
        )
        if t.meets(target) and t.bytes <= limit:
            probes[-1]["meets_target_alone"] = True
            break  # one layer is enough: no need to rank the rest
    ranked = sorted(
        (p for p in probes if p["snr_gain_db"] > 0.05 or p["top1_gain"] > 0),
        key=lambda p: (p["top1_gain"], p["snr_gain_db"]),
        reverse=True,
    )
    kept: list[str] = []
    best = base
    steps = []
    for p in ranked[:max_steps]:
        cand = trial([*kept, p["layer"]])
        over = cand.bytes > limit
        steps.append(
            {
                "kept_float": len(kept) + 1,
                "layer": p["layer"],
                "snr_db": cand.figures["snr_db"],
                "top1_agreement": cand.figures["top1_agreement"],
                "size_ratio": round(cand.bytes / fp32_bytes, 4),
                "over_size_limit": over,
            }
        )
        if over:
            continue  # this layer is too big to keep float; try the next one
        if cand.score() >= best.score():
            kept.append(p["layer"])
            best = cand
        if best.meets(target):
            break
    record = {
        "size_limit_bytes": limit,
        "probed_layers": len(probes),
        "of_layers": len(layers),
        "seconds": round(time.perf_counter() - t0, 1),
        "probes": probes,
        "greedy_steps": steps,
        "met_target": bool(best.meets(target)),
        "_best": best if best is not base else None,
    }
    return kept, record
