"""Ending a mobilize process without the interpreter's teardown.

A normal interpreter exit spends about a second of CPU freeing torch, Dynamo and the converters' modules (0.5 s for
``import torch`` alone, measured on the 2-core CI machine), work nobody sees. :func:`exit_now` does what a normal
exit does that anyone can observe — other threads joined, ``atexit`` handlers run (temporary folders, Ray, logging),
the standard streams flushed, the exit code kept — then ends with ``os._exit``. The ``mobilize`` command, the
pooled verification workers, the memory probes and the fleet's job processes end this way; every file they write is
closed (and renamed into place) before they call it.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int | str | None = 0) -> NoReturn:
    """Exit like ``raise SystemExit(code)`` at the top level would, without tearing down the modules."""
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls first at exit (joins threads)
    if shutdown is None or threading.current_thread() is not threading.main_thread():  # pragma: no cover
        raise SystemExit(code)
    shutdown()
    atexit._run_exitfuncs()
    if isinstance(code, str):  # SystemExit("message"): printed, exit code 1, as the interpreter does
        sys.stderr.write(code + "\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            if stream is sys.stdout and code == 0:
                code = 120  # the interpreter's code when flushing stdout at exit fails (e.g. a closed pipe)
    os._exit(code or 0)
