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


# --- every kind of tensor, not only dense initializers ----------------------------------------------------------


def _external(name: str, location: str = "secret.bin", dtype: type = np.float32) -> TensorProto:
    t = numpy_helper.from_array(np.ones(4, dtype=dtype), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        t.external_data.add(key=k, value=v)
    return t


def _io() -> tuple[list, list]:
    return ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])


def _sparse_values() -> bytes:
    sparse = helper.make_sparse_tensor(_external("v"), numpy_helper.from_array(np.arange(4, dtype=np.int64), "i"),
                                       [4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "v"], ["y"])], "g", *_io(), sparse_initializer=[sparse])
    return helper.make_model(graph).SerializeToString()


def _sparse_indices() -> bytes:
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.ones(4, np.float32), "v"),
                                       _external("i", dtype=np.int64), [4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "v"], ["y"])], "g", *_io(), sparse_initializer=[sparse])
    return helper.make_model(graph).SerializeToString()


def _constant_node() -> bytes:
    const = helper.make_node("Constant", [], ["c"], value=_external("c"))
    graph = helper.make_graph([const, helper.make_node("Add", ["x", "c"], ["y"])], "g", *_io())
    return helper.make_model(graph).SerializeToString()


def _sparse_attribute() -> bytes:
    sparse = helper.make_sparse_tensor(_external("v"), numpy_helper.from_array(np.arange(4, dtype=np.int64), "i"),
                                       [4])
    const = helper.make_node("Constant", [], ["c"], sparse_value=sparse)
    graph = helper.make_graph([const, helper.make_node("Add", ["x", "c"], ["y"])], "g", *_io())
    return helper.make_model(graph).SerializeToString()


def _subgraph() -> bytes:
    inner_out = helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])
    then = helper.make_graph([helper.make_node("Identity", ["w"], ["z"])], "then", [], [inner_out],
                             initializer=[_external("w")])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "else", [], [inner_out])
    cond = helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "cond"))
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)
    graph = helper.make_graph([cond, node], "g", *_io())
    return helper.make_model(graph).SerializeToString()


def _function_body() -> bytes:
    body = helper.make_node("Constant", [], ["c"], value=_external("c"))
    add = helper.make_node("Add", ["a", "c"], ["b"])
    fn = helper.make_function("local", "AddC", ["a"], ["b"], [body, add], [helper.make_opsetid("", 18)])
    graph = helper.make_graph([helper.make_node("AddC", ["x"], ["y"], domain="local")], "g", *_io())
    return helper.make_model(graph, functions=[fn], opset_imports=[helper.make_opsetid("", 18),
                                                                   helper.make_opsetid("local", 1)]).SerializeToString()


@pytest.mark.parametrize("build", [_sparse_values, _sparse_indices, _constant_node, _sparse_attribute, _subgraph,
                                   _function_body],
                         ids=["sparse-values", "sparse-indices", "constant-node", "sparse-attribute", "subgraph",
                              "function-body"])
def test_external_data_in_any_tensor_kind_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     build) -> None:  # noqa: ANN001
    """The external file sits in the current folder (where onnxruntime resolves it for a model given as bytes)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 64)
    path = tmp_path / "m.onnx"
    path.write_bytes(build())
    with pytest.raises(RuntimeFailure, match="external file 'secret.bin'"), OnnxRunner(path):
        pass
