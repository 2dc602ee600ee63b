"""Quantization: recipes per format (int8-weights, int8, int4-weights), calibration data, accuracy- and
speed-aware recipe choice. See docs/quantization.md.

Each format has one module here (``onnx.py``, ``coreml.py``, ``tflite.py``, ``pte.py``) with ``layers(fp32)`` and
``quantize(fp32, dest, recipe, calibration feeds, exclude, work)``: it takes the fp32 file the exporter wrote (for
ExecuTorch: the torch program that file was lowered from) and writes the quantized file with the format's own tool.
:mod:`mobilize.quantize.driver` measures and chooses.
"""

from mobilize.quantize.calibration import CalibrationData, CalibrationError
from mobilize.quantize.recipes import QUANT_PRECISIONS, AccuracyTarget, Recipe

__all__ = ["QUANT_PRECISIONS", "AccuracyTarget", "CalibrationData", "CalibrationError", "Recipe"]
