"""The bundle is replaced atomically or not at all (task 7)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._util import FIXTURES, cli_env, listing, run_cli, tree_digest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "args",
    [
        ["export", "missing.py:build"],
        ["export", "zoo:digits", "--formats", "onnx,foo"],
        ["export", "bad_models.py:fails_on_example"],
    ],
    ids=["missing_file", "unknown_format", "fails_on_example"],
)
def test_failed_export_leaves_bundle_byte_identical(bundle: Path, args: list[str]) -> None:
    shutil.copy(FIXTURES / "bad_models.py", bundle.parent / "bad_models.py")
    before, siblings = tree_digest(bundle), listing(bundle.parent)
    run = run_cli([*args, "--out", bundle.name], bundle.parent, timeout=300)
    assert run.returncode == 2, run.describe()
    assert tree_digest(bundle) == before
    assert listing(bundle.parent) == siblings


def _leftovers(bundle: Path) -> list[str]:
    return sorted(n for n in listing(bundle.parent) if n.startswith(f".{bundle.name}."))


@contextlib.contextmanager
def _export_in_background(bundle: Path):
    """``mobilize export zoo:digits --out bundle`` in its own process group; the group is killed on exit (the run's
    children, e.g. a verification worker, are orphaned when only the parent gets SIGKILL)."""
    log = bundle.parent.parent / f"{bundle.parent.name}-export.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mobilize", "export", "zoo:digits", "--out", bundle.name],
            cwd=bundle.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(),
            start_new_session=True,
        )
        try:
            yield proc, log
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _wait_for_staging(bundle: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not _leftovers(bundle) and time.monotonic() - t0 < timeout and proc.poll() is None:
        time.sleep(0.05)


@pytest.mark.parametrize("when", ["after_3s", "while_staging"])
def test_sigkill_mid_export_keeps_old_bundle(bundle: Path, when: str, record_property) -> None:
    before = tree_digest(bundle)
    with _export_in_background(bundle) as (proc, log):
        t0 = time.monotonic()
        if when == "after_3s":
            time.sleep(3.0)
        else:  # wait until the new bundle is being built next to the old one, then kill in the middle of it
            _wait_for_staging(bundle, proc)
            assert _leftovers(bundle), "the export never started staging:\n" + log.read_text()[-3000:]
            time.sleep(1.0)
        assert proc.poll() is None, "the export ended before it could be killed:\n" + log.read_text()[-3000:]
        killed_at = time.monotonic() - t0
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    assert tree_digest(bundle) == before, "the old bundle changed after SIGKILL"
    left = _leftovers(bundle)
    record_property("killed_after_s", round(killed_at, 1))
    record_property("leftovers", left)
    print(f"SIGKILL after {killed_at:.1f} s; leftovers: {left}")
    assert all(".tmp-" in n for n in left), left  # never a half-swapped .old- folder


def test_next_export_cleans_leftovers_of_a_killed_run(bundle: Path) -> None:
    with _export_in_background(bundle) as (proc, log):
        _wait_for_staging(bundle, proc)
        assert proc.poll() is None, "the export ended before it could be killed:\n" + log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    stale = _leftovers(bundle)
    assert stale, "expected a staging folder left by the killed run"
    run = run_cli(
        ["export", "zoo:digits", "--formats", "onnx", "--precisions", "fp32", "--out", bundle.name],
        bundle.parent,
        timeout=300,
    )
    assert run.returncode == 0, run.describe()
    assert _leftovers(bundle) == [], "stale staging folders of a dead run should be removed by the next run"
    assert sorted(listing(bundle)) == ["digits_fp32.onnx", "manifest.json", "reference.npz"]
