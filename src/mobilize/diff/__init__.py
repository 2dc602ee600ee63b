"""``mobilize diff``: where a file diverges from PyTorch, layer by layer, named by the user's own modules.

PyTorch runs with a hook on every module; each artifact runs in the worker process with every intermediate tensor
exposed (:mod:`.onnx`, :mod:`.tflite`, :mod:`.coreml`), then again with every matched tensor fed PyTorch's value.
:mod:`.match` pairs modules with tensors by the provenance each converter keeps, :mod:`.analyze` measures the error
each layer outputs and the error it adds, :mod:`.report` prints the table and writes JSON and HTML.

A bundle never names code that mobilize runs: the PyTorch side needs ``source`` from the caller. Without it, each
file's outputs are compared with the bundle's stored reference outputs.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

StepCallback = Callable[[str], None]
#: the most input samples compared (each sample keeps every intermediate tensor of every file in memory)
DEFAULT_SAMPLES = 8


@dataclasses.dataclass
class DiffResult:
    """Per-artifact reports (``reports``), each with ``layers``, ``unmatched``, ``coverage``, ``first_divergent`` and
    a one-line ``summary``. ``exit_code``: 0 no layer crosses its threshold, 1 one does (or a file could not run)."""

    bundle: Path
    reports: list[dict[str, Any]]
    inputs: dict[str, Any]
    source: str | None
    modules: dict[str, str] = dataclasses.field(default_factory=dict)  # module path → class name

    @property
    def exit_code(self) -> int:
        if any(r.get("could_not_run") for r in self.reports):
            return 2
        return 1 if any(r.get("error") or r.get("first_divergent") for r in self.reports) else 0

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "mobilize-diff/1", "bundle": str(self.bundle), "source": self.source, "inputs": self.inputs,
                "artifacts": self.reports}

    def write_html(self, folder: str | Path) -> Path:
        from mobilize.diff.report import write_html

        return write_html(self, Path(folder))


def parse_artifacts(value: str | Sequence[str] | None) -> list[tuple[str, str]] | None:
    """``"onnx/fp32,tflite/int8"`` → ``[("onnx", "fp32"), ("tflite", "int8")]``; a bare format selects all its
    precisions (``("onnx", "*")``)."""
    from mobilize.errors import OptionError

    if value is None:
        return None
    parts = [value] if isinstance(value, str) else list(value)
    items = [v.strip() for p in parts for v in p.split(",") if v.strip()]
    out = []
    for item in items:
        fmt, _, prec = item.partition("/")
        if not fmt:
            raise OptionError(f"--artifact {item!r}: expected FORMAT/PRECISION, e.g. onnx/fp32")
        out.append((fmt.lower(), (prec or "*").lower()))
    if not out:
        raise OptionError("--artifact is empty; give FORMAT/PRECISION, e.g. onnx/fp32")
    return out


def diff(bundle: str | Path, *, artifacts: str | Sequence[str] | None = None, inputs: Any = None,
         source: Any = None, threshold: float | None = None, samples: int = DEFAULT_SAMPLES,
         weights: str | Path | None = None, trust_pickle: bool = False, isolate: bool = True,
         on_step: StepCallback | None = None) -> DiffResult:
    """Compare every (or each selected) artifact of ``bundle`` with PyTorch, layer by layer.

    Args:
        artifacts: ``"onnx/fp32,tflite/int8"`` (or a list); default every exported file.
        inputs: samples to compare on: an ``.npz`` keyed by input name (first axis = samples), an image folder or
            ``file.py:fn`` (as ``--calibration``); default the bundle's stored verification inputs. Needs ``source``.
        source: the model (``file.py:fn``, ``pkg.mod:fn``, ``zoo:NAME``, ``model.pt2``, or a
            :class:`~mobilize.ModelSpec`) — it is run, so it must come from the caller, never from the bundle.
            Without it only the files' outputs are compared.
        threshold: added-error SNR (dB) below which a layer diverges; default per precision
            (:data:`mobilize.diff.analyze.DEFAULT_THRESHOLD_DB`).
        samples: at most this many input samples.

    Raises :class:`~mobilize.errors.MobilizeInputError` for a bad bundle, source, selection or input file.
    """
    from mobilize import formats as registry
    from mobilize.bundle import manifest as mf
    from mobilize.errors import OptionError

    step = on_step or (lambda _m: None)
    if samples < 1:
        raise OptionError(f"--samples {samples}: give at least 1")
    if threshold is not None and not (isinstance(threshold, int | float) and threshold == threshold):
        raise OptionError(f"--threshold {threshold!r} must be a number (dB)")
    if inputs is not None and source is None:
        raise OptionError("--inputs needs --source: PyTorch computes the reference on those inputs")
    bundle = Path(bundle)
    manifest = mf.read(bundle, check_files=False)
    chosen = _select(manifest, parse_artifacts(artifacts))
    from mobilize.api import _check_kind

    for art in chosen:  # every listed file exists inside the bundle and is what the manifest says it is
        _check_kind(registry.get(art["format"]).name, mf.artifact_path(bundle, art), mf.artifact_where(bundle, art))
    input_names = [t["name"] for t in manifest["model"]["inputs"]]
    output_names = [t["name"] for t in manifest["model"]["outputs"]]
    if source is None:
        return _outputs_only(bundle, manifest, chosen, input_names, output_names, threshold, samples, isolate, step)
    from mobilize._quiet import captured_output
    from mobilize.source import load_source

    step("loading model")
    from mobilize.spec import ModelSpec

    if isinstance(source, ModelSpec):
        from mobilize.source import _run_once

        spec = source
        _run_once(spec, spec.name)
        source = f"ModelSpec:{spec.name}"
    else:
        with captured_output():
            spec = load_source(source, weights=weights, trust_pickle=trust_pickle)
    model_inputs = list(spec.input_names or ())
    if model_inputs != input_names:
        raise OptionError(f"--source {source}: the model's inputs {model_inputs} differ from the bundle's "
                          f"{input_names}; is this the model the bundle was exported from?")
    feeds, described = _inputs(bundle, manifest, spec, inputs, samples)
    return run(bundle, manifest, chosen, spec, feeds, described, source=source, threshold=threshold,
               isolate=isolate, step=step)


def run(bundle: Path, manifest: dict[str, Any], chosen: list[dict[str, Any]], spec: Any,
        feeds: list[dict[str, Any]], described: dict[str, Any], *, source: str | None, threshold: float | None,
        isolate: bool = True, step: StepCallback | None = None) -> DiffResult:
    """The per-layer analysis of ``chosen`` artifacts on ``feeds`` (model-named input samples) with ``spec``'s
    module — :func:`diff` after its checks, and ``mobilize export``'s automatic analysis."""
    import numpy as np

    from mobilize.bundle import manifest as mf
    from mobilize.diff import analyze, torch_side

    step = step or (lambda _m: None)
    step("running PyTorch with a hook on every module")
    side = torch_side.run(spec, feeds)
    step("reading the captured graph's node names")
    usable = getattr(side, "usable", list(range(len(feeds))))
    torch_side.add_graph(side, spec, [feeds[i] for i in usable],
                         decomposed=any(a["format"] == "coreml" for a in chosen))
    reports = []
    with tempfile.TemporaryDirectory(prefix="mobilize-diff-") as tmp:
        samples_path = Path(tmp) / "samples.npz"
        arrays: dict[str, Any] = {f"s{n}/{k}": np.asarray(v) for n, i in enumerate(usable) for k, v in feeds[i].items()}
        arrays["__count__"] = np.array(len(usable))
        np.savez(samples_path, **arrays)
        # PyTorch's values are indexed by usable sample: keep only those in the leaves (they already are)
        for art in chosen:
            path = mf.artifact_path(bundle, art)
            sibling = _sibling(bundle, manifest, art)
            try:
                rep = analyze.run_artifact(art, path, side, samples_path, list(spec.input_names),
                                           threshold_db=threshold, isolate=isolate, sibling=sibling, step=step)
            except Exception as exc:  # noqa: BLE001 - one artifact's failure is its report, the others continue
                from mobilize.errors import describe

                rep = {"format": art["format"], "precision": art["precision"], "path": art["path"],
                       "error": f"diff failed: {describe(exc, 300)}", "layers": [], "unmatched": [],
                       "coverage": None, "first_divergent": None, "notes": []}
                rep["summary"] = analyze.summary_line({**rep, "threshold_db": 0})
            _integrity(bundle, art, rep)
            if art["precision"] == "int8" and str(described.get("source", "")).startswith("the bundle"):
                rep.setdefault("notes", []).append(
                    "compared on the bundle's verification inputs, which include random ones outside the calibrated "
                    "ranges: pass --inputs with real samples to see what the quantized layers really see")
            reports.append(rep)
    modules = {p: q.rsplit(".", 1)[-1] for p, q in side.classes.items()}
    return DiffResult(bundle, reports, described, source, modules)


def _integrity(bundle: Path, art: dict[str, Any], rep: dict[str, Any]) -> None:
    from mobilize.bundle import manifest as mf
    from mobilize.bundle.hashing import sha256

    try:
        if art.get("sha256") and sha256(mf.artifact_path(bundle, art)) != art["sha256"]:
            rep.setdefault("notes", []).append(f"{art['path']}: sha256 differs from the manifest (the file changed "
                                               "after export); the file as it is now was compared")
    except OSError:
        pass


def _select(manifest: dict[str, Any], wanted: list[tuple[str, str]] | None) -> list[dict[str, Any]]:
    from mobilize.errors import OptionError

    ok = [a for a in manifest["artifacts"] if a["status"] == "ok" and a.get("path")]
    if not ok:
        raise OptionError("the bundle has no exported file to compare")
    if wanted is None:
        return ok
    have = [f"{a['format']}/{a['precision']}" for a in ok]
    out = []
    for fmt, prec in wanted:
        hit = [a for a in ok if a["format"] == fmt and prec in ("*", a["precision"])]
        if not hit:
            raise OptionError(f"--artifact {fmt}/{prec}: not in the bundle; it has {', '.join(have)}")
        out += [a for a in hit if a not in out]
    return out


def _sibling(bundle: Path, manifest: dict[str, Any], art: dict[str, Any]) -> Path | None:
    """The fp32 file of the same format: a quantized ONNX file lost torch.onnx's metadata, its fp32 sibling kept it."""
    from mobilize.bundle import manifest as mf

    if art["format"] != "onnx" or art["precision"] == "fp32":
        return None
    for a in manifest["artifacts"]:
        if a["format"] == art["format"] and a["precision"] == "fp32" and a["status"] == "ok" and a.get("path"):
            return mf.artifact_path(bundle, a)
    return None


def _inputs(bundle: Path, manifest: dict[str, Any], spec: Any, inputs: Any, samples: int
            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Model-named input samples (all of one shape) and how they were chosen."""
    import numpy as np

    if inputs is not None:
        from mobilize.quantize import calibration

        data = calibration.load(inputs, spec)
        feeds = [dict(f) for f in data.feeds()]
        desc: dict[str, Any] = {"source": str(inputs) if not hasattr(inputs, "describe") else "calibration data"}
    else:
        ref = _reference(bundle, manifest)
        feeds = [dict(s.arrays) for s in ref.sets]
        desc = {"source": "the bundle's verification inputs (reference.npz)", "sets": [s.label for s in ref.sets]}
    if not feeds:
        from mobilize.errors import OptionError

        raise OptionError("no input samples to compare on")
    first = {k: np.asarray(v).shape for k, v in feeds[0].items()}
    same = [f for f in feeds if {k: np.asarray(v).shape for k, v in f.items()} == first]
    feeds = same[:samples]
    desc.update(samples=len(feeds), shapes={k: list(v) for k, v in first.items()})
    return feeds, desc


def _reference(bundle: Path, manifest: dict[str, Any]) -> Any:
    from mobilize.bundle import manifest as mf
    from mobilize.errors import BundleError
    from mobilize.verify.parity import Reference

    ref_path = mf.safe_member(bundle, manifest["reference"]["path"], str(bundle / mf.MANIFEST))
    if not ref_path.is_file():
        raise BundleError(f"{bundle}: {manifest['reference']['path']} is missing; give --inputs (with --source)")
    try:
        return Reference.load(ref_path)
    except Exception as exc:  # noqa: BLE001 - any decoding problem is a bad bundle
        raise BundleError(f"{ref_path}: unreadable reference data ({type(exc).__name__}: {exc})") from None


def _outputs_only(bundle: Path, manifest: dict[str, Any], chosen: list[dict[str, Any]], input_names: list[str],
                  output_names: list[str], threshold: float | None, samples: int, isolate: bool,
                  step: StepCallback) -> DiffResult:
    import numpy as np

    from mobilize.bundle import manifest as mf
    from mobilize.diff import analyze

    ref = _reference(bundle, manifest)
    first = {k: v.shape for k, v in ref.sets[0].arrays.items()} if ref.sets else {}
    idx = [i for i, s in enumerate(ref.sets) if {k: v.shape for k, v in s.arrays.items()} == first][:samples]
    reports = []
    with tempfile.TemporaryDirectory(prefix="mobilize-diff-") as tmp:
        samples_path = Path(tmp) / "samples.npz"
        arrays = {f"s{n}/{k}": v for n, i in enumerate(idx) for k, v in ref.sets[i].arrays.items()}
        np.savez(samples_path, __count__=np.array(len(idx)), **arrays)
        outs = [ref.outputs[i] for i in idx]
        for art in chosen:
            step(f"{art['format']} {art['precision']}: comparing the outputs")
            rep = analyze.outputs_only(art, mf.artifact_path(bundle, art), samples_path, input_names, outs,
                                       output_names, threshold_db=threshold, isolate=isolate)
            _integrity(bundle, art, rep)
            reports.append(rep)
    return DiffResult(bundle, reports, {"source": "the bundle's verification inputs (reference.npz)",
                                        "samples": len(idx)}, None)


def needs_diagnosis(art: dict[str, Any]) -> bool:
    """An exported file that fails parity (and ran) or misses its accuracy target."""
    p = art.get("parity") or {}
    failed = p.get("status") == "fail" and not p.get("could_not_run")
    below = (art.get("fitness") or {}).get("status") == "below_target"
    return art.get("status") == "ok" and bool(art.get("path")) and (failed or below)


def diagnose(bundle: Path, manifest: dict[str, Any], spec: Any, quant: Any = None, *, isolate: bool = True,
             step: StepCallback | None = None) -> DiffResult | None:
    """``mobilize export``'s automatic analysis: every file that fails parity or misses its accuracy target, layer
    by layer — quantized files on the held-out calibration samples their target was judged on, the others on the
    bundle's verification inputs. None when no file needs it; never raises (a failure becomes the report's note)."""
    chosen = [a for a in manifest["artifacts"] if needs_diagnosis(a)]
    if not chosen:
        return None
    step = step or (lambda _m: None)
    held = quant.holdout if quant is not None and getattr(quant, "holdout", None) is not None else None
    groups: list[tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]] = []
    below = [a for a in chosen if (a.get("fitness") or {}).get("status") == "below_target"]
    rest = [a for a in chosen if a not in below]
    try:
        if below and held is not None:
            feeds = [dict(f) for f in held.feeds()][:DEFAULT_SAMPLES]
            groups.append((below, feeds, {"source": "held-out calibration samples", "samples": len(feeds)}))
        else:
            rest += below
        if rest:
            feeds, desc = _inputs(bundle, manifest, spec, None, DEFAULT_SAMPLES)
            groups.append((rest, feeds, desc))
        reports: list[dict[str, Any]] = []
        result = None
        for arts, feeds, desc in groups:
            step(f"finding where {', '.join(a['format'] + ' ' + a['precision'] for a in arts)} diverge")
            result = run(bundle, manifest, arts, spec, feeds, desc, source=None, threshold=None, isolate=isolate,
                         step=step)
            reports += result.reports
        assert result is not None
        result.reports = reports
        return result
    except Exception as exc:  # noqa: BLE001 - a diagnosis must never fail the export it explains
        from mobilize.errors import describe

        rep = [{"format": a["format"], "precision": a["precision"], "path": a["path"], "layers": [],
                "error": f"could not analyse it layer by layer: {describe(exc, 200)}", "first_divergent": None,
                "summary": f"{a['format']} {a['precision']}: could not analyse it layer by layer: "
                           f"{describe(exc, 200)}"} for a in chosen]
        return DiffResult(bundle, rep, {}, None)
