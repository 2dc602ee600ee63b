"""Progress reporting shared by every long command.

Work reports through a plain ``on_step(str)`` callback (the API's ``on_step``). A message that is a :class:`Done`
marks a finished unit of work (an artifact exported and verified): the CLI keeps it on screen as a line, while other
messages only say what is running now. :class:`Reporter` is what the CLI passes as the callback:

- in a terminal, a live line with a spinner, the step count, the elapsed time and the current step; finished units
  print above it as ``[00:12] onnx fp16 exported 3.10 MB, parity pass (3/12)``;
- when stderr is not a terminal (CI logs, pipes), one timestamped line per step on stderr, flushed at once, so a log
  never stays silent during a long export;
- ``quiet``: nothing (errors are still printed by the caller).
"""

from __future__ import annotations

import time
from typing import Any


class Done(str):
    """A step message that reports finished work (kept on screen), not the work now running."""

    __slots__ = ()


def clock(seconds: float) -> str:
    """``[mm:ss]`` (``[h:mm:ss]`` past an hour) of elapsed time."""
    s = int(seconds)
    return f"[{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}]" if s >= 3600 else f"[{s // 60:02d}:{s % 60:02d}]"


class Reporter:
    """The ``on_step`` callback the CLI hands to the API (see the module docstring)."""

    def __init__(self, console: Any, *, live: bool, quiet: bool = False) -> None:
        self.console = console
        self.live = live and not quiet
        self.quiet = quiet
        self.steps = 0
        self.t0 = time.monotonic()
        self._status: Any = None
        self._current = "starting"

    def __enter__(self) -> Reporter:
        if self.live:
            self._status = self.console.status(self._line())
            self._status.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)
            self._status = None

    def elapsed(self) -> str:
        return clock(time.monotonic() - self.t0)

    def _line(self) -> str:
        from rich.markup import escape

        return f"{self.elapsed()} step {self.steps} · {escape(self._current)}…"

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        from rich.markup import escape

        if isinstance(message, Done):
            self.console.print(f"[dim]{self.elapsed()}[/] {escape(message)}")
        else:
            self.steps += 1
            self._current = message
            if self.live:
                self._status.update(self._line())
            else:
                self.console.print(f"[dim]{self.elapsed()}[/] {escape(message)}")
        if not self.live:
            self.console.file.flush()
