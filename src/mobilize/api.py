"""The pipeline behind ``mobilize export`` and ``mobilize verify``: source → capture → export × precisions →
verify → atomic bundle."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobilize import __version__
from mobilize import formats as registry
from mobilize.bundle import manifest as mf
from mobilize.bundle.hashing import sha256, size
from mobilize.errors import ConversionError, MobilizeError
from mobilize.export import ExportOptions
from mobilize.spec import ModelSpec
from mobilize.verify.fitness import Thresholds
from mobilize.verify.tolerance import Overrides

if TYPE_CHECKING:
    from concurrent.futures import Future

StepCallback = Callable[[str], None]


@dataclasses.dataclass
class Result:
    """What export/verify produced. ``exit_code``: 0 all good, 1 a conversion or parity failure, a file that is not
    fit to ship (``unfit``, unless ``allow_unfit``) or a quantized file below its accuracy target
    (``below_target``, unless ``allow_below_target``)."""

    out: Path
    manifest: dict[str, Any]
    strict: bool = False
    allow_unfit: bool = False
    allow_below_target: bool = False
    diagnosis: Any = None  # mobilize.diff.DiffResult for files that fail parity or miss their target (export only)

    def to_dict(self) -> dict[str, Any]:
        """``{"bundle", "exit_code", "manifest"}`` (the manifest as written, docs/manifest.md)."""
        return {"bundle": str(self.out), "exit_code": self.exit_code, "manifest": self.manifest}

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        arts: list[dict[str, Any]] = self.manifest["artifacts"]
        return arts

    @property
    def exit_code(self) -> int:
        bad = {"fail"} | ({"unverified"} if self.strict else set())
        unfit = (set() if self.allow_unfit else {"unfit"}) | (set() if self.allow_below_target else {"below_target"})
        for a in self.artifacts:
            if a["status"] != "ok" or (a["parity"] and a["parity"]["status"] in bad):
                return 1
            if (a.get("fitness") or {}).get("status") in unfit:
                return 1
        return 0


def export(source: str | ModelSpec, out: str | Path, *, formats: Sequence[str] | str | None = None,
           precisions: Sequence[str] | str = registry.DEFAULT_PRECISIONS, options: ExportOptions | None = None,
           verify: bool = True, strict: bool = False, weights: str | Path | None = None,
           trust_pickle: bool = False, isolate: bool = True, on_step: StepCallback | None = None,
           calibration: Any = None, target: Any = None, tolerances: Overrides | None = None,
           fitness: Thresholds | None = None, allow_unfit: bool = False, allow_below_target: bool = False,
           dynamic: Mapping[str, Mapping[int, Any]] | None = None, diagnose: bool = True,
           repair: bool = True, jobs: int | None = None) -> Result:
    """Export ``source`` to every format × precision into the bundle folder ``out`` (written atomically).

    ``formats``: ``"onnx,tflite"`` or a list; None exports every default format (onnx, coreml, tflite) whose pip
    extra is installed. A format asked for by name whose extra is missing raises
    :class:`~mobilize.errors.MissingExtraError` naming the ``pip install`` to run.

    Raises :class:`~mobilize.errors.MobilizeInputError` for bad input (nothing is written); conversion and parity
    failures are recorded in the manifest and reflected in ``Result.exit_code``. Each exported file is read and
    verified in a child process (``isolate=False`` runs it in this process: faster, for trusted files only).

    Quantized precisions (``int8-weights``, ``int8``, ``int4-weights``; see docs/quantization.md) take
    ``calibration`` (an ``.npz``, an image folder, ``file.py:fn`` or a :class:`~mobilize.quantize.CalibrationData`)
    and ``target`` (a :class:`~mobilize.quantize.AccuracyTarget`); ``int8`` refuses to run without calibration.
    ``jobs`` (``--jobs``; replaces ``target.jobs``) is how many processes work side by side: the converters of a
    plain (fp32/fp16) export, or the independent candidate trials of one quantized file. Default the usable cores;
    1 one after another. The files, the chosen files and the records are the same for every value (timings apart).

    ``tolerances`` replaces parity tolerance fields per precision (``{"fp16": {"atol": 2e-2}}``; fields of
    :class:`~mobilize.verify.tolerance.Tolerance`); the applied tolerance is recorded in each parity record.

    Every exported file is also judged fit to ship or not (:mod:`mobilize.verify.fitness`: size against its parameter
    floor and its siblings, op count, single-thread latency, accuracy target) with ``fitness`` thresholds; the
    record is each artifact's ``fitness``.

    ``dynamic`` adds dynamic dims to the source's spec (``{input: {axis: name | (name, min, max)}}``, the
    ``--dynamic`` flag); a dim asked dynamic but fixed in a file is a fitness finding on that file.

    A file that fails parity or misses its accuracy target is analysed layer by layer (``diagnose``;
    :func:`mobilize.diff.diagnose`): ``Result.diagnosis`` names the first layer that diverges.

    ``repair``: when a converter fails, rewrite the ops it rejects into equivalents it accepts and retry
    (:mod:`mobilize.repair`, docs/repairs.md); each artifact's ``repairs`` records which rewrites ran and why.
    ``False`` (``--no-repair``) hands every converter the captured program as is.
    """
    from mobilize._quiet import captured_output
    from mobilize.bundle.writer import check_target
    from mobilize.capture import capture
    from mobilize.source import load_source
    from mobilize.verify.inputs import make_input_sets
    from mobilize.verify.parity import compute_reference
    from mobilize.verify.tolerance import check_overrides

    step = on_step or (lambda _msg: None)
    fmts = _formats(formats, step)
    precs = registry.parse_list(precisions if isinstance(precisions, str) else list(precisions), what="precisions",
                                allowed=registry.PRECISIONS)
    from mobilize.quantize import calibration as qcal
    from mobilize.quantize import recipes as qrec

    fmts = registry.in_dependency_order(fmts)
    qrec.check_pairs(fmts, precs, converted_from={f: registry.get(f).converts_from for f in fmts})
    check_overrides(tolerances, registry.PRECISIONS)
    if jobs is not None:  # a bad value is a one-line OptionError before any work
        target = dataclasses.replace(target or qrec.AccuracyTarget(), jobs=jobs)
    if calibration is None:
        qcal.require(None, precs)  # static int8 without real data: refuse before any work
    options = options or ExportOptions()
    from mobilize.safeio import refuse_nul

    for what, value in (("out", out), ("weights", weights), ("calibration", calibration)):
        refuse_nul(value, what)  # before any work: os.stat would raise a bare ValueError mid-run
    out = Path(out)
    check_target(out)

    from mobilize import isolate as iso
    from mobilize.progress import Plan

    needs_quant = any(p in qrec.QUANT_PRECISIONS for p in precs) or calibration is not None
    # loading, [calibration], capturing, reference, one step per format × precision, then fitness
    plan = Plan(step, 4 + needs_quant + len(fmts) * len(precs))
    # one pooled worker per format for the whole run, started now: its runtime imports while this process loads,
    # captures and converts, and each file's verification overlaps the next conversion
    with iso.pool() if isolate else contextlib.nullcontext():
        warm_workers(fmts, isolate=isolate)
        plan("loading model")
        with captured_output():
            spec = source if isinstance(source, ModelSpec) else load_source(source, weights=weights,
                                                                             trust_pickle=trust_pickle)
        if isinstance(source, ModelSpec):
            from mobilize.source import _run_once

            _run_once(spec, spec.name)
        if dynamic:
            spec.add_dynamic(dynamic)
        source_str = source if isinstance(source, str) else f"ModelSpec:{spec.name}"
        quant = None
        if needs_quant:
            from mobilize.quantize.driver import Context

            data = qcal.load(calibration, spec) if calibration is not None else None
            qcal.require(data, precs)
            plan("running PyTorch on the held-out calibration samples")
            quant = Context.build(spec, data, target or qrec.AccuracyTarget())

        plan("capturing with torch.export")
        with captured_output():
            cap = capture(spec)

        plan("computing the PyTorch reference")
        sets = make_input_sets(spec)
        dropped: list[dict[str, Any]] = []
        ref = compute_reference(spec, sets, dropped)

        try:
            manifest = _build_bundle(out, fmts, precs, cap, spec, options, verify, isolate, ref, source_str, weights,
                                     trust_pickle, step, quant, tolerances, fitness, dropped, repair, plan,
                                     jobs=target.jobs if target is not None else None)
        except OSError as exc:  # full disk, permissions, a vanished folder: the previous bundle is still in place
            from mobilize.errors import BundleError

            raise BundleError(f"could not write the bundle {out}: {exc.strerror or exc}"
                              f"{f' ({exc.filename})' if getattr(exc, 'filename', None) else ''}; "
                              "the previous bundle, if any, is untouched") from exc
        result = Result(out, manifest, strict, allow_unfit, allow_below_target)
        if verify and diagnose:  # where does a failing file diverge? (docs/diff.md)
            from mobilize.diff import diagnose as find_divergence

            result.diagnosis = find_divergence(out, manifest, spec, quant, isolate=isolate, step=step)
        return result


def _formats(formats: Sequence[str] | str | None, step: StepCallback) -> list[str]:
    """The formats to export: as asked (each one's extra installed), or every installed default format."""
    from mobilize.errors import MissingExtraError
    from mobilize.progress import Done

    if formats is not None:
        fmts = registry.parse_list(formats if isinstance(formats, str) else list(formats), what="formats",
                                   allowed=tuple(registry.REGISTRY))
        registry.require_installed(fmts)
        return fmts
    fmts = registry.installed()
    if not fmts:
        raise MissingExtraError("no converter is installed: pip install 'mobilize[onnx]' (or [coreml], [tflite], "
                                "[all])")
    for f in registry.DEFAULT_FORMATS:
        if f not in fmts:
            step(Done(f"{f} skipped: {registry.missing_extra_message(f)}"))
    return fmts


def _build_bundle(out: Path, fmts: list[str], precs: list[str], cap: Any, spec: ModelSpec, options: ExportOptions,
                  verify: bool, isolate: bool, ref: Any, source_str: str, weights: Any, trust_pickle: bool,
                  step: StepCallback, quant: Any = None, tolerances: Overrides | None = None,
                  fitness: Thresholds | None = None, dropped: list[dict[str, Any]] | None = None,
                  repair: bool = True, plan: StepCallback | None = None, jobs: int | None = None) -> dict[str, Any]:
    from mobilize.bundle.writer import staged

    numbered = plan or step  # the plan's steps (one per format × precision, then fitness); step: what runs now
    from mobilize.capture import floor_bytes

    artifacts: list[dict[str, Any]] = []
    with staged(out) as tmp, tempfile.TemporaryDirectory(prefix="mobilize-quantize-") as scratch, \
            _side_by_side(fmts, precs, quant, jobs) as batch:
        ref.save(tmp / mf.REFERENCE)
        eval_set = _eval_set(source_str, spec)
        from mobilize.export.metadata import file_info

        info = file_info(spec, source_str, "fp32")
        converted = {} if batch is None else {
            (fmt, prec): batch.submit(_conversion(registry.get(fmt), cap, spec, prec, tmp, options, repair, info),
                                      label=f"{fmt} {prec}")
            for fmt in fmts for prec in precs if not registry.get(fmt).converts_from}
        for fmt in fmts:
            plugin = registry.get(fmt)
            for prec in precs:
                numbered(f"exporting {fmt} {prec}")
                fp32 = next((a for a in artifacts if a["format"] == fmt and a["precision"] == "fp32"), None)
                artifacts.append(_export_one(plugin, prec, cap, spec, tmp, options, verify, isolate, step,
                                             quant, Path(scratch), tolerances, info, repair,
                                             fp32["repairs"] if fp32 is not None else None,
                                             converted.get((fmt, prec))))
                _inherit_quantization(plugin, artifacts)
                _collect_verified(artifacts, step, len(fmts) * len(precs), block=False)
                if eval_set is not None and artifacts[-1]["status"] == "ok":
                    step(f"measuring {fmt} {prec} on {eval_set['dataset']}")
                    artifacts[-1]["accuracy"] = _accuracy(plugin, tmp / artifacts[-1]["path"], spec, eval_set)
        numbered("finishing verification, judging fitness")
        _collect_verified(artifacts, step, len(fmts) * len(precs), block=True)
        _shipped_size_ratios(artifacts)
        _placement_modules(artifacts, cap.program)
        floors = floor_bytes(cap.program)
        judge_fitness(tmp, artifacts, cap.graph, floors, ref_path=tmp / mf.REFERENCE,
                      input_names=list(spec.input_names or ()), isolate=isolate, thresholds=fitness, step=step,
                      dynamic={k: dict(v) for k, v in (spec.dynamic_dims or {}).items()})
        manifest = _manifest(spec, source_str, cap, ref, artifacts)
        manifest["model"]["floor_bytes"] = floors
        if dropped:
            manifest["reference"]["input_sets_dropped"] = dropped
        if eval_set is not None:
            manifest["model"]["accuracy"] = eval_set["pytorch"]
        if quant is not None and quant.calibration is not None:
            manifest["calibration"] = quant.calibration.describe()
        if quant is not None and quant.metric is not None:
            manifest["model"]["metric"] = {"name": quant.target.metric_name, "pytorch": quant.metric_pytorch,
                                           "min": quant.target.min_metric,
                                           "measured_on": f"{quant.holdout.samples} held-out calibration samples"}
        if weights is not None:
            manifest["model"]["weights"] = {"path": str(weights), "sha256": sha256(Path(weights))}
        manifest["security"] = {"trust_pickle": bool(trust_pickle)}
        mf.validate(manifest)
        _prune_bundle(tmp, artifacts)
        (tmp / mf.MANIFEST).write_bytes(mf.dumps(manifest))
    return manifest


@contextlib.contextmanager
def _side_by_side(fmts: list[str], precs: list[str], quant: Any, jobs: int | None) -> Iterator[Any]:
    """The converter children of a plain (fp32/fp16) export, run side by side, ``jobs`` at a time (``--jobs``,
    default the usable cores; :class:`mobilize.isolate.ChildBatch`); None — one after another, each when its turn
    comes — when there is one conversion, ``jobs`` 1, no fork (macOS, Windows), or a quantization search (its speed
    trials must not share the CPU with other converters). Each converter child computes on one thread, so on two
    cores two children take about the time of one; the files are the same bytes either way."""
    from mobilize.isolate import ChildBatch, forking_available
    from mobilize.quantize.recipes import usable_cores

    jobs = min(usable_cores() if jobs is None else jobs, len(fmts) * len(precs))
    if quant is not None or jobs < 2 or not forking_available():
        yield None
        return
    from mobilize._quiet import captured_output

    with captured_output():
        # a converter two children use is imported here once, before the first fork, so both inherit it; a converter
        # only one child uses is imported by that child, beside the other children's imports and conversions
        for fmt in fmts if len(precs) > 1 else ():
            preload_converter(fmt)
    with ChildBatch(jobs) as batch:
        yield batch


def _artifact_name(spec: ModelSpec, prec: str, plugin: registry.FormatPlugin) -> str:
    return f"{spec.name}_{prec}{plugin.suffix}"


def _conversion(plugin: registry.FormatPlugin, cap: Any, spec: ModelSpec, prec: str, tmp: Path,
                options: ExportOptions, repair: bool, info: Any) -> Callable[[StepCallback], Any]:
    """What a converter child runs for one plain (not quantized) file: convert (with repairs), then finalize."""
    dest = tmp / _artifact_name(spec, prec, plugin)
    return lambda _step: _finalized(_convert(plugin, cap, spec, prec, dest, options, repair), plugin, info, prec)


def _export_one(plugin: registry.FormatPlugin, prec: str, cap: Any, spec: ModelSpec, tmp: Path,
                options: ExportOptions, verify: bool, isolate: bool, step: StepCallback, quant: Any = None,
                scratch: Path | None = None, tolerances: Overrides | None = None, info: Any = None,
                repair: bool = True, fp32_repairs: list[dict[str, Any]] | None = None,
                converted: Future[Any] | None = None) -> dict[str, Any]:
    """One artifact: converted (in a child process; ``converted``: by a child already started side by side, see
    :func:`_side_by_side`), measured, and handed to its format's worker for verification."""
    from mobilize._quiet import captured_output
    from mobilize.bundle.writer import raise_if_disk_full
    from mobilize.isolate import in_child
    from mobilize.quantize.recipes import QUANT_PRECISIONS

    rel = _artifact_name(spec, prec, plugin)
    dest = tmp / rel
    art: dict[str, Any] = {"format": plugin.name, "precision": prec, "status": "ok", "path": rel, "bytes": None,
                           "sha256": None, "inputs": [], "outputs": [], "parity": None, "notes": [], "error": None,
                           "repairs": []}
    t0 = time.perf_counter()
    log = None
    label = f"{plugin.name} {prec}"
    child: Any = None  # a side-by-side child's ChildResult, or its exception (carrying .output and .seconds)
    try:  # converters and quantizers run in a child process: a crash or abort there costs this artifact only
        # a side-by-side child captures its own output; swapping this process's streams while the batch's threads
        # fork would only hand the children this thread's capture
        with contextlib.nullcontext() if converted is not None else captured_output() as log:
            if converted is not None:  # already running side by side: its own output and time come with it
                try:
                    child = converted.result()
                except Exception as exc:
                    child = exc
                    raise
                exported = child.value
            elif prec in QUANT_PRECISIONS and not plugin.converts_from:  # the quantizer takes the fp32 file
                preload_converter(plugin.name)
                exported = in_child(lambda s: _finalized(_quantize_one(plugin, prec, cap, spec, tmp, dest, options,
                                                                       quant, scratch, s, repair, fp32_repairs),
                                                         plugin, info, prec),
                                    label=label, on_step=step)
                art["quantization"] = exported.quantization
            else:  # repairs run in the child too: the rewrites and every retry cost this artifact only
                preload_converter(plugin.name)
                exported = in_child(_conversion(plugin, cap, spec, prec, tmp, options, repair, info), label=label)
        art["repairs"] = list(exported.repairs)
    except Exception as exc:  # noqa: BLE001 - one format failing must not stop the others
        text = getattr(child, "output", None) or (log.text if log is not None else "")
        raise_if_disk_full(exc, text, where=f"{label} into {tmp}", folders=(tmp,))
        _remove(dest)
        art["repairs"] = list(getattr(exc, "repairs", None) or [])
        art.update(status="failed", path=None, error=_error_record(plugin.name, exc, cap.program, text))
        art["export_seconds"] = round(getattr(child, "seconds", None) or time.perf_counter() - t0, 3)
        return art
    art["export_seconds"] = round(child.seconds if child is not None else time.perf_counter() - t0, 3)
    art["notes"] = exported.notes
    art["bytes"] = size(dest)
    art["sha256"] = sha256(dest)
    companions = companion_records(plugin, dest, tmp)
    if companions:
        art["companions"] = companions
    if verify:
        step(f"verifying {plugin.name} {prec}")
    later = inspect_and_verify_later(plugin, dest, prec, tmp / mf.REFERENCE if verify else None,
                                     list(spec.input_names or ()), isolate=isolate,
                                     tolerance=_tolerance(plugin.name, prec, tolerances), analyze=True,
                                     place=placement_options(options))
    art["_verified"] = lambda: _set_verified(art, later(), spec, verify)
    art["_ready"] = getattr(later, "ready", None)
    return art


def _set_verified(art: dict[str, Any], found: dict[str, Any], spec: ModelSpec, verify: bool) -> None:
    """The worker's answer for one exported file: its I/O, analysis, placement and parity records."""
    art["inputs"] = _io_records(list(spec.input_names or ()), found.get("inputs", []))
    art["outputs"] = _io_records(spec.output_names or [], found.get("outputs", []))
    _set_analysis(art, found)
    _set_placement(art, found)
    # reading, analysing and (if asked) verifying: from the file's hand-over to its worker until the answer (a pooled
    # worker may first finish the previous file of its format)
    art["verify_seconds"] = round(found.pop("_seconds", 0.0), 3)
    if verify:
        art["parity"] = found["parity"]
    elif "error" in found:
        art["notes"].append(f"could not read the file's I/O: {found['error']}")


def _collect_verified(artifacts: list[dict[str, Any]], step: StepCallback, total: int, *, block: bool) -> None:
    """Merge each queued verification into its artifact, in export order, and report the artifact done (with its
    parity); ``block=False`` stops at the first one whose worker has not answered yet (the export goes on)."""
    for k, art in enumerate(artifacts, 1):
        if art.get("_reported"):
            continue
        ready = art.get("_ready")
        if not block and ready is not None and not ready():
            return
        finish = art.pop("_verified", None)
        art.pop("_ready", None)
        if finish is not None:
            finish()
        art["_reported"] = True
        step(_done_line(art, k, total))
    for art in artifacts if block else ():
        art.pop("_reported", None)


#: the converter packages a format's exporter imports; imported once in this process before the first converter child
#: is forked, so each child (fp32, fp16, every quantization search) inherits them instead of importing them again
#: (coremltools ≈ 4 s, litert-torch ≈ 2 s under load). Importing litert-torch imports JAX without starting its
#: runtime; :func:`mobilize.isolate.forking_available` still refuses to fork once a runtime has started.
CONVERTER_IMPORTS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxscript", "onnx_ir", "torch.onnx._internal.exporter._core", "onnxruntime.transformers.float16"),
    "coreml": ("coremltools",),
    "tflite": ("litert_torch", "ai_edge_quantizer.quantizer"),
}


def preload_converter(fmt: str) -> None:
    """Import ``fmt``'s converter packages here when converters run in forked children (see CONVERTER_IMPORTS)."""
    import importlib

    from mobilize import _imports
    from mobilize.isolate import forking_available

    if fmt not in CONVERTER_IMPORTS or not forking_available():
        return
    # the loggers these packages configure are silenced in each converter child (isolate.in_child), never here:
    # api.export must not change the host process's logging (its root logger among them)
    for module in CONVERTER_IMPORTS[fmt]:
        try:
            if module == "coremltools":
                _imports.coremltools()  # without the packages it would only probe for
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - the converter child imports it again and reports what is wrong
            return


def _done_line(art: dict[str, Any], k: int, n: int) -> str:
    """``onnx fp16 exported 3.10 MB, parity pass (3/12)``: the progress line of a finished artifact."""
    from mobilize.bench.report import fmt_bytes
    from mobilize.progress import Done

    label = f"{art['format']} {art['precision']}"
    if art["status"] != "ok":
        why = " ".join(str((art.get("error") or {}).get("message") or "").split())[:120]
        return Done(f"{label} failed: {why} ({k}/{n})")
    parity = f", parity {art['parity']['status']}" if art.get("parity") else ""
    return Done(f"{label} exported {fmt_bytes(art['bytes'])}{parity} ({k}/{n})")


def _convert(plugin: registry.FormatPlugin, cap: Any, spec: ModelSpec, prec: str, dest: Path, options: ExportOptions,
             repair: bool) -> Any:
    """Run the format's exporter through :func:`mobilize.repair.convert` (as is; on a failure with the repairs it
    implicates); the returned ExportedFile carries ``repairs`` (the records) and a note per repair. A format converted
    from another one's file (ORT from ONNX) is repaired as that format: its fresh exports go through that converter."""
    from mobilize import repair as rp

    exported, records = rp.convert(plugin.converts_from or plugin.name, cap,
                                   lambda c: plugin.load("exporter")(c, spec, prec, dest, options), enabled=repair)
    exported.repairs = records
    exported.notes += [f"repaired: {r['name']} ({r['rewrites']} node(s)) — {r['why']}" for r in records
                       if r.get("status") == "applied"]
    return exported


def _shipped_size_ratios(artifacts: list[dict[str, Any]]) -> None:
    """A quantized file's ``size_ratio`` compares the shipped files: the quantizer measured its candidates before the
    finalizer added metadata to both, so the chosen file's ratio is taken again from the bundle's own fp32 sibling."""
    fp32 = {a["format"]: a["bytes"] for a in artifacts
            if a["precision"] == "fp32" and a["status"] == "ok" and a.get("bytes")}
    for a in artifacts:
        q = a.get("quantization")
        if q and a["status"] == "ok" and a.get("bytes") and fp32.get(a["format"]):
            q["size_ratio"] = round(a["bytes"] / fp32[a["format"]], 4)


def _finalized(exported: Any, plugin: registry.FormatPlugin, info: Any, precision: str) -> Any:
    """The format's finalizer on a fresh file (in the converter's child process): metadata inside the file,
    reproducible bytes, side files removed; its notes join the exporter's."""
    if info is not None and plugin.finalizer:
        exported.notes = list(exported.notes) + list(plugin.load("finalizer")(exported.path, info.with_precision(
            precision)))
    return exported


def _prune_bundle(tmp: Path, artifacts: list[dict[str, Any]]) -> None:
    """A bundle holds only what its manifest lists: drop anything else a converter left in the staging folder."""
    listed = {mf.MANIFEST, mf.REFERENCE} | {a["path"] for a in artifacts if a.get("path")}
    listed |= {c["path"] for a in artifacts for c in a.get("companions") or []}
    listed |= {c["path"] for a in artifacts for c in a.get("companions") or []}
    for entry in tmp.iterdir():
        if entry.name not in listed:
            _remove(entry)


def _set_analysis(art: dict[str, Any], found: dict[str, Any]) -> None:
    art["analysis"] = found.get("analysis")
    if found.get("analysis_error"):
        art["notes"].append(f"could not analyse the file's ops and constants: {found['analysis_error']}")


def companion_records(plugin: registry.FormatPlugin, dest: Path, bundle: Path) -> list[dict[str, Any]]:
    """The files the exporter wrote beside the artifact that ship with it (path, bytes, sha256)."""
    return [{"path": p.relative_to(bundle).as_posix(), "bytes": size(p), "sha256": sha256(p)}
            for p in registry.companion_paths(plugin, dest) if p.is_file()]


def placement_options(options: ExportOptions | None) -> dict[str, Any]:
    """What the placement readers need from the export options (the Core ML target the files were made for)."""
    return {"coreml_target": options.coreml_target if options is not None else None}


def _set_placement(art: dict[str, Any], found: dict[str, Any]) -> None:
    if "placement" in found:
        art["placement"] = found["placement"]
    if found.get("placement_error"):
        art["placement"] = {"error": found["placement_error"]}
        art["notes"].append(f"could not inspect where the file's ops would run: {found['placement_error']}")


def _placement_modules(artifacts: list[dict[str, Any]], program: Any) -> None:
    """Core ML op names in placement records → the PyTorch modules they came from (needs the captured program)."""
    from mobilize.analysis import placement
    from mobilize.analysis.bundle import target_message

    names = {n for a in artifacts for n in placement.coreml_op_names(a.get("placement"))}
    if names:
        found = placement.coreml_modules(program, names)
        for a in artifacts:
            placement.attach_modules(a.get("placement"), found)
    for a in artifacts:
        dep = (a.get("placement") or {}).get("deployment") or {}
        if dep.get("exceeds_requested"):
            a["notes"].append(target_message(dep))


def _inherit_quantization(plugin: registry.FormatPlugin, artifacts: list[dict[str, Any]]) -> None:
    """A converted file (ORT from ONNX) shares its source's quantization record (same recipe, same weights) and, when
    it was converted from the bundle's file, that file's repairs."""
    art = artifacts[-1]
    if not plugin.converts_from or art["status"] != "ok":
        return
    made_from = next((a for a in artifacts if a["format"] == plugin.converts_from
                      and a["precision"] == art["precision"] and a["status"] == "ok"), None)
    if made_from is not None and not art.get("repairs"):
        art["repairs"] = list(made_from.get("repairs") or [])
    source = next((a for a in artifacts if a["format"] == plugin.converts_from and a["precision"] == art["precision"]
                   and a.get("quantization")), None)
    if source is not None:
        art["quantization"] = {**source["quantization"], "measured_on": f"the {plugin.converts_from} file"}


def judge_fitness(bundle: Path, artifacts: list[dict[str, Any]], graph: dict[str, Any], floors: dict[str, int], *,
                  ref_path: Path, input_names: Sequence[str], isolate: bool = True,
                  thresholds: Thresholds | None = None, step: StepCallback | None = None,
                  dynamic: dict[str, dict[int, str]] | None = None) -> None:
    """Time every exported file (one thread, all interleaved in one worker) and set each artifact's ``latency`` and
    ``fitness`` records (:mod:`mobilize.verify.fitness`)."""
    from mobilize.verify import fitness, timing

    ok = [a for a in artifacts if a["status"] == "ok"]
    if ok and ref_path.is_file():
        (step or (lambda _m: None))(f"timing {len(ok)} file(s) (single thread)")
        items = [{"key": f"{a['format']} {a['precision']}", "format": a["format"], "path": str(bundle / a["path"])}
                 for a in ok]
        pairs = fitness.latency_pairs([(it["key"], a["format"], a["precision"]) for a, it in zip(ok, items)],
                                      thresholds)
        timed = timing.measure(items, ref_path, list(input_names), isolate=isolate, pairs=pairs)
        for a, it in zip(ok, items):
            a["latency"] = timed.get(it["key"])
    fitness.judge(artifacts, graph, floors, thresholds, dynamic)


def _quantize_one(plugin: registry.FormatPlugin, prec: str, cap: Any, spec: ModelSpec, tmp: Path, dest: Path,
                  options: ExportOptions, quant: Any, scratch: Path | None, step: StepCallback,
                  repair: bool = True, fp32_repairs: list[dict[str, Any]] | None = None) -> Any:
    """Quantize the format's fp32 file (the bundle's own when fp32 was exported, else one in ``scratch``)."""
    from mobilize._quiet import captured_output
    from mobilize.export import ExportedFile
    from mobilize.quantize.driver import quantize_artifact

    assert quant is not None and scratch is not None
    fp32 = tmp / f"{spec.name}_fp32{plugin.suffix}"
    repairs = list(fp32_repairs or [])
    if not fp32.exists():
        fp32 = scratch / plugin.name / f"{spec.name}_fp32{plugin.suffix}"
        if not fp32.exists():
            fp32.parent.mkdir(parents=True, exist_ok=True)
            step(f"exporting {plugin.name} fp32 (input of the quantizer)")
            with captured_output():
                repairs = _convert(plugin, cap, spec, "fp32", fp32, options, repair).repairs
    # a quantizer that starts from the torch program rather than the file (ExecuTorch's PT2E) re-attaches that
    # program here: the fp32 file was written in another converter child, whose memory is gone
    attach = getattr(importlib.import_module(f"mobilize.quantize.{plugin.name}"), "from_capture", None)
    if attach is not None:
        attach(cap, spec, fp32)
    work = scratch / plugin.name / prec
    work.mkdir(parents=True, exist_ok=True)
    notes, record = quantize_artifact(plugin.name, prec, fp32, dest, quant, work, step)
    exported = ExportedFile(dest, list(notes))
    exported.repairs = list(repairs)  # the fp32 file's: the quantizer starts from it
    for why in (record.get("achieved") or {}).get("unjudged") or []:
        exported.notes.append(f"not judged on held-out data: {why}")
    exported.quantization = record  # type: ignore[attr-defined]
    return exported


def _eval_set(source: str, spec: ModelSpec) -> dict[str, Any] | None:
    """A labelled test set for the model when mobilize has one (the zoo's digits), with PyTorch's own accuracy."""
    from mobilize.quantize.accuracy import eval_set

    return eval_set(source, spec)


def _accuracy(plugin: registry.FormatPlugin, path: Path, spec: ModelSpec, eval_set: dict[str, Any]) -> dict[str, Any]:
    from mobilize.quantize.accuracy import file_accuracy

    return file_accuracy(plugin.name, path, spec, eval_set)


def _tolerance(fmt: str, precision: str, tolerances: Overrides | None) -> Any:
    """The overridden tolerance for one artifact, or None (the verifier then applies the default)."""
    if not tolerances or precision not in tolerances:
        return None
    from mobilize.verify.tolerance import for_artifact

    return for_artifact(fmt, precision, tolerances)


def verify_in_process(plugin: registry.FormatPlugin, path: Path, precision: str, ref: Any,
                      input_names: Sequence[str], tolerance: Any = None) -> Any:
    """Verify one file in this process (the worker's job; use :func:`inspect_and_verify` from outside)."""
    from mobilize._quiet import captured_output
    from mobilize.verify.parity import verify_file

    with captured_output():
        return verify_file(plugin.load("runner"), path, plugin.name, precision, ref, input_names, tolerance)


def inspect_and_verify(plugin: registry.FormatPlugin, path: Path, precision: str | None, ref_path: Path | None,
                       input_names: Sequence[str], *, isolate: bool = True, tolerance: Any = None,
                       analyze: bool = False, place: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read the file's declared I/O and (when ``ref_path`` is given) verify it — in a child process by default, so
    a runtime that crashes on the file costs one artifact, not the run. Returns ``{"inputs", "outputs",
    "parity"?}`` with I/O as dicts; ``{"error": ...}`` when the file cannot be read. ``tolerance`` (a
    :class:`~mobilize.verify.tolerance.Tolerance`) replaces the default for the format × precision. ``analyze`` adds
    the static ``analysis`` record; ``place`` (options such as ``coreml_target``) adds the ``placement`` record
    (:mod:`mobilize.analysis.placement`)."""
    found = inspect_and_verify_later(plugin, path, precision, ref_path, input_names, isolate=isolate,
                                     tolerance=tolerance, analyze=analyze, place=place)()
    found.pop("_seconds", None)
    return found


def inspect_and_verify_later(plugin: registry.FormatPlugin, path: Path, precision: str | None,
                             ref_path: Path | None, input_names: Sequence[str], *, isolate: bool = True,
                             tolerance: Any = None, analyze: bool = False,
                             place: dict[str, Any] | None = None) -> Callable[[], dict[str, Any]]:
    """:func:`inspect_and_verify` started now, answered by the returned function: inside an
    :func:`mobilize.isolate.pool` block the job is queued on the format's pooled worker and runs while this process
    goes on (converting the next file); elsewhere it runs before this returns."""
    from mobilize import isolate as iso

    job = {"op": "verify" if ref_path is not None else "inspect", "format": plugin.name, "path": str(path),
           "precision": precision, "reference": str(ref_path) if ref_path else None,
           "input_names": list(input_names), "tolerance": tolerance.to_dict() if tolerance is not None else None,
           "analyze": analyze, **({"place": place} if place is not None else {})}
    missing = registry.missing_extra_message(plugin.name)
    if missing is not None:  # an ONNX-only install re-verifying a bundle that also holds Core ML files
        from mobilize.verify.parity import ParityRecord
        from mobilize.verify.tolerance import for_artifact

        record = ParityRecord("unverified", None, missing, tolerance or for_artifact(plugin.name, precision or "fp32"))
        unverified = {"error": missing, "kind": "MissingExtraError",
                      **({"parity": record.to_dict()} if ref_path else {}), "_seconds": 0.0}
        return lambda: unverified
    t0 = time.perf_counter()
    if not isolate or not _needs_isolation(plugin):
        from mobilize._worker import handle

        found = {**handle(job), "_seconds": time.perf_counter() - t0}
        return lambda: found
    active = iso.active_pool()
    if active is None:
        found = {**_run_isolated(plugin, precision, tolerance, lambda: iso.run(job)),
                 "_seconds": time.perf_counter() - t0}
        return lambda: found
    future = active.submit(plugin.name, job)
    done: list[float] = []  # when the worker answered (the answer is collected later)
    future.add_done_callback(lambda _f: done.append(time.perf_counter()))

    def answer() -> dict[str, Any]:
        found = _run_isolated(plugin, precision, tolerance, future.result)
        return {**found, "_seconds": (done[0] if done else time.perf_counter()) - t0}

    answer.ready = future.done  # type: ignore[attr-defined]  # answered already (answer() will not wait)
    return answer


def _run_isolated(plugin: registry.FormatPlugin, precision: str | None, tolerance: Any,
                  get: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    from mobilize import isolate as iso

    try:
        return get()
    except iso.WorkerDied as exc:
        from mobilize.verify.parity import ParityRecord
        from mobilize.verify.tolerance import for_artifact

        runtime = plugin.load("runner").runtime
        reason = f"could not run the file: {runtime} {exc}" + (f" — last output: {exc.log_tail[-1][:200]}"
                                                                if exc.log_tail else "")
        record = ParityRecord("fail", runtime, reason, tolerance or for_artifact(plugin.name, precision or "fp32"),
                              could_not_run=True)
        record.failures.append(reason)
        return {"error": reason, "kind": "WorkerDied", "signal": exc.signal_name, "parity": record.to_dict()}


def warm_workers(fmts: Sequence[str], *, isolate: bool = True) -> None:
    """Start the pooled worker of each format that needs one, importing its runtime in the background (inside an
    :func:`mobilize.isolate.pool` block; elsewhere nothing happens)."""
    from mobilize import isolate as iso

    active = iso.active_pool()
    if active is None or not isolate:
        return
    for fmt in fmts:
        plugin = registry.get(fmt)
        if _needs_isolation(plugin):
            active.warm(fmt, [fmt])


def _io_records(model_names: Sequence[str], file_io: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The file's I/O (as dicts), each with ``model_name`` — the PyTorch-side name it maps to."""
    from mobilize.runtime.base import IOTensor
    from mobilize.verify.parity import io_map

    tensors = [IOTensor(d["name"], tuple(d["shape"]), d["dtype"], d.get("quantization")) for d in file_io]
    try:
        mapping = {v: k for k, v in io_map(model_names, tensors).items()}
    except MobilizeError:
        mapping = {}
    return [{**d, **({"model_name": mapping[d["name"]]} if d["name"] in mapping else {})} for d in file_io]


def _error_record(fmt: str, exc: BaseException, program: Any, log: str) -> dict[str, Any]:
    ops = list(getattr(exc, "ops", []) or [])
    modules = list(getattr(exc, "modules", []) or [])  # the failing nodes' modules, when the converter named them
    if ops and not modules:
        modules = modules_for_ops(program, ops)
    if ops and not modules:  # Core ML and LiteRT convert the decomposed graph: look there too
        try:
            modules = modules_for_ops(program.run_decompositions(), ops)
        except Exception:  # noqa: BLE001 - this is only a hint for the error message
            modules = []
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "## Exception summary" in message:  # torch.onnx's report: the summary names the failing op
        message = message.split("## Exception summary", 1)[1]
    message = " ".join(message.split()) or type(exc).__name__
    if len(message) > 600:
        message = message[:599] + "…"
    tail = [ln for ln in log.strip().splitlines() if ln.strip()][-5:]
    return {"message": f"{fmt} conversion failed: {type(exc).__name__}: {message}", "ops": ops, "modules": modules,
            "converter_log_tail": tail, "kind": "conversion" if isinstance(exc, ConversionError) else "internal"}


def modules_for_ops(program: Any, ops: Sequence[str]) -> list[str]:
    """PyTorch module paths (with class names) whose captured nodes call any of ``ops``."""
    found: list[str] = []
    keys = {o.split("::")[-1].split(".")[-1].replace("aten_", "") for o in ops}
    keys |= {o.split("::")[-1].replace("torch.ops.", "").replace("aten.", "").split(".")[0] for o in ops}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        name = target.replace("aten.", "").split(".")[0]
        if name not in keys and target not in ops:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, cls = list(stack.values())[-1]
            cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
            entry = f"{path or '(root)'} ({cls_name.rsplit('.', 1)[-1]}) calls {target}"
        else:
            entry = f"(root) calls {target}"
        if entry not in found:
            found.append(entry)
    return found


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _parameters(spec: ModelSpec) -> int:
    seen: set[int] = set()
    total = 0
    for p in spec.module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _manifest(spec: ModelSpec, source: str, cap: Any, ref: Any, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    model = spec.to_dict()
    model["source"] = source
    model["outputs"] = [{"name": n, "shape": list(v.shape), "dtype": v.dtype.name}
                        for n, v in ref.outputs[0].items()]
    model["parameters"] = _parameters(spec)
    return {
        "schema_version": mf.SCHEMA_VERSION,
        "mobilize_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "tools": mf.tool_versions(),
        "model": model,
        "capture": cap.to_dict(),
        "reference": {"path": mf.REFERENCE, "deterministic": ref.deterministic,
                      "input_sets": [s.describe() for s in ref.sets]},
        "artifacts": artifacts,
        "summary": summarize(artifacts),
    }


def summarize(artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    parity = {"pass": 0, "fail": 0, "unverified": 0}
    fitness = {"fit": 0, "unfit": 0, "below_target": 0}
    for a in artifacts:
        if a["parity"]:
            parity[a["parity"]["status"]] += 1
        status = (a.get("fitness") or {}).get("status")
        if status in fitness:
            fitness[status] += 1
    return {"exported": sum(a["status"] == "ok" for a in artifacts),
            "failed": sum(a["status"] != "ok" for a in artifacts), "parity": parity, "fitness": fitness,
            "repaired": sum(a["status"] == "ok" and any(r.get("status") == "applied" for r in a.get("repairs") or [])
                            for a in artifacts)}


def verify(bundle: str | Path, *, source: str | None = None, strict: bool = False, isolate: bool = True,
           on_step: StepCallback | None = None, tolerances: Overrides | None = None,
           fitness: Thresholds | None = None, allow_unfit: bool = False, allow_below_target: bool = False) -> Result:
    """Re-verify an existing bundle against its stored reference (or a fresh PyTorch run of ``source``).

    The bundle's files are not modified; the returned manifest carries the new parity records and a fresh fitness
    judgement (files re-analysed and re-timed on this machine; accuracy from the stored quantization records). A
    file whose sha256 no longer matches the manifest fails parity with that reason. ``tolerances``, ``fitness``,
    ``allow_*``: as for :func:`export`.
    """
    from mobilize.verify.tolerance import check_overrides

    check_overrides(tolerances, registry.PRECISIONS)
    from mobilize.errors import BundleError
    from mobilize.progress import Plan
    from mobilize.verify import fitness as fitness_mod
    from mobilize.verify.parity import Reference, compute_reference

    step = on_step or (lambda _msg: None)
    bundle = Path(bundle)
    manifest = mf.read(bundle, check_files=False)
    # [loading], one step per exported file, then fitness
    plan = Plan(step, (source is not None) + sum(a["status"] == "ok" for a in manifest["artifacts"]) + 1)
    ref_path = mf.safe_member(bundle, manifest["reference"]["path"], str(bundle / mf.MANIFEST))
    if source is not None:
        from mobilize._quiet import captured_output
        from mobilize.source import load_source
        from mobilize.verify.inputs import make_input_sets

        plan("loading model")
        with captured_output():
            spec = load_source(source)
        stored = Reference.load(ref_path) if ref_path.is_file() else None
        sets = stored.sets if stored else make_input_sets(spec)
        ref = compute_reference(spec, sets)
    else:
        if not ref_path.is_file():
            raise BundleError(f"{bundle}: {manifest['reference']['path']} is missing; re-verify with --source "
                              "to recompute the reference from PyTorch")
        try:
            ref = Reference.load(ref_path)
        except Exception as exc:  # noqa: BLE001 - any decoding problem is a bad bundle
            raise BundleError(f"{ref_path}: unreadable reference data ({type(exc).__name__}: {exc})") from None
    input_names = [t["name"] for t in manifest["model"]["inputs"]]
    for s_ in ref.sets:  # the manifest and reference.npz must describe the same inputs
        if set(s_.arrays) != set(input_names):
            raise BundleError(f"{bundle / mf.MANIFEST}: model inputs {input_names} do not match the inputs stored in "
                              f"{manifest['reference']['path']} ({sorted(s_.arrays)}); the bundle was edited or is "
                              "not from one export")
    from mobilize import isolate as iso

    with tempfile.TemporaryDirectory(prefix="mobilize-verify-") as scratch, \
            iso.pool() if isolate else contextlib.nullcontext():
        warm_workers(sorted({a["format"] for a in manifest["artifacts"] if a["status"] == "ok"
                             and a["format"] in registry.REGISTRY}), isolate=isolate)
        if source is not None:
            ref_path = Path(scratch) / mf.REFERENCE
            ref.save(ref_path)
        pending = []
        for art in manifest["artifacts"]:
            if art["status"] != "ok":
                continue
            where = mf.artifact_where(bundle, art)
            path = mf.artifact_path(bundle, art)
            plan(f"verifying {art['format']} {art['precision']}")
            plugin = registry.get(art["format"])
            _check_kind(plugin.name, path, where)
            pending.append((art, path, inspect_and_verify_later(
                plugin, path, art["precision"], ref_path, input_names, isolate=isolate,
                tolerance=_tolerance(plugin.name, art["precision"], tolerances), analyze=True)))
        plan("collecting the results, judging fitness")
        for art, path, later in pending:  # each file's worker answers in the order the files were queued
            found = later()
            found.pop("_seconds", None)
            record = found["parity"]
            art.setdefault("notes", [])
            _set_analysis(art, found)
            if sha256(path) != art["sha256"]:
                msg = f"{art['path']}: sha256 differs from the manifest (the file changed after export)"
                record["failures"].insert(0, msg)
                record["status"] = "fail"
                if not record.get("could_not_run"):  # "LiteRT could not load it" says more than "it changed"
                    record["reason"] = msg
            art["parity"] = record
        judge_fitness(bundle, manifest["artifacts"], manifest["capture"].get("graph") or {},
                      manifest["model"].get("floor_bytes") or {}, ref_path=ref_path, input_names=input_names,
                      isolate=isolate, thresholds=fitness, step=step,
                      dynamic=fitness_mod.requested_dynamic(manifest["model"]["inputs"]))
    manifest["summary"] = summarize(manifest["artifacts"])
    return Result(bundle, manifest, strict, allow_unfit, allow_below_target)


def _needs_isolation(plugin: registry.FormatPlugin) -> bool:
    """Whether reading/running this format's files needs a child process: yes wherever something will load the file
    (a native runtime, or a fallback such as the Core ML reference interpreter, whose allocations follow the file's
    shapes); no when nothing here can run the file and only its declared I/O is read."""
    if plugin.load("runner").available()[0]:
        return True
    return bool(plugin.fallback_runner) and bool(plugin.load("fallback_runner").available()[0])


_KIND_OF_FORMAT = {"onnx": "onnx", "tflite": "tflite", "coreml": "mlpackage", "ort": "ort", "pte": "pte"}


def _check_kind(fmt: str, path: Path, where: str) -> None:
    """The file's content must be what the manifest says it is (a truncated or mislabelled file fails here)."""
    from mobilize.errors import BundleError
    from mobilize.sniff import sniff

    want = _KIND_OF_FORMAT.get(fmt)
    got = sniff(path)
    if want and got != want:
        raise BundleError(f"{where}: {path.name} is listed as {fmt} but its content is "
                          f"{'not recognised' if got == 'unknown' else got} (truncated or corrupted?)")


def load_bundle(bundle: str | Path) -> dict[str, Any]:
    """Read and check a bundle's manifest (schema, paths inside the folder, sizes and sha256 of every file)."""
    return mf.read(Path(bundle), check_files=True)
