"""``mobilize verify DIR`` on good, tampered and hostile bundles (task 8)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ._util import artifact, error_line, load_json, run_cli

pytestmark = pytest.mark.slow


def test_verify_fresh_bundle(bundle: Path) -> None:
    run = run_cli(["verify", "b", "--json", "v.json"], bundle.parent, timeout=300)
    assert run.returncode == 0, run.describe()
    report = load_json(bundle.parent / "v.json")
    manifest = load_json(bundle / "manifest.json")
    assert len(report["artifacts"]) == len(manifest["artifacts"]) == 6
    for a in report["artifacts"]:
        assert {"format", "precision", "path", "sha256", "parity"} <= set(a)
        assert a["parity"]["status"] in ("pass", "unverified"), a
        if a["format"] in ("onnx", "tflite"):
            assert a["parity"]["status"] == "pass", a["parity"].get("reason")
    assert report["summary"]["parity"]["fail"] == 0


def _largest_weight(path: Path) -> tuple[int, int]:
    """(offset, length) in the .tflite file of its largest float32 constant tensor, located by its bytes."""
    from ai_edge_litert.interpreter import Interpreter

    data = path.read_bytes()
    interp = Interpreter(model_path=str(path))
    best = (-1, 0)
    for d in interp.get_tensor_details():
        if d["dtype"] != np.float32:
            continue
        try:
            arr = interp.get_tensor(d["index"])  # constant tensors are readable before allocate_tensors()
        except ValueError:
            continue
        raw = arr.tobytes()
        if arr.size >= 64 and data.count(raw) == 1 and len(raw) > best[1]:
            best = (data.find(raw), len(raw))
    assert best[0] > 0, "no float32 weight found in the .tflite file"
    return best


def test_verify_detects_flipped_tflite_weights(bundle: Path) -> None:
    path = bundle / "digits_fp32.tflite"
    offset, length = _largest_weight(path)
    data = bytearray(path.read_bytes())
    for i in range(offset + 3, offset + length, 4):  # flip the sign bit of every float of that weight
        data[i] ^= 0x80
    path.write_bytes(bytes(data))
    run = run_cli(["verify", "b", "--json", "v.json"], bundle.parent, timeout=300)
    assert run.returncode in (1, 2), run.describe()
    if run.returncode == 2:
        assert "digits_fp32.tflite" in error_line(run)
        return
    report = load_json(bundle.parent / "v.json")
    bad = artifact(report, "tflite", "fp32")
    assert bad["path"] == "digits_fp32.tflite"
    p = bad["parity"]
    assert p["status"] == "fail"
    assert any("sha256" in f for f in p["failures"]), p["failures"]
    # not only the checksum: the file was really run and its numbers are wrong
    assert any("sha256" not in f for f in p["failures"]), p["failures"]
    assert "tflite" in run.stdout and "sha256" in run.stdout
    others = [a for a in report["artifacts"] if a["path"] != "digits_fp32.tflite"]
    assert all(a["parity"]["status"] != "fail" for a in others)


def test_verify_reports_modified_onnx_sha256(bundle: Path) -> None:
    import onnx

    path = bundle / "digits_fp32.onnx"
    model = onnx.load(str(path))
    model.doc_string = "edited after export"  # a valid file that still computes the same thing
    onnx.save(model, str(path))
    run = run_cli(["verify", "b", "--json", "v.json"], bundle.parent, timeout=300)
    assert run.returncode == 1, run.describe()
    report = load_json(bundle.parent / "v.json")
    p = artifact(report, "onnx", "fp32")["parity"]
    assert p["status"] == "fail"
    assert "sha256" in p["reason"] and "digits_fp32.onnx" in p["reason"], p["reason"]
    assert "sha256" in run.stdout
    assert artifact(report, "onnx", "fp16")["parity"]["status"] == "pass"


@pytest.fixture(scope="module")
def truncated_run(digits_run, tmp_path_factory):
    work = tmp_path_factory.mktemp("truncated")
    shutil.copytree(digits_run.out, work / "b", symlinks=True)
    path = work / "b" / "digits_fp32.tflite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # header intact, flatbuffer cut short
    return run_cli(["verify", "b", "--json", "v.json"], work, timeout=300)


def test_verify_truncated_tflite_could_not_run(truncated_run) -> None:
    run = truncated_run
    assert run.returncode == 2, run.describe()
    line = error_line(run)
    assert "digits_fp32.tflite" in line, run.describe()


def test_verify_truncated_tflite_says_why_it_could_not_run(truncated_run) -> None:
    line = error_line(truncated_run)
    assert "could not" in line.lower() or "litert" in line.lower(), line


@pytest.mark.parametrize("evil", ["../../etc/passwd", "/etc/passwd", "symlink"])
def test_verify_refuses_paths_outside_the_bundle(bundle: Path, evil: str) -> None:
    manifest = load_json(bundle / "manifest.json")
    if evil == "symlink":
        target = bundle / "digits_fp32.onnx"
        target.unlink()
        os.symlink("/etc/passwd", target)
    else:
        manifest["artifacts"][0]["path"] = evil
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    run = run_cli(["verify", "b"], bundle.parent, timeout=300)
    assert run.returncode == 2, run.describe()
    line = error_line(run)
    assert "etc/passwd" in line or "outside" in line, line


@pytest.mark.parametrize("kind", ["empty_folder", "no_such_folder", "other_files"])
def test_verify_folder_without_manifest(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "x"
    if kind != "no_such_folder":
        target.mkdir()
    if kind == "other_files":
        (target / "model.onnx").write_bytes(b"\x08\x07")
    run = run_cli(["verify", "x"], tmp_path, timeout=300)
    assert run.returncode == 2, run.describe()
    assert "x" in error_line(run)
