"""What every ``mobilize`` command does before and after its work, so that no run ends half-done.

- :func:`start_cli`: SIGTERM unwinds like Ctrl-C (a :class:`~mobilize.errors.Terminated` exception: staging folders
  are removed, child processes stopped, exit 143), and the ``MOBILIZE_*`` environment is validated.
- :func:`check_outputs`: ``--json``, ``--junit``, ``--summary``, ``--report-dir`` targets are checked before anything
  is loaded or written — an unwritable target fails the run while the previous bundle is still untouched.
- :func:`write_output`: those files are then written atomically; a failure is a one-line error.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from mobilize.errors import MobilizeInputError, Terminated

#: set by the CLI's SIGINT/SIGTERM handlers: the exception they raise can be swallowed by a library's bare ``except:``
#: (say, around an optional import), so the bundle swap also checks this latch before replacing anything
_INTERRUPTED: list[BaseException] = []


def _on_sigterm(signum: int, frame: Any) -> None:
    exc = Terminated()
    _INTERRUPTED.append(exc)
    raise exc


def _on_sigint(signum: int, frame: Any) -> None:
    exc = KeyboardInterrupt()
    _INTERRUPTED.append(exc)
    raise exc


def raise_if_interrupted() -> None:
    """Re-raise an interrupt the CLI received, in case the code it was raised in swallowed it."""
    if _INTERRUPTED:
        raise _INTERRUPTED[0]


def start_cli() -> None:
    """Install the SIGINT/SIGTERM handlers (main thread only) and validate the environment (one-line error, exit 2)."""
    from mobilize.isolate import check_environment

    _INTERRUPTED.clear()  # one command, one latch (CliRunner runs several in one process)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
    check_environment()


def check_outputs(*targets: tuple[str, Path | str | None], folders: tuple[tuple[str, Path | str | None], ...] = ()
                  ) -> None:
    """Refuse output files (``(flag, path)``) and folders that cannot be written, before any work is done."""
    from mobilize.safeio import check_output_dir, check_output_file

    for flag, path in targets:
        if path is not None and str(path) == "-":  # standard output
            continue
        check_output_file(path, flag)
    for flag, path in folders:
        check_output_dir(path, flag)


def write_output(path: Path | str, text: str | bytes, flag: str) -> None:
    """Write one output file atomically (temp file + rename); an OS failure is a one-line input error. ``-`` is
    standard output (the CLI then prints its tables on stderr)."""
    import sys

    from mobilize.bundle.writer import write_atomic

    data = text.encode() if isinstance(text, str) else text
    if str(path) == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        write_atomic(Path(path), data)
    except OSError as exc:
        raise MobilizeInputError(f"{flag} {path}: could not write it ({exc.strerror or exc})") from None

