"""Every format × quantized precision on the zoo, end to end through ``mobilize.export`` (in-process, real
converters and runtimes): files, manifest records, quantized I/O, accuracy figures, real test-set accuracy."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from mobilize import api
from mobilize.bundle import manifest as mf
from mobilize.models.digits import calibration_set
from mobilize.quantize import AccuracyTarget

QUANT = ("int8-weights", "int8", "int4-weights")


# the two module exports take ~30 s and ~15 s: those tests are `slow` (run by `make test`)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("q") / "digits"
    result = api.export("zoo:digits", out, formats="onnx,coreml,tflite", precisions=("fp32", *QUANT),
                        calibration=calibration_set(64), isolate=False)
    return {"out": out, "result": result, "arts": {(a["format"], a["precision"]): a for a in result.artifacts}}


@pytest.mark.slow  # shares a ~30 s module export
def test_every_format_and_recipe_is_exported_and_recorded(digits: dict) -> None:
    arts = digits["arts"]
    assert len(arts) == 12 and all(a["status"] == "ok" for a in arts.values())
    mf.validate(digits["result"].manifest)
    assert mf.read(digits["out"], check_files=True)
    for fmt in ("onnx", "coreml", "tflite"):
        fp32 = arts[(fmt, "fp32")]
        assert "quantization" not in fp32
        for prec in QUANT:
            a = arts[(fmt, prec)]
            q = a["quantization"]
            assert q["precision"] == prec and q["recipe"] and q["tool"]
            assert q["size_ratio"] == pytest.approx(a["bytes"] / fp32["bytes"], abs=1e-3)
            if (fmt, prec) == ("onnx", "int4-weights"):  # MatMulNBits covers MatMul only: this CNN stays float
                assert q["float_weights"] == {"Conv": 2} or "Conv" in (q["float_weights"] or {})
                assert a["fitness"]["status"] == "unfit", a["fitness"]
                assert "weights left in float" in " ".join(a["fitness"]["findings"][0]["reasons"])
            else:
                assert a["bytes"] < fp32["bytes"]
            assert q["calibration"]["held_out_samples"] == 16 and q["calibration"]["calibration_samples"] == 48
            assert q["achieved"]["samples"] == 16 and q["achieved"]["outputs"]["logits"]["snr_db"] > 0
            assert any(c["chosen"] for c in q["candidates"])
            assert a["parity"]["status"] == "pass", (fmt, prec, a["parity"]["reason"])


@pytest.mark.slow  # shares a ~30 s module export
def test_int8_meets_the_default_target_on_a_trained_model(digits: dict) -> None:
    for fmt in ("onnx", "coreml", "tflite"):
        q = digits["arts"][(fmt, "int8")]["quantization"]
        assert q["meets_target"] is True, (fmt, q["achieved"])
        assert q["achieved"]["snr_db"] >= 25 and q["achieved"]["top1_agreement"] >= 0.97
        assert q["size_ratio"] <= 0.4  # tiny model: scales and graph overhead weigh more than on real models


@pytest.mark.slow  # shares a ~30 s module export
def test_speed_is_measured_against_fp32(digits: dict) -> None:
    for fmt in ("onnx", "tflite"):
        for prec in QUANT:
            q = digits["arts"][(fmt, prec)]["quantization"]
            lat = q["latency"]
            assert lat["threads"] == 1 and lat["ms"] > 0 and lat["fp32_ms"] > 0
            if q["slower_than_fp32"]:  # decided on confidence intervals: a slower verdict needs a clear gap
                assert lat["ratio"] > 1.05
    # ONNX int8 tries QDQ and QOperator, each with two range estimators, and keeps the fastest that meets target
    q = digits["arts"][("onnx", "int8")]["quantization"]
    tried = {(c["recipe"], c["range_estimator"]) for c in q["candidates"]}
    assert {("qdq-per-channel", "minmax"), ("qdq-per-channel", "percentile"),
            ("qoperator-per-channel", "minmax")} <= tried
    finals = [c for c in q["candidates"] if c["latency_ratio_ci"] is not None and c["meets_target"]]
    chosen = next(c for c in q["candidates"] if c["chosen"])
    # no candidate that meets the target is faster than the chosen one beyond measurement noise
    assert not any(c["latency_ratio_ci"][1] * 1.05 < chosen["latency_ratio_ci"][0] for c in finals), finals


@pytest.mark.slow  # shares a ~30 s module export
def test_tflite_int8_has_quantized_io_recorded(digits: dict) -> None:
    a = digits["arts"][("tflite", "int8")]
    (inp,) = a["inputs"]
    assert inp["dtype"] == "int8" and inp["model_name"] == "image"
    assert inp["quantization"]["scale"][0] > 0 and isinstance(inp["quantization"]["zero_point"][0], int)
    # ONNX keeps float I/O (QuantizeLinear inside the graph)
    assert digits["arts"][("onnx", "int8")]["inputs"][0]["dtype"] == "float32"


@pytest.mark.slow  # shares a ~30 s module export
def test_tflite_static_ranges_use_global_minmax_when_it_measures_better(digits: dict) -> None:
    q = digits["arts"][("tflite", "int8")]["quantization"]
    by = {c["range_estimator"]: c["snr_db"] for c in q["candidates"] if c["kept_float"] == 0}
    assert set(by) == {"minmax", "moving-average"}
    assert q["range_estimator"] == max(by, key=by.get) or q["kept_float"]


@pytest.mark.slow  # shares a ~30 s module export
def test_coreml_int8_is_weight_only_and_says_so(digits: dict) -> None:
    a = digits["arts"][("coreml", "int8")]
    assert a["quantization"]["recipe"] == "weight-only"
    assert "activations stay float" in " ".join(a["notes"])
    assert a["quantization"]["size_ratio"] < 0.4


@pytest.mark.slow  # shares a ~30 s module export
def test_real_test_set_accuracy_for_every_artifact(digits: dict) -> None:
    model_acc = digits["result"].manifest["model"]["accuracy"]
    assert model_acc["samples"] == 450 and model_acc["top1_accuracy"] > 0.97
    for (fmt, prec), a in digits["arts"].items():
        acc = a["accuracy"]
        assert acc["samples"] == 450
        if acc.get("unverified"):
            assert fmt == "coreml"
            continue
        assert acc["top1_accuracy"] >= (0.9 if prec == "int4-weights" else 0.97), (fmt, prec, acc)
        if prec == "fp32":
            assert acc["top1_accuracy"] == model_acc["top1_accuracy"]


@pytest.mark.slow
def test_weight_only_recipes_run_without_calibration(tmp_path: Path) -> None:
    result = api.export("zoo:digits", tmp_path / "b", formats="onnx", precisions="int8-weights", isolate=False)
    (a,) = result.artifacts
    q = a["quantization"]
    assert a["status"] == "ok" and q["calibration"] is None and q["achieved"] is None and q["meets_target"] is None
    assert a["parity"]["status"] == "pass"


def test_int8_without_calibration_refuses_before_any_work(tmp_path: Path) -> None:
    from mobilize.errors import OptionError

    with pytest.raises(OptionError, match="needs real data: pass --calibration"):
        api.export("zoo:digits", tmp_path / "b", formats="onnx", precisions="fp32,int8")
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """int64 inputs (token ids + mask) and two outputs; calibration from file.py:fn."""
    d = tmp_path_factory.mktemp("text")
    (d / "cal.py").write_text(textwrap.dedent("""
        import torch
        def samples():
            g = torch.Generator().manual_seed(0)
            for i in range(12):
                n = 6 + i % 10
                ids = torch.randint(0, 1000, (1, 16), generator=g)
                mask = torch.zeros(1, 16, dtype=torch.int64)
                mask[:, :n] = 1
                yield ids, mask
    """))
    result = api.export("zoo:text_encoder", d / "b", formats="onnx,tflite", precisions="int8-weights,int8",
                        calibration=f"{d / 'cal.py'}:samples", isolate=False,
                        target=AccuracyTarget(min_snr_db=15, min_top1=0.5))
    return {a["format"] + " " + a["precision"]: a for a in result.artifacts}


@pytest.mark.slow  # shares a ~30 s module export
def test_int_inputs_and_multiple_outputs(text: dict) -> None:
    for key, a in text.items():
        assert a["status"] == "ok", (key, a["error"])
        q = a["quantization"]
        assert set(q["achieved"]["outputs"]) == {"last_hidden_state", "pooled"}, key
        assert q["achieved"]["snr_db"] > 10, (key, q["achieved"])
        ids = next(i for i in a["inputs"] if i["model_name"] == "input_ids")
        assert ids["dtype"] in ("int64", "int32")  # token ids are never quantized
    # the embedding table stays float in ONNX dynamic int8 (Gather is not a quantized op there)
    import onnx

    assert text["onnx int8-weights"]["parity"]["status"] == "pass"
    assert isinstance(np.zeros(1), np.ndarray) and onnx  # imports used


def test_cli_static_without_calibration_exits_2(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mobilize.cli import main

    r = CliRunner().invoke(main, ["export", "zoo:digits", "--formats", "onnx", "--precisions", "int8", "--out",
                                  str(tmp_path / "b")])
    assert r.exit_code == 2 and not (tmp_path / "b").exists()


def test_cli_bad_calibration_exits_2(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mobilize.cli import main

    np.savez(tmp_path / "c.npz", image=np.full((16, 1, 8, 8), 255.0, np.float32))
    r = CliRunner().invoke(main, ["export", "zoo:digits", "--formats", "onnx", "--precisions", "int8",
                                  "--calibration", str(tmp_path / "c.npz"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and not (tmp_path / "b").exists()
