"""Parity tolerances per format × precision (documented in docs/parity.md).

An output passes when every condition holds:
  mismatch_ratio ≤ max_mismatch_ratio   (elements outside atol + rtol·|ref|)
  cosine ≥ min_cosine and snr_db ≥ min_snr_db
  no NaN/Inf where the reference is finite
"""

from __future__ import annotations

import dataclasses
from typing import Any


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
    ("coreml", "fp16"): FP16,
    # TFLite fp16 stores weights as fp16 but computes in fp32 on CPU: only weight rounding, tighter than fp16 compute
    ("tflite", "fp16"): Tolerance(atol=5e-3, rtol=5e-3, max_mismatch_ratio=0.01, min_cosine=0.9995, min_snr_db=35.0),
}


def for_artifact(fmt: str, precision: str) -> Tolerance:
    return DEFAULTS.get((fmt, precision), FP16 if precision != "fp32" else FP32)
