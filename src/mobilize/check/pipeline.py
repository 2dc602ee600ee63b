"""The ``mobilize check`` pass: config → export (which verifies) → bench → judge every artifact → check.json, JUnit,
summary, and (on request, after a passing run) the baseline.

Named ``pipeline`` rather than ``run`` so that ``mobilize.check.run`` stays the function (a submodule of the same
name would replace it when first imported; see docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mobilize.check import baseline as bl
from mobilize.check.config import Config
from mobilize.check.judge import FAIL, NO_BASELINE, PASS, SKIP, ArtifactResult, Check, judge_artifact

StepCallback = Callable[[str], None]
CHECK_SCHEMA = "mobilize-check/1"
RESULTS = "check.json"
JUNIT = "junit.xml"
SUMMARY = "summary.md"
SUMMARY_HTML = "summary.html"


@dataclasses.dataclass
class CheckResult:
    """Everything one check produced. ``exit_code``: 0 every check passed (or was skipped), 1 a check failed."""

    config: Config
    bundle: Path
    artifacts: list[ArtifactResult]
    baseline: dict[str, Any] | None
    notes: list[str]
    created: str
    seconds: float
    manifest: dict[str, Any]
    machine: dict[str, Any] | None = None
    fingerprint: str = ""
    baseline_updated: bool = False
    written: list[Path] = dataclasses.field(default_factory=list)

    @property
    def checks(self) -> list[tuple[ArtifactResult, Check]]:
        return [(a, c) for a in self.artifacts for c in a.checks]

    @property
    def failed(self) -> list[tuple[ArtifactResult, Check]]:
        return [(a, c) for a, c in self.checks if c.status == FAIL]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def counts(self) -> dict[str, int]:
        statuses = [c.status for _, c in self.checks]
        return {"tests": len(statuses), "passed": statuses.count(PASS), "failed": statuses.count(FAIL),
                "skipped": statuses.count(SKIP)}

    def to_dict(self) -> dict[str, Any]:
        """The record written to ``check.json`` (and ``--json``); JUnit, the summary and the baseline read it."""
        from mobilize import __version__

        model = self.manifest.get("model") or {}
        return {
            "schema": CHECK_SCHEMA,
            "created": self.created,
            "seconds": round(self.seconds, 2),
            "status": FAIL if self.exit_code else PASS,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "config": self.config.to_dict(),
            "fingerprint": self.fingerprint,
            "bundle": _relative(self.bundle, self.config.output),
            "model_name": model.get("name"),
            "mobilize_version": __version__,
            "tools": self.manifest.get("tools") or {},
            "machine": self.machine,
            "baseline": {"path": str(self.config.baseline), "exists": self.baseline is not None,
                         "created": (self.baseline or {}).get("created"), "updated": self.baseline_updated},
            "notes": list(self.notes),
            "artifacts": [a.to_dict() for a in self.artifacts],
        }


def run(config: str | Path | Config | None = None, *, bundle: str | Path | None = None,
        update_baseline: bool = False, on_step: StepCallback | None = None,
        exported: tuple[dict[str, Any], Path] | None = None) -> CheckResult:
    """Run the check a config describes and write its outputs into the config's ``output`` folder.

    Args:
        config: a config path, a loaded :class:`Config`, or None (``./mobilize.toml``, then ``./pyproject.toml``).
        bundle: judge this existing bundle instead of exporting (its files are re-verified against its stored
            reference, so a file altered after export fails).
        update_baseline: after a passing run, write the baseline (created or refreshed).
        exported: (manifest, bundle folder) of a bundle this run already made (a fleet's merged jobs): judged and
            benchmarked as if this call had exported it.

    Raises :class:`~mobilize.errors.MobilizeInputError` (CLI exit 2) when the check cannot run: bad config, missing
    source, unusable bundle. Check failures are in the result (``exit_code`` 1), never raised.
    """
    from mobilize.check.config import load
    from mobilize.progress import Nested, as_details

    cfg = config if isinstance(config, Config) else load(config)
    step = on_step or (lambda _m: None)
    # the steps: export's (or verify's), then benchmarking (when enabled) and judging
    numbered = Nested(step, after=1 + cfg.bench.enabled)
    t0 = time.perf_counter()
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    baseline = bl.load(cfg.baseline)  # a malformed baseline fails before any work
    _prepare_output(cfg.output)
    tampered = _tampered_previous(cfg.bundle) if bundle is None and exported is None else {}
    with _on_sys_path(cfg.root):
        if exported is not None:
            manifest, target = exported
            numbered.n = 0  # no export or verify step in this run
        else:
            manifest, target = _export_or_verify(cfg, Path(bundle) if bundle is not None else None, numbered)
        integrity = _integrity(target, manifest)
        if cfg.bench.enabled:
            numbered.then("benchmarking")
        bench_data, bench_reason = _bench(cfg, target, manifest, integrity, write=bundle is None,
                                          step=as_details(step))
    for key, (why, _sha) in tampered.items():  # the re-export replaced it, but this run must not pass
        integrity.setdefault(key, (why, None))
    rows_of, eager = _rows(bench_data)
    numbered.then("judging")
    artifacts = []
    for art in manifest["artifacts"]:
        key = (art["format"], art["precision"])
        problem, actual = integrity.get(key, (None, None))
        if actual is not None:  # judge (and compare with the baseline) the file as it is now
            art = {**art, "sha256": actual}
        artifacts.append(judge_artifact(cfg, art, rows_of.get(key, []), eager, bench_reason, problem, baseline))
    notes = _notes(cfg, manifest, baseline, bench_reason, bench_data, artifacts)
    if bundle is not None:
        artifacts += _missing(cfg, manifest)
    result = CheckResult(cfg, target, artifacts, baseline, notes, created, time.perf_counter() - t0, manifest,
                         machine=_machine(bench_data), fingerprint=fingerprint(cfg))
    if update_baseline:
        if result.exit_code == 0:
            bl.save(cfg.baseline, bl.from_check(result.to_dict()))
            result.baseline_updated = True
            result.notes.append(f"baseline {'refreshed' if baseline else 'created'}: {cfg.baseline} (commit it)")
        else:
            result.notes.append("baseline not updated: the check failed")
    result.seconds = time.perf_counter() - t0
    result.written = write_outputs(result)
    return result


def write_outputs(result: CheckResult) -> list[Path]:
    """check.json, junit.xml, summary.md and summary.html in the output folder, each written atomically."""
    from mobilize.bundle.writer import write_atomic
    from mobilize.check import junit, summary

    out = result.config.output
    data = result.to_dict()
    files = {out / JUNIT: junit.render(data), out / SUMMARY: summary.render(data, SUMMARY_HTML).encode(),
             out / SUMMARY_HTML: summary.html(data).encode()}
    for path, payload in files.items():
        write_atomic(path, payload)
    write_atomic(out / RESULTS, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())
    return [out / RESULTS, *files]


def last_results(cfg: Config) -> tuple[dict[str, Any] | None, str | None]:
    """The last check's record from the output folder, or (None, why it cannot be used).

    Raises :class:`~mobilize.errors.BundleError` when a file of that check's bundle changed since: such results
    describe files that no longer exist, and silently re-running would hide the tampering.
    """
    from mobilize.bundle.hashing import sha256
    from mobilize.errors import BundleError, MobilizeInputError
    from mobilize.safeio import JSON_LIMIT, load_json, read_bytes

    path = cfg.output / RESULTS
    if not path.is_file():
        return None, f"no results of an earlier check in {cfg.output}"
    try:
        data = load_json(read_bytes(path, limit=JSON_LIMIT), str(path))
    except MobilizeInputError:
        return None, f"{path} is unreadable"
    if not isinstance(data, dict) or data.get("schema") != CHECK_SCHEMA:
        return None, f"{path} was written by another mobilize version"
    if data.get("fingerprint") != fingerprint(cfg):
        return None, "the config or the model files changed since the last check"
    from mobilize.bundle.manifest import safe_member
    from mobilize.safeio import refuse_special

    arts = data.get("artifacts")
    if (not isinstance(data.get("bundle"), str) or not isinstance(arts, list)
            or not all(isinstance(a, dict) and isinstance(a.get("path"), str | None)
                       and isinstance(a.get("sha256"), str | None) for a in arts)):
        return None, f"{path} is malformed"
    bundle = cfg.output / data["bundle"]  # relative to the output folder when inside it (see CheckResult.to_dict)
    for a in arts:
        if a["sha256"] is None or a["path"] is None:
            continue
        f = safe_member(bundle, a["path"], str(path))  # never a file outside that bundle
        refuse_special(f, str(path))
        if not f.exists() or sha256(f) != a["sha256"]:
            raise BundleError(f"{f}: changed since the last check (sha256 differs from {path}); not recording it "
                              "as a baseline — run `mobilize check` again to re-export")
    return data, None


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (check.json stays valid when the output folder is moved, e.g.
    downloaded from a CI run), else absolute."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def fingerprint(cfg: Config) -> str:
    """sha256 over the config and the files it names (model file, weights, calibration file): a check.json whose
    fingerprint differs describes other inputs, so ``mobilize baseline update`` runs the check again."""
    h = hashlib.sha256(cfg.digest.encode())
    from mobilize.bundle.hashing import sha256

    for p in (_file_part(cfg.source), cfg.weights, _file_part(cfg.calibration)):
        if p is not None and p.is_file():
            h.update(p.name.encode() + b"\0" + bytes.fromhex(sha256(p)))
    return h.hexdigest()


def _file_part(text: str | None) -> Path | None:
    """The file behind ``file.py:fn`` / ``model.pt2`` / ``calib.npz`` (config values are already absolute)."""
    if not text or text.startswith("zoo:"):
        return None
    target, colon, _ = text.rpartition(":")
    return Path(target if colon and target.endswith(".py") else text)


# --- steps -----------------------------------------------------------------------------------------------------------


def _prepare_output(out: Path) -> None:
    from mobilize.errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file; give a folder (mobilize check writes the bundle, {RESULTS}, "
                          f"{JUNIT} and {SUMMARY} there)")
    bundle = out / "bundle"
    if bundle.is_dir() and any(bundle.iterdir()) and not (bundle / "manifest.json").is_file():
        raise ConfigError(f"output {out}: {bundle} exists but is not a mobilize bundle; move it away or set "
                          "output = \"…\" to another folder (mobilize only replaces its own bundles)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULTS).unlink(missing_ok=True)  # results of an earlier run must not outlive a run that stops
    except OSError as exc:
        raise ConfigError(f"output {out}: cannot write there ({exc.strerror or exc})") from None


@contextlib.contextmanager
def _on_sys_path(root: Path) -> Iterator[None]:
    """``package.module:fn`` sources resolve from the config's folder too (as ``python -m`` would from there)."""
    added = str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
    try:
        yield
    finally:
        if added and str(root) in sys.path:
            sys.path.remove(str(root))


def _export_or_verify(cfg: Config, bundle: Path | None, step: StepCallback) -> tuple[dict[str, Any], Path]:
    from mobilize import api
    from mobilize.errors import BundleError

    if bundle is None:
        result = api.export(cfg.source, cfg.bundle, formats=cfg.formats, precisions=cfg.precisions,
                            options=cfg.export, strict=cfg.strict, weights=cfg.weights,
                            trust_pickle=cfg.trust_pickle, calibration=cfg.calibration, target=cfg.accuracy,
                            tolerances=cfg.tolerances, on_step=step, fitness=cfg.fitness, repair=cfg.repair)
        return result.manifest, cfg.bundle
    step(f"re-verifying {bundle}")
    try:
        result = api.verify(bundle, strict=cfg.strict, tolerances=cfg.tolerances, on_step=step, fitness=cfg.fitness)
    except BundleError as exc:  # e.g. a truncated file whose content is no longer what the manifest says
        return _unverifiable(bundle, exc), bundle
    return result.manifest, bundle


def _tampered_previous(bundle: Path) -> dict[tuple[str, str], tuple[str, str | None]]:
    """Files of the bundle an earlier check left in the output folder that no longer match its manifest.

    Re-exporting overwrites them, so they are looked at first: a file edited after the last check (or after the
    baseline was recorded) fails this run's ``integrity`` check instead of being silently replaced.
    """
    from mobilize.bundle import manifest as mf
    from mobilize.errors import MobilizeError

    if not (bundle / mf.MANIFEST).is_file():
        return {}
    try:
        manifest = mf.read(bundle, check_files=False)
    except MobilizeError:
        return {}  # not readable as a bundle: the export replaces it (or refuses, if it is not mobilize's)
    return {key: (f"the previous bundle's {why} (found before re-exporting; the fresh export replaced it)", sha)
            for key, (why, sha) in _integrity(bundle, manifest).items()}


def _unverifiable(bundle: Path, exc: BaseException) -> dict[str, Any]:
    """The manifest of a bundle ``api.verify`` refused: when files changed after export, those fail parity with the
    reason (and integrity, later) instead of stopping the check; otherwise the bundle itself is unusable (exit 2)."""
    from mobilize.bundle import manifest as mf

    manifest = mf.read(bundle, check_files=False)
    altered = _integrity(bundle, manifest)
    if not altered:
        raise exc
    reason = f"could not re-verify the bundle: {exc}"
    for art in manifest["artifacts"]:
        if (art["format"], art["precision"]) in altered:
            art["parity"] = {"status": "fail", "runtime": None, "reason": reason, "failures": [reason],
                             "tolerance": None, "could_not_run": True}
        elif art.get("parity"):
            art["parity"] = {**art["parity"], "warnings": [*art["parity"].get("warnings", []),
                                                           "not re-verified: another file of the bundle is unusable"]}
    return manifest


def _integrity(bundle: Path, manifest: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str | None]]:
    """Per artifact whose file no longer matches the manifest: (the sentence saying so, the file's sha256 now)."""
    from mobilize.bundle import manifest as mf
    from mobilize.bundle.hashing import sha256, size
    from mobilize.errors import BundleError

    out: dict[tuple[str, str], tuple[str, str | None]] = {}
    for art in manifest["artifacts"]:
        if art["status"] != "ok":
            continue
        key = (art["format"], art["precision"])
        try:
            path = mf.artifact_path(bundle, art)
        except BundleError as exc:
            out[key] = (str(exc), None)
            continue
        got = sha256(path)
        if got != art["sha256"]:
            out[key] = (f"{art['path']} changed after export: sha256 {got[:12]}… ≠ {art['sha256'][:12]}… in the "
                        f"manifest ({size(path)} vs {art['bytes']} bytes); re-export instead of editing bundle files",
                        got)
    return out


def _bench(cfg: Config, bundle: Path, manifest: dict[str, Any], integrity: dict[tuple[str, str], Any], *,
           write: bool, step: StepCallback) -> tuple[dict[str, Any] | None, str | None]:
    """(bench record, None) or (None, why bench did not run)."""
    from mobilize.bench.latency import Settings
    from mobilize.bench.run import bench, save

    if not cfg.bench.enabled:
        return None, "not measured ([bench] enabled = false)"
    if integrity:
        return None, "not measured: bundle files changed after export (see integrity)"
    if not any(a["status"] == "ok" for a in manifest["artifacts"]):
        return None, "not measured: nothing was exported"
    b = cfg.bench
    settings = Settings(min_runs=b.min_runs, min_seconds=b.min_seconds, warmup_seconds=b.warmup_seconds)
    memory = b.memory if b.memory is not None else cfg.budgets.needs_memory()
    # the eager baseline runs the config's own source (the user's code), never the one a bundle's manifest names
    result = bench(bundle, threads=list(b.threads), memory=memory, settings=settings, on_step=step,
                   source=cfg.source, weights=cfg.weights)
    if write:  # our own bundle: keep the figures and report.md/html with it (an existing bundle is left alone)
        save(result)
    return result.data, None


def _rows(bench_data: dict[str, Any] | None) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], dict[int, float]]:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    eager: dict[int, float] = {}
    for r in (bench_data or {}).get("results", []):
        if r["format"] == "pytorch":
            if r.get("latency_ms"):
                eager[r["threads"]] = r["latency_ms"]["p50"]
            continue
        rows.setdefault((r["format"], r["precision"]), []).append(r)
    return rows, eager


def _machine(bench_data: dict[str, Any] | None) -> dict[str, Any] | None:
    m = (bench_data or {}).get("machine")
    return None if not m else {k: m.get(k) for k in ("cpu", "cores_usable", "os", "platform")}


def _missing(cfg: Config, manifest: dict[str, Any]) -> list[ArtifactResult]:
    """With ``--bundle``: configured format × precision pairs the bundle lacks fail their export check."""
    have = {(a["format"], a["precision"]) for a in manifest["artifacts"]}
    out = []
    for fmt in cfg.formats:
        for prec in cfg.precisions:
            if (fmt, prec) not in have:
                res = ArtifactResult(fmt, prec, None, None, None, None, None, None, "not exported")
                res.checks.append(Check("export", FAIL, f"the bundle has no {fmt} {prec} file, but the config asks "
                                                        "for it"))
                out.append(res)
    return out


def _notes(cfg: Config, manifest: dict[str, Any], baseline: dict[str, Any] | None, bench_reason: str | None,
           bench_data: dict[str, Any] | None, artifacts: list[ArtifactResult]) -> list[str]:
    notes: list[str] = []
    if baseline is None:
        notes.append(NO_BASELINE)
    else:
        have = {(a.format, a.precision) for a in artifacts}
        gone = [f"{b['format']} {b['precision']}" for b in baseline["artifacts"]
                if (b["format"], b["precision"]) not in have]
        if gone:
            notes.append(f"in the baseline but not in this run: {', '.join(gone)}")
        changed = [a.label for a in artifacts if a.vs_baseline == "changed"]
        if changed:
            notes.append(f"changed since the baseline (sha256 differs; informational when the checks pass): "
                         f"{', '.join(changed)}")
        tools = manifest.get("tools") or {}
        moved = [f"{k} {v} → {tools.get(k)}" for k, v in (baseline.get("tools") or {}).items()
                 if k in tools and tools.get(k) != v]
        if moved:
            notes.append(f"tool versions differ from the baseline's ({', '.join(moved)}): sizes and files may "
                         "change for that reason alone")
    if bench_data is not None and (bench_data.get("baseline") or {}).get("status") != "ok":
        notes.append(f"PyTorch eager not timed ({bench_data['baseline'].get('reason')}): latency ratios unknown")
    if bench_reason:
        notes.append(f"latency {bench_reason}")
    noisy = [a.label for a in artifacts if a.latency and a.latency.get("noisy")]
    if noisy:
        notes.append(f"noisy latency (CV above {_cv_threshold(bench_data):.0%} even after re-measuring): "
                     f"{', '.join(noisy)}; more [bench] min_seconds steadies it")
    return notes


def _cv_threshold(bench_data: dict[str, Any] | None) -> float:
    return float(((bench_data or {}).get("settings") or {}).get("cv_threshold") or 0.05)
