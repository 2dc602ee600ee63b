"""The ORT-format exporter's conversion step (mobilize.export.ort.convert), on ONNX files built with onnx.helper:
the .ort file loads in onnxruntime and computes what the ONNX file computes; the operator config sits beside it
with reproducible contents; float16 weights the converter turned into float32 are reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mobilize.export import ort as ort_export


def _conv(dtype: type) -> bytes:
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    w = np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype(dtype)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["y"], ["z"])], "g",
                              [helper.make_tensor_value_info("x", elem, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("z", elem, [1, 8, 8, 8])],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model.SerializeToString()


def test_convert_writes_a_loadable_ort_file_and_its_operator_config(tmp_path: Path) -> None:
    data = _conv(np.float32)
    dest = tmp_path / "m_fp32.ort"
    notes = ort_export.convert(data, dest)
    assert dest.read_bytes()[4:8] == b"ORTM" and not any("float16" in n for n in notes)
    config = ort_export.companion(dest)
    assert config.name == "m_fp32.required_operators.config"
    text = config.read_text()
    assert "# - m_fp32.ort\n" in text and str(tmp_path) not in text  # no machine paths: same bytes everywhere
    assert any("Conv" in line for line in text.splitlines() if not line.startswith("#"))
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    first = dest.read_bytes()
    ort_export.convert(data, dest)
    assert dest.read_bytes() == first  # deterministic


def test_float16_weights_cast_to_float32_are_reported(tmp_path: Path) -> None:
    dest = tmp_path / "m_fp16.ort"
    notes = ort_export.convert(_conv(np.float16), dest)
    from mobilize.analysis import ort as reader

    kept16 = sum(c.nbytes for c in reader.read(dest).constants if c.dtype == "float16")
    flagged = [n for n in notes if n.startswith("float16:")]
    # whether this host's onnxruntime has float16 Conv kernels decides; the note must follow the file's contents
    assert bool(flagged) == (kept16 < 8 * 3 * 3 * 3 * 2 // 2), (notes, kept16)
