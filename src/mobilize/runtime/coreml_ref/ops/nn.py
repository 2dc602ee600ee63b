"""Convolution, linear algebra, normalisation, pooling and attention MIL ops."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mobilize.runtime.coreml_ref.ops._util import as_bool, as_float, as_int, as_ints, as_str, floatx, norm_axes
from mobilize.runtime.coreml_ref.ops.activation import softmax
from mobilize.runtime.coreml_ref.registry import register


def _pads(pad_type, pad, in_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """Per spatial axis (begin, end) padding for MIL's pad_type valid / same / same_lower / custom."""
    kind = as_str(pad_type)
    n = len(in_sizes)
    if kind == "valid":
        return [(0, 0)] * n
    if kind == "custom":
        p = as_ints(pad) if pad is not None else [0] * (2 * n)
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if kind in ("same", "same_lower"):
        out = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if kind == "same" else (big, small))
        return out
    raise ValueError(f"unknown pad_type {kind!r}")


#: im2col columns above this many bytes are built and multiplied a slice of the batch at a time
_COLS_BYTES = 1 << 28


@register("conv", "iOS15.conv.conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """N-d convolution (1-3 spatial dims) of x (N, C_in, *D) with weight (C_out, C_in/groups, *K).

    im2col: the (strided, dilated) windows are copied once into columns (N, groups, C_in/groups · K, positions) and
    multiplied by the weights as one matrix product per group (BLAS), a slice of the batch at a time when the
    columns would be large."""
    x, w = floatx(x), floatx(weight)
    sp = x.ndim - 2
    k = w.shape[2:]
    st = as_ints(strides) if strides is not None else [1] * sp
    dl = as_ints(dilations) if dilations is not None else [1] * sp
    g = as_int(groups)
    pads = _pads(pad_type, pad, x.shape[2:], k, st, dl)
    if any(p != (0, 0) for p in pads):
        x = np.pad(x, [(0, 0), (0, 0), *pads])
    eff = tuple((ki - 1) * d + 1 for ki, d in zip(k, dl))
    win = sliding_window_view(x, eff, axis=tuple(range(2, 2 + sp)))
    win = win[(slice(None), slice(None), *(slice(None, None, s) for s in st), *(slice(None, None, d) for d in dl))]
    n, c = x.shape[:2]
    out_sp = win.shape[2:2 + sp]
    cout, cg = w.shape[0], c // g
    kk, pp = math.prod(k), math.prod(out_sp)
    # (N, C, *out, *K) → (N, C, *K, *out): each column holds one output position's window
    win = win.transpose(0, 1, *range(2 + sp, 2 + 2 * sp), *range(2, 2 + sp))
    wr = w.reshape(g, cout // g, cg * kk)
    per_item = c * kk * pp * win.itemsize
    chunk = max(1, _COLS_BYTES // max(per_item, 1))
    parts = []
    for i in range(0, n, chunk):
        cols = win[i:i + chunk].reshape(-1, g, cg * kk, pp)  # the copy im2col makes
        parts.append(np.matmul(wr, cols))  # (n', g, C_out/g, positions)
    out = (parts[0] if len(parts) == 1 else np.concatenate(parts)).reshape(n, cout, *out_sp)
    if bias is not None:
        out = out + np.asarray(bias, dtype=out.dtype).reshape((1, -1) + (1,) * sp)
    return out


@register("conv_transpose", "iOS15.conv.conv_transpose")
def conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None,
                   dilations=None, groups=1):
    """Transposed convolution of x (N, C_in, *D) with weight (C_in, C_out/groups, *K)."""
    x, w = floatx(x), floatx(weight)
    sp = x.ndim - 2
    k = w.shape[2:]
    st = as_ints(strides) if strides is not None else [1] * sp
    dl = as_ints(dilations) if dilations is not None else [1] * sp
    g = as_int(groups)
    n, cin = x.shape[:2]
    cig, og = cin // g, w.shape[1]
    full = [(d - 1) * s + (ki - 1) * dd + 1 for d, s, ki, dd in zip(x.shape[2:], st, k, dl)]
    out = np.zeros((n, og * g, *full), dtype=x.dtype)
    for kpos in np.ndindex(*k):
        sl = tuple(slice(kp * dd, kp * dd + (d - 1) * s + 1, s) for kp, dd, d, s in zip(kpos, dl, x.shape[2:], st))
        for gi in range(g):
            xg = x[:, gi * cig:(gi + 1) * cig]
            wg = w[(slice(gi * cig, (gi + 1) * cig), slice(None), *kpos)]  # (cig, og)
            out[(slice(None), slice(gi * og, (gi + 1) * og), *sl)] += np.einsum("nc...,co->no...", xg, wg)
    kind = as_str(pad_type)
    if output_shape is not None:
        want = as_ints(output_shape)[-sp:]
    elif kind in ("same", "same_lower"):
        want = [d * s for d, s in zip(x.shape[2:], st)]
    else:
        want = None
    if kind == "custom" and pad is not None:
        p = as_ints(pad)
        begins = [p[2 * i] for i in range(sp)]
        ends = [full[i] - p[2 * i + 1] for i in range(sp)]
    elif want is not None:
        totals = [f - w_ for f, w_ in zip(full, want)]
        begins = [t // 2 if kind != "same_lower" else t - t // 2 for t in totals]
        ends = [b + w_ for b, w_ in zip(begins, want)]
    else:
        begins, ends = [0] * sp, full
    out = out[(slice(None), slice(None), *(slice(b, e) for b, e in zip(begins, ends)))]
    if bias is not None:
        out = out + np.asarray(bias, dtype=out.dtype).reshape((1, -1) + (1,) * sp)
    return out


@register("linear", "iOS15.linear.linear")
def linear(x, weight, bias=None):
    """x · weightᵀ + bias, weight (D_out, D_in)."""
    x = floatx(x)
    out = np.matmul(x, floatx(weight).T)
    return out if bias is None else out + bias


@register("matmul", "iOS15.linear.matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    """Batched matrix product with NumPy broadcasting; ``transpose_*`` swap the last two axes (rank ≥ 2)."""
    x, y = floatx(x), floatx(y)
    if as_bool(transpose_x) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if as_bool(transpose_y) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@register("einsum", "iOS15.linear.einsum", variadic=("values",))
def einsum(values, equation):
    """Einstein summation over the input tensors."""
    return np.einsum(as_str(equation), *[floatx(v) for v in values])


@register("batch_norm", "iOS15.normalization.batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    """(x − mean) / √(variance + ε) · gamma + beta, per channel (axis 1)."""
    x = floatx(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - np.reshape(mean, shape)) / np.sqrt(np.reshape(variance, shape) + np.float32(as_float(epsilon)))
    if gamma is not None:
        out = out * np.reshape(gamma, shape)
    if beta is not None:
        out = out + np.reshape(beta, shape)
    return out


@register("instance_norm", "iOS15.normalization.instance_norm")
def instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    """Normalise every (sample, channel) over its spatial axes, then per-channel gamma and beta."""
    x = floatx(x)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + np.float32(as_float(epsilon)))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if gamma is not None:
        out = out * np.reshape(gamma, shape)
    if beta is not None:
        out = out + np.reshape(beta, shape)
    return out


@register("layer_norm", "iOS15.normalization.layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    """(x − mean) / √(var + ε) over ``axes`` (None = all), then gamma and beta shaped like x.shape[axes]."""
    x = floatx(x)
    ax = norm_axes(axes, x.ndim) or tuple(range(x.ndim))
    mean = x.mean(axis=ax, keepdims=True)
    var = np.square(x - mean).mean(axis=ax, keepdims=True)
    out = (x - mean) / np.sqrt(var + np.float32(as_float(epsilon)))
    shape = [x.shape[i] if i in ax else 1 for i in range(x.ndim)]
    if gamma is not None:
        out = out * np.reshape(gamma, shape)
    if beta is not None:
        out = out + np.reshape(beta, shape)
    return out


@register("l2_norm", "iOS15.normalization.l2_norm")
def l2_norm(x, epsilon=1e-6):
    """x / √(Σx² + ε) over the last three axes (leading axes are batch)."""
    x = floatx(x)
    ss = np.square(x).sum(axis=(-3, -2, -1), keepdims=True)
    return x / np.sqrt(ss + np.float32(as_float(epsilon)))


@register("local_response_norm", "iOS15.normalization.local_response_norm")
def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + alpha/size · Σ over ``size`` neighbouring channels of x²)^beta."""
    x = floatx(x)
    n = as_int(size)
    sq = np.square(x)
    pad = [(0, 0)] * x.ndim
    pad[1] = ((n - 1) // 2, n - 1 - (n - 1) // 2)
    sq = np.pad(sq, pad)
    acc = sum(sq[:, i:i + x.shape[1]] for i in range(n))
    return x / np.power(as_float(k) + as_float(alpha) / n * acc, as_float(beta))


def _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, fill):
    """Windows (N, C, *out, *K) of x padded with ``fill``, and a mask of real (unpadded) positions."""
    x = floatx(x)
    sp = len(as_ints(kernel_sizes))
    k = as_ints(kernel_sizes)
    st = as_ints(strides) if strides is not None else [1] * sp
    pads = _pads(pad_type, pad, x.shape[2:], k, st, [1] * sp)
    if ceil_mode is not None and as_bool(ceil_mode):
        extra = []
        for size, (b, e), ki, s in zip(x.shape[2:], pads, k, st):
            out = math.ceil((size + b + e - ki) / s) + 1
            if (out - 1) * s >= size + b:  # the last window must start inside the input or the left padding
                out -= 1
            extra.append(max((out - 1) * s + ki - (size + b + e), 0))
    else:
        extra = [0] * sp
    padded = [size + b + e for size, (b, e) in zip(x.shape[2:], pads)]
    region = np.pad(np.ones(padded, dtype=np.float32), [(0, ex) for ex in extra])  # input + explicit padding
    mask = np.pad(np.ones(x.shape[2:], dtype=np.float32), [(b, e + ex) for (b, e), ex in zip(pads, extra)])
    xp = np.pad(x, [(0, 0), (0, 0), *[(b, e + ex) for (b, e), ex in zip(pads, extra)]], constant_values=fill)
    axes = tuple(range(2, 2 + sp))
    sl = tuple(slice(None, None, s) for s in st)
    win = sliding_window_view(xp, k, axis=axes)[(slice(None), slice(None), *sl)]
    real = sliding_window_view(mask, k)[sl]
    inside = sliding_window_view(region, k)[sl]
    return win, real, inside, sp


def _window_reduce(win: np.ndarray, sp: int, ufunc: np.ufunc) -> np.ndarray:
    """``ufunc`` over the last ``sp`` (window) axes of ``win``, one kernel position at a time: each step is one
    vectorised pass over the whole output, where reducing the strided window axes directly is several times slower.
    Large windows over few outputs (global pooling) are reduced directly."""
    kernel = win.shape[-sp:]
    if math.prod(kernel) > 32:
        return ufunc.reduce(win, axis=tuple(range(-sp, 0)))
    acc = np.array(win[(Ellipsis, *(0,) * sp)])
    for kpos in list(np.ndindex(*kernel))[1:]:
        ufunc(acc, win[(Ellipsis, *kpos)], out=acc)
    return acc


@register("max_pool", "iOS15.pool.max_pool")
def max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """Maximum over each window (padding never wins)."""
    win, _, _, sp = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, -np.inf)
    return _window_reduce(win, sp, np.maximum)


@register("avg_pool", "iOS15.pool.avg_pool")
def avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, exclude_padding_from_average=False,
             ceil_mode=False):
    """Mean over each window; the divisor counts padding unless ``exclude_padding_from_average``."""
    win, real, inside, sp = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, 0.0)
    ax = tuple(range(-sp, 0))
    count = (real if as_bool(exclude_padding_from_average) else inside).sum(axis=ax)
    return _window_reduce(win, sp, np.add) / np.maximum(count, 1).astype(win.dtype)


@register("l2_pool", "iOS15.pool.l2_pool")
def l2_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """√(Σx²) over each window."""
    win, _, _, sp = _pool(np.square(floatx(x)), kernel_sizes, strides, pad_type, pad, ceil_mode, 0.0)
    return np.sqrt(_window_reduce(win, sp, np.add))


@register("upsample_nearest_neighbor", "iOS16.image_resizing.upsample_nearest_neighbor")
def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    """Nearest-neighbour upsampling of the last two axes: out[i] = x[floor(i / scale)]."""
    x = np.asarray(x)
    sh, sw = as_float(scale_factor_height), as_float(scale_factor_width)
    h, w = x.shape[-2:]
    ih = np.minimum(np.floor(np.arange(int(math.floor(h * sh))) / sh).astype(int), h - 1)
    iw = np.minimum(np.floor(np.arange(int(math.floor(w * sw))) / sw).astype(int), w - 1)
    return x[..., ih, :][..., iw]


@register("pixel_shuffle", "iOS15.tensor_transformation.pixel_shuffle")
def pixel_shuffle(x, upscale_factor):
    """(N, C·r², H, W) → (N, C, H·r, W·r), as torch.nn.PixelShuffle."""
    r = as_int(upscale_factor)
    n, c, h, w = x.shape
    y = np.reshape(x, (n, c // (r * r), r, r, h, w)).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (r * r), h * r, w * r)


@register("pixel_unshuffle", "iOS16.tensor_transformation.pixel_unshuffle")
def pixel_unshuffle(x, downscale_factor):
    """(N, C, H·r, W·r) → (N, C·r², H, W), as torch.nn.PixelUnshuffle."""
    r = as_int(downscale_factor)
    n, c, h, w = x.shape
    y = np.reshape(x, (n, c, h // r, r, w // r, r)).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * r * r, h // r, w // r)


@register("scaled_dot_product_attention", "iOS18.transformers.scaled_dot_product_attention")
def scaled_dot_product_attention(query, key, value, attn_mask=None):
    """softmax(Q·Kᵀ/√d + mask)·V; a bool mask keeps True positions (False → −inf)."""
    q, kk, v = floatx(query), floatx(key), floatx(value)
    scores = np.matmul(q, np.swapaxes(kk, -1, -2)) / np.float32(math.sqrt(q.shape[-1]))
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        scores = np.where(m, scores, -np.inf) if m.dtype == np.bool_ else scores + m
    return np.matmul(softmax(scores, -1), v)
