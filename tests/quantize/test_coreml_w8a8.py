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


@pytest.mark.slow
def test_w8a8_quantizes_activations_and_keeps_accuracy(digits_fp32: Path, tmp_path: Path) -> None:
    from coremltools.optimize.coreml import _post_training_quantization as ptq

    from mobilize.models.digits import digits_test_set, digits_train_set
    from mobilize.runtime.coreml_ref import CoreMLReferenceRunner

    original_hook = ptq._get_activation_calibration_stats
    from mobilize.runtime.coreml_ref import CoreMLReferenceRunner as _Ref
    from mobilize.verify.parity import adapt_feed

    xtr, _ = digits_train_set()
    with _Ref(digits_fp32) as r:  # the image input takes pixels (the driver's file_feeds does the same)
        calib = [{"image": adapt_feed(xtr[i : i + 1], r.inputs[0])} for i in range(32)]
    dest = tmp_path / "w8a8.mlpackage"
    notes = cq.quantize(digits_fp32, dest, recipe("coreml", "int8", "w8a8"), calib, [], tmp_path / "work")
    assert ptq._get_activation_calibration_stats is original_hook  # the calibration hook is put back
    assert {"quantize", "dequantize", "constexpr_affine_dequantize"} <= _ops(dest)
    assert any("activations int8" in n for n in notes)

    x, y = digits_test_set()
    agree = correct = 0
    with CoreMLReferenceRunner(dest) as q, CoreMLReferenceRunner(digits_fp32) as f:
        # the zoo's digits model has labels: its Core ML file is a classifier (classLabel + classLabel_probs)
        scores = next(o.name for o in f.outputs if o.dtype != "string")
        assert [o.name for o in q.outputs] == [o.name for o in f.outputs]
        from mobilize.verify.parity import adapt_feed  # the image input takes pixels: map normalised inputs there

        for i in range(100):
            a = q.infer({"image": adapt_feed(x[i : i + 1], q.inputs[0])})[scores]
            b = f.infer({"image": adapt_feed(x[i : i + 1], f.inputs[0])})[scores]
            agree += int(a.argmax() == b.argmax())
            correct += int(a.argmax() == y[i])
    assert agree >= 95 and correct >= 93, (agree, correct)


def test_w8a8_needs_calibration(digits_fp32: Path, tmp_path: Path) -> None:
    from mobilize.errors import ConversionError

    with pytest.raises(ConversionError, match="calibration"):
        cq.quantize(digits_fp32, tmp_path / "x.mlpackage", recipe("coreml", "int8", "w8a8"), None, [],
                    tmp_path / "work")


class _Relu6Net:
    """conv → BN-like wide pre-activation → ReLU6 (converted to MIL ``clip``), twice, then a linear head."""

    @staticmethod
    def build():  # noqa: ANN205
        import torch

        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU6(),
            torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.ReLU6(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
        with torch.no_grad():  # wide pre-activations, as BN folding produces: ranges far beyond [0, 6]
            net[0].weight.mul_(20.0)
            net[2].weight.mul_(8.0)
        return net.eval()


@pytest.mark.slow
def test_ranges_before_a_relu6_are_narrowed_to_the_clip(tmp_path: Path) -> None:
    """coremltools quantizes a conv output *before* the ReLU6 (``clip``) that reads it; the grid must span [0, 6],
    not the pre-activation range calibration saw (saturate-then-clip equals clip, so only the resolution changes)."""
    import numpy as np
    import torch

    from mobilize import api
    from mobilize.runtime.coreml_ref import CoreMLReferenceRunner, load_program
    from mobilize.runtime.coreml_ref.stats import collect_activation_stats
    from mobilize.spec import ModelSpec

    net = _Relu6Net.build()
    spec = ModelSpec(net, (torch.rand(1, 3, 16, 16),), input_names=["x"], output_names=["y"], name="r6")
    api.export(spec, tmp_path / "b", formats="coreml", precisions="fp32", verify=False)
    fp32 = tmp_path / "b" / "r6_fp32.mlpackage"
    bounds = cq.clip_bounds(fp32)
    assert len(bounds) == 2 and set(bounds.values()) == {(0.0, 6.0)}

    rng = np.random.default_rng(0)
    calib = [{"x": rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(16)]
    dest = tmp_path / "w8a8.mlpackage"
    cq.quantize(fp32, dest, recipe("coreml", "int8", "w8a8"), calib, [], tmp_path / "work")
    (base,) = (tmp_path / "work").glob("w8a8-fp16-base-*.mlpackage")  # named by the process (parallel trials)
    fp16_bounds = cq.clip_bounds(base)
    seen = collect_activation_stats(base, calib)
    assert all(seen[n][1] > 12 for n in fp16_bounds)  # calibration alone would have spread the grid past 12
    program = load_program(dest)
    consts = program.constants()
    scales = [float(consts[op.inputs["scale"].arguments[0].name]) for op in program.block.operations
              if op.type == "quantize" and op.inputs["input"].arguments[0].name in fp16_bounds]
    assert len(scales) == 2 and max(scales) <= 6.0 / 127 * 1.01, scales

    with torch.no_grad():
        ref = np.concatenate([net(torch.from_numpy(c["x"])).numpy() for c in calib])
    with CoreMLReferenceRunner(dest) as r:
        got = np.concatenate([r.infer(c)["y"] for c in calib])
    snr = 10 * np.log10((ref ** 2).sum() / ((got - ref) ** 2).sum())
    assert snr > 25, snr


@pytest.mark.slow
def test_w8a8_reaches_into_the_loop_of_a_gru(tmp_path: Path) -> None:
    """PyTorch's GRU becomes a while_loop in Core ML: activation quantization must work inside its body (coremltools'
    pass recursed into nested blocks without its arguments) and leave the integer step counter alone."""
    import numpy as np
    import torch

    from mobilize import api
    from mobilize.runtime.coreml_ref import CoreMLReferenceRunner, load_program
    from mobilize.spec import ModelSpec

    class Gru(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = torch.nn.GRU(16, 64, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gru(x)[0]

    torch.manual_seed(0)
    net = Gru().eval()
    spec = ModelSpec(net, (torch.randn(1, 12, 16),), input_names=["x"], output_names=["y"], name="gru")
    api.export(spec, tmp_path / "b", formats="coreml", precisions="fp32", verify=False, isolate=False)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((1, 12, 16)).astype(np.float32)} for _ in range(8)]
    dest = tmp_path / "w8a8.mlpackage"
    cq.quantize(tmp_path / "b" / "gru_fp32.mlpackage", dest, recipe("coreml", "int8", "w8a8"), calib, [],
                tmp_path / "work")
    program = load_program(dest)
    loop = next(op for op in program.block.operations if op.type == "while_loop")
    body = [op.type for op in loop.blocks[1].operations]
    assert "quantize" in body and "linear" in body, body
    with torch.no_grad():
        ref = np.concatenate([net(torch.from_numpy(c["x"])).numpy() for c in calib])
    with CoreMLReferenceRunner(dest) as r:
        got = np.concatenate([r.infer(c)["y"] for c in calib])
    snr = 10 * np.log10((ref ** 2).sum() / ((got - ref) ** 2).sum())
    assert snr > 25, snr
