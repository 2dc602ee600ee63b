"""CoreMLReferenceRunner and its integration into verification: pass/fail with runtime "reference" and the
interpreter's note on every record, ``unverified`` listing every missing op, and activation statistics."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

from mobilize.errors import FeedError
from mobilize.runtime.coreml import CoreMLRunner
from mobilize.runtime.coreml_ref import (
    REFERENCE_NOTE,
    CoreMLReferenceRunner,
    UnsupportedOpsError,
    collect_activation_stats,
)
from mobilize.verify.inputs import InputSet
from mobilize.verify.parity import Reference, verify_file
from mobilize.verify.tolerance import for_artifact

from .conftest import save_program

linux_only = pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the native Core ML runner is used")
W = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x (2, 4) → relu(x·Wᵀ) named y."""
    def build(x):  # noqa: ANN001, ANN202
        return mb.relu(x=mb.linear(x=x, weight=W), name="y")

    return save_program(build, [np.zeros((2, 4), np.float32)], tmp_path_factory.mktemp("tiny") / "t.mlpackage")


@pytest.fixture(scope="module")
def unsupported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def build(x):  # noqa: ANN001, ANN202
        y = mb.space_to_depth(x=x, block_size=2)
        y = mb.depth_to_space(x=y, block_size=2)
        return mb.relu(x=y, name="y")

    return save_program(build, [np.zeros((1, 1, 2, 2), np.float32)],
                        tmp_path_factory.mktemp("unsup") / "u.mlpackage")


def _reference(x: np.ndarray, y: np.ndarray) -> Reference:
    return Reference([InputSet("example", {"x": x})], [{"y": y}], ["y"])


def test_runner_reads_io_from_the_model_description(tiny: Path) -> None:
    with CoreMLReferenceRunner(tiny) as r:
        assert [(t.name, t.shape, t.dtype) for t in r.inputs] == [("x", (2, 4), "float32")]
        assert [t.name for t in r.outputs] == ["y"]
        x = np.arange(8, dtype=np.float32).reshape(2, 4) - 4
        np.testing.assert_allclose(r.infer({"x": x})["y"], np.maximum(x @ W.T, 0), rtol=1e-6, atol=1e-6)
        with pytest.raises(FeedError, match="dtype float64"):
            r.infer({"x": x.astype(np.float64)})


def test_unsupported_ops_are_all_listed_at_load(unsupported: Path) -> None:
    with pytest.raises(UnsupportedOpsError) as ei, CoreMLReferenceRunner(unsupported):
        pass
    assert ei.value.ops == ["depth_to_space", "space_to_depth"]
    assert "space_to_depth" in str(ei.value) and "depth_to_space" in str(ei.value)


@linux_only
def test_verify_uses_the_reference_interpreter_when_core_ml_is_missing(tiny: Path) -> None:
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    rec = verify_file(CoreMLRunner, tiny, "coreml", "fp32", _reference(x, np.maximum(x @ W.T, 0)), ["x"])
    assert rec.status == "pass", rec.failures
    assert rec.runtime == "reference"
    assert rec.warnings == [REFERENCE_NOTE]
    assert rec.tolerance == for_artifact("coreml", "fp32")


@linux_only
def test_a_wrong_reference_fails(tiny: Path) -> None:
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    rec = verify_file(CoreMLRunner, tiny, "coreml", "fp32", _reference(x, np.maximum(x @ W.T, 0) + 0.01), ["x"])
    assert rec.status == "fail" and rec.runtime == "reference" and REFERENCE_NOTE in rec.warnings
    assert any(f.startswith("y:") for f in rec.failures)


@linux_only
def test_unsupported_ops_make_parity_unverified_never_pass(unsupported: Path) -> None:
    x = np.zeros((1, 1, 2, 2), np.float32)
    rec = verify_file(CoreMLRunner, unsupported, "coreml", "fp32", _reference(x, np.zeros((1, 4, 2, 2))), ["x"])
    assert rec.status == "unverified"
    assert rec.runtime == "reference"
    assert "space_to_depth" in rec.reason and "depth_to_space" in rec.reason
    assert REFERENCE_NOTE in rec.warnings


def test_a_missing_fallback_keeps_the_macos_message(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CoreMLRunner, "available", classmethod(lambda cls: (False, "Core ML needs macOS")))
    monkeypatch.setattr(CoreMLReferenceRunner, "available", classmethod(lambda cls: (False, "no protobuf")))
    x = np.zeros((2, 4), np.float32)
    rec = verify_file(CoreMLRunner, tiny, "coreml", "fp32", _reference(x, x[:, :3]), ["x"])
    assert rec.status == "unverified" and rec.runtime is None and rec.reason == "Core ML needs macOS"


def test_collect_activation_stats(tiny: Path) -> None:
    rng = np.random.default_rng(5)
    samples = [{"x": rng.standard_normal((2, 4)).astype(np.float32)} for _ in range(3)]
    stats = collect_activation_stats(tiny, samples)
    xs = np.stack([s["x"] for s in samples])
    lin = xs @ W.T
    assert stats["x"] == pytest.approx((xs.min(), xs.max()))
    assert stats["y"] == pytest.approx((max(lin.min(), 0.0), lin.max()), rel=1e-6)
    (pre,) = [k for k in stats if k not in ("x", "y")]
    assert stats[pre] == pytest.approx((lin.min(), lin.max()), rel=1e-6)
    with pytest.raises(ValueError, match="at least one sample"):
        collect_activation_stats(tiny, [])
