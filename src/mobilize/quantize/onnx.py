"""ONNX quantizer: onnxruntime.quantization on the fp32 file the exporter wrote.

- ``dynamic`` (int8-weights): ``quantize_dynamic``, per-channel int8 weights, activations quantized per run.
- ``qdq-per-channel`` / ``qoperator-per-channel`` (int8): ``quantize_static`` on real calibration data, per-channel
  symmetric int8 weights, int8 activations; the float graph is first run through ``quant_pre_process`` (shape
  inference + onnxruntime's graph optimisations) as onnxruntime recommends.
- ``matmul-nbits`` (int4-weights): ``MatMulNBitsQuantizer`` — 4-bit blockwise MatMul weights (onnxruntime's
  MatMulNBits kernel); convolutions and recurrent layers stay float (onnxruntime has no 4-bit kernel for them), and
  the notes list every op type whose weights stayed float.

Recurrent layers (``LSTM``, ``GRU``, ``RNN``), which none of onnxruntime's quantizers touch in a torch.onnx file, get
int8 weights in every int8 recipe from :mod:`mobilize.quantize.onnx_recurrent` (LSTM: ``DynamicQuantizeLSTM``;
GRU/RNN: int8 weights dequantized before the op).

Static recipes get bias correction and never-clipping ranges for pooled tensors
(:mod:`mobilize.quantize.onnx_bias`). Layers kept in float (sensitivity
fallback) are passed as ``nodes_to_exclude`` and isolated so that onnxruntime cannot re-quantize them at load time
(:func:`isolate_float`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import ConversionError, one_line
from mobilize.quantize.onnx_bias import _attrs, bias_corrected, pooled_ranges
from mobilize.quantize.onnx_recurrent import RECURRENT, float_weights, quantize_recurrent
from mobilize.quantize.recipes import Recipe

QUANTIZABLE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_METHODS = ("minmax", "percentile")


def layers(fp32: Path) -> list[dict[str, str]]:
    """Quantizable nodes of the float file (recurrent layers included): ``{"name", "op", "module"}`` (module =
    PyTorch path when known)."""
    import onnx

    model = onnx.load(str(fp32), load_external_data=False)
    out = []
    for n in model.graph.node:
        if n.op_type in QUANTIZABLE + RECURRENT:
            out.append({"name": n.name, "op": n.op_type, "module": _module_of(n)})
    return out


def _module_of(node: Any) -> str:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in json.loads(p.value.replace("'", '"')) if s]
            except ValueError:
                return ""
            return scopes[-2] if len(scopes) >= 2 else (scopes[0] if scopes else "")
    return ""


class _Reader:
    """onnxruntime CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.feeds = self.feeds[start_index:end_index]
        self.i = 0


def preprocess(fp32: Path, work: Path) -> Path:
    """``quant_pre_process`` once per float file (cached in ``work``)."""
    from onnxruntime.quantization import quant_pre_process

    out = work / "onnx_preprocessed.onnx"
    if not out.exists():  # written under a private name, then renamed: parallel trials (--jobs) share ``work``
        tmp = work / f".onnx_preprocessed.{os.getpid()}.onnx"
        try:
            quant_pre_process(str(fp32), str(tmp), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs; onnx shape inference
            quant_pre_process(str(fp32), str(tmp), skip_symbolic_shape=True)
        os.replace(tmp, out)
    return out


def quantize(fp32: Path, dest: Path, recipe: Recipe, calib: list[dict[str, np.ndarray]] | None,
             exclude: Sequence[str], work: Path, method: str = "minmax") -> list[str]:
    """Write ``dest`` from the float file ``fp32`` with ``recipe``; returns notes for the manifest."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    work.mkdir(parents=True, exist_ok=True)
    try:
        if recipe.name == "weight-only":
            from mobilize.quantize.onnx_weights import quantize_weights

            return [*quantize_weights(fp32, dest, exclude), *_float_note(dest, exclude)]
        if recipe.name == "dynamic":
            quantize_dynamic(str(fp32), str(dest), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=list(QUANTIZABLE), nodes_to_exclude=list(exclude),
                             extra_options={"EnableSubgraph": False})
            return ["weights int8 per-channel; activations are quantized to int8 at run time (dynamic range)",
                    *quantize_recurrent(dest, exclude), *_float_note(dest, exclude)]
        if recipe.name in ("qdq-per-channel", "qoperator-per-channel"):
            if not calib:
                raise ConversionError("static int8 needs calibration data", format="onnx")
            src = preprocess(fp32, work)
            corrected, n_bc = bias_corrected(src, calib, exclude, work)
            cal = CalibrationMethod.Percentile if method == "percentile" else CalibrationMethod.MinMax
            extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False}
            if method == "percentile":
                extra["CalibPercentile"] = 99.999
            pooled = pooled_ranges(src, calib, work)
            if pooled:
                extra["TensorQuantOverrides"] = {
                    t: [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}]
                    for t, (lo, hi) in pooled.items()}
            quantize_static(str(corrected), str(dest), _Reader(calib),
                            quant_format=QuantFormat.QDQ if recipe.name.startswith("qdq") else QuantFormat.QOperator,
                            per_channel=True, activation_type=QuantType.QUInt8 if recipe.name.startswith("qop")
                            else QuantType.QInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=None, nodes_to_exclude=list(exclude), calibrate_method=cal,
                            extra_options=extra,
                            calibration_cache_path=str(work / f"onnx_ranges_{method}_bc{int(n_bc > 0)}.json"))
            notes = [f"weights int8 per-channel symmetric; activations int8, ranges from {len(calib)} calibration "
                     f"samples ({method})", *quantize_recurrent(dest, exclude)]
            if pooled:
                notes.append(f"{len(pooled)} globally pooled tensor(s) quantized over the range of what they pool "
                             "(calibration would clip them on other data)")
            if n_bc:
                notes.append(f"bias correction on {n_bc} layer(s): each bias absorbs the mean output shift its "
                             "int8 weights cause on the calibration samples")
            if exclude:
                isolate_float(dest, set(exclude))
                notes.append(f"{len(exclude)} layer(s) kept float (fp32 weights, float activations and compute)")
            return notes + _float_note(dest, exclude)
        if recipe.name == "matmul-nbits":
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            model = onnx.load(str(fp32))
            q = MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=list(exclude))
            q.process()
            q.model.save_model_to_file(str(dest), use_external_data_format=False)
            n = sum(1 for node in onnx.load(str(dest)).graph.node if node.op_type == "MatMulNBits")
            return [f"{n} MatMul weights as int4 blocks of 32 (MatMulNBits)",
                    *_float_note(dest, exclude, "onnxruntime's 4-bit kernel (MatMulNBits) covers MatMul only")]
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantizer's failure is this artifact's failure
        raise ConversionError(f"onnxruntime.quantization ({recipe.name}) failed: {type(exc).__name__}: "
                              f"{one_line(exc, 400)}", format="onnx") from exc
    raise ConversionError(f"onnx has no recipe {recipe.name!r}", format="onnx")


def _float_note(path: Path, exclude: Sequence[str], why: str = "") -> list[str]:
    """One note naming the op types whose weights are still float in ``path`` (read from the file)."""
    left = float_weights(path)
    if not left:
        return []
    reasons = [r for r in (why, f"{len(exclude)} layer(s) kept float on purpose" if exclude else "") if r]
    listed = ", ".join(f"{op} ×{n}" for op, n in left.items())
    return [f"weights left float32: {listed}" + (f" ({'; '.join(reasons)})" if reasons else "")]


def isolate_float(path: Path, nodes: set[str]) -> int:
    """Make the layers ``nodes`` (left float by the static quantizer) stay float when onnxruntime loads the file.

    A float Conv/Gemm whose input comes from a per-tensor ``DequantizeLinear`` and whose output goes to a
    ``QuantizeLinear`` is re-quantized by onnxruntime's graph optimiser at load time (``WeightBiasQuantization``:
    per-tensor int8 weights, then QDQ fusion into ``QLinearConv``) — a "kept float" depthwise conv then computes with
    per-tensor weights and is *worse* than the per-channel int8 version. Both rewrites require a per-tensor scale on
    the activation's ``DequantizeLinear``, so each kept-float layer gets its own copy of that node with the same
    scale repeated per channel (identical values, zero cost): the pattern no longer matches.

    Returns how many inputs were isolated.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out_nodes: list[Any] = []
    done = 0
    for node in model.graph.node:
        if node.name in nodes and node.input:
            dq = producer.get(node.input[0])
            channels = _input_channels(node, inits)
            if (dq is not None and dq.op_type == "DequantizeLinear" and channels and dq.input[1] in inits
                    and len(dq.input) > 2 and dq.input[2] in inits):
                scale = numpy_helper.to_array(inits[dq.input[1]])
                zp = numpy_helper.to_array(inits[dq.input[2]])
                if scale.ndim == 0:
                    tag = f"{node.name}_float_input"
                    model.graph.initializer.extend([
                        numpy_helper.from_array(np.full(channels, scale, scale.dtype), f"{tag}_scale"),
                        numpy_helper.from_array(np.full(channels, zp, zp.dtype), f"{tag}_zero_point")])
                    out_nodes.append(helper.make_node("DequantizeLinear", [dq.input[0], f"{tag}_scale",
                                                                           f"{tag}_zero_point"], [tag],
                                                      name=f"{tag}_DequantizeLinear", axis=1))
                    node.input[0] = tag
                    done += 1
        out_nodes.append(node)
    used = {i for n in out_nodes for i in n.input} | {o.name for o in model.graph.output}
    out_nodes = [n for n in out_nodes if n.op_type != "DequantizeLinear" or n.output[0] in used]
    del model.graph.node[:]
    model.graph.node.extend(out_nodes)
    path.write_bytes(model.SerializeToString())
    return done


def _input_channels(node: Any, inits: dict[str, Any]) -> int | None:
    """Size of axis 1 of a Conv/Gemm/MatMul activation input, from its constant weight's shape."""
    w = inits.get(node.input[1]) if len(node.input) > 1 else None
    if w is None or len(w.dims) < 2:
        return None
    a = _attrs(node)
    if node.op_type in ("Conv", "ConvTranspose"):
        return int(w.dims[1] * a.get("group", 1)) if node.op_type == "Conv" else int(w.dims[0])
    if node.op_type == "Gemm":
        return None if a.get("transA", 0) else int(w.dims[1] if a.get("transB", 0) else w.dims[0])
    return None  # MatMul: axis 1 is not the reduced axis for rank > 2; leave it to onnxruntime


def methods(recipe: Recipe) -> tuple[str, ...]:
    """Range estimators worth trying for ``recipe`` (static recipes only)."""
    return _METHODS if recipe.calibrated else ("",)
