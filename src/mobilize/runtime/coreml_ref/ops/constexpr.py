"""Compression ops (``constexpr_*``, decompressed once at load) and the iOS17 activation (de)quantization ops.

The iOS16 and iOS18 versions of ``constexpr_lut_to_dense`` and ``constexpr_sparse_to_dense`` share a name; they are
told apart by their parameters (iOS16 passes a flat packed ``indices``/``mask`` plus ``shape``; iOS18 passes
sub-byte tensors that the blob reader has already unpacked).
"""

from __future__ import annotations

import numpy as np

from mobilize.runtime.coreml_ref.blob import unpack_bits
from mobilize.runtime.coreml_ref.ops._util import MIL_DTYPES, as_int, as_ints, as_str
from mobilize.runtime.coreml_ref.registry import register

_C16 = "iOS16.constexpr_ops."
_C18 = "iOS18.compression."


def _along(param, data: np.ndarray, axis) -> np.ndarray:
    """Scalar or 1-D per-``axis`` parameter → broadcastable against ``data``."""
    p = np.asarray(param)
    if p.ndim == 0 or p.ndim == data.ndim:
        return p
    shape = [1] * data.ndim
    shape[as_int(axis) % data.ndim] = -1
    return p.reshape(shape)


@register("constexpr_affine_dequantize", _C16 + "constexpr_affine_dequantize")
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    """(quantized_data − zero_point) · scale, per tensor or per channel along ``axis``."""
    q = np.asarray(quantized_data)
    s = np.asarray(scale)
    out = (q.astype(np.float32) - _along(zero_point, q, axis).astype(np.float32)) * _along(s, q, axis)
    return out.astype(s.dtype if s.dtype.kind == "f" else np.float32)


@register("constexpr_cast", _C16 + "constexpr_cast")
def constexpr_cast(source_val, output_dtype):
    """Cast a stored constant (fp16 weights kept as fp16, used as fp32)."""
    return np.asarray(source_val).astype(MIL_DTYPES[as_str(output_dtype)])


def _lut_dense(indices: np.ndarray, lut: np.ndarray, vector_axis) -> np.ndarray:
    """iOS18 palettization: ``lut`` (*blocks, palettes, vector) indexed per block of ``indices``."""
    idx = np.asarray(indices).astype(np.int64)
    lut = np.asarray(lut)
    k, vs = idx.ndim, lut.shape[-1]
    va = None
    if vs > 1:
        va = as_int(vector_axis) % k
        idx, lut = np.swapaxes(idx, -1, va), np.swapaxes(lut, k - 1, va)
    block = [s // b for s, b in zip(idx.shape, lut.shape[:k])]
    bid = np.zeros((1,) * k, dtype=np.int64)
    stride = 1
    for i in reversed(range(k)):
        ax = (np.arange(idx.shape[i]) // block[i]).reshape([-1 if j == i else 1 for j in range(k)])
        bid = bid + ax * stride
        stride *= lut.shape[i]
    flat = lut.reshape(-1, lut.shape[-2], vs)
    out = flat[np.broadcast_to(bid, idx.shape), idx]  # (*idx.shape, vs)
    if vs == 1:
        return out[..., 0]
    out = out.reshape(*idx.shape[:-1], idx.shape[-1] * vs)
    return np.swapaxes(out, -1, va)


@register("constexpr_lut_to_dense", _C16 + "constexpr_lut_to_dense")
def constexpr_lut_to_dense(lut, indices, shape=None, vector_axis=None):
    """Palettized weights: each element is ``lut[index]``. iOS16: 1-D lut, bit-packed uint8 indices and ``shape``.
    iOS18: per-block LUTs (*blocks, palettes, vector size) and an unpacked sub-byte index tensor (see
    iOS18.compression.constexpr_lut_to_dense)."""
    lut = np.asarray(lut)
    if shape is not None:  # iOS16
        out_shape = as_ints(shape)
        nbits = int(np.log2(lut.size))
        count = int(np.prod(out_shape))
        idx = unpack_bits(np.asarray(indices, dtype=np.uint8), nbits, count, signed=False)
        return lut.reshape(-1)[idx.astype(np.int64)].reshape(out_shape)
    return _lut_dense(indices, lut, vector_axis)


@register("constexpr_sparse_to_dense", _C16 + "constexpr_sparse_to_dense")
def constexpr_sparse_to_dense(nonzero_data, mask, shape=None):
    """Pruned weights: ``nonzero_data`` placed where the bit mask is 1, zeros elsewhere. iOS16: bit-packed uint8
    mask plus ``shape``; iOS18: a uint1 mask tensor (see iOS18.compression.constexpr_sparse_to_dense)."""
    data = np.asarray(nonzero_data)
    if shape is not None:  # iOS16
        out_shape = as_ints(shape)
        m = unpack_bits(np.asarray(mask, dtype=np.uint8), 1, int(np.prod(out_shape)), signed=False)
        m = m.reshape(out_shape)
    else:
        m = np.asarray(mask)
    out = np.zeros(m.shape, dtype=data.dtype)
    out[m != 0] = data
    return out


def _blockwise(data: np.ndarray, scale: np.ndarray, offset) -> np.ndarray:
    scale = np.asarray(scale)
    out = np.asarray(data).astype(np.float32)
    reps = [d // s for d, s in zip(out.shape, scale.shape)]
    s = scale
    o = None if offset is None else np.asarray(offset)
    for axis, r in enumerate(reps):
        if r > 1:
            s = np.repeat(s, r, axis)
            o = None if o is None else np.repeat(o, r, axis)
    if o is not None:
        out = out - o.astype(np.float32)
    return (out * s).astype(scale.dtype if scale.dtype.kind == "f" else np.float32)


@register("constexpr_blockwise_shift_scale", _C18 + "constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(data, scale, offset=None):
    """scale · (data − offset) with block-wise parameters: block size per axis = data.shape / scale.shape."""
    return _blockwise(data, scale, offset)


@register("constexpr_lut_to_sparse", _C18 + "constexpr_lut_to_sparse")
def constexpr_lut_to_sparse(indices_mask, indices_nonzero_data, lut, vector_axis=None):
    """Palettization of pruned weights: returns (mask, de-palettized non-zero values)."""
    m = np.asarray(indices_mask)
    idx = np.zeros(m.shape, dtype=np.int64)
    idx[m != 0] = np.asarray(indices_nonzero_data)
    dense = _lut_dense(idx, np.asarray(lut), vector_axis)
    mask = m
    vs = np.asarray(lut).shape[-1]
    if vs > 1:
        mask = np.repeat(m, vs, axis=as_int(vector_axis))
    return mask, dense[mask != 0].reshape(-1)


@register("constexpr_sparse_blockwise_shift_scale", _C18 + "constexpr_sparse_blockwise_shift_scale")
def constexpr_sparse_blockwise_shift_scale(data_mask, nonzero_data, scale, offset=None):
    """Quantization of pruned weights: returns (mask, dequantized non-zero values)."""
    m = np.asarray(data_mask)
    dense = np.zeros(m.shape, dtype=np.asarray(nonzero_data).dtype)
    dense[m != 0] = np.asarray(nonzero_data)
    out = _blockwise(dense, scale, offset)
    return m, out[m != 0].reshape(-1)


@register("quantize", "iOS17.quantization_ops.quantize")
def quantize(input, scale, output_dtype, zero_point=None, axis=None):  # noqa: A002 - MIL's parameter name
    """round(input / scale + zero_point) clipped to ``output_dtype`` (int8/uint8), rounding halves to even."""
    x = np.asarray(input, dtype=np.float32)
    dt = MIL_DTYPES[as_str(output_dtype)]
    q = np.rint(x / _along(scale, x, axis))
    if zero_point is not None:
        q = q + _along(zero_point, x, axis)
    info = np.iinfo(dt)
    return np.clip(q, info.min, info.max).astype(dt)


@register("dequantize", "iOS17.quantization_ops.dequantize")
def dequantize(input, scale, zero_point=None, axis=None):  # noqa: A002 - MIL's parameter name
    """(input − zero_point) · scale."""
    x = np.asarray(input).astype(np.float32)
    if zero_point is not None:
        x = x - _along(zero_point, x, axis).astype(np.float32)
    return x * _along(scale, x, axis)
