"""Run untrusted work (loading and running a model file) in a child process.

A native runtime that segfaults, aborts, hangs or allocates without bound takes down only the child; the parent
turns that into a failure of one artifact, with the signal or limit that ended it. The child is
``python -m mobilize._worker``: it reads a JSON job on stdin and writes a JSON result to a file (runtimes print to
stdout/stderr themselves, so those are kept only as a log tail for error messages).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = float(os.environ.get("MOBILIZE_WORKER_TIMEOUT", "900"))
DEFAULT_MEMORY_MB = int(os.environ.get("MOBILIZE_WORKER_MEMORY_MB", "0"))  # 0: no address-space limit


class WorkerDied(Exception):
    """The child ended without a result: crashed (signal), was killed for a limit, or exited early."""

    def __init__(self, message: str, *, signal_name: str | None = None, log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.log_tail = log_tail or []


def run(job: dict[str, Any], *, timeout: float | None = None, memory_mb: int | None = None) -> dict[str, Any]:
    """Run ``job`` in a child process and return its JSON result, or raise :class:`WorkerDied`."""
    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    memory_mb = DEFAULT_MEMORY_MB if memory_mb is None else memory_mb
    with tempfile.TemporaryDirectory(prefix="mobilize-worker-") as tmp:
        result_path = Path(tmp) / "result.json"
        log_path = Path(tmp) / "log.txt"
        job = {**job, "result_path": str(result_path), "memory_mb": memory_mb}
        env = {**os.environ, "PYTHONFAULTHANDLER": "0", "TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3"}

        with log_path.open("wb") as log:
            try:
                proc = subprocess.run([sys.executable, "-m", "mobilize._worker"], input=json.dumps(job).encode(),
                                      stdout=log, stderr=log, timeout=timeout, env=env, check=False)
            except subprocess.TimeoutExpired:
                raise WorkerDied(f"timed out after {timeout:.0f} s", log_tail=_tail(log_path)) from None
        if result_path.is_file():
            try:
                return json.loads(result_path.read_text())
            except ValueError:
                pass
        rc = proc.returncode
        if rc < 0:
            name = signal.Signals(-rc).name if -rc in {s.value for s in signal.Signals} else f"signal {-rc}"
            raise WorkerDied(f"the runtime crashed ({name})", signal_name=name, log_tail=_tail(log_path))
        tail = _tail(log_path)
        if any("MemoryError" in ln or "std::bad_alloc" in ln for ln in tail):
            raise WorkerDied("the runtime ran out of memory", log_tail=tail)
        raise WorkerDied(f"the worker exited with code {rc} without a result", log_tail=tail)


def _tail(path: Path, n: int = 5) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if ln.strip()][-n:]
