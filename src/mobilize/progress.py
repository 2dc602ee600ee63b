"""Progress reporting shared by every long command.

Work reports through a plain ``on_step(str)`` callback (the API's ``on_step``). Three kinds of message, all ``str``:

- :class:`Step` — a numbered step of the command's plan (``Step("exporting onnx fp16", 5, 9)``); ``n`` is the total
  where the command knows it up front (export: the fixed steps plus formats × precisions; verify: the files; check:
  export or verify, then bench and judging; bench: its stages once the bundle is read), else None. :class:`Plan`
  hands them out;
- :class:`Done` — a finished unit of work (an artifact exported and verified): the CLI keeps it on screen as a line;
- a plain ``str`` — what runs now inside the current step (``verifying onnx fp32``, a quantizer's search).

:class:`Reporter` is what the CLI passes as the callback:

- in a terminal, a live line with a spinner, the elapsed time, the step ``k/n`` and what runs now
  (``[00:12] step 3/9 · converting coreml fp16…``); finished units print above it as
  ``[00:12] onnx fp16 exported 3.10 MB, parity pass (3/12)``;
- when stderr is not a terminal (CI logs, pipes), one timestamped line per message on stderr, flushed at once, so a
  log never stays silent during a long export; numbered steps read ``[00:12] step 3/9 · exporting coreml fp16``;
- ``quiet``: nothing (errors are still printed by the caller).

A command without a plan sends plain messages only; the live line then counts them (``step 4 · …``) and shows no
total: a total is shown only when the command knows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

StepCallback = Callable[[str], None]


class Done(str):
    """A step message that reports finished work (kept on screen), not the work now running."""

    __slots__ = ()


class Step(str):
    """Step ``k`` of ``n`` (None: the total is not known yet) of the command's plan."""

    k: int
    n: int | None

    def __new__(cls, text: str, k: int, n: int | None = None) -> Step:
        self = super().__new__(cls, text)
        self.k, self.n = k, n
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # a Step sent from a worker process keeps its numbers
        return (Step, (str(self), self.k, self.n))

    @property
    def tally(self) -> str:
        """``3/9``, or ``3`` when the total is not known."""
        return f"{self.k}/{self.n}" if self.n is not None else str(self.k)


class Plan:
    """Numbers the steps of one command: ``plan = Plan(step, total)``, then ``plan("capturing")`` per step.

    ``total`` may be set later (``plan.total = …``) once the command knows it; until then the steps carry no total.
    Calling it more often than ``total`` is a bug in the command's count (tests hold each command to its plan).
    """

    def __init__(self, on_step: StepCallback, total: int | None = None) -> None:
        self.on_step = on_step
        self.total = total
        self.k = 0

    def __call__(self, text: str) -> None:
        self.k += 1
        self.on_step(Step(text, self.k, self.total))


class Nested:
    """The callback for a sub-command whose steps are the first of a longer plan: its ``Step(k, n)`` pass on as
    ``Step(k, n + after)`` (the caller runs ``after`` more steps); other messages pass unchanged. ``k`` and ``n``:
    the last step it numbered and the sub-command's own total (0 and None before its first step)."""

    def __init__(self, on_step: StepCallback, *, after: int) -> None:
        self.on_step, self.after = on_step, after
        self.k, self.n = 0, None  # type: tuple[int, int | None]

    def __call__(self, message: str) -> None:
        if isinstance(message, Step):
            self.k, self.n = message.k, message.n
            message = Step(message, message.k, None if message.n is None else message.n + self.after)
        self.on_step(message)

    def then(self, text: str) -> None:
        """The caller's next step after the sub-command's."""
        self.k += 1
        self.on_step(Step(text, self.k, None if self.n is None else self.n + self.after))


def as_details(on_step: StepCallback) -> StepCallback:
    """The callback for a sub-command that is one step of a longer plan: its own numbered steps become what runs now
    inside that step (``describing the machine (2/5)``)."""

    def forward(message: str) -> None:
        if isinstance(message, Step):
            message = f"{message} ({message.tally})"
        on_step(message)

    return forward


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
        self.steps = 0  # messages about running work (not Done)
        self.step: Step | None = None  # the last numbered step, once the command sends one
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

    def _count(self) -> str:
        return self.step.tally if self.step is not None else str(self.steps)

    def _line(self) -> str:
        from rich.markup import escape

        return f"{self.elapsed()} step {self._count()} · {escape(self._current)}…"

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        from rich.markup import escape

        if isinstance(message, Done):
            self.console.print(f"[dim]{self.elapsed()}[/] {escape(message)}")
        else:
            self.steps += 1
            self._current = message
            if isinstance(message, Step):
                self.step = message
            if self.live:
                self._status.update(self._line())
            elif isinstance(message, Step) and message.n is not None:
                self.console.print(f"[dim]{self.elapsed()}[/] step {message.tally} · {escape(message)}")
            else:
                self.console.print(f"[dim]{self.elapsed()}[/] {escape(message)}")
        if not self.live:
            self.console.file.flush()
