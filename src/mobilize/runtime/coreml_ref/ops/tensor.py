"""Constants, shape manipulation, indexing, gather/scatter and tensor-construction MIL ops."""

from __future__ import annotations

import numpy as np

from mobilize.runtime.coreml_ref.ops._util import MIL_DTYPES, as_bool, as_float, as_int, as_ints, as_str, norm_axes
from mobilize.runtime.coreml_ref.registry import register

_T = "iOS15.tensor_transformation."
_O = "iOS15.tensor_operation."
_G = "iOS15.scatter_gather."


@register("const", "iOS15.control_flow.const")
def const(val):
    """A constant (immediate value or a blob in weight.bin)."""
    return val


@register("identity", _O + "identity")
def identity(x):
    """x unchanged."""
    return x


@register("select", "iOS15.control_flow.select")
def select(cond, a, b):
    """a where cond else b, broadcasting all three."""
    return np.where(np.asarray(cond).astype(bool), a, b)


@register("reshape", _T + "reshape")
def reshape(x, shape):
    """Reshape; one entry may be −1, and 0 copies x's dimension when the new rank equals x's rank."""
    x = np.asarray(x)
    s = as_ints(shape)
    if len(s) == x.ndim:
        s = [x.shape[i] if d == 0 else d for i, d in enumerate(s)]
    return np.reshape(x, s)


@register("transpose", _T + "transpose")
def transpose(x, perm):
    """Permute axes."""
    return np.transpose(x, as_ints(perm))


@register("squeeze", _T + "squeeze")
def squeeze(x, axes=None):
    """Drop size-1 axes (all of them when ``axes`` is None)."""
    x = np.asarray(x)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=norm_axes(axes, x.ndim))


@register("expand_dims", _T + "expand_dims")
def expand_dims(x, axes):
    """Insert size-1 axes; ``axes`` index the output (negative from its end)."""
    x = np.asarray(x)
    out_rank = x.ndim + len(as_ints(axes))
    return np.expand_dims(x, tuple(sorted(a % out_rank for a in as_ints(axes))))


@register("flatten2d", _T + "flatten2d")
def flatten2d(x, axis=1):
    """(d0..d_{axis−1}, d_axis..) → (Π first, Π rest)."""
    x = np.asarray(x)
    a = as_int(axis) % x.ndim if x.ndim else 0
    return x.reshape(int(np.prod(x.shape[:a])), -1)


@register("reverse", _T + "reverse")
def reverse(x, axes=None):
    """Reverse along ``axes`` (all when None)."""
    x = np.asarray(x)
    return np.flip(x, axis=norm_axes(axes, x.ndim))


@register("slice_by_index", _T + "slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """x[begin:end:stride] per axis (Python semantics); masks ignore begin/end; a squeeze_mask axis ignores end and
    stride, takes the single element at begin and is dropped."""
    x = np.asarray(x)
    n = x.ndim
    b, e = as_ints(begin), as_ints(end)
    st = as_ints(stride) if stride is not None else [1] * n
    bm = [bool(v) for v in np.asarray(begin_mask).reshape(-1)] if begin_mask is not None else [False] * n
    em = [bool(v) for v in np.asarray(end_mask).reshape(-1)] if end_mask is not None else [False] * n
    sq = [bool(v) for v in np.asarray(squeeze_mask).reshape(-1)] if squeeze_mask is not None else [False] * n
    one = np.iinfo(np.int32).max  # a stride past the end: exactly one element (coremltools' own slicing rule)
    out = x[tuple(slice(None if bm[i] else b[i], None if em[i] or sq[i] else e[i], one if sq[i] else st[i])
                  for i in range(n))]
    drop = tuple(i for i in range(n) if sq[i])
    return np.squeeze(out, axis=drop) if drop else out


@register("slice_by_size", _T + "slice_by_size")
def slice_by_size(x, begin, size):
    """x[begin : begin + size] per axis; size −1 runs to the end."""
    x = np.asarray(x)
    b = [v % d if d else 0 for v, d in zip(as_ints(begin), x.shape)]
    return x[tuple(slice(bi, None if s == -1 else bi + s) for bi, s in zip(b, as_ints(size)))]


@register("concat", _O + "concat", variadic=("values",))
def concat(values, axis, interleave=False):
    """Join along ``axis``; ``interleave`` alternates equal-sized slices of the inputs."""
    vals = [np.asarray(v) for v in values]
    a = as_int(axis) % vals[0].ndim
    if as_bool(interleave):
        stacked = np.stack(vals, axis=a + 1)
        shape = list(vals[0].shape)
        shape[a] *= len(vals)
        return stacked.reshape(shape)
    return np.concatenate(vals, axis=a)


@register("stack", _O + "stack", variadic=("values",))
def stack(values, axis):
    """Stack along a new axis."""
    vals = [np.asarray(v) for v in values]
    return np.stack(vals, axis=as_int(axis) % (vals[0].ndim + 1))


@register("split", _O + "split")
def split(x, axis, num_splits=None, split_sizes=None):
    """Split along ``axis`` into ``num_splits`` equal parts or parts of ``split_sizes`` (several outputs)."""
    x = np.asarray(x)
    a = as_int(axis) % x.ndim
    if split_sizes is not None:
        bounds = np.cumsum(as_ints(split_sizes))[:-1]
        return tuple(np.split(x, bounds, axis=a))
    return tuple(np.split(x, as_int(num_splits), axis=a))


@register("tile", _O + "tile")
def tile(x, reps):
    """Repeat x ``reps[i]`` times along axis i."""
    return np.tile(x, as_ints(reps))


@register("pad", _O + "pad")
def pad(x, pad, mode="constant", constant_val=0.0):
    """Pad the last len(pad)/2 axes; modes constant, reflect, replicate."""
    x = np.asarray(x)
    p = as_ints(pad)
    k = len(p) // 2
    widths = [(0, 0)] * (x.ndim - k) + [(p[2 * i], p[2 * i + 1]) for i in range(k)]
    m = as_str(mode)
    if m == "constant":
        return np.pad(x, widths, constant_values=as_float(constant_val))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[m])


@register("range_1d", _O + "range_1d")
def range_1d(end, start, step):
    """[start, start + step, …) up to ``end`` (exclusive)."""
    s, e, st = (np.asarray(v).reshape(-1)[0] for v in (start, end, step))
    return np.arange(s, e, st)


@register("fill", _O + "fill")
def fill(shape, value=0.0):
    """A tensor of ``shape`` filled with ``value``."""
    v = np.asarray(value)
    return np.full(as_ints(shape), v, dtype=v.dtype)


@register("fill_like", "iOS16.tensor_operation.fill_like")
def fill_like(ref_tensor, value=0.0):
    """A tensor shaped like ``ref_tensor`` filled with ``value``."""
    v = np.asarray(value)
    return np.full(np.shape(ref_tensor), v, dtype=v.dtype)


@register("shape", _O + "shape")
def shape(x):
    """x's shape as int32."""
    return np.asarray(np.shape(x), dtype=np.int32)


@register("cumsum", _O + "cumsum")
def cumsum(x, axis=0, exclusive=False, reverse=False):
    """Cumulative sum along ``axis``; ``exclusive`` shifts by one, ``reverse`` runs from the end."""
    x = np.asarray(x)
    a = as_int(axis) % x.ndim
    y = np.flip(x, a) if as_bool(reverse) else x
    out = np.cumsum(y, axis=a, dtype=y.dtype)
    if as_bool(exclusive):
        out = np.concatenate([np.zeros_like(np.take(out, [0], axis=a)), np.delete(out, -1, axis=a)], axis=a)
    return np.flip(out, a) if as_bool(reverse) else out


@register("band_part", _O + "band_part")
def band_part(x, lower=-1, upper=-1):
    """Keep the band of the last two axes: ``lower`` sub-diagonals and ``upper`` super-diagonals (−1 = all)."""
    x = np.asarray(x)
    m, n = x.shape[-2:]
    i, j = np.arange(m)[:, None], np.arange(n)[None, :]
    lo, up = as_int(lower), as_int(upper)
    keep = ((lo < 0) | (i - j <= lo)) & ((up < 0) | (j - i <= up))
    return np.where(keep, x, np.zeros((), dtype=x.dtype))


@register("one_hot", _O + "one_hot")
def one_hot(indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    """One-hot vectors of ``one_hot_vector_size`` along a new ``axis``."""
    idx = np.asarray(indices)
    depth = as_int(one_hot_vector_size)
    hot = np.arange(depth) == idx[..., None]
    on, off = np.asarray(on_value), np.asarray(off_value)
    out = np.where(hot, on, off)
    return np.moveaxis(out, -1, as_int(axis) % (idx.ndim + 1))


@register("argsort", _O + "argsort")
def argsort(x, axis=-1, ascending=False):
    """Indices that sort x along ``axis`` (descending unless ``ascending``; stable), int32."""
    x = np.asarray(x)
    a = as_int(axis)
    order = np.argsort(x if as_bool(ascending) else -x.astype(np.float64), axis=a, kind="stable")
    return order.astype(np.int32)


@register("topk", _O + "topk")
def topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, output_indices_dtype="int32"):
    """The ``k`` largest (or smallest) values along ``axis`` and their indices."""
    x = np.asarray(x)
    a = as_int(axis)
    idx = np.take(argsort(x, a, ascending), np.arange(as_int(k)), axis=a)
    idx = idx.astype(MIL_DTYPES[as_str(output_indices_dtype)])
    vals = np.take_along_axis(x, idx, axis=a)
    return (vals, idx) if return_indices is None or as_bool(return_indices) else vals


@register("non_zero", _O + "non_zero")
def non_zero(x):
    """Coordinates (N, rank) of the non-zero elements, int32."""
    return np.argwhere(np.asarray(x)).astype(np.int32)


# --- gather / scatter -------------------------------------------------------------------------------------------

def _wrap(indices: np.ndarray, size: int) -> np.ndarray:
    idx = np.asarray(indices).astype(np.int64)
    return np.where(idx < 0, idx + size, idx)


@register("gather", _G + "gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """x's slices at ``indices`` along ``axis`` (negative indices count from the end); ``batch_dims`` leading
    axes of x and indices are matched, not gathered."""
    x = np.asarray(x)
    a, bd = as_int(axis) % x.ndim, as_int(batch_dims)
    if bd == 0:
        return np.take(x, _wrap(indices, x.shape[a]), axis=a)
    idx = np.asarray(indices)
    return np.stack([gather(x[i], idx[i], a - 1, bd - 1) for i in range(x.shape[0])])


@register("gather_along_axis", _G + "gather_along_axis")
def gather_along_axis(x, indices, axis=0, validate_indices=False):
    """out[i][j] = x[indices[i][j]][j] along ``axis`` (np.take_along_axis)."""
    x = np.asarray(x)
    a = as_int(axis) % x.ndim
    return np.take_along_axis(x, _wrap(indices, x.shape[a]), axis=a)


@register("gather_nd", _G + "gather_nd")
def gather_nd(x, indices, batch_dims=0, validate_indices=False):
    """x indexed by the last axis of ``indices`` (length K ≤ rank); ``batch_dims`` leading axes are matched."""
    x, idx = np.asarray(x), np.asarray(indices)
    bd = as_int(batch_dims)
    if bd:
        return np.stack([gather_nd(x[i], idx[i], bd - 1) for i in range(x.shape[0])])
    k = idx.shape[-1]
    coords = tuple(_wrap(idx[..., j], x.shape[j]) for j in range(k))
    return x[coords]


_SCATTER = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
            "min": np.minimum}


def _scatter_into(data: np.ndarray, coords: tuple, updates: np.ndarray, mode: str) -> np.ndarray:
    out = np.array(data, copy=True)
    updates = np.asarray(updates, dtype=out.dtype)
    if mode == "update":
        out[coords] = updates
    else:
        _SCATTER[mode].at(out, coords, updates)
    return out


@register("scatter", _G + "scatter")
def scatter(data, indices, updates, axis=0, mode="add", validate_indices=False):
    """Write (or accumulate with ``mode``) ``updates`` into data's slices at 1-D ``indices`` along ``axis``."""
    data = np.asarray(data)
    a = as_int(axis) % data.ndim
    idx = _wrap(indices, data.shape[a]).reshape(-1)
    upd = np.moveaxis(np.asarray(updates), a, 0)
    moved = np.moveaxis(data, a, 0)
    out = _scatter_into(moved, (idx,), upd, as_str(mode))
    return np.moveaxis(out, 0, a)


@register("scatter_along_axis", _G + "scatter_along_axis")
def scatter_along_axis(data, indices, updates, axis=0, mode="add", validate_indices=False):
    """The inverse of gather_along_axis, writing or accumulating with ``mode``."""
    data = np.asarray(data)
    a = as_int(axis) % data.ndim
    idx = _wrap(indices, data.shape[a])
    grid = list(np.indices(idx.shape, sparse=True))
    grid[a] = idx
    return _scatter_into(data, tuple(grid), updates, as_str(mode))


@register("scatter_nd", _G + "scatter_nd")
def scatter_nd(data, indices, updates, mode="add", validate_indices=False):
    """Write or accumulate ``updates`` at the coordinates in the last axis of ``indices``."""
    data, idx = np.asarray(data), np.asarray(indices)
    coords = tuple(_wrap(idx[..., j], data.shape[j]) for j in range(idx.shape[-1]))
    return _scatter_into(data, coords, updates, as_str(mode))
