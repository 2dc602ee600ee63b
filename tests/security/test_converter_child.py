"""Converters run in a forked child (``isolate.in_child``): results and exceptions come back, a crash, an abort or a
hang costs one call, an interrupt stops the child, and torch computes in the child without deadlocking."""

from __future__ import annotations

import errno
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mobilize import isolate
from mobilize.errors import ConversionError, Terminated

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="converters fork on Linux only"),
              pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")]  # JAX, if an earlier test loaded it


def _call(fn, **kw):  # noqa: ANN001, ANN202
    return isolate.in_child(fn, label="test fp32", fork=True, **kw)


def test_result_and_progress_come_back() -> None:
    steps: list[str] = []

    def work(step):  # noqa: ANN001, ANN202
        step("halfway")
        return {"pid": os.getpid(), "data": list(range(5))}

    got = _call(work, on_step=steps.append)
    assert got["data"] == [0, 1, 2, 3, 4] and got["pid"] != os.getpid()
    assert steps == ["halfway"]


def test_exceptions_are_rebuilt_with_their_type_and_details() -> None:
    def conversion(_s):  # noqa: ANN001, ANN202
        raise ConversionError("no converter for aten::fmod", format="onnx", ops=["aten::fmod"])

    with pytest.raises(ConversionError) as info:
        _call(conversion)
    assert info.value.ops == ["aten::fmod"] and info.value.format == "onnx"

    def full(_s):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info2:
        _call(full)
    assert info2.value.errno == errno.ENOSPC

    class Unpicklable(Exception):  # a local class cannot be pickled: rebuilt under the same name
        pass

    def odd(_s):  # noqa: ANN001, ANN202
        raise Unpicklable("odd failure")

    with pytest.raises(Exception, match="odd failure") as info3:
        _call(odd)
    assert type(info3.value).__name__ == "Unpicklable"


def test_sys_exit_in_the_child_is_an_exception_not_an_exit() -> None:
    with pytest.raises(Exception, match="42") as info:
        _call(lambda _s: sys.exit(42))
    assert not isinstance(info.value, SystemExit)


@pytest.mark.parametrize(("kill", "name"), [(os.abort, "SIGABRT"),
                                            (lambda: os.kill(os.getpid(), signal.SIGSEGV), "SIGSEGV")])
def test_a_crashing_converter_is_a_converter_died(kill, name: str) -> None:  # noqa: ANN001
    with pytest.raises(isolate.ConverterDied, match=rf"crashed \({name}\)") as info:
        _call(lambda _s: kill())
    assert info.value.signal_name == name


def test_the_fault_hook_aborts_the_matching_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILIZE_CONVERTER_FAULT", "other:SIGSEGV,test fp32:SIGABRT")
    with pytest.raises(isolate.ConverterDied, match="SIGABRT"):
        _call(lambda _s: 1)
    assert isolate.in_child(lambda _s: 2, label="unrelated fp16", fork=True) == 2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_hanging_converter_is_stopped_at_the_timeout() -> None:
    pids: list[str] = []
    with pytest.raises(isolate.ConverterDied, match="did not finish within"):
        _call(lambda s: (s(str(os.getpid())), time.sleep(60)), on_step=pids.append, timeout=1.0)
    assert pids and not _alive(int(pids[0]))


def test_an_interrupt_stops_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (raised as Terminated by the CLI's handler) while waiting: the child is killed before it propagates."""
    pids: list[str] = []

    def on_alarm(signum, frame):  # noqa: ANN001, ANN202
        raise Terminated()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(Terminated):
            _call(lambda s: (s(str(os.getpid())), time.sleep(60)), on_step=pids.append)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert pids and not _alive(int(pids[0]))


def test_torch_computes_in_the_child_after_the_parent_used_its_thread_pool() -> None:
    """A forked OpenMP pool deadlocks on first use; the child runs torch with one thread."""
    import torch

    x = torch.randn(512, 512)
    for _ in range(3):
        x @ x  # the parent's intra-op pool is now started
    threads, total = _call(lambda _s: (torch.get_num_threads(), float((x @ x).sum())), timeout=120)
    assert threads == 1 and total == pytest.approx(float((x @ x).sum()), rel=1e-4)


def test_temporary_files_of_the_child_are_removed() -> None:
    def work(_s):  # noqa: ANN001, ANN202
        fd, name = tempfile.mkstemp()
        os.close(fd)
        os.abort()  # crashes before it could clean up: the parent removes the child's temporary folder
        return name

    mine = f"mobilize-convert-{os.getpid()}-*"  # this process's children only (other test workers run beside it)
    before = set(Path(tempfile.gettempdir()).glob(mine))
    with pytest.raises(isolate.ConverterDied):
        _call(work)
    assert set(Path(tempfile.gettempdir()).glob(mine)) == before


def _prints(_s):  # noqa: ANN001, ANN202
    print("to stdout")
    sys.stderr.write("to stderr\n")
    return os.getpid()


def test_a_child_forked_after_another_thread_closed_its_capture_still_prints_to_its_own_log(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``_quiet.captured_output`` swaps sys.stdout/err process-wide and closes its stand-in on leaving; a converter
    thread of a side-by-side batch can fork in between. The fork must not trip over the closed stream (it once failed
    both TFLite conversions of an export with "I/O operation on closed file") and the child's prints go to its own
    log."""
    closed = (tmp_path / "closed.txt").open("w")
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    monkeypatch.setattr(sys, "stderr", closed)
    got = _call(_prints, own_output=True)
    assert got.value != os.getpid()
    assert got.output.splitlines() == ["to stdout", "to stderr"]


def test_side_by_side_children_print_to_their_own_logs_while_the_main_thread_captures(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The race itself: the main thread enters and leaves captures while the batch's threads fork children that
    print. Every child succeeds and its log holds its own lines only (not the main thread's capture). (Side by side
    always forks; an earlier test of this worker may have started JAX, which makes ``forking_available`` say no.)"""
    from mobilize._quiet import captured_output

    monkeypatch.setattr(isolate, "forking_available", lambda: True)

    with isolate.ChildBatch(2) as batch:
        futures = [batch.submit(_prints, label=f"test {k}") for k in range(24)]
        while not all(f.done() for f in futures):
            with captured_output():
                print("main thread's capture")
    outputs = [f.result().output for f in futures]
    assert all(out.splitlines() == ["to stdout", "to stderr"] for out in outputs), outputs
