"""Reproducible bundles that carry their metadata (issue #14): the same source and flags give the same bytes in
fresh processes, and every file holds the model's names, labels and normalisation itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ._util import FIXTURES, run_cli

pytestmark = pytest.mark.slow
MODELS = FIXTURES / "fitness_models.py"
#: manifest keys that hold timings (they may differ between two runs; nothing else may)
TIMING_KEYS = {"created", "export_seconds", "latency", "seconds", "latency_ratio", "latency_ms", "vs_fp32",
               "vs_fastest_sibling", "median_ms"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("repro")
    for out in ("a", "b"):
        run = run_cli(["export", f"{MODELS}:labelled_classifier", "--precisions", "fp32,int8-weights",
                       "--out", out], root)
        assert run.returncode == 0, run.describe()
    return root / "a", root / "b"


def test_two_exports_in_fresh_processes_give_the_same_bytes(two_exports: tuple[Path, Path]) -> None:
    a, b = (json.loads((p / "manifest.json").read_text()) for p in two_exports)
    assert len(a["artifacts"]) == 6
    for x, y in zip(a["artifacts"], b["artifacts"], strict=True):
        assert x["sha256"] == y["sha256"], (x["format"], x["precision"])
    assert _strip(a) == _strip(b)  # the manifests differ only in timings


def test_every_file_carries_labels_normalisation_and_names(two_exports: tuple[Path, Path]) -> None:
    import coremltools as ct
    import onnx
    from ai_edge_litert import schema_py_generated as S

    bundle = two_exports[0]
    labels = [f"class_{i}" for i in range(10)]
    props = {p.key: p.value for p in onnx.load(str(bundle / "labelled_fp32.onnx")).metadata_props}
    assert json.loads(props["labels"]) == labels
    assert json.loads(props["normalization"])["mean"] == [0.485, 0.456, 0.406]
    assert props["input_layout"] == "NCHW" and props["mobilize.model"] == "labelled"
    assert props["mobilize.source"] == "fitness_models.py:labelled_classifier"  # no local folder in the bytes
    meta = ct.models.MLModel(str(bundle / "labelled_fp32.mlpackage"), skip_model_load=True).user_defined_metadata
    assert json.loads(meta["labels"]) == labels and "com.github.apple.coremltools.conversion_date" not in meta
    for prec in ("fp32", "int8-weights"):
        model = S.ModelT.InitFromPackedBuf((bundle / f"labelled_{prec}.tflite").read_bytes(), 0)
        entry = next(m for m in model.metadata if m.name in (b"mobilize", "mobilize"))
        data = json.loads(bytes(model.buffers[entry.buffer].data))
        assert data["labels"] == labels and data["mobilize.precision"] == prec
        [sig] = model.signatureDefs
        assert [m.name for m in sig.inputs] in ([b"image"], ["image"])
        assert [m.name for m in sig.outputs] in ([b"logits"], ["logits"])
