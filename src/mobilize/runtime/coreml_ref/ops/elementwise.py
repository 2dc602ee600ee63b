"""Elementwise binary and unary MIL ops. Binary ops broadcast like NumPy, which is what MIL specifies."""

from __future__ import annotations

import numpy as np

from mobilize.runtime.coreml_ref.ops._util import MIL_DTYPES, as_float, as_str, floatx
from mobilize.runtime.coreml_ref.registry import register

_B = "iOS15.elementwise_binary."
_U = "iOS15.elementwise_unary."


# --- binary -----------------------------------------------------------------------------------------------------

@register("add", _B + "add")
def add(x, y):
    """x + y."""
    return np.add(x, y)


@register("sub", _B + "sub")
def sub(x, y):
    """x - y."""
    return np.subtract(x, y)


@register("mul", _B + "mul")
def mul(x, y):
    """x * y."""
    return np.multiply(x, y)


@register("real_div", _B + "real_div")
def real_div(x, y):
    """x / y (true division)."""
    return np.true_divide(floatx(x), y)


@register("floor_div", _B + "floor_div")
def floor_div(x, y):
    """floor(x / y)."""
    return np.floor_divide(x, y)


@register("mod", _B + "mod")
def mod(x, y):
    """x mod y (the result has the sign of y, as Python's ``%``)."""
    return np.mod(x, y)


@register("pow", _B + "pow")
def pow_(x, y):
    """x ** y."""
    return np.power(floatx(x), y) if np.issubdtype(np.asarray(x).dtype, np.floating) else np.power(x, y)


@register("maximum", _B + "maximum")
def maximum(x, y):
    """max(x, y)."""
    return np.maximum(x, y)


@register("minimum", _B + "minimum")
def minimum(x, y):
    """min(x, y)."""
    return np.minimum(x, y)


@register("equal", _B + "equal")
def equal(x, y):
    """x == y (bool)."""
    return np.equal(x, y)


@register("not_equal", _B + "not_equal")
def not_equal(x, y):
    """x != y (bool)."""
    return np.not_equal(x, y)


@register("greater", _B + "greater")
def greater(x, y):
    """x > y (bool)."""
    return np.greater(x, y)


@register("greater_equal", _B + "greater_equal")
def greater_equal(x, y):
    """x >= y (bool)."""
    return np.greater_equal(x, y)


@register("less", _B + "less")
def less(x, y):
    """x < y (bool)."""
    return np.less(x, y)


@register("less_equal", _B + "less_equal")
def less_equal(x, y):
    """x <= y (bool)."""
    return np.less_equal(x, y)


@register("logical_and", _B + "logical_and")
def logical_and(x, y):
    """x AND y (bool)."""
    return np.logical_and(x, y)


@register("logical_or", _B + "logical_or")
def logical_or(x, y):
    """x OR y (bool)."""
    return np.logical_or(x, y)


@register("logical_xor", _B + "logical_xor")
def logical_xor(x, y):
    """x XOR y (bool)."""
    return np.logical_xor(x, y)


# --- unary ------------------------------------------------------------------------------------------------------

@register("logical_not", _U + "logical_not")
def logical_not(x):
    """NOT x (bool)."""
    return np.logical_not(x)


@register("abs", _U + "abs")
def abs_(x):
    """|x|."""
    return np.abs(x)


@register("sign", _U + "sign")
def sign(x):
    """-1, 0 or 1."""
    return np.sign(x)


@register("ceil", _U + "ceil")
def ceil(x):
    """Round up."""
    return np.ceil(x)


@register("floor", _U + "floor")
def floor(x):
    """Round down."""
    return np.floor(x)


@register("round", _U + "round")
def round_(x):
    """Round to the nearest integer (halves to even, as coremltools' own value inference)."""
    return np.round(x)


@register("square", _U + "square")
def square(x):
    """x²."""
    return np.square(x)


@register("sqrt", _U + "sqrt")
def sqrt(x):
    """√x."""
    return np.sqrt(floatx(x))


@register("rsqrt", _U + "rsqrt")
def rsqrt(x, epsilon=1e-12):
    """1 / √(x + epsilon)."""
    return 1.0 / np.sqrt(floatx(x) + np.float32(as_float(epsilon)))


@register("inverse", _U + "inverse")
def inverse(x, epsilon=1e-4):
    """1 / (x + epsilon)."""
    return 1.0 / (floatx(x) + np.float32(as_float(epsilon)))


@register("exp", _U + "exp")
def exp(x):
    """eˣ."""
    return np.exp(floatx(x))


@register("exp2", _U + "exp2")
def exp2(x):
    """2ˣ."""
    return np.exp2(floatx(x))


@register("log", _U + "log")
def log(x, epsilon=1e-45):
    """ln(x + epsilon)."""
    return np.log(floatx(x) + np.float32(as_float(epsilon)))


@register("erf", _U + "erf")
def erf(x):
    """The Gauss error function."""
    return _erf(floatx(x))


def _erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf as sp_erf
    except ImportError:  # scikit-learn (a dependency) brings scipy; this keeps the op alive without it
        import math

        return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)
    return sp_erf(x).astype(x.dtype)


@register("sin", _U + "sin")
def sin(x):
    """sin x."""
    return np.sin(floatx(x))


@register("cos", _U + "cos")
def cos(x):
    """cos x."""
    return np.cos(floatx(x))


@register("tan", _U + "tan")
def tan(x):
    """tan x."""
    return np.tan(floatx(x))


@register("asin", _U + "asin")
def asin(x):
    """arcsin x."""
    return np.arcsin(floatx(x))


@register("acos", _U + "acos")
def acos(x):
    """arccos x."""
    return np.arccos(floatx(x))


@register("atan", _U + "atan")
def atan(x):
    """arctan x."""
    return np.arctan(floatx(x))


@register("sinh", _U + "sinh")
def sinh(x):
    """sinh x."""
    return np.sinh(floatx(x))


@register("cosh", _U + "cosh")
def cosh(x):
    """cosh x."""
    return np.cosh(floatx(x))


@register("tanh", _U + "tanh")
def tanh(x):
    """tanh x."""
    return np.tanh(floatx(x))


@register("atanh", _U + "atanh")
def atanh(x):
    """artanh x."""
    return np.arctanh(floatx(x))


@register("clip", _U + "clip")
def clip(x, alpha, beta):
    """min(max(x, alpha), beta)."""
    return np.minimum(np.maximum(x, alpha), beta)


@register("threshold", _U + "threshold")
def threshold(x, alpha):
    """max(x, alpha)."""
    return np.maximum(x, alpha)


@register("cast", _U + "cast")
def cast(x, dtype):
    """Convert to ``dtype`` ("fp16", "fp32", "int32", "bool", ...); float → int truncates toward zero."""
    return np.asarray(x).astype(MIL_DTYPES[as_str(dtype)])
