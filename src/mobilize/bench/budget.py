"""Budgets: ``--budget latency_p90_ms=15,size_mb=10,threads=1`` → a pass/fail verdict per artifact.

Keys (every value a non-negative number; sizes in MB = 10⁶ bytes):

    latency_p50_ms latency_p90_ms latency_p99_ms latency_mean_ms   per thread count measured
    load_ms first_inference_ms peak_rss_mb                          per thread count measured
    size_mb zipped_mb                                               per artifact
    threads=N   apply the per-thread-count budgets only at N threads (default: at every measured thread count)

A budget on a figure that could not be measured (Core ML latency on Linux) is ``unknown``, not a failure.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from mobilize.errors import OptionError, one_line

#: budget key → (JSON figure it limits, per-thread-count?)
KEYS: dict[str, tuple[str, bool]] = {
    "latency_p50_ms": ("latency_ms.p50", True),
    "latency_p90_ms": ("latency_ms.p90", True),
    "latency_p99_ms": ("latency_ms.p99", True),
    "latency_mean_ms": ("latency_ms.mean", True),
    "load_ms": ("load_ms", True),
    "first_inference_ms": ("first_inference_ms", True),
    "peak_rss_mb": ("peak_rss_mb", True),
    "size_mb": ("bytes", False),
    "zipped_mb": ("zipped_bytes", False),
}


@dataclasses.dataclass(frozen=True)
class Budget:
    limits: dict[str, float]
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"limits": dict(self.limits), "threads": self.threads}


def parse(text: str | None) -> Budget | None:
    """Parse ``key=value,key=value``; raise :class:`OptionError` (one line) on anything malformed."""
    if text is None or not text.strip():
        return None
    limits: dict[str, float] = {}
    threads: int | None = None
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise OptionError(f"--budget: {one_line(repr(part), 60)} is not key=value (e.g. "
                              "latency_p90_ms=15,size_mb=10,threads=1)")
        if key == "threads":
            if not (value.isascii() and value.isdigit()) or len(value) > 9 or int(value) < 1:
                raise OptionError(f"--budget: threads={one_line(repr(value), 40)} must be a positive integer "
                                  "(ASCII digits, e.g. threads=1)")
            from mobilize.bench.run import check_threads

            threads = check_threads(int(value), "--budget threads")
            continue
        if key not in KEYS:
            import difflib

            hint = difflib.get_close_matches(key, [*KEYS, "threads"], n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise OptionError(f"--budget: unknown key {one_line(repr(key), 60)}{did}; choose from "
                              f"{', '.join([*KEYS, 'threads'])}")
        try:
            if not value.isascii():  # float() accepts other scripts' digits; a budget is written in ASCII
                raise ValueError
            number = float(value)
        except ValueError:
            raise OptionError(f"--budget: {key}={one_line(repr(value), 40)} is not a number (ASCII digits, e.g. "
                              f"{key}=15)") from None
        if not math.isfinite(number) or number < 0:
            raise OptionError(f"--budget: {key}={one_line(repr(value), 40)} must be a finite number ≥ 0")
        if key in limits:
            raise OptionError(f"--budget: {key} is given twice")
        limits[key] = number
    if not limits:
        raise OptionError("--budget names no limit (only threads=); add e.g. latency_p90_ms=15")
    return Budget(limits, threads)


def _get(row: dict[str, Any], dotted: str) -> Any:
    value: Any = row
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def judge(budget: Budget, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Checks for one artifact's rows (one per thread count): ``{status, checks: [...]}``.

    ``status`` is ``fail`` if any check failed, ``unknown`` if none failed but some figure was missing, else ``pass``.
    """
    checks: list[dict[str, Any]] = []
    for key, limit in budget.limits.items():
        field, per_thread = KEYS[key]
        targets = rows if per_thread else rows[:1]
        if per_thread and budget.threads is not None:
            targets = [r for r in rows if r["threads"] == budget.threads]
        for row in targets:
            value = _get(row, field)
            if value is not None and field in ("bytes", "zipped_bytes"):
                value = value / 1e6
            ok = None if value is None else bool(value <= limit)
            checks.append(
                {
                    "key": key,
                    "limit": limit,
                    "value": value,
                    "threads": row["threads"] if per_thread else None,
                    "ok": ok,
                    "reason": row.get("reason") if value is None else None,
                }
            )
    if any(c["ok"] is False for c in checks):
        status = "fail"
    elif any(c["ok"] is None for c in checks) or not checks:
        status = "unknown"
    else:
        status = "pass"
    return {"status": status, "checks": checks}
