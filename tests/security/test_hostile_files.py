"""Hostile and broken files handed to the CLI: exit 2, one line on stderr, nothing changed on disk."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mobilize", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(p.relative_to(root).as_posix().encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    proc = _cli("export", "zoo:digits", "--formats", "onnx,tflite,coreml", "--precisions", "fp32", "--out", "b",
                cwd=d)
    assert proc.returncode == 0, proc.stderr
    return d / "b"


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst, symlinks=True)
    return dst


def _assert_one_line_exit_2(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def test_truncated_onnx(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    f = b / "digits_fp32.onnx"
    f.write_bytes(f.read_bytes()[:200])
    before = _tree_hash(b)
    _assert_one_line_exit_2(_cli("verify", "b", cwd=tmp_path), "digits_fp32.onnx")
    assert _tree_hash(b) == before


def test_bit_flipped_tflite_header(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    f = b / "digits_fp32.tflite"
    data = bytearray(f.read_bytes())
    data[5] ^= 0xFF  # inside the 'TFL3' file identifier
    f.write_bytes(bytes(data))
    before = _tree_hash(b)
    _assert_one_line_exit_2(_cli("verify", "b", cwd=tmp_path), "digits_fp32.tflite")
    assert _tree_hash(b) == before


def test_bit_flipped_tflite_flatbuffer_tables(bundle: Path, tmp_path: Path) -> None:
    """Flip bytes in the flatbuffer's root tables: the verifying loader (model_content=) must refuse or the run must
    fail — never a crash of mobilize and never a pass."""
    b = _copy(bundle, tmp_path)
    f = b / "digits_fp32.tflite"
    data = bytearray(f.read_bytes())
    for i in range(8, 40):
        data[i] ^= 0xA5
    f.write_bytes(bytes(data))
    proc = _cli("verify", "b", "--json", "v.json", cwd=tmp_path)
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stderr


def test_manifest_pointing_outside(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    m["artifacts"][0]["path"] = "../../etc/passwd"
    (b / "manifest.json").write_text(json.dumps(m))
    _assert_one_line_exit_2(_cli("verify", "b", cwd=tmp_path), "outside the bundle")


def test_symlinked_artifact_escaping(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    outside = tmp_path / "outside.onnx"
    shutil.copy(b / "digits_fp32.onnx", outside)
    (b / "digits_fp32.onnx").unlink()
    (b / "digits_fp32.onnx").symlink_to(outside)
    _assert_one_line_exit_2(_cli("verify", "b", cwd=tmp_path), "outside the bundle")


def test_wrong_hash_fails_parity(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    art = next(a for a in m["artifacts"] if a["format"] == "onnx")
    art["sha256"] = "0" * 64
    (b / "manifest.json").write_text(json.dumps(m))
    proc = _cli("verify", "b", "--json", "v.json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    v = json.loads((tmp_path / "v.json").read_text())
    onnx = next(a for a in v["artifacts"] if a["format"] == "onnx")
    assert onnx["parity"]["status"] == "fail" and "sha256" in onnx["parity"]["reason"]


def test_output_folder_that_is_a_file_or_symlink(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("keep me")
    _assert_one_line_exit_2(_cli("export", "zoo:digits", "--out", "afile", cwd=tmp_path), "is a file")
    assert (tmp_path / "afile").read_text() == "keep me"
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    _assert_one_line_exit_2(_cli("export", "zoo:digits", "--out", "link", cwd=tmp_path), "symlink")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_export_keeps_the_previous_bundle(bundle: Path, tmp_path: Path, sig: signal.Signals) -> None:
    b = _copy(bundle, tmp_path)
    before = _tree_hash(b)
    # SIGINT as a terminal delivers it: a runner started in the background of a non-interactive shell has SIGINT
    # ignored, and a child inherits that (mobilize then rightly honours the ignore and finishes the export)
    proc = subprocess.Popen([sys.executable, "-m", "mobilize", "export", "zoo:mobilenet_v2", "--out", "b"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".b.tmp-*")):
        time.sleep(0.1)  # wait until the staging folder exists: the run is mid-write
    time.sleep(1.0)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert _tree_hash(b) == before
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        assert not list(tmp_path.glob(".b.*")), "Ctrl-C must remove the staging folder"
    else:
        assert proc.returncode == -signal.SIGKILL
        # the next run cleans up what the killed one left behind
        done = _cli("export", "zoo:digits", "--formats", "onnx", "--precisions", "fp32", "--out", "b", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert not list(tmp_path.glob(".b.*"))
