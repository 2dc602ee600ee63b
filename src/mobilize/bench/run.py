"""The whole ``mobilize bench`` pass over a bundle: size → compute → memory (subprocesses) → latency (interleaved) →
budgets → one JSON-ready record; :func:`save` stores it in the manifest and writes report.md / report.html."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mobilize.bench.latency import Settings
from mobilize.errors import OptionError, one_line

StepCallback = Callable[[str], None]
BENCH_SCHEMA = "mobilize-bench/1"
BASELINE_FORMAT = "pytorch"
REFERENCE_RUNTIMES = ("reference",)  # interpreters that check correctness; their speed is not device latency


@dataclasses.dataclass
class BenchResult:
    """The benchmark record (``data``, exactly what ``--json`` writes) and the exit code it implies."""

    bundle: Path
    data: dict[str, Any]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.data["results"]

    @property
    def exit_code(self) -> int:
        """1 when an artifact fails a budget or a measurable artifact could not be run, else 0."""
        return self.data["exit_code"]


#: at most this many timed runs are kept per row (``samples_ms``); beyond it every ``samples_stride``-th one
KEPT_SAMPLES = 1000


def _stride(n: int) -> int:
    return max(1, -(-n // KEPT_SAMPLES))


def check_threads(n: int, where: str) -> int:
    """A thread count no larger than the cores this process may use: more cannot run in parallel, and runtimes
    asked for thousands of threads crash while creating them."""
    from mobilize.bench.machine import usable_cores

    cores = usable_cores()
    if n > cores:
        raise OptionError(f"{where}: {n} threads, but this machine lets mobilize use {cores} core(s); give at most "
                          f"{cores} (or 'all')")
    return n


def parse_threads(value: str | Sequence[int] | None) -> list[int]:
    """``"1,2"`` → [1, 2]; ``None`` → [1, all usable cores]; ``all`` means all usable cores."""
    from mobilize.bench.machine import usable_cores

    cores = usable_cores()
    if value is None:
        return sorted({1, cores})
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    out: list[int] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item in ("all", "max"):
            out.append(cores)
        elif item.isascii() and item.isdigit() and len(item) <= 9 and int(item) >= 1:
            out.append(check_threads(int(item), "--threads"))
        else:
            raise OptionError(f"--threads: {one_line(repr(item), 40)} is not a positive integer (e.g. --threads 1,2 "
                              "or 1,all)")
    if not out:
        raise OptionError("--threads is empty; give e.g. 1,2")
    return sorted(set(out))


def bench(
    bundle: str | Path,
    *,
    threads: str | Sequence[int] | None = None,
    budget: Any = None,
    formats: str | Sequence[str] | None = None,
    precisions: str | Sequence[str] | None = None,
    source: str | None = None,
    baseline: bool = True,
    memory: bool = True,
    settings: Settings | None = None,
    on_step: StepCallback | None = None,
    weights: str | Path | None = None,
) -> BenchResult:
    """Measure every artifact of ``bundle`` (plus PyTorch eager) and return the record; nothing is written.

    The PyTorch eager baseline runs ``source`` (with ``weights``) — code the caller names. A bundle never names code
    that mobilize runs: without ``source`` the baseline row is skipped with a note, whatever the manifest says.
    Every artifact is first run once in an isolated worker; one that crashes the runtime there is reported as an
    error and not timed in this process.

    Raises :class:`~mobilize.errors.MobilizeInputError` for a bad bundle or option (CLI exit 2).
    """
    from mobilize.progress import Plan

    step = on_step or (lambda _m: None)
    settings = settings or Settings()
    stages = Plan(step)  # the numbered steps; the total is known once the bundle is read
    plan = _plan(Path(bundle), threads, budget, formats, precisions, source, weights, baseline, memory, step, stages)
    _measure(plan, settings, step, stages, memory)
    budget_out = _judge(plan)
    return BenchResult(plan.bundle, _record(plan, settings, memory, budget_out))


@dataclasses.dataclass
class _Plan:
    """Everything :func:`bench` decided before measuring: the bundle read, the baseline loaded, the machine
    described, and one row per artifact × thread count (``targets`` to time, ``mem_jobs`` to probe)."""

    bundle: Path
    ref_path: Path
    ref: Any
    input_names: list[str]
    arts: list[dict[str, Any]]
    model: dict[str, Any]
    base: dict[str, Any]
    example: dict[str, Any]
    parameters: int | None
    macs: int | None
    macs_method: str
    threads: list[int]
    budget: Any
    machine: dict[str, Any]
    peaks: dict[int, float | None]
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    targets: list[Any] = dataclasses.field(default_factory=list)
    mem_jobs: list[tuple[dict[str, Any], dict[str, Any]]] = dataclasses.field(default_factory=list)


# --- plan: read, load, describe, lay out the rows --------------------------------------------------------------------


def _plan(bundle: Path, threads: str | Sequence[int] | None, budget: Any, formats: Any, precisions: Any,
          source: str | None, weights: str | Path | None, baseline: bool, memory: bool, step: StepCallback,
          stages: Any) -> _Plan:
    from mobilize import formats as registry
    from mobilize.bench import budget as budgets
    from mobilize.bench import memory as mem

    budget_obj = budgets.parse(budget) if isinstance(budget, str) or budget is None else budget
    thread_list = _threads_for(threads, budget_obj)
    stages("reading the bundle")
    manifest, ref_path, ref = _read_bundle(bundle)
    # reading, [loading PyTorch], the machine, checking the files run, [peak memory], timing
    stages.total = 4 + (baseline and source is not None) + memory
    input_names = [t["name"] for t in manifest["model"]["inputs"]]
    model = manifest["model"]
    base, spec = _baseline(model, source, weights, baseline, stages)
    example = mem.pick_set(ref, input_names)
    parameters, macs, macs_method = _compute(model, spec, example, input_names, step)
    desc, peaks = _machine(thread_list, step, stages)
    plan = _Plan(bundle, ref_path, ref, input_names, _select(manifest["artifacts"], formats, precisions, registry),
                 model, base, example, parameters, macs, macs_method, thread_list, budget_obj, desc, peaks)
    _baseline_rows(plan, spec, memory)
    stages("checking that each file runs")
    _artifact_rows(plan, memory, step)
    return plan


def _threads_for(threads: str | Sequence[int] | None, budget_obj: Any) -> list[int]:
    """The thread counts to measure: ``--threads``, plus the budget's own count when only the default was asked."""
    thread_list = parse_threads(threads)
    if budget_obj is not None and budget_obj.threads is not None and budget_obj.threads not in thread_list:
        if threads is not None:
            raise OptionError(
                f"--budget threads={budget_obj.threads} is not among --threads "
                f"{','.join(map(str, thread_list))}; add it there"
            )
        thread_list = sorted({*thread_list, budget_obj.threads})
    return thread_list


def _read_bundle(bundle: Path) -> tuple[dict[str, Any], Path, Any]:
    from mobilize.bundle import manifest as mf
    from mobilize.errors import BundleError
    from mobilize.verify.parity import Reference

    manifest = mf.read(bundle, check_files=True)
    ref_path = mf.safe_member(bundle, manifest["reference"]["path"], str(bundle / mf.MANIFEST))
    if not ref_path.is_file():
        raise BundleError(
            f"{bundle}: {manifest['reference']['path']} is missing; bench feeds each file the stored "
            "example inputs, so it needs the reference (re-export the bundle)"
        )
    try:
        ref = Reference.load(ref_path)
    except Exception as exc:  # noqa: BLE001 - any decoding problem is a bad bundle
        raise BundleError(f"{ref_path}: unreadable reference data ({type(exc).__name__}: {exc})") from None
    return manifest, ref_path, ref


def _baseline(model: dict[str, Any], source: str | None, weights: str | Path | None, baseline: bool,
              step: StepCallback) -> tuple[dict[str, Any], Any]:
    """The PyTorch eager baseline's record and spec (None when it is skipped or cannot load)."""
    base: dict[str, Any] = {"status": "missing", "reason": None, "load_ms": None, "source": None, "weights": None}
    spec = None
    if baseline and source is None:
        base["reason"] = (NO_SOURCE if not model.get("source") else
                          f"{NO_SOURCE} (the manifest names {model['source']!r}; mobilize never runs code a bundle "
                          "names)")
    elif baseline:
        from mobilize.source import absolute_source

        base["source"] = absolute_source(source)  # the memory probe runs in another folder
        base["weights"] = str(Path(weights).resolve()) if weights is not None else None
        step("loading the PyTorch model (baseline)")
        spec, base["load_ms"], base["reason"] = _load_baseline(base["source"], base["weights"])
        if spec is not None:
            base["status"] = "ok"
    else:
        base["reason"] = "baseline skipped (--no-baseline)"
    return base, spec


def _compute(model: dict[str, Any], spec: Any, example: dict[str, Any], input_names: list[str],
             step: StepCallback) -> tuple[int | None, int | None, str]:
    """``(parameters, MACs per inference, how the MACs were counted)``."""
    parameters = model.get("parameters")
    if spec is None:
        return parameters, None, "unknown: the PyTorch model could not be loaded"
    from mobilize.bench.macs import count_macs, count_parameters

    step("counting MACs")
    parameters = parameters or count_parameters(spec.module)
    try:
        import torch

        macs = count_macs(spec.module, tuple(torch.from_numpy(example[n].copy()) for n in input_names))
        return parameters, macs, ("torch.utils.flop_counter on one eager forward pass "
                                  "(conv/linear/matmul/attention MACs)")
    except Exception as exc:  # noqa: BLE001 - compute figures are optional
        return parameters, None, f"could not count: {type(exc).__name__}: {str(exc)[:200]}"


def _machine(thread_list: list[int], step: StepCallback,
             stages: StepCallback) -> tuple[dict[str, Any], dict[int, float | None]]:
    """The machine's description and its float32 matmul peak per thread count."""
    from mobilize.bench import machine
    from mobilize.bench.macs import peak_gmacs

    stages("describing the machine")
    desc = machine.describe()
    peaks: dict[int, float | None] = {}
    for t in thread_list:
        step(f"measuring this CPU's peak (float32 matmul, {t} thread{'s' if t > 1 else ''})")
        try:
            peaks[t] = peak_gmacs(t)
        except Exception:  # noqa: BLE001 - no peak means no peak_share, nothing else
            peaks[t] = None
    desc["peak_gmacs"] = {str(t): _r(v, 2) for t, v in peaks.items()}
    return desc, peaks


def _baseline_rows(plan: _Plan, spec: Any, memory: bool) -> None:
    from mobilize.bench import latency

    common = {"reference": str(plan.ref_path), "input_names": plan.input_names}
    for t in plan.threads:
        row = _row(BASELINE_FORMAT, "fp32", None, "torch (eager)", t, plan.parameters, plan.macs)
        row.update(bytes=None, zipped_bytes=None, floor_bytes=None, floor_ratio=None, parity=None)
        if spec is None:
            row.update(status="missing", reason=plan.base["reason"])
        else:
            row["key"] = f"pytorch ×{t}"
            plan.targets.append(latency.TorchTarget(row["key"], spec.module,
                                                    [plan.example[n] for n in plan.input_names], t,
                                                    load_ms=plan.base["load_ms"]))
            if memory:
                plan.mem_jobs.append((row, {"kind": "torch", "source": plan.base["source"],
                                            "weights": plan.base["weights"], "threads": t, **common}))
        plan.rows.append(row)


def _artifact_rows(plan: _Plan, memory: bool, step: StepCallback) -> None:
    from mobilize import isolate

    common = {"reference": str(plan.ref_path), "input_names": plan.input_names}
    with isolate.pool():  # the pre-flight runs: one worker per format, reused from file to file
        for art in plan.arts:
            _artifact_row(plan, art, memory, step, common)


def _artifact_row(plan: _Plan, art: dict[str, Any], memory: bool, step: StepCallback, common: dict[str, Any]) -> None:
    from mobilize import formats as registry
    from mobilize.bench import latency
    from mobilize.bench import memory as mem
    from mobilize.bench.size import size_record
    from mobilize.bundle import manifest as mf

    fmt, prec = art["format"], art["precision"]
    plugin = registry.get(fmt)
    runner_cls = plugin.load("runner")
    path = mf.artifact_path(plan.bundle, art) if art["status"] == "ok" else None
    sizes = size_record(path, prec, plan.parameters) if path is not None else {}
    available, why = runner_cls.available()
    if available and runner_cls.runtime in REFERENCE_RUNTIMES:
        available, why = False, ("only a reference interpreter runs this format here; its speed is not device "
                                 "latency")
    crashed = None
    if available and path is not None:  # a file that crashes its runtime must not take this process down
        step(f"checking that {fmt} {prec} runs (isolated worker)")
        crashed = _preflight(plugin, path, prec, plan.ref_path, plan.input_names)
    for t in plan.threads:
        row = _row(fmt, prec, art["path"], runner_cls.runtime if available else None, t, plan.parameters,
                   plan.macs)
        row.update(sizes or {"bytes": None, "zipped_bytes": None, "floor_bytes": None, "floor_ratio": None})
        row["parity"] = (art.get("parity") or {}).get("status")
        row["placement"] = placement_summary(art.get("placement"))
        if art["status"] != "ok":
            message = (art.get("error") or {}).get("message", "")
            row.update(status="failed", reason=f"export failed: {message}"[:300])
        elif not available:
            row.update(status="not_measurable", reason=f"not measurable here: {why}")
        elif crashed is not None:
            row.update(status="error", reason=f"could not run: {crashed}"[:300])
        else:
            row["key"] = f"{fmt} {prec} ×{t}"
            ref, names = plan.ref, plan.input_names
            plan.targets.append(latency.RunnerTarget(row["key"], runner_cls, path, t,
                                                     lambda r, ref=ref, names=names: mem.feeds_for(r, ref, names)))
            if memory:
                plan.mem_jobs.append((row, {"kind": "runner", "format": fmt, "path": str(path), "threads": t,
                                            **common}))
        plan.rows.append(row)


# --- measure: memory probes (subprocesses), then every target timed interleaved ------------------------------------


def _measure(plan: _Plan, settings: Settings, step: StepCallback, stages: StepCallback, memory: bool) -> None:
    from mobilize.bench import latency
    from mobilize.bench import memory as mem

    if memory:
        stages("measuring peak memory")
    for i, (row, job) in enumerate(plan.mem_jobs, 1):
        step(f"peak memory of {row['key']} (subprocess, {i}/{len(plan.mem_jobs)})")
        res = mem.measure(job)
        if "error" in res:
            row["memory_error"] = res["error"]
        else:
            row.update(res)
    stages("timing")
    measured = latency.measure(plan.targets, settings, step)
    torch_p50: dict[int, float] = {}
    for row in plan.rows:
        m = measured.get(row.pop("key", None) or "")
        if m is None:
            continue
        if m.error:
            row.update(status="error", reason=f"could not run: {m.error}")
            continue
        stats = m.stats or {}
        stride = _stride(len(m.samples_ms))
        row.update(
            status="ok",
            latency_ms={k: _r(v, 5) for k, v in stats.items()},
            runs=len(m.samples_ms),
            # the timed runs in order (the report's distributions): all of them up to KEPT_SAMPLES, else every
            # stride-th one, so a fast model timed 100 000 times does not make a 20 MB manifest
            samples_stride=stride,
            samples_ms=[_r(x, 5) for x in m.samples_ms[::stride]],
            measured_s=_r(m.measured_seconds, 3),
            load_ms=_r(m.load_ms, 3),
            first_inference_ms=_r(m.first_inference_ms, 3),
            remeasured=m.remeasured,
            cv_first=_r(m.cv_first, 5),
            noisy=stats.get("cv", 0) > settings.cv_threshold,
        )
        if plan.macs and stats.get("p50"):
            row["gmacs_per_s"] = _r(plan.macs / (stats["p50"] / 1000.0) / 1e9, 4)
            peak = plan.peaks.get(row["threads"])
            row["peak_gmacs"] = _r(peak, 2)
            row["peak_share"] = _r(row["gmacs_per_s"] / peak, 5) if peak else None
        if row["format"] == BASELINE_FORMAT:
            torch_p50[row["threads"]] = stats["p50"]
    for row in plan.rows:
        p50 = (row.get("latency_ms") or {}).get("p50")
        tp = torch_p50.get(row["threads"])
        row["speedup_vs_pytorch"] = _r(tp / p50, 4) if (p50 and tp) else None
        # the ratio every table shows: this file's latency ÷ the reference's (< 1: faster), as export's "÷ fp32"
        row["latency_vs_pytorch"] = _r(p50 / tp, 4) if (p50 and tp) else None


# --- judge: budgets per artifact -------------------------------------------------------------------------------------


def _judge(plan: _Plan) -> dict[str, Any] | None:
    from mobilize.bench import budget as budgets

    if plan.budget is None:
        return None
    per_art = []
    for art in plan.arts:
        group = [r for r in plan.rows if r["format"] == art["format"] and r["precision"] == art["precision"]]
        verdict = budgets.judge(plan.budget, group)
        if art["status"] != "ok":
            verdict["status"] = "fail"
        for r in group:
            r["budget"] = verdict["status"]
        per_art.append({"format": art["format"], "precision": art["precision"], **verdict})
    status = ("fail" if any(a["status"] == "fail" for a in per_art) else
              "unknown" if any(a["status"] == "unknown" for a in per_art) else "pass")
    return {**plan.budget.to_dict(), "status": status, "artifacts": per_art}


# --- record: the JSON-ready result ---------------------------------------------------------------------------------


def _record(plan: _Plan, settings: Settings, memory: bool, budget_out: dict[str, Any] | None) -> dict[str, Any]:
    failed = (budget_out and budget_out["status"] == "fail") or any(r["status"] == "error" for r in plan.rows)
    return {
        "schema": BENCH_SCHEMA,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "bundle": str(plan.bundle),
        "model": {"name": plan.model.get("name"), "source": plan.model.get("source"), "parameters": plan.parameters,
                  "macs": plan.macs, "macs_method": plan.macs_method},
        "machine": plan.machine,
        "settings": {**settings.to_dict(), "threads": plan.threads, "memory": memory,
                     "input_shapes": {n: list(plan.example[n].shape) for n in plan.input_names}},
        "baseline": plan.base,
        "results": plan.rows,
        "budget": budget_out,
        "exit_code": 1 if failed else 0,
    }


def placement_summary(record: dict[str, Any] | None) -> str:
    """Where the file's ops would run on a phone, in one line (static analysis at export; see mobilize inspect)."""
    from mobilize.analysis.placement import summary_line

    return summary_line(record)


def _row(
    fmt: str, prec: str, path: str | None, runtime: str | None, threads: int, parameters: int | None, macs: int | None
) -> dict[str, Any]:
    return {
        "format": fmt,
        "precision": prec,
        "path": path,
        "runtime": runtime,
        "threads": threads,
        "status": None,
        "reason": None,
        "latency_ms": None,
        "runs": None,
        "samples_ms": None,
        "samples_stride": None,
        "measured_s": None,
        "noisy": None,
        "remeasured": None,
        "cv_first": None,
        "load_ms": None,
        "first_inference_ms": None,
        "peak_rss_mb": None,
        "baseline_rss_mb": None,
        "model_rss_mb": None,
        "parameters": parameters,
        "macs": macs,
        "gmacs_per_s": None,
        "peak_gmacs": None,
        "peak_share": None,
        "speedup_vs_pytorch": None,
        "latency_vs_pytorch": None,
        "budget": None,
    }


def _select(artifacts: list[dict[str, Any]], formats: Any, precisions: Any, registry: Any) -> list[dict[str, Any]]:
    out = artifacts
    if formats:
        fmts = registry.parse_list(formats, what="formats", allowed=tuple(registry.REGISTRY))
        out = [a for a in out if a["format"] in fmts]
    if precisions:
        allowed = tuple(dict.fromkeys(a["precision"] for a in artifacts)) or registry.PRECISIONS
        precs = registry.parse_list(precisions, what="precisions", allowed=allowed)
        out = [a for a in out if a["precision"] in precs]
    if not out:
        raise OptionError("no artifact of the bundle matches --formats/--precisions")
    return out


NO_SOURCE = "baseline skipped: pass --source (the model's file.py:fn) to time PyTorch eager"


def _preflight(plugin: Any, path: Path, precision: str, ref_path: Path, input_names: list[str]) -> str | None:
    """Load and run the file once in an isolated worker; the reason it could not run there, or None."""
    from mobilize.api import inspect_and_verify

    found = inspect_and_verify(plugin, path, precision, ref_path, input_names)
    parity = found.get("parity") or {}
    if parity.get("could_not_run"):
        return str(parity.get("reason") or found.get("error") or "the runtime could not run the file")
    return None


def _load_baseline(source: str | None, weights: str | None = None) -> tuple[Any, float | None, str | None]:
    """(spec, load_ms, reason-if-missing). A source the caller named that is not usable at all (no such file or zoo
    model, a malformed ``file.py:fn``, unreadable weights) is their input error, raised before any timing; anything
    the model's own code raises while loading only drops the baseline row: the files can be benchmarked without it."""
    from mobilize._quiet import captured_output
    from mobilize.errors import MobilizeInputError
    from mobilize.source import load_source

    if not source:
        return None, None, "baseline missing: the manifest names no model source"
    t0 = time.perf_counter()
    try:
        with captured_output():
            spec = load_source(source, weights=weights) if weights else load_source(source)
    except (KeyboardInterrupt, MobilizeInputError):
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure (sys.exit() included) only drops the baseline row
        return None, None, f"baseline missing: could not load {source!r} ({one_line(exc, 200)})"
    return spec, (time.perf_counter() - t0) * 1000.0, None


def _r(value: float | None, digits: int) -> float | None:
    import math

    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def save(
    result: BenchResult, *, report_dir: str | Path | None = None, write_manifest: bool = True, reports: bool = True
) -> list[Path]:
    """Store the record under ``"bench"`` in the bundle's manifest and write report.md / report.html (into the
    bundle, or ``report_dir``). Every file is replaced atomically. Returns the files written."""

    from mobilize.bench import report
    from mobilize.bundle import manifest as mf
    from mobilize.bundle.writer import write_atomic

    written: list[Path] = []
    if write_manifest:
        mpath = result.bundle / mf.MANIFEST
        manifest = mf.parse(mf.read_bounded(mpath, mf.MANIFEST_LIMIT), str(mpath))
        manifest["bench"] = result.data
        mf.validate(manifest, str(mpath))
        write_atomic(mpath, mf.dumps(manifest))
        written.append(mpath)
    if reports:
        out = Path(report_dir) if report_dir is not None else result.bundle
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("report.md", report.markdown(result.data)), ("report.html", report.html(result.data))):
            write_atomic(out / name, text.encode())
            written.append(out / name)
    return written
