"""Quantization: recipes per format (int8-weights, int8, int4-weights), calibration data, accuracy- and
speed-aware recipe choice. See docs/quantization.md.

Each format has one module here (``onnx.py``, ``coreml.py``, ``tflite.py``, ``pte.py``) with ``layers(fp32)`` and
``quantize(fp32, dest, recipe, calibration feeds, exclude, work)``: it takes the fp32 file the exporter wrote (for
ExecuTorch: the torch program that file was lowered from) and writes the quantized file with the format's own tool.
:mod:`mobilize.quantize.driver` measures and chooses.
"""

from typing import Any

from mobilize.quantize.recipes import QUANT_PRECISIONS, AccuracyTarget, Recipe

__all__ = ["QUANT_PRECISIONS", "AccuracyTarget", "CalibrationData", "CalibrationError", "Recipe"]


def __getattr__(name: str) -> Any:
    """``CalibrationData`` / ``CalibrationError`` on first use: the calibration module needs numpy, and
    ``import mobilize`` (which reads the recipes through the format registry) stays free of it."""
    if name in ("CalibrationData", "CalibrationError"):
        from mobilize.quantize import calibration

        return getattr(calibration, name)
    raise AttributeError(f"module 'mobilize.quantize' has no attribute {name!r}")
