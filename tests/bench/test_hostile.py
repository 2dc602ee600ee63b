"""``mobilize bench`` on a bundle from elsewhere: it never runs code the manifest names, and never lets an artifact
that crashes its runtime take the bench down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobilize.bench.cli import bench

QUICK = ["--threads", "1", "--min-runs", "3", "--min-seconds", "0", "--warmup-seconds", "0", "--no-report",
         "--no-manifest"]


def _plant(bundle: Path, tmp_path: Path) -> Path:
    """The manifest names ``evil.py:build`` (in the bundle) as the model source; running it creates the marker."""
    marker = tmp_path / "PWNED"
    (bundle / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
                                    "def build():\n    raise SystemExit('evil build ran')\n")
    m = json.loads((bundle / "manifest.json").read_text())
    m["model"]["source"] = str(bundle / "evil.py") + ":build"
    (bundle / "manifest.json").write_text(json.dumps(m))
    return marker


def test_bench_never_imports_the_manifests_source(bundle_copy: Path, tmp_path: Path) -> None:
    marker = _plant(bundle_copy, tmp_path)
    out = tmp_path / "b.json"
    result = CliRunner().invoke(bench, [str(bundle_copy), *QUICK, "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not marker.exists(), "bench imported the model source named by the bundle's manifest"
    data = json.loads(out.read_text())
    assert data["baseline"]["status"] == "missing" and "--source" in data["baseline"]["reason"]
    assert "never runs code a bundle names" in data["baseline"]["reason"]


def test_explicit_source_gives_the_eager_baseline(bundle_copy: Path, tmp_path: Path) -> None:
    marker = _plant(bundle_copy, tmp_path)
    out = tmp_path / "b.json"
    args = [str(bundle_copy), *QUICK, "--no-memory", "--source", "zoo:digits", "--json", str(out)]
    assert CliRunner().invoke(bench, args, catch_exceptions=False).exit_code == 0
    assert not marker.exists()
    data = json.loads(out.read_text())
    assert data["baseline"]["status"] == "ok" and data["baseline"]["source"] == "zoo:digits"


@pytest.mark.parametrize("source", ["missing.py:build", "zoo:no_such_model", "builder.py:build"])
def test_an_unusable_explicit_source_is_an_input_error_before_any_timing(bundle_copy: Path, tmp_path: Path,
                                                                          source: str) -> None:
    """``--source`` is the caller's choice: one that names nothing loadable, or whose builder raises, is exit 2 with
    one error line (it once became a silent "missing" baseline row and exit 0), and nothing is timed or written."""
    (tmp_path / "builder.py").write_text("def build():\n    raise RuntimeError('no weights here')\n")
    before = sorted(p.name for p in bundle_copy.iterdir())
    out = tmp_path / "b.json"
    result = CliRunner().invoke(bench, [str(bundle_copy), *QUICK, "--source", str(tmp_path / source)
                                        if source.endswith(":build") else source, "--json", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists() and sorted(p.name for p in bundle_copy.iterdir()) == before


def test_an_artifact_that_crashes_its_runtime_is_an_error_row(bundle_copy: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The isolated pre-flight run crashes (simulated with the worker's fault hook): the file is reported, not timed
    in the bench process."""
    monkeypatch.setenv("MOBILIZE_WORKER_FAULT", "SIGSEGV")
    out = tmp_path / "b.json"
    args = [str(bundle_copy), *QUICK, "--no-memory", "--no-baseline", "--json", str(out)]
    assert CliRunner().invoke(bench, args, catch_exceptions=False).exit_code == 1
    rows = [r for r in json.loads(out.read_text())["results"] if r["format"] != "pytorch"]
    assert rows and all(r["status"] == "error" and "crashed (SIGSEGV)" in r["reason"] for r in rows)


def test_the_preflight_reuses_one_worker_per_format(bundle_copy: Path, tmp_path: Path,
                                                    worker_starts: list[str]) -> None:
    """Each file is first run once in an isolated worker; those runs go through one pool (a worker per format,
    started once, reused by the format's next file) instead of a fresh interpreter per file."""
    out = tmp_path / "b.json"
    args = [str(bundle_copy), *QUICK, "--no-memory", "--formats", "onnx,tflite", "--json", str(out)]
    assert CliRunner().invoke(bench, args, catch_exceptions=False).exit_code == 0
    rows = [r for r in json.loads(out.read_text())["results"] if r["format"] != "pytorch"]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), rows
    assert sorted(worker_starts) == ["onnx", "tflite"]
