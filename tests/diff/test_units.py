"""``mobilize diff`` pieces that need no converter: layouts, grids, provenance parsing, metrics, options."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from mobilize.diff import parse_artifacts
from mobilize.diff.analyze import _metrics, score
from mobilize.diff.graph import Graph, Tensor, dequantize, quant_record, quantize
from mobilize.diff.match import Resolver, transforms
from mobilize.diff.tflite import locations
from mobilize.diff.torch_side import run as torch_run
from mobilize.errors import OptionError
from mobilize.spec import ModelSpec


def test_api_function_survives_the_stage_package() -> None:
    import mobilize
    import mobilize.diff.analyze  # noqa: F401 - loading a submodule must not rebind mobilize.diff

    assert callable(mobilize.diff) and mobilize.diff.__module__ == "mobilize"


def test_diff_command_is_listed_and_cheap() -> None:
    out = subprocess.run([sys.executable, "-m", "mobilize", "diff", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--source" in out.stdout and "--artifact" in out.stdout


def test_every_format_can_be_diffed() -> None:
    import importlib

    from mobilize import formats
    from mobilize.diff.worker import MODULES

    own = [f for f, p in formats.REGISTRY.items() if not p.converts_from]  # ort: diff the onnx file it came from
    assert set(own) <= set(MODULES)
    for name in own:
        mod = importlib.import_module(MODULES[name])
        assert callable(mod.read) and callable(mod.run)


def test_transforms_find_channels_last_and_reshape() -> None:
    nchw = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    [tr] = transforms([2, 3, 4, 5], [2, 4, 5, 3])
    assert tr.perm == [0, 2, 3, 1]
    np.testing.assert_array_equal(tr.to_file(nchw), nchw.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(tr.to_torch(tr.to_file(nchw), [2, 3, 4, 5]), nchw)
    # equal dims: every plausible layout is offered (the values decide), identity first
    square = transforms([1, 4, 4, 4], [1, 4, 4, 4])
    assert square[0].perm is None and [0, 2, 3, 1] in [t.perm for t in square]
    assert transforms([16, 64], [1, 16, 64])[0].perm is None  # a unit dim added: reshape
    assert transforms([2, 3], [7]) == []  # sizes differ: nothing fits


def test_quantize_round_trip_and_clipping() -> None:
    q = quant_record(0.5, -10, "int8")
    assert q["qmin"] == -128 and q["qmax"] == 127
    x = np.array([-200.0, 0.0, 1.0, 200.0])
    ints = quantize(x, q, "int8")
    assert ints.dtype == np.int8 and ints.tolist() == [-128, -10, -8, 127]
    np.testing.assert_allclose(dequantize(ints, q), [-59.0, 0.0, 1.0, 68.5])
    assert dequantize(np.array([1.5], np.float16), q).dtype == np.float32  # floats pass through, widened


def test_visible_follows_quantize_dequantize_chain() -> None:
    ts = [Tensor(0, "x", "input", input=0), Tensor(1, "conv", "Conv", inputs=[0]),
          Tensor(2, "q", "QuantizeLinear", inputs=[1]), Tensor(3, "dq", "DequantizeLinear", inputs=[2]),
          Tensor(4, "next", "Conv", inputs=[3])]
    g = Graph("onnx", ts)
    assert g.visible(1) == 3
    ts.append(Tensor(5, "other", "Relu", inputs=[1]))  # a second reader: the conv's own output is what is read
    assert Graph("onnx", ts).visible(1) == 1


def test_metrics_median_channel_snr_sees_an_outlier_channel() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(8, 16)).astype(np.float32)
    ref[:, 0] *= 300.0
    coarse = np.round(ref / 2.0) * 2.0  # one grid for all channels, sized for the outlier
    m = _metrics([coarse], [ref], channel_axis=-1)
    assert m["snr_db"] > 30  # the whole-tensor SNR hides it ...
    assert m["channel_snr_db"] < 5  # ... the typical channel is lost
    assert score(m) == m["channel_snr_db"]
    exact = _metrics([ref], [ref], channel_axis=-1)
    assert exact["snr_db"] == 200.0 and score(exact) == 200.0


def test_tflite_locations_and_scope_walk() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([Block(), Block()])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for b in self.layers:
                x = b(x)
            return x

    spec = ModelSpec(module=Net().eval(), example_inputs=(torch.ones(1, 4),), name="net")
    spec.output_names = ["y"]
    side = torch_run(spec, [{"x": np.ones((1, 4), np.float32)}])  # forward(self, x) names the input
    r = Resolver(side, "tflite")
    root = f"{Net.__module__}.{Net.__qualname__}"
    block = f"{Block.__module__}.{Block.__qualname__}"
    act, fc = "torch.nn.modules.activation.ReLU_act", "torch.nn.modules.linear.Linear_fc"
    fused = f"{root}/{block}_1/{act};;{root}/{block}_1/{fc};1"
    assert locations(fused) == [f"{root}/{block}_1/{act}", f"{root}/{block}_1/{fc}"]
    # the ModuleList is never called, so it has no scope of its own: the walk steps over it
    assert r.walk(locations(fused)[0]) == "layers.1.act"
    # a fused op's output is its last leaf's (the ReLU), whatever order the name lists them in
    t = Tensor(1, fused, "FULLY_CONNECTED", scopes=locations(fused)[::-1])
    assert r.modules(t) == ["layers.1.act", "layers.1.fc"]
    assert r.walk("some.other.Model/x_y") is None


def test_torch_side_records_leaves_data_flow_and_model_outputs() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5)).eval()
    spec = ModelSpec(module=model, example_inputs=(torch.ones(1, 3, 8, 8),), name="seq")
    spec.output_names = ["y"]
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    side = torch_run(spec, [{"input": x}, {"input": x * 2}])  # nn.Sequential.forward(self, input)
    leaves = {leaf.path: leaf for leaf in side.leaves if leaf.leaf}
    assert list(leaves) == ["0", "1", "2", "3"]
    assert leaves["1"].inputs_from == [leaves["0"].order]  # BatchNorm reads the conv's output
    assert leaves["3"].passthrough  # eval Dropout returns its input ...
    assert leaves["2"].model_output == 0 and leaves["3"].model_output is None  # ... so the ReLU made the output
    assert len(leaves["0"].outputs) == 2 and leaves["0"].has_weight and not leaves["1"].has_weight


def test_parse_artifacts() -> None:
    assert parse_artifacts("onnx/fp32, tflite") == [("onnx", "fp32"), ("tflite", "*")]
    assert parse_artifacts(["coreml/int8,onnx/fp16"]) == [("coreml", "int8"), ("onnx", "fp16")]
    assert parse_artifacts(None) is None
    with pytest.raises(OptionError):
        parse_artifacts("/fp32")
    with pytest.raises(OptionError):
        parse_artifacts(" , ")


def test_bad_input_is_one_line_exit_2(tmp_path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mobilize", "diff", *args], capture_output=True, text=True)

    missing = cli(str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "error" in missing.stderr
    no_source = cli(str(tmp_path), "--inputs", "calib.npz")
    assert no_source.returncode == 2 and "--inputs needs --source" in no_source.stderr
    bad_samples = cli(str(tmp_path), "--samples", "0")
    assert bad_samples.returncode == 2 and "--samples" in bad_samples.stderr
