"""Per-layer sensitivity: which layers, kept in float, buy back the most accuracy — and keeping them float until the
accuracy target (plus its headroom) is met or the size limit is reached.

Format-agnostic: it only needs ``trial(exclude) -> Trial`` (quantize with those layers kept float, then measure on
the held-out samples). A *probe* keeps one unit float against the all-int8 file and measures the gain in held-out
SNR / top-1. Units are probed in order of prior suspicion until the time budget is spent (:func:`probe_units`):
the last layer (its int8 output quantizes the logits); float *islands* at the input — the first 1, 2, … layers
together, because only consecutive float layers keep the tensors between them float (on EfficientNet-Lite0 the first
four layers together gain 4.4 dB, the stem alone 2.3 dB, single inner layers −0.5…+0.6 dB); then every other single
layer, forwards. The probed units are then kept float greedily, most helpful first.

The probes are independent of each other: :func:`search` asks for them all through ``trials`` (which may run them in
parallel, :class:`mobilize.quantize.driver.TrialRunner`) and consumes them one by one in this order, stopping as it
would without parallelism — the probes run ahead and not consumed are discarded, so the result does not depend on
how many ran at once.

A greedy step whose quantized file is over the size limit is never kept (the step is skipped whatever its accuracy),
so its held-out run is skipped too: ``trial(exclude, size_limit=…)`` returns it unmeasured and the skip is listed in
``cannot_win`` with the reason. Probes are always measured: a probe's gain only ranks the greedy steps, and a step
adds the layers already kept, so a probe over the limit alone does not prove its step is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

#: seconds spent probing per (format, precision); greedy steps come on top
PROBE_BUDGET_S = 90.0
#: greedy steps (each one quantization + measurement)
MAX_STEPS = 10
#: the longest float island at the input that is probed
MAX_ISLAND = 6


def probe_units(layers: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """What is probed, in order: the last layer; the first ``k`` layers together for k = 1 … ``MAX_ISLAND`` (early
    layers see the raw input and their error is amplified by everything after them); then each remaining layer
    alone, from the input forwards."""
    if len(layers) <= 2:
        return [[layer] for layer in layers]
    units = [[layers[-1]]]
    units += [layers[:k] for k in range(1, min(MAX_ISLAND, len(layers) - 1) + 1)]
    units += [[layer] for layer in layers[1:-1]]
    return units


def size_budget(base_bytes: int, fp32_bytes: int, target: Any) -> int:
    """Bytes a static int8 file may grow to while layers are kept float: ``max_size_ratio`` × fp32, or 5 % over the
    all-int8 file when that is already larger (tiny models, where scales and graph overhead dominate)."""
    return int(max(target.max_size_ratio * fp32_bytes, 1.05 * base_bytes))


def search(
    trial: Callable[..., Any],
    layers: list[dict[str, str]],
    base: Any,
    target: Any,
    fp32_bytes: int,
    *,
    budget_s: float = PROBE_BUDGET_S,
    max_steps: int = MAX_STEPS,
    trials: Callable[[list[list[str]]], Iterator[Any]] | None = None,
    cannot_win: list[dict[str, str]] | None = None,
    skip_cannot_win: bool = True,
) -> tuple[list[str], dict[str, Any]]:
    """Returns (layer names kept float, record). ``record["_best"]`` is the best Trial found (popped by caller).

    ``trial(exclude, size_limit=None)`` quantizes with ``exclude`` kept float and measures the file unless it is over
    ``size_limit``; ``trials(excludes)`` yields the trials of several, in order (default: ``trial`` one by one).
    ``cannot_win`` collects the trials not measured because they cannot be chosen (``skip_cannot_win=False``
    measures them anyway: the choice is the same, only slower)."""
    t0 = time.perf_counter()
    limit = size_budget(base.bytes, fp32_bytes, target)
    aim = target.aim()
    base_snr = base.figures["snr_db"] if base.figures["snr_db"] is not None else 0.0
    base_top1 = base.figures["top1_agreement"]
    base_metric = (base.figures.get("metric") or {}).get("value")
    probes: list[dict[str, Any]] = []
    stopped = False
    units = probe_units(layers)
    names_of = [[layer["name"] for layer in unit] for unit in units]
    results = trials(names_of) if trials is not None else (trial(n) for n in names_of)
    try:
        _probe(results, units, names_of, probes, base_snr, base_top1, base_metric, fp32_bytes, aim, limit, t0,
               budget_s)
    except _Stopped:
        stopped = True
    finally:
        results.close()  # type: ignore[attr-defined]  # probes submitted ahead and not consumed are discarded
    ranked = sorted(
        (i for i, p in enumerate(probes) if p["snr_gain_db"] > 0.05 or p["top1_gain"] > 0 or p["metric_gain"] > 0),
        key=lambda i: (probes[i]["metric_gain"], probes[i]["top1_gain"], probes[i]["snr_gain_db"]),
        reverse=True,
    )
    kept: list[str] = []
    best = base
    steps = []
    for i in ranked:
        if len(steps) >= max_steps:
            break
        extra = [n for n in probes[i]["layers"] if n not in kept]
        if not extra:
            continue  # an island already inside what is kept
        cand = trial([*kept, *extra], size_limit=limit) if skip_cannot_win else trial([*kept, *extra])
        over = cand.bytes > limit
        fig = cand.figures or {}
        steps.append(
            {
                "kept_float": len(kept) + len(extra),
                "layers": extra,
                "snr_db": fig.get("snr_db"),
                "top1_agreement": fig.get("top1_agreement"),
                "metric": (fig.get("metric") or {}).get("value"),
                "size_ratio": round(cand.bytes / fp32_bytes, 4),
                "over_size_limit": over,
            }
        )
        if over:  # too big to keep float whatever its accuracy; try the next one
            if skip_cannot_win and cannot_win is not None:
                cannot_win.append({"trial": f"{_label(base)} + {len(kept) + len(extra)} layer(s) float "
                                            f"(greedy step {len(steps)})",
                                   "why": f"over the size limit ({cand.bytes} > {limit} bytes), known before the "
                                          "held-out run: a step over the limit is never kept"})
            continue
        if cand.score() >= best.score():
            kept.extend(extra)
            best = cand
        if best.meets(aim):
            break
    record = {
        "size_limit_bytes": limit,
        "probed_layers": len(probes),
        "of_layers": len(layers),
        "seconds": round(time.perf_counter() - t0, 1),
        "probes": probes,
        "greedy_steps": steps,
        "met_target": bool(best.meets(target)),
        "probe_budget_s": round(budget_s, 1),
        "stopped_by_budget": stopped,  # probing stopped before every unit was probed
        "_best": best if best is not base else None,
    }
    return kept, record


class _Stopped(Exception):
    """The probe time budget ran out before every unit was probed."""


def _probe(results: Iterator[Any], units: list[list[dict[str, str]]], names_of: list[list[str]],
           probes: list[dict[str, Any]], base_snr: float, base_top1: float | None, base_metric: float | None,
           fp32_bytes: int, aim: Any, limit: int, t0: float, budget_s: float) -> None:
    """Consume the probes in order into ``probes``; stops at the first unit that meets the aim alone."""
    for unit, names in zip(units, names_of):
        if probes and time.perf_counter() - t0 > budget_s:
            raise _Stopped
        t = next(results)
        gain = (t.figures["snr_db"] if t.figures["snr_db"] is not None else 0.0) - base_snr
        top1_gain = (t.figures["top1_agreement"] - base_top1) if base_top1 is not None else 0.0
        metric_gain = ((t.figures.get("metric") or {}).get("value", 0.0) - base_metric) if base_metric is not None \
            else 0.0
        last = unit[-1]
        probes.append(
            {
                "layers": names,
                "module": last.get("module") or None,
                "op": last.get("op"),
                "snr_gain_db": round(gain, 3),
                "top1_gain": round(top1_gain, 4),
                "metric_gain": round(metric_gain, 6),
                "size_ratio": round(t.bytes / fp32_bytes, 4),
            }
        )
        if t.meets(aim) and t.bytes <= limit:
            probes[-1]["meets_target_alone"] = True
            return  # one unit is enough: no need to rank the rest


def _label(base: Any) -> str:
    method = getattr(base, "method", "")
    return f"{base.recipe.name}{f' ({method})' if method else ''}"
