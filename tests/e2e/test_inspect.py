"""Accelerator placement end to end (issue #16): a model whose ops fall off each accelerator path in a known place
(tests/fixtures/models/placement_models.py), exported to ONNX, ORT, TFLite and Core ML at fp32 and int8-weights
with ``--coreml-target iOS15``; every figure is checked against the runtimes' own tools run here by hand."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ._util import artifact, run_cli

pytestmark = pytest.mark.slow


def _placement(run, fmt: str, prec: str) -> dict:  # noqa: ANN001
    a = artifact(run.manifest, fmt, prec)
    assert a["status"] == "ok", a.get("error")
    return a["placement"]


def test_export_says_the_core_ml_file_needs_a_newer_ios_and_names_the_module(placement_run) -> None:  # noqa: ANN001
    run = placement_run.run
    assert run.returncode == 0, run.describe()
    out = " ".join(run.stdout.split())
    assert "coreml int8-weights: needs iOS16 but --coreml-target is iOS15: constexpr_affine_dequantize" in out
    dep = _placement(placement_run, "coreml", "int8-weights")["deployment"]
    assert dep["exceeds_requested"] and dep["declared"].startswith("iOS16") and dep["requested"] == "iOS15"
    [over] = dep["ops_newer_than_requested"]
    assert over["op"] == "constexpr_affine_dequantize" and over["available_from"] == "iOS16"
    assert any(m.startswith("dil ") for m in over["modules"]), over
    # the fp32 file stays within its target
    fp32 = _placement(placement_run, "coreml", "fp32")["deployment"]
    assert not fp32["exceeds_requested"] and fp32["needed"].startswith("iOS15")


def test_core_ml_neural_engine_estimate_names_the_documented_blockers(placement_run) -> None:  # noqa: ANN001
    ane = _placement(placement_run, "coreml", "fp32")["paths"]["ane"]
    kinds = {b["kind"]: b for b in ane["blockers"]}
    assert set(kinds) == {"float32", "gather", "dilated_conv"}
    assert kinds["dilated_conv"]["modules"] == ["dil (Conv2d)"]
    assert kinds["gather"]["modules"] == ["pick (Pick)"]
    assert all(b["source"].startswith("https://") for b in ane["blockers"])
    assert ane["mac_share"] == 0.0 and "static estimate" in ane["estimate"]


def _by_hand_onnx(path: Path, caplog: pytest.LogCaptureFixture) -> dict[str, tuple[int, list[str]]]:
    from onnxruntime.tools.mobile_helpers import usability_checker

    logger = logging.getLogger("by_hand_e2e")
    logger.setLevel(logging.INFO)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="by_hand_e2e"):
        usability_checker.analyze_model(path, skip_optimize=False, logger=logger)
    out, ep = {}, None
    names = {"NNAPI": "nnapi", "CoreML NeuralNetwork": "coreml-ep-neuralnetwork", "CoreML MLProgram": "coreml-ep"}
    for line in caplog.messages:
        m = re.match(r"Checking (.+)$", line)
        if m and m.group(1) in names:
            ep = names[m.group(1)]
            out[ep] = [None, []]
        m = re.match(r"(\d+) partitions with a total", line)
        if m and ep:
            out[ep][0] = int(m.group(1))
        m = re.match(r"\s*Unsupported ops: (.*)", line)
        if m and ep:
            out[ep][1] = sorted(m.group(1).split(","))
    return {k: (v[0], v[1]) for k, v in out.items()}


@pytest.mark.parametrize("prec", ["fp32", "int8-weights"])
def test_onnx_partitions_match_the_checker_and_name_the_modules(placement_run, caplog, prec: str) -> None:  # noqa: ANN001
    rec = _placement(placement_run, "onnx", prec)
    hand = _by_hand_onnx(placement_run.out / artifact(placement_run.manifest, "onnx", prec)["path"], caplog)
    assert {ep: (p["partitions"], p["unsupported_ops"]) for ep, p in rec["paths"].items()} == hand
    nnapi = {(u["op"], u["module"]) for u in rec["paths"]["nnapi"]["unsupported"]}
    assert ("ai.onnx:CumSum", "cum") in nnapi
    mlprogram = {(u["op"], u["module"]) for u in rec["paths"]["coreml-ep"]["unsupported"]}
    assert {("ai.onnx:CumSum", "cum"), ("ai.onnx:Gather", "pick")} <= mlprogram
    assert rec["mobile_runtime"]["full_package"]["runs"] is True


@pytest.mark.parametrize("prec", ["fp32", "int8-weights"])
def test_tflite_xnnpack_placement_is_what_litert_does(placement_run, prec: str) -> None:  # noqa: ANN001
    from ai_edge_litert.interpreter import Interpreter

    from mobilize.analysis import tflite_placement

    path = placement_run.out / artifact(placement_run.manifest, "tflite", prec)["path"]
    rec = _placement(placement_run, "tflite", prec)
    xnn = rec["paths"]["xnnpack"]
    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    delegates = [d for d in it._get_ops_details() if d["op_name"] == "DELEGATE"]  # noqa: SLF001
    assert xnn["status"] == "analyzed" and xnn["partitions"] == len(delegates) == 3
    assert {(u["op"], u["module"]) for u in xnn["unsupported"]} == {("CUMSUM", "cum (Accumulate)"),
                                                                    ("GATHER_ND", "pick (Pick)")}
    # the partition rule the GPU path uses reproduces the runtime's partitions from the same verdicts
    graph = tflite_placement.read_graph(path.read_bytes())
    refused = {u["index"] for u in xnn["unsupported"]}
    rounds = tflite_placement.partitions(graph["ops"], {o["index"] for o in graph["ops"]} - refused)
    assert sorted(len(n) for k, n in rounds if k) == sorted(xnn["partition_sizes"])
    gpu = rec["paths"]["gpu"]
    checks, why = tflite_placement.analyzer_checks_gpu()
    assert gpu["status"] == ("analyzed" if checks else "unverified")
    assert rec["paths"]["npu"]["status"] in ("analyzed", "not installed")
    for vendor in rec["paths"]["npu"]["vendors"].values():
        assert vendor["status"] != "not installed" or vendor["reason"].startswith("plugin not installed")


def test_ort_files_load_in_onnxruntime_and_pass_parity(placement_run) -> None:  # noqa: ANN001
    import onnxruntime as ort

    ref = np.load(placement_run.out / "reference.npz")
    for prec in ("fp32", "int8-weights"):
        a = artifact(placement_run.manifest, "ort", prec)
        assert a["parity"]["status"] == "pass" and a["parity"]["runtime"] == "onnxruntime", a["parity"]
        path = placement_run.out / a["path"]
        assert path.read_bytes()[4:8] == b"ORTM"
        [comp] = a["companions"]
        config = (placement_run.out / comp["path"]).read_text()
        assert re.search(r"^ai\.onnx;\d+;.*", config, re.M) and "# - " + path.name in config
        assert a["placement"]["reduced_build"]["count"] >= 3
        # loaded independently of mobilize, on the stored reference inputs
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = sess.run(None, {"x": ref["in0/x"]})
        want = ref["out0/output_0"]
        tol = 1e-4 if prec == "fp32" else 5e-2
        assert np.abs(out - want).max() <= tol * max(1.0, np.abs(want).max()), (prec, np.abs(out - want).max())
    assert artifact(placement_run.manifest, "ort", "int8-weights")["quantization"]["recipe"] == \
        artifact(placement_run.manifest, "onnx", "int8-weights")["quantization"]["recipe"]


def test_inspect_cli_reports_and_judges_the_target(placement_run, tmp_path: Path) -> None:  # noqa: ANN001
    bundle = placement_run.out
    run = run_cli(["inspect", str(bundle), "--json", str(tmp_path / "i.json"), "--ops"], tmp_path)
    assert run.returncode == 1, run.describe()
    out = " ".join(run.stdout.split())
    assert "needs iOS16 but --coreml-target is iOS15" in out and "dil (parameter dil.weight)" in out
    assert "nnapi: not supported — ai.onnx:CumSum in cum" in out
    assert "xnnpack: not supported — CUMSUM in cum (Accumulate); GATHER_ND in pick (Pick)" in out
    data = json.loads((tmp_path / "i.json").read_text())
    assert len(data["artifacts"]) == 8 and len(data["findings"]) == 1
    ok = run_cli(["inspect", str(bundle), "--coreml-target", "iOS16"], tmp_path)
    assert ok.returncode == 0, ok.describe()
    bad = run_cli(["inspect", str(bundle), "--coreml-target", "iOS9"], tmp_path)
    assert bad.returncode == 2 and "--coreml-target 'iOS9' is unknown" in bad.stderr


def test_a_changed_companion_file_fails_the_bundle(placement_run, tmp_path: Path) -> None:  # noqa: ANN001
    from mobilize import load_bundle
    from mobilize.errors import BundleError

    copy = tmp_path / "b"
    shutil.copytree(placement_run.out, copy)
    load_bundle(copy)
    comp = artifact(placement_run.manifest, "ort", "fp32")["companions"][0]["path"]
    (copy / comp).write_text("ai.onnx;20;Conv\n")
    with pytest.raises(BundleError, match="companion file"):
        load_bundle(copy)


def test_placement_budgets(placement_run) -> None:  # noqa: ANN001
    from mobilize.check.placement import checks

    def verdict(limits: dict, fmt: str, prec: str) -> tuple[str, str]:
        [c] = checks(limits, artifact(placement_run.manifest, fmt, prec), None)
        return c.status, c.message

    status, msg = verdict({"max_delegate_partitions": 1}, "onnx", "fp32")
    assert status == "fail" and "coreml-ep 2 partitions > 1" in msg and "nnapi 2 partitions > 1" in msg
    assert verdict({"max_delegate_partitions": 2}, "onnx", "fp32")[0] == "pass"
    status, msg = verdict({"max_delegate_partitions": 1}, "tflite", "fp32")  # the GPU analyzer cannot tell here
    assert status == ("skip" if "unverified" in msg else "fail")
    assert verdict({"max_delegate_partitions": 1, "accelerators": ["xnnpack"]}, "tflite", "fp32") == \
        ("fail", "xnnpack 3 partitions > 1")
    status, msg = verdict({"coreml_min_target": "iOS15"}, "coreml", "int8-weights")
    assert status == "fail" and "constexpr_affine_dequantize (iOS16) in dil" in msg
    assert verdict({"coreml_min_target": "iOS16"}, "coreml", "int8-weights")[0] == "pass"
    assert verdict({"coreml_min_target": "iOS15"}, "onnx", "fp32") == ("skip", "not a Core ML file")
    status, msg = verdict({"min_accelerated_mac_share": 0.5}, "coreml", "fp32")
    assert status == "fail" and "ane 0.0% of MACs < 50% (static estimate)" in msg
    assert verdict({"min_accelerated_mac_share": 0.5}, "onnx", "fp32")[0] == "pass"
    assert verdict({"max_delegate_partitions": 1}, "ort", "fp32")[0] == "skip"


def test_npu_compilation_runs_where_a_vendor_sdk_is_installed(placement_run) -> None:  # noqa: ANN001
    """Only where an ``ai-edge-litert-sdk-*`` package is installed (none is in mobilize's environment): the record
    lists every SoC the vendor's backend knows, each compiled or with the plugin's error and partition figures."""
    from ai_edge_litert.aot.vendors import import_vendor

    from mobilize.analysis import tflite_placement

    installed = [v for v, r in tflite_placement.npu_vendors().items() if r["status"] == "installed"]
    if not installed:
        pytest.skip("no NPU vendor SDK installed here (pip install ai-edge-litert-sdk-<vendor>)")
    npu = _placement(placement_run, "tflite", "fp32")["paths"]["npu"]
    for vendor in installed:
        rec = npu["vendors"][vendor]
        backend = import_vendor.import_vendor(vendor).create({"backend_id": vendor})
        assert set(rec["socs"]) == {b.target_id for b in backend.specialize()}, rec
        for soc in rec["socs"].values():
            assert soc["compiled"] or soc["error"]
            if soc.get("partitions") is not None:
                assert soc["subgraphs"][0]["ops"] == len(tflite_placement.read_graph(
                    (placement_run.out / artifact(placement_run.manifest, "tflite", "fp32")["path"]).read_bytes())
                    ["ops"])


def test_inspect_reuses_one_worker_per_format(placement_run, worker_starts: list[str]) -> None:  # noqa: ANN001
    """Each file is read in an isolated worker; the files of one format share one (a fresh interpreter per file cost
    ~4 s each for ExecuTorch files)."""
    from mobilize.analysis.bundle import inspect_bundle

    result = inspect_bundle(placement_run.out)
    formats = [a["format"] for a in result.artifacts]
    assert len(formats) == 8 and all("placement" in a and "error" not in a["placement"] for a in result.artifacts)
    assert sorted(worker_starts) == sorted(set(formats))
