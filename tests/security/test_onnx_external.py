"""ONNX external-data paths are refused before onnxruntime can follow them (``../``, absolute, symlink)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mobilize.errors import RuntimeFailure
from mobilize.runtime.onnx import OnnxRunner, refuse_external_data


def _model_with_external(location: str) -> bytes:
    w = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "64")):
        w.external_data.add(key=k, value=v)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "weights.bin", "link/secret"])
def test_external_data_is_refused(tmp_path: Path, location: str) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"\x00" * 64)
    (tmp_path / "link").symlink_to(tmp_path)
    path = tmp_path / "m.onnx"
    path.write_bytes(_model_with_external(location))
    with pytest.raises(RuntimeFailure, match="external file") as info, OnnxRunner(path):
        pass
    assert location in str(info.value) and "\n" not in str(info.value)


def test_self_contained_model_passes_the_check() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    refuse_external_data(helper.make_model(graph).SerializeToString(), "ok.onnx")  # no exception
    with pytest.raises(RuntimeFailure, match="not a readable ONNX model"):
        refuse_external_data(b"\x08\x07garbage" * 3, "bad.onnx")
