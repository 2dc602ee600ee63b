"""The bench report's charts, drawn with matplotlib and inlined as SVG (no scripts, no external references).

Each ``*_figure`` function returns a matplotlib ``Figure`` (tests read its axes: every point inside the axes'
limits); :func:`svg` turns one into an inline ``<svg>`` element with reproducible bytes (fixed hash salt, no date,
text kept as text). Charts:

- :func:`distribution_figure` — every timed run of every artifact × thread count (``samples_ms``): a box (quartiles,
  median), whiskers at the 5th and 95th percentiles, the runs beyond them as dots; PyTorch eager included.
- :func:`latency_size_figure` — p50 latency against size on disk, colour per format, marker per precision;
  PyTorch eager (no file) as a dashed line per thread count.
- :func:`startup_memory_figure` — load time, first inference and peak resident memory per artifact.
- :func:`size_parity_figure` — size on disk (coloured by parity status), zipped size and the parameter floor.
"""

from __future__ import annotations

import io
import re
from typing import Any

from mobilize.bench.report import FORMAT_COLORS, PARITY_COLORS, _color, _lat

_MARKERS = {"fp32": "o", "fp16": "s", "int8-weights": "^", "int8": "v", "int4-weights": "D"}
_WIDTH = 6.6  # inches at 100 dpi: the cards of the HTML page


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; SVG output is backend-independent
    import matplotlib.pyplot as plt

    return plt


def _label(r: dict[str, Any], threads: bool = True) -> str:
    return f"{r['format']} {r['precision']}" + (f" ×{r['threads']}t" if threads else "")


def _timed(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in data["results"] if r.get("status") == "ok" and _lat(r, "p50")]


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#6b7280")
    ax.set_xticks([])
    ax.set_yticks([])


def distribution_figure(data: dict[str, Any]) -> Any:
    plt = _plt()
    rows = [r for r in _timed(data) if r.get("samples_ms")]
    fig, ax = plt.subplots(figsize=(_WIDTH, max(2.2, 0.42 * len(rows) + 1.1)), dpi=100)
    if not rows:
        _empty(ax, "no raw latency samples in this record")
        return fig
    rows = rows[::-1]  # first row on top
    box = ax.boxplot([r["samples_ms"] for r in rows], orientation="horizontal", whis=(5, 95), widths=0.55,
                     patch_artist=True, flierprops={"marker": ".", "markersize": 3, "alpha": 0.5},
                     medianprops={"color": "#111827"})
    for patch, r in zip(box["boxes"], rows):
        patch.set_facecolor(_color(r["format"]))
        patch.set_alpha(0.55)
    ax.set_yticks(range(1, len(rows) + 1), [_label(r) for r in rows], fontsize=8)
    lo = min(min(r["samples_ms"]) for r in rows)
    hi = max(max(r["samples_ms"]) for r in rows)
    if hi / max(lo, 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("latency per inference (ms): box = quartiles, whiskers = 5th–95th percentile")
    ax.margins(x=0.04)
    ax.grid(axis="x", color="#e5e7eb")
    fig.tight_layout()
    return fig


def latency_size_figure(data: dict[str, Any]) -> Any:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(_WIDTH, 3.8), dpi=100)
    pts = [r for r in _timed(data) if r.get("bytes")]
    base = [r for r in _timed(data) if r["format"] == "pytorch"]
    if not pts:
        _empty(ax, "no artifact could be timed on this machine")
        return fig
    for r in pts:
        ax.scatter(r["bytes"] / 1e6, _lat(r, "p50"), color=_color(r["format"]), s=46, zorder=3,
                   marker=_MARKERS.get(r["precision"], "P"), label=_label(r, threads=False))
    for r in base:
        ax.axhline(_lat(r, "p50"), color=FORMAT_COLORS["pytorch"], linestyle="--", linewidth=1,
                   label=f"PyTorch eager ×{r['threads']}t", zorder=2)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5),
              frameon=False)
    ax.set_xlabel("size on disk (MB, 1 MB = 10⁶ bytes)")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.margins(0.08)
    ax.autoscale_view()
    ax.grid(color="#e5e7eb")
    fig.tight_layout()
    return fig


def startup_memory_figure(data: dict[str, Any]) -> Any:
    plt = _plt()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in data["results"]:
        if r.get("status") == "ok":
            rows.setdefault((r["format"], r["precision"]), r)  # load and memory do not depend on the thread count
    arts = list(rows.values())[::-1]
    fig, axes = plt.subplots(1, 3, figsize=(_WIDTH, max(2.2, 0.32 * len(arts) + 1.2)), dpi=100, sharey=True)
    if not arts:
        for ax in axes:
            _empty(ax, "nothing measured")
        return fig
    ys = range(len(arts))
    for ax, key, title in zip(axes, ("load_ms", "first_inference_ms", "peak_rss_mb"),
                              ("load (ms)", "first inference (ms)", "peak RSS (MB)")):
        vals = [r.get(key) or 0.0 for r in arts]
        ax.barh(list(ys), vals, color=[_color(r["format"]) for r in arts], alpha=0.8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlim(0, max(max(vals), 1e-9) * 1.12)
        ax.grid(axis="x", color="#e5e7eb")
    axes[0].set_yticks(list(ys), [_label(r, threads=False) for r in arts], fontsize=8)
    fig.tight_layout()
    return fig


def size_parity_figure(data: dict[str, Any]) -> Any:
    plt = _plt()
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in data["results"]:
        if r["format"] != "pytorch" and r.get("bytes"):
            seen.setdefault((r["format"], r["precision"]), r)
    arts = list(seen.values())[::-1]
    fig, ax = plt.subplots(figsize=(_WIDTH, max(2.2, 0.4 * len(arts) + 1.2)), dpi=100)
    if not arts:
        _empty(ax, "no files in this record")
        return fig
    ys = list(range(len(arts)))
    ax.barh(ys, [r["bytes"] / 1e6 for r in arts], height=0.62,
            color=[PARITY_COLORS.get(r.get("parity"), PARITY_COLORS[None]) for r in arts], alpha=0.75,
            label="size on disk (colour: parity)")
    zipped = [(y, r["zipped_bytes"] / 1e6) for y, r in zip(ys, arts) if r.get("zipped_bytes")]
    if zipped:
        ax.barh([y for y, _ in zipped], [v for _, v in zipped], height=0.28, color="#374151", alpha=0.7,
                label="zipped")
    floors = [(y, r["floor_bytes"] / 1e6) for y, r in zip(ys, arts) if r.get("floor_bytes")]
    if floors:
        ax.scatter([v for _, v in floors], [y for y, _ in floors], marker="|", s=260, color="#111827",
                   label="parameter floor", zorder=3)
    ax.set_yticks(ys, [_label(r, threads=False) for r in arts], fontsize=8)
    top = max(max(r["bytes"] for r in arts), max((r.get("floor_bytes") or 0) for r in arts)) / 1e6
    ax.set_xlim(0, top * 1.12)
    ax.set_xlabel("MB (10⁶ bytes)")
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    ax.grid(axis="x", color="#e5e7eb")
    fig.tight_layout()
    return fig


FIGURES = (("Latency distribution (every timed run)", distribution_figure),
           ("Latency vs size", latency_size_figure),
           ("Load, first inference and memory", startup_memory_figure),
           ("Size and parity", size_parity_figure))


def svg(fig: Any, label: str) -> str:
    """The figure as an inline ``<svg>`` element (reproducible bytes), then closed."""
    import matplotlib

    plt = _plt()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "mobilize", "svg.fonttype": "none", "font.family": "DejaVu Sans"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<!--.*?-->\s*", "", text, flags=re.S)
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)  # RDF boilerplate (namespace URLs)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)  # inline SVG in HTML needs no namespace declarations
    return text.replace("<svg ", f'<svg class="chart" role="img" aria-label="{label}" ', 1)


def charts_html(data: dict[str, Any]) -> list[tuple[str, str]]:
    """``[(title, inline svg)]`` for the report page."""
    return [(title, svg(build(data), title.lower())) for title, build in FIGURES]
