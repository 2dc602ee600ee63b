"""TFLite static int8 internals on a real converted file: calibration-aware weight rounding, bias correction, input
grid, averaging ranges and layers kept float.

A small MobileNet-style model (conv → ReLU6 → linear depthwise conv → pointwise conv → ReLU6 → mean → fully
connected) is converted by litert-torch and quantized by ai-edge-quantizer; the files run in LiteRT. Nothing
is mocked except one forced failure of mobilize's own preparation step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mobilize.quantize import tflite as qtfl
from mobilize.quantize import tflite_bias as tb
from mobilize.quantize.recipes import recipe

STATIC = recipe("tflite", "int8", "static")


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = torch.nn.Conv2d(16, 8, 1, bias=False)  # converted with a zero bias
        self.fc = torch.nn.Linear(8, 600)  # 4800 weights: "large" (kept float → int8 weight-only)
        with torch.no_grad():  # a depthwise kernel with a strong mean: its rounding error has a mean too
            self.dw.weight.mul_(3.0).add_(0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.relu6(self.stem(x))
        y = self.dw(y)  # linear output (its bias is what bias correction moves)
        y = torch.nn.functional.relu6(self.pw(y))
        return self.fc(y.mean(dim=(2, 3)))


def _images(n: int, seed: int, pixel_grid: bool = True) -> np.ndarray:
    """Smooth random images spanning [-1, 1] (neighbouring pixels correlated, like photos), on the 8-bit grid
    ``pixel / 127.5 − 1`` unless told otherwise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    x = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False).numpy()
    lo, hi = x.min(axis=(1, 2, 3), keepdims=True), x.max(axis=(1, 2, 3), keepdims=True)
    x = (x - lo) / (hi - lo) * 2 - 1
    if pixel_grid:
        x = np.round((x + 1) * 127.5) / 127.5 - 1
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    d = tmp_path_factory.mktemp("tflite_bias")
    fp32 = d / "tiny.tflite"
    litert_torch.convert(Tiny().eval(), (torch.zeros(1, 3, 32, 32),)).export(str(fp32))
    runner = Interpreter(model_path=str(fp32)).get_signature_runner()
    name = next(iter(runner.get_input_details()))
    calib = [{name: x[None]} for x in _images(16, seed=0)]
    lays, skipped = tb.layers(fp32.read_bytes())
    by_op = {lay.op: n for n, lay in lays.items()}
    notes = qtfl.quantize(fp32, d / "int8.tflite", STATIC, calib, [], d / "work", method="minmax")
    return {"dir": d, "fp32": fp32, "calib": calib, "input": name, "layers": lays, "skipped": skipped,
            "stem": next(n for n, lay in lays.items() if lay.op == "CONV_2D" and lay.weight.shape[-1] == 3),
            "dw": by_op["DEPTHWISE_CONV_2D"], "fc": by_op["FULLY_CONNECTED"],
            "pw": next(n for n, lay in lays.items() if lay.op == "CONV_2D" and lay.weight.shape[-1] == 16),
            "int8": d / "int8.tflite", "notes": notes}


def _tensors(path: Path, feeds: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """Named tensors (dequantized when int8) of ``path`` over ``feeds`` (float feeds quantized for an int8 input)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    detail = it.get_input_details()[0]
    scale, zp = detail["quantization"]
    by_name = {t["name"]: t for t in it.get_tensor_details()}
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        x = next(iter(feed.values()))
        if scale:
            x = np.clip(np.round(x / scale + zp), -128, 127).astype(detail["dtype"])
        it.set_tensor(detail["index"], x)
        it.invoke()
        for n in names:
            t = by_name[n]
            v = it.get_tensor(t["index"])
            if v.dtype != np.float32:
                s, z = t["quantization"]
                v = (v.astype(np.float32) - z) * s
            out[n].append(v.copy())
    return {n: np.concatenate(v) for n, v in out.items()}


def _ops(path: Path) -> dict[str, dict]:
    """Output tensor name → {"op", "inputs": [(dtype name, producer op or None)], "output": dtype name}."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    td = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()  # noqa: SLF001
    producer = {int(o): op["op_name"] for op in ops for o in op["outputs"]}
    return {td[int(op["outputs"][0])]["name"]: {
        "op": op["op_name"], "output": td[int(op["outputs"][0])]["dtype"].__name__,
        "inputs": [(td[int(i)]["dtype"].__name__, producer.get(int(i))) for i in op["inputs"] if int(i) >= 0]}
        for op in ops if len(op["outputs"])}


@pytest.mark.slow
def test_layers_read_in_tflite_layout_reproduce_the_float_outputs(tiny: dict) -> None:
    """patches · W + b (then the fused activation) must be what LiteRT computes, padding and stride included —
    else the bias shift and the Hessian describe some other layer."""
    lays = tiny["layers"]
    assert {lay.op for lay in lays.values()} == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    assert not tiny["skipped"]
    # litert-torch gives the bias-less conv a zero bias constant of its own: correctable like any other
    assert all(lay.bias is not None and lay.bias_span is not None for lay in lays.values())
    assert not np.any(lays[tiny["pw"]].bias)
    assert lays[tiny["dw"]].activation == "NONE" and lays[tiny["stem"]].activation == "RELU6"
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tiny["fp32"]), experimental_preserve_all_tensors=True)
    runner = it.get_signature_runner()
    runner(**tiny["calib"][0])
    names = {t["name"]: t["index"] for t in it.get_tensor_details()}
    for name, lay in lays.items():
        p = tb.patches(lay, it.get_tensor(lay.inp)).astype(np.float64)
        if lay.op == "DEPTHWISE_CONV_2D":
            cin = np.arange(lay.rows.shape[0]) // lay.mult
            y = np.einsum("ntc,ct->nc", p[:, :, cin], lay.rows)
        else:
            y = p @ lay.rows.T
        y = y + (lay.bias if lay.bias is not None else 0)
        y = np.clip(y, 0, 6) if lay.activation == "RELU6" else y
        want = it.get_tensor(names[name]).reshape(-1, y.shape[-1])
        np.testing.assert_allclose(y, want, atol=1e-4 * max(1.0, float(np.abs(want).max())), err_msg=lay.op)


def test_error_feedback_rounding_lowers_the_layer_output_error(tiny: dict) -> None:
    """GPTQ rounding must beat rounding to nearest on E[(ΔW·x)²] over the calibration inputs, on the same grid."""
    data = tiny["fp32"].read_bytes()
    lays = tiny["layers"]
    stats = tb.collect(data, tiny["calib"], "serving_default", lays)
    for name in (tiny["stem"], tiny["pw"]):
        rows, h = lays[name].rows, stats.hessian[name]
        scale = tb.channel_scales(rows)
        err = {}
        for kind, q in (("nearest", tb.round_nearest(rows, scale)), ("gptq", tb.gptq(rows, h, scale))):
            assert np.abs(q).max() == 127 and np.array_equal(q, np.round(q))
            assert np.array_equal(tb.channel_scales(q * scale[:, None]), scale)  # the grid survives
            dw = q * scale[:, None] - rows
            err[kind] = float(np.einsum("od,de,oe->", dw, h, dw))
        assert err["gptq"] < 0.8 * err["nearest"], (name, err)


@pytest.mark.slow
def test_chosen_weights_are_what_ai_edge_quantizer_writes(tiny: dict) -> None:
    assert any("error-feedback rounding (GPTQ)" in n for n in tiny["notes"]), tiny["notes"]
    assert any("bias correction on 4 layers" in n for n in tiny["notes"]), tiny["notes"]
    prep = qtfl._prepared(tiny["fp32"], tiny["fp32"].read_bytes(), tiny["calib"], "serving_default")
    assert isinstance(prep, tb.Prepared) and set(prep.grid) == set(tiny["layers"])
    assert prep.mismatches(tiny["int8"].read_bytes()) == []
    got = tb.quantized_weights(tiny["int8"].read_bytes())
    for name, want in prep.grid.items():
        np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-6 * np.abs(want).max())


def _int8_layer(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(dequantized int8 weights, dequantized int32 bias) of the op writing ``name`` in a quantized file."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    td = {t["index"]: t for t in it.get_tensor_details()}
    op = next(o for o in it._get_ops_details() if td[int(o["outputs"][0])]["name"] == name)  # noqa: SLF001
    out = []
    for i in op["inputs"][1:3]:
        t = td[int(i)]
        q = t["quantization_parameters"]
        shape = [1] * len(t["shape"])
        shape[q["quantized_dimension"]] = -1
        out.append((it.get_tensor(int(i)).astype(np.float64) - q["zero_points"].reshape(shape))
                   * q["scales"].reshape(shape))
    return out[0], out[1]


def test_bias_correction_removes_the_mean_channel_error_of_the_int8_file(tiny: dict) -> None:
    """The mean per-channel output error that the int8 file's weights and bias (as ai-edge-quantizer wrote them)
    cause in the linear depthwise conv, on the calibration inputs, is gone; plain quantization of the file leaves it."""
    d, data, calib, dw = tiny["dir"], tiny["fp32"].read_bytes(), tiny["calib"], tiny["dw"]
    lay = tiny["layers"][dw]
    qsvs = qtfl._calibrate(data, STATIC, {"serving_default": calib}, "minmax")
    plain = d / "plain.tflite"
    plain.write_bytes(qtfl._quantize(data, STATIC, [], [], qsvs, None))
    from ai_edge_litert.interpreter import Interpreter

    x_name = {t["index"]: t["name"] for t in Interpreter(model_content=data).get_tensor_details()}[lay.inp]
    p = tb.patches(lay, _tensors(tiny["fp32"], calib, [x_name])[x_name]).astype(np.float64)
    mean_error = {}
    for label, path in (("plain", plain), ("corrected", tiny["int8"])):
        w, b = _int8_layer(path, dw)
        rows_error = w.reshape(-1, w.shape[-1]).T - lay.rows  # (channel, tap)
        err = np.einsum("ntc,ct->nc", p, rows_error) + (b - lay.bias)
        mean_error[label] = float(np.abs(err.mean(axis=0)).mean())
    assert mean_error["corrected"] < 0.05 * mean_error["plain"], mean_error


def test_kept_float_layers_compute_in_float(tiny: dict) -> None:
    """A small kept layer keeps its fp32 weights (no rounding, no correction); a large one gets int8 weights
    dequantized before a float op; both read and write float tensors, their neighbours stay int8."""
    d, dw, fc = tiny["dir"], tiny["dw"], tiny["fc"]
    out = d / "kept.tflite"
    notes = qtfl.quantize(tiny["fp32"], out, STATIC, tiny["calib"], [dw, fc], d / "work", method="minmax")
    assert any("1 kept-float layer(s) keep fp32 weights" in n for n in notes), notes
    ops = _ops(out)
    assert ops[dw]["output"] == "float32" and all(t == "float32" for t, _ in ops[dw]["inputs"])
    assert ("float32", None) in ops[dw]["inputs"]  # weights: a float constant, not a DEQUANTIZE output
    assert ops[fc]["output"] == "float32" and ("float32", "DEQUANTIZE") in ops[fc]["inputs"]
    assert ops[tiny["stem"]]["output"] == "int8" and ops[tiny["pw"]]["output"] == "int8"
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(out))
    w_index = next(int(i) for op in it._get_ops_details()  # noqa: SLF001
                   if op["op_name"] == "DEPTHWISE_CONV_2D" for i in op["inputs"][1:2])
    np.testing.assert_array_equal(it.get_tensor(w_index), tiny["layers"][dw].weight)  # the original weights
    prep = qtfl._prepared(tiny["fp32"], tiny["fp32"].read_bytes(), tiny["calib"], "serving_default")
    assert prep.mismatches(out.read_bytes(), without=[dw]) == []  # the weight-only fc got the chosen int8 too


def test_int8_file_is_valid_and_close_to_float(tiny: dict) -> None:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(tiny["int8"])).get_signature_runner()
    detail = runner.get_input_details()[tiny["input"]]
    out_name, out_detail = next(iter(runner.get_output_details().items()))
    assert detail["dtype"] == np.int8 and out_detail["dtype"] == np.int8
    scale, zp = detail["quantization"]
    assert zp == 0 and scale == pytest.approx(1 / 127, rel=1e-3)  # 8-bit pixel data: zero-centred input grid
    assert any("zero-centred grid" in n for n in tiny["notes"])
    fp = Interpreter(model_path=str(tiny["fp32"])).get_signature_runner()
    held = [{tiny["input"]: x[None]} for x in _images(8, seed=1)]
    got, ref = [], []
    for feed in held:
        x = np.clip(np.round(feed[tiny["input"]] / scale + zp), -128, 127).astype(np.int8)
        o = runner(**{tiny["input"]: x})[out_name]
        got.append((o.astype(np.float32) - out_detail["quantization"][1]) * out_detail["quantization"][0])
        ref.append(next(iter(fp(**feed).values())))
    got_a, ref_a = np.concatenate(got), np.concatenate(ref)
    assert np.all(np.isfinite(got_a))
    assert 10 * np.log10((ref_a ** 2).sum() / ((got_a - ref_a) ** 2).sum()) > 25


def test_averaging_output_keeps_its_input_range(tiny: dict) -> None:
    ops = _ops(tiny["int8"])
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tiny["int8"]))
    td = {t["name"]: t for t in it.get_tensor_details()}
    by_index = {t["index"]: t for t in it.get_tensor_details()}
    mean = next(op for op in it._get_ops_details() if op["op_name"] == "MEAN")  # noqa: SLF001
    assert any(v["op"] == "MEAN" for v in ops.values())
    q_in = by_index[int(mean["inputs"][0])]["quantization"]
    q_out = by_index[int(mean["outputs"][0])]["quantization"]
    assert q_out == pytest.approx(q_in)
    assert any("averaging op" in n for n in tiny["notes"]) and td


def test_input_grid_stays_min_max_for_continuous_data(tiny: dict) -> None:
    data = tiny["fp32"].read_bytes()
    qsvs = {tiny["input"]: {"min": np.float32([-1.0]), "max": np.float32([1.0])}}
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    tensor = {t["index"]: t["name"] for t in it.get_tensor_details()}[
        int(it.get_signature_runner().get_input_details()[tiny["input"]]["index"])]
    qsvs = {tensor: {"min": np.float32([-1.0]), "max": np.float32([1.0])}}
    cont = [{tiny["input"]: x[None]} for x in _images(4, seed=2, pixel_grid=False)]
    same, n = qtfl._input_grids(data, qsvs, cont, "serving_default")
    assert n == 0 and same[tensor] is qsvs[tensor]
    grid = [{tiny["input"]: x[None]} for x in _images(4, seed=2)]
    moved, n = qtfl._input_grids(data, qsvs, grid, "serving_default")
    assert n == 1 and float(moved[tensor]["min"][0]) == pytest.approx(-128 / 127)


def test_a_failed_preparation_still_writes_the_file(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("no statistics")

    monkeypatch.setattr(qtfl, "_PREPARED", {})
    monkeypatch.setattr(tb, "prepare", boom)
    out = tiny["dir"] / "fallback.tflite"
    notes = qtfl.quantize(tiny["fp32"], out, STATIC, tiny["calib"], [], tiny["dir"] / "work", method="minmax")
    assert any("biases not corrected: RuntimeError: no statistics" in n for n in notes), notes
    assert out.stat().st_size > 0 and _ops(out)[tiny["dw"]]["output"] == "int8"


class Seq(torch.nn.Module):
    """(1, 8, 16) tokens → linear → LayerNorm → mean over the sequence (pooling)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(16, 16)
        self.norm = torch.nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(x)).mean(dim=1)


def test_pooling_is_widened_but_normalization_statistics_are_not(tmp_path: Path) -> None:
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    path = tmp_path / "seq.tflite"
    litert_torch.convert(Seq().eval(), (torch.zeros(1, 8, 16),)).export(str(path))
    data = path.read_bytes()
    name = next(iter(Interpreter(model_content=data).get_signature_runner().get_input_details()))
    rng = np.random.default_rng(0)
    feeds = [{name: rng.normal(size=(1, 8, 16)).astype(np.float32)} for _ in range(6)]
    qsvs = qtfl._calibrate(data, STATIC, {"serving_default": feeds}, "minmax")
    widened, n = qtfl._widen_averaging(data, qsvs)
    it = Interpreter(model_content=data)
    td = {t["index"]: t for t in it.get_tensor_details()}
    means = [op for op in it._get_ops_details() if op["op_name"] == "MEAN"]  # noqa: SLF001
    assert len(means) >= 3  # LayerNorm mean and variance, then the pooling
    changed = [td[int(op["outputs"][0])]["name"] for op in means
               if widened[td[int(op["outputs"][0])]["name"]] is not qsvs[td[int(op["outputs"][0])]["name"]]]
    pool = td[int(means[-1]["outputs"][0])]["name"]
    assert n == 1 and changed == [pool]
    src = td[int(means[-1]["inputs"][0])]["name"]
    assert float(widened[pool]["max"].max()) == pytest.approx(float(np.max(qsvs[src]["max"])))
