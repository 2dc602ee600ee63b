"""Run fragile or untrusted work in a child process.

Two kinds of child:

- **Workers** (:func:`run`) load and run a model *file* (ONNX, TFLite, Core ML): ``python -I -c … mobilize._worker``,
  a fresh, isolated interpreter — no current folder or ``PYTHON*`` variables on its import path, started in a
  private temporary folder — that reads a JSON job on stdin and writes a JSON result to a file. A bundle can hold a
  file named ``onnxruntime.py``: it is never imported. :func:`python_command` builds that command line for every
  interpreter mobilize starts (the workers, the memory probes of ``mobilize bench``).
- **Converters** (:func:`in_child`) run an exporter or a quantizer on the captured program: the child is a fork of
  this process, so it inherits the program without serialising it. A converter that aborts the process (LiteRT's
  "LLVM ERROR: IO failure"), segfaults or hangs costs one artifact; the others continue.

Either way a native runtime or converter that segfaults, aborts, hangs or allocates without bound takes down only
the child; the parent turns that into a failure of one artifact, with the signal or limit that ended it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mobilize.errors import OptionError

#: defaults of the environment variables that bound child processes
DEFAULT_TIMEOUT_S = 900.0
DEFAULT_MEMORY_MB = 0  # 0: no address-space limit
DEFAULT_CONVERT_TIMEOUT_S = 3600.0
_MAX_SECONDS = 7 * 24 * 3600.0
_MAX_MEMORY_MB = 1 << 30  # a petabyte: anything larger is a typo


def _env_number(name: str, default: float, *, integer: bool, lo: float, hi: float, example: str) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    text = raw.strip()
    kind = "a whole number" if integer else "a number of seconds"
    try:
        if not text or not text.isascii() or text.lower() in ("nan", "inf", "+inf", "-inf", "infinity"):
            raise ValueError
        value = float(int(text)) if integer else float(text)
    except ValueError:
        raise OptionError(f"environment variable {name}={raw!r} is not {kind}; set it to e.g. {example} (or unset "
                          "it for the default)") from None
    if not lo <= value <= hi:
        bound = f"between {lo:g} and {hi:g}" if integer else f"greater than 0 and at most {hi:g}"
        raise OptionError(f"environment variable {name}={raw!r} is out of range; give {kind} {bound}, e.g. "
                          f"{example}")
    return value


def worker_timeout() -> float:
    """``MOBILIZE_WORKER_TIMEOUT``: seconds a worker may take (default 900)."""
    return _env_number("MOBILIZE_WORKER_TIMEOUT", DEFAULT_TIMEOUT_S, integer=False, lo=1e-3, hi=_MAX_SECONDS,
                       example="900")


def worker_memory_mb() -> int:
    """``MOBILIZE_WORKER_MEMORY_MB``: a worker's address-space cap in MB (default 0: none)."""
    return int(_env_number("MOBILIZE_WORKER_MEMORY_MB", DEFAULT_MEMORY_MB, integer=True, lo=0, hi=_MAX_MEMORY_MB,
                           example="4096"))


def convert_timeout() -> float:
    """``MOBILIZE_CONVERT_TIMEOUT``: seconds one artifact's conversion (and quantization) may take (default 3600)."""
    return _env_number("MOBILIZE_CONVERT_TIMEOUT", DEFAULT_CONVERT_TIMEOUT_S, integer=False, lo=1e-3,
                       hi=_MAX_SECONDS, example="3600")


def check_environment() -> None:
    """Validate every ``MOBILIZE_*`` setting now (a one-line :class:`OptionError`), before any work is done."""
    worker_timeout()
    worker_memory_mb()
    convert_timeout()


class WorkerDied(Exception):
    """The child ended without a result: crashed (signal), was killed for a limit, or exited early."""

    def __init__(self, message: str, *, signal_name: str | None = None, log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.log_tail = log_tail or []


# --- isolated interpreters --------------------------------------------------------------------------------------

# Runs in the child (``python -I -c BOOT PATHS MODULE ARGS…``): the import path is exactly PATHS, then MODULE runs as
# ``python -m MODULE ARGS…`` would run it.
_BOOT = ("import sys, json, runpy; sys.path[:] = json.loads(sys.argv[1]); m = sys.argv[2]; "
         "sys.argv[:] = [m, *sys.argv[3:]]; runpy.run_module(m, run_name='__main__', alter_sys=True)")


def child_sys_path(*, keep_cwd: bool = False) -> list[str]:
    """This interpreter's import path without the current folder (``''``, ``.`` or its absolute path), plus the
    folder mobilize itself was imported from — so a child imports mobilize from wherever it is installed (site-
    packages, an editable install, ``PYTHONPATH``) and never a module that happens to sit in the current folder."""
    import mobilize

    cwd = os.path.realpath(os.getcwd())
    out: list[str] = []
    for entry in sys.path:
        if not keep_cwd and (not entry or os.path.realpath(entry) == cwd):
            continue
        if entry not in out:
            out.append(entry)
    home = str(Path(mobilize.__file__).resolve().parent.parent)
    if home not in out:
        out.append(home)
    return out


def python_command(module: str, *args: str, keep_cwd: bool = False) -> list[str]:
    """The argv that runs ``python -m module args…`` in an isolated interpreter (``-I``: no ``PYTHON*`` variables,
    no user site, no script folder on the path) whose import path is :func:`child_sys_path`. Start it with a
    neutral working folder (``cwd=``), never the user's: files there must not be importable."""
    return [sys.executable, "-I", "-c", _BOOT, json.dumps(child_sys_path(keep_cwd=keep_cwd)), module, *args]


_PATH_KEYS = ("path", "reference", "result_path")


def run(job: dict[str, Any], *, timeout: float | None = None, memory_mb: int | None = None,
        key: str | None = None) -> dict[str, Any]:
    """Run ``job`` in an isolated worker and return its JSON result, or raise :class:`WorkerDied`.

    Inside a :func:`pool` block the job goes to that pool's worker for ``key`` (default: the job's format), a process
    reused from one file to the next; otherwise a fresh worker runs it alone.

    Raises ``OSError(ENOSPC)`` when the worker could not write its result because the disk is full (that is not a
    fault of the file being checked)."""
    active = _ACTIVE.get()
    if active is not None:
        return active.run(key or str(job.get("format") or "any"), job, timeout=timeout)
    timeout = worker_timeout() if timeout is None else timeout
    memory_mb = worker_memory_mb() if memory_mb is None else memory_mb
    with tempfile.TemporaryDirectory(prefix="mobilize-worker-") as tmp:
        result_path = Path(tmp) / "result.json"
        log_path = Path(tmp) / "log.txt"
        job = _absolute({**job, "result_path": str(result_path), "memory_mb": memory_mb})
        cwd = Path(tmp) / "cwd"
        cwd.mkdir()

        with log_path.open("wb") as log:
            try:
                proc = subprocess.run(python_command("mobilize._worker"), input=json.dumps(job).encode(),
                                      stdout=log, stderr=log, timeout=timeout, env=_worker_env(), cwd=cwd,
                                      check=False)
            except subprocess.TimeoutExpired:
                raise WorkerDied(f"timed out after {timeout:g} s", log_tail=_tail(log_path)) from None
        return _outcome(result_path, log_path, proc.returncode, 0)


def _absolute(job: dict[str, Any]) -> dict[str, Any]:
    """The job with every path absolute — its own and its ``items``' (a timing job's files): the worker starts in its
    own folder, where relative paths would not resolve."""
    for key in _PATH_KEYS:
        if job.get(key):
            job[key] = os.path.abspath(job[key])
    if isinstance(job.get("items"), list):
        job["items"] = [_absolute(dict(it)) if isinstance(it, dict) else it for it in job["items"]]
    return job


def _worker_env() -> dict[str, str]:
    """A worker's environment: the runtimes' C++ logs off, and NumPy's BLAS on one thread unless the user set it —
    workers run beside each other and beside the converter children, and the Core ML reference interpreter's
    products on every core of a busy machine ran 5× slower than on one (docs/coreml-reference.md#speed)."""
    return {"OPENBLAS_NUM_THREADS": "1", **os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3"}


def _outcome(result_path: Path, log_path: Path, rc: int | None, since: int) -> dict[str, Any]:
    """The job's result, or the :class:`WorkerDied` (or disk-full ``OSError``) that explains why there is none."""
    if result_path.is_file():
        try:
            return json.loads(result_path.read_text())
        except ValueError:
            pass
    tail = _tail(log_path, since=since)
    from mobilize.bundle.writer import raise_if_disk_full

    raise_if_disk_full(None, "\n".join(tail), where="the verification worker's result")
    if rc is not None and rc < 0:
        name = _signal_name(-rc)
        raise WorkerDied(f"the runtime crashed ({name})", signal_name=name, log_tail=tail)
    if any("MemoryError" in ln or "std::bad_alloc" in ln for ln in tail):
        raise WorkerDied("the runtime ran out of memory", log_tail=tail)
    raise WorkerDied(f"the worker exited with code {rc} without a result", log_tail=tail)


# --- pooled workers ------------------------------------------------------------------------------------------------

_ACTIVE: contextvars.ContextVar[Pool | None] = contextvars.ContextVar("mobilize_worker_pool", default=None)


@contextlib.contextmanager
def pool(*, timeout: float | None = None, memory_mb: int | None = None) -> Iterator[Pool]:
    """A :class:`Pool` that :func:`run` uses inside the block; its workers end with the block."""
    p = Pool(timeout=timeout, memory_mb=memory_mb)
    token = _ACTIVE.set(p)
    try:
        yield p
    finally:
        _ACTIVE.reset(token)
        p.close()


def active_pool() -> Pool | None:
    """The pool of the enclosing :func:`pool` block, if any."""
    return _ACTIVE.get()


class Pool:
    """Isolated workers kept alive for a whole export or verify: one per key (a format's runtime), each running its
    jobs one at a time in order, on a thread of this process, so verification overlaps the next conversion.

    Each worker is the same isolated interpreter :func:`run` starts (``-I``, mobilize's own import path, a private
    working folder) and the same limits apply: ``MOBILIZE_WORKER_TIMEOUT`` per job, ``MOBILIZE_WORKER_MEMORY_MB``
    per process. A job whose worker crashes, hangs or exits raises :class:`WorkerDied` for that job only; the next
    job of that key starts a fresh worker, so one bad file never poisons the next one's verdict.
    """

    def __init__(self, *, timeout: float | None = None, memory_mb: int | None = None) -> None:
        self.timeout = worker_timeout() if timeout is None else timeout
        self.memory_mb = worker_memory_mb() if memory_mb is None else memory_mb
        self._tmp = Path(tempfile.mkdtemp(prefix="mobilize-workers-"))
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.started = 0  # worker processes started (a test and the docs read it)

    def _lane(self, key: str) -> _Lane:
        with self._lock:
            if key not in self._lanes:
                self._lanes[key] = _Lane(self, key)
            return self._lanes[key]

    def submit(self, key: str, job: dict[str, Any], *, timeout: float | None = None) -> Future[dict[str, Any]]:
        """Queue ``job`` on ``key``'s worker; the future's result is the job's result (or :class:`WorkerDied`)."""
        return self._lane(key).executor.submit(self._lane(key).execute, dict(job),
                                               self.timeout if timeout is None else timeout)

    def run(self, key: str, job: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        return self.submit(key, job, timeout=timeout).result()

    def warm(self, key: str, formats: Sequence[str]) -> None:
        """Start ``key``'s worker now and have it import what ``formats``' jobs need (in the background)."""
        self.submit(key, {"op": "warm", "formats": list(formats)})

    def close(self) -> None:
        """Cancel queued jobs, end every worker (end of input, then SIGKILL after a grace period)."""
        lanes = list(self._lanes.values())
        for lane in lanes:
            lane.executor.shutdown(wait=False, cancel_futures=True)
        for lane in lanes:  # every worker is told first, so they end side by side
            lane.stop()
        for lane in lanes:
            lane.reap()
        for lane in lanes:
            lane.executor.shutdown(wait=True)
        import shutil

        shutil.rmtree(self._tmp, ignore_errors=True)


class _Lane:
    """One key's worker process and the single thread that feeds it."""

    def __init__(self, pool: Pool, key: str) -> None:
        self.pool = pool
        self.key = key
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mobilize-worker-{key}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.done_fd = -1
        self.log_path = Path()
        self.stopping = False
        self.busy = False  # a job is running on the worker (read by :meth:`stop` from another thread)
        self._starting = threading.Lock()  # a worker is started only before :meth:`stop`, never after

    def _start(self) -> None:
        n = next(self.pool._seq)
        tag = "".join(c if c.isalnum() else "_" for c in self.key)[:40]
        self.log_path = self.pool._tmp / f"{tag}-{n}.log"
        cwd = self.pool._tmp / f"cwd-{tag}-{n}"
        cwd.mkdir()
        read_fd, write_fd = os.pipe()
        try:
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    python_command("mobilize._worker", "--serve", str(write_fd), str(int(self.pool.memory_mb))),
                    stdin=subprocess.PIPE, stdout=log, stderr=log, env=_worker_env(), cwd=cwd,
                    pass_fds=(write_fd,))
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.done_fd = read_fd
        self.pool.started += 1

    def _end(self, *, kill: bool) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.close()  # type: ignore[union-attr]
        if kill:
            with contextlib.suppress(OSError):
                proc.kill()
        try:
            rc = proc.wait(timeout=None if kill else 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.done_fd)
        self.done_fd = -1
        return rc

    def stop(self) -> None:
        """Tell the worker to end (:meth:`reap` waits for it): an idle one at the end of its input; a busy one — still
        warming up, or on a job whose caller has gone (the pool closes on an error) — at once: it would only read the
        end of its input after finishing work nobody waits for (an export that fails on its first step used to wait
        5 s here)."""
        with self._starting:
            self.stopping = True
            proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()  # type: ignore[union-attr]
            if self.busy:
                with contextlib.suppress(OSError):
                    proc.kill()

    def reap(self) -> None:
        """Wait for the worker :meth:`stop` told to end; SIGKILL after a grace period."""
        proc = self.proc
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def execute(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.busy = True  # before looking at `stopping`: a close either sees this (and kills) or is seen here
        try:
            if self.stopping:
                raise WorkerDied("the worker pool was closed")
            return self._execute(job, timeout)
        finally:
            self.busy = False

    def _execute(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self._end(kill=True)
            with self._starting:  # a pool closing meanwhile would not see (nor end) a worker started after it
                if self.stopping:
                    raise WorkerDied("the worker pool was closed")
                self._start()
        assert self.proc is not None and self.proc.stdin is not None
        result_path = self.pool._tmp / f"result-{next(self.pool._seq)}.json"
        job = _absolute({**job, "result_path": str(result_path), "memory_mb": self.pool.memory_mb})
        since = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            self.proc.stdin.write(json.dumps(job).encode() + b"\n")
            self.proc.stdin.flush()
            finished = self._wait_done(timeout)
        except (BrokenPipeError, ConnectionResetError):
            finished = False
        except _Timeout:
            self._end(kill=True)
            raise WorkerDied(f"timed out after {timeout:g} s", log_tail=_tail(self.log_path, since=since)) from None
        try:
            if finished:
                return _outcome(result_path, self.log_path, None, since)
            rc = self._end(kill=False)
            return _outcome(result_path, self.log_path, rc, since)
        finally:
            result_path.unlink(missing_ok=True)

    def _wait_done(self, timeout: float) -> bool:
        """True when the worker reported the job done; False when it ended first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout
            ready, _, _ = select.select([self.done_fd], [], [], min(left, 1.0))
            if not ready:
                # a forked converter child may hold a copy of the pipe's write end: do not wait for its EOF
                if self.proc is not None and self.proc.poll() is not None:
                    ready, _, _ = select.select([self.done_fd], [], [], 0)
                    return bool(ready) and bool(os.read(self.done_fd, 64))
                continue
            data = os.read(self.done_fd, 64)
            return bool(data)


class _Timeout(Exception):
    pass


def _signal_name(num: int) -> str:
    return signal.Signals(num).name if num in {s.value for s in signal.Signals} else f"signal {num}"


def _tail(path: Path, n: int = 5, since: int = 0) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(max(since, path.stat().st_size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if ln.strip()][-n:]


# --- converters in a forked child --------------------------------------------------------------------------------


class ConverterDied(Exception):
    """The converter's child process ended without a result: killed by a signal (``abort()``, a segfault), timed
    out, or exited early. A failure of one artifact, like an exception raised by the converter."""

    def __init__(self, message: str, *, signal_name: str | None = None) -> None:
        super().__init__(message)
        self.signal_name = signal_name


def forking_available() -> bool:
    """Converters run in a forked child on Linux. macOS's system frameworks are not fork-safe once loaded, and
    Windows has no fork: there they run in this process (a converter crash then ends the run; the previous bundle
    survives). So do they in a process that has already started JAX's runtime (an earlier in-process LiteRT
    conversion, e.g. by a program embedding mobilize): a forked copy of its thread pools deadlocks on first use.
    The ``mobilize`` command never starts JAX in its own process."""
    return hasattr(os, "fork") and sys.platform.startswith("linux") and not _jax_started()


def _jax_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


#: held from a child's pipe until the parent closed its write end, so no sibling forked from another thread
#: inherits that end (the parent reads a child's pipe until EOF)
_FORK_LOCK = threading.Lock()
#: converter children alive now (pid → label), so :class:`ChildBatch` can stop them all on an interrupt
_LIVE: dict[int, str] = {}


def in_child(fn: Callable[[Callable[[str], None]], Any], *, label: str, on_step: Callable[[str], None] | None = None,
             timeout: float | None = None, fork: bool | None = None, own_output: bool = False) -> Any:
    """``fn(step)`` in a forked child; returns its (pickled) result or raises its exception in this process.

    ``step`` forwards progress messages to ``on_step`` here. The child computes with one torch thread (a forked
    OpenMP pool deadlocks), writes temporary files into a folder this process removes afterwards, and ends with
    ``os._exit`` (no cleanup of the parent's state runs twice). A child that dies, or outlives ``timeout``, raises
    :class:`ConverterDied`; an interrupt (Ctrl-C, SIGTERM) kills the child before it propagates.
    ``MOBILIZE_CONVERTER_FAULT`` (test hook, e.g. ``tflite:SIGABRT``) makes the child of a matching ``label`` kill
    itself with that signal, the way LiteRT's ``LLVM ERROR`` aborts. ``fork``: None decides with
    :func:`forking_available`; True/False force it. ``own_output``: the child captures its own stdout/stderr (a
    parent thread cannot redirect them while other children run) and the text comes back as the ``output``
    attribute of the :class:`ChildResult` returned, or of the exception raised.
    """
    step = on_step or (lambda _m: None)
    if not (forking_available() if fork is None else fork):
        if not own_output:
            return fn(step)
        from mobilize._quiet import captured_output

        started = time.perf_counter()
        log = None
        try:
            with captured_output() as log:
                value = fn(step)
        except Exception as exc:
            exc.output = log.text if log is not None else ""  # type: ignore[attr-defined]
            exc.seconds = time.perf_counter() - started  # type: ignore[attr-defined]
            raise
        return ChildResult(value, log.text, time.perf_counter() - started)
    timeout = convert_timeout() if timeout is None else timeout
    _remove_stale_scratch()
    scratch = tempfile.mkdtemp(prefix=f"mobilize-convert-{os.getpid()}-")
    log_path = Path(scratch) / "output.log" if own_output else None
    started = time.perf_counter()
    with _FORK_LOCK:
        read_fd, write_fd = os.pipe()
        from mobilize._quiet import flush_standard_streams

        flush_standard_streams()  # the child must not write the parent's buffered text again
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            _child_main(fn, label, write_fd, scratch, log_path)
        os.close(write_fd)
        _LIVE[pid] = label
    output = ""
    try:
        outcome = _read_messages(read_fd, step, timeout)
    except BaseException:  # timeout, Ctrl-C, SIGTERM: the child must not outlive this call
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(read_fd)
        try:
            status = _reap(pid)
        finally:
            import shutil

            _LIVE.pop(pid, None)
            if log_path is not None:
                with contextlib.suppress(OSError):
                    output = log_path.read_bytes().decode("utf-8", "replace")
            shutil.rmtree(scratch, ignore_errors=True)
    if outcome is not None:
        kind, value = outcome
        if kind == "result":
            return ChildResult(value, output, time.perf_counter() - started) if own_output else value
        exc = _rebuild(value)
    elif os.WIFSIGNALED(status):
        name = _signal_name(os.WTERMSIG(status))
        exc = ConverterDied(f"the converter process crashed ({name})", signal_name=name)
    else:
        exc = ConverterDied(f"the converter process exited with code {os.WEXITSTATUS(status)} without a result")
    if own_output:
        exc.output, exc.seconds = output, time.perf_counter() - started  # type: ignore[attr-defined]
    raise exc


@dataclasses.dataclass
class ChildResult:
    """What :func:`in_child` returns with ``own_output``: the function's result, what the child printed and the
    seconds from fork to exit."""

    value: Any
    output: str
    seconds: float


class ChildBatch:
    """Converter children run side by side, up to ``jobs`` at a time: each :meth:`submit` is one :func:`in_child`
    (with ``own_output``) waited on by a thread of this batch; the futures resolve to :class:`ChildResult` or raise
    the child's exception. Leaving the ``with`` block by an exception (Ctrl-C, SIGTERM, a bug) kills every converter
    child still running before it propagates; leaving it normally waits for them."""

    def __init__(self, jobs: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="mobilize-convert")

    def submit(self, fn: Callable[[Callable[[str], None]], Any], *, label: str) -> Future[ChildResult]:
        return self._pool.submit(in_child, fn, label=label, own_output=True)

    def __enter__(self) -> ChildBatch:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            with _FORK_LOCK:  # no child is being forked now; each waiting thread then sees its child's pipe close
                for pid in list(_LIVE):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)


def _remove_stale_scratch() -> None:
    """Temporary folders of converter children whose mobilize process was killed (SIGKILL cannot clean up)."""
    import shutil

    from mobilize.bundle.writer import _pid_alive

    for p in Path(tempfile.gettempdir()).glob("mobilize-convert-*-*"):
        pid = p.name.split("-")[2]
        if pid.isdigit() and p.is_dir() and not p.is_symlink() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _reap(pid: int) -> int:
    try:
        return os.waitpid(pid, 0)[1]
    except BaseException:  # interrupted while waiting: stop the child, then let the interrupt through
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise


def _send(fd: int, message: tuple[str, Any]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    payload = struct.pack("<Q", len(data)) + data
    view = memoryview(payload)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _child_main(fn: Callable[[Callable[[str], None]], Any], label: str, fd: int, scratch: str,
                log_path: Path | None = None) -> None:
    global _FORK_LOCK
    _FORK_LOCK = threading.Lock()  # the forking thread's lock was copied held: this process starts its own
    _LIVE.clear()
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from mobilize import _quiet

        own = log_path is not None and not _quiet.is_verbose()
        if own and log_path is not None:  # its own capture (see in_child's own_output)
            out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.close(out)
        if own or _unusable(sys.stdout) or _unusable(sys.stderr):
            # sys.stdout/err as inherited may be another thread's capture (mobilize._quiet.captured_output swaps
            # them process-wide), even one closed just before this fork; Python-level prints go to fds 1 and 2
            sys.stdout = sys.stderr = open(1, "w", encoding="utf-8", errors="replace", buffering=1,  # noqa: SIM115
                                           closefd=False)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
        tempfile.tempdir = scratch
        os.environ["TMPDIR"] = scratch
        if not _quiet.is_verbose():  # a crash is reported by the parent; no Python stack dump on the terminal
            import faulthandler

            faulthandler.disable()
        _quiet.quiet_imports()  # the converters the parent imported (api.preload_converter), silenced here only
        _fault_hook(label)
        result = fn(lambda msg: _send(fd, ("step", str(msg))))
        try:
            _send(fd, ("result", result))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            _send(fd, ("error", _describe(exc)))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent as data
        with contextlib.suppress(BaseException):
            from mobilize import _quiet

            if _quiet.is_verbose():
                import traceback

                traceback.print_exc()
            _send(fd, ("error", _describe(exc)))
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(0)


def _unusable(stream: Any) -> bool:
    return stream is None or bool(getattr(stream, "closed", False))


def _fault_hook(label: str) -> None:
    spec = os.environ.get("MOBILIZE_CONVERTER_FAULT", "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        prefix, _, name = item.rpartition(":")
        if prefix and not label.startswith(prefix):
            continue
        if name == "SIGABRT":
            os.write(2, f"LLVM ERROR: IO failure (simulated by MOBILIZE_CONVERTER_FAULT for {label})\n".encode())
            os.abort()
        os.kill(os.getpid(), getattr(signal, name))


def _describe(exc: BaseException) -> dict[str, Any]:
    """The child's exception as data the parent can rebuild (the exception itself when it survives pickling)."""
    from mobilize.errors import ConversionError

    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc), "pickled": None,
                            "errno": getattr(exc, "errno", None) if isinstance(exc, OSError) else None,
                            "filename": getattr(exc, "filename", None) if isinstance(exc, OSError) else None,
                            "chain": []}
    if isinstance(exc, ConversionError):
        info["conversion"] = {"format": exc.format, "ops": list(exc.ops), "modules": list(exc.modules),
                              "repairs": list(getattr(exc, "repairs", None) or [])}  # mobilize.repair's records
    cause: BaseException | None = exc
    for _ in range(8):  # disk-full causes hide under converter wrappers: keep the chain's errnos and messages
        cause = cause.__cause__ or cause.__context__ if cause is not None else None
        if cause is None:
            break
        info["chain"].append({"type": type(cause).__name__, "message": str(cause)[:2000],
                              "errno": getattr(cause, "errno", None) if isinstance(cause, OSError) else None})
    with contextlib.suppress(Exception):
        data = pickle.dumps(exc)
        pickle.loads(data)
        info["pickled"] = data
    return info


class ChildError(Exception):
    """Stands for an exception raised in a converter child that could not be rebuilt as its own type."""


def _rebuild(info: dict[str, Any]) -> BaseException:
    from mobilize.errors import ConversionError

    exc: BaseException
    if "conversion" in info:
        c = info["conversion"]
        exc = ConversionError(info["message"], format=c["format"], ops=c["ops"], modules=c["modules"])
        exc.repairs = c.get("repairs") or []  # type: ignore[attr-defined]
    elif info["pickled"] is not None:
        exc = pickle.loads(info["pickled"])
    elif info["errno"] is not None:
        exc = OSError(info["errno"], info["message"], info["filename"])
    else:
        exc = type(info["type"], (ChildError,), {})(info["message"])
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
        exc = type(info["type"], (ChildError,), {})(info["message"] or info["type"])
    exc.child_chain = info["chain"]  # type: ignore[union-attr]
    return exc


def _read_messages(fd: int, step: Callable[[str], None], timeout: float) -> tuple[str, Any] | None:
    """Read the child's messages until it closes the pipe; forwards steps, returns the result/error message."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    outcome: tuple[str, Any] | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ConverterDied(f"the converter did not finish within {timeout:g} s (MOBILIZE_CONVERT_TIMEOUT); "
                                "it was stopped")
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return outcome
        buf += chunk
        while len(buf) >= 8:
            (n,) = struct.unpack_from("<Q", buf)
            if len(buf) < 8 + n:
                break
            kind, value = pickle.loads(bytes(buf[8 : 8 + n]))
            del buf[: 8 + n]
            if kind == "step":
                step(value)
            else:
                outcome = (kind, value)


if __name__ == "__main__":  # `python -m mobilize.isolate`: where a child imports mobilize from (a diagnostic)
    import mobilize

    print(json.dumps({"mobilize": mobilize.__file__, "cwd": os.getcwd(), "sys_path": sys.path}))
