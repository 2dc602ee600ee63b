"""Importing heavy third-party packages without what mobilize never asks of them.

coremltools probes optional packages on import (``coremltools._deps``) and, finding them installed, imports them:
scikit-learn (for its scikit-learn converter, which it then disables for scikit-learn > 1.5.1), ExecuTorch (for its
ExecuTorch-dialect frontend), torchao (for torchao-quantized ops) and Hugging Face transformers (read only by
coremltools' own tests). mobilize converts ``torch.export`` programs with the default frontend, so those imports are
dead weight: with torch already loaded, ``import coremltools`` took 6.5 s CPU with them and 2.8 s without (measured
on the 2-core CI machine), paid by every export with Core ML; transformers alone is 0.4 s of a worker's 1.0 s.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import ModuleType

#: packages coremltools imports to probe for features mobilize does not use. One already imported in this process
#: stays visible: a model quantized with torchao has loaded it, and coremltools then lowers its ops as usual.
COREMLTOOLS_PROBES = ("sklearn", "executorch", "torchao", "transformers")


@contextlib.contextmanager
def hidden(names: tuple[str, ...]) -> Iterator[None]:
    """While the block runs, ``import NAME`` raises ImportError for each of ``names`` not imported yet; afterwards
    they import normally again."""
    masked = [m for m in names if m not in sys.modules]
    for m in masked:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for m in masked:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]


def coremltools(*, without_torch: bool = False) -> ModuleType:
    """``import coremltools`` without its probes' imports (:data:`COREMLTOOLS_PROBES`); ``without_torch`` also
    without its PyTorch frontend (a process that reads and runs Core ML files but never converts) unless torch is
    already loaded. Once coremltools is imported this returns it as it is."""
    if "coremltools" not in sys.modules:
        names = COREMLTOOLS_PROBES + (("torch",) if without_torch else ())
        with hidden(names):
            import coremltools as ct  # noqa: F401
    return sys.modules["coremltools"]


def executorch_runtime() -> ModuleType:
    """``import executorch.runtime`` without the ExecuTorch compiler. Its pybindings import
    ``executorch.exir._warnings``, and the ``executorch.exir`` package's ``__init__`` loads all of exir (its passes,
    dialects, torch's dynamo and inductor): 4.2 s → 0.8 s CPU for a process that only runs ``.pte`` files (a worker,
    a ``mobilize bench`` memory probe), and memory that bench would otherwise count as the model's. The package is
    stood in for by its bare module (no ``__init__`` run) while the runtime imports, then removed: a later
    ``import executorch.exir`` (an export in the same process) runs it in full."""
    if "executorch.runtime" in sys.modules or "executorch.exir" in sys.modules:
        import executorch.runtime

        return executorch.runtime
    import importlib.util

    spec = importlib.util.find_spec("executorch.exir")
    bare = importlib.util.module_from_spec(spec) if spec is not None else None
    if bare is not None:
        sys.modules["executorch.exir"] = bare
    try:
        import executorch.runtime
    finally:
        if bare is not None and sys.modules.get("executorch.exir") is bare:
            del sys.modules["executorch.exir"]
    return executorch.runtime
