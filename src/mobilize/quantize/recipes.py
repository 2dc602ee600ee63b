"""Quantization recipes: which (format, precision) pairs exist, and the candidate recipes behind each.

A *precision* is what the user asks for (``--precisions int8``); a *recipe* is one concrete way a format's own tool
produces it (``onnx:qdq-per-channel``). Where a precision has several candidate recipes, the driver
(:mod:`mobilize.quantize.driver`) measures each against the accuracy target and picks the fastest that meets it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from mobilize.errors import OptionError

FLOAT_PRECISIONS = ("fp32", "fp16")
QUANT_PRECISIONS = ("int8-weights", "int8", "int4-weights")
#: precisions whose recipes calibrate activation ranges on real data
STATIC_PRECISIONS = ("int8",)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One concrete quantization method of one format.

    Args:
        name: short id, unique per format (``qdq-per-channel``).
        weights / activations: what ends up in the file, in words (recorded in the manifest).
        calibrated: needs calibration data (static activation ranges).
        tool: the native tool that does the work.
    """

    format: str
    precision: str
    name: str
    weights: str
    activations: str
    calibrated: bool
    tool: str
    summary: str

    @property
    def id(self) -> str:
        return f"{self.format}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.name, "weights": self.weights, "activations": self.activations,
                "calibrated": self.calibrated, "tool": self.tool}


_ORT = "onnxruntime.quantization"
_CT = "coremltools.optimize.coreml"
_AEQ = "ai-edge-quantizer"
_PT2E = "torchao PT2E + executorch XNNPACKQuantizer"

RECIPES: tuple[Recipe, ...] = (
    # --- ONNX -------------------------------------------------------------------------------------------------
    Recipe("onnx", "int8-weights", "weight-only", "int8 per output channel (Conv, Gemm, MatMul, Gather, LSTM/GRU/RNN)",
           "float: weights dequantized (DequantizeLinear) before each op", False, "mobilize (onnx DequantizeLinear)",
           "the size of int8 at float speed: onnxruntime runs the ops in float on dequantized weights"),
    Recipe("onnx", "int8-weights", "dynamic", "int8 per-channel symmetric (Conv, MatMul, Gemm; LSTM/GRU/RNN per "
           "gate row)", "float in the file; quantized to int8 per run by ConvInteger/MatMulInteger/DynamicQuantizeLSTM "
           "(GRU/RNN compute float)", False, _ORT,
           "quantize_dynamic: small file; on CPU often slower than fp32 for convolutions"),
    Recipe("onnx", "int8", "qdq-per-channel", "int8 per-channel symmetric (LSTM/GRU/RNN per gate row)",
           "int8 static (calibrated), QDQ format; LSTM: int8 per run (DynamicQuantizeLSTM), GRU/RNN: float", True, _ORT,
           "quantize_static, QDQ, per-channel weights: onnxruntime fuses QDQ groups into int8 kernels"),
    Recipe("onnx", "int8", "qoperator-per-channel", "int8 per-channel symmetric (LSTM/GRU/RNN per gate row)",
           "int8 static (calibrated), QLinear operators; LSTM: int8 per run (DynamicQuantizeLSTM), GRU/RNN: float",
           True, _ORT,
           "quantize_static, QOperator format (QLinearConv, QLinearMatMul...)"),
    Recipe("onnx", "int4-weights", "matmul-nbits", "int4 blockwise (block 32) for MatMul; other layers (Conv, Gemm, "
           "LSTM/GRU/RNN) float",
           "float", False, _ORT, "MatMulNBitsQuantizer: MatMul weights as 4-bit blocks (MatMulNBits kernel)"),
    # --- Core ML ----------------------------------------------------------------------------------------------
    Recipe("coreml", "int8-weights", "weight-only", "int8 per-channel symmetric (linear_quantize_weights)",
           "float (fp16 compute on device)", False, _CT, "weights stored as int8, dequantized at load"),
    Recipe("coreml", "int8", "w8a8", "int8 per-channel symmetric (linear_quantize_weights)",
           "int8 static (calibrated): quantize/dequantize pairs around fp16 compute", True, _CT,
           "linear_quantize_activations + linear_quantize_weights; activation ranges from Core ML predictions on "
           "macOS, from mobilize's reference interpreter elsewhere"),
    Recipe("coreml", "int8", "weight-only", "int8 per-channel symmetric (linear_quantize_weights)",
           "float: activation quantization needs Core ML predictions (macOS only)", False, _CT,
           "on Linux, int8 for Core ML is weight-only: coremltools' activation calibration runs Core ML predict"),
    Recipe("coreml", "int4-weights", "palettize-4bit", "4-bit palettization (16-entry k-means LUT per tensor)",
           "float", False, _CT, "palettize_weights nbits=4 (k-means; needs scikit-learn)"),
    # --- TFLite -----------------------------------------------------------------------------------------------
    Recipe("tflite", "int8-weights", "weight-only", "int8 per-channel symmetric",
           "float (weights dequantized before each op)", False, _AEQ, "weight_only_wi8_afp32"),
    Recipe("tflite", "int8-weights", "dynamic", "int8 per-channel symmetric",
           "float in the file; quantized to int8 per run (dynamic range)", False, _AEQ, "dynamic_wi8_afp32"),
    Recipe("tflite", "int8", "static", "int8 per-channel symmetric", "int8 static (calibrated); int8 I/O",
           True, _AEQ, "static_wi8_ai8: full-integer graph, XNNPACK int8 kernels"),
    Recipe("tflite", "int4-weights", "blockwise-int4", "int4 blockwise (block 32) where the op allows, else "
           "channelwise int4", "float (weights dequantized before each op)", False, _AEQ,
           "weight-only int4 (ai-edge-quantizer)"),
    # --- ExecuTorch -------------------------------------------------------------------------------------------
    Recipe("pte", "int8-weights", "dynamic", "int8 per-channel symmetric (linear layers; 2D convolutions where the "
           "XNNPACK quantizer annotates them)", "float in the file; quantized to int8 per run (dynamic, per tensor)",
           False, _PT2E, "PT2E dynamic per-channel config: XNNPACK's dynamically quantized kernels"),
    Recipe("pte", "int8", "static", "int8 per-channel symmetric", "int8 static (calibrated), per tensor; float I/O",
           True, _PT2E, "PT2E static per-channel config, calibrated on real data: XNNPACK int8 kernels"),
    Recipe("pte", "int4-weights", "dynamic-int4", "int4 per output channel for linear layers (XNNPACK qc4w); other "
           "layers float", "int8 per run (dynamic) for those linear layers; float elsewhere", False, _PT2E,
           "PT2E dynamic config with 4-bit weights (qmin −8, qmax 7) on nn.Linear layers"),
)


def candidates(fmt: str, precision: str) -> list[Recipe]:
    """The recipes that produce ``precision`` for ``fmt``, in order of preference (empty if unsupported)."""
    return [r for r in RECIPES if r.format == fmt and r.precision == precision]


def supported(fmt: str) -> tuple[str, ...]:
    """Every precision ``fmt`` can produce: fp32, fp16, then its quantized precisions."""
    return FLOAT_PRECISIONS + tuple(p for p in QUANT_PRECISIONS if candidates(fmt, p))


def recipe(fmt: str, precision: str, name: str) -> Recipe:
    for r in candidates(fmt, precision):
        if r.name == name:
            return r
    raise OptionError(f"{fmt} has no {precision} recipe {name!r}; it has "
                      f"{', '.join(r.name for r in candidates(fmt, precision)) or 'none'}")


def check_pairs(fmts: Sequence[str], precisions: Sequence[str],
                converted_from: Mapping[str, str] | None = None) -> None:
    """Reject every unsupported (format, precision) pair up front, listing what each format supports.

    ``converted_from`` maps a format whose files are converted from another format's file (``ort`` → ``onnx``) to
    that format: it supports what the source supports, and its quantized files need the source in the same run."""
    src = {f: s for f, s in (converted_from or {}).items() if s}

    def have(f: str) -> tuple[str, ...]:
        return supported(src.get(f, f))

    bad = [(f, p) for f in fmts for p in precisions if p not in have(f)]
    if bad:
        pairs = ", ".join(f"{f} × {p}" for f, p in bad)
        listing = "; ".join(f"{f}: {', '.join(have(f))}" for f in dict.fromkeys(f for f, _ in bad))
        raise OptionError(f"unsupported format × precision: {pairs} (supported — {listing})")
    need = [(f, p) for f in fmts if f in src and src[f] not in fmts for p in precisions if p in QUANT_PRECISIONS]
    if need:
        f, p = need[0]
        raise OptionError(f"{f} {p} is converted from the {src[f]} {p} file: add {src[f]} to --formats "
                          f"(--formats {src[f]},{f})")


def needs_calibration(precisions: Sequence[str]) -> list[str]:
    return [p for p in precisions if p in STATIC_PRECISIONS]


#: default search budget per format × precision (seconds)
DEFAULT_TIME_BUDGET_S = 300.0


@dataclasses.dataclass(frozen=True)
class AccuracyTarget:
    """What a quantized file must achieve on held-out calibration samples, against PyTorch.

    Args:
        min_snr_db: every float output's SNR (over all held-out samples).
        min_top1: top-1 agreement for classifier-shaped outputs (N, C), and for every output named in
            ``class_axes`` (argmax agreement along that axis, e.g. per time step of a (N, T, C) sequence output).
        class_axes: output name → its class axis, for outputs that are not plain (N, C) classifiers.
        metric: a task metric ``fn(outputs, batch) -> float`` (higher is better), or ``"file.py:fn"`` naming one;
            computed on the held-out samples for PyTorch and for every quantized candidate (see
            :mod:`mobilize.quantize.driver`). ``outputs`` holds each output for all held-out samples concatenated
            along axis 0; ``batch`` the inputs likewise, plus every extra array of the calibration ``.npz``.
        min_metric: the metric a quantized file must reach (None: the metric is recorded, not required).
        time_budget_s: wall seconds the search of one format × precision may spend (None: no limit). Candidate
            trials that have not started when it runs out are skipped and the per-layer search stops; the best
            file found so far is kept, and the quantization record says the budget bound (the result then depends
            on this machine's speed).
        jobs: worker processes that run independent candidate trials in parallel (the base trial of each recipe
            and range estimator, the per-layer probes); None: the usable cores; 1: one after another in this
            process. The chosen file and the record (timings apart) are the same for every value: results are
            taken in submission order, never completion order (:mod:`mobilize.quantize.driver`). Not part of the
            target's record (``to_dict``): it changes how fast, not what.
        max_size_ratio: sensitivity fallback stops before a static int8 file exceeds this share of fp32.
        holdout: share of the calibration samples held out for measuring (the rest calibrates).
        headroom_db: the search (recipe choice, layers kept float) aims this far above ``min_snr_db``, as a guard
            band: the held-out part is small and comes from the calibration data, so data the app will see usually
            scores a little lower. A file is still judged (``meets_target``) against ``min_snr_db`` alone.
    """

    min_snr_db: float = 25.0
    min_top1: float = 0.97
    max_size_ratio: float = 0.35
    holdout: float = 0.25
    headroom_db: float = 2.0
    class_axes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    metric: Any = None
    min_metric: float | None = None
    time_budget_s: float | None = DEFAULT_TIME_BUDGET_S
    jobs: int | None = None

    def __post_init__(self) -> None:
        import math

        if self.jobs is not None and (isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1):
            raise OptionError(f"--jobs {self.jobs!r} must be a whole number of worker processes ≥ 1, e.g. 2 (default: "
                              "the usable cores; 1 runs the trials one after another in this process)")

        if self.time_budget_s is not None and not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise OptionError(f"--time-budget {self.time_budget_s:g} must be a number of seconds > 0, e.g. 300")

        if not -100 <= self.min_snr_db <= 300:  # also refuses NaN (the manifest is strict JSON: no NaN/Infinity)
            raise OptionError(f"--min-snr {self.min_snr_db} must be a finite number of dB in [-100, 300], e.g. 25")
        if self.min_metric is not None and not math.isfinite(self.min_metric):
            raise OptionError(f"--min-metric {self.min_metric} must be a finite number")
        if self.min_metric is not None and self.metric is None:
            raise OptionError("--min-metric needs --metric file.py:fn (the metric it applies to)")
        for name, axis in dict(self.class_axes).items():
            if isinstance(axis, bool) or not isinstance(axis, int):
                raise OptionError(f"--class-axis {name}={axis!r}: the axis must be an integer (e.g. -1)")
        if not 0 < self.min_top1 <= 1:
            raise OptionError(f"--min-top1 {self.min_top1} must be in (0, 1]")
        if not 0 < self.max_size_ratio <= 1:
            raise OptionError(f"--max-size-ratio {self.max_size_ratio} must be in (0, 1]")
        if not 0 < self.holdout < 1:
            raise OptionError(f"--holdout {self.holdout} must be in (0, 1)")
        if not 0 <= self.headroom_db <= 20:
            raise OptionError(f"--snr-headroom {self.headroom_db} must be in [0, 20] dB")

    def aim(self) -> AccuracyTarget:
        """The target the search aims at: ``min_snr_db + headroom_db``."""
        return dataclasses.replace(self, min_snr_db=self.min_snr_db + self.headroom_db, headroom_db=0.0)

    @property
    def metric_name(self) -> str | None:
        if self.metric is None:
            return None
        return self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "metric")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "jobs"}
        d["class_axes"] = dict(self.class_axes)
        d["metric"] = self.metric_name
        return d


def parse_class_axes(text: str | None) -> dict[str, int]:
    """``"logits=-1,seg=1"`` → ``{"logits": -1, "seg": 1}`` (one-line :class:`OptionError` otherwise)."""
    out: dict[str, int] = {}
    for item in (i.strip() for i in (text or "").split(",")):
        if not item:
            continue
        name, sep, axis = item.partition("=")
        try:
            out[name.strip()] = int(axis)
        except ValueError:
            raise OptionError(f"--class-axis {item!r}: write OUTPUT=AXIS, e.g. logits=-1") from None
        if not sep or not name.strip():
            raise OptionError(f"--class-axis {item!r}: write OUTPUT=AXIS, e.g. logits=-1")
    return out


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one): the default of ``--jobs``."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS: no affinity
        return max(1, os.cpu_count() or 1)


def parse_jobs(text: str | int | None) -> int | None:
    """``--jobs`` as given on the command line → an int (None: not given); anything but a whole number is the
    one-line :class:`OptionError` of :class:`AccuracyTarget`."""
    if text is None or isinstance(text, int):
        return text
    try:
        value = int(text.strip())
    except ValueError:
        raise OptionError(f"--jobs {text!r} must be a whole number of worker processes ≥ 1, e.g. 2 (default: the "
                          "usable cores; 1 runs the trials one after another in this process)") from None
    return value
