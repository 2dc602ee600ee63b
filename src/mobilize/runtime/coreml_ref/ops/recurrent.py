"""Recurrent MIL ops: ``lstm``, ``gru``, ``rnn``.

Layouts (MIL, not PyTorch): ``x`` is ``(seq, batch, input)``; LSTM gate blocks are stacked ``[i, f, o, z]``
(input, forget, output, cell), GRU blocks ``[r, o, z]`` (reset, new/output, update); an LSTM bias is input-hidden +
hidden-hidden already summed. A ``reverse`` op walks the sequence from its end and returns its outputs in that
processing order; a ``bidirectional`` LSTM returns the backward half aligned with the input time steps, and its
states as ``[forward | backward]`` along the last axis. The activation functions use their standard constants
(``hard_sigmoid`` = clip(0.2·x + 0.5, 0, 1), ``scaled_tanh`` = tanh). This follows coremltools' own NumPy
references for these ops (coremltools/converters/mil/mil/ops/tests/iOS14/test_recurrent.py).

The time steps compute in float32; the outputs are rounded to the program's declared dtype like every op's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mobilize.runtime.coreml_ref.ops._util import as_bool, as_float, as_str, floatx
from mobilize.runtime.coreml_ref.registry import register

_R = "iOS15.recurrent."


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(np.float32(0.2) * x + np.float32(0.5), 0, 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid, "tanh": np.tanh, "scaled_tanh": np.tanh, "relu": lambda x: np.maximum(x, 0),
    "linear": lambda x: x, "hard_sigmoid": _hard_sigmoid, "sigmoid_hard": _hard_sigmoid,
}


def _act(name) -> Callable[[np.ndarray], np.ndarray]:  # noqa: ANN001
    key = as_str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown recurrent activation {key!r} (known: {', '.join(sorted(_ACTIVATIONS))})")
    return _ACTIVATIONS[key]


def _direction(direction, allowed: tuple[str, ...]) -> str:  # noqa: ANN001
    d = as_str(direction)
    if d not in allowed:
        raise ValueError(f"direction {d!r} is not one of {', '.join(allowed)}")
    return d


def _vec(v, n: int) -> np.ndarray:  # noqa: ANN001
    """An optional per-gate vector (None → zeros)."""
    return np.zeros(n, np.float32) if v is None else floatx(v).reshape(n)


def _sequence(steps: list[np.ndarray], output_sequence) -> np.ndarray:  # noqa: ANN001
    return np.stack(steps) if as_bool(output_sequence) else steps[-1][None]


def _lstm_pass(x: np.ndarray, h: np.ndarray, c: np.ndarray, w_ih, w_hh, bias, peephole, reverse: bool,
               acts: tuple[Callable, Callable, Callable], clip: float | None) -> tuple[list[np.ndarray], ...]:
    """One direction; returns the per-step hidden states in processing order and the final (h, c)."""
    w_ih, w_hh = floatx(w_ih), floatx(w_hh)
    hidden = w_hh.shape[1]
    b = _vec(bias, 4 * hidden)
    p_i, p_f, p_o = np.split(_vec(peephole, 3 * hidden), 3)
    rec, cell, out = acts
    xs = x[::-1] if reverse else x
    projected = np.matmul(xs, w_ih.T) + b  # (seq, batch, 4H)
    steps = []
    for xw in projected:
        g_i, g_f, g_o, g_z = np.split(xw + np.matmul(h, w_hh.T), 4, axis=-1)
        i, f, z = rec(g_i + c * p_i), rec(g_f + c * p_f), cell(g_z)
        c = f * c + i * z
        if clip is not None:
            c = np.clip(c, -clip, clip)
        h = rec(g_o + c * p_o) * out(c)
        steps.append(h)
    return steps, h, c


@register("lstm", _R + "lstm")
def lstm(x, initial_h, initial_c, weight_ih, weight_hh, bias=None, peephole=None, weight_ih_back=None,
         weight_hh_back=None, bias_back=None, peephole_back=None, direction="forward", output_sequence=False,
         recurrent_activation="sigmoid", cell_activation="tanh", activation="tanh", clip=None):
    """LSTM over x (seq, batch, input): c = f·c + i·z, h = o·activation(c), with peepholes on c and an optional
    clip of c to ±clip; returns (outputs, final h, final c) — see the module docstring for layouts and directions.
    """
    x = floatx(x)
    d = _direction(direction, ("forward", "reverse", "bidirectional"))
    acts = (_act(recurrent_activation), _act(cell_activation), _act(activation))
    lim = None if clip is None else as_float(clip)
    h0, c0 = floatx(initial_h), floatx(initial_c)
    if d != "bidirectional":
        steps, h, c = _lstm_pass(x, h0, c0, weight_ih, weight_hh, bias, peephole, d == "reverse", acts, lim)
        return _sequence(steps, output_sequence), h, c
    hidden = floatx(weight_hh).shape[1]
    fw, h_f, c_f = _lstm_pass(x, h0[:, :hidden], c0[:, :hidden], weight_ih, weight_hh, bias, peephole, False,
                              acts, lim)
    bw, h_b, c_b = _lstm_pass(x, h0[:, hidden:], c0[:, hidden:], weight_ih_back, weight_hh_back, bias_back,
                              peephole_back, True, acts, lim)
    steps = [np.concatenate([f, b], axis=-1) for f, b in zip(fw, bw[::-1])]  # backward half in input time order
    seq = np.stack(steps) if as_bool(output_sequence) else np.concatenate([fw[-1], bw[-1]], axis=-1)[None]
    return seq, np.concatenate([h_f, h_b], axis=-1), np.concatenate([c_f, c_b], axis=-1)


@register("gru", _R + "gru")
def gru(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        recurrent_activation="sigmoid", activation="tanh", reset_after=False, input_bias=None):
    """GRU over x (seq, batch, input): r, z = recurrent_activation(W·x + input_bias + R·h + bias) and
    o = activation(W_o·x + input_bias_o + R_o·(r·h) + bias_o) — or, with iOS18's ``reset_after``,
    activation(W_o·x + input_bias_o + r·(R_o·h + bias_o)), PyTorch's form; h = (1 − z)·o + z·h.
    Returns (outputs, final h)."""
    x, w_ih, w_hh = floatx(x), floatx(weight_ih), floatx(weight_hh)
    d = _direction(direction, ("forward", "reverse"))
    rec, act = _act(recurrent_activation), _act(activation)
    hidden = w_hh.shape[1]
    b_h = np.split(_vec(bias, 3 * hidden), 3)
    after = reset_after is not None and as_bool(reset_after)
    wr_h, wo_h, wz_h = np.split(w_hh, 3)
    xs = x[::-1] if d == "reverse" else x
    projected = np.matmul(xs, w_ih.T) + _vec(input_bias, 3 * hidden)  # (seq, batch, 3H)
    h = floatx(initial_h)
    steps = []
    for xw in projected:
        x_r, x_o, x_z = np.split(xw, 3, axis=-1)
        r = rec(x_r + np.matmul(h, wr_h.T) + b_h[0])
        z = rec(x_z + np.matmul(h, wz_h.T) + b_h[2])
        hidden_o = r * (np.matmul(h, wo_h.T) + b_h[1]) if after else np.matmul(r * h, wo_h.T) + b_h[1]
        o = act(x_o + hidden_o)
        h = (1 - z) * o + z * h
        steps.append(h)
    return _sequence(steps, output_sequence), h


@register("rnn", _R + "rnn")
def rnn(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        activation="tanh"):
    """Simple RNN over x (seq, batch, input): h = activation(W_ih·x + W_hh·h + bias); returns (outputs, final h)."""
    x, w_ih, w_hh = floatx(x), floatx(weight_ih), floatx(weight_hh)
    d = _direction(direction, ("forward", "reverse"))
    act = _act(activation)
    xs = x[::-1] if d == "reverse" else x
    projected = np.matmul(xs, w_ih.T) + _vec(bias, w_hh.shape[0])
    h = floatx(initial_h)
    steps = []
    for xw in projected:
        h = act(xw + np.matmul(h, w_hh.T))
        steps.append(h)
    return _sequence(steps, output_sequence), h
