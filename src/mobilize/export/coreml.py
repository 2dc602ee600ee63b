"""Core ML exporter: coremltools converts the captured program (default decompositions) to an ML Program
``.mlpackage``.

The ExportedProgram path is used on purpose: ``ct.convert(torch.jit.trace(...))`` breaks on real models under numpy 2.
Core ML has no int64 I/O, so int64 inputs are declared int32 (recorded as the file's own I/O). fp16 computes in
float16 but keeps float32 inputs and outputs unless ``fp16_io`` is set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mobilize.capture import Capture
from mobilize.errors import ConversionError
from mobilize.export import ExportedFile, ExportOptions
from mobilize.spec import ModelSpec


def export(capture: Capture, spec: ModelSpec, precision: str, dest: Path, options: ExportOptions) -> ExportedFile:
    import coremltools as ct
    import numpy as np

    if precision not in ("fp32", "fp16"):
        raise ConversionError(f"coreml exporter has no precision {precision!r}", format="coreml")
    fp16 = precision == "fp16"
    inputs = []
    for name, t in zip(spec.input_names, spec.example_inputs):
        dyn = {a % t.dim() for a in (spec.dynamic_dims or {}).get(name, {})} if capture.dynamic else set()
        shape: list[Any] = [ct.RangeDim(1, 65536, default=s) if a in dyn else s for a, s in enumerate(t.shape)]
        inputs.append(ct.TensorType(name=name, shape=tuple(shape), dtype=_ct_input_dtype(t.dtype, fp16, options)))
    with_float_out = [ct.TensorType(name=n, dtype=np.float16 if (fp16 and options.fp16_io) else np.float32)
                      if _is_float_output(capture, i) else ct.TensorType(name=n)
                      for i, n in enumerate(spec.output_names or [])]
    try:
        program = decompose(capture.program)
        model = ct.convert(
            program, convert_to="mlprogram", inputs=inputs, outputs=with_float_out,
            minimum_deployment_target=getattr(ct.target, options.coreml_target),
            compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
        )
    except Exception as exc:  # noqa: BLE001 - recorded per artifact with the failing ops
        raise ConversionError(str(exc), format="coreml", ops=_unsupported_ops(str(exc))) from exc
    model.short_description = f"{spec.name} ({precision}) exported by mobilize"
    model.save(str(dest))
    notes = [f"minimum deployment target {options.coreml_target}"]
    if any(t.dtype.is_floating_point is False and t.dtype.itemsize == 8 for t in spec.example_inputs):
        notes.append("int64 inputs are int32 in the Core ML file (Core ML has no int64 I/O)")
    if fp16:
        notes.append("fp16: compute in float16" + ("" if options.fp16_io else "; inputs/outputs stay float32"))
    return ExportedFile(dest, notes)


def decompose(program: Any, extra: dict[Any, Any] | None = None) -> Any:
    """The program as coremltools converts it: torch's default decompositions, with ``extra`` entries (mobilize.repair's
    rewrites) replacing or adding to them. Idempotent: a program decomposed here converts the same way again."""
    import torch

    table = torch.export.default_decompositions()
    table.update(extra or {})
    return program.run_decompositions(table)


def _ct_input_dtype(dtype: Any, fp16: bool, options: ExportOptions) -> Any:
    import numpy as np
    import torch

    if dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        return np.int32
    if dtype == torch.bool:
        return np.bool_
    if dtype == torch.float16 or (fp16 and options.fp16_io):
        return np.float16
    return np.float32


def _is_float_output(capture: Capture, index: int) -> bool:
    outs = [n for n in capture.program.graph.nodes if n.op == "output"]
    try:
        node = outs[0].args[0][index]
        return bool(node.meta["val"].dtype.is_floating_point)
    except (IndexError, KeyError, AttributeError, TypeError):
        return True


def _unsupported_ops(message: str) -> list[str]:
    ops = re.findall(r"convert function for op '([^']+)'", message)
    ops += re.findall(r"Unsupported (?:fx node|op)s?[: ]+['\"]?([\w.:]+)", message)
    return sorted(set(ops))
