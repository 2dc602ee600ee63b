"""Bias correction for onnxruntime's static int8 (empirical, as in Nagel et al. 2019, "Data-Free Quantization").

Rounding a layer's weights to int8 shifts the mean of its outputs: for output channel ``o`` the expected error is
``E[conv(x, ΔW)][o]`` with ``ΔW = dequant(quant(W)) − W``. Depthwise convolutions, whose 3×3 kernels see mostly
positive (ReLU6) inputs, suffer most: on EfficientNet-Lite0 the first depthwise conv's weight rounding alone costs more
than all its activation rounding. The shift is measured once on the calibration samples (each layer's input from the
float model) and subtracted from the layer's bias before onnxruntime quantizes the file; its weights — and so ΔW —
are unchanged by that.

``ΔW`` is computed with onnxruntime's own per-channel symmetric rounding (``quant_utils.quantize_data``), so it is
the rounding the quantizer will apply. Layers kept float are not corrected.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def weight_error(w: np.ndarray, axis: int) -> np.ndarray:
    """``dequant(quant(w)) − w`` for per-channel (along ``axis``) symmetric int8, as onnxruntime rounds it."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    moved = np.moveaxis(w, axis, 0)
    out = np.empty_like(moved)
    for c in range(moved.shape[0]):
        zp, scale, q = quantize_data(moved[c].ravel(), TensorProto.INT8, True)
        out[c] = ((np.asarray(q, np.float32) - np.float32(zp)) * np.float32(scale)).reshape(moved[c].shape) - moved[c]
    return np.moveaxis(out, 0, axis)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _targets(model: Any) -> list[tuple[Any, str]]:
    """(node, kind) for every Conv / Gemm with constant float weights and a constant 1-D bias."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3 or not n.input[2]:
            continue
        w, b = inits.get(n.input[1]), inits.get(n.input[2])
        if w is None or b is None or len(b.dims) != 1 or w.data_type != TensorProto.FLOAT or \
                b.data_type != TensorProto.FLOAT:
            continue
        a = _attrs(n)
        if n.op_type == "Conv" and (a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(w.dims) not in
                                    (3, 4, 5)):
            continue
        if n.op_type == "Gemm" and (a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0):
            continue
        out.append((n, n.op_type))
    return out


def _shift(node: Any, x: np.ndarray, dw: np.ndarray) -> np.ndarray:
    """Mean over samples and positions of the layer applied with weights ``dw`` (no bias) to ``x``."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    a = _attrs(node)
    if node.op_type == "Gemm":
        mean_x = x.reshape(-1, x.shape[-1]).astype(np.float64).mean(axis=0)
        return (dw @ mean_x if a.get("transB", 0) else mean_x @ dw).astype(np.float32)
    dims = dw.ndim - 2
    pads = list(a.get("pads", [0] * (2 * dims)))
    pad: list[int] = []
    for d in reversed(range(dims)):  # F.pad wants the last dimension first
        pad += [int(pads[d]), int(pads[d + dims])]
    xt = F.pad(torch.from_numpy(np.ascontiguousarray(x, np.float32)), pad)
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    y = conv(xt, torch.from_numpy(np.ascontiguousarray(dw)), None, list(a.get("strides", [1] * dims)), 0,
             list(a.get("dilations", [1] * dims)), int(a.get("group", 1)))
    return y.double().mean(dim=[0, *range(2, y.dim())]).float().numpy()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: trials running in parallel worker processes (``--jobs``) share the cache
    folder, and one must never read a file another is still writing (same content either way: each is
    deterministic in its inputs)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` written atomically (:func:`write_atomic`)."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())


def _cache(work: Path, kind: str, src: Path, calib: list[dict[str, np.ndarray]]) -> Path:
    """Where a per-(float file, calibration set size) measurement is kept in ``work``: every quantization trial of
    one export asks again, and the float file does not change between trials."""
    key = hashlib.sha256(src.read_bytes() + str(len(calib)).encode()).hexdigest()[:16]
    return work / f"onnx_{kind}_{key}.npz"


def _float_tensors(model: Any, tensors: Sequence[str], calib: list[dict[str, np.ndarray]],
                   work: Path) -> Iterator[dict[str, np.ndarray]]:
    """Run the float ``model`` unoptimised on each calibration feed with ``tensors`` exposed as outputs; yields one
    ``{tensor name: value}`` per feed (the feed's own inputs included)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    exposed = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    for t in dict.fromkeys(tensors):
        if t not in exposed:
            model.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    probe = work / f"onnx_float_probe_{os.getpid()}.onnx"  # trials in parallel worker processes share ``work``
    probe.write_bytes(model.SerializeToString())
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(probe), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        for feed in calib:
            yield {**dict(zip(names, sess.run(None, feed))), **feed}
    finally:
        probe.unlink(missing_ok=True)


def shifts(src: Path, calib: list[dict[str, np.ndarray]], work: Path) -> dict[str, np.ndarray]:
    """Per correctable layer (node name), the mean output shift its int8 weights cause (cached in ``work``)."""
    import onnx
    from onnx import numpy_helper

    cache = _cache(work, "bias_shifts", src, calib)
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    model = onnx.load(str(src))
    targets = _targets(model)
    if not targets:
        return {}
    inits = {i.name: i for i in model.graph.initializer}
    errors = {}
    for n, kind in targets:
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        axis = 0 if kind == "Conv" or _attrs(n).get("transB", 0) else 1
        errors[n.name] = weight_error(w, axis)
    acc: dict[str, np.ndarray] = {}
    for got in _float_tensors(model, [n.input[0] for n, _ in targets], calib, work):
        for n, _ in targets:
            s = _shift(n, np.asarray(got[n.input[0]]), errors[n.name])
            acc[n.name] = acc.get(n.name, 0) + s / len(calib)
    save_npz(cache, acc)
    return acc


def bias_corrected(src: Path, calib: list[dict[str, np.ndarray]], exclude: Sequence[str],
                   work: Path) -> tuple[Path, int]:
    """A copy of ``src`` whose quantized layers' biases absorb their int8 weight error; (path, layers corrected).

    Returns ``(src, 0)`` when nothing can be corrected (no Conv/Gemm with a constant bias).
    """
    import onnx
    from onnx import numpy_helper

    sh = shifts(src, calib, work)
    todo = {k: v for k, v in sh.items() if k not in set(exclude)}
    if not todo:
        return src, 0
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    users: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    done = 0
    for n in model.graph.node:
        if n.name in todo and users.get(n.input[2]) == 1:  # a shared bias tensor would correct two layers at once
            b = numpy_helper.to_array(inits[n.input[2]])
            if b.shape == todo[n.name].shape:
                inits[n.input[2]].CopyFrom(numpy_helper.from_array((b - todo[n.name]).astype(np.float32),
                                                                   n.input[2]))
                done += 1
    tag = hashlib.sha256("\n".join(sorted(exclude)).encode()).hexdigest()[:12]
    out = work / f"onnx_bias_corrected_{tag}.onnx"
    write_atomic(out, model.SerializeToString())
    return out, done


_PASS_THROUGH = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _pooled(model: Any) -> dict[str, str]:
    """Outputs of global average pooling (``GlobalAveragePool``, or ``ReduceMean`` over every spatial axis of an
    N×C×H×W… tensor) and of reshapes of them → the pooled input tensor. A mean over the last axis of a 3-D tensor
    may be layer-norm statistics (N×L×C) as well as pooling (N×C×L), so those are left out."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    shapes = {v.name: len(v.type.tensor_type.shape.dim) for v in [*model.graph.value_info, *model.graph.input]
              if v.type.tensor_type.HasField("shape")}
    out: dict[str, str] = {}
    for n in model.graph.node:
        rank = shapes.get(n.input[0]) if n.input else None
        if n.op_type == "GlobalAveragePool":
            out[n.output[0]] = n.input[0]
        elif n.op_type == "ReduceMean" and rank is not None and rank >= 4:  # rank 3 is ambiguous: N×L×C norms
            axes = _attrs(n).get("axes")
            if axes is None and len(n.input) > 1 and n.input[1] in inits:
                axes = inits[n.input[1]].tolist()
            if axes is not None and {a % rank for a in axes} == set(range(2, rank)):
                out[n.output[0]] = n.input[0]
    for n in model.graph.node:  # topological order: chains of reshapes inherit the pooled input
        if n.op_type in _PASS_THROUGH and n.input and n.input[0] in out:
            out[n.output[0]] = out[n.input[0]]
    return out


def pooled_ranges(src: Path, calib: list[dict[str, np.ndarray]], work: Path) -> dict[str, tuple[float, float]]:
    """Range overrides for globally pooled tensors: the range of what was pooled.

    A mean over a feature map is narrower than the map on the calibration data, and calibrating its int8 grid on that
    clips it on other data: on EfficientNet-Lite0 calibrated on crops of one photo, the pooled features reached 4.3
    on crops of another photo against 3.2 seen in calibration. The mean of values in [lo, hi] lies in [lo, hi] too,
    so using the pooled input's range never clips (flower crops: 25.2 → 27.0 dB).
    """
    import onnx
    from onnx import shape_inference

    cache = _cache(work, "pooled_ranges", src, calib)
    if cache.exists():
        with np.load(cache) as z:
            return {k: (float(z[k][0]), float(z[k][1])) for k in z.files}
    model = shape_inference.infer_shapes(onnx.load(str(src)))
    pooled = _pooled(model)
    sources = sorted(set(pooled.values()))
    lo = dict.fromkeys(sources, np.inf)
    hi = dict.fromkeys(sources, -np.inf)
    for got in _float_tensors(model, sources, calib, work) if sources else ():
        for t in sources:
            lo[t] = min(lo[t], float(np.min(got[t])))
            hi[t] = max(hi[t], float(np.max(got[t])))
    ranges = {t: (lo[s], hi[s]) for t, s in pooled.items() if np.isfinite(lo[s]) and hi[s] > lo[s]}
    save_npz(cache, {t: np.array(r) for t, r in ranges.items()})
    return ranges
