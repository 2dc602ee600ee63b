"""The ``mobilize`` command ends with ``os._exit`` (skipping the interpreter's teardown of torch and the converters,
about a second of CPU), after doing what a normal exit does that anyone can observe: other threads joined,
``atexit`` handlers run, buffered output flushed, the command's exit code kept."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# a model file that leaves work for the exit: an atexit handler and a non-daemon thread still running
_MODEL = """
    import atexit, pathlib, threading, time
    import torch

    HERE = pathlib.Path(__file__).parent
    atexit.register(lambda: (HERE / "atexit-ran").write_text("yes"))

    def _late():
        time.sleep(0.5)
        (HERE / "thread-finished").write_text("yes")

    threading.Thread(target=_late, daemon=False).start()

    def spec():
        from mobilize.spec import ModelSpec
        return ModelSpec(module=torch.nn.Linear(4, 3).eval(), example_inputs=(torch.randn(1, 4),), name="lin")

    def broken():
        raise ValueError("no model here")
"""


def _mobilize(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mobilize", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


def test_the_exit_joins_threads_runs_atexit_and_flushes_output(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(textwrap.dedent(_MODEL))
    got = _mobilize(["export", "m.py:spec", "--formats", "onnx", "--precisions", "fp32", "--out", "b", "--json",
                     "-", "--quiet"], tmp_path)
    assert got.returncode == 0, got.stderr[-2000:]
    manifest = json.loads(got.stdout)  # the whole manifest reached the pipe (block-buffered, flushed at exit)
    assert [a["format"] for a in manifest["artifacts"]] == ["onnx"]
    assert (tmp_path / "atexit-ran").read_text() == "yes"
    assert (tmp_path / "thread-finished").read_text() == "yes"


def test_the_exit_keeps_an_error_exit_code(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(textwrap.dedent(_MODEL))
    got = _mobilize(["export", "m.py:broken", "--formats", "onnx", "--out", "b"], tmp_path)
    assert got.returncode == 2, (got.returncode, got.stderr[-2000:])
    assert "no model here" in got.stderr
    assert (tmp_path / "atexit-ran").read_text() == "yes"
    assert (tmp_path / "thread-finished").read_text() == "yes"


def test_a_message_exit_prints_it_and_exits_1() -> None:
    code = ("import atexit; from mobilize._exit import exit_now; atexit.register(print, 'atexit ran'); "
            "print('buffered', end=''); exit_now('stopped: reason')")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert got.returncode == 1
    assert got.stdout == "bufferedatexit ran\n"
    assert got.stderr == "stopped: reason\n"
