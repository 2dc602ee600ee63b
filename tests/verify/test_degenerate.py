"""No pass on a degenerate reference (issue #11): an output PyTorch leaves all-zero or constant on every verification
input proves nothing, so that output — and the file — is ``unverified`` with the reason, never ``pass``.

Real files (built with onnx.helper) run in onnxruntime against a real PyTorch reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from mobilize.runtime.onnx import OnnxRunner
from mobilize.spec import ModelSpec
from mobilize.verify.inputs import make_input_sets
from mobilize.verify.parity import compute_reference, verify_file


class ZeroAndShift(torch.nn.Module):
    """``dead`` is x·0 (all zeros, like a ReLU branch that random weights never open); ``live`` is x + 1."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 0.0, x + 1.0


def _file(tmp_path: Path, dead_scale: float) -> Path:
    nodes = [helper.make_node("Mul", ["x", "k"], ["dead"]), helper.make_node("Add", ["x", "one"], ["live"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("dead", TensorProto.FLOAT, [2, 5]),
         helper.make_tensor_value_info("live", TensorProto.FLOAT, [2, 5])],
        initializer=[numpy_helper.from_array(np.array(dead_scale, np.float32), "k"),
                     numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    path = tmp_path / f"m{dead_scale}.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString())
    return path


def _reference() -> object:
    spec = ModelSpec(ZeroAndShift(), (torch.randn(2, 5),), input_names=["x"], output_names=["dead", "live"])
    return compute_reference(spec, make_input_sets(spec))


def test_an_all_zero_reference_output_is_unverified_not_pass(tmp_path: Path) -> None:
    rec = verify_file(OnnxRunner, _file(tmp_path, 0.0), "onnx", "fp32", _reference(), ["x"])
    assert rec.status == "unverified"
    assert rec.reason.startswith("dead: the PyTorch reference is all zeros for every verification input")
    d = rec.to_dict()
    assert d["outputs"]["dead"]["cosine"] is None and d["outputs"]["dead"]["snr_db"] is None
    assert d["outputs"]["live"]["snr_db"] == 200.0  # the live output is judged as usual
    assert d["unjudged_outputs"] == [rec.reason]


def test_a_file_that_differs_from_a_zero_reference_still_fails(tmp_path: Path) -> None:
    """Degenerate is no excuse: non-zero values where PyTorch has zeros are a real mismatch."""
    rec = verify_file(OnnxRunner, _file(tmp_path, 0.5), "onnx", "fp32", _reference(), ["x"])
    assert rec.status == "fail" and rec.reason.startswith("dead: ")
    assert "outside atol" in rec.reason


def test_a_constant_reference_output_is_unverified(tmp_path: Path) -> None:
    class Constant(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.zeros_like(x) + 3.0, x + 1.0

    nodes = [helper.make_node("Mul", ["x", "k"], ["z"]), helper.make_node("Add", ["z", "three"], ["dead"]),
             helper.make_node("Add", ["x", "one"], ["live"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("dead", TensorProto.FLOAT, [2, 5]),
         helper.make_tensor_value_info("live", TensorProto.FLOAT, [2, 5])],
        initializer=[numpy_helper.from_array(np.array(0.0, np.float32), "k"),
                     numpy_helper.from_array(np.array(3.0, np.float32), "three"),
                     numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    path = tmp_path / "c.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString())
    spec = ModelSpec(Constant(), (torch.randn(2, 5),), input_names=["x"], output_names=["dead", "live"])
    rec = verify_file(OnnxRunner, path, "onnx", "fp32", compute_reference(spec, make_input_sets(spec)), ["x"])
    assert rec.status == "unverified" and "is the constant 3 for every verification input" in rec.reason
