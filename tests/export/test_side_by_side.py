"""Plain (fp32/fp16) conversions run side by side in forked children (``--jobs``, default the usable cores): the
bundle is the same as one conversion after another, and a converter that crashes costs its own file only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from mobilize import api
from mobilize.spec import ModelSpec


def _spec() -> ModelSpec:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    return ModelSpec(module=net, example_inputs=(torch.randn(1, 8),), input_names=["x"], output_names=["y"],
                     name="mlp")


def _files(result: Any) -> dict[tuple[str, str], tuple[str, str | None, str | None]]:
    return {(a["format"], a["precision"]): (a["status"], a["sha256"], (a.get("parity") or {}).get("status"))
            for a in result.manifest["artifacts"]}


@pytest.mark.slow
def test_side_by_side_gives_the_same_bundle_as_one_after_another(tmp_path: Path) -> None:
    one = api.export(_spec(), tmp_path / "one", formats="onnx,tflite", precisions="fp32,fp16", jobs=1)
    two = api.export(_spec(), tmp_path / "two", formats="onnx,tflite", precisions="fp32,fp16", jobs=2)
    assert one.exit_code == 0 and two.exit_code == 0
    assert _files(one) == _files(two)
    assert {v[0] for v in _files(two).values()} == {"ok"} and {v[2] for v in _files(two).values()} == {"pass"}
    for name in ("mlp_fp32.onnx", "mlp_fp16.onnx", "mlp_fp32.tflite", "mlp_fp16.tflite"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


@pytest.mark.slow
def test_a_crash_beside_other_converters_fails_its_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILIZE_CONVERTER_FAULT", "tflite fp32:SIGABRT")
    result = api.export(_spec(), tmp_path / "b", formats="onnx,tflite", precisions="fp32,fp16", jobs=2)
    arts = {(a["format"], a["precision"]): a for a in result.manifest["artifacts"]}
    bad = arts[("tflite", "fp32")]
    assert bad["status"] == "failed" and "crashed (SIGABRT)" in bad["error"]["message"]
    # what that child printed comes back with its failure (each side-by-side child captures its own output)
    assert any("LLVM ERROR" in ln for ln in bad["error"]["converter_log_tail"])
    others = [a for k, a in arts.items() if k != ("tflite", "fp32")]
    assert len(others) == 3 and all(a["status"] == "ok" and a["parity"]["status"] == "pass" for a in others)
    assert result.exit_code == 1
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob(f"mobilize-convert-{os.getpid()}-*")]
