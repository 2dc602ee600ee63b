"""Keep third-party converters quiet: their INFO logs, progress bars and C++ log lines go to a log file, not the
terminal, unless the user asked for ``-v``.

Python-level logging and tqdm are silenced through their own switches; C++ runtimes (absl, XNNPACK, oneDNN) write
straight to file descriptors 1 and 2, so :func:`captured_output` redirects the descriptors themselves. mobilize's own
console (:data:`console`) writes to a duplicate of the original stderr, so it keeps working while fds are redirected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

_VERBOSE = False
_LOUD_LOGGERS = ("coremltools", "torch.onnx", "torch._export", "torch.export", "torch.fx", "torch._dynamo",
                 "torch.utils._pytree", "absl", "root", "onnxscript", "jax", "litert_torch", "ai_edge_quantizer",
                 "tensorflow", "torchao", "onnx_ir", "executorch")


def set_verbose(verbose: bool) -> None:
    """Switch between quiet (default) and verbose third-party output; call before heavy imports."""
    global _VERBOSE
    _VERBOSE = verbose
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "3")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TORCH_LOGS", "-all")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    for name in _LOUD_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="coremltools")


def is_verbose() -> bool:
    return _VERBOSE


def quiet_imports() -> None:
    """Silence the loggers that heavy packages configure on import (call after importing them)."""
    if _VERBOSE:
        return
    for name in _LOUD_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # litert-torch prints rich progress lines unless told not to; only when already imported: importing it here
    # would load JAX (≈220 MB, seconds) into every process that silences anything, e.g. an ExecuTorch runner's
    litert_torch = sys.modules.get("litert_torch")
    if litert_torch is not None:
        with contextlib.suppress(Exception):  # any failure just means nothing to silence
            litert_torch.config.show_progress = False  # type: ignore[attr-defined]


def flush_standard_streams() -> None:
    """Flush sys.stdout/err, skipping a stream that is closed or gone: another thread may have just left a
    :func:`captured_output`, which closes its stand-in streams (a converter thread forks right then, see
    :class:`mobilize.isolate.ChildBatch`), and a closed stream has nothing left to flush."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            stream.flush()


class _Captured:
    def __init__(self) -> None:
        self.text = ""


@contextlib.contextmanager
def captured_output() -> Iterator[_Captured]:
    """Redirect fds 1 and 2 (and sys.stdout/err) to a temporary file unless verbose; yields the captured text holder.

    The captured text is available after the block (``.text``) so a failure can show the converter's last lines.
    """
    cap = _Captured()
    if _VERBOSE:
        yield cap
        return
    flush_standard_streams()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = [os.dup(1), os.dup(2)]
        old_out, old_err = sys.stdout, sys.stderr
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            sys.stdout = sys.stderr = open(os.dup(tmp.fileno()), "w", closefd=True)  # noqa: SIM115
            try:
                yield cap
            finally:
                sys.stdout.flush()
                sys.stdout.close()
        finally:
            sys.stdout, sys.stderr = old_out, old_err
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            cap.text = tmp.read().decode("utf-8", "replace")
