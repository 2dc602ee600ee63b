"""Reduction MIL ops: ``axes`` None reduces every axis; ``keep_dims`` keeps reduced axes as size 1."""

from __future__ import annotations

import numpy as np

from mobilize.runtime.coreml_ref.ops._util import MIL_DTYPES, as_bool, as_int, as_str, floatx, norm_axes
from mobilize.runtime.coreml_ref.registry import register

_R = "iOS15.reduction."


def _reduce(fn, x, axes, keep_dims):
    x = np.asarray(x)
    return fn(x, axis=norm_axes(axes, x.ndim), keepdims=as_bool(keep_dims))


@register("reduce_sum", _R + "reduce_sum")
def reduce_sum(x, axes=None, keep_dims=False):
    """Σx."""
    return _reduce(np.sum, x, axes, keep_dims)


@register("reduce_mean", _R + "reduce_mean")
def reduce_mean(x, axes=None, keep_dims=False):
    """Mean of x."""
    return _reduce(np.mean, floatx(x), axes, keep_dims)


@register("reduce_prod", _R + "reduce_prod")
def reduce_prod(x, axes=None, keep_dims=False):
    """Πx."""
    return _reduce(np.prod, x, axes, keep_dims)


@register("reduce_max", _R + "reduce_max")
def reduce_max(x, axes=None, keep_dims=False):
    """max x."""
    return _reduce(np.max, x, axes, keep_dims)


@register("reduce_min", _R + "reduce_min")
def reduce_min(x, axes=None, keep_dims=False):
    """min x."""
    return _reduce(np.min, x, axes, keep_dims)


@register("reduce_sum_square", _R + "reduce_sum_square")
def reduce_sum_square(x, axes=None, keep_dims=False):
    """Σx²."""
    return _reduce(np.sum, np.square(x), axes, keep_dims)


@register("reduce_l1_norm", _R + "reduce_l1_norm")
def reduce_l1_norm(x, axes=None, keep_dims=False):
    """Σ|x|."""
    return _reduce(np.sum, np.abs(x), axes, keep_dims)


@register("reduce_l2_norm", _R + "reduce_l2_norm")
def reduce_l2_norm(x, axes=None, keep_dims=False):
    """√(Σx²)."""
    return np.sqrt(_reduce(np.sum, np.square(floatx(x)), axes, keep_dims))


@register("reduce_log_sum", _R + "reduce_log_sum")
def reduce_log_sum(x, axes=None, keep_dims=False):
    """ln(Σx)."""
    return np.log(_reduce(np.sum, floatx(x), axes, keep_dims))


@register("reduce_log_sum_exp", _R + "reduce_log_sum_exp")
def reduce_log_sum_exp(x, axes=None, keep_dims=False):
    """ln(Σeˣ), computed stably (max subtracted)."""
    x = floatx(x)
    ax = norm_axes(axes, x.ndim)
    m = np.max(x, axis=ax, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=ax, keepdims=True)) + m
    return out if as_bool(keep_dims) else np.squeeze(out, axis=ax)


@register("reduce_argmax", _R + "reduce_argmax")
def reduce_argmax(x, axis=-1, keep_dims=False, output_dtype="int32"):
    """Index of the maximum along ``axis`` (first one on ties)."""
    return np.argmax(x, axis=as_int(axis), keepdims=as_bool(keep_dims)).astype(MIL_DTYPES[as_str(output_dtype)])


@register("reduce_argmin", _R + "reduce_argmin")
def reduce_argmin(x, axis=-1, keep_dims=False, output_dtype="int32"):
    """Index of the minimum along ``axis`` (first one on ties)."""
    return np.argmin(x, axis=as_int(axis), keepdims=as_bool(keep_dims)).astype(MIL_DTYPES[as_str(output_dtype)])
