"""Recurrent MIL ops (lstm, gru, rnn) and control flow (while_loop, cond), each in a saved ``.mlpackage`` built with
coremltools' MIL builder, against PyTorch's nn.LSTM / nn.GRU / nn.RNN on random weights (or, for the Core ML-only
parameters — peepholes, clip, other activations, the pre-iOS18 GRU — against a plain NumPy loop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coremltools.converters.mil import Builder as mb

from mobilize.runtime.coreml_ref.errors import UnsupportedOpsError
from mobilize.runtime.coreml_ref.program import Program

from .conftest import save_program

R = np.random.default_rng(11)
S, B, IN, H = 7, 2, 5, 6  # sequence, batch, input, hidden


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float32)


def _ifzo_to_ifoz(w: np.ndarray) -> np.ndarray:
    """PyTorch's LSTM gate blocks (i, f, g, o) → MIL's (i, f, o, z)."""
    i, f, g, o = np.split(w, 4)
    return np.concatenate([i, f, o, g])


def _rzn_to_roz(w: np.ndarray) -> np.ndarray:
    """PyTorch's GRU gate blocks (r, z, n) → MIL's (r, o, z)."""
    r, z, n = np.split(w, 3)
    return np.concatenate([r, n, z])


def _lstm(bidirectional: bool) -> torch.nn.LSTM:
    torch.manual_seed(3)
    return torch.nn.LSTM(IN, H, bidirectional=bidirectional).eval()


@pytest.mark.parametrize("output_sequence", [True, False])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_lstm_matches_torch(direction: str, output_sequence: bool, run_mil) -> None:  # noqa: ANN001
    m = _lstm(False)
    w_ih, w_hh = _ifzo_to_ifoz(_np(m.weight_ih_l0)), _ifzo_to_ifoz(_np(m.weight_hh_l0))
    bias = _ifzo_to_ifoz(_np(m.bias_ih_l0 + m.bias_hh_l0))
    x, h0, c0 = f32(S, B, IN), f32(B, H), f32(B, H)
    seq, h, c = run_mil(lambda x_, h_, c_: mb.lstm(x=x_, initial_h=h_, initial_c=c_, weight_ih=w_ih, weight_hh=w_hh,
                                                   bias=bias, direction=direction,
                                                   output_sequence=output_sequence),
                        x, h0, c0, op="lstm")
    xt = torch.from_numpy(x.copy() if direction == "forward" else x[::-1].copy())  # "reverse" reads x from its end
    with torch.no_grad():
        want, (hn, cn) = m(xt, (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]))
    want = _np(want) if output_sequence else _np(want)[-1:]
    np.testing.assert_allclose(seq, want, atol=2e-6)
    np.testing.assert_allclose(h, _np(hn)[0], atol=2e-6)
    np.testing.assert_allclose(c, _np(cn)[0], atol=2e-6)


@pytest.mark.parametrize("output_sequence", [True, False])
def test_bidirectional_lstm_matches_torch(output_sequence: bool, run_mil) -> None:  # noqa: ANN001
    m = _lstm(True)
    w = {k: _ifzo_to_ifoz(_np(v)) for k, v in m.named_parameters()}
    x, h0, c0 = f32(S, B, IN), f32(2, B, H), f32(2, B, H)
    seq, h, c = run_mil(
        lambda x_, h_, c_: mb.lstm(x=x_, initial_h=h_, initial_c=c_, weight_ih=w["weight_ih_l0"],
                                   weight_hh=w["weight_hh_l0"], bias=w["bias_ih_l0"] + w["bias_hh_l0"],
                                   weight_ih_back=w["weight_ih_l0_reverse"], weight_hh_back=w["weight_hh_l0_reverse"],
                                   bias_back=w["bias_ih_l0_reverse"] + w["bias_hh_l0_reverse"],
                                   direction="bidirectional", output_sequence=output_sequence),
        x, np.concatenate([h0[0], h0[1]], -1), np.concatenate([c0[0], c0[1]], -1), op="lstm")
    with torch.no_grad():
        want, (hn, cn) = m(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    want = _np(want)
    if not output_sequence:  # the last step forward, the first step (its last) backward
        want = np.concatenate([want[-1:, :, :H], want[:1, :, H:]], -1)
    np.testing.assert_allclose(seq, want, atol=2e-6)
    np.testing.assert_allclose(h, np.concatenate(_np(hn), -1), atol=2e-6)
    np.testing.assert_allclose(c, np.concatenate(_np(cn), -1), atol=2e-6)


def _act(name: str, v: np.ndarray) -> np.ndarray:
    return {"sigmoid": lambda a: 1 / (1 + np.exp(-a)), "tanh": np.tanh,
            "hard_sigmoid": lambda a: np.clip(0.2 * a + 0.5, 0, 1), "relu": lambda a: np.maximum(a, 0),
            "linear": lambda a: a}[name](v)


def test_lstm_peephole_clip_and_activations(run_mil) -> None:  # noqa: ANN001
    """Core ML-only parameters, against a per-step NumPy loop written from the MIL spec."""
    w_ih, w_hh, bias, peep = f32(4 * H, IN), f32(4 * H, H) * 0.5, f32(4 * H), f32(3 * H)
    x, h0, c0 = f32(S, B, IN), f32(B, H), f32(B, H)
    acts, clip = ("hard_sigmoid", "relu", "linear"), 1.5
    seq, h, c = run_mil(lambda x_: mb.lstm(x=x_, initial_h=h0, initial_c=c0, weight_ih=w_ih, weight_hh=w_hh, bias=bias,
                                           peephole=peep, output_sequence=True, recurrent_activation=acts[0],
                                           cell_activation=acts[1], activation=acts[2], clip=np.float32(clip)),
                        x, op="lstm")
    hh, cc, steps = h0.astype(np.float64), c0.astype(np.float64), []
    p_i, p_f, p_o = np.split(peep, 3)
    for t in range(S):
        g = x[t] @ w_ih.T + hh @ w_hh.T + bias
        gi, gf, go, gz = np.split(g, 4, axis=-1)
        i, f, z = _act(acts[0], gi + cc * p_i), _act(acts[0], gf + cc * p_f), _act(acts[1], gz)
        cc = np.clip(f * cc + i * z, -clip, clip)
        hh = _act(acts[0], go + cc * p_o) * _act(acts[2], cc)
        steps.append(hh)
    np.testing.assert_allclose(seq, np.stack(steps), atol=1e-5)
    np.testing.assert_allclose(h, hh, atol=1e-5)
    np.testing.assert_allclose(c, cc, atol=1e-5)
    assert np.abs(c).max() == pytest.approx(clip)  # the clip was reached, so it was tested


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_gru_reset_after_matches_torch(direction: str, run_mil) -> None:  # noqa: ANN001
    """iOS18's gru with reset_after and input_bias is PyTorch's GRU."""
    torch.manual_seed(4)
    m = torch.nn.GRU(IN, H).eval()
    w_ih, w_hh = _rzn_to_roz(_np(m.weight_ih_l0)), _rzn_to_roz(_np(m.weight_hh_l0))
    b_ih, b_hh = _rzn_to_roz(_np(m.bias_ih_l0)), _rzn_to_roz(_np(m.bias_hh_l0))
    x, h0 = f32(S, B, IN), f32(B, H)
    seq, h = run_mil(lambda x_, h_: mb.gru(x=x_, initial_h=h_, weight_ih=w_ih, weight_hh=w_hh, bias=b_hh,
                                           input_bias=b_ih, reset_after=True, direction=direction,
                                           output_sequence=True),
                     x, h0, op="gru", target="iOS18")
    xt = torch.from_numpy(x.copy() if direction == "forward" else x[::-1].copy())
    with torch.no_grad():
        want, hn = m(xt, torch.from_numpy(h0)[None])
    np.testing.assert_allclose(seq, _np(want), atol=2e-6)
    np.testing.assert_allclose(h, _np(hn)[0], atol=2e-6)


def test_gru_core_ml_form(run_mil) -> None:  # noqa: ANN001
    """The pre-iOS18 gru: the candidate state is activation(W_o·x + R_o·(r·h) + b_o) — not PyTorch's form."""
    w_ih, w_hh, bias = f32(3 * H, IN), f32(3 * H, H), f32(3 * H)
    x, h0 = f32(S, B, IN), f32(B, H)
    seq, h = run_mil(lambda x_, h_: mb.gru(x=x_, initial_h=h_, weight_ih=w_ih, weight_hh=w_hh, bias=bias,
                                           recurrent_activation="tanh", activation="sigmoid", output_sequence=False),
                     x, h0, op="gru")
    (wr, wo, wz), (rr, ro, rz), (br, bo, bz) = np.split(w_ih, 3), np.split(w_hh, 3), np.split(bias, 3)
    hh = h0.astype(np.float64)
    for t in range(S):
        z = np.tanh(x[t] @ wz.T + hh @ rz.T + bz)
        r = np.tanh(x[t] @ wr.T + hh @ rr.T + br)
        o = _act("sigmoid", x[t] @ wo.T + (r * hh) @ ro.T + bo)
        hh = (1 - z) * o + z * hh
    np.testing.assert_allclose(seq, hh[None], atol=1e-5)
    np.testing.assert_allclose(h, hh, atol=1e-5)


@pytest.mark.parametrize("nonlinearity,direction", [("tanh", "forward"), ("relu", "reverse")])
def test_rnn_matches_torch(nonlinearity: str, direction: str, run_mil) -> None:  # noqa: ANN001
    torch.manual_seed(5)
    m = torch.nn.RNN(IN, H, nonlinearity=nonlinearity).eval()
    x, h0 = f32(S, B, IN), f32(B, H)
    seq, h = run_mil(lambda x_, h_: mb.rnn(x=x_, initial_h=h_, weight_ih=_np(m.weight_ih_l0),
                                           weight_hh=_np(m.weight_hh_l0), bias=_np(m.bias_ih_l0 + m.bias_hh_l0),
                                           direction=direction, output_sequence=True, activation=nonlinearity),
                     x, h0, op="rnn")
    xt = torch.from_numpy(x.copy() if direction == "forward" else x[::-1].copy())
    with torch.no_grad():
        want, hn = m(xt, torch.from_numpy(h0)[None])
    np.testing.assert_allclose(seq, _np(want), atol=2e-6)
    np.testing.assert_allclose(h, _np(hn)[0], atol=2e-6)


def test_fp16_lstm_rounds_its_outputs(run_mil) -> None:  # noqa: ANN001
    """An iOS17 fp16 lstm: outputs are float16 values within half precision of the fp32 result."""
    m = _lstm(False)
    w_ih, w_hh = (_ifzo_to_ifoz(_np(w)).astype(np.float16) for w in (m.weight_ih_l0, m.weight_hh_l0))
    x = f32(S, B, IN)
    zeros = np.zeros((B, H), np.float16)

    def build(x_):  # noqa: ANN001, ANN202
        seq, _, _ = mb.lstm(x=mb.cast(x=x_, dtype="fp16"), initial_h=zeros, initial_c=zeros, weight_ih=w_ih,
                            weight_hh=w_hh, output_sequence=True)
        return mb.cast(x=seq, dtype="fp32")

    out, = run_mil(build, x, op="lstm", target="iOS17")
    with torch.no_grad():
        m.bias_ih_l0.zero_(), m.bias_hh_l0.zero_()
        want = _np(m(torch.from_numpy(x.astype(np.float16).astype(np.float32)))[0])
    assert np.array_equal(out, out.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(out, want, atol=2e-3)


# --- control flow -------------------------------------------------------------------------------------------------

def test_while_loop_runs_its_body_until_cond_fails(run_mil) -> None:  # noqa: ANN001
    """acc ← acc + i·x for i = 0..4; the body reads ``x`` from the enclosing block."""
    def build(x):  # noqa: ANN001, ANN202
        def cond(i, acc):  # noqa: ANN001, ANN202
            return mb.less(x=i, y=np.int32(5))

        def body(i, acc):  # noqa: ANN001, ANN202
            return mb.add(x=i, y=np.int32(1)), mb.add(x=acc, y=mb.mul(x=x, y=mb.cast(x=i, dtype="fp32")))

        i, acc = mb.while_loop(_cond=cond, _body=body, loop_vars=(np.int32(0), x))
        return i, acc

    x = f32(3)
    i, acc = run_mil(build, x, op="while_loop")
    assert int(i) == 5
    np.testing.assert_allclose(acc, 11 * x, rtol=1e-6)


def test_cond_picks_a_branch(tmp_path) -> None:  # noqa: ANN001
    def build(x):  # noqa: ANN001, ANN202
        return mb.cond(pred=mb.greater(x=mb.reduce_sum(x=x), y=np.float32(0)),
                       _true_fn=lambda: mb.mul(x=x, y=np.float32(2)), _false_fn=lambda: mb.sub(x=x, y=np.float32(1)))

    program = Program(save_program(build, [np.zeros(3, np.float32)], tmp_path / "c.mlpackage"))
    assert "cond" in program.op_types()
    pos, neg = np.abs(f32(3)), -np.abs(f32(3))
    np.testing.assert_allclose(next(iter(program.run({program.input_names[0]: pos}).values())), 2 * pos)
    np.testing.assert_allclose(next(iter(program.run({program.input_names[0]: neg}).values())), neg - 1)


def test_ops_inside_loop_bodies_are_checked_at_load(tmp_path) -> None:  # noqa: ANN001
    """An op the interpreter lacks inside a loop body makes the program unsupported, listed by name."""
    def build(x):  # noqa: ANN001, ANN202
        def body(i, v):  # noqa: ANN001, ANN202
            return mb.add(x=i, y=np.int32(1)), mb.depth_to_space(x=mb.space_to_depth(x=v, block_size=2),
                                                                 block_size=2)

        return mb.while_loop(_cond=lambda i, v: mb.less(x=i, y=np.int32(2)), _body=body,
                             loop_vars=(np.int32(0), x))[1]

    program = Program(save_program(build, [np.zeros((1, 1, 2, 2), np.float32)], tmp_path / "u.mlpackage"))
    assert {"while_loop", "space_to_depth", "depth_to_space"} <= set(program.op_types())
    with pytest.raises(UnsupportedOpsError) as ei:
        program.check_supported()
    assert ei.value.ops == ["depth_to_space", "space_to_depth"]


def test_a_loop_that_never_ends_is_an_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from mobilize.runtime.coreml_ref.errors import ExecutionError
    from mobilize.runtime.coreml_ref.ops import control_flow

    def build(x):  # noqa: ANN001, ANN202
        return mb.while_loop(_cond=lambda v: mb.greater(x=mb.reduce_sum(x=v), y=np.float32(-1e30)),
                             _body=lambda v: mb.add(x=v, y=np.float32(1)), loop_vars=(x,))

    program = Program(save_program(build, [np.zeros(2, np.float32)], tmp_path / "l.mlpackage"))
    monkeypatch.setattr(control_flow, "MAX_ITERATIONS", 50)
    with pytest.raises(ExecutionError, match="while_loop.*did not end after 50"):
        program.run({program.input_names[0]: np.zeros(2, np.float32)})
