"""The static file analysis (mobilize.analysis): op histograms and the constants that make files too big.

Files are built directly with each format's own tools (onnx.helper; coremltools' MIL builder), so every case is
known exactly; the TFLite reader runs on a real litert-torch export in tests/e2e/test_fitness.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mobilize.analysis import analyze
from mobilize.errors import RuntimeFailure


def _onnx(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 32)).astype(np.float32)
    tiled = np.repeat(rng.normal(size=(1, 32, 32)).astype(np.float32), 16, axis=0)  # one slice, 16 times
    lstm_w = rng.normal(size=(1, 128, 8)).astype(np.float32)
    lstm_r = rng.normal(size=(1, 128, 32)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(-w, "w_neg"),
             numpy_helper.from_array(np.ascontiguousarray(w.T), "w_t"), numpy_helper.from_array(tiled, "tiled"),
             numpy_helper.from_array(lstm_w, "lstm_w"), numpy_helper.from_array(lstm_r, "lstm_r"),
             numpy_helper.from_array(np.zeros(64, np.float32), "zeros")]
    nodes = [
        helper.make_node("MatMul", ["x", "w_t"], ["a"]),  # (1, 64) @ (64, 32)... shapes only need to be valid ONNX
        helper.make_node("MatMul", ["x", "w_t"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(w, "c")),
        helper.make_node("LSTM", ["seq", "lstm_w", "lstm_r"], ["h"], hidden_size=32),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]),
         helper.make_tensor_value_info("seq", TensorProto.FLOAT, [5, 1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, None)],
        initializer=inits)
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString())
    return path


def test_onnx_ops_constants_duplicates_and_repeats(tmp_path: Path) -> None:
    rec = analyze("onnx", _onnx(tmp_path))
    assert rec["ops"] == {"MatMul": 2, "Add": 1, "LSTM": 1}  # Constant holds a value; it is not an op
    assert rec["op_count"] == 4 and rec["kinds"] == {"recurrent": 1, "prelu": 0}
    assert rec["constants"]["count"] == 8
    [group] = rec["duplicates"]
    assert sorted(group["tensors"]) == ["c", "w", "w_neg", "w_t"]
    assert group["relation"] == "identical, negated, reordered (e.g. transposed)"
    assert group["extra_bytes"] == 3 * 64 * 32 * 4
    [rep] = rec["repeated_constants"]
    assert (rep["tensor"], rep["axis"], rep["repeats"]) == ("tiled", 0, 16)
    assert rep["extra_bytes"] == 16 * 32 * 32 * 4 * 15 // 16
    fw = rec["float_weight_bytes"]
    assert fw["LSTM"] == (128 * 8 + 128 * 32) * 4 and fw["MatMul"] == 64 * 32 * 4
    assert "zeros" not in str(rec["duplicates"])  # a constant fill is nobody's copy


def test_a_file_that_is_not_onnx_is_a_runtime_failure(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(RuntimeFailure, match="not a readable ONNX"):
        analyze("onnx", bad)


def test_onnx_with_external_data_is_refused(tmp_path: Path) -> None:
    path = _onnx(tmp_path)
    model = onnx.load(str(path))
    t = model.graph.initializer[0]
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../../etc/passwd")
    t.ClearField("raw_data")
    path.write_bytes(model.SerializeToString())
    with pytest.raises(RuntimeFailure, match="external file"):
        analyze("onnx", path)


def test_a_file_that_is_not_tflite_is_a_runtime_failure(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(RuntimeFailure, match="not a readable TFLite file"):
        analyze("tflite", bad)


def test_coreml_ops_and_duplicated_weights(tmp_path: Path) -> None:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(1)
    w = rng.normal(size=(48, 40)).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 40))], opset_version=ct.target.iOS16)
    def prog(x):  # noqa: ANN001, ANN202 - the MIL builder's style
        a = mb.linear(x=x, weight=w, name="fc")
        b = mb.linear(x=x, weight=-w, name="fc_neg")
        return mb.add(x=a, y=b, name="y")

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                       compute_precision=ct.precision.FLOAT32)
    path = tmp_path / "m.mlpackage"
    model.save(str(path))
    rec = analyze("coreml", path)
    assert rec["ops"] == {"linear": 2, "add": 1}
    [group] = rec["duplicates"]
    assert group["relation"] == "negated" and group["extra_bytes"] == 48 * 40 * 4
    assert rec["float_weight_bytes"] == {"linear": 2 * 48 * 40 * 4}
