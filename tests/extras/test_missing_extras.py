"""Formats are pip extras: a format whose converter/runtime is missing is refused up front with the `pip install`
to run, left out of the default formats, and `unverified` (never `pass`) when a bundle holding it is re-verified.
A module is made "not installed" by hiding it from importlib (the real packages stay on disk)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mobilize import api
from mobilize import formats as registry
from mobilize.errors import MissingExtraError, MobilizeInputError


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):
    def hide(*modules: str) -> None:
        real = importlib.util.find_spec

        def find_spec(name: str, *args, **kwargs):
            return None if name.split(".")[0] in modules else real(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide


def test_every_registered_format_names_its_extra() -> None:
    for name, plugin in registry.REGISTRY.items():
        assert plugin.extra in registry.EXTRAS, name
        assert registry.missing_modules(name) == []  # this environment has [all]


def test_a_missing_extra_is_refused_before_any_work(without, linear_spec, tmp_path: Path) -> None:
    without("coremltools")
    with pytest.raises(MissingExtraError) as e:
        api.export(linear_spec, tmp_path / "b", formats="onnx,coreml", isolate=False)
    assert str(e.value) == ("coreml needs coremltools, which is not installed: pip install 'mobilize[coreml]' "
                            "(or 'mobilize[all]')")
    assert isinstance(e.value, MobilizeInputError)  # CLI exit 2
    assert not (tmp_path / "b").exists()


def test_default_formats_are_the_installed_ones(without, linear_spec, tmp_path: Path) -> None:
    without("litert_torch", "ai_edge_litert", "ai_edge_quantizer", "coremltools")
    steps: list[str] = []
    result = api.export(linear_spec, tmp_path / "b", precisions="fp32", isolate=False, on_step=steps.append)
    assert [a["format"] for a in result.artifacts] == ["onnx"]
    assert result.artifacts[0]["parity"]["status"] == "pass"
    skipped = [s for s in steps if "skipped" in s]
    assert skipped == ["coreml skipped: coreml needs coremltools, which is not installed: pip install "
                       "'mobilize[coreml]' (or 'mobilize[all]')",
                       "tflite skipped: tflite needs litert-torch, ai-edge-litert, ai-edge-quantizer, which are not "
                       "installed: pip install 'mobilize[tflite]' (or 'mobilize[all]')"]


def test_nothing_installed_is_one_line(without, linear_spec, tmp_path: Path) -> None:
    without("onnx", "onnxruntime", "onnxscript", "coremltools", "litert_torch", "ai_edge_litert", "ai_edge_quantizer")
    with pytest.raises(MissingExtraError, match=r"no converter is installed: pip install 'mobilize\[onnx\]'"):
        api.export(linear_spec, tmp_path / "b", isolate=False)


def test_reverifying_without_the_runtime_is_unverified(without, linear_spec, tmp_path: Path) -> None:
    api.export(linear_spec, tmp_path / "b", formats="onnx,tflite", precisions="fp32", isolate=False)
    without("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
    result = api.verify(tmp_path / "b", isolate=False)
    parity = {a["format"]: a["parity"] for a in result.artifacts}
    assert parity["onnx"]["status"] == "pass"
    assert parity["tflite"]["status"] == "unverified"
    assert parity["tflite"]["reason"].startswith("tflite needs litert-torch")
    assert result.exit_code == 0 and api.Result(result.out, result.manifest, True).exit_code == 1  # --strict


def test_digits_data_without_scikit_learn(without) -> None:
    from mobilize.models import digits
    from mobilize.quantize.accuracy import eval_set

    without("sklearn")
    with pytest.raises(MissingExtraError, match=r"pip install 'mobilize\[datasets\]'"):
        digits.calibration_set()
    assert digits.example_input().shape == (1, 1, 8, 8)  # the model itself still loads
    assert eval_set("zoo:digits", None) is None  # accuracy is simply not measured
