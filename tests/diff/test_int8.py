"""Quantized files: the layer whose output breaks a shared int8 range (one channel 300× the others) ranks first by
the error it adds, in ONNX and TFLite static int8; the rows carry the grid, PyTorch's range and the clipped share;
and ``mobilize export`` names a layer for a file below its accuracy target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .models import OUTLIER_LAYER, outlier_calibration

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SOURCE = f"{HERE / 'models.py'}:outlier"


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, **outlier_calibration())
    return path


@pytest.fixture(scope="module")
def int8_bundle(calib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mobilize.api import export
    from mobilize.quantize.recipes import AccuracyTarget

    out = tmp_path_factory.mktemp("outlier") / "bundle"
    # a target every recipe meets: the accuracy search keeps nothing in float, so the outlier layer stays int8
    export(SOURCE, out, formats="onnx,tflite", precisions="int8", calibration=str(calib),
           target=AccuracyTarget(min_snr_db=-100, min_top1=0.01, headroom_db=0), diagnose=False)
    return out


def test_outlier_layer_ranks_first(int8_bundle: Path, calib: Path) -> None:
    from mobilize.diff import diff
    from mobilize.diff.analyze import ranked

    result = diff(int8_bundle, source=SOURCE, inputs=str(calib), samples=8)
    assert {r["format"] for r in result.reports} == {"onnx", "tflite"}
    for rep in result.reports:
        assert rep["kept_float"] == []
        top = ranked(rep["layers"])
        assert top[0]["module"] == OUTLIER_LAYER, [(r["module"], r["added"]) for r in top]
        wide = top[0]
        assert wide["quant"] is not None and wide["kept_float"] is False
        lo, hi = wide["torch_range"]
        assert hi > 100 > 10 > lo  # the outlier channel stretches PyTorch's range ...
        assert wide["quant"]["scale"] > hi / 1000  # ... and with it the grid's step


def test_ranking_is_reproducible(int8_bundle: Path, calib: Path) -> None:
    from mobilize.diff import diff
    from mobilize.diff.analyze import ranked

    def order() -> list[list[str]]:
        res = diff(int8_bundle, source=SOURCE, inputs=str(calib), samples=4, artifacts="tflite")
        return [[r["module"] for r in ranked(rep["layers"])] for rep in res.reports]

    assert order() == order()


def test_export_names_a_layer_for_a_file_below_target(calib: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mobilize", "export", SOURCE, "--out", str(tmp_path / "b"),
                          "--formats", "onnx", "--precisions", "int8", "--calibration", str(calib),
                          "--min-snr", "60"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 1, out.stderr
    text = " ".join(out.stdout.split())
    assert "below target" in text
    assert "onnx int8: first divergent layer:" in text or "onnx int8: no single layer crosses" in text
    assert f"mobilize diff {tmp_path / 'b'} --source" in text
