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
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


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


def _lstm_run(x: np.ndarray, h0: np.ndarray, c0: np.ndarray, dirs: list[tuple], reverse: list[bool],
              acts: tuple[Callable, Callable, Callable],
              clip: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every direction of an LSTM in one loop over the time steps.

    ``dirs`` holds (weight_ih, weight_hh, bias, peephole) per direction, ``h0``/``c0`` are (directions, batch,
    hidden). The input projections of all time steps are one matrix product before the loop; each step is one
    batched (directions × batch × hidden) · (hidden × 4·hidden) product and the gate arithmetic on all directions
    at once. Returns the hidden states (seq, directions, batch, hidden) in each direction's processing order and
    the final h and c (directions, batch, hidden).
    """
    hidden = floatx(dirs[0][1]).shape[1]
    projected = np.stack([np.matmul(x[::-1] if rev else x, floatx(w_ih).T) + _vec(bias, 4 * hidden)
                          for (w_ih, _, bias, _), rev in zip(dirs, reverse)], axis=1)  # (seq, D, batch, 4H)
    w_hh_t = np.ascontiguousarray(np.stack([floatx(w_hh).T for _, w_hh, _, _ in dirs]))  # (D, H, 4H)
    peep = [None if p is None else _vec(p, 3 * hidden) for *_, p in dirs]
    if all(p is None or not p.any() for p in peep):  # no peepholes: the i and f gates are one activation call
        p_i = p_f = p_o = None
    else:
        p_i, p_f, p_o = (np.stack([np.zeros(3 * hidden, np.float32) if p is None else p for p in peep])
                         [:, None, j * hidden:(j + 1) * hidden] for j in range(3))
    rec, cell, out = acts
    h, c = h0, c0
    steps = np.empty(projected.shape[:-1] + (hidden,), projected.dtype)
    for t, xw in enumerate(projected):
        g = xw + np.matmul(h, w_hh_t)
        if p_i is None:
            i_f = rec(g[..., :2 * hidden])
            i, f = i_f[..., :hidden], i_f[..., hidden:]
        else:
            i, f = rec(g[..., :hidden] + c * p_i), rec(g[..., hidden:2 * hidden] + c * p_f)
        c = f * c + i * cell(g[..., 3 * hidden:])
        if clip is not None:
            c = np.clip(c, -clip, clip)
        g_o = g[..., 2 * hidden:3 * hidden]
        h = rec(g_o if p_o is None else g_o + c * p_o) * out(c)
        steps[t] = h
    return steps, h, c


@register("lstm", _R + "lstm")
def lstm(x, initial_h, initial_c, weight_ih, weight_hh, bias=None, peephole=None, weight_ih_back=None,
         weight_hh_back=None, bias_back=None, peephole_back=None, direction="forward", output_sequence=False,
         recurrent_activation="sigmoid", cell_activation="tanh", activation="tanh", clip=None):
    """LSTM over x (seq, batch, input): c = f·c + i·z, h = o·activation(c), with peepholes on c and an optional
    clip of c to ±clip; returns (outputs, final h, final c) — see the module docstring for layouts and directions.
    A bidirectional LSTM runs both directions in the same time-step loop.
    """
    x = floatx(x)
    d = _direction(direction, ("forward", "reverse", "bidirectional"))
    acts = (_act(recurrent_activation), _act(cell_activation), _act(activation))
    lim = None if clip is None else as_float(clip)
    h0, c0 = floatx(initial_h), floatx(initial_c)
    fw = (weight_ih, weight_hh, bias, peephole)
    if d != "bidirectional":
        steps, h, c = _lstm_run(x, h0[None], c0[None], [fw], [d == "reverse"], acts, lim)
        return (steps[:, 0] if as_bool(output_sequence) else steps[-1:, 0]), h[0], c[0]
    hidden = floatx(weight_hh).shape[1]
    h0s = np.stack([h0[:, :hidden], h0[:, hidden:]])
    c0s = np.stack([c0[:, :hidden], c0[:, hidden:]])
    bw = (weight_ih_back, weight_hh_back, bias_back, peephole_back)
    steps, h, c = _lstm_run(x, h0s, c0s, [fw, bw], [False, True], acts, lim)
    if as_bool(output_sequence):  # the backward half in input time order
        seq = np.concatenate([steps[:, 0], steps[::-1, 1]], axis=-1)
    else:
        seq = np.concatenate([steps[-1, 0], steps[-1, 1]], axis=-1)[None]
    return seq, np.concatenate([h[0], h[1]], axis=-1), np.concatenate([c[0], c[1]], axis=-1)


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
    w_rz_t = np.ascontiguousarray(np.concatenate([wr_h, wz_h]).T)  # r and z from one product per step
    b_rz = np.concatenate([b_h[0], b_h[2]])
    wo_t = np.ascontiguousarray(wo_h.T)
    xs = x[::-1] if d == "reverse" else x
    projected = np.matmul(xs, w_ih.T) + _vec(input_bias, 3 * hidden)  # (seq, batch, 3H)
    x_rz = np.concatenate([projected[..., :hidden], projected[..., 2 * hidden:]], axis=-1)
    x_o = projected[..., hidden:2 * hidden]
    h = floatx(initial_h)
    steps = np.empty(projected.shape[:-1] + (hidden,), projected.dtype)
    for t in range(len(projected)):
        rz = rec(x_rz[t] + np.matmul(h, w_rz_t) + b_rz)
        r, z = rz[..., :hidden], rz[..., hidden:]
        hidden_o = r * (np.matmul(h, wo_t) + b_h[1]) if after else np.matmul(r * h, wo_t) + b_h[1]
        o = act(x_o[t] + hidden_o)
        h = (1 - z) * o + z * h
        steps[t] = h
    return (steps if as_bool(output_sequence) else steps[-1:]), h


@register("rnn", _R + "rnn")
def rnn(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        activation="tanh"):
    """Simple RNN over x (seq, batch, input): h = activation(W_ih·x + W_hh·h + bias); returns (outputs, final h)."""
    x, w_ih, w_hh = floatx(x), floatx(weight_ih), floatx(weight_hh)
    d = _direction(direction, ("forward", "reverse"))
    act = _act(activation)
    xs = x[::-1] if d == "reverse" else x
    projected = np.matmul(xs, w_ih.T) + _vec(bias, w_hh.shape[0])
    w_hh_t = np.ascontiguousarray(w_hh.T)
    h = floatx(initial_h)
    steps = np.empty(projected.shape[:-1] + (w_hh.shape[0],), projected.dtype)
    for t, xw in enumerate(projected):
        h = act(xw + np.matmul(h, w_hh_t))
        steps[t] = h
    return (steps if as_bool(output_sequence) else steps[-1:]), h
