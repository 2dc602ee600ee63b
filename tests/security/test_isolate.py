"""Runtimes run in a child process: a crash, a hang or a runaway allocation becomes a reported failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mobilize import isolate
from mobilize.api import inspect_and_verify
from mobilize.formats import get


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real ONNX file and a reference.npz for it."""
    from mobilize.verify.inputs import InputSet
    from mobilize.verify.parity import Reference

    d = tmp_path_factory.mktemp("iso")
    m = torch.nn.Linear(4, 3).eval()
    x = torch.randn(1, 4)
    torch.onnx.export(torch.export.export(m, (x,)), (x,), str(d / "m.onnx"), dynamo=True, external_data=False,
                      input_names=["x"], output_names=["y"])
    with torch.no_grad():
        y = m(x).numpy()
    Reference([InputSet("example", {"x": x.numpy()})], [{"y": y}], ["y"]).save(d / "reference.npz")
    return d / "m.onnx", d / "reference.npz"


@pytest.mark.slow
def test_child_verifies_a_real_file(onnx_file: tuple[Path, Path]) -> None:
    path, ref = onnx_file
    found = inspect_and_verify(get("onnx"), path, "fp32", ref, ["x"])
    assert found["parity"]["status"] == "pass"
    assert found["inputs"] == [{"name": "x", "shape": [1, 4], "dtype": "float32"}]


def test_crash_in_the_runtime_is_one_failed_artifact(onnx_file: tuple[Path, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path, ref = onnx_file
    monkeypatch.setenv("MOBILIZE_WORKER_FAULT", "SIGSEGV")
    found = inspect_and_verify(get("onnx"), path, "fp32", ref, ["x"])
    assert found["signal"] == "SIGSEGV"
    assert found["parity"]["status"] == "fail" and found["parity"]["could_not_run"] is True
    assert "crashed (SIGSEGV)" in found["parity"]["reason"]


def test_timeout_and_memory_limit(onnx_file: tuple[Path, Path]) -> None:
    path, ref = onnx_file
    job = {"op": "verify", "format": "onnx", "path": str(path), "precision": "fp32", "reference": str(ref),
           "input_names": ["x"]}
    with pytest.raises(isolate.WorkerDied, match="timed out"):
        isolate.run(job, timeout=0.01)
    with pytest.raises(isolate.WorkerDied):
        isolate.run(job, memory_mb=64)  # not even numpy fits: the child dies, the parent reports it


def test_unreadable_file_is_reported_not_raised(tmp_path: Path, onnx_file: tuple[Path, Path]) -> None:
    _, ref = onnx_file
    bad = tmp_path / "bad.onnx"
    data = onnx_file[0].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    found = inspect_and_verify(get("onnx"), bad, "fp32", ref, ["x"])
    assert found["parity"]["status"] == "fail" and found["parity"]["could_not_run"]
    assert np.isfinite(len(found["parity"]["reason"]))


def _busy_lane(pool: isolate.Pool, key: str) -> None:
    import time

    for _ in range(3000):  # until the lane's thread has handed the job to a started worker
        lane = pool._lanes.get(key)
        if lane is not None and lane.busy and lane.proc is not None:
            return
        time.sleep(0.01)
    raise AssertionError("the worker never started its job")


def test_closing_the_pool_ends_an_idle_worker_at_the_end_of_its_input(onnx_file: tuple[Path, Path]) -> None:
    path, ref = onnx_file
    job = {"op": "verify", "format": "onnx", "path": str(path), "precision": "fp32", "reference": str(ref),
           "input_names": ["x"]}
    with isolate.pool() as p:
        assert isolate.run(job)["parity"]["status"] == "pass"
        proc = p._lanes["onnx"].proc
    assert proc is not None and proc.returncode == 0


def test_closing_the_pool_kills_a_worker_still_warming_up() -> None:
    """An export that fails on its first step (a missing file) closes the pool while the workers still import their
    runtimes: they are killed, not waited for (each once cost the failing command up to 5 s)."""
    with isolate.pool() as p:
        warming = p.submit("onnx", {"op": "warm", "formats": ["onnx", "tflite", "coreml"]})
        _busy_lane(p, "onnx")
        proc = p._lanes["onnx"].proc
    assert proc is not None and proc.returncode == -9
    with pytest.raises(isolate.WorkerDied):
        warming.result()


def test_a_job_whose_worker_had_not_started_when_the_pool_closed_starts_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool closes between a lane's thread taking a job and starting its worker (a failing export does this with
    the warm-up job): the worker is never started. It used to start after the close had looked, so nothing ended it
    and the close waited for it (a fuzzed failing export: 0.1 s → 5 s each)."""
    import threading

    real = isolate._Lane._execute
    closing: list[threading.Thread] = []

    def close_first(lane: isolate._Lane, job: dict, timeout: float) -> dict:
        t = threading.Thread(target=lane.pool.close)  # the pool closes now, from another thread
        closing.append(t)
        t.start()
        while not lane.stopping:
            t.join(0.01)
        return real(lane, job, timeout)

    monkeypatch.setattr(isolate._Lane, "_execute", close_first)
    p = isolate.Pool()
    warming = p.submit("onnx", {"op": "warm", "formats": ["onnx"]})
    with pytest.raises(isolate.WorkerDied, match="closed"):
        warming.result()
    closing[0].join()
    assert p.started == 0 and p._lanes["onnx"].proc is None
