"""Helpers for the end-to-end tests: run the CLI in a subprocess, hash files and trees independently of mobilize."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
FORMATS = ("onnx", "coreml", "tflite")
PRECISIONS = ("fp32", "fp16")
ZOO_NAMES = ("digits", "mobilenet_v2", "text_encoder", "gru_classifier")
#: converter chatter that must not reach the terminal without -v
NOISE = ("[torch.onnx]", "LiteRT-Torch", "Running MIL", "XNNPACK")


@dataclasses.dataclass
class Run:
    """A finished ``python -m mobilize ...`` subprocess."""

    args: list[str]
    cwd: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return (
            f"mobilize {' '.join(self.args)} (cwd {self.cwd}) → exit {self.returncode} in {self.seconds:.1f} s\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )


#: the environment before any test ran mobilize in-process (which changes os.environ; see test_api.py), so every
#: CLI subprocess starts from the same environment whatever the test order
BASE_ENV = dict(os.environ)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(BASE_ENV)
    env.pop("MOBILIZE_WORKER_FAULT", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


def run_cli(args: list[str], cwd: Path, *, timeout: float = 600, env: dict[str, str] | None = None) -> Run:
    """Run the CLI as a user would (``python -m mobilize``), capturing both streams."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mobilize", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        check=False,
    )
    return Run(list(args), Path(cwd), proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_sha256(folder: Path) -> str:
    """The folder hash documented in mobilize.bundle.hashing, reimplemented: sha256 over
    ``"<relpath>\\0<sha256 of file>\\n"`` for every file, in sorted relative-path order."""
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(folder).as_posix()}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def artifact_sha256(path: Path) -> str:
    return package_sha256(path) if path.is_dir() else file_sha256(path)


def artifact_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (relative path → content sha256, ``dir`` or ``symlink:target``) plus file modes."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = f"symlink:{os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = f"{file_sha256(p)} {oct(p.stat().st_mode & 0o7777)} {p.stat().st_size}"
    return out


def listing(root: Path) -> list[str]:
    """Names directly inside ``root`` (hidden ones included), sorted."""
    return sorted(p.name for p in root.iterdir())


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def artifact(manifest: dict[str, Any], fmt: str, precision: str) -> dict[str, Any]:
    found = [a for a in manifest["artifacts"] if a["format"] == fmt and a["precision"] == precision]
    assert len(found) == 1, f"expected one {fmt} {precision} artifact, found {len(found)}"
    return found[0]


PROGRESS_LINE = re.compile(r"\[\d\d:\d\d\] ")


def error_line(run: Run) -> str:
    """Assert the one-line error contract of the CLI and return that line."""
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.describe()
    # progress lines ("[00:02] timing 6 file(s)", one per step when stderr is a log) aside, exactly one line
    lines = [ln for ln in run.stderr.splitlines() if ln.strip() and not PROGRESS_LINE.match(ln)]
    assert len(lines) == 1, f"stderr should be exactly one line besides progress:\n{run.describe()}"
    assert lines[0].startswith("error:"), run.describe()
    return lines[0]
