"""Reference data, I/O mapping, feed/output adaptation and the parity judgement (mobilize.verify.parity).

verify_file is driven with in-process fake runners (no converter, no real runtime).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from mobilize.errors import FeedError, RuntimeFailure
from mobilize.runtime.base import IOTensor, Runner
from mobilize.spec import ModelSpec
from mobilize.verify import tolerance as T
from mobilize.verify.inputs import InputSet, make_input_sets
from mobilize.verify.parity import (
    Reference,
    adapt_feed,
    adapt_output,
    compute_reference,
    io_map,
    verify_file,
)

# --- Reference -------------------------------------------------------------------------------------------------


def _reference(n_sets: int = 3, deterministic: bool = True) -> Reference:
    rng = np.random.default_rng(0)
    sets, outs = [], []
    for i in range(n_sets):
        sets.append(InputSet("example" if i == 0 else f"random(seed={i})",
                             {"x": rng.normal(size=(2, 3)).astype(np.float32),
                              "ids": rng.integers(0, 9, size=(2, 5)).astype(np.int64)}))
        outs.append({"y": rng.normal(size=(2, 4)).astype(np.float32),
                     "mask": rng.integers(0, 2, size=(2,)).astype(np.bool_)})
    return Reference(sets, outs, ["y", "mask"], deterministic)


@pytest.mark.parametrize("n_sets", [1, 3, 12])
@pytest.mark.parametrize("deterministic", [True, False])
def test_reference_round_trip(tmp_path: Path, n_sets: int, deterministic: bool) -> None:
    ref = _reference(n_sets, deterministic)
    path = tmp_path / "reference.npz"
    ref.save(path)
    assert path.is_file()
    with np.load(path, allow_pickle=False) as z:  # nothing in the file needs pickle
        for k in z.files:
            assert z[k].dtype != object
    back = Reference.load(path)
    assert back.output_names == ["y", "mask"]
    assert back.deterministic is deterministic
    assert [s.label for s in back.sets] == [s.label for s in ref.sets]
    for s0, s1, o0, o1 in zip(ref.sets, back.sets, ref.outputs, back.outputs, strict=True):
        assert set(s1.arrays) == {"x", "ids"} and set(o1) == {"y", "mask"}
        for k in s0.arrays:
            np.testing.assert_array_equal(s1.arrays[k], s0.arrays[k])
            assert s1.arrays[k].dtype == s0.arrays[k].dtype
        for k in o0:
            np.testing.assert_array_equal(o1[k], o0[k])
            assert o1[k].dtype == o0[k].dtype


# --- io_map ----------------------------------------------------------------------------------------------------


def _io(*names: str) -> list[IOTensor]:
    return [IOTensor(n, (1,), "float32") for n in names]


def test_io_map_by_name_ignores_order() -> None:
    assert io_map(["a", "b"], _io("b", "a")) == {"a": "a", "b": "b"}


def test_io_map_by_position_when_names_differ() -> None:
    assert io_map(["image", "mask"], _io("serving_default_0", "serving_default_1")) == {
        "image": "serving_default_0", "mask": "serving_default_1"}


def test_io_map_count_mismatch_raises() -> None:
    with pytest.raises(RuntimeFailure, match=r"declares 1 tensors \['a'\] but the model has 2"):
        io_map(["a", "b"], _io("a"))


# --- adapt_feed / adapt_output ---------------------------------------------------------------------------------


def test_adapt_feed_same_dtype_is_untouched() -> None:
    a = np.ones(3, np.float32)
    assert adapt_feed(a, IOTensor("x", (3,), "float32")) is a


def test_adapt_feed_int64_to_int32() -> None:
    a = np.array([[0, -5, 2**31 - 1, -(2**31)]], np.int64)
    out = adapt_feed(a, IOTensor("ids", (1, 4), "int32"))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**40])
def test_adapt_feed_int_out_of_range(value) -> None:
    a = np.array([1, value], np.int64)
    with pytest.raises(FeedError) as ei:
        adapt_feed(a, IOTensor("ids", (2,), "int32"))
    msg = str(ei.value)
    assert msg.startswith("ids:") and "int32" in msg and str(value) in msg


def test_adapt_feed_float_to_int8_quantized() -> None:
    q = {"scale": 0.5, "zero_point": 3}
    want = IOTensor("x", (5,), "int8", q)
    a = np.array([0.0, 1.0, -1.0, 100.0, -100.0], np.float32)
    out = adapt_feed(a, want)
    assert out.dtype == np.int8
    # round(x / 0.5 + 3), clipped to [-128, 127]
    np.testing.assert_array_equal(out, np.array([3, 5, 1, 127, -128], np.int8))


def test_quantize_dequantize_round_trip() -> None:
    q = {"scale": [0.02], "zero_point": [-10]}
    tin = IOTensor("x", (200,), "int8", q)
    x = np.random.default_rng(1).uniform(-2.3, 2.3, 200).astype(np.float32)
    qx = adapt_feed(x, tin)
    back = adapt_output(qx, tin)
    assert back.dtype == np.float32
    assert np.abs(back - x).max() <= 0.01 + 1e-6  # within half a quantization step


def test_adapt_output_dequantizes_uint8() -> None:
    t = IOTensor("probs", (3,), "uint8", {"scale": 1 / 256, "zero_point": 0})
    np.testing.assert_allclose(adapt_output(np.array([0, 128, 255], np.uint8), t), [0.0, 0.5, 255 / 256])


def test_adapt_output_passthrough_without_quantization() -> None:
    a = np.array([1, 2], np.int64)
    assert adapt_output(a, IOTensor("y", (2,), "int64")) is a
    f = np.array([0.5], np.float32)
    assert adapt_output(f, IOTensor("y", (1,), "int8", {"scale": 2.0, "zero_point": 0})) is f


# --- compute_reference -----------------------------------------------------------------------------------------


def test_compute_reference_deterministic(linear_spec: ModelSpec) -> None:
    sets = make_input_sets(linear_spec)
    ref = compute_reference(linear_spec, sets)
    assert ref.deterministic is True
    assert ref.output_names == ["y"] and len(ref.outputs) == len(sets)
    for s, out in zip(sets, ref.outputs, strict=True):
        with torch.no_grad():
            want = linear_spec.module(torch.from_numpy(s.arrays["x"])).numpy()
        np.testing.assert_array_equal(out["y"], want)


def test_compute_reference_detects_dropout_left_on(models) -> None:
    parent = models.DropoutParent().eval()  # eval() does not help: the child forces training=True
    assert not parent.drop.training
    spec = ModelSpec(module=parent, example_inputs=(torch.randn(4, 4),), input_names=["x"], output_names=["y"])
    ref = compute_reference(spec, make_input_sets(spec, n_random=1))
    assert ref.deterministic is False


def test_compute_reference_multi_output_names(models) -> None:
    spec = ModelSpec(module=models.TwoInOut(), example_inputs=(torch.randn(2, 3), torch.tensor([[1, 2]])),
                     input_names=["x", "ids"], output_names=["total", "doubled"])
    ref = compute_reference(spec, make_input_sets(spec, n_random=1))
    assert ref.output_names == ["total", "doubled"]
    np.testing.assert_array_equal(ref.outputs[0]["doubled"], [[2, 4]])
    assert ref.outputs[0]["doubled"].dtype == np.int64


# --- verify_file with fake runners -----------------------------------------------------------------------------


def _fake_runner(inputs: list[IOTensor], outputs: list[IOTensor], fn: Any, *, available: bool = True):
    class Fake(Runner):
        format: ClassVar[str] = "onnx"
        runtime: ClassVar[str] = "fake-runtime"
        calls: ClassVar[list[dict[str, np.ndarray]]] = []

        @classmethod
        def available(cls) -> tuple[bool, str]:
            return (True, "") if available else (False, "fake runtime is not installed")

        @property
        def inputs(self) -> list[IOTensor]:
            return inputs

        @property
        def outputs(self) -> list[IOTensor]:
            return outputs

        def _load(self) -> None:
            pass

        def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            type(self).calls.append(feeds)
            return fn(feeds)

    return Fake


def _linear_ref(spec: ModelSpec) -> tuple[Reference, np.ndarray, np.ndarray]:
    ref = compute_reference(spec, make_input_sets(spec))
    w = spec.module.fc.weight.detach().numpy()
    b = spec.module.fc.bias.detach().numpy()
    return ref, w, b


def test_verify_file_pass_and_fail(linear_spec: ModelSpec, tmp_path: Path) -> None:
    ref, w, b = _linear_ref(linear_spec)
    ins, outs = [IOTensor("x", (None, 4), "float32")], [IOTensor("y", (None, 3), "float32")]
    good = _fake_runner(ins, outs, lambda f: {"y": f["x"] @ w.T + b})
    rec = verify_file(good, tmp_path / "m.onnx", "onnx", "fp32", ref, ["x"])
    assert rec.status == "pass", rec.failures
    assert rec.runtime == "fake-runtime"
    assert len(rec.inputs_used) == 3 and not rec.inputs_skipped
    assert rec.outputs["y"].max_abs_error < 1e-5

    bad = _fake_runner(ins, outs, lambda f: {"y": f["x"] @ w.T + b + 0.01})
    rec = verify_file(bad, tmp_path / "m.onnx", "onnx", "fp32", ref, ["x"])
    assert rec.status == "fail"
    assert rec.reason == rec.failures[0] and rec.reason.startswith("y:")
    d = rec.to_dict()
    assert d["status"] == "fail" and d["max_abs_error"] == pytest.approx(0.01, rel=1e-3)


def test_verify_file_maps_by_position_and_casts_int64_feeds(models, tmp_path: Path) -> None:
    spec = ModelSpec(module=models.TwoInOut(), example_inputs=(torch.randn(2, 3), torch.tensor([[1, 2, 3]])),
                     input_names=["x", "ids"], output_names=["total", "doubled"])
    ref = compute_reference(spec, make_input_sets(spec))
    ins = [IOTensor("in_0", (2, 3), "float32"), IOTensor("in_1", (1, 3), "int32")]
    outs = [IOTensor("out_0", (2,), "float32"), IOTensor("out_1", (1, 3), "int32")]
    runner = _fake_runner(ins, outs, lambda f: {"out_0": f["in_0"].sum(-1), "out_1": f["in_1"] * 2})
    rec = verify_file(runner, tmp_path / "m.onnx", "onnx", "fp32", ref, ["x", "ids"])
    assert rec.status == "pass", rec.failures
    assert all(c["in_1"].dtype == np.int32 for c in runner.calls)


def test_verify_file_non_deterministic_reference_is_unverified(linear_spec: ModelSpec, tmp_path: Path) -> None:
    ref, w, b = _linear_ref(linear_spec)
    ref.deterministic = False
    runner = _fake_runner([IOTensor("x", (None, 4), "float32")], [IOTensor("y", (None, 3), "float32")],
                          lambda f: {"y": f["x"] @ w.T + b})
    rec = verify_file(runner, tmp_path / "m.onnx", "onnx", "fp32", ref, ["x"])
    assert rec.status == "unverified" and "non-deterministic" in rec.reason
    assert runner.calls == []


def test_verify_file_runtime_unavailable(linear_spec: ModelSpec, tmp_path: Path) -> None:
    ref, _, _ = _linear_ref(linear_spec)
    runner = _fake_runner([], [], lambda f: {}, available=False)
    rec = verify_file(runner, tmp_path / "m.onnx", "onnx", "fp32", ref, ["x"])
    assert rec.status == "unverified" and rec.runtime is None and "not installed" in rec.reason


def test_verify_file_skips_sets_that_do_not_fit_static_shapes(tmp_path: Path, models) -> None:
    spec = ModelSpec(module=models.TinyLinear(), example_inputs=(torch.randn(2, 4),), input_names=["x"],
                     output_names=["y"], dynamic_dims={"x": {0: "batch"}})
    ref = compute_reference(spec, make_input_sets(spec))
    w = spec.module.fc.weight.detach().numpy()
    b = spec.module.fc.bias.detach().numpy()
    runner = _fake_runner([IOTensor("x", (2, 4), "float32")], [IOTensor("y", (2, 3), "float32")],
                          lambda f: {"y": f["x"] @ w.T + b})
    rec = verify_file(runner, tmp_path / "m.onnx", "onnx", "fp32", ref, ["x"])
    assert rec.status == "pass"
    assert len(rec.inputs_used) == 2
    assert len(rec.inputs_skipped) == 1 and "static shape" in rec.inputs_skipped[0]["why"]


def test_verify_file_records_a_runner_that_cannot_run(linear_spec: ModelSpec, tmp_path: Path) -> None:
    ref, _, _ = _linear_ref(linear_spec)

    def boom(_feeds):
        raise RuntimeFailure("m.onnx: the runtime crashed")

    runner = _fake_runner([IOTensor("x", (None, 4), "float32")], [IOTensor("y", (None, 3), "float32")], boom)
    rec = verify_file(runner, tmp_path / "m.onnx", "onnx", "fp32", ref, ["x"])
    assert rec.status == "fail" and rec.could_not_run is True
    assert "the runtime crashed" in rec.reason


def test_tolerances_cover_every_format_and_precision() -> None:
    from mobilize import formats

    for fmt in formats.REGISTRY:
        for prec in formats.PRECISIONS:
            tol = T.for_artifact(fmt, prec)
            if prec in T.QUANTIZED:  # smoke-test bounds on random inputs; accuracy is judged on real data
                assert tol == T.QUANTIZED[prec] and 0 < tol.min_cosine <= 1
                continue
            assert tol == T.DEFAULTS[(fmt, prec)]
            assert 0 <= tol.max_mismatch_ratio < 1 and 0 < tol.min_cosine <= 1
    assert T.for_artifact("newfmt", "fp32") == T.FP32
    assert T.for_artifact("newfmt", "fp16") == T.FP16
    assert T.for_artifact("newfmt", "int8") == T.QUANTIZED["int8"]
