"""The apply-on-failure loop and the diagnostics, with the real converters on tiny models (no mocks): convert as
is, pick the repairs the failure implicates, retry, record; and when repairs are off, name every unsupported op and
the module of the node that failed — not every module that uses that op type."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.fixtures.models import repair_gaps
from tests.fixtures.models.unsupported_ops import fmod_model

from mobilize.capture import capture
from mobilize.errors import ConversionError
from mobilize.export import ExportOptions
from mobilize.repair import convert
from mobilize.spec import ModelSpec


def _capture(build) -> tuple[ModelSpec, object]:  # noqa: ANN001
    module, args = build()
    spec = ModelSpec(module=module, example_inputs=args, name=build.__name__)
    return spec, capture(spec)


def _exporter(fmt: str, spec: ModelSpec, dest: Path):  # noqa: ANN202
    import importlib

    export = importlib.import_module(f"mobilize.export.{fmt}").export
    return lambda cap: export(cap, spec, "fp32", dest, ExportOptions())


def test_coreml_fmod_is_repaired_and_recorded(tmp_path: Path) -> None:
    spec, cap = _capture(fmod_model)
    dest = tmp_path / "m.mlpackage"
    exported, records = convert("coreml", cap, _exporter("coreml", spec, dest))
    assert dest.is_dir() and exported.path == dest
    assert [r["name"] for r in records] == ["fmod-remainder"], records
    rec = records[0]
    assert rec["status"] == "applied" and rec["rewrites"] == 1
    assert rec["modules"] == ["head.phase (Phase)"], rec
    assert "coreml conversion failed" in rec["why"] and "fmod" in rec["why"]


def test_no_repair_blames_only_the_failing_node(tmp_path: Path) -> None:
    spec, cap = _capture(fmod_model)
    with pytest.raises(ConversionError) as info:
        convert("coreml", cap, _exporter("coreml", spec, tmp_path / "m.mlpackage"), enabled=False)
    err = info.value
    assert "aten.fmod.Scalar" in err.ops
    assert err.modules == ["head.phase (Phase) calls aten.fmod.Scalar"], err.modules
    assert getattr(err, "repairs", None) == []


@pytest.mark.slow
def test_core_ml_preflight_lists_every_unsupported_op(tmp_path: Path) -> None:
    """The first conversion stops at the first op; the registry check finds the others behind it."""
    import torch
    from torch import nn

    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = repair_gaps.RelativeNet()
            self.second = repair_gaps.PooledTokens()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.second(torch.fmod(self.first(x), 0.5))

    def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
        return Both().eval(), (torch.randn(2, 6, 8),)

    spec, cap = _capture(build)
    with pytest.raises(ConversionError) as info:
        convert("coreml", cap, _exporter("coreml", spec, tmp_path / "m.mlpackage"), enabled=False)
    err = info.value
    for op in ("aten.alias.default", "aten.fmod.Scalar", "aten.as_strided.default"):
        assert op in err.ops, err.ops
    assert any(m.startswith("second.pool (AdaptiveAvgPool1d) calls aten.as_strided") for m in err.modules), err.modules
    assert any(m.startswith("first.rel (RelativeBias) calls aten.alias") for m in err.modules), err.modules


@pytest.mark.slow
def test_onnx_view_failure_blames_the_one_block_that_failed(tmp_path: Path) -> None:
    import torch
    from torch import nn

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([repair_gaps.ShiftedWindowBlock(), repair_gaps.ShiftedWindowBlock()])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for b in self.blocks:
                x = b(x)
            return x

    def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
        return Two().eval(), (torch.randn(2, 8, 8, 16),)

    spec, cap = _capture(build)
    with pytest.raises(ConversionError) as info:
        convert("onnx", cap, _exporter("onnx", spec, tmp_path / "m.onnx"), enabled=False)
    assert info.value.modules == ["blocks.0.attn (WindowAttention) calls aten.view.default"], info.value.modules
    exported, records = convert("onnx", cap, _exporter("onnx", spec, tmp_path / "m.onnx"))
    assert [r["name"] for r in records] == ["view-contiguous"]
    assert records[0]["modules"] == ["blocks.0.attn (WindowAttention)", "blocks.1.attn (WindowAttention)"]


@pytest.mark.slow
def test_tflite_always_repair_runs_before_the_first_attempt(tmp_path: Path) -> None:
    spec, cap = _capture(repair_gaps.prelu_mlp)
    exported, records = convert("tflite", cap, _exporter("tflite", spec, tmp_path / "m.tflite"))
    assert [(r["name"], r["status"]) for r in records] == [("prelu-maximum", "applied")], records
    assert records[0]["why"].startswith("applied to every tflite export")
    _, none = convert("tflite", cap, _exporter("tflite", spec, tmp_path / "raw.tflite"), enabled=False)
    assert none == []
    assert (tmp_path / "m.tflite").stat().st_size < 0.7 * (tmp_path / "raw.tflite").stat().st_size


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="converters fork on Linux only")
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_repairs_tried_cross_the_converter_fork_with_the_failure() -> None:
    """Repairs run inside the artifact's converter child (isolate.in_child): the records of the repairs tried must
    come back with the ConversionError, as ops and modules do."""
    from mobilize import isolate

    tried = [{"name": "roll-slices", "status": "applied", "why": "coreml conversion failed", "rewrites": 2,
              "modules": ["attn (WindowAttention)"]}]

    def failing(_step):  # noqa: ANN001, ANN202
        err = ConversionError("Unsupported fx node as_strided", format="coreml", ops=["aten.as_strided.default"],
                              modules=["pool (AdaptiveAvgPool1d) calls aten.as_strided.default"])
        err.repairs = tried  # what mobilize.repair.convert attaches before re-raising
        raise err

    with pytest.raises(ConversionError) as info:
        isolate.in_child(failing, label="coreml fp32", fork=True)
    assert info.value.repairs == tried
    assert info.value.modules == ["pool (AdaptiveAvgPool1d) calls aten.as_strided.default"]


def test_a_repaired_core_ml_program_keeps_its_native_lstm(tmp_path: Path) -> None:
    """Core ML repairs stage the program with the exporter's own table (export/coreml.decompose): recurrent layers
    that stay native Core ML ops must not be unrolled because a repair rewrote another op."""
    import torch
    from torch import nn

    class LstmFmod(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(8, 16, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fmod(self.lstm(x)[0], 0.25)

    def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
        torch.manual_seed(0)
        return LstmFmod().eval(), (torch.randn(1, 5, 8),)

    spec, cap = _capture(build)
    exported, records = convert("coreml", cap, _exporter("coreml", spec, tmp_path / "m.mlpackage"))
    assert [r["name"] for r in records] == ["fmod-remainder"], records
    assert any(n.startswith("recurrent layers kept as native Core ML ops") and "lstm ×1" in n
               for n in exported.notes), exported.notes
