"""The ``classify`` op a Core ML ClassifierConfig appends, and how the runners read classifier outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mobilize.runtime.coreml_ref.ops.classifier import classify


def test_classify_returns_the_top_label_and_scores_in_label_order() -> None:
    label, scores = classify(np.array([[0.1, 0.7, 0.2]], np.float32), ["cat", "dog", "owl"])
    assert label == "dog" and list(scores) == ["cat", "dog", "owl"]
    assert scores["dog"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="3 classes for 2 scores"):
        classify(np.array([0.5, 0.5]), ["a", "b", "c"])


def test_a_converted_classifier_runs_and_reads_back_as_a_vector(tmp_path: Path) -> None:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    from mobilize.runtime.coreml_ref import CoreMLReferenceRunner
    from mobilize.verify.parity import io_map

    w = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))], opset_version=ct.target.iOS16)
    def prog(x):  # noqa: ANN001, ANN202 - the MIL builder's style
        return mb.softmax(x=mb.linear(x=x, weight=w), axis=-1, name="probs")

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                       compute_precision=ct.precision.FLOAT32,
                       classifier_config=ct.ClassifierConfig(["cat", "dog", "owl"]))
    path = tmp_path / "c.mlpackage"
    model.save(str(path))
    x = np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32)
    with CoreMLReferenceRunner(path) as r:
        kinds = {o.name: o.dtype for o in r.outputs}
        assert kinds["classLabel"] == "string"
        scores = next(o for o in r.outputs if o.dtype != "string")
        assert io_map(["probs"], r.outputs) == {"probs": scores.name}  # the label output has no PyTorch twin
        out = r.infer({"x": x})
    logits = x @ w.T
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(out[scores.name].reshape(1, 3), want, rtol=1e-5)
    assert str(out["classLabel"]) == ["cat", "dog", "owl"][int(want.argmax())]
