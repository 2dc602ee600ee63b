"""ExecuTorch quantizer: PT2E with ExecuTorch's ``XNNPACKQuantizer`` on the torch program the fp32 ``.pte`` was
lowered from, then the same XNNPACK lowering as the exporter.

PT2E quantizes a torch graph (``prepare_pt2e`` → calibrate → ``convert_pt2e``), not a ``.pte``: the exporter keeps
the program it lowered reachable from the file it wrote (:func:`mobilize.export.pte.source_for`), and this module
starts from there — the same captured program as every other format (docs/architecture.md says why).

- ``dynamic`` (int8-weights): int8 per-channel weights, activations quantized per run (XNNPACK's dynamically
  quantized kernels). The XNNPACK quantizer annotates linear layers; convolutions stay float where it does not
  (the record's ``float_weights`` lists what stayed float, read from the file).
- ``static`` (int8): int8 per-channel weights and int8 activations with ranges calibrated on the calibration samples
  (range estimators: XNNPACK's default ``histogram`` observer, or global ``minmax``); float inputs/outputs.
- ``dynamic-int4`` (int4-weights): 4-bit per-channel weights (qmin −8, qmax 7: XNNPACK's ``qc4w``) on
  ``nn.Linear`` layers with int8 dynamic activations; other layers stay float.

Layers are named by their PyTorch module path (``features.3.conv.0``); a layer kept float is filtered out of the
quantizer's annotation, so its op runs in float between dequantize and quantize nodes.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import ConversionError, one_line
from mobilize.quantize.recipes import Recipe

#: ATen ops (name before the overload) that hold a layer's weight
WEIGHT_OPS = ("linear", "conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d")


def _module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def from_capture(capture: Any, spec: Any, fp32: Path) -> None:
    """Make the program ``fp32`` was lowered from reachable again in this process (:func:`layers`,
    :func:`quantize`): converters run in forked children (:func:`mobilize.isolate.in_child`), so the one that wrote
    ``fp32`` kept its program to itself. :func:`mobilize.export.pte.prepare` is deterministic on the captured
    program, so this is the program the file was lowered from."""
    from mobilize.export import pte as export_pte

    if not export_pte.has_source(fp32):
        export_pte.remember(fp32, export_pte.prepare(capture, spec))


def layers(fp32: Path) -> list[dict[str, str]]:
    """The convolutions and linear layers of the program ``fp32`` was lowered from, by module path, in graph
    order (a module called twice is one layer)."""
    from mobilize.export.pte import source_for

    src = source_for(fp32)
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for node in src.program.graph.nodes:
        if node.op != "call_function":
            continue
        op = str(node.target).replace("aten.", "", 1).split(".")[0]
        path = _module_path(node)
        if op in WEIGHT_OPS and path and path not in seen:
            seen.add(path)
            out.append({"name": path, "op": op, "module": path})
    return out


def methods(recipe: Recipe) -> tuple[str, ...]:
    """Range estimators for the static recipe: XNNPACK's default ``histogram`` observer (it chooses the range that
    minimises the quantization error of the observed histogram) and the global ``minmax``."""
    return ("histogram", "minmax") if recipe.calibrated else ("",)


def _config(recipe: Recipe, method: str) -> Any:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    if recipe.name == "static":
        cfg = get_symmetric_quantization_config(is_per_channel=True)
        if method == "minmax":
            from torchao.quantization.pt2e import MinMaxObserver

            def with_minmax(spec: Any) -> Any:
                return dataclasses.replace(spec, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))

            cfg = dataclasses.replace(cfg, input_activation=with_minmax(cfg.input_activation),
                                      output_activation=with_minmax(cfg.output_activation))
        return cfg
    if recipe.name == "dynamic":
        return get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    if recipe.name == "dynamic-int4":
        return get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True, weight_qmin=-8,
                                                 weight_qmax=7)
    raise ConversionError(f"pte has no recipe {recipe.name!r}", format="pte")


def quantize(fp32: Path, dest: Path, recipe: Recipe, calib: list[dict[str, np.ndarray]] | None,
             exclude: Sequence[str], work: Path, method: str = "") -> list[str]:
    """Write ``dest``: the program behind ``fp32`` quantized with ``recipe`` (PT2E), lowered like the exporter."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from mobilize._quiet import quiet_imports
    from mobilize.export import pte as export_pte

    quiet_imports()
    src = export_pte.source_for(fp32)
    if recipe.calibrated and not calib:
        raise ConversionError("static int8 needs calibration data", format="pte")
    notes: list[str] = []
    try:
        cfg = _config(recipe, method)
        quantizer = XNNPACKQuantizer()
        if recipe.name == "dynamic-int4":
            quantizer.set_module_type(torch.nn.Linear, cfg)
        else:
            quantizer.set_global(cfg)
        keep = frozenset(exclude)
        if keep:  # a kept-float layer's nodes are left out of every annotation
            quantizer.set_filter_function(lambda n: _module_path(n) not in keep)
        gm = copy.deepcopy(src.program.module(check_guards=False))
        prepared = prepare_pt2e(gm, quantizer)
        samples = calib if recipe.calibrated else None
        with torch.no_grad():
            if samples:
                for feed in samples:
                    prepared(*[torch.from_numpy(np.ascontiguousarray(feed[n])) for n in src.input_names])
            else:  # weight observers still need one pass
                prepared(*src.args)
        converted = convert_pt2e(prepared)
        program = torch.export.export(converted, src.args, dynamic_shapes=src.dynamic_shapes, strict=False)
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"PT2E quantization ({recipe.name}) failed: {type(exc).__name__}: "
                              f"{one_line(exc, 400)}", format="pte", ops=export_pte.ops_in(str(exc))) from exc
    data, record = export_pte.lower(program, src)
    dest.write_bytes(data)
    if recipe.name == "static":
        notes.append(f"weights int8 per-channel; activations int8, ranges from {len(calib or [])} calibration "
                     f"samples ({method or 'histogram'} observer); float inputs/outputs")
    elif recipe.name == "dynamic":
        notes.append("weights int8 per-channel; activations quantized to int8 per run (dynamic)")
    else:
        notes.append("nn.Linear weights int4 per output channel (XNNPACK qc4w), activations int8 per run; other "
                     "layers float")
    notes.append(export_pte.describe_delegation(record))
    return notes


def float_weights(path: Path) -> dict[str, int]:
    """Op types whose weight matrices are stored as float in the ``.pte`` ``path`` (XNNPACK constants of rank ≥ 2
    read by a weight-holding node), with tensor counts."""
    from mobilize.analysis.pte import read

    out: dict[str, int] = {}
    for c in read(path).constants:
        if c.dtype.startswith(("float", "bfloat")) and len([d for d in c.shape if d > 1]) >= 2 and c.consumers:
            for op in sorted(set(c.consumers)):
                out[op] = out.get(op, 0) + 1
    return out
