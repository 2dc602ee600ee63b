"""A reference interpreter for Core ML ML Program files (``.mlpackage``), in NumPy, on any OS.

Core ML predictions exist only on macOS; this package lets mobilize verify Core ML files on Linux: it parses the
model spec and ``weight.bin`` itself and executes the program's main function op by op (one registered NumPy function
per MIL op, fp16 rounding where the file computes in fp16). See docs/coreml-reference.md for what it guarantees.
"""

from mobilize.runtime.coreml_ref.errors import ExecutionError, PackageError, UnsupportedOpsError, WeightFileError
from mobilize.runtime.coreml_ref.registry import OPS, register, supported_ops
from mobilize.runtime.coreml_ref.runner import REFERENCE_NOTE, CoreMLReferenceRunner
from mobilize.runtime.coreml_ref.stats import collect_activation_stats


def load_program(path):  # noqa: ANN001, ANN201 - thin convenience wrapper
    """Parse a ``.mlpackage`` into a :class:`~mobilize.runtime.coreml_ref.program.Program` (weights read lazily)."""
    from mobilize.runtime.coreml_ref.program import Program

    return Program(path)


__all__ = ["OPS", "REFERENCE_NOTE", "CoreMLReferenceRunner", "ExecutionError", "PackageError",
           "UnsupportedOpsError", "WeightFileError", "collect_activation_stats", "load_program", "register",
           "supported_ops"]
