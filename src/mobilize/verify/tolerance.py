"""Parity tolerances per format × precision (documented in docs/parity.md).

An output passes when every condition holds:
  mismatch_ratio ≤ max_mismatch_ratio   (elements outside atol + rtol·|ref|)
  cosine ≥ min_cosine and snr_db ≥ min_snr_db
  no NaN/Inf where the reference is finite
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

#: per precision, the tolerance fields to replace (``{"fp16": {"atol": 2e-2}}``); see :func:`for_artifact`
Overrides = Mapping[str, Mapping[str, float]]


@dataclasses.dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    max_mismatch_ratio: float
    min_cosine: float
    min_snr_db: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FP32 = Tolerance(atol=1e-4, rtol=1e-4, max_mismatch_ratio=0.0, min_cosine=0.99999, min_snr_db=60.0)
# fp16 has an 11-bit mantissa: ~5e-4 relative per op, growing with depth; a bounded share of elements may exceed
# atol/rtol (values near zero), but the output as a whole must keep its direction and energy.
FP16 = Tolerance(atol=1e-2, rtol=1e-2, max_mismatch_ratio=0.01, min_cosine=0.999, min_snr_db=30.0)

DEFAULTS: dict[tuple[str, str], Tolerance] = {
    ("onnx", "fp32"): FP32,
    ("tflite", "fp32"): FP32,
    ("coreml", "fp32"): FP32,
    ("onnx", "fp16"): FP16,
    # ORT format: the ONNX file after onnxruntime's offline optimisations (fusions), same runtime and precision
    ("ort", "fp32"): FP32,
    ("ort", "fp16"): FP16,
    ("coreml", "fp16"): FP16,
    # TFLite fp16 stores weights as fp16 but computes in fp32 on CPU: only weight rounding, tighter than fp16 compute
    ("tflite", "fp16"): Tolerance(atol=5e-3, rtol=5e-3, max_mismatch_ratio=0.01, min_cosine=0.9995, min_snr_db=35.0),
    ("pte", "fp32"): FP32,
    # ExecuTorch fp16 computes in float16 (XNNPACK fp16 kernels, or portable kernels on float16 tensors)
    ("pte", "fp16"): FP16,
}


# Quantized files are judged twice. Here, on the reference's example and *random* inputs, only as a smoke test
# (the file runs and tracks PyTorch): random inputs fall outside the calibrated activation ranges, so static int8 is
# bounded loosely. The real judgement is on held-out *real* calibration samples against the accuracy target
# (SNR, top-1 agreement), recorded in the artifact's "quantization" record (docs/quantization.md).
QUANTIZED: dict[str, Tolerance] = {
    # int8 weights, float activations: only weight rounding
    "int8-weights": Tolerance(atol=5e-2, rtol=5e-2, max_mismatch_ratio=1.0, min_cosine=0.99, min_snr_db=20.0),
    # static int8 activations: clipping outside calibrated ranges on random inputs
    "int8": Tolerance(atol=1e-1, rtol=1e-1, max_mismatch_ratio=1.0, min_cosine=0.7, min_snr_db=3.0),
    # 4-bit weights (16 levels, or a 16-entry palette)
    "int4-weights": Tolerance(atol=1e-1, rtol=1e-1, max_mismatch_ratio=1.0, min_cosine=0.9, min_snr_db=6.0),
}


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Tolerance))


def for_artifact(fmt: str, precision: str, overrides: Overrides | None = None) -> Tolerance:
    """The tolerance for one artifact: the default for (format, precision), with the fields in
    ``overrides[precision]`` replaced (``mobilize check``'s ``[parity.<precision>]`` tables)."""
    if (fmt, precision) not in DEFAULTS and precision in QUANTIZED:
        base = QUANTIZED[precision]
    else:
        base = DEFAULTS.get((fmt, precision), FP16 if precision != "fp32" else FP32)
    changes = (overrides or {}).get(precision)
    return dataclasses.replace(base, **{k: float(v) for k, v in changes.items()}) if changes else base


def check_overrides(overrides: Overrides | None, precisions: tuple[str, ...]) -> None:
    """Raise :class:`~mobilize.errors.OptionError` (one line) for an unknown precision or field, or a bad value."""
    from mobilize.errors import OptionError

    for prec, changes in (overrides or {}).items():
        if prec not in precisions:
            raise OptionError(f"tolerance overrides: unknown precision {prec!r}; choose from {', '.join(precisions)}")
        for key, value in changes.items():
            if key not in FIELDS:
                raise OptionError(f"tolerance overrides for {prec}: unknown field {key!r}; choose from "
                                  f"{', '.join(FIELDS)}")
            problem = field_problem(key, value)
            if problem:
                raise OptionError(f"tolerance overrides for {prec}: {key}={value!r} {problem}")


def field_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be tolerance field ``key`` (a phrase), or None when it can."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return "must be a finite number ≥ 0"
    if key in ("max_mismatch_ratio", "min_cosine") and value > 1:
        return "must be at most 1"
    return None
