"""The repairs. Each is registered with the formats it serves, the pattern it matches and the equivalent it writes;
its docstring shows the graph before and after. tests/repair/test_passes.py proves each one numerically equivalent
in PyTorch (and checks that each format's converter accepts the result).

Decomposition functions run while torch re-traces the program: they see FakeTensors (shapes, dtypes, strides but
no values) and return ``NotImplemented`` for a node they do not handle, which keeps that node as it was.
"""

from __future__ import annotations

import math
from typing import Any

from mobilize.repair.registry import register

# --- arithmetic ---------------------------------------------------------------------------------------------------


@register("fmod-remainder", formats=("coreml",), pattern="aten.fmod (C-style remainder, sign of the dividend)",
          equivalent="remainder(a, b) corrected by b where its sign differs from a's",
          ops=("aten.fmod.Scalar", "aten.fmod.Tensor"))
def fmod_remainder() -> dict[Any, Any]:
    """``torch.fmod`` → ``torch.remainder`` (Core ML's ``mod``, sign of the divisor) plus a sign correction.

    Before::

        %r = aten.fmod.Scalar(%a, 0.75)

    After::

        %m   = aten.remainder.Scalar(%a, 0.75)
        %fix = (%m != 0) & ((%m < 0) != (%a < 0))
        %r   = aten.where.self(%fix, %m - 0.75, %m)

    Both are ``a - b·q`` with ``q`` the quotient rounded toward zero (fmod) or down (remainder): they differ by
    exactly ``b`` where the result's sign differs from the dividend's. NaN and ±inf dividends and a zero float divisor
    give NaN in both.
    """
    import torch

    aten = torch.ops.aten

    def fmod(a: Any, b: Any) -> Any:
        m = torch.remainder(a, b)
        fix = (m != 0) & ((m < 0) != (a < 0))
        return torch.where(fix, m - b, m)

    return {aten.fmod.Scalar: fmod, aten.fmod.Tensor: fmod}


# --- layout -------------------------------------------------------------------------------------------------------


@register("roll-slices", formats=("coreml",), pattern="aten.roll (torch's default decomposition: index_select "
          "with fmod-computed indices, which Core ML rejects)", equivalent="cat of two slices per rolled dim",
          ops=("aten.roll.default",), symptoms=("fmod",))
def roll_slices() -> dict[Any, Any]:
    """``torch.roll`` → two slices concatenated in the other order, per rolled dim (windowed attention shifts its
    windows this way; Swin, Swin v2).

    Before (after torch's default decomposition, as Core ML sees it)::

        %i = aten.fmod.Scalar(aten.add.Tensor(aten.arange(0, 8), 5), 8)
        %y = aten.index_select(%x, 1, %i)

    After::

        %y = aten.cat([aten.slice(%x, 1, 3, 8), aten.slice(%x, 1, 0, 3)], 1)

    Exact: the same elements, moved. Dims of symbolic size keep the original op.
    """
    import torch

    aten = torch.ops.aten

    def roll(x: Any, shifts: Any, dims: Any = ()) -> Any:
        shifts, dims = list(shifts), list(dims)
        if not dims:  # roll of the flattened tensor
            if len(shifts) != 1 or not isinstance(x.numel(), int):
                return NotImplemented
            return roll(x.reshape(-1), shifts, [0]).reshape(x.shape)
        if len(shifts) != len(dims) or not all(isinstance(x.shape[d], int) for d in dims):
            return NotImplemented
        changed = False
        for s, d in zip(shifts, dims):
            n = x.shape[d]
            if not isinstance(s, int):
                return NotImplemented
            s = s % n if n else 0
            if s:
                x = aten.cat.default([aten.slice.Tensor(x, d, n - s, n), aten.slice.Tensor(x, d, 0, n - s)], d)
                changed = True
        return x if changed else aten.clone.default(x)

    return {aten.roll.default: roll}


@register("alias-identity", formats=("coreml",), pattern="aten.alias (a no-op view: torch.export records a full-length "
          "slice such as CLIP's and BERT's position_ids[:, :n] this way)",
          equivalent="aten.clone (Core ML: identity)", ops=("aten.alias.default",))
def alias_identity() -> dict[Any, Any]:
    """``aten.alias`` → ``aten.clone``: the functional program has no mutations, so a copy reads as the alias did.

    Before::

        %y = aten.alias.default(%x)

    After::

        %y = aten.clone.default(%x)
    """
    import torch

    aten = torch.ops.aten
    return {aten.alias.default: lambda x: aten.clone.default(x)}


@register("as-strided-gather", formats=("coreml",), pattern="aten.as_strided on a contiguous tensor (adaptive "
          "pooling to 1, unfold-style windows)", equivalent="reshape when the strides are contiguous, else a gather "
          "of the flattened tensor at computed offsets", ops=("aten.as_strided.default",))
def as_strided_gather() -> dict[Any, Any]:
    """``aten.as_strided`` → ``reshape`` (strides that only relabel a contiguous layout, as torch's decomposition of
    ``adaptive_avg_pool1d(x, 1)`` writes) or an ``index_select`` of the flattened input at
    ``offset + Σ index_i·stride_i`` (any other window over a contiguous input).

    Before::

        %y = aten.as_strided.default(%mean, [1, 128, 1, 1], [128, 1, 128, 128])

    After::

        %y = aten.reshape.default(%mean, [1, 128, 1, 1])

    Exact. Inputs that are not contiguous, or of symbolic size, keep the original op.
    """
    import torch

    aten = torch.ops.aten

    def as_strided(x: Any, size: Any, stride: Any, storage_offset: Any = None) -> Any:
        size, stride, offset = list(size), list(stride), int(storage_offset or 0)
        if not all(isinstance(v, int) for v in [*size, *stride, *x.shape]) or not x.is_contiguous() \
                or x.storage_offset() != 0:
            return NotImplemented
        if offset == 0 and math.prod(size) == x.numel() and _contiguous(size, stride):
            return aten.reshape.default(x, size)
        index = None
        for d, (n, s) in enumerate(zip(size, stride)):
            shape = [1] * len(size)
            shape[d] = n
            term = torch.arange(n, dtype=torch.int64).mul(s).reshape(shape)
            index = term if index is None else index + term
        if index is None:  # a 0-d result
            return aten.reshape.default(aten.slice.Tensor(x.reshape(-1), 0, offset, offset + 1), [])
        flat = aten.index_select.default(x.reshape(-1), 0, (index + offset).reshape(-1))
        return aten.reshape.default(flat, size)

    return {aten.as_strided.default: as_strided}


def _contiguous(size: list[int], stride: list[int]) -> bool:
    """Whether ``stride`` is the row-major layout of ``size`` (strides of size-1 dims do not matter)."""
    expect = 1
    for n, s in reversed(list(zip(size, stride))):
        if n != 1 and s != expect:
            return False
        expect *= n
    return True


@register("im2col-grouped-conv", formats=("coreml",), pattern="aten.im2col (nn.Unfold / F.unfold; torch's "
          "decomposition gathers a rank-6 tensor, Core ML allows rank ≤ 5)", equivalent="a grouped convolution "
          "with one-hot kernels (one group per input channel), reshaped to (N, C·kh·kw, L)",
          ops=("aten.im2col.default",), messages=(r"supports tensors with rank <= 5",))
def im2col_grouped_conv() -> dict[Any, Any]:
    """``F.unfold`` (``aten.im2col``) → a grouped ``conv2d`` whose kernels are one-hot: output channel
    ``c·kh·kw + i·kw + j`` of group ``c`` reads input channel ``c`` at kernel offset ``(i, j)`` (ConvBERT's span
    convolution).

    Before::

        %cols = aten.im2col.default(%x, [9, 1], [1, 1], [4, 0], [1, 1])        # x: (N, C, H, W)

    After::

        %w    = one-hot (C·9, 1, 9, 1) kernel, built from arange/eq (constant-folded by the converter)
        %y    = aten.convolution.default(%x, %w, None, [1, 1], [4, 0], [1, 1], False, [0, 0], C)
        %cols = aten.reshape.default(%y, [N, C·9, L])

    Exact (each output is one input value times 1, plus zeros), C·kh·kw weights instead of the C²·kh·kw of a dense
    one-hot convolution.
    """
    import torch

    aten = torch.ops.aten

    def im2col(x: Any, kernel_size: Any, dilation: Any, padding: Any, stride: Any) -> Any:
        if x.dim() != 4 or not all(isinstance(v, int) for v in x.shape):
            return NotImplemented
        n, c = x.shape[0], x.shape[1]
        kh, kw = kernel_size
        k = kh * kw
        pick = torch.arange(c * k, dtype=torch.int64).remainder(k).reshape(c * k, 1, 1, 1)
        where = torch.arange(k, dtype=torch.int64).reshape(1, 1, kh, kw)
        weight = (pick == where).to(x.dtype)
        y = aten.convolution.default(x, weight, None, list(stride), list(padding), list(dilation), False, [0, 0], c)
        return aten.reshape.default(y, [n, c * k, -1])

    return {aten.im2col.default: im2col}


@register("full-like-dtype", formats=("coreml",), pattern="aten.full_like of a float tensor with an integer fill "
          "value (zeros_like, ones_like): coremltools types the result by the Python value (int32)",
          equivalent="the same full_like with the fill value as a float", ops=("aten.full_like.default",),
          messages=(r"must have the same data type",))
def full_like_dtype() -> dict[Any, Any]:
    """``torch.zeros_like(x)`` of a float ``x`` → a float fill value, so Core ML's ``fill_like`` is float too.

    Before::

        %z = aten.full_like.default(%x, 0)            # coremltools: fill_like(value=0) → int32

    After::

        %z = aten.full_like.default(%x, 0.0)          # fill_like(value=0.0) → fp32, as in PyTorch

    Exact. Integer and bool results keep the original node.
    """
    import torch

    aten = torch.ops.aten

    def full_like(x: Any, fill_value: Any, **kwargs: Any) -> Any:
        dtype = kwargs.get("dtype") or x.dtype
        if not dtype.is_floating_point or isinstance(fill_value, float):
            return NotImplemented
        return aten.full_like.default(x, float(fill_value), **kwargs)

    return {aten.full_like.default: full_like}


@register("high-rank-reduce", formats=("coreml",), pattern="a reduction (max, min, sum, mean, argmax …) over one "
          "dim of a tensor of rank > 5 (Core ML allows rank ≤ 5; Hiera's query pooling)", equivalent="the same "
          "reduction on a rank-3 view (dims before | reduced dim | dims after), viewed back",
          ops=("aten.max.dim", "aten.min.dim", "aten.amax.default", "aten.amin.default", "aten.sum.dim_IntList",
               "aten.mean.dim", "aten.argmax.default", "aten.argmin.default"),
          messages=(r"supports tensors with rank <= 5",))
def high_rank_reduce() -> dict[Any, Any]:
    """Reduce a rank > 5 tensor over one dim as a rank-3 tensor: ``(∏ dims before, reduced dim, ∏ dims after)``.

    Before::

        %q = aten.view.default(%x, [1, 2, 4, 4, 16, 8])                    # rank 6
        %m = aten.max.dim(%q, 3)

    After::

        %q3 = aten.view.default(%q, [32, 4, 128])
        %m3 = aten.max.dim(%q3, 1)
        %m  = (aten.view.default(%m3[0], [1, 2, 4, 16, 8]), aten.view.default(%m3[1], [1, 2, 4, 16, 8]))

    Exact (the same elements reduced in the same groups). The high-rank view that remains is folded into a single
    reshape by ``high-rank-gather``.
    """
    import torch

    aten = torch.ops.aten

    def reshaped(x: Any, dims: Any, keepdim: bool) -> tuple[Any, list[int]] | None:
        if x.dim() <= 5 or not all(isinstance(s, int) for s in x.shape):
            return None
        ds = sorted(d % x.dim() for d in ([dims] if isinstance(dims, int) else list(dims)))
        if len(ds) != 1:
            return None
        d = ds[0]
        shape = list(x.shape)
        out = shape[:d] + ([1] if keepdim else []) + shape[d + 1:]
        x3 = aten.view.default(aten.clone.default(x, memory_format=torch.contiguous_format),
                               [math.prod(shape[:d]), shape[d], math.prod(shape[d + 1:])])
        return x3, out

    def pair(op: Any) -> Any:  # (values, indices) reductions
        def fn(x: Any, dim: int, keepdim: bool = False) -> Any:
            r = reshaped(x, dim, keepdim)
            if r is None:
                return NotImplemented
            values, indices = op(r[0], 1)
            return aten.view.default(values, r[1]), aten.view.default(indices, r[1])
        return fn

    def single(op: Any, **fixed: Any) -> Any:
        def fn(x: Any, dim: Any = None, keepdim: bool = False, **kwargs: Any) -> Any:
            r = None if dim is None else reshaped(x, dim, keepdim)
            if r is None:
                return NotImplemented
            return aten.view.default(op(r[0], *fixed.get("dim_arg", ([1],)), False, **kwargs), r[1])
        return fn

    return {aten.max.dim: pair(aten.max.dim), aten.min.dim: pair(aten.min.dim),
            aten.amax.default: single(aten.amax.default), aten.amin.default: single(aten.amin.default),
            aten.sum.dim_IntList: single(aten.sum.dim_IntList), aten.mean.dim: single(aten.mean.dim),
            aten.argmax.default: single(aten.argmax.default, dim_arg=(1,)),
            aten.argmin.default: single(aten.argmin.default, dim_arg=(1,))}


@register("col2im-grouped-conv-transpose", formats=("coreml", "tflite"), always=("tflite",),
          pattern="aten.col2im (nn.Fold / F.fold): Core ML gets torch's decomposition, an accumulating index_put it "
          "rejects (its own col2im needs stride ≥ kernel and no padding); litert-torch writes a STABLEHLO_SCATTER "
          "LiteRT cannot run (\"Only update, Add, … are currently supported for stablehlo.scatter\")",
          equivalent="a grouped transposed convolution with one-hot kernels (the adjoint of im2col-grouped-conv)",
          ops=("aten.col2im.default",), symptoms=("index_put",),
          messages=(r"only torch\.index_put\(\.\.\., accumulate=False\) handled",))
def col2im_grouped_conv_transpose() -> dict[Any, Any]:
    """``F.fold`` (``aten.col2im``) → a grouped ``conv_transpose2d`` whose kernels are one-hot: input channel
    ``c·kh·kw + i·kw + j`` adds its value at kernel offset ``(i, j)`` of output channel ``c`` (MobileViT v2 folds
    its patches back this way).

    Before::

        %y = aten.col2im.default(%cols, [8, 8], [2, 2], [1, 1], [0, 0], [2, 2])     # cols: (N, C·4, 16)

    After::

        %c = aten.view.default(%cols, [N, C·4, 4, 4])
        %y = aten.convolution.default(%c, %w, None, [2, 2], [0, 0], [1, 1], True, [0, 0], C)
        # %w: one-hot (C·4, 1, 2, 2), built from arange/eq (constant-folded by the converter)

    Exact where the windows do not overlap (each output is one input value); overlapping windows add the same
    values in another order (float rounding only).
    """
    import torch

    aten = torch.ops.aten

    def col2im(x: Any, output_size: Any, kernel_size: Any, dilation: Any, padding: Any, stride: Any) -> Any:
        if x.dim() != 3 or not all(isinstance(v, int) for v in x.shape):
            return NotImplemented
        (oh, ow), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (list(v) for v in (output_size, kernel_size, dilation,
                                                                               padding, stride))
        k = kh * kw
        n, ck, length = x.shape
        c = ck // k
        lh = (oh + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        lw = (ow + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if c * k != ck or lh * lw != length:
            return NotImplemented
        extra = [oh - ((lh - 1) * sh - 2 * ph + dh * (kh - 1) + 1), ow - ((lw - 1) * sw - 2 * pw + dw * (kw - 1) + 1)]
        if not all(0 <= e < max(s, d) for e, s, d in zip(extra, (sh, sw), (dh, dw))):
            return NotImplemented
        pick = torch.arange(ck, dtype=torch.int64).remainder(k).reshape(ck, 1, 1, 1)
        where = torch.arange(k, dtype=torch.int64).reshape(1, 1, kh, kw)
        weight = (pick == where).to(x.dtype)
        cols = aten.view.default(x, [n, ck, lh, lw])
        return aten.convolution.default(cols, weight, None, [sh, sw], [ph, pw], [dh, dw], True, extra, c)

    return {aten.col2im.default: col2im}


# --- indexing -----------------------------------------------------------------------------------------------------


@register("index-put-leading", formats=("coreml",), pattern="aten.index_put with whole slices (x[:, idx] = v, "
          "x[:, idx] += v): coremltools handles a ':' only with scalar indices and without accumulate",
          equivalent="the indexed dims permuted to the front, index_put without slices, permuted back",
          ops=("aten.index_put.default",), messages=(r"only torch\.index_put\(\.\.\., accumulate=False\) handled",
                                                      r"Component tensor \w+ has shape"))
def index_put_leading() -> dict[Any, Any]:
    """``x[:, idx] = v`` → permute the indexed dims to the front, scatter there (Core ML's ``scatter_nd``), permute
    back.

    Before::

        %y = aten.index_put.default(%x, [None, %idx], %v, True)          # x: (2, 5, 4), idx: (3,), v: (2, 3, 4)

    After::

        %xp = aten.permute.default(%x, [1, 0, 2])                         # (5, 2, 4); index tensors expanded
                                                                          # to one shape (coremltools stacks them)
        %vp = aten.permute.default(aten.expand.default(%v, [2, 3, 4]), [1, 0, 2])
        %yp = aten.index_put.default(%xp, [%idx], %vp, True)
        %y  = aten.permute.default(%yp, [1, 0, 2])

    Exact (the same writes, or the same sums with ``accumulate``). Boolean masks keep the original op.
    """
    import torch

    aten = torch.ops.aten

    def index_put(x: Any, indices: Any, values: Any, accumulate: bool = False) -> Any:
        indices = list(indices)
        dims = [d for d, i in enumerate(indices) if i is not None]
        if not dims or len(dims) == len(indices) == x.dim() or all(i is not None for i in indices):
            return NotImplemented
        if any(indices[d].dtype in (torch.bool, torch.uint8) for d in dims):
            return NotImplemented
        indices += [None] * (x.dim() - len(indices))
        idx = [indices[d] for d in dims]
        block = list(torch.broadcast_shapes(*[i.shape for i in idx]))
        # coremltools stacks the index tensors as they are: give them the common shape
        idx = [aten.expand.default(i, block) if list(i.shape) != block else i for i in idx]
        rest = [d for d in range(x.dim()) if d not in dims]
        adjacent = dims == list(range(dims[0], dims[-1] + 1))
        at = dims[0] if adjacent else 0  # where torch puts the index block in x[indices]
        picked = [x.shape[d] for d in rest]
        picked[at:at] = block
        v = aten.expand.default(values, picked) if list(values.shape) != picked else values
        nb = len(block)
        v = aten.permute.default(v, list(range(at, at + nb)) + [i for i in range(len(picked)) if not at <= i < at + nb])
        order = dims + rest
        out = aten.index_put.default(aten.permute.default(x, order), idx, v, accumulate)
        back = [order.index(d) for d in range(x.dim())]
        return aten.permute.default(out, back)

    return {aten.index_put.default: index_put}


# --- TFLite -------------------------------------------------------------------------------------------------------


@register("prelu-maximum", formats=("tflite",), always=("tflite",), kind="graph",
          pattern="PReLU (aten.prelu): litert-torch writes relu(x) − w·relu(−x), and after a Linear or Conv the TFLite "
          "converter folds the negation into a second, negated copy of that layer's weights",
          equivalent="maximum(x, w·x) when every slope is in (0, 1], else relu(x) + w·min(x, 0)",
          ops=("aten.prelu.default",))
def prelu_maximum(program: Any) -> list[Any]:
    """PReLU → ``maximum(x, w·x)`` (slopes in (0, 1], as trained PReLUs have) or ``relu(x) + w·min(x, 0)``.

    Neither gives the converter a negation to fold into the layer before: the file stores that layer's weights once.
    ``maximum(x, w·x)`` also keeps one copy of the layer's *compute* (the converter fuses a ReLU into a duplicated
    layer, so the ``relu`` form, like litert-torch's own lowering, computes the layer twice). MUL, MAXIMUM, MINIMUM,
    ADD run in XNNPACK and on the GPU delegate.

    Before (after a Linear; the file stores W and −W)::

        %h = FULLY_CONNECTED(%x, W) ; %n = FULLY_CONNECTED(%x, −W, fused relu)
        %y = SUB(RELU(%h), MUL(%w, %n))

    After::

        %h = FULLY_CONNECTED(%x, W)
        %y = MAXIMUM(%h, MUL(%w, %h))

    Bit-identical to PyTorch's ``where(x > 0, x, w·x)``: for 0 < w ≤ 1, ``w·x ≤ x`` exactly when ``x ≥ 0``, and the
    maximum returns one of the two values PyTorch would (the same single rounding of ``w·x``); NaN stays NaN, ±inf
    stay ±inf. A zero slope (``0·inf`` is NaN), slopes above 1 or below 0, and slopes not known at export use
    ``relu(x) + w·min(x, 0)``, also exact (one of the terms is always an exact zero).
    """
    import torch

    aten = torch.ops.aten
    graph = program.graph_module.graph
    sig = program.graph_signature
    values = {**{k: program.state_dict.get(v) for k, v in sig.inputs_to_parameters.items()},
              **{k: program.state_dict.get(v, program.constants.get(v)) for k, v in sig.inputs_to_buffers.items()},
              **{k: program.constants.get(v) for k, v in sig.inputs_to_lifted_tensor_constants.items()}}
    changed = []
    for node in list(graph.nodes):
        if node.op != "call_function" or str(node.target) != "aten.prelu.default":
            continue
        x, w = node.args[0], node.args[1]
        xv, wv = x.meta.get("val"), w.meta.get("val") if isinstance(w, torch.fx.Node) else None
        if xv is None or wv is None or not xv.dtype.is_floating_point:
            continue
        if wv.numel() != 1 and xv.dim() >= 2:  # one slope per channel (dim 1), as torch.prelu broadcasts it
            w = insert_before(node, aten.view.default, (w, [1, wv.numel()] + [1] * (xv.dim() - 2)), {})
        real = values.get(node.args[1].name) if node.args[1].op == "placeholder" else None
        if real is not None and bool(((real > 0) & (real <= 1)).all()):
            wx = insert_before(node, aten.mul.Tensor, (w, x), {})
            out = insert_before(node, aten.maximum.default, (x, wx), {})
        else:
            low = insert_before(node, aten.mul.Tensor, (w, insert_before(node, aten.clamp_max.default, (x, 0), {})),
                                {})
            out = insert_before(node, aten.add.Tensor, (insert_before(node, aten.relu.default, (x,), {}), low), {})
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        changed.append(out)
    return changed


_BINARY = ("aten.mul.Tensor", "aten.add.Tensor", "aten.sub.Tensor", "aten.div.Tensor", "aten.maximum.default",
           "aten.minimum.default", "aten.pow.Tensor_Tensor")


@register("implicit-broadcast", formats=("tflite",), pattern="a binary op (mul, add, sub, div …) with an explicitly "
          "expanded operand (x * y.expand_as(x)): litert-torch's layout passes give the two operands "
          "incompatible shapes (\"operands don't have broadcast-compatible shapes\"; MobileViT v2)",
          equivalent="the same op on the unexpanded operand (numpy broadcasting does the expansion)", ops=_BINARY,
          kind="graph", messages=(r"operands don't have broadcast-compatible shapes",))
def implicit_broadcast(program: Any) -> list[Any]:
    """``op(a, expand(b))`` → ``op(a, b)`` when broadcasting ``a`` with ``b`` gives the same shape.

    Before::

        %e = aten.expand.default(%ctx, [1, 8, 4, 16])                     # ctx: (1, 8, 4, 1)
        %y = aten.mul.Tensor(%v, %e)                                      # v: (1, 8, 4, 16)

    After::

        %y = aten.mul.Tensor(%v, %ctx)

    Exact: broadcasting reads the same values the expand would have repeated.
    """
    import torch

    graph = program.graph_module.graph
    changed = []
    for node in list(graph.nodes):
        if node.op != "call_function" or str(node.target) not in _BINARY or len(node.args) < 2:
            continue
        out = node.meta.get("val")
        if not isinstance(out, torch.Tensor):
            continue
        args = list(node.args)
        for i, arg in enumerate(args[:2]):
            if getattr(arg, "op", None) != "call_function" or str(arg.target) != "aten.expand.default":
                continue
            src, other = arg.args[0], args[1 - i]
            shapes = [getattr(v.meta.get("val"), "shape", None) if isinstance(v, torch.fx.Node) else ()
                      for v in (src, other)]
            if shapes[0] is None or shapes[1] is None:
                continue
            try:
                same = list(torch.broadcast_shapes(shapes[0], shapes[1])) == list(out.shape)
            except RuntimeError:
                same = False
            if same:
                node.replace_input_with(arg, src)
                args = list(node.args)
                changed.append(node)
    graph.eliminate_dead_code()
    return changed


# --- graph passes -------------------------------------------------------------------------------------------------

@register("gelu-tanh-formula", formats=("coreml",), always=("coreml",),
          pattern="aten.gelu(x, approximate='tanh') (gelu_pytorch_tanh: SigLIP, GPT-2 style): coremltools' gelu "
          "converter reads approximate only as a positional MIL value, which the torch.export frontend never gives "
          "it, and silently writes an exact (erf) GELU", equivalent="0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), "
          "PyTorch's own formula", ops=("aten.gelu.default",),
          applies=lambda node: "tanh" in (*node.args[1:], *node.kwargs.values()))
def gelu_tanh_formula() -> dict[Any, Any]:
    """The tanh-approximate GELU written out, so Core ML computes what PyTorch computes.

    Not a conversion failure: the file converts, but computes the erf GELU where the model uses the tanh
    approximation — up to ~5e-4 off per activation, which fp32 parity catches and fp16 tolerances hide (SigLIP's
    towers failed fp32 parity in benchmarks/coverage.md). Applied to every Core ML export that has such a node.

    Before::

        %g = aten.gelu.default(%x, approximate="tanh")          # → MIL gelu(mode=EXACT)

    After::

        %c = aten.mul(aten.add(%x, aten.mul(aten.pow(%x, 3), 0.044715)), 0.7978845608)
        %g = aten.mul(aten.mul(%x, 0.5), aten.add(aten.tanh(%c), 1))

    Equal to PyTorch's kernel (the same formula) up to float rounding; exact-mode GELUs keep the native op.
    """
    import torch

    aten = torch.ops.aten
    k = math.sqrt(2 / math.pi)

    def gelu(x: Any, approximate: str = "none") -> Any:
        if approximate != "tanh":
            return NotImplemented
        inner = aten.mul.Tensor(aten.add.Tensor(x, aten.mul.Tensor(aten.pow.Tensor_Scalar(x, 3), 0.044715)), k)
        return aten.mul.Tensor(aten.mul.Tensor(x, 0.5), aten.add.Tensor(aten.tanh.default(inner), 1))

    return {aten.gelu.default: gelu}


_STRIDE_CHANGING = ("aten.transpose.int", "aten.permute.default", "aten.t.default", "aten.expand.default",
                    "aten.unsqueeze.default", "aten.slice.Tensor", "aten.select.int", "aten.diagonal.default")
_VIEWS = ("aten.view.default", "aten._unsafe_view.default")


@register("view-contiguous", formats=("onnx",), pattern="aten.view of a transposed/permuted tensor (torch.onnx's "
          "decomposition changes that tensor's strides, then the view is invalid: windowed and relative-position "
          "attention)", equivalent="aten.clone(contiguous) before the view (an ONNX Identity, removed by the "
          "optimizer)", ops=_VIEWS, kind="graph",
          messages=(r"Cannot view a tensor with shape", r"view size is not compatible with input tensor"))
def view_contiguous(program: Any) -> list[Any]:
    """Insert ``clone(memory_format=contiguous)`` between a stride-changing view op and a ``view`` that reads it.

    torch.export records ``x.transpose(1, 2).reshape(...)`` as a plain ``view`` when the strides allow it at capture
    time (a fused attention kernel's output does); torch.onnx then decomposes the attention into math ops whose
    output has other strides, and re-running the graph fails with "Cannot view a tensor with shape …".

    Before::

        %t = aten.transpose.int(%attn, 1, 2)
        %v = aten.view.default(%t, [16, 16, -1])

    After::

        %t = aten.transpose.int(%attn, 1, 2)
        %c = aten.clone.default(%t, memory_format=torch.contiguous_format)
        %v = aten.view.default(%c, [16, 16, -1])

    Exact (a copy). The graph is functional (decomposed), so no mutation can go through the view.
    """
    import torch

    aten = torch.ops.aten
    graph = program.graph_module.graph
    changed = []
    for node in list(graph.nodes):
        if node.op != "call_function" or str(node.target) not in _VIEWS:
            continue
        src = node.args[0]
        if getattr(src, "op", None) != "call_function" or str(src.target) not in _STRIDE_CHANGING:
            continue
        copy = insert_before(node, aten.clone.default, (src,), {"memory_format": torch.contiguous_format})
        node.replace_input_with(src, copy)
        changed.append(node)
    return changed


_RESHAPES = ("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.clone.default",
             "aten.alias.default")
_MOVES = ("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.permute.default",
          "aten.transpose.int", "aten.clone.default", "aten.unsqueeze.default", "aten.squeeze.dim",
          "aten.squeeze.dims", "aten.squeeze.default", "aten.expand.default", "aten.slice.Tensor", "aten.select.int",
          "aten.alias.default")


@register("high-rank-gather", formats=("coreml",), pattern="a chain of reshapes/permutes/slices passing through "
          "tensors of rank > 5 (Core ML allows rank ≤ 5; Hiera's unroll/reroll)", equivalent="one gather of the "
          "flattened rank ≤ 5 input at positions computed once at export", ops=_MOVES, kind="graph",
          messages=(r"supports tensors with rank <= 5",))
def high_rank_gather(program: Any) -> list[Any]:
    """Replace a data-movement chain that goes through rank > 5 by a gather with a constant index.

    Pure data movement (view, permute, slice, expand …) only moves elements, so the whole chain from a rank ≤ 5
    tensor ``s`` to the first rank ≤ 5 result ``e`` is ``e = s.flatten()[idx].view(e.shape)``, where ``idx`` is the
    same chain run on ``arange(s.numel()).view(s.shape)`` now, with real tensors.

    Before::

        %a = aten.view.default(%s, [1, 2, 2, 4, 4, 16])                    # rank 6
        %b = aten.permute.default(%a, [0, 1, 3, 2, 4, 5])
        %e = aten.view.default(%b, [1, 64, 16])

    After::

        %c   = aten.clone.default(%s, memory_format=torch.contiguous_format)
        %f   = aten.view.default(%c, [-1])
        %g   = aten.index_select.default(%f, 0, %_mobilize_gather_0)      # a lifted int64 constant
        %e   = aten.view.default(%g, [1, 64, 16])

    A chain of reshapes only becomes one reshape. Exact (the same elements). Chains with symbolic shapes or other ops
    at rank > 5 are left alone.
    """
    import torch
    from torch._export.passes.lift_constants_pass import ConstantAttrMap, lift_constants_pass
    from torch._guards import detect_fake_mode

    aten = torch.ops.aten
    gm = program.graph_module
    graph = gm.graph

    def rank(n: Any) -> int | None:
        v = n.meta.get("val") if isinstance(n, torch.fx.Node) else None
        return v.dim() if isinstance(v, torch.Tensor) else None

    def static(n: Any) -> bool:
        return all(isinstance(d, int) for d in n.meta["val"].shape)

    changed = []
    for node in list(graph.nodes):
        if node.op != "call_function" or str(node.target) not in _MOVES or (rank(node) or 0) > 5 \
                or rank(node) is None or (rank(node.args[0]) or 0) <= 5:
            continue
        chain, cur = [node], node.args[0]
        while chain and (rank(cur) or 0) > 5:
            if cur.op != "call_function" or str(cur.target) not in _MOVES:
                chain = []
            else:
                chain.append(cur)
                cur = cur.args[0]
        if not chain or rank(cur) is None or not all(static(n) for n in [cur, *chain]):
            continue
        dense = insert_before(node, aten.clone.default, (cur,), {"memory_format": torch.contiguous_format})
        if all(str(n.target) in _RESHAPES for n in chain):  # only reshapes: one reshape does it
            out = insert_before(node, aten.view.default, (dense, list(node.meta["val"].shape)), {})
            node.replace_all_uses_with(out)
            changed.append(node)
            continue
        pos = torch.arange(cur.meta["val"].numel(), dtype=torch.int64).reshape(cur.meta["val"].shape)
        for n in reversed(chain):  # a view's element order is a reshape's (strides only decide if it is legal)
            op = aten.reshape.default if str(n.target) in _VIEWS else n.target
            pos = op(pos, *n.args[1:], **n.kwargs)
        name = f"_mobilize_gather_{len(changed)}"
        while hasattr(gm, name):
            name += "_"
        gm.register_buffer(name, pos.reshape(-1).contiguous(), persistent=False)
        with graph.inserting_before(node):
            index = graph.get_attr(name)
        fake = detect_fake_mode([cur.meta["val"]])
        index.meta["val"] = fake.from_tensor(getattr(gm, name)) if fake is not None else getattr(gm, name)
        index.meta["nn_module_stack"] = node.meta.get("nn_module_stack") or {}
        flat = insert_before(node, aten.view.default, (dense, [-1]), {})
        picked = insert_before(node, aten.index_select.default, (flat, 0, index), {})
        out = insert_before(node, aten.view.default, (picked, list(node.meta["val"].shape)), {})
        node.replace_all_uses_with(out)
        changed.append(node)
    if changed:
        graph.eliminate_dead_code()
        program.constants.update(lift_constants_pass(gm, program.graph_signature, ConstantAttrMap()))
        for name in list(dict(gm.named_buffers())):
            if name.startswith("_mobilize_gather_"):
                delattr(gm, name)
    return changed


def insert_before(anchor: Any, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A new ``call_function`` node before ``anchor`` with its ``val`` computed on FakeTensors and the anchor's
    provenance (module stack, stack trace), so converters and error messages treat it like the original."""
    import torch
    from torch._guards import detect_fake_mode

    graph = anchor.graph
    with graph.inserting_before(anchor):
        node = graph.call_function(target, args, kwargs)
    vals = [a.meta.get("val") for a in args if isinstance(a, torch.fx.Node)]
    fake = detect_fake_mode(vals)
    real_args = [a.meta.get("val") if isinstance(a, torch.fx.Node) else a for a in args]
    with fake if fake is not None else _nothing():
        node.meta["val"] = target(*real_args, **kwargs)
    for key in ("nn_module_stack", "stack_trace", "source_fn_stack", "from_node"):
        if key in anchor.meta:
            node.meta[key] = anchor.meta[key]
    return node


class _nothing:  # noqa: N801 - a no-op context manager
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
