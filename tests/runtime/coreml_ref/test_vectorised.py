"""The vectorised paths of the interpreter against straightforward references computed here with torch — conv as
im2col (3-D, groups, batch slices), pooling one kernel position at a time (and large windows directly), both LSTM
directions in one loop (peepholes, clip), the GRU's fused r/z product — and the per-package cache of decoded
constants and compiled plans (shared, read-only, invalidated by a changed file, bounded)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

from mobilize.runtime.coreml_ref import program as program_mod
from mobilize.runtime.coreml_ref.ops import nn as nn_ops
from mobilize.runtime.coreml_ref.program import Program

from .conftest import save_program

R = np.random.default_rng(23)


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


# --- conv ---------------------------------------------------------------------------------------------------------

def test_conv3d_groups_stride_dilation_padding(run_mil) -> None:  # noqa: ANN001
    w = f32(6, 2, 3, 2, 3)
    x = f32(2, 4, 7, 6, 9)
    out, = run_mil(lambda x_: mb.conv(x=x_, weight=w, groups=2, strides=[2, 1, 2], dilations=[1, 2, 1],
                                      pad_type="custom", pad=[1, 0, 0, 1, 2, 1]), x, op="conv")
    want = F.conv3d(F.pad(t(x), (2, 1, 0, 1, 1, 0)), t(w), stride=(2, 1, 2), dilation=(1, 2, 1), groups=2).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_conv_in_batch_slices_when_the_columns_are_large(run_mil, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(nn_ops, "_COLS_BYTES", 1)  # every batch item is its own slice
    w, b = f32(5, 3, 3, 3), f32(5)
    x = f32(3, 3, 9, 8)
    out, = run_mil(lambda x_: mb.conv(x=x_, weight=w, bias=b, pad_type="same"), x, op="conv")
    np.testing.assert_allclose(out, F.conv2d(t(x), t(w), t(b), padding="same").numpy(), rtol=1e-5, atol=1e-5)


def test_depthwise_conv_with_stride(run_mil) -> None:  # noqa: ANN001
    w = f32(8, 1, 3, 3)
    x = f32(1, 8, 11, 10)
    out, = run_mil(lambda x_: mb.conv(x=x_, weight=w, groups=8, strides=[2, 2], pad_type="custom",
                                      pad=[1, 1, 1, 1]), x, op="conv")
    np.testing.assert_allclose(out, F.conv2d(t(x), t(w), stride=2, padding=1, groups=8).numpy(), rtol=1e-5,
                               atol=1e-5)


# --- pooling ------------------------------------------------------------------------------------------------------

def test_max_pool_3d_and_1d(run_mil) -> None:  # noqa: ANN001
    x3, x1 = f32(2, 3, 6, 7, 5), f32(2, 3, 11)
    out3, out1 = run_mil(lambda a, b: (mb.max_pool(x=a, kernel_sizes=[2, 3, 2], strides=[2, 2, 1], pad_type="valid"),
                                       mb.max_pool(x=b, kernel_sizes=[3], strides=[2], pad_type="custom", pad=[1, 1])),
                         x3, x1, op="max_pool")
    np.testing.assert_array_equal(out3, F.max_pool3d(t(x3), (2, 3, 2), (2, 2, 1)).numpy())
    np.testing.assert_array_equal(out1, F.max_pool1d(t(x1), 3, 2, padding=1).numpy())


def test_large_windows_are_reduced_directly(run_mil) -> None:  # noqa: ANN001
    """8 × 8 = 64 kernel positions (more than the per-position loop takes): global max and average pooling."""
    x = f32(2, 4, 8, 8)
    mx, av = run_mil(lambda a: (mb.max_pool(x=a, kernel_sizes=[8, 8], strides=[1, 1], pad_type="valid"),
                                mb.avg_pool(x=a, kernel_sizes=[8, 8], strides=[1, 1], pad_type="valid")), x,
                     op="avg_pool")
    np.testing.assert_array_equal(mx, F.max_pool2d(t(x), 8).numpy())
    np.testing.assert_allclose(av, F.avg_pool2d(t(x), 8).numpy(), rtol=1e-6, atol=1e-6)


def test_l2_pool_with_padding(run_mil) -> None:  # noqa: ANN001
    x = f32(1, 3, 7, 6)
    out, = run_mil(lambda a: mb.l2_pool(x=a, kernel_sizes=[3, 2], strides=[2, 2], pad_type="custom",
                                        pad=[1, 1, 0, 0]), x, op="l2_pool")
    want = torch.sqrt(F.avg_pool2d(t(x) ** 2, (3, 2), (2, 2), padding=(1, 0), count_include_pad=True) * 6).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


# --- recurrent ----------------------------------------------------------------------------------------------------

S, B, IN, H = 6, 3, 4, 5


def _lstm_reference(x, h, c, w_ih, w_hh, bias, peep, clip, reverse):  # noqa: ANN001, ANN202
    """One direction, one time step at a time, in float64 torch: MIL gate order (i, f, o, z), peepholes on c."""
    x, h, c = (torch.from_numpy(a).double() for a in (x, h, c))
    w_ih, w_hh, bias, peep = (torch.from_numpy(a).double() for a in (w_ih, w_hh, bias, peep))
    p_i, p_f, p_o = peep.split(H)
    steps = []
    for xt in (x.flip(0) if reverse else x):
        g_i, g_f, g_o, g_z = (xt @ w_ih.T + h @ w_hh.T + bias).split(H, dim=-1)
        i, f = torch.sigmoid(g_i + c * p_i), torch.sigmoid(g_f + c * p_f)
        c = (f * c + i * torch.tanh(g_z)).clamp(-clip, clip)
        h = torch.sigmoid(g_o + c * p_o) * torch.tanh(c)
        steps.append(h)
    return torch.stack(steps).numpy(), h.numpy(), c.numpy()


@pytest.mark.parametrize("output_sequence", [True, False])
def test_bidirectional_lstm_with_peepholes_and_clip(output_sequence: bool, run_mil) -> None:  # noqa: ANN001
    """Both directions in one loop, each with its own peepholes and initial state."""
    fw = (f32(4 * H, IN), f32(4 * H, H) * 0.6, f32(4 * H), f32(3 * H))
    bw = (f32(4 * H, IN), f32(4 * H, H) * 0.6, f32(4 * H), f32(3 * H))
    x, h0, c0 = f32(S, B, IN), f32(B, 2 * H), f32(B, 2 * H) * 2
    clip = 1.2
    seq, h, c = run_mil(
        lambda x_, h_, c_: mb.lstm(x=x_, initial_h=h_, initial_c=c_, weight_ih=fw[0], weight_hh=fw[1], bias=fw[2],
                                   peephole=fw[3], weight_ih_back=bw[0], weight_hh_back=bw[1], bias_back=bw[2],
                                   peephole_back=bw[3], direction="bidirectional", clip=np.float32(clip),
                                   output_sequence=output_sequence),
        x, h0, c0, op="lstm")
    s_f, h_f, c_f = _lstm_reference(x, h0[:, :H], c0[:, :H], *fw, clip, False)
    s_b, h_b, c_b = _lstm_reference(x, h0[:, H:], c0[:, H:], *bw, clip, True)
    want = np.concatenate([s_f, s_b[::-1]], -1) if output_sequence else np.concatenate([s_f[-1:], s_b[-1:]], -1)
    np.testing.assert_allclose(seq, want, atol=1e-5)
    np.testing.assert_allclose(h, np.concatenate([h_f, h_b], -1), atol=1e-5)
    np.testing.assert_allclose(c, np.concatenate([c_f, c_b], -1), atol=1e-5)
    assert np.abs(c).max() == pytest.approx(clip)  # the clip was reached


def test_gru_core_ml_form_reverse_sequence(run_mil) -> None:  # noqa: ANN001
    """The pre-iOS18 gru (candidate from R_o·(r·h)), reverse, every step: r and z come from one fused product."""
    w_ih, w_hh, bias = f32(3 * H, IN), f32(3 * H, H), f32(3 * H)
    x, h0 = f32(S, B, IN), f32(B, H)
    seq, h = run_mil(lambda x_, h_: mb.gru(x=x_, initial_h=h_, weight_ih=w_ih, weight_hh=w_hh, bias=bias,
                                           direction="reverse", output_sequence=True), x, h0, op="gru")
    (wr, wo, wz), (rr, ro, rz), (br, bo, bz) = (torch.from_numpy(a).double().split(H) for a in (w_ih, w_hh, bias))
    hh, steps = torch.from_numpy(h0).double(), []
    for xt in torch.from_numpy(x).double().flip(0):
        r = torch.sigmoid(xt @ wr.T + hh @ rr.T + br)
        z = torch.sigmoid(xt @ wz.T + hh @ rz.T + bz)
        o = torch.tanh(xt @ wo.T + (r * hh) @ ro.T + bo)
        hh = (1 - z) * o + z * hh
        steps.append(hh)
    np.testing.assert_allclose(seq, torch.stack(steps).numpy(), atol=1e-5)
    np.testing.assert_allclose(h, hh.numpy(), atol=1e-5)


# --- the per-package cache ----------------------------------------------------------------------------------------

W = f32(16, 8)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """x (2, 8) → relu(x·Wᵀ) with W (16 × 8 floats) stored in weight.bin."""
    program_mod.clear_cache()
    return save_program(lambda x: mb.relu(x=mb.linear(x=x, weight=W), name="y"), [np.zeros((2, 8), np.float32)],
                        tmp_path / "p.mlpackage")


def _bump_weight(package: Path) -> None:
    weights = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    sentinel, code, _, offset = struct.unpack_from("<IIQQ", data, 64)
    assert sentinel == 0xDEADBEEF and code == 2  # float32
    (value,) = struct.unpack_from("<f", data, offset)
    struct.pack_into("<f", data, offset, value + 100.0)
    weights.write_bytes(bytes(data))


def test_a_second_program_of_the_same_files_reuses_constants_and_plan(package: Path) -> None:
    first = Program(package)
    x = np.ones((2, 8), np.float32)
    y = first.run({"x": x})["y"]
    second = Program(package)
    assert second.constants() is first.constants()
    assert second.plan() is first.plan()
    np.testing.assert_array_equal(second.run({"x": x})["y"], y)


def test_the_cache_is_keyed_by_content(package: Path, tmp_path: Path) -> None:
    """A copy at another path shares the entry; the same path with one weight changed does not."""
    import shutil

    copy = tmp_path / "copy.mlpackage"
    shutil.copytree(package, copy)
    first = Program(package).constants()
    assert Program(copy).constants() is first
    _bump_weight(copy)
    assert Program(copy).constants() is not first


def test_constants_are_read_only(package: Path) -> None:
    consts = Program(package).constants()
    arrays = [v for v in consts.values() if isinstance(v, np.ndarray) and v.size > 1]
    assert arrays
    with pytest.raises(ValueError, match="read-only"):
        arrays[0][...] = 0


def test_a_changed_weight_file_is_decoded_again(package: Path) -> None:
    x = np.eye(2, 8, dtype=np.float32)
    before = Program(package).run({"x": x})["y"]
    _bump_weight(package)
    after = Program(package).run({"x": x})["y"]
    assert after[0, 0] == pytest.approx(max(W[0, 0] + 100.0, 0.0))
    assert before[0, 0] == pytest.approx(max(W[0, 0], 0.0))


def test_the_cache_is_bounded(package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = save_program(lambda x: mb.relu(x=mb.linear(x=x, weight=W * 2), name="y"), [np.zeros((2, 8), np.float32)],
                         tmp_path / "q.mlpackage")
    monkeypatch.setattr(program_mod, "CACHE_ENTRIES", 1)
    first = Program(package).constants()
    Program(other).constants()  # evicts the first package
    assert Program(package).constants() is not first
    monkeypatch.setattr(program_mod, "CACHE_BYTES", 0)  # nothing fits: every Program decodes its own
    program_mod.clear_cache()
    assert Program(package).constants() is not Program(package).constants()


def test_fp16_weights_are_widened_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An fp16 program's stored weights reach the op as the same float32 array on every run (widened when the plan
    is built, not per prediction), with the fp16 values."""
    import dataclasses

    from mobilize.runtime.coreml_ref.registry import OPS

    program_mod.clear_cache()
    seen: list[np.ndarray] = []
    impl = OPS["linear"]

    def record(x, weight, bias=None):  # noqa: ANN001, ANN202
        seen.append(weight)
        return impl.fn(x=x, weight=weight, bias=bias)

    monkeypatch.setitem(OPS, "linear", dataclasses.replace(impl, fn=record))
    w16 = W.astype(np.float16)
    path = save_program(lambda x: mb.linear(x=mb.cast(x=x, dtype="fp16"), weight=w16, name="y"),
                        [np.zeros((2, 8), np.float32)], tmp_path / "h.mlpackage")
    program = Program(path)
    x = np.ones((2, 8), np.float32)
    first = program.run({"x": x})["y"]
    np.testing.assert_array_equal(program.run({"x": x})["y"], first)
    assert len(seen) == 2 and seen[0] is seen[1]
    assert seen[0].dtype == np.float32
    np.testing.assert_array_equal(seen[0], w16.astype(np.float32))
