"""The report's matplotlib charts: every point inside its axes, every timed run shown, reproducible SVG bytes, no
external references. Records are hand-written here (wide ranges on purpose: a p50 just past a round tick, a 50×
spread that switches the distribution to a log axis); tests/bench/test_bench.py renders a real bench record."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from fixtures.axes import outside, points
from mobilize.bench import charts


def _row(fmt: str, prec: str, p50: float, *, threads: int = 1, nbytes: int | None = 1_694_000,
         spread: float = 1.3, parity: str | None = "pass") -> dict[str, Any]:
    rng = np.random.default_rng(len(fmt) * 31 + len(prec) + threads)
    samples = list(np.round(p50 * rng.uniform(1 / spread, spread, size=60), 5))
    return {"format": fmt, "precision": prec, "threads": threads, "status": "ok", "samples_ms": samples,
            "latency_ms": {"p50": float(np.median(samples)), "p90": float(np.percentile(samples, 90))},
            "bytes": nbytes, "zipped_bytes": int(nbytes * 0.9) if nbytes else None,
            "floor_bytes": int(nbytes * 0.8) if nbytes else None, "parity": parity,
            "load_ms": 12.5, "first_inference_ms": 3.25, "peak_rss_mb": 180.0}


def _record() -> dict[str, Any]:
    return {"results": [_row("pytorch", "fp32", 4.0, nbytes=None, parity=None),
                        _row("onnx", "fp32", 1.694), _row("onnx", "fp16", 1.52, nbytes=847_000),
                        _row("tflite", "int8", 0.09, nbytes=430_000, spread=4.0),
                        _row("coreml", "fp32", 2.0, parity="unverified"), _row("onnx", "fp32", 1.1, threads=2)]}


@pytest.mark.parametrize("build", [b for _, b in charts.FIGURES])
def test_every_point_is_inside_its_axes(build: Any) -> None:
    fig = build(_record())
    assert all(points(ax) for ax in fig.axes), build.__name__
    assert outside(fig) == [], build.__name__


def test_the_distribution_shows_every_timed_run() -> None:
    record = _record()
    fig = charts.distribution_figure(record)
    ax = fig.axes[0]
    rows = [r for r in record["results"] if r["samples_ms"]]
    assert len(ax.get_yticklabels()) == len(rows)
    assert ax.get_xscale() == "log"  # 0.02 ms … 8 ms: a linear axis would squash the fast rows
    lo = min(min(r["samples_ms"]) for r in rows)
    hi = max(max(r["samples_ms"]) for r in rows)
    xs = [x for x, _ in points(ax)]
    assert min(xs) == pytest.approx(lo) and max(xs) == pytest.approx(hi)  # the extremes are drawn (fliers)


def test_svg_is_inline_reproducible_and_offline() -> None:
    a = charts.charts_html(_record())
    b = charts.charts_html(_record())
    assert a == b  # the same record gives the same bytes
    for title, svg in a:
        assert svg.startswith('<svg class="chart" role="img" aria-label=') and svg.rstrip().endswith("</svg>")
        assert not re.search(r"https?://|<script|@import|url\((?!#)", svg), title


def test_a_record_with_nothing_timed_still_draws() -> None:
    record = {"results": [{"format": "coreml", "precision": "fp32", "threads": 1, "status": "error",
                           "samples_ms": None, "latency_ms": None, "bytes": None}]}
    for title, svg in charts.charts_html(record):
        assert "<svg" in svg, title
