"""Shared by the int8 search tests: the digits model's fp32 ONNX file, its spec and calibration samples."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def digits_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from mobilize import api
    from mobilize.models.digits import calibration_set
    from mobilize.source import load_source

    out = tmp_path_factory.mktemp("digits_onnx") / "b"
    api.export("zoo:digits", out, formats="onnx", precisions="fp32", verify=False)
    return {"fp32": out / "digits_fp32.onnx", "spec": load_source("zoo:digits"), "calib": calibration_set(64)}
