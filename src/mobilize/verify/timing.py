"""Single-thread latency of every artifact at export / verify time, for the fitness judgement.

Short on purpose (a fraction of a second per file, interleaved with :func:`mobilize.bench.latency.measure`): the
judgement only needs to tell "clearly slower" from "about the same", so each figure carries a distribution-free
95 % confidence interval of its median, and :mod:`mobilize.verify.fitness` decides only when the intervals agree.
``mobilize bench`` is the full measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mobilize.bench.latency import Settings

#: a quick, interleaved measurement: enough runs for a median and its confidence interval
SETTINGS = Settings(warmup_runs=3, warmup_seconds=0.05, min_runs=21, min_seconds=0.15, rounds=3, rewarm_runs=1,
                    cv_threshold=0.15)


def median_ci(samples: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """(median, low, high): the 95 % confidence interval of the median from order statistics (no distribution
    assumed; for n samples the ranks n/2 ∓ z·√n/2)."""
    xs = sorted(samples)
    n = len(xs)
    if not n:
        raise ValueError("no samples")
    med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    half = z * math.sqrt(n) / 2
    lo = xs[max(0, math.floor(n / 2 - half) - 1)]
    hi = xs[min(n - 1, math.ceil(n / 2 + half))]
    return med, lo, hi


def decided_by(pairs: Sequence[Sequence[Any]]) -> Callable[[dict[str, Any]], bool] | None:
    """The early stop of a timing whose only use is the comparisons ``pairs`` (``[key_a, key_b, ratio]``: is a
    slower than ratio × b?, :func:`mobilize.verify.fitness.latency_pairs`): every comparison is settled once the
    confidence intervals so far put a either surely within the ratio (a's high end ≤ ratio × b's low end) or surely
    beyond it (a's low end > ratio × b's high end). More runs would only narrow intervals that already decide, so
    the verdicts are those of the full timing; files that clearly differ, or clearly do not, are timed for one round
    instead of three. None (no pairs): time in full."""
    if not pairs:
        return None

    def decided(results: dict[str, Any]) -> bool:
        for a, b, ratio in pairs:
            ma, mb = results.get(a), results.get(b)
            if ma is None or mb is None or not ma.samples_ms or not mb.samples_ms:
                continue  # a file that could not be timed has nothing to decide
            _, a_lo, a_hi = median_ci(ma.samples_ms)
            _, b_lo, b_hi = median_ci(mb.samples_ms)
            if not (a_hi <= ratio * b_lo or a_lo > ratio * b_hi):
                return False
        return True

    return decided


def measure_in_process(items: Sequence[dict[str, Any]], reference: Path, input_names: list[str],
                       threads: int = 1, pairs: Sequence[Sequence[Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Time each ``{"key", "format", "path"}`` with its format's native runtime; files whose format cannot run here
    (or only through a reference interpreter) come back ``{"unmeasured": why}``. ``pairs``: the comparisons the
    timing is for, which may end it early (:func:`decided_by`)."""
    from mobilize import formats
    from mobilize.bench import latency
    from mobilize.bench.memory import feeds_for
    from mobilize.verify.parity import Reference

    ref = Reference.load(Path(reference))
    out: dict[str, dict[str, Any]] = {}
    targets = []
    runtimes: dict[str, str] = {}
    for it in items:
        runner_cls = formats.get(it["format"]).load("runner")
        ok, why = runner_cls.available()
        if not ok:
            out[it["key"]] = {"unmeasured": f"{why}; a reference interpreter's speed is not device latency"
                              if formats.get(it["format"]).fallback_runner else why}
            continue
        runtimes[it["key"]] = runner_cls.runtime
        targets.append(latency.RunnerTarget(it["key"], runner_cls, Path(it["path"]), threads,
                                            lambda r: feeds_for(r, ref, input_names)))
    for key, m in latency.measure(targets, SETTINGS, decided=decided_by(pairs or [])).items():
        if m.error or not m.samples_ms:
            out[key] = {"unmeasured": f"could not run: {m.error or 'no samples'}"}
            continue
        med, lo, hi = median_ci(m.samples_ms)
        out[key] = {"median_ms": round(med, 5), "ci_low_ms": round(lo, 5), "ci_high_ms": round(hi, 5),
                    "runs": len(m.samples_ms), "threads": threads, "runtime": runtimes[key],
                    "noisy": bool((m.stats or {}).get("cv", 0) > SETTINGS.cv_threshold)}
    return out


def measure(items: Sequence[dict[str, Any]], reference: Path, input_names: list[str], *,
            isolate: bool = True, pairs: Sequence[Sequence[Any]] | None = None) -> dict[str, dict[str, Any]]:
    """:func:`measure_in_process` in one worker process for all items (a crash costs the timings, not the run)."""
    if not items:
        return {}
    job = {"op": "latency", "items": list(items), "reference": str(reference), "input_names": list(input_names),
           "pairs": [list(p) for p in pairs or []]}
    if not isolate:
        from mobilize._worker import handle

        return handle(job)["latency"]
    from mobilize import isolate as iso

    try:  # in a pooled export, the worker of a natively run format (its runtime is loaded already)
        from mobilize import formats

        native = [it["format"] for it in items if not formats.get(it["format"]).fallback_runner]
        res = iso.run(job, key=(native or [items[0]["format"]])[0])
    except iso.WorkerDied as exc:
        return {it["key"]: {"unmeasured": f"timing crashed: {exc}"} for it in items}
    if "latency" not in res:
        return {it["key"]: {"unmeasured": f"timing failed: {res.get('error', '?')}"} for it in items}
    return res["latency"]
