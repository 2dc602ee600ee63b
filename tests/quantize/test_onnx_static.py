"""onnxruntime static int8 internals on a real exported file: bias correction and layers kept float.

A small MobileNet-style block (conv → ReLU6 → depthwise conv → ReLU6 → pointwise conv) is exported to ONNX by the
real exporter and quantized by onnxruntime; nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from mobilize.quantize import onnx as qonnx
from mobilize.quantize.onnx_bias import bias_corrected, shifts, weight_error
from mobilize.quantize.recipes import recipe


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = torch.nn.Conv2d(16, 8, 1)
        self.fc = torch.nn.Linear(8, 10)
        with torch.no_grad():  # a depthwise kernel with a strong mean: its rounding error has a mean too
            self.dw.weight.mul_(3.0).add_(0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.relu6(self.stem(x))
        y = torch.nn.functional.relu6(self.dw(y))
        y = self.pw(y)
        return self.fc(y.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("block")
    model = Block().eval()
    fp32 = d / "block.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, 32, 32),), str(fp32), input_names=["x"], output_names=["y"],
                      dynamo=True, external_data=False, opset_version=20)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)} for _ in range(16)]
    model_proto = onnx.load(str(fp32))
    convs = [n.name for n in model_proto.graph.node if n.op_type == "Conv"]
    dw = next(n.name for n in model_proto.graph.node if n.op_type == "Conv"
              and any(a.name == "group" and a.i > 1 for a in n.attribute))
    return {"dir": d, "fp32": fp32, "calib": calib, "convs": convs, "dw": dw}


def _session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if optimized is not None:  # EXTENDED: the QDQ rewrites run, the NCHWc layout pass (renames nodes) does not
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _run(path: Path, calib: list[dict]) -> np.ndarray:
    s = _session(path)
    return np.concatenate([s.run(None, f)[0] for f in calib])


def _snr(a: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10((ref ** 2).sum() / ((a - ref) ** 2).sum()))


@pytest.mark.slow
def test_weight_error_is_onnxruntimes_own_rounding(block: dict, tmp_path: Path) -> None:
    """ΔW must be the rounding onnxruntime applies, or the correction corrects the wrong thing."""
    out = tmp_path / "qdq.onnx"
    qonnx.quantize(block["fp32"], out, recipe("onnx", "int8", "qdq-per-channel"), block["calib"], [], tmp_path / "w")
    q = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    pre = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "w" / "onnx_bias_corrected_"
                                                                         "e3b0c44298fc.onnx")).graph.initializer}
    checked = 0
    for name, w_int8 in q.items():
        if name.endswith("weight_quantized") and w_int8.ndim == 4:
            w = pre[name[: -len("_quantized")]]
            scale = q[name[: -len("_quantized")] + "_scale"].reshape(-1, 1, 1, 1)
            np.testing.assert_allclose(w_int8.astype(np.float32) * scale - w, weight_error(w, 0), atol=1e-6)
            checked += 1
    assert checked == 3


def test_bias_correction_removes_the_mean_output_shift_of_int8_weights(block: dict, tmp_path: Path) -> None:
    src = qonnx.preprocess(block["fp32"], tmp_path)
    sh = shifts(src, block["calib"], tmp_path)
    assert set(sh) >= set(block["convs"])
    assert np.abs(sh[block["dw"]]).max() > 1e-4  # the mean-heavy depthwise kernel shifts its outputs
    corrected, n = bias_corrected(src, block["calib"], [block["dw"]], tmp_path)
    assert n == len(sh) - 1  # every correctable layer but the one kept float
    before = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(src)).graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(corrected)).graph.initializer}
    nodes = {nd.name: nd for nd in onnx.load(str(src)).graph.node}
    np.testing.assert_array_equal(after[nodes[block["dw"]].input[2]], before[nodes[block["dw"]].input[2]])
    stem_bias = nodes[block["convs"][0]].input[2]
    np.testing.assert_allclose(after[stem_bias], before[stem_bias] - sh[block["convs"][0]], rtol=1e-6)

    # the int8 file computes closer to float with the correction than without it (same ranges, same weights)
    ref = _run(src, block["calib"])
    plain = tmp_path / "plain.onnx"
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from mobilize.quantize.onnx_bias import pooled_ranges

    same_ranges = {t: [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}]
                   for t, (lo, hi) in pooled_ranges(src, block["calib"], tmp_path).items()}
    quantize_static(str(src), str(plain), qonnx._Reader(block["calib"]), quant_format=QuantFormat.QOperator,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"WeightSymmetric": True, "TensorQuantOverrides": same_ranges})
    corrected_file = tmp_path / "corrected.onnx"
    qonnx.quantize(block["fp32"], corrected_file, recipe("onnx", "int8", "qoperator-per-channel"), block["calib"],
                   [], tmp_path / "w2")
    assert _snr(_run(corrected_file, block["calib"]), ref) > _snr(_run(plain, block["calib"]), ref)


@pytest.mark.parametrize("name", ["qoperator-per-channel", "qdq-per-channel"])
def test_a_layer_kept_float_stays_float_when_onnxruntime_loads_the_file(block: dict, tmp_path: Path,
                                                                       name: str) -> None:
    """onnxruntime's optimiser re-quantizes a float Conv sitting between DequantizeLinear and QuantizeLinear (per-tensor
    weights): without isolation the kept-float depthwise conv becomes a QLinearConv at load time."""
    out = tmp_path / "kept.onnx"
    notes = qonnx.quantize(block["fp32"], out, recipe("onnx", "int8", name), block["calib"], [block["dw"]],
                           tmp_path / "w")
    assert any("kept float" in n for n in notes)
    model = onnx.load(str(out))
    (dw,) = [n for n in model.graph.node if n.name == block["dw"]]
    assert dw.op_type == "Conv"  # float in the file, with float weights
    inits = {i.name: i for i in model.graph.initializer}
    assert inits[dw.input[1]].data_type == onnx.TensorProto.FLOAT

    optimized = tmp_path / "optimized.onnx"
    _session(out, optimized)
    after = {n.name: n.op_type for n in onnx.load(str(optimized)).graph.node}
    assert after.get(block["dw"]) in ("Conv", "FusedConv")

    # control: the same file without the isolation is re-quantized by onnxruntime (the trap being guarded against)
    bare = tmp_path / "bare.onnx"
    from onnx import helper

    model = onnx.load(str(out))
    producer = {o: n for n in model.graph.node for o in n.output}
    (dw,) = [n for n in model.graph.node if n.name == block["dw"]]
    private = producer[dw.input[0]]
    assert private.op_type == "DequantizeLinear" and any(a.name == "axis" for a in private.attribute)
    scale = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == private.input[1]))
    zp = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == private.input[2]))
    model.graph.initializer.extend([numpy_helper.from_array(np.array(scale[0]), "s0"),
                                    numpy_helper.from_array(np.array(zp[0]), "z0")])
    model.graph.node.remove(private)
    idx = list(model.graph.node).index(dw)
    model.graph.node.insert(idx, helper.make_node("DequantizeLinear", [private.input[0], "s0", "z0"],
                                                 [private.output[0]], name="per_tensor_dq"))
    bare.write_bytes(model.SerializeToString())
    optimized_bare = tmp_path / "optimized_bare.onnx"
    _session(bare, optimized_bare)
    after_bare = {n.name: n.op_type for n in onnx.load(str(optimized_bare)).graph.node}
    assert after_bare.get(block["dw"]) == "QLinearConv"


def test_isolation_leaves_layers_without_a_dequantized_input_alone(block: dict, tmp_path: Path) -> None:
    """The stem reads the float model input directly: nothing to isolate, and the file is unchanged in behaviour."""
    out = tmp_path / "stem.onnx"
    qonnx.quantize(block["fp32"], out, recipe("onnx", "int8", "qoperator-per-channel"), block["calib"],
                   [block["convs"][0]], tmp_path / "w")
    before = out.read_bytes()
    assert qonnx.isolate_float(out, {block["convs"][0]}) == 0
    np.testing.assert_array_equal(_run(out, block["calib"][:2]), _run(out, block["calib"][:2]))
    assert onnx.load_from_string(before).graph.node[0].op_type == onnx.load(str(out)).graph.node[0].op_type


def test_pooled_features_get_the_range_of_what_they_pool(block: dict, tmp_path: Path) -> None:
    """A spatial mean is narrower than its feature map on the calibration data; its int8 grid gets the map's range,
    so other data cannot be clipped there."""
    from mobilize.quantize.onnx_bias import pooled_ranges

    src = qonnx.preprocess(block["fp32"], tmp_path)
    ranges = pooled_ranges(src, block["calib"], tmp_path)
    model = onnx.load(str(src))
    (mean,) = [n for n in model.graph.node if n.op_type in ("ReduceMean", "GlobalAveragePool")]
    assert mean.output[0] in ranges
    # the range is the pooled input's (measured here independently), wider than the pooled values' own
    probe = onnx.load(str(src))
    probe.graph.output.extend([onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                               for t in (mean.input[0], mean.output[0])])
    (tmp_path / "probe.onnx").write_bytes(probe.SerializeToString())
    s = _session(tmp_path / "probe.onnx")
    names = [o.name for o in s.get_outputs()]
    got = [dict(zip(names, s.run(None, f))) for f in block["calib"]]
    pooled_in = np.concatenate([g[mean.input[0]].ravel() for g in got])
    pooled_out = np.concatenate([g[mean.output[0]].ravel() for g in got])
    lo, hi = ranges[mean.output[0]]
    assert lo == pytest.approx(pooled_in.min()) and hi == pytest.approx(pooled_in.max())
    assert hi > pooled_out.max() * 1.5


def test_a_layer_norm_mean_is_not_pooling(tmp_path: Path) -> None:
    from mobilize.quantize.onnx_bias import pooled_ranges

    class Norm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x)
            y = y - y.mean(dim=-1, keepdim=True)
            return y / (y.pow(2).mean(dim=-1, keepdim=True) + 1e-5).sqrt()

    path = tmp_path / "norm.onnx"
    torch.onnx.export(Norm().eval(), (torch.rand(1, 8, 16),), str(path), input_names=["x"], dynamo=True,
                      external_data=False, opset_version=20)
    assert any(n.op_type == "ReduceMean" for n in onnx.load(str(path)).graph.node)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.normal(size=(1, 8, 16)).astype(np.float32)} for _ in range(4)]
    assert pooled_ranges(path, calib, tmp_path) == {}
