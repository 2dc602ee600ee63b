"""TFLite quantizer: ai-edge-quantizer on the fp32 ``.tflite`` the exporter wrote.

- ``weight-only`` (int8-weights): int8 per-channel weights, dequantized before each op (float compute).
- ``dynamic`` (int8-weights): int8 per-channel weights, activations quantized per run (dynamic range kernels).
- ``static`` (int8): int8 weights and activations with ranges calibrated on real data; int8 inputs/outputs (their
  scale/zero-point are in the file and in the manifest). Layers kept in float get ai-edge-quantizer's
  weight-only config: float activations and compute, int8 weights dequantized before the op (quantize/dequantize
  ops are inserted around them), so keeping a layer float costs accuracy nothing and size little.
- ``blockwise-int4`` (int4-weights): 4-bit weights in blocks of 32 where the op allows it, else channelwise int4.

Layers are named by their op's output tensor (litert-torch puts the PyTorch module path in it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import ConversionError, one_line
from mobilize.quantize.recipes import Recipe

QUANTIZABLE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV",
               "EMBEDDING_LOOKUP")
_CALIBRATION: dict[tuple[str, int], Any] = {}  # (float file, samples) → ai-edge-quantizer calibration result


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
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    from mobilize._quiet import quiet_imports

    quiet_imports()
    op_all = qtyping.TFLOperationName.ALL_SUPPORTED
    q = quantizer.Quantizer(fp32.read_bytes())
    notes: list[str] = []
    try:
        if recipe.name == "weight-only":
            q.add_weight_only_config(regex=".*", operation_name=op_all, num_bits=8)
            notes.append("weights int8 per-channel, dequantized before each op (float compute)")
        elif recipe.name == "dynamic":
            q.add_dynamic_config(regex=".*", operation_name=op_all, num_bits=8)
            notes.append("weights int8 per-channel; activations quantized to int8 per run (dynamic range)")
        elif recipe.name == "blockwise-int4":
            names = qtyping.TFLOperationName
            for op in (names.FULLY_CONNECTED, names.EMBEDDING_LOOKUP):
                q.add_dynamic_config(regex=".*", operation_name=op, num_bits=4,
                                     granularity=qtyping.QuantGranularity.BLOCKWISE_32)
            for op in (names.CONV_2D, names.BATCH_MATMUL):
                q.add_weight_only_config(regex=".*", operation_name=op, num_bits=4)
            notes.append("fully connected / embedding weights int4 in blocks of 32 (dynamic-range kernels); conv "
                         "and batch-matmul weights int4 per channel, dequantized before the op; depthwise "
                         "convolutions stay float (ai-edge-quantizer has no 4-bit depthwise)")
        elif recipe.name == "static":
            if not calib:
                raise ConversionError("static int8 needs calibration data", format="tflite")
            q.add_static_config(regex=".*", operation_name=op_all, activation_num_bits=8, weight_num_bits=8)
            notes.append(f"weights int8 per-channel; activations int8, ranges from {len(calib)} calibration samples "
                         f"({method}); int8 inputs/outputs")
        else:
            raise ConversionError(f"tflite has no recipe {recipe.name!r}", format="tflite")
        for name in exclude:  # float compute, int8 weights (dequantized before the op); scope = "name;"
            scope = f"^{re.escape(name)};"
            q.add_weight_only_config(regex=scope, operation_name=op_all, num_bits=8)
            # a graph output produced by a float layer stays float (else it is requantized to int8 for the I/O)
            q.update_quantization_recipe(regex=scope, operation_name=qtyping.TFLOperationName.OUTPUT,
                                         algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
        result = None
        if q.need_calibration:
            key = (str(fp32.resolve()), len(calib or []), method)
            if key not in _CALIBRATION:
                _CALIBRATION[key] = _calibrate(q, {_signature(fp32): list(calib or [])}, method)
            result = q.quantize(_CALIBRATION[key], enable_progress_bar=False)
        else:
            result = q.quantize(enable_progress_bar=False)
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"ai-edge-quantizer ({recipe.name}) failed: {type(exc).__name__}: "
                              f"{one_line(exc, 400)}", format="tflite") from exc
    dest.write_bytes(bytes(result.quantized_model))
    return notes


def methods(recipe: Recipe) -> tuple[str, ...]:
    """Range estimators for static recipes: global ``minmax`` over all samples, or ai-edge-quantizer's default
    ``moving-average`` of per-sample min/max (smoothing 0.95), which clips the rarer extremes."""
    return ("minmax", "moving-average") if recipe.calibrated else ("",)


def _calibrate(q: Any, data: dict[str, list[dict[str, np.ndarray]]], method: str) -> Any:
    """ai-edge-quantizer calibration with the chosen min/max update rule. ``Quantizer.calibrate`` always uses the
    moving average, so the global min/max variant drives its ``Calibrator`` directly (same steps as
    ``Quantizer.calibrate``)."""
    if method != "minmax":
        return q.calibrate(data, num_threads=1)
    from ai_edge_quantizer import calibrator
    from ai_edge_quantizer.utils import qsv_utils

    calib = calibrator.Calibrator(q._float_model_buffer, num_threads=1,  # noqa: SLF001 - see docstring
                                  qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate(data, q._recipe_manager)  # noqa: SLF001
    return calib.get_model_qsvs()


def _signature(path: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_content=path.read_bytes()).get_signature_list()
    return "serving_default" if "serving_default" in sigs else next(iter(sigs))
