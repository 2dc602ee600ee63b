"""Latency statistics against numpy, and the interleaved measurement loop with fake targets."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mobilize.bench.latency import Measurement, Settings, Target, measure, percentile, summarize

samples = st.lists(st.floats(min_value=1e-4, max_value=1e4, allow_nan=False), min_size=1, max_size=200)


@settings(max_examples=200, deadline=None)
@given(samples, st.sampled_from([0, 1, 10, 50, 90, 99, 99.9, 100]))
def test_percentile_matches_numpy(xs: list[float], q: float) -> None:
    assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(samples)
def test_summary_matches_numpy(xs: list[float]) -> None:
    s = summarize(xs)
    arr = np.asarray(xs)
    std = float(arr.std(ddof=1)) if len(xs) > 1 else 0.0
    assert s["p50"] == pytest.approx(float(np.median(arr)), rel=1e-9)
    assert s["p90"] == pytest.approx(float(np.percentile(arr, 90)), rel=1e-9)
    assert s["p99"] == pytest.approx(float(np.percentile(arr, 99)), rel=1e-9)
    assert s["mean"] == pytest.approx(float(arr.mean()), rel=1e-9)
    assert s["std"] == pytest.approx(std, rel=1e-6, abs=1e-9)
    assert s["cv"] == pytest.approx(std / float(arr.mean()), rel=1e-6, abs=1e-9)
    assert s["min"] == min(xs) and s["max"] == max(xs)


def test_summary_known_values() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["p50"] == 2.5 and s["mean"] == 2.5
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s["cv"] == pytest.approx(s["std"] / 2.5)


def test_empty_and_bad_input() -> None:
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        percentile([1.0], 101)


class FakeTarget(Target):
    """Records the order of its calls in a shared log; optionally alternates slow/fast runs (noisy)."""

    def __init__(self, key: str, log: list[str], noisy: bool = False, fail: bool = False) -> None:
        self.key, self.log, self.noisy, self.fail = key, log, noisy, fail
        self._flip = itertools.cycle([0.0, 0.002])

    def open(self) -> None:
        if self.fail:
            raise RuntimeError("cannot load")

    def first(self) -> None:
        self.call = self._run

    def _run(self) -> None:
        self.log.append(self.key)
        if self.noisy:
            delay = next(self._flip)
            if delay:
                time.sleep(delay)


def test_measure_interleaves_and_meets_minimums() -> None:
    log: list[str] = []
    s = Settings(warmup_runs=3, warmup_seconds=0, min_runs=20, min_seconds=0, rounds=4, rewarm_runs=1)
    res = measure([FakeTarget("a", log), FakeTarget("b", log), FakeTarget("c", log)], s)
    assert all(len(m.samples_ms) >= 20 for m in res.values())
    assert all(m.load_ms is not None and m.first_inference_ms is not None for m in res.values())
    # after the warm-ups, blocks alternate between targets: every target runs in every round
    timed = log[3 * 3 :]  # 3 warm-up runs each come first, target by target
    switches = sum(1 for x, y in zip(timed, timed[1:]) if x != y)
    assert switches >= 3 * 4 - 1
    assert {timed[0], timed[-1]} <= {"a", "b", "c"}


def test_noisy_target_is_remeasured_and_failures_are_isolated() -> None:
    log: list[str] = []
    s = Settings(warmup_runs=2, warmup_seconds=0, min_runs=10, min_seconds=0, rounds=2, rewarm_runs=0)
    res = measure(
        [FakeTarget("quiet", log), FakeTarget("noisy", log, noisy=True), FakeTarget("broken", log, fail=True)], s
    )
    noisy: Measurement = res["noisy"]
    assert noisy.remeasured and noisy.cv_first is not None and noisy.cv_first > 0.05
    assert len(noisy.samples_ms) >= 10
    assert res["broken"].error and "cannot load" in res["broken"].error and not res["broken"].samples_ms
    assert len(res["quiet"].samples_ms) >= 10


def test_settings_validate() -> None:
    from mobilize.errors import OptionError

    with pytest.raises(OptionError):
        Settings(min_runs=0)
    with pytest.raises(OptionError):
        Settings(cv_threshold=0)


def _m(key: str, samples: list[float]) -> Measurement:
    return Measurement(key, samples_ms=list(samples))


def test_a_settled_comparison_is_decided_and_an_open_one_is_not() -> None:
    from mobilize.verify.timing import decided_by

    near = [1.0, 1.02, 0.98, 1.01, 0.99, 1.03, 1.0]
    decided = decided_by([["a", "b", 2.0]])
    assert decided is not None
    assert decided({"a": _m("a", [x * 1.2 for x in near]), "b": _m("b", near)})  # surely within 2×
    assert decided({"a": _m("a", [x * 5 for x in near]), "b": _m("b", near)})  # surely beyond 2×
    assert not decided({"a": _m("a", [x * 2 for x in near]), "b": _m("b", near)})  # at the limit: keep timing
    assert not decided({"a": _m("a", [1.0, 1.1, 2.6, 1.0, 1.05, 0.9, 1.0]), "b": _m("b", near)})  # wide interval
    assert decided({"a": _m("a", []), "b": _m("b", near)})  # a file that could not run decides nothing
    assert decided_by([]) is None  # no comparison: time in full


def test_timing_stops_after_the_round_that_settles_it() -> None:
    log: list[str] = []
    s = Settings(warmup_runs=2, warmup_seconds=0, min_runs=30, min_seconds=0, rounds=3, rewarm_runs=0)
    full = measure([FakeTarget("a", log), FakeTarget("b", log)], s)
    rounds_seen: list[int] = []

    def after_two_rounds(results: dict[str, Measurement]) -> bool:
        rounds_seen.append(len(results["a"].samples_ms))
        return len(rounds_seen) >= 2

    early = measure([FakeTarget("a", log), FakeTarget("b", log)], s, decided=after_two_rounds)
    assert all(len(m.samples_ms) >= 30 for m in full.values())
    assert [len(m.samples_ms) for m in early.values()] == [20, 20]  # two rounds of ceil(30 / 3) runs each
    assert rounds_seen[:2] == [10, 20]


def test_fitness_pairs_are_the_comparisons_it_judges() -> None:
    from mobilize.verify.fitness import Thresholds, latency_pairs

    items = [("onnx fp32", "onnx", "fp32"), ("tflite fp32", "tflite", "fp32"), ("onnx int8", "onnx", "int8")]
    pairs = latency_pairs(items)
    assert ["onnx fp32", "tflite fp32", 2.0] in pairs and ["tflite fp32", "onnx fp32", 2.0] in pairs
    assert ["onnx int8", "onnx fp32", 1.1] in pairs and len(pairs) == 3
    assert latency_pairs(items, Thresholds(max_latency_vs_sibling=None, max_latency_vs_fp32=None)) == []
