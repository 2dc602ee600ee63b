"""A tiny real bundle for the hostile-file tests: one ONNX export of a 15-parameter Linear model (about two seconds),
shared by the session; tests copy it before changing anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from mobilize import api
    from mobilize.spec import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(module=torch.nn.Linear(4, 3).eval(), example_inputs=(torch.randn(1, 4),), input_names=["x"],
                     output_names=["y"], name="tiny")
    out = tmp_path_factory.mktemp("tiny-bundle") / "b"
    result = api.export(spec, out, formats="onnx", precisions="fp32")
    assert result.exit_code == 0, result.manifest
    return out


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "b"
    shutil.copytree(tiny_bundle, dest, symlinks=True)
    return dest
