"""Per-layer sensitivity on a fake quantizer: the layers that matter are found and kept float, the size limit is
respected, and the search stops as soon as the target is met."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mobilize.quantize import sensitivity
from mobilize.quantize.driver import Trial
from mobilize.quantize.recipes import AccuracyTarget, recipe

LAYERS = [{"name": f"L{i}", "op": "Conv", "module": f"features.{i}"} for i in range(8)]
#: SNR each layer costs when quantized; L7 (the classifier) and L2 are the culprits. L2 is huge (float = 4x bytes).
COST = {"L0": 0.5, "L1": 0.1, "L2": 6.0, "L3": 0.2, "L4": 0.1, "L5": 0.3, "L6": 0.2, "L7": 9.0}


def _fake(calls: list[list[str]], big: str | None = None):  # noqa: ANN202
    rec = recipe("onnx", "int8", "qdq-per-channel")

    def trial(exclude: list[str], size_limit: int | None = None) -> Trial:
        calls.append(list(exclude))
        snr = 40.0 - sum(c for k, c in COST.items() if k not in exclude)
        top1 = 1.0 if snr >= 30 else 0.9
        size = 25 + sum(60 if k == big else 3 for k in exclude)
        if size_limit is not None and size > size_limit:  # the driver's trial: over the limit, not measured
            measured.append(False)
            return Trial(rec, "minmax", Path("x"), list(exclude), size)
        measured.append(True)
        return Trial(rec, "minmax", Path("x"), list(exclude), size,
                     figures={"snr_db": snr, "top1_agreement": top1, "samples": 8, "outputs": {}})
    measured: list[bool] = []
    trial.measured = measured  # type: ignore[attr-defined]
    return trial


def test_keeps_the_most_sensitive_layers_until_the_target_is_met() -> None:
    calls: list[list[str]] = []
    trial = _fake(calls)
    base = trial([])
    target = AccuracyTarget(min_snr_db=35, min_top1=0.97, max_size_ratio=0.35)
    kept, record = sensitivity.search(trial, LAYERS, base, target, fp32_bytes=100)
    assert kept[:2] == ["L7", "L2"]
    best = record.pop("_best")
    assert best.meets(target) and record["met_target"] and best.exclude == kept
    assert record["probes"][0]["layers"] == ["L7"]  # the last layer is probed first
    assert record["probes"][1]["layers"] == ["L0"] and record["probes"][2]["layers"] == ["L0", "L1"]  # islands
    assert len(calls) <= 1 + len(sensitivity.probe_units(LAYERS)) + sensitivity.MAX_STEPS


def test_a_layer_too_big_to_keep_float_is_skipped() -> None:
    calls: list[list[str]] = []
    trial = _fake(calls, big="L2")
    base = trial([])
    target = AccuracyTarget(min_snr_db=35, min_top1=0.97, max_size_ratio=0.35)
    kept, record = sensitivity.search(trial, LAYERS, base, target, fp32_bytes=100)
    assert "L2" not in kept and "L7" in kept
    assert any(s["over_size_limit"] for s in record["greedy_steps"])
    assert not record["met_target"]  # without L2 the target is out of reach: reported, not hidden


def test_a_step_over_the_size_limit_is_not_measured_and_the_choice_is_the_same() -> None:
    """The skip of a greedy step over the size limit changes nothing but the work done: same layers kept, same best
    trial, same steps taken (only the skipped step's accuracy is unknown)."""
    target = AccuracyTarget(min_snr_db=35, min_top1=0.97, max_size_ratio=0.35)
    got = {}
    for skip in (True, False):
        calls: list[list[str]] = []
        trial = _fake(calls, big="L2")
        cannot_win: list[dict[str, str]] = []
        kept, record = sensitivity.search(trial, LAYERS, trial([]), target, fp32_bytes=100, cannot_win=cannot_win,
                                          skip_cannot_win=skip)
        best = record.pop("_best")
        got[skip] = (kept, best.exclude, [(s["layers"], s["over_size_limit"]) for s in record["greedy_steps"]],
                     record["met_target"], cannot_win, trial.measured)  # type: ignore[attr-defined]
    assert got[True][:4] == got[False][:4]
    skipped, measured = got[True][4], got[True][5]
    over = [s for s in got[True][2] if s[1]]
    assert over and len(skipped) == len(over) == measured.count(False)
    assert all("over the size limit" in s["why"] and "bytes), known before the held-out run" in s["why"]
               for s in skipped)
    assert skipped[0]["trial"].startswith("qdq-per-channel (minmax) + ")
    assert all(got[False][5]) and got[False][4] == []  # without the skip, every trial is measured


def test_size_budget_allows_tiny_models_some_room() -> None:
    t = AccuracyTarget(max_size_ratio=0.35)
    assert sensitivity.size_budget(25, 100, t) == 35
    assert sensitivity.size_budget(40, 100, t) == 42  # the all-int8 file is already over 0.35x: 5 % on top


def test_probe_budget_bounds_the_search() -> None:
    calls: list[list[str]] = []
    trial = _fake(calls)
    base = trial([])
    kept, record = sensitivity.search(trial, LAYERS, base, AccuracyTarget(), fp32_bytes=100, budget_s=0.0)
    assert record["probed_layers"] == 1  # the budget is checked before each probe after the first
    assert dataclasses.is_dataclass(base)
