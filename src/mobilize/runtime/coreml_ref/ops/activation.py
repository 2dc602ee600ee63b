"""Activation MIL ops."""

from __future__ import annotations

import numpy as np

from mobilize.runtime.coreml_ref.ops._util import as_float, as_int, as_str, floatx
from mobilize.runtime.coreml_ref.ops.elementwise import _erf
from mobilize.runtime.coreml_ref.registry import register

_A = "iOS15.activation."


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = floatx(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


@register("relu", _A + "relu")
def relu(x):
    """max(x, 0)."""
    return np.maximum(x, 0)


@register("relu6", _A + "relu6")
def relu6(x):
    """min(max(x, 0), 6)."""
    return np.minimum(np.maximum(x, 0), 6)


@register("sigmoid", _A + "sigmoid")
def sigmoid(x):
    """1 / (1 + e⁻ˣ), computed without overflow."""
    return _sigmoid(x)


@register("silu", _A + "silu")
def silu(x):
    """x · sigmoid(x)."""
    return floatx(x) * _sigmoid(x)


@register("sigmoid_hard", _A + "sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5):
    """min(max(alpha·x + beta, 0), 1)."""
    return np.clip(as_float(alpha) * floatx(x) + as_float(beta), 0, 1)


@register("gelu", _A + "gelu")
def gelu(x, mode="EXACT"):
    """GELU; ``mode`` EXACT (erf), TANH_APPROXIMATION or SIGMOID_APPROXIMATION (x·sigmoid(1.702x))."""
    x = floatx(x)
    m = as_str(mode)
    if m == "EXACT":
        return 0.5 * x * (1 + _erf(x / np.float32(np.sqrt(2.0))))
    if m == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.float32(np.sqrt(2 / np.pi)) * (x + np.float32(0.044715) * x ** 3)))
    if m == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(np.float32(1.702) * x)
    raise ValueError(f"gelu: unknown mode {m!r}")


@register("leaky_relu", _A + "leaky_relu")
def leaky_relu(x, alpha=0.01):
    """x if x ≥ 0 else alpha·x."""
    x = floatx(x)
    return np.where(x >= 0, x, as_float(alpha) * x)


@register("elu", _A + "elu")
def elu(x, alpha=1.0):
    """x if x > 0 else alpha·(eˣ − 1)."""
    x = floatx(x)
    return np.where(x > 0, x, as_float(alpha) * np.expm1(np.minimum(x, 0)))


@register("prelu", _A + "prelu")
def prelu(x, alpha):
    """x if x ≥ 0 else alpha[c]·x, with one alpha per channel (axis 1 of a rank ≥ 3 input)."""
    x = floatx(x)
    a = np.asarray(alpha, dtype=x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x >= 0, x, a * x)


@register("softplus", _A + "softplus")
def softplus(x):
    """ln(1 + eˣ), computed without overflow."""
    x = floatx(x)
    return np.logaddexp(0, x).astype(x.dtype)


@register("softplus_parametric", _A + "softplus_parametric")
def softplus_parametric(x, alpha, beta):
    """alpha[c] · ln(1 + e^(beta[c]·x)), per channel (axis 1)."""
    x = floatx(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a, b = np.reshape(alpha, shape), np.reshape(beta, shape)
    return a * np.logaddexp(0, b * x)


@register("softsign", _A + "softsign")
def softsign(x):
    """x / (1 + |x|)."""
    x = floatx(x)
    return x / (1 + np.abs(x))


@register("scaled_tanh", _A + "scaled_tanh")
def scaled_tanh(x, alpha=1.0, beta=1.0):
    """alpha · tanh(beta · x)."""
    return as_float(alpha) * np.tanh(as_float(beta) * floatx(x))


@register("linear_activation", _A + "linear_activation")
def linear_activation(x, alpha, beta=0.0):
    """alpha · x + beta."""
    return as_float(alpha) * floatx(x) + as_float(beta)


@register("clamped_relu", _A + "clamped_relu")
def clamped_relu(x, alpha, beta):
    """min(beta, x) if x ≥ 0 else min(beta, alpha·x)."""
    x = floatx(x)
    return np.minimum(as_float(beta), np.where(x >= 0, x, as_float(alpha) * x))


@register("thresholded_relu", _A + "thresholded_relu")
def thresholded_relu(x, alpha=1.0):
    """x if x ≥ alpha else 0."""
    x = floatx(x)
    return np.where(x >= as_float(alpha), x, 0).astype(x.dtype)


@register("softmax", _A + "softmax")
def softmax(x, axis=-1):
    """e^(x − max) / Σ e^(x − max) along ``axis``."""
    x = floatx(x)
    a = as_int(axis)
    e = np.exp(x - np.max(x, axis=a, keepdims=True))
    return e / np.sum(e, axis=a, keepdims=True)
