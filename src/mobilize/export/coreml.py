"""Core ML exporter: coremltools converts the captured program (default decompositions) to an ML Program
``.mlpackage``. Recurrent layers (nn.LSTM / nn.GRU / nn.RNN) are kept out of the decomposition and become Core ML's
own recurrent ops where Core ML can express them (:mod:`mobilize.export.coreml_recurrent`); the artifact notes say
which layers stayed native and which were unrolled, and why.

The ExportedProgram path is used on purpose: ``ct.convert(torch.jit.trace(...))`` breaks on real models under numpy 2.
Core ML has no int64 I/O, so int64 inputs are declared int32 (recorded as the file's own I/O). fp16 computes in
float16 but keeps float32 inputs and outputs unless ``fp16_io`` is set; recurrent ops that must compute in float32
(before iOS17) get their weights stored in float16 from iOS16 on (:func:`coreml_recurrent.store_weights_fp16`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from mobilize.capture import Capture
from mobilize.errors import ConversionError, describe
from mobilize.export import ExportedFile, ExportOptions, coreml_app, coreml_recurrent
from mobilize.spec import ModelSpec


def export(capture: Capture, spec: ModelSpec, precision: str, dest: Path, options: ExportOptions) -> ExportedFile:
    import numpy as np

    from mobilize import _imports

    ct = _imports.coremltools()  # without the packages it would only probe for (a converter child imports it here)

    if precision not in ("fp32", "fp16"):
        raise ConversionError(f"coreml exporter has no precision {precision!r}", format="coreml")
    fp16 = precision == "fp16"
    app = coreml_app.plan(spec, _output_shapes(capture))
    app_notes: list[str] = []
    source = capture
    if app.image is not None:
        try:
            source = coreml_app.pixel_capture(capture, spec, app)
        except Exception as exc:  # noqa: BLE001 - the file still works with a tensor input; say why
            app = dataclasses.replace(app, image=None)
            app_notes.append(f"image input kept as a tensor: re-exporting behind the normalisation failed "
                             f"({describe(exc)})")
    tensors, shapes = [], []
    for name, t in zip(spec.input_names, spec.example_inputs):
        dyn = {a % t.dim(): d for a, d in (spec.dynamic_dims or {}).get(name, {}).items()
               if capture.dims.get(d, {}).get("dynamic")}
        shape = tuple(_range_dim(ct, capture.dims[dyn[a]], s) if a in dyn else s for a, s in enumerate(t.shape))
        shapes.append(shape)
        tensors.append(ct.TensorType(name=name, shape=shape, dtype=_ct_input_dtype(t.dtype, fp16, options)))
    with_float_out = [ct.TensorType(name=n, dtype=np.float16 if (fp16 and options.fp16_io) else np.float32)
                      if _is_float_output(capture, i) else ct.TensorType(name=n)
                      for i, n in enumerate(spec.output_names or [])]
    convert = dict(convert_to="mlprogram", inputs=tensors, outputs=with_float_out,
                   minimum_deployment_target=getattr(ct.target, options.coreml_target),
                   compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32)
    try:
        model = None
        if app.image is not None or app.classifier:
            app_convert = dict(convert)
            if app.image is not None:
                app_convert["inputs"] = [coreml_app.image_type(ct, spec, app, shapes[i]) if i == app.image else x
                                         for i, x in enumerate(tensors)]
            if app.classifier:
                app_convert.update(classifier_config=coreml_app.classifier_config(ct, spec), outputs=None)
            try:
                model, recurrent_notes = _convert(source, app_convert)
                app_notes += app.notes(spec)
            except Exception as exc:  # noqa: BLE001 - a plain tensor file is still a good file; say why
                app_notes.append(f"no image input / classifier outputs: coremltools refused them ({describe(exc)})")
        if model is None:
            model, recurrent_notes = _convert(capture, convert)
    except Exception as exc:  # noqa: BLE001 - recorded per artifact with the failing ops
        raise ConversionError(str(exc), format="coreml", ops=_unsupported_ops(str(exc))) from exc
    fp16_notes: list[str] = []
    if fp16:
        model, fp16_notes = _fp16_recurrent(ct, model, options)
    model.short_description = f"{spec.name} ({precision}) exported by mobilize"
    coreml_recurrent.save(model, str(dest))
    notes = [f"minimum deployment target {options.coreml_target}", *recurrent_notes, *app_notes]
    if any(t.dtype.is_floating_point is False and t.dtype.itemsize == 8 for t in spec.example_inputs):
        notes.append("int64 inputs are int32 in the Core ML file (Core ML has no int64 I/O)")
    if fp16:
        notes.append("fp16: compute in float16" + ("" if options.fp16_io else "; inputs/outputs stay float32"))
        notes += fp16_notes
    return ExportedFile(dest, notes)


def decompose(program: Any, extra: dict[Any, Any] | None = None) -> Any:
    """The program as coremltools converts it: torch's default decompositions (without the recurrent layers that stay
    native, :func:`coreml_recurrent.plan`), with ``extra`` entries (mobilize.repair's rewrites) replacing or adding to
    them. Idempotent: the exporter decomposes a program decomposed here to the same program again."""
    table = coreml_recurrent.plan(program).decompositions()
    table.update(extra or {})
    return program.run_decompositions(table)


def _fp16_recurrent(ct: Any, model: Any, options: ExportOptions) -> tuple[Any, list[str]]:
    """An fp16 file whose recurrent ops compute in float32 (Core ML's lstm/gru/rnn are float32-only before iOS17):
    from iOS16 on their weights are stored in float16 and cast to float32 at load
    (:func:`coreml_recurrent.store_weights_fp16`); iOS15 has no load-time cast, so they stay float32. The model
    and the notes saying which ops compute and store what."""
    kept = coreml_recurrent.float32_recurrent_ops(model)
    if not kept:
        return model, []
    ops = ", ".join(f"{op} ×{n}" for op, n in sorted(kept.items()))
    head = f"fp16: Core ML's recurrent ops are float32-only before iOS17, so the {ops} op(s) compute in float32"
    later = "--coreml-target iOS17 or newer computes them in float16"
    if getattr(ct.target, options.coreml_target) < ct.target.iOS16:
        return model, [f"{head} and keep float32 weights ({options.coreml_target} has no load-time cast to store "
                       f"them in float16: --coreml-target iOS16 stores them in float16, {later})"]
    try:
        rewritten, done = coreml_recurrent.store_weights_fp16(model)
    except Exception as exc:  # noqa: BLE001 - the float32-weight file is still correct; say why it stayed so
        return model, [f"{head} and keep float32 weights (storing them in float16 failed: {describe(exc)}; {later})"]
    if not done.tensors:
        return model, [f"{head} and keep float32 weights ({later})"]
    stored = "their weights are" if done.ops == kept else \
        f"the weights of {', '.join(f'{op} ×{n}' for op, n in sorted(done.ops.items()))} are"
    rest = "" if done.ops == kept else ", the other ops keep float32 weights (constants shared with other ops)"
    from mobilize.bench.report import fmt_bytes

    return rewritten, [f"{head}; {stored} stored in float16 and cast to float32 when the model loads "
                       f"(constexpr_cast; {done.tensors} tensors, {fmt_bytes(done.saved_bytes)} smaller){rest}; "
                       f"{later}"]


#: ML Program inputs need a finite upper bound; an unbounded dynamic dim gets this one
RANGE_DIM_MAX = 65536


def _range_dim(ct: Any, dim: dict[str, Any], default: int) -> Any:
    """A Core ML ``RangeDim`` with the bounds torch.export proved for the dim (unbounded: up to
    :data:`RANGE_DIM_MAX`), the example's size as its default."""
    lo = max(1, dim.get("min") or 1)
    hi = dim.get("max") or RANGE_DIM_MAX
    return ct.RangeDim(lower_bound=lo, upper_bound=hi, default=min(max(lo, default), hi))


def _convert(capture: Capture, convert: dict[str, Any]) -> tuple[Any, list[str]]:
    """ct.convert with the recurrent layers that can stay native kept out of the decomposition; if that conversion
    fails, the fully decomposed one (every recurrent layer unrolled), with a note saying why."""
    import coremltools as ct

    plan = coreml_recurrent.plan(capture.program)
    notes = plan.unrolled_notes()
    if plan.native_ops:
        try:
            with coreml_recurrent.exir_converters(plan.native_ops):
                model = ct.convert(capture.program.run_decompositions(plan.decompositions()), **convert)
            return model, [plan.native_note(model), *notes]
        except Exception as exc:  # noqa: BLE001 - retried decomposed; the reason goes into the notes
            layers = ", ".join(la.describe() for la in plan.native)
            notes.insert(0, f"recurrent layers {layers} unrolled into per-time-step ops (a weight copy per step: "
                            f"larger file, more ops): converting them to native Core ML ops failed "
                            f"({describe(exc)})")
    return ct.convert(capture.program.run_decompositions(), **convert), notes


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


def _output_shapes(capture: Capture) -> list[tuple[int, ...]]:
    outs = [n for n in capture.program.graph.nodes if n.op == "output"]
    try:
        return [tuple(node.meta["val"].shape) for node in outs[0].args[0]]
    except (IndexError, KeyError, AttributeError, TypeError):
        return []


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


#: coremltools metadata that changes from day to day (and so every export's bytes)
_VOLATILE_METADATA = ("com.github.apple.coremltools.conversion_date",)


def finalize(path: Path, info) -> list[str]:  # noqa: ANN001 - mobilize.export.metadata.FileInfo
    """Make the package an app can ship as is: ``info`` in ``user_defined_metadata`` and the short description,
    converter side files the package's own manifest does not list removed, and reproducible bytes — the model spec
    serialized deterministically without the conversion date, and ``Manifest.json`` with item ids derived from the
    content instead of random UUIDs."""
    import hashlib
    import json
    import shutil
    import uuid

    from coremltools.proto import Model_pb2

    from mobilize.bundle.hashing import sha256, size
    from mobilize.runtime.coreml import unlisted_members

    notes = []
    for member in unlisted_members(path):
        n = size(member)
        shutil.rmtree(member) if member.is_dir() else member.unlink()
        notes.append(f"removed {member.relative_to(path).as_posix()} ({n} bytes): a converter side file the "
                     "package's own manifest does not list")
    manifest_path = path / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    items = manifest["itemInfoEntries"]
    root = items[manifest["rootModelIdentifier"]]
    spec_path = path / "Data" / root["path"]
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    meta = spec.description.metadata
    for key in _VOLATILE_METADATA:
        if key in meta.userDefined:
            del meta.userDefined[key]
    for key, value in info.entries().items():
        meta.userDefined[key] = value
    meta.shortDescription = info.description or f"{info.model} ({info.precision}) exported by mobilize"
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    renamed = {}
    for old, entry in sorted(items.items(), key=lambda kv: kv[1]["path"]):
        digest = hashlib.sha256(f"{entry['path']}\0{sha256(path / 'Data' / entry['path'])}".encode()).digest()
        renamed[old] = str(uuid.UUID(bytes=digest[:16], version=4)).upper()
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in items.items()}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")
    return notes
