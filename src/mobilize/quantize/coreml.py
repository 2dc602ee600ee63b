"""Core ML quantizer: coremltools.optimize.coreml on the fp32 ``.mlpackage`` the exporter wrote.

- ``linear-int8`` (int8-weights) and ``linear-int8-weights`` (int8): ``linear_quantize_weights``, int8 per-channel
  symmetric weights (``constexpr_affine_dequantize`` in the file). Activation quantization
  (``linear_quantize_activations``) calibrates by running Core ML predictions, which exist only on macOS; on other
  systems ``int8`` is therefore weight-only and the manifest says activations stay float.
- ``palettize-4bit`` (int4-weights): ``palettize_weights`` with a 16-entry k-means look-up table per weight tensor.

Layers kept in float are passed with ``op_name_configs`` set to ``None``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mobilize.errors import ConversionError
from mobilize.quantize.recipes import Recipe


def layers(fp32: Path) -> list[dict[str, str]]:
    """Ops with a constant weight (conv, linear, matmul) in the main function."""
    import coremltools as ct

    model = ct.models.MLModel(str(fp32), skip_model_load=True)
    prog = model.get_spec().mlProgram
    out = []
    for fn in prog.functions.values():
        block = next(iter(fn.block_specializations.values()))
        for op in block.operations:
            if op.type in ("conv", "linear", "matmul", "conv_transpose") and op.outputs:
                out.append({"name": op.outputs[0].name, "op": op.type, "module": ""})
    return out


def quantize(fp32: Path, dest: Path, recipe: Recipe, calib: list[dict[str, np.ndarray]] | None,
             exclude: Sequence[str], work: Path, method: str = "") -> list[str]:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    model = ct.models.MLModel(str(fp32), skip_model_load=True)
    notes: list[str] = []
    try:
        if recipe.name in ("linear-int8", "linear-int8-weights"):
            op_cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                                 weight_threshold=2048)
            config = cto.OptimizationConfig(global_config=op_cfg, op_name_configs=dict.fromkeys(exclude))
            out = cto.linear_quantize_weights(model, config=config)
            notes.append("weights int8 per-channel symmetric (constexpr_affine_dequantize); tensors under 2048 "
                         "elements stay float")
            if recipe.name == "linear-int8-weights":
                notes.append("activations stay float (fp32 in the file; Core ML may compute in fp16 on device): "
                             "coremltools' activation calibration runs Core ML predictions, which need macOS"
                             if sys.platform != "darwin" else "activations stay float (weight-only int8)")
        elif recipe.name == "palettize-4bit":
            op_cfg = cto.OpPalettizerConfig(mode="kmeans", nbits=4, weight_threshold=2048)
            config = cto.OptimizationConfig(global_config=op_cfg, op_name_configs=dict.fromkeys(exclude))
            out = cto.palettize_weights(model, config=config)
            notes.append("weights palettized to 4 bits (16-entry k-means table per tensor); tensors under 2048 "
                         "elements stay float")
        else:
            raise ConversionError(f"coreml has no recipe {recipe.name!r}", format="coreml")
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"coremltools.optimize ({recipe.name}) failed: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:400]}", format="coreml") from exc
    out.save(str(dest))
    return notes
