"""Core ML quantizer: coremltools.optimize.coreml on the fp32 ``.mlpackage`` the exporter wrote.

- ``weight-only`` (int8-weights, and int8's fallback candidate): ``linear_quantize_weights``, int8 per-channel
  symmetric weights (``constexpr_affine_dequantize`` in the file). Activation quantization
  (``linear_quantize_activations``) calibrates by running Core ML predictions, which exist only on macOS; on other
  systems ``int8`` is therefore weight-only and the manifest says activations stay float.
- ``w8a8`` (int8, first choice when calibration data is given): fp16-compute copy, calibrated activation
  quantization (``linear_quantize_activations``), then int8 weights. On macOS coremltools calibrates with Core ML
  predictions; elsewhere mobilize's reference interpreter measures the activation ranges.
- ``palettize-4bit`` (int4-weights): ``palettize_weights`` with a 16-entry k-means look-up table per weight tensor.

Layers kept in float are passed with ``op_name_configs`` set to ``None``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import ConversionError, one_line
from mobilize.quantize.recipes import Recipe

#: ops whose constant weights the recipes compress (recurrent ops: lstm / gru / rnn; PyTorch's GRU is a while_loop
#: whose body holds linear ops)
WEIGHT_OPS = ("conv", "linear", "matmul", "conv_transpose", "lstm", "gru", "rnn")


def layers(fp32: Path) -> list[dict[str, str]]:
    """Ops with a constant weight in the main function, those inside control-flow blocks included."""
    from mobilize import _imports

    ct = _imports.coremltools()

    model = ct.models.MLModel(str(fp32), skip_model_load=True)
    prog = model.get_spec().mlProgram
    out = []

    def walk(block: Any) -> None:
        for op in block.operations:
            if op.type in WEIGHT_OPS and op.outputs:
                out.append({"name": op.outputs[0].name, "op": op.type, "module": ""})
            for nested in op.blocks:
                walk(nested)

    for fn in prog.functions.values():
        walk(next(iter(fn.block_specializations.values())))
    return out


def _w8a8(model: Any, calib: list[dict[str, np.ndarray]], exclude: Sequence[str], work: Path) -> Any:
    """W8A8: fp16-compute copy → calibrated activation quantization → int8 weights.

    coremltools calibrates activations by running Core ML predictions (macOS only). Elsewhere the ranges come from
    mobilize's reference interpreter, handed to coremltools' own quantize/dequantize insertion passes through its
    calibration hook (``_get_activation_calibration_stats``) for the duration of the call.
    """
    import coremltools.optimize.coreml as cto
    from coremltools.converters.mil.frontend.milproto import load as milproto_load

    # activation scales are fp16: the program must compute in fp16 (inputs/outputs stay fp32)
    from coremltools.converters.mil.mil.passes.defs.quantization import FP16ComputePrecision
    from coremltools.models.utils import _apply_graph_pass

    # the classifier's classify op (a list of class names) is not an fp16 candidate: the pass would crash on it
    to_fp16 = FP16ComputePrecision(op_selector=lambda op: op.op_type not in _NOT_ACTIVATIONS)
    fp16 = _apply_graph_pass(model, [to_fp16], skip_model_load=True, pymil_load_func=milproto_load.load)
    work.mkdir(parents=True, exist_ok=True)
    fp16_path = work / f"w8a8-fp16-base-{os.getpid()}.mlpackage"  # parallel trials (--jobs) share ``work``
    if fp16_path.exists():
        import shutil

        shutil.rmtree(fp16_path)
    fp16.save(str(fp16_path))
    fp16 = type(model)(str(fp16_path), skip_model_load=True)
    keep = dict.fromkeys(exclude)
    a_cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"),
                                   op_name_configs={**keep, **dict.fromkeys(_integer_ops(fp16))})
    with _interpreter_calibration(fp16_path), _nested_blocks_fix():
        a8 = cto.linear_quantize_activations(fp16, a_cfg, [dict(s) for s in calib])
    w_cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=2048), op_name_configs=keep)
    return cto.linear_quantize_weights(a8, config=w_cfg)


@contextlib.contextmanager
def _nested_blocks_fix() -> Iterator[None]:
    """coremltools 9's ``insert_suffix_quantize_dequantize_pair`` pass recurses into control-flow blocks without
    its config and visited-op set (``TypeError: … missing 2 required positional arguments``) on any program with a
    ``while_loop`` — e.g. a converted nn.GRU. While the block runs, the recursion gets them passed along."""
    from coremltools.converters.mil.mil.passes.defs import optimize_activation_quantization as oaq

    cls = oaq.insert_suffix_quantize_dequantize_pair
    saved = cls.__dict__["_insert_quantize_dequantize"]

    def insert(self: Any, block: Any, config: Any = None, visited_ops: set[Any] | None = None) -> Any:
        return saved(self, block, self._config if config is None else config,
                     set() if visited_ops is None else visited_ops)

    cls._insert_quantize_dequantize = insert
    try:
        yield
    finally:
        cls._insert_quantize_dequantize = saved


#: ops whose outputs are not tensors an activation quantizer can touch (a classifier's label and label → score dict)
_NOT_ACTIVATIONS = ("classify",)


def _integer_ops(model: Any) -> list[str]:
    """Names of ops with a computed integer input, a list parameter or a non-tensor output: coremltools' activation
    quantization would put a quantize op (float only) on them — e.g. the step counter ``add`` in the while_loop of a
    converted nn.GRU, or the ``classify`` op a ClassifierConfig adds (its class list)."""
    from coremltools.proto import MIL_pb2

    floats = {MIL_pb2.DataType.FLOAT16, MIL_pb2.DataType.FLOAT32}
    dtypes: dict[str, int] = {}
    names = []

    def walk(block: Any) -> None:
        for v in block.inputs:
            dtypes[v.name] = v.type.tensorType.dataType
        for op in block.operations:
            used = [a.name for arg in op.inputs.values() for a in arg.arguments if a.name]
            lists = any(a.WhichOneof("binding") == "value" and a.value.type.WhichOneof("type") == "listType"
                        for arg in op.inputs.values() for a in arg.arguments)
            if op.type != "const" and (lists or op.type in _NOT_ACTIVATIONS
                                       or any(n in dtypes and dtypes[n] not in floats for n in used)):
                names.append(op.attributes["name"].immediateValue.tensor.strings.values[0]
                             if "name" in op.attributes else op.outputs[0].name)
            if op.type != "const":  # constants (strings, axes, flags) are parameters, not activations
                for o in op.outputs:
                    dtypes[o.name] = o.type.tensorType.dataType
            for nested in op.blocks:
                walk(nested)

    spec = model.get_spec()
    for fn in spec.mlProgram.functions.values():
        for v in fn.inputs:
            dtypes[v.name] = v.type.tensorType.dataType
        block = next(iter(fn.block_specializations.values()))
        walk(block)
        names += _image_preprocessing(block, {f.name for f in spec.description.input
                                              if f.type.WhichOneof("Type") == "imageType"})
    return names


#: elementwise ops an image input's normalisation is made of (pixels / scale − mean) / std
_PREPROCESSING = ("mul", "sub", "add", "real_div", "cast")


def _image_preprocessing(block: Any, images: set[str]) -> list[str]:
    """Names of the ops that normalise an image input (the chain mobilize's Vision-ready export puts in front of the
    model): they stay float in W8A8 — quantizing the raw pixels and each normalisation step only adds rounding."""
    out: list[str] = []
    frontier = set(images)
    for op in block.operations:
        if op.type not in _PREPROCESSING:
            continue
        used = {a.name for arg in op.inputs.values() for a in arg.arguments if a.name}
        if used & frontier:
            out.append(op.attributes["name"].immediateValue.tensor.strings.values[0] if "name" in op.attributes
                       else op.outputs[0].name)
            frontier.update(o.name for o in op.outputs)
    return out


class _interpreter_calibration:  # noqa: N801 - used as a context manager
    """Where Core ML cannot predict, swap coremltools' calibration (which predicts) for the reference interpreter."""

    def __init__(self, mlpackage: Path) -> None:
        self.mlpackage = mlpackage
        self.saved: Any = None

    def __enter__(self) -> None:
        from mobilize.runtime.coreml import CoreMLRunner

        if CoreMLRunner.available()[0]:
            return
        from coremltools.optimize.coreml import _post_training_quantization as ptq

        self.saved = ptq._get_activation_calibration_stats
        ptq._get_activation_calibration_stats = self._stats

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            from coremltools.optimize.coreml import _post_training_quantization as ptq

            ptq._get_activation_calibration_stats = self.saved

    def _stats(self, fpmodel: Any, sample_data: Any, calibration_op_group_size: int = -1) -> Any:
        from collections import defaultdict

        from coremltools.optimize.coreml.experimental import _post_training_quantization as eptq

        from mobilize.runtime.coreml_ref.stats import collect_activation_stats

        raw = collect_activation_stats(self.mlpackage, sample_data)
        outputs = {o.name for o in fpmodel.get_spec().description.output}  # coremltools keeps no range for outputs
        bounds = clip_bounds(self.mlpackage)
        stats: Any = defaultdict(dict)
        for k, (lo, hi) in raw.items():
            if k in outputs:
                continue
            if k in bounds and max(lo, bounds[k][0]) < min(hi, bounds[k][1]):
                lo, hi = max(lo, bounds[k][0]), min(hi, bounds[k][1])
            stats[k] = {"rmin": lo, "rmax": hi}
        eptq._adjust_concat_surrounding_activation_stats(eptq.ModelDebugger(fpmodel)._get_concat_op_info(), stats)
        return stats


#: activations whose output range is fixed: ``clip`` reads its bounds from the program
_FIXED_BOUNDS = {"relu": (0.0, float("inf")), "relu6": (0.0, 6.0)}


def clip_bounds(mlpackage: Path) -> dict[str, tuple[float, float]]:
    """Tensors read only by ``relu``, ``relu6`` or ``clip`` ops → the bounds those ops clip to.

    coremltools quantizes a convolution's output *before* the clip that follows it, with the range calibration saw:
    on EfficientNet-Lite0 that is ±30…±96 for values the ReLU6 then cuts to [0, 6], so the int8 grid is 10–15×
    coarser than it needs to be (W8A8 reached 5 dB). Saturating at the clip's bounds and then clipping gives exactly
    the clipped value, so narrowing such a tensor's range to the clip's bounds changes nothing but the resolution.
    """
    from mobilize.runtime.coreml_ref import load_program

    program = load_program(mlpackage)
    values: dict[str, float] = {}
    for name, v in program.constants().items():
        v = np.asarray(v)
        if v.size == 1 and np.issubdtype(v.dtype, np.number):
            values[name] = float(v.reshape(()))
    readers: dict[str, list[Any]] = {}
    for op in program.block.operations:
        for arg in op.inputs.values():
            for a in arg.arguments:
                if a.name:
                    readers.setdefault(a.name, []).append(op)
    out: dict[str, tuple[float, float]] = {}
    for name, ops in readers.items():
        bounds = []
        for op in ops:
            if op.type not in _FIXED_BOUNDS and op.type != "clip" or op.inputs["x"].arguments[0].name != name:
                break
            alpha, beta = _FIXED_BOUNDS.get(op.type) or tuple(values.get(op.inputs[k].arguments[0].name)
                                                              for k in ("alpha", "beta"))
            if alpha is None or beta is None:
                break
            bounds.append((alpha, beta))
        else:
            if bounds:
                out[name] = (min(b[0] for b in bounds), max(b[1] for b in bounds))
    return out


def quantize(fp32: Path, dest: Path, recipe: Recipe, calib: list[dict[str, np.ndarray]] | None,
             exclude: Sequence[str], work: Path, method: str = "") -> list[str]:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    model = ct.models.MLModel(str(fp32), skip_model_load=True)
    notes: list[str] = []
    try:
        if recipe.name == "weight-only":
            op_cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                                 weight_threshold=2048)
            config = cto.OptimizationConfig(global_config=op_cfg, op_name_configs=dict.fromkeys(exclude))
            out = cto.linear_quantize_weights(model, config=config)
            notes.append("weights int8 per-channel symmetric (constexpr_affine_dequantize); tensors under 2048 "
                         "elements stay float")
            if recipe.precision == "int8":
                notes.append("activations stay float (fp32 in the file; Core ML may compute in fp16 on device): "
                             "coremltools' activation calibration runs Core ML predictions, which need macOS"
                             if sys.platform != "darwin" else "activations stay float (weight-only int8)")
        elif recipe.name == "w8a8":
            if not calib:
                raise ConversionError("coreml w8a8 needs calibration samples", format="coreml")
            out = _w8a8(model, calib, exclude, work)
            notes.append("activations int8 (quantize/dequantize pairs, fp16 compute between them), calibrated on "
                         f"{len(calib)} samples"
                         + (" with activation ranges from mobilize's Core ML reference interpreter (Core ML "
                            "predictions need macOS)" if sys.platform != "darwin" else ""))
            notes.append("weights int8 per-channel symmetric (constexpr_affine_dequantize); tensors under 2048 "
                         "elements stay float")
            notes.append("activation quantize/dequantize ops need iOS17 / macOS14 or newer (the file's spec "
                         "version is raised to 8 whatever --coreml-target says)")
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
                              f"{one_line(exc, 400)}", format="coreml") from exc
    out.save(str(dest))
    return notes
