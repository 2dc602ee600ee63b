"""Atomic bundle writing: build in a hidden sibling folder, then swap it in with renames.

    out/            ← the user's bundle (old one, if any, stays intact until the very end)
    .out.tmp-PID-XXXX/  ← new bundle built here
    rename out → .out.old-PID-XXXX, rename .out.tmp-PID-XXXX → out, remove .out.old-PID-XXXX

A run killed with SIGKILL cannot clean up; the next run removes staging folders whose PID is gone.

If anything fails before the swap, the temporary folder is removed and ``out`` is untouched. A target that exists
but is not a mobilize bundle (no manifest.json) is never replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mobilize.errors import BundleError


def check_target(out: Path) -> None:
    """Refuse targets that are not ours to replace; raise :class:`BundleError` with what to do."""
    if out.is_symlink():
        raise BundleError(f"--out {out} is a symlink; give a real folder path (mobilize replaces the folder itself)")
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out {out} is a file, not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise BundleError(f"--out {out} is a non-empty folder that is not a mobilize bundle; choose an empty or new "
                          "folder (mobilize only replaces its own bundles)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise BundleError(f"--out {out}: parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise BundleError(f"--out {out}: parent folder {parent} is not writable")


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """Yield a fresh staging folder beside ``out``; on clean exit swap it in, on error discard it."""
    out = Path(out)
    check_target(out)
    parent = out.parent if str(out.parent) else Path(".")
    remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a bundle is an ordinary folder
    try:
        yield tmp
        from mobilize.guard import raise_if_interrupted

        raise_if_interrupted()  # an interrupt a library swallowed still means: keep the previous bundle
        _ordinary_permissions(tmp)
        _fsync_tree(tmp)
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale(out: Path) -> list[Path]:
    """Clean up after a run that was killed (its pid no longer exists): remove its staging folders, and if it died
    between the two renames of the swap, put the previous bundle back."""
    removed = []
    parent = out.parent if str(out.parent) else Path(".")
    for p in parent.glob(f".{glob_escape(out.name)}.*-*"):
        kind, _, rest = p.name[len(out.name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or not p.is_dir() or p.is_symlink():
            continue
        if _pid_alive(int(pid)):
            continue
        if kind == "old" and not out.exists() and not out.is_symlink() and (p / "manifest.json").is_file():
            os.rename(p, out)  # killed between the two renames: the previous bundle comes back
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends: the two renames of a swap happen together or not at all (an
    interrupt between them would leave no bundle at ``out`` until the next run restores it)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # no pthread_sigmask here, or not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def swap_in(tmp: Path, out: Path) -> None:
    with _signals_held():
        _swap_in(tmp, out)


def _swap_in(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
        old.rmdir()
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write one file atomically (temp file in the same folder + fsync + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _ordinary_permissions(root: Path) -> None:
    """Converters write some files 0600 / folders 0700 (coremltools does); a bundle is read by app builds and CI
    under other accounts, so everything gets the user's umask applied to 0666 / 0777."""
    mask = _umask()
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- a full disk is not a failure of one artifact ----------------------------------------------------------------

#: errnos meaning "the storage refused to take more data"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")
#: messages of converters that abort on a failed write without saying why ("LLVM ERROR: IO failure …")
_IO_FAILURE_TEXT = ("IO failure", "I/O error", "Input/output error")
_LOW_SPACE = 1 << 20


def disk_full(exc: BaseException | None, text: str = "", folders: tuple[Path, ...] = ()) -> bool:
    """Whether a failure was the disk filling up: an ``OSError`` with ENOSPC/EDQUOT/EFBIG anywhere in the chain
    (also the chain of an exception rebuilt from a converter child), a converter message saying so, or a vague
    I/O failure or crash while one of ``folders`` has (almost) no space left."""
    messages = [text]
    seen: set[int] = set()
    node = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, OSError) and node.errno in _FULL_ERRNOS:
            return True
        messages.append(str(node))
        for link in getattr(node, "child_chain", None) or []:
            if link.get("errno") in _FULL_ERRNOS:
                return True
            messages.append(str(link.get("message", "")))
        node = node.__cause__ or node.__context__
    joined = "\n".join(messages)
    if any(t in joined for t in _FULL_TEXT):
        return True
    crashed = exc is not None and getattr(exc, "signal_name", None) is not None
    vague = any(t in joined for t in _IO_FAILURE_TEXT)
    return (crashed or vague) and any(_free_bytes(f) < _LOW_SPACE for f in folders)


def _free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return 1 << 62
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def raise_if_disk_full(exc: BaseException | None, text: str = "", *, where: str,
                       folders: tuple[Path, ...] = ()) -> None:
    """Raise ``OSError(ENOSPC)`` when :func:`disk_full` says so: the run must stop and leave the previous bundle in
    place, instead of recording the artifact as failed and replacing a good bundle with a worse one."""
    if disk_full(exc, text, (*folders, Path(tempfile.gettempdir()))):
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} while writing {where}") from exc
