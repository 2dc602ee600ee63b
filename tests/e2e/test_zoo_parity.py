"""Every zoo model through the real converters and runtimes, checked from the outside (tasks 1 and 2).

The bundles come from the session export pool (conftest.py); the checks here re-derive everything they can
without mobilize: hashes with hashlib, ONNX structure with onnx, Core ML program type with coremltools, and the
numbers by running the files with onnxruntime / ai_edge_litert against the PyTorch module on fresh inputs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from ._util import FORMATS, PRECISIONS, ZOO_NAMES, artifact, artifact_bytes, artifact_sha256, listing

pytestmark = pytest.mark.slow


def test_zoo_lists_the_expected_models() -> None:
    from mobilize import models

    assert set(ZOO_NAMES) <= set(models.names())


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_exports_every_format_and_precision(zoo_runs, name: str) -> None:
    er = zoo_runs[name]
    m = er.manifest
    unfit = sorted((a["format"], a["precision"]) for a in m["artifacts"]
                   if (a.get("fitness") or {}).get("status") != "fit")
    if name == "gru_classifier":
        # litert-torch has no fused sequence ops: the TFLite files unroll the GRU (fit to ship: no, and said so);
        # ONNX and Core ML keep it native
        assert unfit == [("tflite", "fp16"), ("tflite", "fp32")], unfit
        for a in m["artifacts"]:
            if a["format"] == "tflite":
                reasons = " ".join(r for f in a["fitness"]["findings"] for r in f.get("reasons") or [])
                assert "unrolled recurrence: gru (GRU)" in reasons, a["fitness"]
        assert er.run.returncode == 1 and "tflite fp32 unfit" in er.run.stdout, er.run.describe()
    else:
        assert unfit == [], [a["fitness"] for a in m["artifacts"]]
        assert er.run.returncode == 0, er.run.describe()
    assert m == er.bundle_manifest, "--json output differs from the bundle's manifest.json"
    got = sorted((a["format"], a["precision"]) for a in m["artifacts"])
    assert got == sorted((f, p) for f in FORMATS for p in PRECISIONS)
    for a in m["artifacts"]:
        assert a["status"] == "ok", a.get("error")
        assert a["error"] is None
    assert m["summary"]["failed"] == 0 and m["summary"]["exported"] == 6
    assert m["model"]["name"] == name


@pytest.mark.parametrize("name", ZOO_NAMES)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_zoo_parity_passes(zoo_runs, name: str, fmt: str, precision: str) -> None:
    m = zoo_runs[name].manifest
    p = artifact(m, fmt, precision)["parity"]
    assert p is not None
    assert p["status"] == "pass", p.get("reason")
    assert p["runtime"] and p["runtime"].startswith({"onnx": "onnxruntime", "tflite": "ai-edge-litert"}[fmt])
    assert p["could_not_run"] is False
    # every model output was compared, on every reference input set
    assert set(p["outputs"]) == {o["name"] for o in m["model"]["outputs"]}
    assert len(p["inputs_used"]) == len(m["reference"]["input_sets"]) >= 2
    tol = p["tolerance"]
    assert p["max_abs_error"] <= max(tol["atol"] * 50, 0.5)  # sanity: the numbers exist and are not absurd
    if precision == "fp32":
        assert p["max_abs_error"] < 1e-3


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts natively on macOS")
@pytest.mark.parametrize("name", ZOO_NAMES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_zoo_coreml_never_claims_apple_runtime_on_linux(zoo_runs, name: str, precision: str) -> None:
    """Off macOS nothing may claim that Apple's Core ML runtime ran the file: Core ML parity comes from the NumPy
    reference interpreter (issue #6), and every such record says so."""
    a = artifact(zoo_runs[name].manifest, "coreml", precision)
    p = a["parity"]
    assert p["runtime"] != "coreml"
    if p["status"] == "unverified":
        assert "macos" in (p["reason"] or "").lower(), p
    else:
        assert p["status"] == "pass", p.get("reason")
        text = " ".join(p.get("warnings") or []).lower()
        assert "not apple" in text or "reference" in text, p


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_manifest_schema_and_load_bundle(zoo_runs, name: str) -> None:
    import mobilize
    from mobilize.bundle import manifest as mf

    er = zoo_runs[name]
    mf.validate(er.bundle_manifest)
    loaded = mobilize.load_bundle(er.out)
    assert loaded == er.bundle_manifest


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_artifact_bytes_and_sha256_match_files(zoo_runs, name: str) -> None:
    er = zoo_runs[name]
    m = er.bundle_manifest
    expected_files = {"manifest.json", m["reference"]["path"]}
    for a in m["artifacts"]:
        path = er.out / a["path"]
        assert path.exists(), a["path"]
        assert not path.is_symlink()
        assert (a["format"] == "coreml") == path.is_dir(), f"{a['path']}: .mlpackage is a folder, others files"
        assert a["bytes"] == artifact_bytes(path), a["path"]
        assert a["sha256"] == artifact_sha256(path), a["path"]
        assert re.fullmatch(r"[0-9a-f]{64}", a["sha256"])
        expected_files.add(a["path"])
    # nothing else in the bundle: no staging leftovers, no fp32 intermediate of the fp16 TFLite, no .onnx.data
    assert set(listing(er.out)) == expected_files


@pytest.mark.parametrize("name", ZOO_NAMES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_zoo_onnx_file_is_single_file_opset18_and_checks(zoo_runs, name: str, precision: str) -> None:
    import onnx
    from onnx import external_data_helper as edh

    er = zoo_runs[name]
    a = artifact(er.manifest, "onnx", precision)
    path = er.out / a["path"]
    assert not list(er.out.glob("*.data")) and not list(er.out.glob("*.onnx_data"))
    model = onnx.load(str(path), load_external_data=False)
    tensors = list(edh._get_all_tensors(model))
    assert tensors, "no tensors found in the ONNX graph"
    external = [t.name for t in tensors if edh.uses_external_data(t) or t.data_location == onnx.TensorProto.EXTERNAL]
    assert external == [], f"tensors stored outside the file: {external[:5]}"
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    assert opsets.get("ai.onnx", 0) >= 18, opsets
    onnx.checker.check_model(model, full_check=True)
    # the declared I/O names are what the manifest says
    assert [i.name for i in model.graph.input] == [t["name"] for t in a["inputs"]]
    assert [o.name for o in model.graph.output] == [t["name"] for t in a["outputs"]]


@pytest.mark.parametrize("name", ZOO_NAMES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_zoo_mlpackage_is_an_ml_program(zoo_runs, name: str, precision: str) -> None:
    import coremltools as ct

    er = zoo_runs[name]
    a = artifact(er.manifest, "coreml", precision)
    path = er.out / a["path"]
    assert path.suffix == ".mlpackage" and (path / "Manifest.json").is_file()
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in spec.description.input] == [t["name"] for t in a["inputs"]]
    assert [o.name for o in spec.description.output] == [t["name"] for t in a["outputs"]]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_text_encoder_int64_inputs_become_int32_in_tflite(zoo_runs, precision: str) -> None:
    m = zoo_runs["text_encoder"].manifest
    assert [t["dtype"] for t in m["model"]["inputs"]] == ["int64", "int64"]
    tfl = artifact(m, "tflite", precision)
    assert [t["dtype"] for t in tfl["inputs"]] == ["int32", "int32"]
    assert [t.get("model_name") for t in tfl["inputs"]] == ["input_ids", "attention_mask"]
    assert any("int32" in n for n in tfl["notes"]), tfl["notes"]
    onnx_art = artifact(m, "onnx", precision)
    assert [t["dtype"] for t in onnx_art["inputs"]] == ["int64", "int64"]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_text_encoder_both_outputs_verified(zoo_runs, fmt: str, precision: str) -> None:
    m = zoo_runs["text_encoder"].manifest
    assert [o["name"] for o in m["model"]["outputs"]] == ["last_hidden_state", "pooled"]
    a = artifact(m, fmt, precision)
    assert [t.get("model_name") for t in a["outputs"]] == ["last_hidden_state", "pooled"]
    outs = a["parity"]["outputs"]
    assert set(outs) == {"last_hidden_state", "pooled"}
    sizes = {"last_hidden_state": 16 * 64, "pooled": 64}
    n_sets = len(a["parity"]["inputs_used"])
    for name, metrics in outs.items():
        assert metrics["elements"] == sizes[name] * n_sets
        assert metrics["cosine"] > 0.999


# --- task 2: rerun the files ourselves on fresh inputs ---------------------------------------------------------------


def _fresh_inputs(name: str) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(20240611)
    if name == "mobilenet_v2":
        return (rng.normal(0.0, 1.0, size=(1, 3, 96, 96)).astype(np.float32),)
    if name == "text_encoder":
        ids = rng.integers(0, 1000, size=(1, 16)).astype(np.int64)
        mask = np.zeros((1, 16), dtype=np.int64)
        mask[0, :11] = 1
        return ids, mask
    raise AssertionError(name)


def _torch_outputs(name: str, arrays: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    import torch

    from mobilize import models

    module = models.get(name).module.eval()
    with torch.no_grad():
        out = module(*(torch.from_numpy(a) for a in arrays))
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    return [o.numpy() for o in outs]


def _run_onnx(path: Path, arrays: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), arrays)}
    return sess.run(None, feeds)


def _run_tflite(path: Path, arrays: tuple[np.ndarray, ...], names: list[str], out_names: list[str]
                ) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    runner = interp.get_signature_runner()
    ins = runner.get_input_details()
    assert sorted(names) == sorted(ins), (names, list(ins))
    feeds = {}
    for n, a in zip(names, arrays):
        want = np.dtype(ins[n]["dtype"])
        if want != a.dtype:
            assert np.issubdtype(want, np.integer) and np.all(a == a.astype(want)), (n, want, a.dtype)
        feeds[n] = a.astype(want)
    out = runner(**feeds)
    assert sorted(out_names) == sorted(out), (out_names, list(out))
    return [np.asarray(out[k]) for k in out_names]


@pytest.mark.parametrize("name", ["mobilenet_v2", "text_encoder"])
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_independent_rerun_matches_pytorch(zoo_runs, name: str, fmt: str) -> None:
    er = zoo_runs[name]
    a = artifact(er.manifest, fmt, "fp32")
    arrays = _fresh_inputs(name)
    stored = np.load(er.out / "reference.npz")
    for k in stored.files:  # the inputs really are fresh
        if k.startswith("in"):
            assert not any(x.shape == stored[k].shape and np.array_equal(x, stored[k]) for x in arrays)
    want = _torch_outputs(name, arrays)
    # the file's signature names are the model's own (forward()'s argument names, in order), as the manifest lists them
    got = (_run_onnx(er.out / a["path"], arrays) if fmt == "onnx" else
           _run_tflite(er.out / a["path"], arrays, [i["name"] for i in a["inputs"]], [o["name"] for o in a["outputs"]]))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = np.asarray(g).reshape(w.shape)
        assert g.dtype == np.float32
        err = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64))))
        assert err <= 1e-4, f"{fmt} {name}: max abs error {err:.3g} > 1e-4"


def test_bundle_permissions_follow_umask(zoo_runs) -> None:
    """The bundle is built in a mkdtemp() folder (mode 0700); after the swap it must look like any folder the user
    creates, or an app build step running as another user cannot read it."""
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    out = zoo_runs["digits"].out
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    for p in out.rglob("*"):
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(p.stat().st_mode) & want == want, p
