"""TFLite quantizer: ai-edge-quantizer on the fp32 ``.tflite`` the exporter wrote.

- ``weight-only`` (int8-weights): int8 per-channel weights, dequantized before each op (float compute).
- ``dynamic`` (int8-weights): int8 per-channel weights, activations quantized per run (dynamic range kernels).
- ``static`` (int8): int8 weights and activations with ranges calibrated on real data; int8 inputs/outputs (their
  scale/zero-point are in the file and in the manifest). Before ai-edge-quantizer sees the float file, the
  calibration samples choose each layer's int8 weights (error-feedback rounding) and correct its bias for what the
  rounding still shifts (:mod:`mobilize.quantize.tflite_bias`); pooling ops (AVERAGE_POOL_2D, MEAN except
  normalization statistics) get their input's range, and a float input whose samples sit between its min/max grid's
  levels gets a zero-centred grid. Layers kept float compute in float on float activations (quantize/dequantize
  ops are inserted around them); their weights stay fp32 when small (≤ 4096 weights or ≤ 1 % of the model's layer
  weights), else int8 dequantized before the op (ai-edge-quantizer's weight-only config), so that keeping a large
  classifier float does not cost 4× its size.
- ``blockwise-int4`` (int4-weights): 4-bit weights in blocks of 32 where the op allows it, else channelwise int4.

Layers are named by their op's output tensor (litert-torch puts the PyTorch module path in it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import ConversionError, one_line
from mobilize.quantize.recipes import Recipe

QUANTIZABLE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV",
               "EMBEDDING_LOOKUP")
_CALIBRATION: dict[tuple[str, int, str, str], Any] = {}  # (float file, samples, method, digest) → calibration
_PREPARED: dict[tuple[str, int, str], Any] = {}  # (float file, samples, digest) → tflite_bias.Prepared | failure note
_AVERAGING = ("MEAN", "AVERAGE_POOL_2D")
_SQUARING = ("SQUARE", "SQUARED_DIFFERENCE", "POW")
#: a kept-float layer keeps fp32 weights up to this share of the model's layer weights or this many weights (else
#: int8 weight-only: a large classifier kept float would cost 4× its int8 size)
FLOAT_WEIGHTS_SHARE, FLOAT_WEIGHTS_MIN = 0.01, 4096


def layers(fp32: Path) -> list[dict[str, str]]:
    """Quantizable ops of the float file: ``{"name": output tensor name, "op", "module"}``."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilize._quiet import quiet_imports

    quiet_imports()
    it = Interpreter(model_content=fp32.read_bytes())
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    out = []
    for op in it._get_ops_details():  # noqa: SLF001 - the only op-level listing the interpreter offers
        if op["op_name"] in QUANTIZABLE and len(op["outputs"]):
            name = names.get(int(op["outputs"][0]), "")
            out.append({"name": name, "op": op["op_name"], "module": module_path(name)})
    return out


def module_path(tensor_name: str) -> str:
    """``pkg.Net/torch...Sequential_features/pkg.ConvBNReLU6_0/torch...ReLU6_2;;…`` → ``features.0.2``."""
    first = tensor_name.split(";")[0]
    parts = []
    for comp in first.split("/")[1:]:
        cls = comp.rsplit(".", 1)[-1]
        parts.append(cls.split("_", 1)[1] if "_" in cls else cls)
    return ".".join(parts)


def quantize(fp32: Path, dest: Path, recipe: Recipe, calib: list[dict[str, np.ndarray]] | None,
             exclude: Sequence[str], work: Path, method: str = "") -> list[str]:
    """Write ``dest`` from the float file ``fp32`` with ``recipe`` (feeds keyed by the file's input names)."""
    from mobilize._quiet import quiet_imports

    quiet_imports()
    notes: list[str] = []
    data = fp32.read_bytes()
    try:
        if recipe.name == "static":
            if not calib:
                raise ConversionError("static int8 needs calibration data", format="tflite")
            result = _static(fp32, data, recipe, calib, exclude, method, notes)
        else:
            result = _quantize(data, recipe, exclude, (), None, notes)
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"ai-edge-quantizer ({recipe.name}) failed: {type(exc).__name__}: "
                              f"{one_line(exc, 400)}", format="tflite") from exc
    dest.write_bytes(result)
    return notes


def _quantize(model: bytes, recipe: Recipe, exclude: Sequence[str], float_weights: Sequence[str], qsvs: Any,
              notes: list[str] | None) -> bytes:
    """One ai-edge-quantizer run of ``model`` (``qsvs``: calibration result for static recipes)."""
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    op_all = qtyping.TFLOperationName.ALL_SUPPORTED
    q = quantizer.Quantizer(model)
    say = notes.append if notes is not None else (lambda _n: None)
    if recipe.name == "weight-only":
        q.add_weight_only_config(regex=".*", operation_name=op_all, num_bits=8)
        say("weights int8 per-channel, dequantized before each op (float compute)")
    elif recipe.name == "dynamic":
        q.add_dynamic_config(regex=".*", operation_name=op_all, num_bits=8)
        say("weights int8 per-channel; activations quantized to int8 per run (dynamic range)")
    elif recipe.name == "blockwise-int4":
        names = qtyping.TFLOperationName
        for op in (names.FULLY_CONNECTED, names.EMBEDDING_LOOKUP):
            q.add_dynamic_config(regex=".*", operation_name=op, num_bits=4,
                                 granularity=qtyping.QuantGranularity.BLOCKWISE_32)
        for op in (names.CONV_2D, names.BATCH_MATMUL):
            q.add_weight_only_config(regex=".*", operation_name=op, num_bits=4)
        say("fully connected / embedding weights int4 in blocks of 32 (dynamic-range kernels); conv "
            "and batch-matmul weights int4 per channel, dequantized before the op; depthwise "
            "convolutions stay float (ai-edge-quantizer has no 4-bit depthwise)")
    elif recipe.name == "static":
        q.add_static_config(regex=".*", operation_name=op_all, activation_num_bits=8, weight_num_bits=8)
    else:
        raise ConversionError(f"tflite has no recipe {recipe.name!r}", format="tflite")
    for name in exclude:  # float compute; scope = "name;"
        scope = f"^{re.escape(name)};"
        if name in float_weights:
            q.update_quantization_recipe(regex=scope, operation_name=op_all,
                                         algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
        else:  # int8 weights dequantized before the op
            q.add_weight_only_config(regex=scope, operation_name=op_all, num_bits=8)
        # a graph output produced by a float layer stays float (else it is requantized to int8 for the I/O)
        q.update_quantization_recipe(regex=scope, operation_name=qtyping.TFLOperationName.OUTPUT,
                                     algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    if q.need_calibration:
        if qsvs is None:
            raise ConversionError(f"{recipe.name} needs calibration data", format="tflite")
        return bytes(q.quantize(qsvs, enable_progress_bar=False).quantized_model)
    return bytes(q.quantize(enable_progress_bar=False).quantized_model)


def _static(fp32: Path, data: bytes, recipe: Recipe, calib: list[dict[str, np.ndarray]], exclude: Sequence[str],
            method: str, notes: list[str]) -> bytes:
    """static_wi8_ai8 of the float file after calibration-aware weight rounding and bias correction."""
    notes.append(f"weights int8 per-channel; activations int8, ranges from {len(calib)} calibration samples "
                 f"({method}); int8 inputs/outputs")
    signature = _signature_of(data)
    prep = _prepared(fp32, data, calib, signature)
    float_weights = [n for n in exclude if n in _small_layers(data)] if exclude else []
    if isinstance(prep, str):
        notes.append(f"weights rounded to nearest, biases not corrected: {prep}")
        source = calibrated = data
    else:
        source, calibrated = prep.model(without=float_weights), prep.model()
        notes.append(f"int8 weights chosen on the calibration samples: error-feedback rounding (GPTQ) on "
                     f"{len(prep.gptq)} of {len(prep.grid)} layers, bias correction on {len(prep.corrected)} layers"
                     + (f" ({len(prep.skipped)} layer(s) left as they were)" if prep.skipped else ""))
    key = (str(fp32.resolve()), len(calib), method, hashlib.sha256(calibrated).hexdigest())
    if key not in _CALIBRATION:
        _CALIBRATION[key] = _calibrate(calibrated, recipe, {signature: list(calib)}, method)
    qsvs = _CALIBRATION[key]
    try:
        qsvs, widened = _widen_averaging(calibrated, qsvs)
        qsvs, centred = _input_grids(calibrated, qsvs, calib, signature)
    except Exception as exc:  # noqa: BLE001 - range refinements are optional: keep the calibrated ranges
        notes.append(f"calibrated ranges used as they are: {type(exc).__name__}: {one_line(exc, 200)}")
        qsvs, widened, centred = _CALIBRATION[key], 0, 0
    if centred:
        notes.append(f"{centred} input(s) quantized on a zero-centred grid (zero point 0): the calibration inputs sit "
                     f"between the levels of their min/max grid (8-bit pixels scaled to [-1, 1] do)")
    if widened:
        notes.append(f"output range of {widened} averaging op(s) (MEAN/AVERAGE_POOL_2D) widened to their input's "
                     f"range: averages of new data exceed the calibration averages")
    if float_weights:
        notes.append(f"{len(float_weights)} kept-float layer(s) keep fp32 weights (small)")
    result = _quantize(source, recipe, exclude, float_weights, qsvs, None)
    if isinstance(prep, str):
        return result
    try:
        bad = prep.mismatches(result, without=float_weights)
    except Exception as exc:  # noqa: BLE001 - the check must not lose the file; say it could not run
        notes.append(f"chosen int8 weights not verified: {type(exc).__name__}: {one_line(exc, 200)}")
        return result
    if bad:  # ai-edge-quantizer rounded differently: those layers get its own rounding and their original bias
        result = _quantize(prep.model(without=[*float_weights, *bad]), recipe, exclude, float_weights, qsvs, None)
        notes.append(f"{len(bad)} layer(s) left to ai-edge-quantizer's own rounding (its int8 weights differed "
                     f"from the chosen ones)")
    return result


def _prepared(fp32: Path, data: bytes, calib: list[dict[str, np.ndarray]], signature: str) -> Any:
    """Cached :func:`mobilize.quantize.tflite_bias.prepare` of the float file, or why it was skipped (a string)."""
    from mobilize.quantize import tflite_bias

    key = (str(fp32.resolve()), len(calib), hashlib.sha256(data).hexdigest())
    if key not in _PREPARED:
        try:
            _PREPARED[key] = tflite_bias.prepare(data, calib, signature)
        except Exception as exc:  # noqa: BLE001 - an optimisation: on any failure quantize the file as it is
            _PREPARED[key] = f"{type(exc).__name__}: {one_line(exc, 200)}"
        while len(_PREPARED) > 4:
            _PREPARED.pop(next(iter(_PREPARED)))
    return _PREPARED[key]


def _small_layers(data: bytes) -> set[str]:
    """Layers small enough to keep fp32 weights when kept float (:data:`FLOAT_WEIGHTS_SHARE`, ``_MIN``)."""
    from mobilize.quantize import tflite_bias

    try:
        lays, _ = tflite_bias.layers(data)
    except Exception:  # noqa: BLE001 - unknown layout: every kept layer gets int8 weight-only
        return set()
    total = sum(lay.weight.size for lay in lays.values())
    limit = max(FLOAT_WEIGHTS_MIN, FLOAT_WEIGHTS_SHARE * total)
    return {n for n, lay in lays.items() if lay.weight.size <= limit}


def _grid_error(x: np.ndarray, lo: float, hi: float) -> float:
    """Mean squared int8 rounding error of ``x`` on ai-edge-quantizer's asymmetric grid for the range [lo, hi]."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-9) / 255.0
    zp = np.rint(-128.0 - lo / scale)
    q = np.clip(np.round(x / scale) + zp, -128, 127)
    return float(np.mean(((q - zp) * scale - x) ** 2))


def _input_grids(model: bytes, qsvs: dict[str, Any], calib: list[dict[str, np.ndarray]],
                 signature: str) -> tuple[dict[str, Any], int]:
    """For each float graph input, keep the calibrated min/max grid or switch to the zero-centred one (same span,
    zero point 0), whichever rounds the calibration inputs with less error. Data already on a grid of its own can sit
    exactly between the min/max grid's levels: images scaled as ``pixel / 127.5 − 1`` are all odd multiples of 1/255,
    the midpoints of the 2/255 steps, so every pixel gets the largest rounding error (3× the uniform-error power)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    inputs = it.get_signature_runner(signature).get_input_details()
    out, n = dict(qsvs), 0
    for feed_name, detail in inputs.items():
        tensor = names.get(int(detail["index"]))
        r = out.get(tensor)
        if not isinstance(r, dict) or not {"min", "max"} <= r.keys() or detail["dtype"] != np.float32:
            continue
        parts = [np.asarray(f[feed_name], np.float32).ravel() for f in calib if feed_name in f]
        x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if not x.size or not np.all(np.isfinite(x)):
            continue
        lo, hi = float(np.min(r["min"])), float(np.max(r["max"]))
        a = max(abs(lo), abs(hi))
        sym_lo = -128.0 / 127.0 * a
        if a > 0 and _grid_error(x, sym_lo, a) < 0.8 * _grid_error(x, lo, hi):
            out[tensor] = {**r, "min": np.full_like(np.asarray(r["min"]), sym_lo),
                           "max": np.full_like(np.asarray(r["max"]), a)}
            n += 1
    return out, n


def _widen_averaging(model: bytes, qsvs: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Give the output of every MEAN / AVERAGE_POOL_2D its input's calibrated range. An average never leaves its
    input's range, but its own calibrated range is much narrower and new data exceed it: the pooled features of
    EfficientNet-Lite0 calibrated on one photo were clipped on another (−1.6 dB). The statistics of normalization
    layers keep their calibrated range: averages of squares (the squares' range is orders of magnitude wider) and
    means over the last axis alone (LayerNorm)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    details = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()  # noqa: SLF001 - the only op-level listing the interpreter offers
    producer = {int(o): op for op in ops for o in op["outputs"]}
    out, n = dict(qsvs), 0
    for op in ops:
        if op["op_name"] not in _AVERAGING or not len(op["inputs"]) or not len(op["outputs"]):
            continue
        src_op = producer.get(int(op["inputs"][0]))
        if src_op is not None and (src_op["op_name"] in _SQUARING or (
                src_op["op_name"] == "MUL" and len(src_op["inputs"]) == 2
                and int(src_op["inputs"][0]) == int(src_op["inputs"][1]))):
            continue
        if op["op_name"] == "MEAN" and len(op["inputs"]) > 1:  # a mean over the last axis only: normalization
            shape = list(details[int(op["inputs"][0])]["shape"])
            try:
                axes = {int(a) % len(shape) for a in np.atleast_1d(it.get_tensor(int(op["inputs"][1])))}
            except Exception:  # noqa: BLE001 - axes not a constant (or no shape)
                continue
            if {a for a in axes if shape[a] != 1} <= {len(shape) - 1}:
                continue
        src, dst = details[int(op["inputs"][0])]["name"], details[int(op["outputs"][0])]["name"]
        a, b = out.get(src), out.get(dst)
        if not isinstance(a, dict) or not isinstance(b, dict) or not {"min", "max"} <= a.keys() & b.keys():
            continue
        lo = np.minimum(np.min(a["min"]), np.min(b["min"]))
        hi = np.maximum(np.max(a["max"]), np.max(b["max"]))
        out[dst] = {**b, "min": np.full_like(np.asarray(b["min"]), lo), "max": np.full_like(np.asarray(b["max"]), hi)}
        n += 1
    return out, n


def methods(recipe: Recipe) -> tuple[str, ...]:
    """Range estimators for static recipes: global ``minmax`` over all samples, or ai-edge-quantizer's default
    ``moving-average`` of per-sample min/max (smoothing 0.95), which clips the rarer extremes."""
    return ("minmax", "moving-average") if recipe.calibrated else ("",)


def _calibrate(model: bytes, recipe: Recipe, data: dict[str, list[dict[str, np.ndarray]]], method: str) -> Any:
    """ai-edge-quantizer calibration of ``model`` (every layer static int8) with the chosen min/max update rule.
    ``Quantizer.calibrate`` always uses the moving average, so the global min/max variant drives its ``Calibrator``
    directly (same steps as ``Quantizer.calibrate``)."""
    from ai_edge_quantizer import calibrator, qtyping, quantizer
    from ai_edge_quantizer.utils import qsv_utils

    q = quantizer.Quantizer(model)
    q.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
                        weight_num_bits=8)
    if method != "minmax":
        return q.calibrate(data, num_threads=1)
    calib = calibrator.Calibrator(q._float_model_buffer, num_threads=1,  # noqa: SLF001 - see docstring
                                  qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate(data, q._recipe_manager)  # noqa: SLF001
    return calib.get_model_qsvs()


def _signature_of(data: bytes) -> str:
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_content=data).get_signature_list()
    return "serving_default" if "serving_default" in sigs else next(iter(sigs))
