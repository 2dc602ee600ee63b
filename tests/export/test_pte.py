"""ExecuTorch ``.pte`` (issue #18): export from the captured program through XNNPACK, verification with
``executorch.runtime``, PT2E quantization with the accuracy-aware fallback, dynamic dims with upper bounds, metadata,
reproducible bytes, diff and bench — on small models of our own (tests/fixtures/models/pte_models.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import mobilize
from mobilize.errors import ConversionError

pytestmark = pytest.mark.slow
MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "pte_models.py"
ALL = "fp32,fp16,int8-weights,int8,int4-weights"


def _models() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("pte_models", MODELS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _npz(folder: Path, arrays: dict[str, Any]) -> Path:
    import numpy as np

    path = folder / "calibration.npz"
    np.savez(path, **arrays)
    return path


def _by_precision(result: Any) -> dict[str, dict[str, Any]]:
    return {a["precision"]: a for a in result.artifacts}


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every precision of a small CNN, verified in the worker process like any export."""
    root = tmp_path_factory.mktemp("pte")
    out = root / "bundle"
    calib = _npz(root, _models().classifier_calibration())
    return mobilize.export(f"{MODELS}:classifier", out, formats="pte", precisions=ALL, calibration=calib,
                           diagnose=False)


def test_every_precision_exports_and_verifies_with_executorch(classifier_bundle: Any) -> None:
    arts = _by_precision(classifier_bundle)
    assert set(arts) == set(ALL.split(","))
    for prec, a in arts.items():
        assert a["status"] == "ok", (prec, a["error"])
        assert a["path"].endswith(".pte")
        assert a["parity"]["status"] == "pass", (prec, a["parity"]["reason"])
        assert a["parity"]["runtime"] == "executorch"
        assert a["inputs"] == [{"name": "image", "shape": [1, 3, 16, 16], "dtype": "float32", "model_name": "image"}]
        assert a["outputs"][0]["name"] == "logits" and a["outputs"][0]["dtype"] == "float32"
    int8 = arts["int8"]["quantization"]
    assert int8["recipe"] == "static" and int8["calibrated"] and int8["meets_target"] is True
    assert int8["calibration"]["calibration_samples"] + int8["calibration"]["held_out_samples"] == 32
    # int8 weights in the XNNPACK payload (constants; this model's file is half flatbuffer and graph, ~6 KB)
    assert arts["int8"]["analysis"]["constants"]["bytes"] < 0.45 * arts["fp32"]["analysis"]["constants"]["bytes"]
    assert arts["int8-weights"]["quantization"]["recipe"] == "dynamic"
    assert arts["int4-weights"]["quantization"]["recipe"] == "dynamic-int4"
    # what stayed float is read from the file: the dynamic quantizer leaves convolutions followed by a ReLU float
    assert "xnnpack.Conv2d" in arts["int8-weights"]["quantization"]["float_weights"]
    assert not arts["int8"]["quantization"]["float_weights"]


def test_the_record_says_what_xnnpack_runs_and_what_stays_portable(classifier_bundle: Any) -> None:
    for a in classifier_bundle.artifacts:
        d = a["analysis"]["delegation"]
        assert d["backend"] == "XnnpackBackend" and d["subgraphs"] >= 1
        assert d["methods"] == ["forward", "mobilize_metadata"]
        assert 0 < d["delegated_share"] <= 1
        assert d["delegated_ops"] + sum(d["portable_ops"].values()) == a["analysis"]["op_count"]
        assert any(n.startswith("XNNPACK runs ") for n in a["notes"]), a["notes"]
        assert any(op.startswith("xnnpack.Conv2d") for op in a["analysis"]["ops"])


def test_fp16_stores_convolution_weights_as_float16(classifier_bundle: Any) -> None:
    """ExecuTorch's XNNPACK visitor writes conv filters as float32 unless told otherwise (twice the bytes)."""
    arts = _by_precision(classifier_bundle)
    assert arts["fp16"]["analysis"]["constants"]["bytes"] < 0.7 * arts["fp32"]["analysis"]["constants"]["bytes"]
    from mobilize.analysis.pte import read

    consts = read(classifier_bundle.out / arts["fp16"]["path"]).constants
    conv = [c for c in consts if any(k.startswith("xnnpack.Conv2d") for k in c.consumers) and len(c.shape) == 4]
    assert conv and all(c.dtype == "float16" for c in conv), [(c.shape, c.dtype) for c in conv]


def test_metadata_method_and_content_detection(classifier_bundle: Any) -> None:
    from mobilize.runtime.pte import PteRunner
    from mobilize.sniff import sniff

    a = _by_precision(classifier_bundle)["fp32"]
    path = classifier_bundle.out / a["path"]
    assert sniff(path) == "pte"
    with PteRunner(path) as r:
        assert set(r.methods) == {"forward", "mobilize_metadata"}
        meta = r.metadata
    assert meta["labels"] == ["a", "b", "c", "d", "e"]
    assert meta["normalization"]["mean"] == [0.5, 0.5, 0.5]
    assert meta["mobilize.precision"] == "fp32" and meta["mobilize.model"] == "pte_classifier"
    assert meta["mobilize.io"]["inputs"] == [{"name": "image", "dynamic": {}}]
    assert meta["mobilize.source"] == "pte_models.py:classifier"


def test_the_runner_loads_no_converter(classifier_bundle: Any) -> None:
    """Silencing loggers must not import litert-torch (and with it JAX, ~220 MB) into a process that only runs a
    .pte, nor the runtime's import the ExecuTorch compiler (exir's passes, torch's dynamo): bench's memory figures
    and load times would count them as the model's."""
    import subprocess
    import sys

    path = classifier_bundle.out / _by_precision(classifier_bundle)["fp32"]["path"]
    code = ("import sys; from mobilize.runtime.pte import PteRunner\n"
            f"with PteRunner({str(path)!r}) as r: pass\n"
            "print(sorted(m for m in ('litert_torch', 'jax', 'ai_edge_quantizer', 'executorch.exir.program',\n"
            "                         'torch._dynamo') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_reverify_diff_and_bench(classifier_bundle: Any) -> None:
    out = classifier_bundle.out
    again = mobilize.verify(out)
    assert again.exit_code in (0, 1)
    assert all(a["parity"]["status"] == "pass" for a in again.artifacts)
    d = mobilize.diff(out, source=f"{MODELS}:classifier", artifacts="pte/fp32,pte/int8")
    for rep in d.reports:
        assert rep["outputs_only"].startswith("per-layer comparison is not available for ExecuTorch")
        assert "outputs only" in rep["summary"] and rep["outputs"][0]["output"] == "logits"
        assert rep["outputs"][0]["metrics"]["snr_db"] > (60 if rep["precision"] == "fp32" else 15)
    from mobilize.bench.latency import Settings
    from mobilize.bench.run import bench

    res = bench(out, precisions="fp32,int8", baseline=False, memory=True,
                settings=Settings(warmup_runs=1, warmup_seconds=0, min_runs=5, min_seconds=0, rounds=1))
    rows = [r for r in res.rows if r["format"] == "pte"]
    assert {r["precision"] for r in rows} == {"fp32", "int8"}
    for r in rows:
        assert r["status"] == "ok" and r["runtime"] == "executorch", r
        assert r["latency_ms"]["p50"] > 0 and r["load_ms"] > 0 and r["peak_rss_mb"] > 0, r
        assert r["bytes"] > 0 and r["floor_ratio"], r


def test_int_inputs_multiple_outputs_and_an_unbounded_dynamic_batch(tmp_path: Path) -> None:
    res = mobilize.export(f"{MODELS}:two_in_out", tmp_path / "b", formats="pte", precisions="fp32,fp16",
                          isolate=False, diagnose=False)
    for a in res.artifacts:
        assert a["status"] == "ok" and a["parity"]["status"] == "pass", (a["precision"], a["parity"])
        assert [(t["name"], t["dtype"]) for t in a["inputs"]] == [("features", "float32"), ("ids", "int64")]
        assert [t["shape"][0] for t in a["inputs"]] == ["batch", "batch"]
        assert [t["max_shape"][0] for t in a["inputs"]] == [64, 64]  # no maximum given: ExecuTorch needs one
        assert [t["name"] for t in a["outputs"]] == ["scores", "pooled"]
        assert [t["shape"][0] for t in a["outputs"]] == ["batch", "batch"]
        assert any("other dynamic sizes" in s["label"] for s in a["parity"]["inputs_used"])
        assert any("batch ≤ 64" in n for n in a["notes"]), a["notes"]
        assert (a["fitness"] or {}).get("status") == "fit", a["fitness"]


def test_a_bounded_dynamic_batch_keeps_its_bound_through_xnnpack(tmp_path: Path) -> None:
    """torch's convolution backend selection narrowed the batch of a conv model to 15 in XNNPACK's passes."""
    res = mobilize.export(f"{MODELS}:conv_batch", tmp_path / "b", formats="pte", precisions="fp32", isolate=False,
                          diagnose=False)
    a = res.artifacts[0]
    assert a["status"] == "ok" and a["parity"]["status"] == "pass", a
    assert a["inputs"][0]["shape"][0] == "batch" and a["inputs"][0]["max_shape"][0] == 32
    import numpy as np

    from mobilize.runtime.pte import PteRunner

    with PteRunner(tmp_path / "b" / a["path"]) as r:
        assert r.infer({"image": np.zeros((32, 3, 12, 12), np.float32)})["features"].shape == (32, 4, 12, 12)
        with pytest.raises(mobilize.MobilizeInputError, match="exceeds the file's upper bound"):
            r.infer({"image": np.zeros((33, 3, 12, 12), np.float32)})


def test_int8_keeps_the_layer_that_ruins_the_target_float(tmp_path: Path) -> None:
    m = _models()
    res = mobilize.export(f"{MODELS}:outlier", tmp_path / "b", formats="pte", precisions="int8", isolate=False,
                          calibration=_npz(tmp_path, m.outlier_calibration()), diagnose=False)
    q = res.artifacts[0]["quantization"]
    assert q["meets_target"] is True and q["kept_float"] == ["head"], q
    base = [c for c in q["candidates"] if c["kept_float"] == 0]
    assert base and not any(c["meets_target"] for c in base)  # all-int8 misses: the fallback did the work
    assert any(p["layers"] == ["head"] and p.get("meets_target_alone") for p in q["sensitivity"]["probes"])


def test_int4_weights_shrink_linear_layers(tmp_path: Path) -> None:
    res = mobilize.export(f"{MODELS}:mlp", tmp_path / "b", formats="pte", precisions="fp32,int4-weights",
                          isolate=False, diagnose=False)
    arts = _by_precision(res)
    assert arts["int4-weights"]["parity"]["status"] == "pass", arts["int4-weights"]["parity"]
    assert arts["int4-weights"]["bytes"] < 0.2 * arts["fp32"]["bytes"]
    assert not arts["int4-weights"]["quantization"]["float_weights"]


def test_an_op_without_an_executorch_kernel_fails_naming_the_op_and_module(tmp_path: Path) -> None:
    res = mobilize.export(f"{MODELS}:no_kernel", tmp_path / "b", formats="pte", precisions="fp32", isolate=False,
                          diagnose=False)
    a = res.artifacts[0]
    assert a["status"] == "failed" and res.exit_code == 1
    assert "aten.cummax" in a["error"]["ops"]
    assert "no kernel for aten::cummax.out" in a["error"]["message"]
    assert any("cummax" in m for m in a["error"]["modules"]), a["error"]["modules"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_placement_reads_the_xnnpack_partitions_from_the_file(classifier_bundle: Any) -> None:
    """A .pte is partitioned at export: the placement record reads the delegate calls from the file; the backends it
    was not lowered for are unverified with the reason, and `mobilize check` judges the xnnpack path by default."""
    from mobilize.analysis.bundle import inspect_bundle
    from mobilize.check.placement import checks

    for a in classifier_bundle.artifacts:
        p, d = a["placement"], a["analysis"]["delegation"]
        assert p["format"] == "pte" and p["methods"] == d["methods"]
        x = p["paths"]["xnnpack"]
        assert x["status"] == "analyzed" and x["partitions"] == d["subgraphs"] >= 1
        assert x["node_share"] == d["delegated_share"] and x["unsupported_ops"] == d["portable_ops"]
        assert {u["op"] for u in x["unsupported"]} == set(d["portable_ops"])
        for other in ("gpu", "npu", "ane"):
            assert p["paths"][other]["status"] == "unverified" and "lowered for XNNPACK" in p["paths"][other]["reason"]
        [c] = checks({"max_delegate_partitions": 0}, a, None)
        assert c.status == "fail" and "xnnpack" in c.message
    again = inspect_bundle(classifier_bundle.out)
    assert [a["placement"]["paths"]["xnnpack"]["partitions"] for a in again.artifacts] == \
        [a["placement"]["paths"]["xnnpack"]["partitions"] for a in classifier_bundle.artifacts]


def test_quantized_files_come_from_a_converter_child_that_did_not_write_the_fp32_file(tmp_path: Path,
                                                                                      monkeypatch: Any) -> None:
    """Each artifact is converted in its own forked child (mobilize.isolate.in_child): the child quantizing the .pte
    re-derives the program the fp32 file was lowered from, which the fp32 child kept to itself."""
    from mobilize import isolate
    from mobilize.export import pte as export_pte

    monkeypatch.setattr(isolate, "forking_available", lambda: True)  # even after JAX started in this process
    before = dict(export_pte._SOURCES)  # noqa: SLF001 - what this process remembers
    res = mobilize.export(f"{MODELS}:mlp", tmp_path / "b", formats="pte", precisions="fp32,int8-weights", verify=False)
    arts = _by_precision(res)
    assert arts["int8-weights"]["status"] == "ok", arts["int8-weights"]["error"]
    assert arts["int8-weights"]["quantization"]["recipe"] == "dynamic"
    assert dict(export_pte._SOURCES) == before  # noqa: SLF001 - both files were written in children, not here


def test_two_exports_in_two_processes_give_the_same_bytes(tmp_path: Path) -> None:
    import subprocess
    import sys

    precs = "fp32,fp16,int8-weights"
    first = mobilize.export(f"{MODELS}:two_in_out", tmp_path / "a", formats="pte", precisions=precs, isolate=False,
                            verify=False)
    run = subprocess.run([sys.executable, "-m", "mobilize", "export", f"{MODELS}:two_in_out", "--formats", "pte",
                          "--precisions", precs, "--no-verify", "--out", str(tmp_path / "b"),
                          "--json", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=900)
    assert run.returncode in (0, 1), run.stderr[-2000:]
    second = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [a["sha256"] for a in first.artifacts] == [a["sha256"] for a in second["artifacts"]]
    for a in first.artifacts:
        assert _sha(tmp_path / "a" / a["path"]) == _sha(tmp_path / "b" / a["path"]) == a["sha256"]


def test_the_quantizer_needs_the_program_of_this_run(tmp_path: Path) -> None:
    from mobilize.quantize import pte as qpte

    stray = tmp_path / "elsewhere.pte"
    stray.write_bytes(b"\0\0\0\0ET12")
    with pytest.raises(ConversionError, match="not exported in this run"):
        qpte.layers(stray)
