"""The click command: exit codes for budgets (0 / 1), malformed options and bad bundles (2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobilize.bench.cli import bench

FAST = [
    "--threads",
    "1",
    "--no-memory",
    "--no-baseline",
    "--min-runs",
    "3",
    "--min-seconds",
    "0",
    "--warmup-seconds",
    "0",
]


def _invoke(args: list[str]) -> int:
    return CliRunner().invoke(bench, args, catch_exceptions=False).exit_code


def test_budget_failure_exits_1(bundle_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    assert _invoke([str(bundle_copy), *FAST, "--budget", "size_mb=0.001", "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert data["budget"]["status"] == "fail" and data["exit_code"] == 1
    assert all(a["status"] == "fail" for a in data["budget"]["artifacts"])
    assert data["baseline"]["status"] == "missing"


def test_budget_met_exits_0_and_writes_everything(bundle_copy: Path, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    code = _invoke(
        [
            str(bundle_copy),
            *FAST,
            "--budget",
            "latency_p90_ms=100000,zipped_mb=50,threads=1",
            "--report-dir",
            str(reports),
            "--formats",
            "onnx",
        ]
    )
    assert code == 0
    assert (reports / "report.md").is_file() and (reports / "report.html").is_file()
    bench_data = json.loads((bundle_copy / "manifest.json").read_text())["bench"]
    assert [r["format"] for r in bench_data["results"]] == ["pytorch", "onnx"]


@pytest.mark.slow
def test_malformed_budget_exits_2_without_measuring(bundle_copy: Path) -> None:
    before = (bundle_copy / "manifest.json").read_bytes()
    assert _invoke([str(bundle_copy), *FAST, "--budget", "latency_p90_ms=fast"]) == 2
    assert _invoke([str(bundle_copy), *FAST, "--budget", "nonsense"]) == 2
    assert (bundle_copy / "manifest.json").read_bytes() == before


def test_bad_inputs_exit_2(tmp_path: Path, bundle_copy: Path) -> None:
    assert _invoke([str(tmp_path / "nope"), *FAST]) == 2
    assert _invoke([str(bundle_copy), "--threads", "0", "--no-memory"]) == 2
    assert _invoke([str(bundle_copy), *FAST, "--formats", "coreml"]) == 2  # no such artifact in this bundle
    assert _invoke([str(bundle_copy), "--threads", "1", "--budget", "size_mb=9,threads=2", "--no-memory"]) == 2
