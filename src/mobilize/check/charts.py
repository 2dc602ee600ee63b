"""The baseline comparison chart of ``mobilize check``'s HTML summary, drawn with matplotlib like the bench report's
charts (:mod:`mobilize.bench.charts`: same helpers, colours and inline, reproducible SVG).

One row per artifact the baseline knows, three panels side by side — size on disk, p50 latency ÷ PyTorch eager,
parity (SNR in dB, or max abs error on a log axis when an SNR is missing) — each a dumbbell: the baseline's value
(hollow), this run's (filled, coloured by that figure's regression verdict), a line between them, and a red tick
where the regression check would fail. The figures are the check record's ``comparison`` rows
(:func:`mobilize.check.judge.comparison`), so the chart shows exactly what was judged.
"""

from __future__ import annotations

import math
from typing import Any

from mobilize.bench.charts import _plt, svg

STATUS_COLORS = {"pass": "#16a34a", "fail": "#dc2626", "skip": "#9ca3af"}
BASELINE_COLOR = "#6b7280"
LIMIT_COLOR = "#b91c1c"
_WIDTH = 10.0  # inches at 100 dpi: the full width of the summary page


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def compared(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The check record's artifacts that have baseline figures, in table order."""
    return [a for a in data["artifacts"] if a.get("comparison")]


def _parity_metric(arts: list[dict[str, Any]]) -> str:
    """SNR when every compared artifact has it before and now; else max abs error."""
    def has(a: dict[str, Any], metric: str) -> bool:
        r = _row(a, metric)
        return r is not None and _finite(r["baseline"]) and _finite(r["current"])

    return "SNR" if all(has(a, "SNR") for a in arts if _row(a, "SNR") or _row(a, "max abs error")) else "max abs error"


def _row(a: dict[str, Any], metric: str) -> dict[str, Any] | None:
    return next((r for r in a.get("comparison") or [] if r["metric"] == metric), None)


def _panels(arts: list[dict[str, Any]]) -> list[tuple[str, str, float, bool]]:
    """(metric, x-axis label, scale to divide values by, log axis) per panel."""
    sizes = [v for a in arts if (r := _row(a, "size")) for v in (r["baseline"], r["current"]) if _finite(v)]
    mb = bool(sizes) and max(sizes) >= 1e6
    threads = sorted({int(r["threads"]) for a in arts if (r := _row(a, "latency ratio")) and r.get("threads")})
    at = f", {'/'.join(map(str, threads))} thread{'s' if threads != [1] else ''}" if threads else ""
    parity = _parity_metric(arts)
    return [("size", f"size on disk ({'MB, 1 MB = 10⁶' if mb else 'KB, 1 KB = 1000'} bytes)\nsmaller is better",
             1e6 if mb else 1e3, False),
            ("latency ratio", f"p50 latency ÷ PyTorch eager (×{at})\n< 1 = faster than eager, lower is better",
             1.0, False),
            ("SNR", "parity: SNR vs PyTorch (dB)\nhigher = closer to PyTorch", 1.0, False) if parity == "SNR" else
            ("max abs error", "parity: max abs error vs PyTorch (log)\nlower = closer to PyTorch", 1.0, True)]


def baseline_figure(data: dict[str, Any]) -> Any:
    """The dumbbell chart (a matplotlib Figure), or None when no artifact has baseline figures (no baseline yet, or
    every file is new): the page says so in words instead of drawing an empty chart."""
    arts = compared(data)
    if not arts:
        return None
    plt = _plt()
    arts = arts[::-1]  # first artifact on top
    panels = _panels(arts)
    fig, axes = plt.subplots(1, len(panels), figsize=(_WIDTH, max(2.4, 0.36 * len(arts) + 1.9)), dpi=100,
                             sharey=True)
    ys = list(range(len(arts)))
    for ax, (metric, label, scale, log) in zip(axes, panels):
        xs: list[float] = []
        for y, a in zip(ys, arts):
            r = _row(a, metric)
            if r is None:
                continue
            was = r["baseline"] / scale if _finite(r["baseline"]) else None
            now = r["current"] / scale if _finite(r["current"]) else None
            limit = r["limit"] / scale if _finite(r["limit"]) else None
            if log:  # a zero error has no place on a log axis
                was, now, limit = (v if v is not None and v > 0 else None for v in (was, now, limit))
            if was is not None and now is not None:
                ax.plot([was, now], [y, y], color="#d1d5db", linewidth=2.2, zorder=1)
            if was is not None:  # a ring on top: still seen when this run's value is the same
                ax.scatter([was], [y], s=90, facecolors="none", edgecolors=BASELINE_COLOR, linewidths=1.6, zorder=5,
                           label="baseline")
            if now is not None:
                ax.scatter([now], [y], s=52, color=STATUS_COLORS.get(r["status"], STATUS_COLORS["skip"]), zorder=4,
                           label=f"this run ({r['status']})")
            if limit is not None:
                ax.scatter([limit], [y], marker="|", s=260, color=LIMIT_COLOR, linewidths=1.8, zorder=2,
                           label="fails past here")
            xs += [v for v in (was, now, limit) if v is not None]
        if log:
            ax.set_xscale("log")
        _fit(ax, xs, log)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", color="#e5e7eb")
    axes[0].set_yticks(ys, [f"{a['format']} {a['precision']}" for a in arts], fontsize=8)
    axes[0].set_ylim(-0.6, len(arts) - 0.4)
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = sorted(handles, key=lambda k: ("baseline", "this run (pass)", "this run (fail)", "this run (skip)",
                                           "fails past here").index(k))
    fig.legend([handles[k] for k in order], order, loc="upper center", ncol=len(order), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def _fit(ax: Any, xs: list[float], log: bool) -> None:
    """x limits holding every value with a margin (matplotlib's autoscale ignores the tick markers' extent)."""
    if not xs:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="#6b7280")
        ax.set_xticks([])
        return
    lo, hi = min(xs), max(xs)
    if log:
        lo, hi = lo / 2, hi * 2
    else:
        pad = (hi - lo) * 0.12 or abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    ax.set_xlim(lo, hi)


def baseline_svg(data: dict[str, Any]) -> str | None:
    """The chart as an inline ``<svg>`` (reproducible bytes), or None when there is nothing to compare."""
    fig = baseline_figure(data)
    return None if fig is None else svg(fig, "baseline comparison")
