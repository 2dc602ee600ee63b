"""Recipes: every (format, precision) pair is either backed by a recipe or rejected up front with the choices."""

from __future__ import annotations

import pytest

from mobilize import formats
from mobilize.errors import OptionError
from mobilize.quantize import recipes as R


def test_every_format_has_every_quantized_precision_with_a_native_tool() -> None:
    tools = {"onnx": "onnxruntime.quantization", "coreml": "coremltools.optimize.coreml", "tflite": "ai-edge-quantizer"}
    # onnxruntime has no weight-only int8 recipe for Conv (its weight-only quantizers cover MatMul/Gather): that one
    # recipe is mobilize's own DequantizeLinear rewrite, measured beside onnxruntime's dynamic recipe
    own = {("onnx", "int8-weights", "weight-only")}
    for fmt, plugin in formats.REGISTRY.items():
        if plugin.converts_from:
            # a converted format (ort from onnx) has no recipes of its own: each quantized file is its source's
            # quantized file converted, so it offers exactly what its source offers
            assert not any(r.format == fmt for r in R.RECIPES), fmt
            assert plugin.precisions == R.supported(plugin.converts_from), fmt
            continue
        for prec in R.QUANT_PRECISIONS:
            cands = R.candidates(fmt, prec)
            assert cands, (fmt, prec)
            assert {c.tool for c in cands if (fmt, prec, c.name) not in own} == {tools[fmt]}
        assert plugin.precisions == R.supported(fmt)


def test_recipe_ids_are_unique() -> None:
    ids = [(r.format, r.precision, r.name) for r in R.RECIPES]
    assert len(ids) == len(set(ids))


def test_only_static_int8_needs_calibration() -> None:
    assert R.needs_calibration(["fp32", "int8-weights", "int8", "int4-weights"]) == ["int8"]
    onnx_int8 = R.candidates("onnx", "int8")
    assert [r.name for r in onnx_int8] == ["qdq-per-channel", "qoperator-per-channel"]
    assert all(r.calibrated for r in onnx_int8)
    # Core ML int8: calibrated W8A8 first (ranges from the reference interpreter off macOS), weight-only fallback
    w8a8, weight_only = R.candidates("coreml", "int8")
    assert (w8a8.name, w8a8.calibrated) == ("w8a8", True) and "calibrated" in w8a8.activations
    assert not weight_only.calibrated and "macOS" in weight_only.activations


def test_unsupported_pair_is_rejected_with_what_is_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "RECIPES", tuple(r for r in R.RECIPES if not (r.format == "onnx"
                                                                       and r.precision == "int4-weights")))
    with pytest.raises(OptionError) as e:
        R.check_pairs(["onnx", "tflite"], ["fp32", "int4-weights"])
    msg = str(e.value)
    assert "onnx × int4-weights" in msg and "tflite × int4-weights" not in msg
    assert "onnx: fp32, fp16, int8-weights, int8" in msg


def test_unknown_precision_lists_choices() -> None:
    with pytest.raises(OptionError, match="int8-weights"):
        formats.parse_list("int9", what="precisions", allowed=formats.PRECISIONS)


@pytest.mark.parametrize("kw", [{"min_top1": 0}, {"min_top1": 1.5}, {"max_size_ratio": 0}, {"holdout": 1.0}])
def test_accuracy_target_validates(kw: dict) -> None:
    with pytest.raises(OptionError):
        R.AccuracyTarget(**kw)
