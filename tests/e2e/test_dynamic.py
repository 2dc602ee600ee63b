"""``file.py:fn`` returning a ModelSpec with a dynamic sequence length (task 4)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ._util import FIXTURES, artifact

pytestmark = pytest.mark.slow

AXIS = 2


def _fixture_module():
    spec = importlib.util.spec_from_file_location("e2e_dynamic_conv", FIXTURES / "dynamic_conv.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dynamic_export_passes(dynamic_run) -> None:
    m = dynamic_run.manifest
    fixed = [a for a in m["artifacts"] if isinstance(a["inputs"][0]["shape"][AXIS], int)]
    # a file that fixes the dim asked dynamic is not fit to ship: exit 1, with the finding (litert-torch cannot
    # lower this dynamic 1-D conv; ONNX and Core ML keep it)
    assert dynamic_run.run.returncode == (1 if fixed else 0), dynamic_run.run.describe()
    assert [a["format"] for a in fixed] in ([], ["tflite"])
    for a in fixed:
        assert a["fitness"]["status"] == "unfit" and any(f["check"] == "dynamic" for f in a["fitness"]["findings"])
    assert m["capture"]["dynamic"] is True
    assert m["model"]["inputs"][0]["shape"][AXIS] == "time"
    assert all(a["status"] == "ok" for a in m["artifacts"]), [a["error"] for a in m["artifacts"]]
    sizes = {s["shapes"]["signal"][AXIS] for s in m["reference"]["input_sets"]}
    assert len(sizes) >= 2, "the reference input sets must include another sequence length"


def test_dynamic_onnx_declares_dim_and_verifies_two_sizes(dynamic_run) -> None:
    import onnx

    m = dynamic_run.manifest
    a = artifact(m, "onnx", "fp32")
    model = onnx.load(str(dynamic_run.out / a["path"]), load_external_data=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim[AXIS]
    assert dim.WhichOneof("value") == "dim_param" and dim.dim_param, dim
    assert not isinstance(a["inputs"][0]["shape"][AXIS], int)
    p = a["parity"]
    assert p["status"] == "pass", p.get("reason")
    used = {s["shapes"]["signal"][AXIS] for s in p["inputs_used"]}
    assert len(used) >= 2, p["inputs_used"]
    assert p["inputs_skipped"] == []


def test_dynamic_onnx_runs_a_third_length(dynamic_run) -> None:
    """Beyond mobilize's own check: run a length neither capture nor parity used, against the PyTorch module."""
    import onnxruntime as ort
    import torch

    a = artifact(dynamic_run.manifest, "onnx", "fp32")
    x = np.random.default_rng(7).normal(size=(1, 4, 57)).astype(np.float32)
    sess = ort.InferenceSession(str(dynamic_run.out / a["path"]), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    with torch.no_grad():
        want = _fixture_module().build_module()(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (1, 8, 57)
    assert float(np.max(np.abs(got - want))) <= 1e-4


def test_dynamic_tflite_declares_or_notes_fixed(dynamic_run) -> None:
    a = artifact(dynamic_run.manifest, "tflite", "fp32")
    dim = a["inputs"][0]["shape"][AXIS]
    p = a["parity"]
    assert p["status"] == "pass", p.get("reason")
    if isinstance(dim, int):
        assert dim == 24
        assert any("fixed" in n for n in a["notes"]), a["notes"]
        # the other-length input set cannot be fed to a static file: skipped, and said so
        assert {s["shapes"]["signal"][AXIS] for s in p["inputs_skipped"]} == {36}
    else:
        assert {s["shapes"]["signal"][AXIS] for s in p["inputs_used"]} >= {24, 36}


def test_dynamic_coreml_declares_range(dynamic_run) -> None:
    a = artifact(dynamic_run.manifest, "coreml", "fp32")
    assert a["inputs"][0]["shape"][AXIS] is None, a["inputs"]
