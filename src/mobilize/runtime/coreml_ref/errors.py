"""Typed errors of the reference interpreter. Every message is one line that names the file and what is wrong."""

from __future__ import annotations

from mobilize.errors import RuntimeFailure, RuntimeUnavailable


class PackageError(RuntimeFailure):
    """The ``.mlpackage`` is not a readable ML Program (no manifest, no model spec, unsupported value types)."""


class WeightFileError(PackageError):
    """``weight.bin`` is missing, truncated, or a blob reference points outside it or at a bad header."""


class UnsupportedOpsError(RuntimeUnavailable):
    """The program uses ops (or op parameters) the interpreter does not implement; ``ops`` lists every one.

    A subclass of :class:`~mobilize.errors.RuntimeUnavailable`: parity becomes ``unverified`` (never a silent pass).
    """

    def __init__(self, message: str, ops: list[str]) -> None:
        super().__init__(message)
        self.ops = ops


class ExecutionError(RuntimeFailure):
    """An op failed while the interpreter ran the program (names the op and its output)."""
