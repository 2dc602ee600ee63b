"""Fit to ship, not just equal (issue #11), end to end with the real converters and runtimes.

Each case reproduces one class of problem with a small model (tests/fixtures/models/fitness_models.py): a weight the
TFLite converter stores twice, an int8 file below its accuracy target, a task metric driving the int8 search, a
dead output, converter side files inside a package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ._util import FIXTURES, run_cli

pytestmark = pytest.mark.slow
MODELS = FIXTURES / "fitness_models.py"


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _art(manifest: dict, fmt: str, prec: str) -> dict:
    return next(a for a in manifest["artifacts"] if a["format"] == fmt and a["precision"] == prec)


def test_a_weight_stored_twice_makes_the_tflite_file_unfit(tmp_path: Path) -> None:
    # the converter as is (--no-repair): litert-torch decomposes PReLU and stores the next Linear weight twice
    run = run_cli(["export", f"{MODELS}:prelu_head", "--formats", "onnx,tflite", "--precisions", "fp32",
                   "--out", "b", "--no-repair"], tmp_path)
    assert run.returncode == 1, run.describe()
    m = _manifest(tmp_path / "b")
    onnx, tfl = _art(m, "onnx", "fp32"), _art(m, "tflite", "fp32")
    assert onnx["parity"]["status"] == tfl["parity"]["status"] == "pass"  # equal, but not fit to ship
    assert onnx["fitness"]["status"] == "fit"
    assert tfl["fitness"]["status"] == "unfit"
    checks = {f["check"]: f for f in tfl["fitness"]["findings"]}
    assert {"size.floor", "size.siblings"} <= set(checks)
    reasons = " ".join(checks["size.floor"]["reasons"])
    assert "duplicated constants" in reasons and "negated" in reasons and "decomposed activation: PReLU" in reasons
    [dup] = tfl["analysis"]["duplicates"]
    assert dup["bytes_each"] == 256 * 160 * 4
    assert "tflite fp32 unfit" in run.stdout and "duplicated constants" in run.stdout
    assert m["summary"]["fitness"] == {"fit": 1, "unfit": 1, "below_target": 0}
    # verify re-judges the files, and --allow-unfit reports without failing
    again = run_cli(["verify", "b"], tmp_path)
    assert again.returncode == 1 and "tflite fp32 unfit" in again.stdout, again.describe()
    allowed = run_cli(["verify", "b", "--allow-unfit"], tmp_path)
    assert allowed.returncode == 0 and "tflite fp32 unfit" in allowed.stdout, allowed.describe()
    # by default the always-on TFLite repair (prelu-maximum) removes the cause: one copy, a fit file
    fixed = run_cli(["export", f"{MODELS}:prelu_head", "--formats", "tflite", "--precisions", "fp32", "--out", "c"],
                    tmp_path)
    assert fixed.returncode == 0, fixed.describe()
    art = _art(_manifest(tmp_path / "c"), "tflite", "fp32")
    assert art["fitness"]["status"] == "fit" and not art["analysis"]["duplicates"]
    assert [r["name"] for r in art["repairs"] if r["status"] == "applied"] == ["prelu-maximum"]
    assert art["bytes"] < 0.6 * tfl["bytes"]


def test_an_int8_file_below_its_target_exits_1(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(FIXTURES))
    try:
        from fitness_models import small_cnn_calibration
    finally:
        sys.path.remove(str(FIXTURES))
    np.savez(tmp_path / "calib.npz", **small_cnn_calibration())
    args = ["export", f"{MODELS}:small_cnn", "--formats", "onnx", "--precisions", "fp32,int8", "--calibration",
            "calib.npz", "--min-snr", "90", "--out", "b"]
    run = run_cli(args, tmp_path)
    assert run.returncode == 1, run.describe()
    art = _art(_manifest(tmp_path / "b"), "onnx", "int8")
    assert art["parity"]["status"] == "pass" and art["quantization"]["meets_target"] is False
    assert art["fitness"]["status"] == "below_target"
    assert art["fitness"]["findings"][0]["message"].startswith("below the accuracy target: held-out SNR")
    assert "onnx int8 below target" in run.stdout and "below target" in run.stdout
    allowed = run_cli(["verify", "b", "--allow-below-target"], tmp_path)
    assert allowed.returncode == 0, allowed.describe()


METRIC = '''
import numpy as np

def closeness(outputs, batch):
    """Higher is better: minus the largest logit error against the reference logits stored beside the inputs."""
    return -float(np.abs(outputs["logits"] - batch["reference"].reshape(outputs["logits"].shape)).max())
'''


def test_a_task_metric_drives_the_int8_search(tmp_path: Path) -> None:
    """With the SNR target off, only the task metric can ask for layers to be kept float; the record carries the
    metric for PyTorch and every candidate, and the chosen file meets the metric target."""
    import sys

    import torch

    sys.path.insert(0, str(FIXTURES))
    try:
        from fitness_models import small_cnn, small_cnn_calibration
    finally:
        sys.path.remove(str(FIXTURES))
    spec = small_cnn()
    data = small_cnn_calibration(32)
    with torch.no_grad():
        ref = np.stack([spec.module(torch.from_numpy(x)).numpy() for x in data["image"]])
    np.savez(tmp_path / "calib.npz", image=data["image"], reference=ref)
    (tmp_path / "metric.py").write_text(METRIC)
    base = ["export", f"{MODELS}:small_cnn", "--formats", "onnx", "--precisions", "int8", "--calibration",
            "calib.npz", "--min-snr", "0", "--min-top1", "0.01", "--max-size-ratio", "1", "--metric",
            "metric.py:closeness"]
    first = run_cli([*base, "--out", "b0"], tmp_path)
    assert first.returncode == 0, first.describe()
    q0 = _art(_manifest(tmp_path / "b0"), "onnx", "int8")["quantization"]
    m0 = q0["achieved"]["metric"]
    assert m0["pytorch"] == 0.0 and m0["value"] < 0 and m0["min"] is None
    assert all(c["metric"] is not None for c in q0["candidates"])
    assert _manifest(tmp_path / "b0")["model"]["metric"]["pytorch"] == 0.0
    # ask for a third of that error: only keeping layers in float gets there
    run = run_cli([*base, "--min-metric", str(m0["value"] / 3), "--out", "b1"], tmp_path)
    m = _manifest(tmp_path / "b1")
    q = _art(m, "onnx", "int8")["quantization"]
    assert q["sensitivity"] is not None and any(p["metric_gain"] > 0 for p in q["sensitivity"]["probes"])
    assert q["kept_float"], q
    if q["meets_target"]:
        assert run.returncode == 0 and q["achieved"]["metric"]["value"] >= m0["value"] / 3
    else:  # honest either way: below_target, exit 1
        assert run.returncode == 1 and _art(m, "onnx", "int8")["fitness"]["status"] == "below_target"


def test_sequence_outputs_are_judged_along_their_class_axis(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", tokens=rng.normal(size=(16, 1, 10, 12)).astype(np.float32))
    run = run_cli(["export", f"{MODELS}:sequence_tagger", "--formats", "onnx", "--precisions", "int8-weights",
                   "--calibration", "calib.npz", "--class-axis", "tags=-1", "--out", "b"], tmp_path)
    art = _art(_manifest(tmp_path / "b"), "onnx", "int8-weights")
    ach = art["quantization"]["achieved"]
    assert ach["outputs"]["tags"]["top1_agreement"] is not None  # (N, T, C): per-step agreement along C
    assert 0.9 <= ach["top1_agreement"] <= 1.0, run.describe()
    bad = run_cli(["export", f"{MODELS}:sequence_tagger", "--formats", "onnx", "--precisions", "int8-weights",
                   "--calibration", "calib.npz", "--class-axis", "tagz=-1", "--out", "c"], tmp_path)
    assert bad.returncode == 2 and "--class-axis names output 'tagz'" in bad.stderr, bad.describe()
    assert not (tmp_path / "c").exists()


def test_a_dead_output_is_unverified_not_pass(tmp_path: Path) -> None:
    run = run_cli(["export", f"{MODELS}:dead_output", "--formats", "onnx,tflite", "--precisions", "fp32",
                   "--out", "b"], tmp_path)
    assert run.returncode == 0, run.describe()  # unverified is not a failure unless --strict
    for art in _manifest(tmp_path / "b")["artifacts"]:
        p = art["parity"]
        assert p["status"] == "unverified", art
        assert p["reason"].startswith("dead: the PyTorch reference is all zeros for every verification input")
        assert p["outputs"]["dead"]["cosine"] is None and p["outputs"]["y"]["snr_db"] > 100
    assert "unverified" in run.stdout
    strict = run_cli(["verify", "b", "--strict"], tmp_path)
    assert strict.returncode == 1, strict.describe()


def test_packages_hold_only_what_their_manifest_lists(tmp_path: Path) -> None:
    run = run_cli(["export", f"{MODELS}:dead_output", "--formats", "coreml", "--precisions", "fp32,int8-weights",
                   "--out", "b"], tmp_path)
    assert run.returncode == 0, run.describe()
    bundle = tmp_path / "b"
    m = _manifest(bundle)
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        ["manifest.json", "reference.npz", *(a["path"] for a in m["artifacts"])])
    for art in m["artifacts"]:
        pkg = bundle / art["path"]
        listed = {Path("Data") / e["path"] for e in json.loads((pkg / "Manifest.json").read_text())[
            "itemInfoEntries"].values()}
        for f in (p for p in pkg.rglob("*") if p.is_file()):
            rel = f.relative_to(pkg)
            assert rel == Path("Manifest.json") or any(rel == item or item in rel.parents for item in listed), rel
    fp32 = next(a for a in m["artifacts"] if a["precision"] == "fp32")
    assert any("executorch_debug_handle_mapping.json" in n and n.startswith("removed ") for n in fp32["notes"])


@pytest.mark.slow
def test_latency_is_measured_when_the_bundle_path_is_relative(digits_run) -> None:  # noqa: ANN001
    """The pool's exports use ``--out <name>`` relative to their folder; the timing worker starts in a folder of its
    own, so the files it times must reach it as absolute paths (they once did not, and every timing came back
    'could not run')."""
    assert not Path(digits_run.run.args[digits_run.run.args.index("--out") + 1]).is_absolute()
    timed = {(a["format"], a["precision"]): a["fitness"]["latency"] for a in digits_run.manifest["artifacts"]
             if a["format"] in ("onnx", "tflite")}
    assert len(timed) == 4
    for key, latency in timed.items():
        assert latency.get("median_ms", 0) > 0, (key, latency)
