"""Faults during a real export: a converter that aborts, a quantizer that segfaults, SIGTERM, a disk that fills up.
The previous bundle survives byte-identical whenever the run does not complete, and no staging folder is left."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ._util import cli_env, listing, load_json, run_cli, tree_digest

pytestmark = pytest.mark.slow


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    """A previous bundle to protect (a real one, from a quick ONNX-only export)."""
    run = run_cli(["export", "zoo:digits", "--formats", "onnx", "--precisions", "fp32", "--out", "b"], tmp_path)
    assert run.returncode == 0, run.describe()
    return tmp_path / "b"


def _leftovers(bundle: Path) -> list[str]:
    return [n for n in listing(bundle.parent) if n.startswith(f".{bundle.name}.")]


@pytest.mark.parametrize(("fault", "precisions", "failed"), [
    ("onnx fp32:SIGABRT", "fp32,fp16", "fp32"),  # LiteRT's "LLVM ERROR: IO failure" aborts like this
    ("onnx int8-weights:SIGSEGV", "fp32,int8-weights", "int8-weights"),  # the quantizer runs in the child too
])
def test_a_crashing_converter_is_one_failed_artifact(previous: Path, fault: str, precisions: str,
                                                     failed: str) -> None:
    run = run_cli(["export", "zoo:digits", "--formats", "onnx", "--precisions", precisions, "--out", "b", "--json",
                   "m.json"], previous.parent, env={"MOBILIZE_CONVERTER_FAULT": fault})
    assert run.returncode == 1, run.describe()
    assert "Traceback" not in run.stderr
    arts = {a["precision"]: a for a in load_json(previous.parent / "m.json")["artifacts"]}
    signame = fault.rsplit(":", 1)[1]
    assert arts[failed]["status"] == "failed"
    assert f"crashed ({signame})" in arts[failed]["error"]["message"]
    other = next(p for p in arts if p != failed)
    assert arts[other]["status"] == "ok" and arts[other]["parity"]["status"] == "pass"
    if signame == "SIGABRT":
        assert any("LLVM ERROR" in ln for ln in arts[failed]["error"]["converter_log_tail"])
    assert not _leftovers(previous)


def test_sigterm_cleans_up_like_ctrl_c(previous: Path) -> None:
    """SIGTERM mid-export: exit 143, the previous bundle untouched, no staging folder, no child process left."""
    before = tree_digest(previous)
    with (previous.parent / "log.txt").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mobilize", "export", "zoo:mobilenet_v2", "--out", "b"],
                                cwd=previous.parent, stdout=log, stderr=subprocess.PIPE, env=cli_env(),
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not _leftovers(previous) and proc.poll() is None:
                time.sleep(0.1)
            assert _leftovers(previous), "the export never started staging"
            time.sleep(2.0)  # a converter child is running now
            os.kill(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    assert "Traceback" not in err.decode()
    assert tree_digest(previous) == before
    assert not _leftovers(previous)
    with pytest.raises(ProcessLookupError):  # the converter child and any worker went with it
        os.killpg(proc.pid, 0)


BIG_MODEL = """
import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU()).eval(), (torch.randn(1, 512),)
"""

# runs inside a private mount namespace with a small tmpfs at argv[1]: the previous bundle fits, the new ONNX not
INSIDE = """
import hashlib, json, os, shutil, subprocess, sys
from pathlib import Path

disk, previous, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
shutil.copytree(previous, disk / "b")

def digest():
    return {str(p.relative_to(disk)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(disk.rglob("*"))}

before = digest()
env = {**os.environ, "TMPDIR": str(Path(model).parent)}
run = subprocess.run([sys.executable, "-m", "mobilize", "export", model, "--formats", "onnx,tflite",
                      "--precisions", "fp32", "--out", str(disk / "b")], capture_output=True, text=True, env=env)
print(json.dumps({"rc": run.returncode, "stderr": run.stderr, "same": digest() == before,
                  "listing": sorted(os.listdir(disk))}))
"""


def test_a_disk_that_fills_up_during_the_converter_write_keeps_the_previous_bundle(previous: Path,
                                                                                  tmp_path: Path) -> None:
    """A real full disk (a 600 KB tmpfs in a private mount namespace): the ONNX file (1 MB of weights) does not fit."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rm", "true"], capture_output=True, check=False).returncode:
        pytest.skip("needs unshare -rm (user and mount namespaces) to mount a small tmpfs")
    model = tmp_path / "big.py"
    model.write_text(textwrap.dedent(BIG_MODEL))
    (tmp_path / "inside.py").write_text(INSIDE)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f"mount -t tmpfs -o size=600k none {disk} && "
              f"{sys.executable} {tmp_path / 'inside.py'} {disk} {previous} {model}:build")
    out = subprocess.run([unshare, "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                         env=cli_env(), check=False)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["rc"] == 2, got
    # progress lines ("[00:02] capturing with torch.export", one per step in a log) aside, one error line
    lines = [ln for ln in got["stderr"].splitlines() if ln.strip() and not re.match(r"\[\d\d:\d\d\] ", ln)]
    assert len(lines) == 1 and lines[0].startswith("error:") and "No space left on device" in lines[0], got
    assert got["same"], "the previous bundle changed"
    assert got["listing"] == ["b"], got["listing"]
