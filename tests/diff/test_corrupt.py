"""A deliberately broken layer: one weight changed inside each format's fp32 file (sha256 refreshed in the
manifest, as a third party would ship it). ``mobilize diff`` must name exactly that module as the first divergent
layer in ONNX, TFLite and Core ML — and name none before the file was changed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from . import corrupt
from .models import BROKEN_LAYER

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SOURCE = f"{HERE / 'models.py'}:broken"
WEIGHT_SHAPE = (16, 12, 3, 3)  # block.2's weight: unique in the model, so each file's copy is found by shape


@pytest.fixture(scope="module")
def clean_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mobilize.api import export

    out = tmp_path_factory.mktemp("broken") / "bundle"
    result = export(SOURCE, out, formats="onnx,coreml,tflite", precisions="fp32", diagnose=False)
    assert [a["parity"]["status"] for a in result.artifacts] == ["pass"] * 3
    return out


@pytest.fixture(scope="module")
def broken_bundle(clean_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("corrupted") / "bundle"
    shutil.copytree(clean_bundle, out)
    changed = corrupt.corrupt(out, WEIGHT_SHAPE)
    assert set(changed) == {"onnx", "coreml", "tflite"}
    return out, changed


def test_clean_files_have_no_divergent_layer(clean_bundle: Path) -> None:
    from mobilize.diff import diff

    result = diff(clean_bundle, source=SOURCE, samples=2)
    assert result.exit_code == 0
    for rep in result.reports:
        assert rep["first_divergent"] is None, rep["summary"]
        assert rep["coverage"]["share"] == 1.0
        assert all(r["added"] is not None for r in rep["layers"]), "every layer is fed PyTorch's input"


def test_each_format_names_the_corrupted_module(broken_bundle: tuple[Path, dict[str, str]]) -> None:
    from mobilize.diff import diff

    bundle, _ = broken_bundle
    result = diff(bundle, source=SOURCE, samples=2)
    assert result.exit_code == 1
    assert {r["format"] for r in result.reports} == {"onnx", "coreml", "tflite"}
    for rep in result.reports:
        fd = rep["first_divergent"]
        assert fd is not None and fd["module"] == BROKEN_LAYER, rep["summary"]
        assert BROKEN_LAYER in rep["summary"].split("first divergent layer: ", 1)[1].split(" ")[0]
        # the layers after it only inherit the error: fed PyTorch's input, they add none
        after = [r for r in rep["layers"] if r["order"] > fd["order"] and r["module"] != BROKEN_LAYER]
        assert after and all(not r["diverges"] for r in after)
        assert not any("sha256 differs" in n for n in rep["notes"])  # the manifest was refreshed


def test_cli_names_it_writes_json_and_html(broken_bundle: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    bundle, _ = broken_bundle
    out = subprocess.run([sys.executable, "-m", "mobilize", "diff", str(bundle), "--source", SOURCE,
                          "--artifact", "tflite/fp32", "--samples", "2", "--json", str(tmp_path / "d.json"),
                          "--html", str(tmp_path / "html")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stderr
    assert f"first divergent layer: {BROKEN_LAYER} (Conv2d" in " ".join(out.stdout.split())
    payload = json.loads((tmp_path / "d.json").read_text())
    [rep] = payload["artifacts"]
    assert rep["format"] == "tflite" and rep["first_divergent"]["module"] == BROKEN_LAYER
    page = (tmp_path / "html" / "diff.html").read_text()
    assert "<svg" in page and "<script" not in page and BROKEN_LAYER in page


def test_without_source_only_outputs_are_compared(broken_bundle: tuple[Path, dict[str, str]]) -> None:
    from mobilize.diff import diff

    bundle, _ = broken_bundle
    result = diff(bundle, artifacts="onnx/fp32", samples=2)
    [rep] = result.reports
    assert rep["layers"] == [] and rep["first_divergent"] is None
    assert any("needs the model: pass --source" in n for n in rep["notes"])
    [o] = rep["outputs"]
    assert o["metrics"]["snr_db"] < 40  # the stored reference shows the damage at the output
    assert np.isfinite(o["metrics"]["max_abs_error"])


def test_a_file_its_runtime_cannot_run_is_exit_2(clean_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(clean_bundle, bundle)
    tfl = next(bundle.glob("*.tflite"))
    data = tfl.read_bytes()
    tfl.write_bytes(data[: len(data) * 2 // 3])  # truncated: the header still says TFLite
    corrupt.refresh_manifest(bundle)
    out = subprocess.run([sys.executable, "-m", "mobilize", "diff", str(bundle), "--source", SOURCE,
                          "--artifact", "tflite", "--samples", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()
             and not re.match(r"\[\d\d:\d\d\] ", ln)]  # progress lines aside
    assert len(lines) == 1 and "tflite fp32: could not run the file" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
