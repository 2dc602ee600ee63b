"""Turn an fp32 file into a quantized one that meets the accuracy target, as fast as the format allows.

For one (format, precision):
1. every candidate recipe (and, for static recipes, every range estimator: min/max, percentile) quantizes the fp32
   file; each result is measured on the held-out calibration samples against PyTorch (SNR per output, top-1
   agreement for classifier-shaped outputs);
2. a static result below target (plus headroom, ``AccuracyTarget.aim``) goes through per-layer sensitivity
   (:mod:`mobilize.quantize.sensitivity`), on the fastest recipe first: the
   layers whose float version helps most are kept float until the target is met or the size limit is reached;
3. each result's single-thread latency is measured against the fp32 sibling on this CPU;
4. among results that meet the target, one not slower than fp32 wins, preferring those that also meet the
   headroom, then the fastest (no result meets the target: the most accurate, flagged ``meets_target: false``).

Everything measured is returned as the artifact's ``quantization`` record for the manifest.

``--jobs N`` (:attr:`AccuracyTarget.jobs`) runs the independent trials of steps 1 and 2 — the base trial of every
recipe × range estimator, the per-layer probes — in ``N`` worker processes (:class:`TrialRunner`:
``concurrent.futures.ProcessPoolExecutor``, "spawn" context). Results are consumed in submission order, never
completion order, and every decision (budget checks, the early stop of the probes) is taken while consuming, so the
chosen file and the record are the same for every ``N`` (timings apart). Latency (step 3) is measured only when no
trial runs beside it. ExecuTorch trials stay in this process (the program they quantize lives only here).

Trials that cannot win are not measured (``skipped_cannot_win`` in the record, one entry per trial with the reason):
a greedy step of the per-layer search whose quantized file is over the size limit is never kept, so its held-out
run is skipped (:func:`mobilize.quantize.sensitivity.search`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import sys
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import ConversionError
from mobilize.quantize import recipes as R
from mobilize.quantize.calibration import CalibrationData

#: latency loop: warm-up runs, then at least this many timed runs and this many seconds
_WARMUP, _MIN_RUNS, _MIN_SECONDS = 3, 10, 0.4
#: skip the trials earlier bounds show cannot be chosen (False measures them anyway: same choice, slower)
SKIP_CANNOT_WIN = True
#: a recipe counts as slower than fp32 when its median latency exceeds fp32's by more than this share (noise)
SLOWER_MARGIN = 0.05


@dataclasses.dataclass
class Context:
    """What every quantized artifact of one export run shares."""

    spec: Any
    calibration: CalibrationData | None
    target: R.AccuracyTarget
    calibrate_part: CalibrationData | None = None
    holdout: CalibrationData | None = None
    holdout_ref: list[dict[str, np.ndarray]] | None = None
    measure_speed: bool = True
    metric: Any = None  # the loaded user metric (mobilize.quantize.heldout.Metric)
    metric_batch: dict[str, np.ndarray] | None = None
    metric_pytorch: float | None = None
    pytorch_figures: dict[str, Any] | None = None

    @classmethod
    def build(cls, spec: Any, calibration: CalibrationData | None, target: R.AccuracyTarget,
              measure_speed: bool = True) -> Context:
        from mobilize.quantize import heldout

        ctx = cls(spec, calibration, target, measure_speed=measure_speed)
        ctx.metric = heldout.load_metric(target.metric)
        if ctx.metric is not None and calibration is None:
            raise heldout.MetricError("--metric needs --calibration: the metric is computed on held-out samples")
        for name in dict(target.class_axes):
            if name not in spec.output_names:
                raise heldout.MetricError(f"--class-axis names output {name!r}; the model's outputs are "
                                          f"{', '.join(spec.output_names)}")
        if calibration is not None:
            if calibration.samples >= 4:
                ctx.calibrate_part, ctx.holdout = calibration.split(target.holdout)
            else:  # too few to split (only weight-only recipes get here): measure on all of it
                ctx.calibrate_part, ctx.holdout = calibration, calibration
            ctx.holdout_ref = torch_outputs(spec, ctx.holdout)
            if ctx.metric is not None:
                ctx.metric_batch = {**heldout.stack(ctx.holdout.feeds(), list(spec.input_names)),
                                    **ctx.holdout.extras}
                ctx.metric_pytorch = round(heldout.run_metric(
                    ctx.metric, heldout.stack(ctx.holdout_ref, list(spec.output_names)), ctx.metric_batch,
                    target.metric_name or "metric"), 6)
                ctx.pytorch_figures = {"metric": {"name": target.metric_name, "value": ctx.metric_pytorch,
                                                  "min": target.min_metric}}
        return ctx


def torch_outputs(spec: Any, data: CalibrationData) -> list[dict[str, np.ndarray]]:
    import torch

    from mobilize.source import flatten_outputs, model_call

    outs = []
    with torch.no_grad():
        for i, feed in enumerate(data.feeds()):
            args = tuple(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in spec.input_names)
            _, flat = flatten_outputs(model_call(spec, args, f"calibration sample {i}"))
            outs.append({n: t.detach().cpu().numpy() for n, t in zip(spec.output_names, flat)})
    return outs


@dataclasses.dataclass
class Trial:
    """One quantized file and what was measured on it."""

    recipe: R.Recipe
    method: str
    path: Path
    exclude: list[str]
    bytes: int
    figures: dict[str, Any] | None = None  # snr_db, top1_agreement, per_output, samples
    timing: dict[str, float] | None = None  # median_ms, ci_low_ms, ci_high_ms (single thread)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def latency_ms(self) -> float | None:
        return None if self.timing is None else self.timing["median_ms"]

    def meets(self, target: R.AccuracyTarget) -> bool | None:
        from mobilize.quantize.heldout import meets

        return meets(self.figures, target)

    def score(self) -> tuple[float, float, float]:
        from mobilize.quantize.heldout import score

        return score(self.figures)


def quantize_artifact(fmt: str, precision: str, fp32: Path, dest: Path, ctx: Context, work: Path,
                      step: Any = None) -> tuple[list[str], dict[str, Any]]:
    """Write the best ``precision`` file for ``fmt`` to ``dest``; returns (notes, quantization record)."""
    from mobilize.bundle.hashing import size
    from mobilize.quantize import sensitivity

    step = step or (lambda _m: None)
    started = time.monotonic()
    budget = ctx.target.time_budget_s
    skipped: list[str] = []  # trials not run because the time budget ran out
    cannot_win: list[dict[str, str]] = []  # trials not measured because earlier bounds show they cannot be chosen
    probes_cut_by_budget = False  # the per-layer probes got less than their own time because of the budget

    def spent() -> bool:
        return budget is not None and time.monotonic() - started >= budget

    mod = module_for(fmt)
    cands = R.candidates(fmt, precision)
    if not cands:
        raise ConversionError(f"{fmt} has no {precision} recipe", format=fmt)
    runner_cls, native = runner_for(fmt)
    fp32_bytes = size(fp32)
    calib_feeds = file_feeds(runner_cls, fp32, ctx, ctx.calibrate_part) if ctx.calibrate_part else None
    fp32_t = latency(runner_cls, fp32, ctx) if (native and ctx.measure_speed and len(cands) >= 1) else None
    jobs = trial_jobs(fmt, ctx.target.jobs)
    trials: list[Trial] = []
    bests: list[Trial] = []
    with TrialRunner(fmt, mod, fp32, work, calib_feeds, runner_cls, ctx, jobs) as run:
        plan = [(rec, method) for rec in cands
                for method in ((mod.methods(rec) if hasattr(mod, "methods") else ("",)) if rec.calibrated else ("",))]
        results = run.many([(rec, method, []) for rec, method in plan])
        for i, (rec, method) in enumerate(plan):
            if trials and spent():  # the best file so far is kept; what was not tried is recorded
                skipped.extend(f"{r.name}{f' ({m})' if m else ''}" for r, m in plan[i:])
                break
            step(f"quantizing {fmt} {precision}: {rec.name}{f' ({method})' if method else ''}")
            trials.append(next(results))
        results.close()  # stops what was submitted ahead and not consumed; nothing else runs from here on
        for rec in cands:  # each recipe's best base trial, then its latency (no trial runs beside it)
            best: Trial | None = None
            for t in trials:
                if t.recipe is rec and (best is None or t.score() > best.score()):
                    best = t
            if best is None:
                continue
            if fp32_t is not None:
                best.timing = latency(runner_cls, best.path, ctx)
            bests.append(best)
        # Sensitivity search on the fastest recipe first: keeping layers float only slows a file down, so once a
        # recipe reaches the aim, slower recipes are not searched (their measured base trials stay in the record).
        aim = ctx.target.aim()
        base_bytes = min(t.bytes for t in trials)
        limit = sensitivity.size_budget(base_bytes, fp32_bytes, ctx.target) if precision == "int8" else fp32_bytes
        kept: list[str] | None = None  # layers kept float by the first search, reused by the next recipe
        sens_record: dict[str, Any] | None = None
        reached = False
        for best in speed_order(bests):
            rec = best.recipe
            if not reached and rec.calibrated and best.figures is not None and not best.meets(aim):
                if kept is None and spent():
                    skipped.append(f"per-layer sensitivity ({rec.name})")
                    fb = None
                elif kept is None:
                    step(f"quantizing {fmt} {precision}: per-layer sensitivity ({rec.name})")
                    left = sensitivity.PROBE_BUDGET_S if budget is None else max(
                        1.0, min(sensitivity.PROBE_BUDGET_S, budget - (time.monotonic() - started)))
                    probes_cut_by_budget = left < sensitivity.PROBE_BUDGET_S
                    kept, sens_record = sensitivity.search(
                        lambda exclude, size_limit=None, r=rec, m=best.method: run.one(r, m, exclude, size_limit),
                        mod.layers(fp32), best, ctx.target, fp32_bytes, budget_s=left,
                        trials=lambda excludes, r=rec, m=best.method: run.many([(r, m, e) for e in excludes]),
                        cannot_win=cannot_win, skip_cannot_win=SKIP_CANNOT_WIN)
                    fb = sens_record.pop("_best", None)
                else:
                    fb = run.one(rec, best.method, kept) if kept else None
                if fb is not None:
                    trials.append(fb)
                    if fp32_t is not None:
                        fb.timing = latency(runner_cls, fb.path, ctx)
                    best = fb if fb.score() >= best.score() else best
            reached = reached or bool(best.meets(aim) and best.bytes <= limit)
            best.notes.append("best of its recipe")
    finals = [t for t in trials if "best of its recipe" in t.notes]
    ok = [t for t in finals if t.bytes <= limit and t.meets(ctx.target)]
    if ok:  # not slower than fp32 first, then with the headroom, then the fastest (beyond measurement noise)
        order = speed_order(ok)
        chosen = min(ok, key=lambda t: (_slower(t, fp32_t), not t.meets(aim), order.index(t)))
    else:
        chosen = max(finals, key=lambda t: t.score())
    _copy(chosen.path, dest)
    record = _record(chosen, trials, finals, precision, ctx, fp32_bytes, fp32_t, native, runner_cls, sens_record)
    record["skipped_cannot_win"] = cannot_win
    bound = bool(skipped) or (probes_cut_by_budget and bool((sens_record or {}).get("stopped_by_budget")))
    record["time_budget"] = {"seconds": budget, "spent_s": round(time.monotonic() - started, 2), "bound": bound,
                             "skipped": skipped, "jobs": jobs}
    if bound:  # the choice now depends on how fast this machine was: say so where the user looks
        chosen.notes.insert(0, f"the {budget:g} s search budget ran out (--time-budget): "
                               f"{len(skipped)} trial(s) skipped ({', '.join(skipped) or 'per-layer search cut'}); "
                               "the best file found so far is kept — on a faster machine the search may go further")
    # op types whose weight matrices stayed float in the chosen file, read from the file (formats that can tell)
    record["float_weights"] = mod.float_weights(dest) if hasattr(mod, "float_weights") else None
    return chosen.notes[:-1] if chosen.notes[-1:] == ["best of its recipe"] else chosen.notes, record


def trial_jobs(fmt: str, jobs: int | None) -> int:
    """Worker processes for ``fmt``'s trials: ``jobs`` (None: the usable cores); 1 for ExecuTorch, whose quantizer
    starts from the torch program held in this process (:func:`mobilize.quantize.pte.from_capture`)."""
    if fmt == "pte":
        return 1
    return R.usable_cores() if jobs is None else jobs


class TrialRunner:
    """Runs candidate trials: :meth:`one` in this process, :meth:`many` in ``jobs`` worker processes (in this
    process when ``jobs`` is 1), its results in submission order.

    The workers are a ``concurrent.futures.ProcessPoolExecutor`` of "spawn" processes (a fork of a process that has
    started onnxruntime's or XNNPACK's thread pools can deadlock). A worker quantizes the fp32 file and runs the
    quantized file on the held-out samples; this process computes the figures (:func:`evaluate`'s second half:
    SNR, agreement, the user's metric, which may be a function defined anywhere) from the outputs it returns. The
    workers start without the user's ``__main__`` (a script without an ``if __name__ == "__main__"`` guard is
    never re-run in them). A pool that breaks (a worker killed) hands its remaining trials back to this process.
    """

    def __init__(self, fmt: str, mod: Any, fp32: Path, work: Path, calib_feeds: Any, runner_cls: Any, ctx: Context,
                 jobs: int) -> None:
        self.fmt, self.mod, self.fp32, self.work = fmt, mod, fp32, work
        self.calib_feeds, self.runner_cls, self.ctx, self.jobs = calib_feeds, runner_cls, ctx, jobs
        self._pool: Any = None

    def __enter__(self) -> TrialRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def one(self, rec: R.Recipe, method: str, exclude: list[str], size_limit: int | None = None) -> Trial:
        """One trial in this process; ``size_limit``: a file over it is not measured (it cannot be chosen)."""
        return _trial(self.mod, rec, method, self.fp32, self.work, self.calib_feeds, exclude, self.runner_cls,
                      self.ctx, size_limit=size_limit)

    def many(self, items: Sequence[tuple[R.Recipe, str, list[str]]]) -> Iterator[Trial]:
        """The trials ``items`` (recipe, range estimator, layers kept float), yielded in the order given. At most
        ``jobs`` run ahead of the one consumed; closing the iterator cancels those not started and waits for the
        rest, so nothing runs beside what follows (latency measurements)."""
        if self.jobs <= 1 or len(items) <= 1:
            return (self.one(*it) for it in items)
        return self._parallel(list(items))

    def _parallel(self, items: list[tuple[R.Recipe, str, list[str]]]) -> Iterator[Trial]:
        import concurrent.futures as cf
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:  # the first trial here: it fills the shared caches and says what one trial costs
            t0 = time.monotonic()
            yield self.one(*items[0])
            items = items[1:]  # the rest in workers, unless that costs more than it saves:
            if (time.monotonic() - t0) * len(items) < POOL_WORTH_S.get(self.fmt, _POOL_WORTH_DEFAULT_S):
                for it in items:
                    yield self.one(*it)
                return
        futures: list[Any] = []
        try:
            for i, (rec, method, exclude) in enumerate(items):
                while len(futures) < min(len(items), i + self.jobs):
                    r, m, e = items[len(futures)]
                    futures.append(self._submit(r, m, e))
                fut = futures[i]
                try:
                    result = fut.result() if fut is not None else None
                except BrokenProcessPool:
                    result = None
                if result is None:  # the pool broke: this trial and the rest run here
                    self._break()
                    futures = [None] * len(futures)
                    yield self.one(rec, method, exclude)
                    continue
                yield self._trial_from(rec, method, exclude, *result)
        finally:
            pending = [f for f in futures if f is not None and not f.done()]
            for f in pending:
                f.cancel()
            cf.wait(pending)

    def _submit(self, rec: R.Recipe, method: str, exclude: list[str]) -> Any:
        if self._pool is None and self.jobs > 1:
            self._pool = self._start()
        if self._pool is None:
            return None
        from concurrent.futures.process import BrokenProcessPool

        try:
            with _without_main():
                return self._pool.submit(_worker_trial, rec, method, list(exclude))
        except (BrokenProcessPool, RuntimeError):
            self._break()
            return None

    def _start(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from mobilize import _quiet

        ctx = self.ctx
        init = (self.fmt, str(self.fp32), str(self.work), self.calib_feeds,
                None if ctx.holdout is None or self.runner_cls is None else ctx.holdout.feeds(),
                list(ctx.spec.input_names), list(ctx.spec.output_names),
                [{n: ref[n].shape for n in ctx.spec.output_names} for ref in ctx.holdout_ref or []],
                _quiet.is_verbose())
        with _without_main():
            return ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_init, initargs=init)

    def _break(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        self.jobs = 1

    def _trial_from(self, rec: R.Recipe, method: str, exclude: list[str], notes: list[str], nbytes: int,
                    got: list[dict[str, np.ndarray]] | None) -> Trial:
        from mobilize._quiet import captured_output

        path = trial_path(rec, method, exclude, self.work, self.fp32)
        t = Trial(rec, method, path, list(exclude), nbytes, notes=list(notes))
        if exclude:
            t.notes.append(f"{len(exclude)} layer(s) kept in float after per-layer sensitivity")
        if got is not None:
            with captured_output():
                t.figures = _figures(got, self.ctx)
        return t


@contextlib.contextmanager
def _without_main() -> Iterator[None]:
    """While worker processes start: a blank ``__main__``, so "spawn" does not re-import the user's script (or
    the test runner) in each worker. Python's spawn only reads ``__main__``'s ``__spec__`` and ``__file__``."""
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


#: worker processes start only when the trials left would take at least this long one after another, per format:
#: a worker first imports the quantizer and its runtime (onnxruntime's, ai-edge-quantizer: about a second;
#: coremltools, which imports torch: 10–20 s on a busy 2-core machine)
POOL_WORTH_S = {"onnx": 5.0, "tflite": 5.0, "coreml": 40.0}
_POOL_WORTH_DEFAULT_S = 40.0

#: a worker's share of the job: what every trial of one (format, precision) needs (set by :func:`_worker_init`)
_WORKER: dict[str, Any] = {}


def _worker_init(fmt: str, fp32: str, work: str, calib_feeds: Any, holdout_feeds: Any, input_names: list[str],
                 output_names: list[str], ref_shapes: list[dict[str, tuple[int, ...]]], verbose: bool) -> None:
    import signal

    from mobilize import _quiet

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    _quiet.set_verbose(verbose)
    _exit_with_parent()
    if fmt == "onnx" and "onnxruntime.tools.pytorch_export_helpers" not in sys.modules:
        # onnxruntime.tools (quant_pre_process's shape inference) imports torch for a helper the quantizer never
        # calls: seconds per worker. The helper is left out here (a worker never exports from PyTorch).
        stub = types.ModuleType("onnxruntime.tools.pytorch_export_helpers")

        def infer_input_info(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("onnxruntime.tools.pytorch_export_helpers is not loaded in mobilize's trial workers")

        stub.infer_input_info = infer_input_info  # type: ignore[attr-defined]
        sys.modules[stub.__name__] = stub
    runner_cls, _ = runner_for(fmt)
    _WORKER.update(fmt=fmt, mod=module_for(fmt), fp32=Path(fp32), work=Path(work), calib=calib_feeds,
                   holdout=holdout_feeds, inputs=input_names, outputs=output_names, shapes=ref_shapes,
                   runner_cls=runner_cls)


def _exit_with_parent() -> None:
    """End this worker when the process that started it is gone (a converter child killed for its timeout or by
    Ctrl-C cannot shut its pool down): a daemon thread watches the parent's pid."""
    import os
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="mobilize-parent-watch", daemon=True).start()


def _worker_trial(rec: R.Recipe, method: str, exclude: list[str]) -> tuple[list[str], int, Any]:
    """In a worker: quantize, then run the file on the held-out samples; (notes, bytes, outputs or None)."""
    from mobilize._quiet import captured_output

    w = _WORKER
    path, notes, nbytes = _quantize_file(w["mod"], rec, method, w["fp32"], w["work"], w["calib"], exclude)
    got = None
    if w["holdout"] is not None:
        with captured_output():
            got = _outputs(w["runner_cls"], path, w["inputs"], w["outputs"], w["holdout"], w["shapes"])
    return notes, nbytes, got


def _surely_faster(a: Trial, b: Trial, margin: float = SLOWER_MARGIN) -> bool:
    """``a`` beats ``b`` beyond noise: a's whole confidence interval lies below b's, by ``margin``."""
    return bool(a.timing and b.timing and a.timing["ci_high_ms"] * (1 + margin) < b.timing["ci_low_ms"])


def _slower(t: Trial, fp32: dict[str, float] | None) -> bool:
    """Slower than the fp32 file beyond noise (its confidence interval lies above fp32's by ``SLOWER_MARGIN``)."""
    return bool(t.timing and fp32 and t.timing["ci_low_ms"] > fp32["ci_high_ms"] * (1 + SLOWER_MARGIN))


def speed_order(trials: list[Trial]) -> list[Trial]:
    """``trials`` fastest first — but a trial moves ahead of one listed before it (recipe order, documented in
    recipes.py) only when it is faster beyond measurement noise; a tie keeps the fixed order, so the choice is the
    same on a busy and a quiet machine."""
    order: list[Trial] = []
    for t in trials:
        i = len(order)
        while i > 0 and _surely_faster(t, order[i - 1]):
            i -= 1
        order.insert(i, t)
    return order


def _record(chosen: Trial, trials: list[Trial], finals: list[Trial], precision: str, ctx: Context,
            fp32_bytes: int, fp32_t: dict[str, float] | None, native: bool, runner_cls: Any,
            sens: dict[str, Any] | None) -> dict[str, Any]:
    fp32_ms = fp32_t["median_ms"] if fp32_t else None
    meets = chosen.meets(ctx.target)
    rec: dict[str, Any] = {
        "precision": precision, **chosen.recipe.to_dict(),
        "range_estimator": chosen.method or None,
        "size_ratio": round(chosen.bytes / fp32_bytes, 4),
        "kept_float": list(chosen.exclude),
        "calibration": None if ctx.calibration is None else {
            **ctx.calibration.describe(), "calibration_samples": ctx.calibrate_part.samples if ctx.calibrate_part
            else 0, "held_out_samples": ctx.holdout.samples if ctx.holdout else 0,
            "used": chosen.recipe.calibrated, "warnings": list(ctx.calibration.warnings)},
        "target": ctx.target.to_dict(),
        "achieved": chosen.figures,
        "meets_target": meets,
        "measured_with": runner_cls.runtime if chosen.figures is not None else None,
        "latency": None, "slower_than_fp32": None,
        "candidates": [_trial_dict(t, fp32_bytes, fp32_ms, ctx, t is chosen) for t in trials],
        "sensitivity": sens,
    }
    if chosen.latency_ms is not None and fp32_ms:
        ratio = chosen.latency_ms / fp32_ms
        rec["latency"] = {"ms": round(chosen.latency_ms, 4), "fp32_ms": round(fp32_ms, 4),
                          "ratio": round(ratio, 3), "threads": 1, "runtime": runner_cls.runtime}
        rec["slower_than_fp32"] = _slower(chosen, fp32_t)
    elif not native:
        rec["latency"] = {"unmeasured": f"no native {runner_cls.runtime} runtime on this machine"}
    if ctx.calibration is None:
        rec["meets_target"] = None
        rec["achieved"] = None
    return rec


def _trial_dict(t: Trial, fp32_bytes: int, fp32_ms: float | None, ctx: Context, chosen: bool) -> dict[str, Any]:
    return {"recipe": t.recipe.name, "range_estimator": t.method or None, "kept_float": len(t.exclude),
            "size_ratio": round(t.bytes / fp32_bytes, 4),
            "snr_db": None if t.figures is None else t.figures["snr_db"],
            "top1_agreement": None if t.figures is None else t.figures["top1_agreement"],
            "metric": None if t.figures is None else (t.figures.get("metric") or {}).get("value"),
            "latency_ratio": round(t.latency_ms / fp32_ms, 3) if (t.latency_ms and fp32_ms) else None,
            "latency_ratio_ci": [round(t.timing["ci_low_ms"] / fp32_ms, 3), round(t.timing["ci_high_ms"] / fp32_ms, 3)]
            if (t.timing and fp32_ms) else None,
            "meets_target": t.meets(ctx.target), "chosen": chosen}


def trial_path(rec: R.Recipe, method: str, exclude: Sequence[str], work: Path, fp32: Path) -> Path:
    """Where a trial's file goes: named by recipe, range estimator and a stable digest of the layers kept float
    (the same in every process and run, unlike ``hash()`` under ``PYTHONHASHSEED``)."""
    digest = hashlib.sha256("\n".join(exclude).encode()).hexdigest()[:12]
    return work / f"{rec.name}-{method or 'default'}-{len(exclude)}-{digest}{_suffix(fp32)}"


def _quantize_file(mod: Any, rec: R.Recipe, method: str, fp32: Path, work: Path, calib_feeds: Any,
                   exclude: list[str]) -> tuple[Path, list[str], int]:
    from mobilize._quiet import captured_output
    from mobilize.bundle.hashing import size

    path = trial_path(rec, method, exclude, work, fp32)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with captured_output():
        notes = mod.quantize(fp32, path, rec, calib_feeds, exclude, work / "cache", method=method or "minmax")
    if fp32.suffix == ".onnx":
        _strip_onnx_metadata(path)
    return path, list(notes), size(path)


def _trial(mod: Any, rec: R.Recipe, method: str, fp32: Path, work: Path, calib_feeds: Any, exclude: list[str],
           runner_cls: Any, ctx: Context, size_limit: int | None = None) -> Trial:
    from mobilize._quiet import captured_output

    path, notes, nbytes = _quantize_file(mod, rec, method, fp32, work, calib_feeds, exclude)
    t = Trial(rec, method, path, list(exclude), nbytes, notes=notes)
    if exclude:
        t.notes.append(f"{len(exclude)} layer(s) kept in float after per-layer sensitivity")
    if size_limit is not None and nbytes > size_limit:
        return t  # over the size limit: it cannot be chosen, so it is not measured (the caller records why)
    if ctx.holdout is not None and runner_cls is not None:
        with captured_output():
            t.figures = evaluate(runner_cls, path, ctx)
    return t


def _suffix(p: Path) -> str:
    return ".mlpackage" if p.suffix == ".mlpackage" else p.suffix


def _strip_onnx_metadata(path: Path) -> None:
    """Keep only the module path of each node in a quantized ONNX file (:func:`mobilize.export.onnx.lean_metadata`):
    the quantizers copy a node's metadata onto every node they insert."""
    import onnx

    from mobilize.export.onnx import lean_metadata

    model = onnx.load(str(path))
    lean_metadata(model)
    path.write_bytes(model.SerializeToString())


def module_for(fmt: str) -> Any:
    import importlib

    return importlib.import_module(f"mobilize.quantize.{fmt}")


def runner_for(fmt: str) -> tuple[Any, bool]:
    """(runner class to measure with or None, whether it is the format's native runtime)."""
    from mobilize import formats
    from mobilize.verify.parity import _fallback_runner

    cls = formats.get(fmt).load("runner")
    if cls.available()[0]:
        return cls, True
    fb = _fallback_runner(fmt)
    if fb is not None and fb.available()[0]:
        return fb, False
    return None, False


def file_feeds(runner_cls: Any, path: Path, ctx: Context, data: CalibrationData) -> list[dict[str, np.ndarray]]:
    """The samples as feeds for the file ``path`` (its own input names and dtypes)."""
    from mobilize.verify.parity import adapt_feed, io_map

    if runner_cls is None:
        return [dict(f) for f in data.feeds()]
    with runner_cls(path) as r:
        m = io_map(ctx.spec.input_names, r.inputs)
        declared = {t.name: t for t in r.inputs}
        return [{m[k]: adapt_feed(v, declared[m[k]]) for k, v in f.items()} for f in data.feeds()]


def evaluate(runner_cls: Any, path: Path, ctx: Context) -> dict[str, Any]:
    """Held-out figures of ``path`` against PyTorch (:func:`mobilize.quantize.heldout.figures`): SNR per output and
    worst, argmax agreement, the user's metric."""
    assert ctx.holdout is not None and ctx.holdout_ref is not None
    got = _outputs(runner_cls, path, list(ctx.spec.input_names), list(ctx.spec.output_names), ctx.holdout.feeds(),
                   [{n: r[n].shape for n in ctx.spec.output_names} for r in ctx.holdout_ref])
    return _figures(got, ctx)


def _outputs(runner_cls: Any, path: Path, input_names: list[str], names: list[str], feeds: Sequence[Any],
             shapes: Sequence[dict[str, tuple[int, ...]]]) -> list[dict[str, np.ndarray]]:
    """``path``'s outputs on the held-out ``feeds``, keyed by the model's output names, in PyTorch's ``shapes``."""
    from mobilize.verify.parity import adapt_feed, adapt_output, io_map

    got: list[dict[str, np.ndarray]] = []
    with runner_cls(path) as r:
        im = io_map(input_names, r.inputs)
        om = io_map(names, r.outputs)
        fin = {t.name: t for t in r.inputs}
        fout = {t.name: t for t in r.outputs}
        for feed, shape in zip(feeds, shapes):
            out = r.infer({im[k]: adapt_feed(v, fin[im[k]]) for k, v in feed.items()})
            row = {}
            for n in names:
                val = adapt_output(out[om[n]], fout[om[n]])
                row[n] = val.reshape(shape[n]) if val.size == int(np.prod(shape[n])) else val
            got.append(row)
    return got


def _figures(got: list[dict[str, np.ndarray]], ctx: Context) -> dict[str, Any]:
    from mobilize.quantize.heldout import figures

    assert ctx.holdout_ref is not None
    return figures(got, ctx.holdout_ref, list(ctx.spec.output_names), ctx.target, metric=ctx.metric,
                   batch=ctx.metric_batch, metric_pytorch=ctx.metric_pytorch)


def latency(runner_cls: Any, path: Path, ctx: Context) -> dict[str, float] | None:
    """Single-thread latency of one inference on the first held-out (or example) sample: the median and its 95 %
    confidence interval (ms; :func:`mobilize.verify.timing.median_ci`), None when it cannot be timed."""
    from mobilize._quiet import captured_output
    from mobilize.verify.parity import adapt_feed, io_map
    from mobilize.verify.timing import median_ci

    feed = (ctx.holdout.feeds()[0] if ctx.holdout is not None else
            {n: t.detach().cpu().numpy() for n, t in zip(ctx.spec.input_names, ctx.spec.example_inputs)})
    try:
        with captured_output(), runner_cls(path, threads=1) as r:
            im = io_map(ctx.spec.input_names, r.inputs)
            fin = {t.name: t for t in r.inputs}
            x = {im[k]: adapt_feed(v, fin[im[k]]) for k, v in feed.items()}
            for _ in range(_WARMUP):
                r.infer(x)
            times: list[float] = []
            t_end = time.perf_counter() + _MIN_SECONDS
            while len(times) < _MIN_RUNS or time.perf_counter() < t_end:
                t0 = time.perf_counter()
                r.infer(x)
                times.append(time.perf_counter() - t0)
                if len(times) >= 200:
                    break
    except Exception:  # noqa: BLE001 - a timing failure must not fail the artifact; it shows as unmeasured
        return None
    med, lo, hi = median_ci([x * 1e3 for x in times])
    return {"median_ms": med, "ci_low_ms": lo, "ci_high_ms": hi}


def _copy(src: Path, dest: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copyfile(src, dest)
