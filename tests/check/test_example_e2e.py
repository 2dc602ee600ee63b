"""The shipped example project (examples/ci), run as CI runs it: ``python -m mobilize check`` in a subprocess, all
three formats — then again against the baseline the first run recorded."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ci"


def _mobilize(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mobilize", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "COLUMNS": "200", **env}, check=False)


@pytest.mark.slow
def test_example_project_gate(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("mobilize-check", "mobilize-baseline.json"))
    config = (root / "mobilize.toml").read_text()
    assert "[bench]\nthreads = [1]\n" in config
    # shorter timing than the documented defaults (≥ 50 runs and ≥ 1 s per file): the gate, not the numbers, is tested
    (root / "mobilize.toml").write_text(config.replace("[bench]\nthreads = [1]\n",
                                                       "[bench]\nthreads = [1]\nmin_seconds = 0.2\n"))
    step_summary = tmp_path / "step_summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(step_summary)}

    first = _mobilize(["check", "--junit", "junit.xml", "--update-baseline"], root, env)
    assert first.returncode == 0, first.stdout + first.stderr
    # stderr carries only the progress lines (not a terminal: one timestamped line per step)
    assert "check passed" in first.stdout
    assert first.stderr and all(re.match(r"\[\d\d:\d\d\] \S", ln) for ln in first.stderr.splitlines())
    assert (root / "mobilize-baseline.json").is_file()

    second = _mobilize(["check", "--junit", "junit.xml"], root, env)
    assert second.returncode == 0, second.stdout + second.stderr
    suite = ET.parse(root / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    judged = {(c.get("classname"), c.get("name")) for c in cases}
    assert len(cases) == int(suite.get("tests")) == len(judged)
    assert suite.get("failures") == "0" and suite.get("skipped") == "0"
    every = {(f"mobilize.{f}.{p}", n) for f in ("onnx", "coreml", "tflite") for p in ("fp32", "fp16")
             for n in ("export", "integrity", "parity", "budget.size_mb", "budget.latency_p90_ms", "regression.size",
                       "regression.parity", "regression.latency")}
    # only Core ML latency is unknowable on Linux (budget and regression); everything else was judged
    assert every - judged == {(f"mobilize.coreml.{p}", n) for p in ("fp32", "fp16")
                              for n in ("budget.latency_p90_ms", "regression.latency")}
    data = json.loads((root / "mobilize-check" / "check.json").read_text())
    same = {f"{a['format']} {a['precision']}": a["vs_baseline"] for a in data["artifacts"]}
    # the same model exports to the same bytes (Core ML packages carry random item ids: always "changed")
    assert {k: v for k, v in same.items() if not k.startswith("coreml")} == dict.fromkeys(
        ("onnx fp32", "onnx fp16", "tflite fp32", "tflite fp16"), "same")
    assert step_summary.read_text().count("## mobilize check ✅ passed") == 2
