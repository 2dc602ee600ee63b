"""Each MIL op, run through a real saved ``.mlpackage``, against a NumPy or PyTorch reference: broadcasting, edge
shapes (rank 0/1, size-1 axes, negative axes), defaults, and fp16 programs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

R = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return (R.random(shape) + 0.5).astype(np.float32)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


W = f32(4, 3, 3, 3)
WD = f32(6, 1, 3, 3)  # depthwise, channel multiplier 2
WG = f32(4, 2, 3, 3)  # groups=2 over 4 input channels
WT = f32(3, 2, 3, 3)  # conv_transpose: (C_in, C_out, K, K)
B4 = f32(4)
LW, LB = f32(5, 6), f32(5)

# (id, op, build, inputs, reference, atol)
CASES = [
    # --- elementwise binary, with broadcasting ---
    ("add_bcast", "add", lambda x, y: mb.add(x=x, y=y), [f32(2, 3, 4), f32(4)], np.add, 0),
    ("add_rank0", "add", lambda x: mb.add(x=x, y=np.float32(2.5)), [f32(3)], lambda x: x + 2.5, 0),
    ("sub_bcast", "sub", lambda x, y: mb.sub(x=x, y=y), [f32(2, 1, 4), f32(3, 1)], np.subtract, 0),
    ("mul", "mul", lambda x, y: mb.mul(x=x, y=y), [f32(2, 3), f32(2, 3)], np.multiply, 0),
    ("real_div", "real_div", lambda x, y: mb.real_div(x=x, y=y), [f32(2, 3), pos(3)], np.divide, 1e-6),
    ("floor_div", "floor_div", lambda x, y: mb.floor_div(x=x, y=y), [f32(5) * 4, pos(5)], np.floor_divide, 0),
    ("mod", "mod", lambda x, y: mb.mod(x=x, y=y), [f32(5) * 4, pos(5)], np.mod, 1e-6),
    ("pow", "pow", lambda x, y: mb.pow(x=x, y=y), [pos(2, 3), f32(3)], np.power, 1e-5),
    ("maximum", "maximum", lambda x, y: mb.maximum(x=x, y=y), [f32(2, 3), f32(1, 3)], np.maximum, 0),
    ("minimum", "minimum", lambda x, y: mb.minimum(x=x, y=y), [f32(2, 3), f32(2, 1)], np.minimum, 0),
    ("equal", "equal", lambda x: mb.equal(x=x, y=np.float32(0)), [np.array([0, 1, 0], np.float32)],
     lambda x: x == 0, 0),
    ("not_equal", "not_equal", lambda x, y: mb.not_equal(x=x, y=y), [f32(3), f32(3)], np.not_equal, 0),
    ("greater", "greater", lambda x, y: mb.greater(x=x, y=y), [f32(2, 3), f32(3)], np.greater, 0),
    ("greater_equal", "greater_equal", lambda x, y: mb.greater_equal(x=x, y=y), [f32(4), f32(4)],
     np.greater_equal, 0),
    ("less", "less", lambda x, y: mb.less(x=x, y=y), [f32(2, 3), f32(3)], np.less, 0),
    ("less_equal", "less_equal", lambda x, y: mb.less_equal(x=x, y=y), [f32(4), f32(4)], np.less_equal, 0),
    ("logical_ops", "logical_xor",
     lambda x, y: mb.logical_xor(x=mb.logical_and(x=mb.greater(x=x, y=0.0), y=mb.greater(x=y, y=0.0)),
                                 y=mb.logical_or(x=mb.logical_not(x=mb.greater(x=x, y=0.0)), y=mb.less(x=y, y=0.0))),
     [f32(8), f32(8)], lambda x, y: np.logical_xor((x > 0) & (y > 0), ~(x > 0) | (y < 0)), 0),
    # --- unary ---
    ("abs", "abs", lambda x: mb.abs(x=x), [f32(5)], np.abs, 0),
    ("sqrt", "sqrt", lambda x: mb.sqrt(x=x), [pos(5)], np.sqrt, 1e-6),
    ("rsqrt", "rsqrt", lambda x: mb.rsqrt(x=x), [pos(5)], lambda x: 1 / np.sqrt(x + 1e-12), 1e-6),
    ("exp", "exp", lambda x: mb.exp(x=x), [f32(5)], np.exp, 1e-5),
    ("log", "log", lambda x: mb.log(x=x), [pos(5)], np.log, 1e-6),
    ("erf", "erf", lambda x: mb.erf(x=x), [f32(7)], lambda x: torch.erf(t(x)).numpy(), 1e-6),
    ("inverse", "inverse", lambda x: mb.inverse(x=x, epsilon=0.0), [pos(4)], lambda x: 1 / x, 1e-6),
    ("square_floor_ceil_round", "round",
     lambda x: mb.round(x=mb.add(x=mb.floor(x=x), y=mb.add(x=mb.ceil(x=x), y=mb.square(x=x)))), [f32(6)],
     lambda x: np.round(np.floor(x) + np.ceil(x) + x * x), 1e-5),
    ("trig", "atan", lambda x: mb.atan(x=mb.add(x=mb.sin(x=x), y=mb.cos(x=x))), [f32(6)],
     lambda x: np.arctan(np.sin(x) + np.cos(x)), 1e-6),
    ("tanh", "tanh", lambda x: mb.tanh(x=x), [f32(6)], np.tanh, 1e-6),
    ("clip", "clip", lambda x: mb.clip(x=x, alpha=-0.5, beta=0.5), [f32(8)], lambda x: np.clip(x, -0.5, 0.5), 0),
    ("sign", "sign", lambda x: mb.sign(x=x), [f32(6)], np.sign, 0),
    ("cast_int", "cast", lambda x: mb.cast(x=x, dtype="int32"), [f32(6) * 3], lambda x: x.astype(np.int32), 0),
    ("cast_fp16", "cast", lambda x: mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32"), [f32(6)],
     lambda x: x.astype(np.float16).astype(np.float32), 0),
    # --- activations ---
    ("relu", "relu", lambda x: mb.relu(x=x), [f32(2, 5)], lambda x: np.maximum(x, 0), 0),
    ("relu6", "relu6", lambda x: mb.relu6(x=x), [f32(9) * 5], lambda x: np.clip(x, 0, 6), 0),
    ("sigmoid", "sigmoid", lambda x: mb.sigmoid(x=x), [f32(9) * 30], lambda x: torch.sigmoid(t(x)).numpy(), 1e-6),
    ("silu", "silu", lambda x: mb.silu(x=x), [f32(9)], lambda x: F.silu(t(x)).numpy(), 1e-6),
    ("gelu_exact", "gelu", lambda x: mb.gelu(x=x), [f32(9)], lambda x: F.gelu(t(x)).numpy(), 1e-6),
    ("gelu_tanh", "gelu", lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION"), [f32(9)],
     lambda x: F.gelu(t(x), approximate="tanh").numpy(), 1e-6),
    ("gelu_sigmoid", "gelu", lambda x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"), [f32(9)],
     lambda x: x * torch.sigmoid(1.702 * t(x)).numpy(), 1e-6),
    ("leaky_relu", "leaky_relu", lambda x: mb.leaky_relu(x=x, alpha=0.1), [f32(9)],
     lambda x: F.leaky_relu(t(x), 0.1).numpy(), 0),
    ("elu", "elu", lambda x: mb.elu(x=x, alpha=0.7), [f32(9)], lambda x: F.elu(t(x), 0.7).numpy(), 1e-6),
    ("prelu", "prelu", lambda x: mb.prelu(x=x, alpha=np.array([0.1, 0.2, 0.3], np.float32)), [f32(2, 3, 4, 4)],
     lambda x: F.prelu(t(x), torch.tensor([0.1, 0.2, 0.3])).numpy(), 0),
    ("softplus", "softplus", lambda x: mb.softplus(x=x), [f32(9) * 20], lambda x: F.softplus(t(x)).numpy(), 1e-5),
    ("softsign", "softsign", lambda x: mb.softsign(x=x), [f32(9)], lambda x: F.softsign(t(x)).numpy(), 1e-6),
    ("sigmoid_hard", "sigmoid_hard", lambda x: mb.sigmoid_hard(x=x, alpha=1 / 6, beta=0.5), [f32(9) * 4],
     lambda x: F.hardsigmoid(t(x)).numpy(), 1e-6),
    ("softmax_axis", "softmax", lambda x: mb.softmax(x=x, axis=1), [f32(2, 5, 3) * 10],
     lambda x: torch.softmax(t(x), 1).numpy(), 1e-6),
    # --- linear algebra, conv, norms, pooling ---
    ("linear", "linear", lambda x: mb.linear(x=x, weight=LW, bias=LB), [f32(2, 4, 6)],
     lambda x: F.linear(t(x), t(LW), t(LB)).numpy(), 1e-5),
    ("matmul_bcast_transpose", "matmul", lambda x, y: mb.matmul(x=x, y=y, transpose_x=True, transpose_y=True),
     [f32(2, 3, 4, 5), f32(6, 4)], lambda x, y: np.swapaxes(x, -1, -2) @ y.T, 1e-5),
    ("matmul_rank1", "matmul", lambda x, y: mb.matmul(x=x, y=y), [f32(4), f32(4, 3)], np.matmul, 1e-5),
    ("einsum", "einsum", lambda x, y: mb.einsum(values=(x, y), equation="nchw,nwhu->nchu"),
     [f32(1, 2, 3, 4), f32(1, 4, 3, 5)], lambda x, y: np.einsum("nchw,nwhu->nchu", x, y), 1e-5),
    ("conv_same", "conv", lambda x: mb.conv(x=x, weight=W, bias=B4, pad_type="same"), [f32(2, 3, 7, 6)],
     lambda x: F.conv2d(t(x), t(W), t(B4), padding="same").numpy(), 1e-5),
    ("conv_stride_dilation_custom", "conv",
     lambda x: mb.conv(x=x, weight=W, strides=[2, 1], dilations=[2, 1], pad_type="custom", pad=[1, 2, 0, 1]),
     [f32(1, 3, 9, 8)],
     lambda x: F.conv2d(F.pad(t(x), (0, 1, 1, 2)), t(W), stride=(2, 1), dilation=(2, 1)).numpy(), 1e-5),
    ("conv_depthwise", "conv", lambda x: mb.conv(x=x, weight=WD, groups=3, pad_type="valid"), [f32(1, 3, 6, 6)],
     lambda x: F.conv2d(t(x), t(WD), groups=3).numpy(), 1e-5),
    ("conv_groups", "conv", lambda x: mb.conv(x=x, weight=WG, groups=2, pad_type="valid"), [f32(2, 4, 5, 5)],
     lambda x: F.conv2d(t(x), t(WG), groups=2).numpy(), 1e-5),
    ("conv1d", "conv", lambda x: mb.conv(x=x, weight=W[:, :, 0], pad_type="valid"), [f32(2, 3, 10)],
     lambda x: F.conv1d(t(x), t(W[:, :, 0].copy())).numpy(), 1e-5),
    ("conv_transpose", "conv_transpose",
     lambda x: mb.conv_transpose(x=x, weight=WT, strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]),
     [f32(1, 3, 4, 5)], lambda x: F.conv_transpose2d(t(x), t(WT), stride=2, padding=1).numpy(), 1e-5),
    ("batch_norm", "batch_norm",
     lambda x: mb.batch_norm(x=x, mean=B4, variance=np.abs(B4) + 0.5, gamma=B4 * 2, beta=B4, epsilon=1e-3),
     [f32(2, 4, 3, 3)],
     lambda x: F.batch_norm(t(x), t(B4), t(np.abs(B4) + 0.5), t(B4 * 2), t(B4), eps=1e-3).numpy(), 1e-5),
    ("layer_norm", "layer_norm", lambda x: mb.layer_norm(x=x, axes=[-1], gamma=LB, beta=LB * 3, epsilon=1e-5),
     [f32(2, 3, 5)], lambda x: F.layer_norm(t(x), (5,), t(LB), t(LB * 3)).numpy(), 1e-5),
    ("instance_norm", "instance_norm", lambda x: mb.instance_norm(x=x, gamma=B4, beta=B4), [f32(2, 4, 5, 5)],
     lambda x: F.instance_norm(t(x), weight=t(B4), bias=t(B4)).numpy(), 1e-5),
    ("l2_norm", "l2_norm", lambda x: mb.l2_norm(x=x), [f32(2, 3, 4, 5)],
     lambda x: x / np.sqrt((x ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-6), 1e-6),
    ("max_pool", "max_pool", lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                   pad=[1, 1, 1, 1]),
     [f32(1, 2, 7, 8)], lambda x: F.max_pool2d(t(x), 3, 2, 1).numpy(), 0),
    ("max_pool_ceil", "max_pool", lambda x: mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid",
                                                        ceil_mode=True),
     [f32(1, 2, 7, 7)], lambda x: F.max_pool2d(t(x), 2, 2, ceil_mode=True).numpy(), 0),
    ("avg_pool_exclude_pad", "avg_pool",
     lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[1, 1], pad_type="custom", pad=[1, 1, 1, 1],
                           exclude_padding_from_average=True),
     [f32(1, 2, 5, 5)], lambda x: F.avg_pool2d(t(x), 3, 1, 1, count_include_pad=False).numpy(), 1e-6),
    ("avg_pool_include_pad", "avg_pool",
     lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]),
     [f32(1, 2, 6, 6)], lambda x: F.avg_pool2d(t(x), 3, 2, 1, count_include_pad=True).numpy(), 1e-6),
    ("avg_pool_global", "avg_pool", lambda x: mb.avg_pool(x=x, kernel_sizes=[4, 5], strides=[1, 1],
                                                          pad_type="valid"),
     [f32(2, 3, 4, 5)], lambda x: x.mean(axis=(2, 3), keepdims=True), 1e-6),
    ("upsample_nearest", "upsample_nearest_neighbor",
     lambda x: mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3), [f32(1, 2, 3, 2)],
     lambda x: F.interpolate(t(x), scale_factor=(2, 3), mode="nearest").numpy(), 0),
    ("pixel_shuffle", "pixel_shuffle", lambda x: mb.pixel_shuffle(x=x, upscale_factor=2), [f32(1, 8, 3, 3)],
     lambda x: F.pixel_shuffle(t(x), 2).numpy(), 0),
    # --- reductions ---
    ("reduce_sum_keep", "reduce_sum", lambda x: mb.reduce_sum(x=x, axes=[1, -1], keep_dims=True), [f32(2, 3, 4)],
     lambda x: x.sum(axis=(1, 2), keepdims=True), 1e-5),
    ("reduce_mean_all", "reduce_mean", lambda x: mb.reduce_mean(x=x), [f32(2, 3, 4)], lambda x: x.mean(), 1e-6),
    ("reduce_max_min", "reduce_min",
     lambda x: mb.add(x=mb.reduce_max(x=x, axes=[0]), y=mb.reduce_min(x=x, axes=[0])), [f32(3, 4)],
     lambda x: x.max(0) + x.min(0), 0),
    ("reduce_prod", "reduce_prod", lambda x: mb.reduce_prod(x=x, axes=[-1]), [pos(2, 3)], lambda x: x.prod(-1),
     1e-6),
    ("reduce_norms", "reduce_l2_norm",
     lambda x: mb.add(x=mb.reduce_l2_norm(x=x, axes=[1]), y=mb.reduce_l1_norm(x=x, axes=[1])), [f32(2, 5)],
     lambda x: np.sqrt((x ** 2).sum(1)) + np.abs(x).sum(1), 1e-5),
    ("reduce_log_sum_exp", "reduce_log_sum_exp", lambda x: mb.reduce_log_sum_exp(x=x, axes=[1]), [f32(2, 5) * 50],
     lambda x: torch.logsumexp(t(x), 1).numpy(), 1e-4),
    ("reduce_argmax", "reduce_argmax", lambda x: mb.reduce_argmax(x=x, axis=1), [f32(3, 7)],
     lambda x: x.argmax(1).astype(np.int32), 0),
    # --- shape and indexing ---
    ("reshape_neg1", "reshape", lambda x: mb.reshape(x=x, shape=[2, -1]), [f32(2, 3, 4)],
     lambda x: x.reshape(2, -1), 0),
    ("transpose", "transpose", lambda x: mb.transpose(x=x, perm=[2, 0, 1]), [f32(2, 3, 4)],
     lambda x: x.transpose(2, 0, 1), 0),
    ("squeeze_all", "squeeze", lambda x: mb.squeeze(x=x), [f32(1, 3, 1, 2)], np.squeeze, 0),
    ("expand_dims_neg", "expand_dims", lambda x: mb.expand_dims(x=x, axes=[0, -1]), [f32(3, 2)],
     lambda x: x[None, :, :, None], 0),
    ("concat", "concat", lambda x, y: mb.concat(values=[x, y, x], axis=-1), [f32(2, 3), f32(2, 1)],
     lambda x, y: np.concatenate([x, y, x], -1), 0),
    ("concat_interleave", "concat", lambda x, y: mb.concat(values=[x, y], axis=1, interleave=True),
     [f32(2, 3), f32(2, 3)], lambda x, y: np.stack([x, y], 2).reshape(2, 6), 0),
    ("split_sizes", "split", lambda x: mb.split(x=x, split_sizes=[1, 3], axis=1), [f32(2, 4)],
     lambda x: (x[:, :1], x[:, 1:]), 0),
    ("split_num", "split", lambda x: mb.split(x=x, num_splits=3, axis=0), [f32(6, 2)],
     lambda x: tuple(np.split(x, 3, 0)), 0),
    ("stack", "stack", lambda x, y: mb.stack(values=[x, y], axis=1), [f32(2, 3), f32(2, 3)],
     lambda x, y: np.stack([x, y], 1), 0),
    ("slice_by_index_masks", "slice_by_index",
     lambda x: mb.slice_by_index(x=x, begin=[0, 1, 0], end=[0, -1, 3], stride=[1, 2, -1],
                                 begin_mask=[True, False, True], end_mask=[True, False, False],
                                 squeeze_mask=[False, False, False]),
     [f32(2, 6, 5)], lambda x: x[:, 1:-1:2, :3:-1], 0),
    ("slice_by_index_squeeze", "slice_by_index",
     lambda x: mb.slice_by_index(x=x, begin=[1, 0], end=[2, 4], squeeze_mask=[True, False]), [f32(3, 4)],
     lambda x: x[1], 0),
    ("slice_by_index_squeeze_ignores_end", "slice_by_index",  # coremltools' nn.RNN conversion slices h0 this way
     lambda x: mb.slice_by_index(x=x, begin=[1, 0, 0], end=[0, 0, 0], begin_mask=[False, True, True],
                                 end_mask=[False, True, True], squeeze_mask=[True, False, False]),
     [f32(3, 2, 4)], lambda x: x[1], 0),
    ("slice_by_size", "slice_by_size", lambda x: mb.slice_by_size(x=x, begin=[1, 0], size=[-1, 2]), [f32(3, 4)],
     lambda x: x[1:, :2], 0),
    ("gather_negative", "gather", lambda x: mb.gather(x=x, indices=np.array([[0, -1], [2, 1]], np.int32), axis=1),
     [f32(2, 3, 2)], lambda x: np.take(x, [[0, 2], [2, 1]], axis=1), 0),
    ("gather_batch_dims", "gather",
     lambda x: mb.gather(x=x, indices=np.array([[0, 2], [1, 1]], np.int32), axis=1, batch_dims=1),
     [f32(2, 3, 4)], lambda x: np.stack([x[0, [0, 2]], x[1, [1, 1]]]), 0),
    ("gather_along_axis", "gather_along_axis",
     lambda x: mb.gather_along_axis(x=x, indices=np.array([[2, 0], [1, 1]], np.int32), axis=1), [f32(2, 3)],
     lambda x: np.take_along_axis(x, np.array([[2, 0], [1, 1]]), 1), 0),
    ("gather_nd", "gather_nd", lambda x: mb.gather_nd(x=x, indices=np.array([[0, 1], [1, 2]], np.int32)),
     [f32(2, 3, 4)], lambda x: np.stack([x[0, 1], x[1, 2]]), 0),
    ("scatter_add", "scatter",
     lambda x, u: mb.scatter(data=x, indices=np.array([1, 1, 0], np.int32), updates=u, axis=0, mode="add"),
     [f32(3, 2), f32(3, 2)], lambda x, u: x + np.stack([u[2], u[0] + u[1], 0 * u[0]]), 1e-6),
    ("scatter_nd_update", "scatter_nd",
     lambda x, u: mb.scatter_nd(data=x, indices=np.array([[0, 1], [2, 0]], np.int32), updates=u, mode="update"),
     [f32(3, 2), f32(2)], lambda x, u: _set(x, [(0, 1), (2, 0)], u), 0),
    ("tile", "tile", lambda x: mb.tile(x=x, reps=[2, 1, 3]), [f32(1, 2, 2)], lambda x: np.tile(x, (2, 1, 3)), 0),
    ("pad_constant", "pad", lambda x: mb.pad(x=x, pad=[1, 2, 0, 1], constant_val=0.5), [f32(2, 3, 4)],
     lambda x: np.pad(x, [(0, 0), (1, 2), (0, 1)], constant_values=0.5), 0),
    ("pad_reflect", "pad", lambda x: mb.pad(x=x, pad=[1, 1, 2, 2], mode="reflect"), [f32(1, 1, 4, 5)],
     lambda x: F.pad(t(x), (2, 2, 1, 1), mode="reflect").numpy(), 0),
    ("pad_replicate", "pad", lambda x: mb.pad(x=x, pad=[0, 0, 2, 1], mode="replicate"), [f32(1, 1, 4, 5)],
     lambda x: F.pad(t(x), (2, 1, 0, 0), mode="replicate").numpy(), 0),
    ("select_bcast", "select", lambda c, a: mb.select(cond=mb.greater(x=c, y=0.0), a=a, b=np.float32(-1)),
     [f32(3), f32(2, 3)], lambda c, a: np.where(c > 0, a, -1), 0),
    ("identity", "identity", lambda x: mb.identity(x=x), [f32(2)], lambda x: x, 0),
    ("range_fill_shape", "range_1d",
     lambda x: mb.add(x=mb.cast(x=mb.range_1d(start=1, end=mb.gather(x=mb.shape(x=x), indices=1), step=1),
                                dtype="fp32"),
                      y=mb.fill(shape=[1], value=0.5)),
     [f32(2, 6)], lambda x: np.arange(1, 6, dtype=np.float32) + 0.5, 0),
    ("fill_like", "fill_like", lambda x: mb.fill_like(ref_tensor=x, value=3.0), [f32(2, 3)],
     lambda x: np.full((2, 3), 3.0, np.float32), 0),
    ("cumsum_exclusive_reverse", "cumsum", lambda x: mb.cumsum(x=x, axis=1, exclusive=True, reverse=True),
     [f32(2, 4)], lambda x: np.flip(np.cumsum(np.flip(x, 1), 1), 1) - x, 1e-6),
    ("topk", "topk", lambda x: mb.topk(x=x, k=2, axis=-1), [f32(3, 5)],
     lambda x: (np.sort(x, -1)[:, ::-1][:, :2], np.argsort(-x, -1)[:, :2].astype(np.int32)), 0),
    ("band_part", "band_part", lambda x: mb.band_part(x=x, lower=0, upper=-1), [f32(4, 4)], np.triu, 0),
    ("more_unary", "exp2",
     lambda x: mb.add(x=mb.add(x=mb.exp2(x=x), y=mb.tan(x=x)),
                      y=mb.add(x=mb.sinh(x=x), y=mb.add(x=mb.cosh(x=x), y=mb.threshold(x=x, alpha=0.1)))),
     [f32(6) * 0.5], lambda x: np.exp2(x) + np.tan(x) + np.sinh(x) + np.cosh(x) + np.maximum(x, 0.1), 1e-5),
    ("inverse_trig", "atanh", lambda x: mb.add(x=mb.add(x=mb.asin(x=x), y=mb.acos(x=x)), y=mb.atanh(x=x)),
     [np.tanh(f32(6)) * 0.9], lambda x: np.arcsin(x) + np.arccos(x) + np.arctanh(x), 1e-5),
    ("param_activations", "scaled_tanh",
     lambda x: mb.add(x=mb.add(x=mb.scaled_tanh(x=x, alpha=2.0, beta=0.5), y=mb.linear_activation(x=x, alpha=3.0,
                                                                                                   beta=1.0)),
                      y=mb.add(x=mb.clamped_relu(x=x, alpha=0.1, beta=1.5),
                               y=mb.thresholded_relu(x=x, alpha=0.3))),
     [f32(12)], lambda x: (2 * np.tanh(0.5 * x) + 3 * x + 1 + np.minimum(1.5, np.where(x >= 0, x, 0.1 * x))
                           + np.where(x >= 0.3, x, 0)), 1e-5),
    ("softplus_parametric", "softplus_parametric",
     lambda x: mb.softplus_parametric(x=x, alpha=np.array([1.0, 2.0], np.float32),
                                      beta=np.array([0.5, 3.0], np.float32)),
     [f32(1, 2, 3, 3)], lambda x: np.array([1.0, 2.0]).reshape(1, 2, 1, 1) * np.log1p(
         np.exp(np.array([0.5, 3.0]).reshape(1, 2, 1, 1) * x)), 1e-5),
    ("local_response_norm", "local_response_norm", lambda x: mb.local_response_norm(x=x, size=3, alpha=1e-2),
     [f32(1, 5, 3, 3)], lambda x: F.local_response_norm(t(x), 3, alpha=1e-2).numpy(), 1e-5),
    ("l2_pool", "l2_pool", lambda x: mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
     [f32(1, 2, 4, 4)], lambda x: F.lp_pool2d(t(x), 2, 2).numpy(), 1e-5),
    ("pixel_unshuffle", "pixel_unshuffle", lambda x: mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)),
     [f32(1, 2, 4, 6)], lambda x: F.pixel_unshuffle(t(x), 2).numpy(), 0),
    ("flatten2d_reverse", "reverse", lambda x: mb.reverse(x=mb.flatten2d(x=x, axis=-1), axes=[0]), [f32(2, 3, 4)],
     lambda x: x.reshape(6, 4)[::-1], 0),
    ("squeeze_axes", "squeeze", lambda x: mb.squeeze(x=x, axes=[-1]), [f32(1, 3, 1)], lambda x: x[..., 0], 0),
    ("non_zero", "non_zero", lambda x: mb.non_zero(x=mb.greater(x=x, y=0.0)), [f32(3, 4)],
     lambda x: np.argwhere(x > 0).astype(np.int32), 0),
    ("scatter_along_axis", "scatter_along_axis",
     lambda x, u: mb.scatter_along_axis(data=x, indices=np.array([[1, 0, 1]], np.int32), updates=u, axis=0,
                                        mode="update"),
     [f32(2, 3), f32(1, 3)], lambda x, u: _put(x, u), 0),
    ("argsort_ascending", "argsort", lambda x: mb.argsort(x=x, axis=0, ascending=True), [f32(5, 2)],
     lambda x: np.argsort(x, 0, kind="stable").astype(np.int32), 0),
    ("more_reductions", "reduce_sum_square",
     lambda x: mb.add(x=mb.reduce_sum_square(x=x, axes=[0]), y=mb.reduce_log_sum(x=x, axes=[0])), [pos(3, 4)],
     lambda x: (x ** 2).sum(0) + np.log(x.sum(0)), 1e-5),
    ("reduce_argmin_keep", "reduce_argmin", lambda x: mb.reduce_argmin(x=x, axis=0, keep_dims=True), [f32(3, 4)],
     lambda x: x.argmin(0)[None].astype(np.int32), 0),
    ("one_hot", "one_hot", lambda x: mb.one_hot(indices=mb.cast(x=x, dtype="int32"), one_hot_vector_size=4),
     [np.array([0, 3, 1], np.float32)], lambda x: np.eye(4, dtype=np.float32)[x.astype(int)], 0),
    # --- resizing: torch.nn.functional.interpolate is the reference for every torch-reachable mode ---
    ("upsample_bilinear_align_corners", "upsample_bilinear",
     lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=3, align_corners=True),
     [f32(1, 2, 3, 4)], lambda x: F.interpolate(t(x), scale_factor=(2, 3), mode="bilinear",
                                                align_corners=True).numpy(), 1e-6),
    ("upsample_bilinear_half_pixel", "upsample_bilinear",
     lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=4, align_corners=False),
     [f32(2, 3, 5)], lambda x: F.interpolate(t(x)[None], scale_factor=(2, 4), mode="bilinear",
                                             align_corners=False)[0].numpy(), 1e-6),
    ("upsample_bilinear_asymmetric", "upsample_bilinear",
     lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=2, align_corners=False,
                                    half_pixel_centers=False),
     [f32(1, 1, 3, 3)], lambda x: _asymmetric_bilinear(x, 6, 6), 1e-6),
    ("resize_bilinear_strict_align", "resize_bilinear",
     lambda x: mb.resize_bilinear(x=x, target_size_height=7, target_size_width=2,
                                  sampling_mode="STRICT_ALIGN_CORNERS"),
     [f32(1, 2, 4, 5)], lambda x: F.interpolate(t(x), size=(7, 2), mode="bilinear", align_corners=True).numpy(),
     1e-6),
    ("resize_bilinear_unalign_down", "resize_bilinear",
     lambda x: mb.resize_bilinear(x=x, target_size_height=3, target_size_width=5, sampling_mode="UNALIGN_CORNERS"),
     [f32(1, 2, 8, 7)], lambda x: F.interpolate(t(x), size=(3, 5), mode="bilinear", align_corners=False).numpy(),
     1e-6),
    ("resize_bilinear_default", "resize_bilinear",
     lambda x: mb.resize_bilinear(x=x, target_size_height=5, target_size_width=6, sampling_mode="DEFAULT"),
     [np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)],
     # the spec's own example grid for X_in=2, X_out=5, DEFAULT: [0, .4, .8, 1, 1]; X_in=3, X_out=6: spacing 0.5
     lambda x: _grid_bilinear(x, [0, .4, .8, 1, 1], [0, .5, 1, 1.5, 2, 2]), 1e-6),
    ("resize_bilinear_offset_corners", "resize_bilinear",
     lambda x: mb.resize_bilinear(x=x, target_size_height=5, target_size_width=1, sampling_mode="OFFSET_CORNERS"),
     [np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)],
     lambda x: _grid_bilinear(x, [.1, .3, .5, .7, .9], [.5]), 1e-6),
    ("resize_nearest_neighbor", "resize_nearest_neighbor",
     lambda x: mb.resize_nearest_neighbor(x=x, target_size_height=5, target_size_width=2),
     [f32(1, 3, 4, 6)], lambda x: F.interpolate(t(x), size=(5, 2), mode="nearest").numpy(), 0),
]


def _grid_bilinear(x: np.ndarray, gh: list[float], gw: list[float]) -> np.ndarray:
    """Bilinear sampling of the last two axes at explicit fractional positions (a direct loop, no shared code)."""
    h, w = x.shape[-2:]
    out = np.zeros(x.shape[:-2] + (len(gh), len(gw)), np.float32)
    for i, y in enumerate(gh):
        for j, z in enumerate(gw):
            y0, z0 = int(math.floor(y)), int(math.floor(z))
            y1, z1 = min(y0 + 1, h - 1), min(z0 + 1, w - 1)
            fy, fz = y - y0, z - z0
            out[..., i, j] = ((1 - fy) * (1 - fz) * x[..., y0, z0] + (1 - fy) * fz * x[..., y0, z1]
                              + fy * (1 - fz) * x[..., y1, z0] + fy * fz * x[..., y1, z1])
    return out


def _asymmetric_bilinear(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """TF ResizeBilinear(align_corners=False, half_pixel_centers=False): position i·X_in/X_out."""
    h, w = x.shape[-2:]
    return _grid_bilinear(x, [min(i * h / oh, h - 1) for i in range(oh)], [min(j * w / ow, w - 1) for j in range(ow)])


def _put(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    y = x.copy()
    np.put_along_axis(y, np.array([[1, 0, 1]]), u, axis=0)
    return y


def _set(x: np.ndarray, coords: list[tuple[int, int]], u: np.ndarray) -> np.ndarray:
    y = x.copy()
    for c, v in zip(coords, u):
        y[c] = v
    return y


@pytest.fixture(scope="module")
def all_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[np.ndarray]]:
    """Every case in ONE saved program (one convert, one interpreter run): case id → its outputs."""
    import coremltools as ct
    from coremltools.converters.mil.mil import Function, types
    from coremltools.converters.mil.mil import Program as MilProgram

    from mobilize._quiet import captured_output
    from mobilize.runtime.coreml_ref.program import Program

    specs, feeds = {}, {}
    for cid, _, _, inputs, _, _ in CASES:
        for i, a in enumerate(inputs):
            specs[f"{cid}_{i}"] = mb.placeholder(shape=a.shape, dtype=types.numpy_type_to_builtin_type(a.dtype))
            feeds[f"{cid}_{i}"] = a
    counts: dict[str, int] = {}
    with captured_output():
        with Function(specs, opset_version=ct.target.iOS16) as func:
            outs = []
            for cid, _, build, inputs, _, _ in CASES:
                res = build(*[func.inputs[f"{cid}_{i}"] for i in range(len(inputs))])
                res = list(res) if isinstance(res, (tuple, list)) else [res]
                counts[cid] = len(res)
                outs += res
            func.set_outputs(outs)
        prog = MilProgram()
        prog.add_function("main", func)
        model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                           pass_pipeline=ct.PassPipeline.EMPTY, compute_precision=ct.precision.FLOAT32)
        path = tmp_path_factory.mktemp("ops") / "all.mlpackage"
        model.save(str(path))
    program = Program(path)
    out = program.run(feeds)
    values = [out[n] for n in program.output_names]
    result, pos = {}, 0
    for cid, _, _, _, _, _ in CASES:
        result[cid] = values[pos:pos + counts[cid]]
        pos += counts[cid]
    result["__ops__"] = program.op_types()
    return result


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_reference(case, all_cases) -> None:  # noqa: ANN001
    cid, op, _, inputs, ref, atol = case
    assert op in all_cases["__ops__"]
    got = all_cases[cid]
    want = ref(*inputs)
    want = list(want) if isinstance(want, tuple) else [want]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.shape == w.shape, (g.shape, w.shape)
        if w.dtype == np.bool_ or np.issubdtype(w.dtype, np.integer):
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, atol=atol, rtol=max(atol, 1e-6))


def test_range_1d_and_scalars(run_mil) -> None:  # noqa: ANN001
    """Rank-0 values flow through: shape → gather (scalar) → range_1d with a negative step."""
    out, = run_mil(lambda x: mb.range_1d(start=mb.gather(x=mb.shape(x=x), indices=0), end=0, step=-2),
                   f32(5, 2), op="range_1d")
    np.testing.assert_array_equal(out, [5, 3, 1])


# --- fp16 programs: every op output is rounded to float16 -----------------------------------------------------

def _fp16(build):  # noqa: ANN001, ANN202
    return lambda x: mb.cast(x=build(mb.cast(x=x, dtype="fp16")), dtype="fp32")


def test_fp16_elementwise_rounds_each_output(run_mil) -> None:  # noqa: ANN001
    """(x·3 + 1)/7 in fp16 = each step rounded to float16, not the float32 result rounded once."""
    x = f32(64) * 10
    out, = run_mil(_fp16(lambda h: mb.real_div(x=mb.add(x=mb.mul(x=h, y=np.float16(3)), y=np.float16(1)),
                                               y=np.float16(7))), x, op="real_div")
    h = x.astype(np.float16)
    step = ((h.astype(np.float32) * 3).astype(np.float16).astype(np.float32) + 1).astype(np.float16)
    want = (step.astype(np.float32) / 7).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(out, want)
    assert out.dtype == np.float32  # the program's final cast back to fp32


@pytest.mark.parametrize("name,build,ref", [
    ("conv", lambda h: mb.conv(x=h, weight=W.astype(np.float16), pad_type="same"),
     lambda x: F.conv2d(t(x), t(W.astype(np.float16).astype(np.float32)), padding=1).numpy()),
    ("softmax", lambda h: mb.softmax(x=h, axis=-1), lambda x: torch.softmax(t(x), -1).numpy()),
    ("layer_norm", lambda h: mb.layer_norm(x=h, axes=[-1]), lambda x: F.layer_norm(t(x), (x.shape[-1],)).numpy()),
    ("gelu", lambda h: mb.gelu(x=h), lambda x: F.gelu(t(x)).numpy()),
])
def test_fp16_ops_within_half_precision(name, build, ref, run_mil) -> None:  # noqa: ANN001
    x = f32(1, 3, 6, 6)
    out, = run_mil(_fp16(build), x, op=name)
    want = ref(x.astype(np.float16).astype(np.float32))
    # one fp16 rounding of the result (plus fp16 input rounding inside the reference): ≤ 1 ulp of float16
    np.testing.assert_allclose(out, want, rtol=2 ** -10, atol=2 ** -14 + 1e-3 * np.abs(want).max())
    assert np.array_equal(out, out.astype(np.float16).astype(np.float32)), "outputs must be fp16-representable"


def test_fp16_accumulation_differs_from_fp32(run_mil) -> None:  # noqa: ANN001
    """A long chain of fp16 adds drifts from the fp32 result: the interpreter reflects the file's precision."""
    x = np.full((1,), 0.1, np.float32)

    def build(h):  # noqa: ANN001, ANN202
        acc = h
        for _ in range(50):
            acc = mb.add(x=acc, y=np.float16(0.1))
        return acc

    out16, = run_mil(_fp16(build), x)
    out32, = run_mil(lambda v: _chain(v), x)
    assert abs(float(out32[0]) - 5.1) < 1e-5
    assert abs(float(out16[0]) - 5.1) > 1e-3


def _chain(v):  # noqa: ANN001, ANN202
    for _ in range(50):
        v = mb.add(x=v, y=np.float32(0.1))
    return v


def test_int32_inputs_stay_integer(run_mil) -> None:  # noqa: ANN001
    ids = np.array([[3, 0, 2]], np.int32)
    table = f32(4, 5)
    out, = run_mil(lambda i: mb.gather(x=table, indices=i, axis=0), ids, op="gather")
    np.testing.assert_array_equal(out, table[ids])


def test_conv_matches_torch_on_odd_shapes(run_mil) -> None:  # noqa: ANN001
    """same_lower padding, stride 3, 1×1 spatial output."""
    w = f32(2, 3, 2, 2)
    out, = run_mil(lambda x: mb.conv(x=x, weight=w, strides=[3, 3], pad_type="same_lower"), f32(1, 3, 2, 2),
                   op="conv")
    assert out.shape == (1, 2, 1, 1)


def test_scaled_dot_product_attention(run_mil) -> None:  # noqa: ANN001
    q, k, v = f32(1, 2, 3, 4), f32(1, 2, 5, 4), f32(1, 2, 5, 4)
    mask = np.tril(np.ones((3, 5), bool))
    out, = run_mil(lambda a, b, c: mb.scaled_dot_product_attention(query=a, key=b, value=c, attn_mask=mask),
                   q, k, v, op="scaled_dot_product_attention", target="iOS18")
    want = F.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=t(mask)).numpy()
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_reduce_mean_keeps_fp32_precision_for_large_axes(run_mil) -> None:  # noqa: ANN001
    x = f32(1, 4096) + 1000
    out, = run_mil(lambda v: mb.reduce_mean(x=v, axes=[1]), x, op="reduce_mean")
    assert math.isclose(float(out[0]), float(x.astype(np.float64).mean()), rel_tol=1e-6)


def test_every_registered_op_is_tested(all_cases) -> None:  # noqa: ANN001
    """Adding an op means adding a test: every registered op runs in some test program of this folder."""
    from mobilize.runtime.coreml_ref import supported_ops

    elsewhere = {  # ops tested by name in other tests of this folder
        "scaled_dot_product_attention", "quantize", "dequantize", "constexpr_affine_dequantize",
        "constexpr_lut_to_dense", "constexpr_sparse_to_dense", "constexpr_blockwise_shift_scale",
        "constexpr_cast", "constexpr_lut_to_sparse", "constexpr_sparse_blockwise_shift_scale",
        "lstm", "gru", "rnn", "while_loop", "cond",  # test_recurrent.py
        "classify",  # test_classifier.py
    }
    untested = set(supported_ops()) - set(all_cases["__ops__"]) - elsewhere
    assert not untested, f"ops without a test: {sorted(untested)}"
