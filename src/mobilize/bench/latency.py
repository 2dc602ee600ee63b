"""Latency: statistics, timing targets, and the interleaved measurement loop.

How one configuration (artifact × thread count) is measured:

1. load (timed: ``load_ms``), first inference through the runner's checked ``infer()`` (timed:
   ``first_inference_ms``);
2. untimed warm-up: at least ``warmup_runs`` runs *and* ``warmup_seconds``;
3. measured runs in round-robin blocks: every configuration runs one block per round, the start of the order
   rotates each round, so machine drift (thermal, other load) hits every configuration alike. Each block starts with
   a couple of untimed runs that re-warm caches after the previous configuration ran. Every run is timed on its own
   with ``perf_counter_ns`` around the bare runtime call (``session.run`` / the LiteRT signature runner / the
   module's forward), with pre-built feeds and the garbage collector paused;
4. a configuration whose coefficient of variation exceeds ``cv_threshold`` is measured once more (again
   interleaved with the other noisy ones); the second measurement is kept and still flagged when noisy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from mobilize.errors import one_line

StepCallback = Callable[[str], None]


# --- statistics ---------------------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not len(samples):
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q} outside 0..100")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, mean, std (sample, ddof=1), cv (= std / mean), min and max of latencies in milliseconds."""
    if not len(samples_ms):
        raise ValueError("no samples to summarize")
    n = len(samples_ms)
    mean = math.fsum(samples_ms) / n
    var = math.fsum((x - mean) ** 2 for x in samples_ms) / (n - 1) if n > 1 else 0.0
    std = math.sqrt(var)
    return {
        "p50": percentile(samples_ms, 50),
        "p90": percentile(samples_ms, 90),
        "p99": percentile(samples_ms, 99),
        "mean": mean,
        "std": std,
        "cv": std / mean if mean > 0 else 0.0,
        "min": float(min(samples_ms)),
        "max": float(max(samples_ms)),
    }


# --- settings and results -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long and how often to measure. The defaults are the documented minimums (docs/bench.md)."""

    warmup_runs: int = 10
    warmup_seconds: float = 0.5
    min_runs: int = 50
    min_seconds: float = 1.0
    rounds: int = 5  # blocks per configuration (interleaving granularity)
    rewarm_runs: int = 2  # untimed runs at the start of each block
    cv_threshold: float = 0.05

    def __post_init__(self) -> None:
        from mobilize.errors import OptionError

        if self.min_runs < 1 or self.warmup_runs < 0 or self.rounds < 1 or self.rewarm_runs < 0:
            raise OptionError("bench settings: run counts must be positive (min_runs ≥ 1, rounds ≥ 1)")
        if self.min_seconds < 0 or self.warmup_seconds < 0 or self.cv_threshold <= 0:
            raise OptionError("bench settings: times must be ≥ 0 and the CV threshold > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Measurement:
    """What the loop measured for one target."""

    key: str
    load_ms: float | None = None
    first_inference_ms: float | None = None
    samples_ms: list[float] = dataclasses.field(default_factory=list)
    error: str | None = None
    remeasured: bool = False
    cv_first: float | None = None
    estimate_ms: float | None = None

    @property
    def stats(self) -> dict[str, float] | None:
        return summarize(self.samples_ms) if self.samples_ms else None

    @property
    def measured_seconds(self) -> float:
        return math.fsum(self.samples_ms) / 1000.0


# --- targets ------------------------------------------------------------------------------------------------------


class Target:
    """One configuration to time. Subclasses set :attr:`call` (the bare runtime call) in :meth:`open`."""

    key: str
    call: Callable[[], Any]

    def open(self) -> None:
        """Load the model (timed as ``load_ms``)."""

    def first(self) -> None:
        """First inference through the checked path (timed as ``first_inference_ms``); sets :attr:`call`."""

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        """Context around every block of runs (e.g. PyTorch's thread count and inference mode)."""
        yield

    def close(self) -> None:
        pass


class RunnerTarget(Target):
    """A bundle artifact, loaded through its :class:`~mobilize.runtime.base.Runner`.

    The first inference goes through ``runner.infer`` (feeds checked); the timed call is the runtime's own call with
    the same pre-built feeds (see :func:`runtime_call`).
    """

    def __init__(self, key: str, runner_cls: Any, path: Any, threads: int, make_feeds: Callable[[Any], dict]) -> None:
        self.key = key
        self.runner_cls = runner_cls
        self.path = path
        self.threads = threads
        self.make_feeds = make_feeds
        self.runner: Any = None
        self.feeds: dict[str, np.ndarray] = {}

    def open(self) -> None:
        from mobilize._quiet import captured_output

        with captured_output():
            runner = self.runner_cls(self.path, threads=self.threads)
            runner.__enter__()
        self.runner = runner

    def first(self) -> None:
        from mobilize._quiet import captured_output

        self.feeds = {k: np.ascontiguousarray(v) for k, v in self.make_feeds(self.runner).items()}
        with captured_output():  # LiteRT prints "Created TensorFlow Lite XNNPACK delegate" on first use
            self.runner.infer(self.feeds)
        self.call = runtime_call(self.runner, self.feeds)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.__exit__(None, None, None)
            self.runner = None


class TorchTarget(Target):
    """PyTorch eager: ``module(*tensors)`` under ``torch.inference_mode`` with ``torch.set_num_threads(threads)``."""

    def __init__(
        self, key: str, module: Any, arrays: Sequence[np.ndarray], threads: int, load_ms: float | None = None
    ) -> None:
        self.key = key
        self.module = module
        self.arrays = arrays
        self.threads = threads
        self.load_ms = load_ms

    def open(self) -> None:
        import torch

        self.tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in self.arrays)

    def first(self) -> None:
        with self.block():
            self.module(*self.tensors)
        self.call = functools.partial(self.module, *self.tensors)

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(before)


def runtime_call(runner: Any, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    """The bare runtime call of a loaded runner with fixed feeds: ``session.run(None, feeds)`` for onnxruntime, the
    signature runner for LiteRT, else the runner's unchecked ``_infer``. The check in ``infer()`` ran once already
    (first inference), so timing it again would only add harness overhead."""
    from mobilize.runtime.onnx import OnnxRunner
    from mobilize.runtime.tflite import TFLiteRunner

    feeds = dict(feeds)
    if isinstance(runner, OnnxRunner) and getattr(runner, "_session", None) is not None:
        return functools.partial(runner._session.run, None, feeds)
    if isinstance(runner, TFLiteRunner) and getattr(runner, "_runner", None) is not None:
        return functools.partial(runner._runner, **feeds)
    return functools.partial(runner._infer, feeds)


# --- the loop -----------------------------------------------------------------------------------------------------


def _timed_runs(call: Callable[[], Any], n: int, out: list[float]) -> None:
    """``n`` runs of ``call``, each timed on its own (ms), appended to ``out``; GC paused."""
    clock = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(n):
            t0 = clock()
            call()
            out.append((clock() - t0) / 1e6)
    finally:
        if gc_was:
            gc.enable()


def _warm_up(target: Target, settings: Settings) -> float:
    """Untimed warm-up; returns an estimate of one run (ms), the median of the warm-up's second half."""
    times: list[float] = []
    start = time.perf_counter()
    with target.block():
        while len(times) < max(settings.warmup_runs, 2) or time.perf_counter() - start < settings.warmup_seconds:
            _timed_runs(target.call, 1, times)
    tail = times[len(times) // 2 :]
    return float(np.median(tail))


def _rounds(
    targets: Sequence[Target], results: dict[str, Measurement], settings: Settings, step: StepCallback, label: str,
    decided: Decided | None = None,
) -> None:
    """Interleaved blocks until every target has ≥ min_runs and ≥ min_seconds of samples — or, with ``decided``,
    until it says the samples so far already settle what they are measured for (checked after each round)."""
    if not targets:
        return
    per_block = {}
    for t in targets:
        est = max(results[t.key].estimate_ms or 1e-3, 1e-3)
        need = max(settings.min_runs, math.ceil(settings.min_seconds * 1000.0 / est))
        per_block[t.key] = max(1, math.ceil(need / settings.rounds))
    pending = list(targets)
    r = 0
    while pending and r < settings.rounds * 4:
        step(f"{label}: round {r + 1} of ≥{settings.rounds} ({len(pending)} configurations)")
        order = pending[r % len(pending) :] + pending[: r % len(pending)]
        for t in order:
            m = results[t.key]
            with t.block():
                if settings.rewarm_runs:
                    _timed_runs(t.call, settings.rewarm_runs, [])
                _timed_runs(t.call, per_block[t.key], m.samples_ms)
        r += 1
        if decided is not None and decided(results):
            return
        if r >= settings.rounds:
            pending = [
                t
                for t in pending
                if len(results[t.key].samples_ms) < settings.min_runs
                or results[t.key].measured_seconds < settings.min_seconds
            ]


#: ``decided(results) -> bool``: whether the samples so far settle the question the timing answers (see
#: :func:`mobilize.verify.timing.decided_by`); timing then stops early
Decided = Callable[[dict[str, "Measurement"]], bool]


def measure(targets: Sequence[Target], settings: Settings, step: StepCallback | None = None,
            decided: Decided | None = None) -> dict[str, Measurement]:
    """Load, first-run, warm up and time every target (interleaved); re-measure noisy ones once.

    A target that fails to load or run gets ``error`` set and no samples; the others continue. ``decided`` (a
    judgement's own test, e.g. the fitness comparisons) ends the timing after the first round that settles it, and
    then no noisy target is re-measured either.
    """
    step = step or (lambda _m: None)
    results = {t.key: Measurement(t.key) for t in targets}
    ready: list[Target] = []
    try:
        for i, t in enumerate(targets, 1):  # one target per file × thread count (and PyTorch eager × threads)
            m = results[t.key]
            step(f"loading {t.key} ({i}/{len(targets)})")
            try:
                t0 = time.perf_counter()
                t.open()
                m.load_ms = getattr(t, "load_ms", None) or (time.perf_counter() - t0) * 1000.0
                t0 = time.perf_counter()
                t.first()
                m.first_inference_ms = (time.perf_counter() - t0) * 1000.0
                step(f"warming up {t.key}")
                m.estimate_ms = _warm_up(t, settings)
            except Exception as exc:  # noqa: BLE001 - one configuration failing must not stop the others
                m.error = f"{type(exc).__name__}: {one_line(exc, 300)}"
                t.close()
                continue
            ready.append(t)
        _rounds(ready, results, settings, step, "timing", decided)
        noisy = [t for t in ready if (results[t.key].stats or {}).get("cv", 0) > settings.cv_threshold]
        if noisy and not (decided is not None and decided(results)):
            for t in noisy:
                m = results[t.key]
                m.cv_first = (m.stats or {}).get("cv")
                m.samples_ms = []
                m.remeasured = True
            _rounds(noisy, results, settings, step, "re-measuring noisy")
    finally:
        for t in ready:
            t.close()
    return results
