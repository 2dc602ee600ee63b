"""Run by `make test-onnx-only` (called from .ci/run) in a venv holding only `mobilize[onnx]`: it exports and verifies
without coremltools, litert or scikit-learn present. In the full environment there is nothing to check: skipped."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ONNX_ONLY = all(importlib.util.find_spec(m) is None
                for m in ("coremltools", "litert_torch", "ai_edge_litert", "ai_edge_quantizer", "sklearn", "jax"))
pytestmark = pytest.mark.skipif(not ONNX_ONLY, reason="needs an ONNX-only install (make test-onnx-only)")


def _mobilize(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mobilize", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_onnx_only_install_exports_and_verifies(tmp_path: Path) -> None:
    run = _mobilize(["export", "zoo:digits", "--out", "b", "--precisions", "fp32,int8-weights"], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "coreml skipped: coreml needs coremltools" in run.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [(a["format"], a["parity"]["status"]) for a in manifest["artifacts"]] == [("onnx", "pass")] * 2
    assert "coremltools" not in manifest["tools"] or manifest["tools"]["coremltools"] is None
    again = _mobilize(["verify", "b"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


def test_asking_for_a_missing_format_exits_2_with_the_install_line(tmp_path: Path) -> None:
    run = _mobilize(["export", "zoo:digits", "--out", "b", "--formats", "tflite"], tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "error: tflite needs litert-torch, ai-edge-litert, ai-edge-quantizer, which are not installed: "
        "pip install 'mobilize[tflite]' (or 'mobilize[all]')")
    assert not (tmp_path / "b").exists()
