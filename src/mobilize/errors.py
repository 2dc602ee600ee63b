"""mobilize's exception types.

Every error a user can cause is a :class:`MobilizeInputError` (a ``ValueError``): the CLI prints its one-line
message and exits 2. Failures of a converter or runtime on a valid model are :class:`ConversionError` /
:class:`RuntimeFailure`; they are recorded per artifact instead of aborting the whole run.
"""

from __future__ import annotations


def one_line(value: object, limit: int = 300) -> str:
    """``str(value)`` with all white space folded to single spaces, cut to ``limit`` characters (ending in "…").

    Converter and runtime messages span many lines; mobilize's errors are one line each.
    """
    text = " ".join(str(value).split()) or (type(value).__name__ if isinstance(value, BaseException) else "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: BaseException, limit: int = 300) -> str:
    """``"TypeName: message"`` on one line, at most ``limit`` characters."""
    return one_line(f"{type(exc).__name__}: {one_line(exc, limit)}", limit)


class MobilizeError(Exception):
    """Base of every exception mobilize raises on purpose."""


class MobilizeInputError(MobilizeError, ValueError):
    """The user's input (a source, a file, a flag, a bundle) is unusable. CLI exit code 2."""


class SourceError(MobilizeInputError):
    """A model source could not be loaded or does not return a usable model."""


class SpecError(MobilizeInputError):
    """A ModelSpec or a tensor spec is inconsistent."""


class OptionError(MobilizeInputError):
    """A flag or option value is invalid (unknown format, precision, target...)."""


class MissingExtraError(OptionError):
    """A format was asked for whose converter/runtime is not installed (``pip install 'mobilize[<extra>]'``)."""


class BundleError(MobilizeInputError):
    """A bundle folder or its manifest is missing, malformed, or unsafe to use."""


class ConfigError(MobilizeInputError):
    """A ``mobilize check`` configuration (``mobilize.toml`` / ``[tool.mobilize]``) or its baseline file is unusable.

    ``problems`` holds one line per problem, each naming the file, the key and the fix; ``str()`` joins them with
    newlines.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class FeedError(MobilizeInputError):
    """A runner was fed tensors whose names, dtypes or shapes do not match the file."""


class CaptureError(MobilizeError):
    """Every torch.export strategy failed; carries the per-strategy reasons."""


class ConversionError(MobilizeError):
    """A converter failed on a captured program.

    Args:
        format: the format name (``onnx``, ``coreml``, ``tflite``).
        ops: operator names the converter could not handle, when they could be identified.
        modules: the PyTorch module paths those operators came from, when known.
    """

    def __init__(self, message: str, *, format: str, ops: list[str] | None = None,
                 modules: list[str] | None = None) -> None:
        super().__init__(message)
        self.format = format
        self.ops = ops or []
        self.modules = modules or []


class RuntimeFailure(MobilizeError):
    """A runtime could not load or run an artifact."""


class RuntimeUnavailable(MobilizeError):
    """The runtime for a format does not exist on this machine (e.g. Core ML on Linux)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like Ctrl-C (staging folders are removed, children are stopped); the CLI exits 143."""

    exit_code = 143


def interrupt_exit_code(exc: BaseException) -> int:
    """The shell's exit code for an interrupt: 143 for SIGTERM (:class:`Terminated`), 130 for Ctrl-C."""
    return int(getattr(exc, "exit_code", 130))
