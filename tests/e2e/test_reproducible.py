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
#: manifest keys that hold timings or what is read off them (they may differ between two runs; nothing else may)
TIMING_KEYS = {"created", "export_seconds", "latency", "seconds", "latency_ratio", "latency_ms", "vs_fp32",
               "vs_fastest_sibling", "median_ms", "slower_than_fp32", "latency_ratio_ci", "spent_s",
               "verify_seconds"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _strip(v) for k, v in value.items() if k not in TIMING_KEYS}
        if "findings" in out:  # latency findings come from timings; the status follows from the findings
            out["findings"] = [f for f in out["findings"] if not f["check"].startswith("latency")]
            out.pop("status", None)
        if "fitness" in out and set(out) >= {"exported", "parity"}:  # the summary's counts of those statuses
            out.pop("fitness")
        return out
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


def test_a_batch_one_example_gives_files_that_run_at_batch_1_and_4(tmp_path: Path) -> None:
    import onnx

    run = run_cli(["export", f"{MODELS}:batch_one_classifier", "--precisions", "fp32", "--out", "b"], tmp_path)
    assert run.returncode == 0, run.describe()
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["capture"]["dims"]["batch"]["dynamic"] is True and m["capture"]["dims"]["batch"]["min"] == 1
    assert m["model"]["inputs"][0]["shape"] == ["batch", 3, 32, 32]
    for art in m["artifacts"]:
        assert art["fitness"]["status"] == "fit", art["fitness"]
        assert art["inputs"][0]["shape"][0] in ("batch", None), art  # the file's own declaration
        used = sorted(s["shapes"]["image"][0] for s in art["parity"]["inputs_used"])
        assert art["parity"]["status"] == "pass" and used[0] == 1 and used[-1] == 4, art["parity"]
    model = onnx.load(str(tmp_path / "b" / "small_cnn_fp32.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_a_dim_asked_dynamic_but_fixed_is_a_finding(tmp_path: Path) -> None:
    run = run_cli(["export", f"{MODELS}:fixed_batch", "--formats", "onnx", "--precisions", "fp32", "--out", "b"],
                  tmp_path)
    assert run.returncode == 1, run.describe()
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["capture"]["dims"]["batch"]["dynamic"] is False
    [art] = m["artifacts"]
    [finding] = [f for f in art["fitness"]["findings"] if f["check"] == "dynamic"]
    assert finding["message"] == "fixed where dynamic was asked: batch (image axis 0) is 1 in the file"
    assert "onnx fp32 unfit" in run.stdout and "fixed where dynamic was asked" in run.stdout
    flag = run_cli(["export", f"{MODELS}:small_cnn", "--formats", "onnx", "--precisions", "fp32",
                    "--dynamic", "image:0=batch:1:8", "--out", "c"], tmp_path)
    assert flag.returncode == 0, flag.describe()
    dims = json.loads((tmp_path / "c" / "manifest.json").read_text())["capture"]["dims"]
    assert (dims["batch"]["min"], dims["batch"]["max"]) == (1, 8)
    bad = run_cli(["export", f"{MODELS}:small_cnn", "--dynamic", "image=batch", "--out", "d"], tmp_path)
    assert bad.returncode == 2 and "--dynamic 'image=batch': write INPUT:AXIS=NAME" in bad.stderr, bad.describe()
