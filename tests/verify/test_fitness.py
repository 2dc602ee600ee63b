"""The fitness judgement (mobilize.verify.fitness) on artifact records: which files are fit to ship and why not.

The records are what ``api.export`` builds from real files (sizes, the static analysis, timings); here they are
written out so each rule is exercised at its edges. End-to-end runs on real converters are in
tests/e2e/test_fitness.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from mobilize.errors import OptionError
from mobilize.verify import fitness as F

GRAPH = {"op_count": 20, "ops": {}, "kinds": {}}
FLOORS = {"fp32": 4_000_000, "fp16": 2_000_000, "int8": 1_000_000, "int8-weights": 1_000_000}


def _analysis(ops: int = 22, **extra: Any) -> dict[str, Any]:
    return {"op_count": ops, "ops": {}, "kinds": {"recurrent": 0, "prelu": 0}, "constants": {"count": 5, "bytes": 0},
            "float_weight_bytes": {}, "duplicates": [], "repeated_constants": [], **extra}


def _art(fmt: str, prec: str, nbytes: int, *, analysis: dict[str, Any] | None = None,
         latency: dict[str, Any] | None = None, quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    a: dict[str, Any] = {"format": fmt, "precision": prec, "status": "ok", "bytes": nbytes,
                         "analysis": analysis or _analysis(), "latency": latency}
    if quantization is not None:
        a["quantization"] = quantization
    return a


def _lat(median: float, spread: float = 0.01) -> dict[str, Any]:
    return {"median_ms": median, "ci_low_ms": median * (1 - spread), "ci_high_ms": median * (1 + spread),
            "threads": 1}


def _checks(art: dict[str, Any]) -> list[str]:
    return [f["check"] for f in art["fitness"]["findings"] if f["severity"] == "fail"]


def test_files_near_their_floor_and_siblings_are_fit() -> None:
    arts = [_art("onnx", "fp32", 4_100_000), _art("tflite", "fp32", 4_050_000), _art("coreml", "fp32", 4_200_000)]
    F.judge(arts, GRAPH, FLOORS)
    assert [a["fitness"]["status"] for a in arts] == ["fit"] * 3
    assert arts[0]["fitness"]["size"]["floor_ratio"] == pytest.approx(1.025)
    assert arts[0]["fitness"]["size"]["smallest_sibling"] == {"format": "tflite", "bytes": 4_050_000,
                                                              "ratio": pytest.approx(1.012, abs=1e-3)}


def test_a_file_far_above_its_floor_is_unfit_with_the_reason_found() -> None:
    dup = {"tensors": ["model/PReLU_act;1", "model/Linear_fc;1"], "bytes_each": 2_360_000, "extra_bytes": 2_360_000,
           "relation": "negated"}
    graph = {**GRAPH, "kinds": {"prelu": ["act (PReLU)"]}}
    arts = [_art("onnx", "fp32", 4_100_000, analysis=_analysis(kinds={"recurrent": 0, "prelu": 1})),
            _art("tflite", "fp32", 7_600_000, analysis=_analysis(duplicates=[dup]))]
    F.judge(arts, graph, FLOORS)
    onnx, tfl = arts
    assert onnx["fitness"]["status"] == "fit"
    assert tfl["fitness"]["status"] == "unfit"
    assert _checks(tfl) == ["size.floor", "size.siblings"]
    reasons = tfl["fitness"]["findings"][0]["reasons"]
    assert reasons[0].startswith("duplicated constants: 2 tensors hold the same values (negated; 2.36 MB extra)")
    assert "`PReLU_act`" in reasons[0] and "`Linear_fc`" in reasons[0]  # short labels, not the converter's paths
    assert any(r.startswith("decomposed activation: PReLU in act (PReLU)") for r in reasons)


def test_the_allowance_covers_graph_structure_of_tiny_models() -> None:
    """A 20 KB model with 50 KB of graph and metadata is not flagged: the floor gets 32 KB + 1 KB per op."""
    floors = {"fp32": 20_000}
    arts = [_art("onnx", "fp32", 20_000 * 1.25 + 32_000 + 20 * 1000 - 1)]
    F.judge(arts, GRAPH, floors)
    assert arts[0]["fitness"]["status"] == "fit"
    arts = [_art("onnx", "fp32", 20_000 * 1.25 + 32_000 + 20 * 1000 + 1)]
    F.judge(arts, GRAPH, floors)
    assert _checks(arts[0]) == ["size.floor"]


def test_unrolled_recurrence_fails_the_op_count_and_is_named() -> None:
    graph = {"op_count": 12, "ops": {}, "kinds": {"recurrent": ["rnn (LSTM)"]}}
    arts = [_art("onnx", "fp32", 4_000_000, analysis=_analysis(ops=70, kinds={"recurrent": 2, "prelu": 0})),
            _art("tflite", "fp32", 4_100_000, analysis=_analysis(ops=2049))]
    F.judge(arts, graph, FLOORS)
    assert arts[0]["fitness"]["status"] == "fit"  # 70 ops ≤ 4 × 12 + 100
    assert _checks(arts[1]) == ["ops"]
    finding = arts[1]["fitness"]["findings"][0]
    assert finding["message"].startswith("2049 ops where the captured graph has 12")
    assert finding["reasons"] == ["unrolled recurrence: rnn (LSTM) became 2049 ops (no native recurrent op in the "
                                  "file)"]


def test_latency_against_siblings_needs_a_clear_gap() -> None:
    slow = [_art("onnx", "fp32", 4_000_000, latency=_lat(1.0)), _art("tflite", "fp32", 4_000_000, latency=_lat(2.5))]
    F.judge(slow, GRAPH, FLOORS)
    assert _checks(slow[1]) == ["latency.siblings"] and slow[0]["fitness"]["status"] == "fit"
    assert slow[1]["fitness"]["latency"]["vs_fastest_sibling"] == {"format": "onnx", "ratio": 2.5}
    # the same medians with confidence intervals that overlap the threshold: no verdict on a noisy timing
    noisy = [_art("onnx", "fp32", 4_000_000, latency=_lat(1.0, 0.3)),
             _art("tflite", "fp32", 4_000_000, latency=_lat(2.5, 0.3))]
    F.judge(noisy, GRAPH, FLOORS)
    assert noisy[1]["fitness"]["status"] == "fit"
    # a 3× ratio on a 20 µs model is below anything an app can notice
    tiny = [_art("onnx", "fp32", 4_000_000, latency=_lat(0.02)), _art("tflite", "fp32", 4_000_000, latency=_lat(0.06))]
    F.judge(tiny, GRAPH, FLOORS)
    assert tiny[1]["fitness"]["status"] == "fit"


def test_a_quantized_file_slower_than_its_fp32_file_is_unfit() -> None:
    q = {"meets_target": True, "recipe": "dynamic"}
    arts = [_art("onnx", "fp32", 4_000_000, latency=_lat(1.0)),
            _art("onnx", "int8-weights", 1_100_000, latency=_lat(13.0), quantization=q)]
    F.judge(arts, GRAPH, FLOORS)
    assert _checks(arts[1]) == ["latency.fp32"]
    assert arts[1]["fitness"]["latency"]["vs_fp32"] == 13.0


def test_a_quantized_file_below_its_target_is_below_target() -> None:
    q = {"meets_target": False, "recipe": "static", "achieved": {"snr_db": 24.6, "top1_agreement": 1.0},
         "target": {"min_snr_db": 25.0, "min_top1": 0.97}}
    arts = [_art("tflite", "int8", 1_050_000, quantization=q)]
    F.judge(arts, GRAPH, FLOORS)
    fit = arts[0]["fitness"]
    assert fit["status"] == "below_target"
    assert fit["findings"][0]["message"] == ("below the accuracy target: held-out SNR 24.6 dB < 25 dB (recipe "
                                             "static)")


def test_weights_left_in_float_are_the_reason_for_a_big_int8_file() -> None:
    an = _analysis(float_weight_bytes={"LSTM": 663_552})
    arts = [_art("onnx", "int8", 700_000, analysis=an, quantization={"meets_target": True})]
    F.judge(arts, GRAPH, {"int8": 180_000})
    f = arts[0]["fitness"]["findings"][0]
    assert f["check"] == "size.floor" and f["reasons"] == ["weights left in float: 663.6 KB (LSTM 663.6 KB)"]


def test_failed_artifacts_get_no_judgement_and_off_switches_work() -> None:
    arts = [{"format": "coreml", "precision": "fp32", "status": "failed"}, _art("onnx", "fp32", 40_000_000)]
    F.judge(arts, GRAPH, FLOORS, F.parse_thresholds("max_floor_ratio=off"))
    assert arts[0]["fitness"] is None and arts[1]["fitness"]["status"] == "fit"
    F.judge(arts, GRAPH, FLOORS)
    assert _checks(arts[1]) == ["size.floor"]


@pytest.mark.parametrize("text, message", [
    ("max_floor_ration=2", "did you mean 'max_floor_ratio'?"),
    ("max_floor_ratio", "is not KEY=VALUE"),
    ("max_floor_ratio=big", "is not a number"),
    ("max_floor_ratio=0.8", "must be ≥ 1"),
    ("op_slack=off", "op_slack cannot be turned off"),
    ("min_latency_gap_ms=-1", "must be a finite number ≥ 0"),
    ("max_op_ratio=inf", "must be a finite number ≥ 0"),
])
def test_bad_thresholds_are_one_line_option_errors(text: str, message: str) -> None:
    with pytest.raises(OptionError, match=None) as err:
        F.parse_thresholds(text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_thresholds_parse() -> None:
    th = F.parse_thresholds("max_floor_ratio=1.5, max_latency_vs_sibling=off,op_slack=10")
    assert th is not None
    assert (th.max_floor_ratio, th.max_latency_vs_sibling, th.op_slack) == (1.5, None, 10)
    assert F.parse_thresholds("") is None and F.parse_thresholds(None) is None
