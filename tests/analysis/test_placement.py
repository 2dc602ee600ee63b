"""Placement analysis (mobilize.analysis.placement and the per-format readers), on files built here with each
format's own tools. The ONNX figures are compared with what onnxruntime's mobile usability checker prints when run
by hand; the TFLite GPU analyzer is probed with its canary. The end-to-end runs on a converted model are in
tests/e2e/test_inspect.py."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mobilize.analysis import onnx_placement, tflite_placement
from mobilize.analysis.placement import module_of_name_scopes, module_of_tflite_tensor, place


@pytest.mark.parametrize("name, module", [
    ("__main__.M/torch.nn.modules.conv.Conv2d_conv;1", "conv (Conv2d)"),
    ("__main__.M;;__main__.M/__main__.Head_head/torch.nn.modules.linear.Linear_proj;", "head.proj (Linear)"),
    ("m.Net/torch.nn.modules.container.Sequential_features/torch.nn.modules.conv.Conv2d_0;2", "features.0 (Conv2d)"),
    ("__main__.M/__main__.Cum_my_cum;", "my_cum (Cum)"),
    ("arith.constant1", None), ("serving_default_args_0", None), ("__main__.M;2", None),
])
def test_module_of_tflite_tensor(name: str, module: str | None) -> None:
    assert module_of_tflite_tensor(name) == module


@pytest.mark.parametrize("value, module", [
    ("['', 'features', 'features.0', 'features.0.1', '_native_batch_norm_legit_no_training']", "features.0.1"),
    ("['', 'mean']", "(root)"), ("", None),
])
def test_module_of_name_scopes(value: str, module: str | None) -> None:
    assert module_of_name_scopes(value) == module


def _ops(edges: list[tuple[list[int], list[int]]]) -> list[dict]:
    return [{"index": i, "inputs": ins, "outputs": outs, "macs": 0, "op": f"op{i}", "module": None}
            for i, (ins, outs) in enumerate(edges)]


def test_partitions_follow_tflites_greedy_rule() -> None:
    # a chain 0 → 1 → 2 → 3 with node 2 refused: two delegate partitions around it
    chain = _ops([([0], [1]), ([1], [2]), ([2], [3]), ([3], [4])])
    assert tflite_placement.partitions(chain, {0, 1, 3}) == [(True, [0, 1]), (False, [2]), (True, [3])]
    # two branches from the input: a refused node on one branch does not split the other one (greedy: every ready
    # supported node joins the round before the refused one is scheduled)
    branches = _ops([([0], [1]), ([0], [2]), ([1], [3]), ([2, 3], [4])])
    assert tflite_placement.partitions(branches, {0, 2, 3}) == [(True, [0, 2]), (False, [1]), (True, [3])]
    assert tflite_placement.partitions(branches, {0, 1, 2, 3}) == [(True, [0, 1, 2, 3])]
    assert tflite_placement.partitions(branches, set()) == [(False, [0, 1, 2, 3])]


def test_analyzer_report_parser_reads_per_op_warnings() -> None:
    # the layout tensorflow/lite/python/analyzer_wrapper/model_analyzer.cc prints when its GPU check is active
    text = ("Your TFLite model has '1' subgraph(s). In the subgraph description below,\n"
            "Subgraph#0 main(T#0) -> [T#3]\n"
            "  Op#0 CONV_2D(T#0, T#1, T#2) -> [T#4]\n"
            "  Op#1 CUMSUM(T#4, T#5[1]) -> [T#6]\n"
            "GPU COMPATIBILITY WARNING: Not supported op CUMSUM\n"
            "  Op#2 MyCustom(T#6) -> [T#3]\n"
            "GPU COMPATIBILITY WARNING: Not supported custom op MyCustom\n"
            "\nGPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1, 2 with "
            "TFLite runtime version 2.16.1\n\nTensors of Subgraph#0\n")
    report = tflite_placement.parse_analyzer(text)
    assert [(o["index"], o["op"], o["warnings"]) for o in report["subgraphs"][0]] == [
        (0, "CONV_2D", []), (1, "CUMSUM", ["Not supported op CUMSUM"]),
        (2, "MyCustom", ["Not supported custom op MyCustom"])]
    assert report["runtime_version"] == "2.16.1" and not report["declared_compatible"]


def test_gpu_path_is_never_a_silent_pass(tmp_path: Path) -> None:
    """The canary is a well-formed model the analyzer reads (one custom op); the GPU path reports what the probe
    showed: per-op verdicts when the analyzer flags the canary, ``unverified`` with the reason when it does not."""
    canary = tflite_placement.canary_model()
    report = tflite_placement.parse_analyzer(tflite_placement.analyze_text(canary))
    assert [o["op"] for o in report["subgraphs"][0]] == ["MobilizeGpuCanary"]
    checks, why = tflite_placement.analyzer_checks_gpu()
    rec = tflite_placement.gpu(canary, tflite_placement.read_graph(canary))
    if checks:
        assert rec["status"] == "analyzed" and rec["unsupported_ops"] == {"custom:MobilizeGpuCanary": 1}
        assert rec["partitions"] == 0 and rec["mac_share"] is None
    else:
        assert rec["status"] == "unverified" and rec["reason"] == why and "probe" in why
        assert "partitions" not in rec and "mac_share" not in rec


# --- ONNX: the record must say what onnxruntime's checker says ------------------------------------------------------


def _onnx_model(path: Path, batch: int | str = 1) -> Path:
    """x → MatMul (enc) → CumSum (acc) → Gather (pick) → MatMul (dec): CumSum is on no EP list, Gather is not on
    the CoreML ML Program list."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(1, np.int64), "axis"),
             numpy_helper.from_array(np.arange(7, -1, -1, dtype=np.int64), "idx")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="enc_mm"),
             helper.make_node("CumSum", ["a", "axis"], ["b"], name="acc_cumsum"),
             helper.make_node("Gather", ["b", "idx"], ["c"], name="pick_gather", axis=1),
             helper.make_node("MatMul", ["c", "w2"], ["y"], name="dec_mm")]
    scopes = {"enc_mm": ["enc", "matmul"], "acc_cumsum": ["acc", "cumsum"], "pick_gather": ["pick", "index_select"],
              "dec_mm": ["dec", "matmul"]}
    for n in nodes:
        n.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(["", *scopes[n.name]]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    path.write_bytes(model.SerializeToString())
    return path


def _by_hand(path: Path, caplog: pytest.LogCaptureFixture) -> dict[str, dict]:
    """Run the checker as `python -m onnxruntime.tools.check_onnx_model_mobile_usability` does and read its log."""
    from onnxruntime.tools.mobile_helpers import usability_checker

    logger = logging.getLogger("by_hand")
    logger.setLevel(logging.INFO)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="by_hand"):
        usability_checker.analyze_model(path, skip_optimize=False, logger=logger)
    out: dict[str, dict] = {}
    ep = None
    for line in caplog.messages:
        m = re.match(r"Checking (NNAPI|CoreML NeuralNetwork|CoreML MLProgram)$", line)
        if m:
            ep = {"NNAPI": "nnapi", "CoreML NeuralNetwork": "coreml-ep-neuralnetwork",
                  "CoreML MLProgram": "coreml-ep"}[m.group(1)]
            out.setdefault(ep, {})
            continue
        if ep is None or "fixed" in out[ep]:
            continue
        if line.startswith("Checking if model will perform better if the dynamic shapes are fixed"):
            out[ep]["fixed"] = True
            continue
        m = re.match(r"(\d+) partitions with a total of (\d+)/(\d+) nodes", line)
        if m:
            out[ep].update(partitions=int(m.group(1)), supported=int(m.group(2)), nodes=int(m.group(3)))
        m = re.match(r"\s*Unsupported ops: (.*)", line)
        if m:
            out[ep]["unsupported_ops"] = sorted(m.group(1).split(","))
        m = re.match(r"Unsupported nodes due to input having a dynamic shape=(\d+)", line)
        if m:
            out[ep]["dynamic"] = int(m.group(1))
    return out


@pytest.mark.parametrize("batch", [1, "batch"])
def test_onnx_eps_match_the_usability_checker_run_by_hand(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         batch: int | str) -> None:
    path = _onnx_model(tmp_path / "m.onnx", batch)
    rec = place("onnx", path)
    hand = _by_hand(path, caplog)
    assert set(hand) == {"nnapi", "coreml-ep", "coreml-ep-neuralnetwork"}
    for ep, want in hand.items():
        got = rec["paths"][ep]
        assert (got["partitions"], got["supported_nodes"], got["nodes"]) == \
            (want["partitions"], want["supported"], want["nodes"]), ep
        assert got["unsupported_ops"] == want.get("unsupported_ops", []), ep
        assert got["nodes_unsupported"]["dynamic_shape"] == want.get("dynamic", 0), ep
    nnapi = rec["paths"]["nnapi"]
    if batch == 1:
        assert nnapi["unsupported_ops"] == ["ai.onnx:CumSum"] and nnapi["partitions"] == 2
        assert [(u["op"], u["module"]) for u in nnapi["unsupported"]] == [("ai.onnx:CumSum", "acc")]
        mlprogram = rec["paths"]["coreml-ep"]
        assert {(u["op"], u["module"]) for u in mlprogram["unsupported"]} == {("ai.onnx:CumSum", "acc"),
                                                                             ("ai.onnx:Gather", "pick")}
        # MACs: enc 8×8, dec 8×4 per row; NNAPI's partitions hold both MatMuls
        assert nnapi["macs"] == {"total": 96, "supported": 96} and nnapi["mac_share"] == 1.0
    else:
        assert rec["checked_graph"]["dynamic_inputs"] == ["x"]
        assert nnapi["nodes_unsupported"]["dynamic_shape"] > 0 and "if_fixed_shapes" in nnapi
        assert nnapi["if_fixed_shapes"]["partitions"] == 2
    mobile = rec["mobile_runtime"]
    assert mobile["full_package"]["runs"] is True
    assert mobile["ort_format"]["required_operators"]["count"] >= 3


def test_nodes_without_provenance_take_their_readers_module() -> None:
    nodes = [helper.make_node("DequantizeLinear", ["wq", "s"], ["w"], name="dq"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    nodes[1].metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'head', 'matmul']")
    graph = helper.make_graph(nodes, "g", [], [])
    assert onnx_placement.node_modules(graph) == {"mm": "head", "dq": "head"}


def test_reduced_build_config_parser() -> None:
    text = ("# Generated from model/s:\n# - /tmp/x/model.ort\nai.onnx;13;Gemm\nai.onnx;19;DequantizeLinear,Reshape\n"
            "com.microsoft;1;FusedConv\n")
    assert onnx_placement.parse_config(text) == {
        "operators": {"ai.onnx;13": ["Gemm"], "ai.onnx;19": ["DequantizeLinear", "Reshape"],
                      "com.microsoft;1": ["FusedConv"]}, "count": 4}
