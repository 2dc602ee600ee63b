"""The whole pass on a real (tiny) bundle: every documented JSON field with its type, bytes match the files,
manifest stays valid, reports are written and self-contained."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NUM = (int, float)
OPT_NUM = (int, float, type(None))
OPT_STR = (str, type(None))

#: every per-row field documented in docs/bench.md, with its JSON types
ROW_FIELDS = {
    "format": str,
    "precision": str,
    "path": OPT_STR,
    "runtime": OPT_STR,
    "threads": int,
    "status": str,
    "reason": OPT_STR,
    "latency_ms": (dict, type(None)),
    "runs": (int, type(None)),
    "measured_s": OPT_NUM,
    "noisy": (bool, type(None)),
    "remeasured": (bool, type(None)),
    "cv_first": OPT_NUM,
    "load_ms": OPT_NUM,
    "first_inference_ms": OPT_NUM,
    "peak_rss_mb": OPT_NUM,
    "baseline_rss_mb": OPT_NUM,
    "model_rss_mb": OPT_NUM,
    "bytes": (int, type(None)),
    "zipped_bytes": (int, type(None)),
    "floor_bytes": (int, type(None)),
    "floor_ratio": OPT_NUM,
    "parameters": (int, type(None)),
    "macs": (int, type(None)),
    "gmacs_per_s": OPT_NUM,
    "peak_gmacs": OPT_NUM,
    "peak_share": OPT_NUM,
    "speedup_vs_pytorch": OPT_NUM,
    "latency_vs_pytorch": OPT_NUM,
    "samples_ms": (list, type(None)),
    "samples_stride": (int, type(None)),
    "parity": OPT_STR,
    "budget": OPT_STR,
}
LATENCY_KEYS = {"p50", "p90", "p99", "mean", "std", "cv", "min", "max"}
TOP_FIELDS = {
    "schema": str,
    "created": str,
    "bundle": str,
    "model": dict,
    "machine": dict,
    "settings": dict,
    "baseline": dict,
    "results": list,
    "budget": (dict, type(None)),
    "exit_code": int,
}
MACHINE_FIELDS = {
    "cpu": str,
    "cpu_flags": list,
    "cores_logical": int,
    "cores_usable": int,
    "os": str,
    "platform": str,
    "python": str,
    "load_avg": list,
    "versions": dict,
    "peak_gmacs": dict,
}


@pytest.mark.slow
def test_json_has_every_documented_field(bench_run) -> None:  # noqa: ANN001
    result, _, _ = bench_run
    data = json.loads(json.dumps(result.data, allow_nan=False))  # what --json writes
    for key, typ in TOP_FIELDS.items():
        assert isinstance(data[key], typ), key
    for key, typ in MACHINE_FIELDS.items():
        assert isinstance(data["machine"][key], typ), key
    assert data["machine"]["versions"]["onnxruntime"] and data["machine"]["peak_gmacs"]["1"] > 0
    assert {"name", "source", "parameters", "macs", "macs_method"} <= set(data["model"])
    assert data["model"]["macs"] > 0 and data["model"]["parameters"] > 0
    formats = [r["format"] for r in data["results"]]
    assert formats == ["pytorch", "onnx", "tflite"]
    for row in data["results"]:
        for key, typ in ROW_FIELDS.items():
            assert key in row, key
            assert isinstance(row[key], typ), (row["format"], key, row[key])
        assert row["status"] == "ok", row["reason"]
        assert set(row["latency_ms"]) == LATENCY_KEYS
        lat = row["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert row["runs"] >= 5 and row["load_ms"] > 0 and row["first_inference_ms"] > 0
        # every timed run up to 1000, else every stride-th one (in timing order)
        assert len(row["samples_ms"]) == -(-row["runs"] // row["samples_stride"]) <= 1000
        assert lat["min"] <= min(row["samples_ms"]) and max(row["samples_ms"]) <= lat["max"]
        assert row["peak_rss_mb"] > 0 and row["gmacs_per_s"] > 0 and row["peak_share"] > 0
        assert row["speedup_vs_pytorch"] > 0
        assert row["latency_vs_pytorch"] == pytest.approx(1 / row["speedup_vs_pytorch"], rel=3e-3)
    for row in data["results"][1:]:
        assert row["parity"] == "pass" and row["budget"] == "pass"
        assert row["floor_ratio"] == pytest.approx(row["bytes"] / row["floor_bytes"], rel=1e-3)
    assert data["budget"]["status"] == "pass" and result.exit_code == 0
    from mobilize import schemas

    schemas.validate(json.loads(json.dumps(data)))  # the published JSON Schema of mobilize-bench/1


def test_bytes_match_files(bench_run) -> None:  # noqa: ANN001
    from mobilize.bundle.hashing import size

    result, bundle, _ = bench_run
    for row in result.rows[1:]:
        assert row["bytes"] == size(bundle / row["path"]) == (bundle / row["path"]).stat().st_size
        assert 0 < row["zipped_bytes"] <= row["bytes"] + 512


def test_manifest_keeps_the_results_and_stays_valid(bench_run) -> None:  # noqa: ANN001
    import mobilize.api

    result, bundle, files = bench_run
    assert bundle / "manifest.json" in files
    manifest = mobilize.api.load_bundle(bundle)  # schema + sizes + sha256 still check out
    assert manifest["bench"]["results"] == json.loads(json.dumps(result.data))["results"]
    assert not list(bundle.glob(".manifest.json.*"))  # no temp files left behind


def test_reports_written_and_self_contained(bench_run) -> None:  # noqa: ANN001
    _, bundle, files = bench_run
    md = (bundle / "report.md").read_text()
    page = (bundle / "report.html").read_text()
    assert bundle / "report.md" in files and bundle / "report.html" in files
    assert "| format |" in md and "onnx" in md and "tflite" in md and len(md) < 65_000
    # the placement summary (static analysis at export) sits beside the latency rows, labelled as such
    assert re.search(r"^- tflite fp32: gpu: \w+; xnnpack: 1 partition, 100% MACs", md, re.M), md
    assert "- onnx fp32: nnapi: 1 partition" in md and "not a device measurement" in md
    assert "<h2>Placement</h2>" in page and "xnnpack: 1 partition" in page
    assert page.count("<svg") == 4  # distribution, latency vs size, load/first inference/memory, size and parity
    assert not re.search(r"https?://", page), "report.html must not reference the network"
    assert not re.search(r"<script|<link|@import|url\((?!#)", page, re.I)  # url(#clip) is inside the page


def test_reports_go_to_report_dir(bench_run, tmp_path: Path) -> None:  # noqa: ANN001
    from mobilize.bench.run import save

    result, _, _ = bench_run
    written = save(result, report_dir=tmp_path / "r", write_manifest=False)
    assert sorted(p.name for p in written) == ["report.html", "report.md"]


@pytest.mark.skipif(
    not shutil.which("chromium") and not Path("/usr/bin/chromium").exists(), reason="chromium is not installed"
)
def test_html_renders_in_headless_chromium(bench_run, tmp_path: Path) -> None:  # noqa: ANN001
    _, bundle, _ = bench_run
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "render_html.sh"
    png = tmp_path / "report.png"
    subprocess.run(
        [str(script), str(bundle / "report.html"), str(png), "1200", "900"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def _numbered(messages: list[str]) -> list[str]:
    """The numbered steps among ``messages``, checked to run 1…n; ``n`` may be unknown (None) only before it is
    known, and is the same number from then on."""
    from mobilize.progress import Step

    steps = [m for m in messages if isinstance(m, Step)]
    assert [s.k for s in steps] == list(range(1, len(steps) + 1)), messages
    totals = [s.n for s in steps]
    known = totals[next((i for i, n in enumerate(totals) if n is not None), len(totals)):]
    assert known and set(known) == {len(steps)}, totals
    return [str(s) for s in steps]


def test_export_and_bench_number_their_steps_against_a_known_total(bench_run) -> None:  # noqa: ANN001
    from mobilize.progress import Step

    from .conftest import STEPS

    # export: the fixed steps and one per format × precision, the total known from the first step
    assert _numbered(STEPS["export"]) == ["loading model", "capturing with torch.export",
                                          "computing the PyTorch reference", "exporting onnx fp32",
                                          "exporting tflite fp32", "finishing verification, judging fitness"]
    assert next(m for m in STEPS["export"] if isinstance(m, Step)).n == 6
    # bench: its stages; the total is known once the bundle is read
    assert _numbered(STEPS["bench"]) == ["reading the bundle", "loading the PyTorch model (baseline)",
                                         "describing the machine", "checking that each file runs",
                                         "measuring peak memory", "timing"]
    assert any(m.startswith("timing: round 1 of") for m in STEPS["bench"])  # details inside the timing step
    # inside the memory and timing steps, each file × thread count (and PyTorch eager) counted against their number
    assert [m for m in STEPS["bench"] if m.startswith("loading ") and "×" in m] == [
        "loading pytorch ×1 (1/3)", "loading onnx fp32 ×1 (2/3)", "loading tflite fp32 ×1 (3/3)"]
    assert "peak memory of tflite fp32 ×1 (subprocess, 3/3)" in STEPS["bench"]
