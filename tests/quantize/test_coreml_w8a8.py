"""Core ML static int8 (W8A8) on Linux: activation ranges from the reference interpreter, coremltools' own passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobilize.quantize import coreml as cq
from mobilize.quantize.recipes import recipe


@pytest.fixture(scope="module")
def digits_fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mobilize import api

    out = tmp_path_factory.mktemp("w8a8") / "b"
    api.export("zoo:digits", out, formats="coreml", precisions="fp32", verify=False)
    return out / "digits_fp32.mlpackage"


def _ops(path: Path) -> set[str]:
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    return {op.type for fn in spec.mlProgram.functions.values() for b in fn.block_specializations.values()
            for op in b.operations}


def test_w8a8_quantizes_activations_and_keeps_accuracy(digits_fp32: Path, tmp_path: Path) -> None:
    from coremltools.optimize.coreml import _post_training_quantization as ptq

    from mobilize.models.digits import digits_test_set, digits_train_set
    from mobilize.runtime.coreml_ref import CoreMLReferenceRunner

    original_hook = ptq._get_activation_calibration_stats
    xtr, _ = digits_train_set()
    calib = [{"image": xtr[i : i + 1]} for i in range(32)]
    dest = tmp_path / "w8a8.mlpackage"
    notes = cq.quantize(digits_fp32, dest, recipe("coreml", "int8", "w8a8"), calib, [], tmp_path / "work")
    assert ptq._get_activation_calibration_stats is original_hook  # the calibration hook is put back
    assert {"quantize", "dequantize", "constexpr_affine_dequantize"} <= _ops(dest)
    assert any("activations int8" in n for n in notes)

    x, y = digits_test_set()
    agree = correct = 0
    with CoreMLReferenceRunner(dest) as q, CoreMLReferenceRunner(digits_fp32) as f:
        for i in range(100):
            a = q.infer({"image": x[i : i + 1]})["logits"]
            b = f.infer({"image": x[i : i + 1]})["logits"]
            agree += int(a.argmax() == b.argmax())
            correct += int(a.argmax() == y[i])
    assert agree >= 95 and correct >= 93, (agree, correct)


def test_w8a8_needs_calibration(digits_fp32: Path, tmp_path: Path) -> None:
    from mobilize.errors import ConversionError

    with pytest.raises(ConversionError, match="calibration"):
        cq.quantize(digits_fp32, tmp_path / "x.mlpackage", recipe("coreml", "int8", "w8a8"), None, [],
                    tmp_path / "work")
