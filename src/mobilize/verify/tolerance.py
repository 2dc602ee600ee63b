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


def for_artifact(fmt: str, precision: str) -> Tolerance:
    if (fmt, precision) not in DEFAULTS and precision in QUANTIZED:
        return QUANTIZED[precision]
    return DEFAULTS.get((fmt, precision), FP16 if precision != "fp32" else FP32)
