"""coremltools is imported without the packages it only probes for (``mobilize._imports``): less CPU for every export
with Core ML and every worker that reads Core ML files, and nothing lost — a probe imported earlier stays visible, and
each hidden package imports normally afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_converter_process_imports_coremltools_without_its_probes() -> None:
    got = _run("""
import json, sys, torch
from mobilize import _imports
ct = _imports.coremltools()
loaded = [m for m in _imports.COREMLTOOLS_PROBES if m in sys.modules]
from coremltools.converters.mil.frontend.torch import load  # the frontend mobilize converts with
import executorch.exir, sklearn  # hidden only while coremltools imported
print(json.dumps({"loaded": loaded, "frontend": load.__name__, "executorch": executorch.exir.__name__}))
""")
    assert got == {"loaded": [], "frontend": "coremltools.converters.mil.frontend.torch.load",
                   "executorch": "executorch.exir"}


def test_a_worker_imports_coremltools_without_torch() -> None:
    got = _run("""
import json, sys
from mobilize._worker import light_imports
light_imports("coreml")
import coremltools
without = "torch" not in sys.modules and not any(m in sys.modules for m in ("sklearn", "executorch", "torchao",
                                                                   "transformers"))
import torch
print(json.dumps({"without": without, "torch": torch.__name__, "has_torch": coremltools._deps._HAS_TORCH}))
""")
    assert got == {"without": True, "torch": "torch", "has_torch": False}


@pytest.mark.slow
def test_a_probe_already_imported_stays_visible_to_coremltools() -> None:
    """A torchao-quantized model has loaded torchao: coremltools must still see it and lower its ops."""
    got = _run("""
import json, torch, torchao
from mobilize import _imports
ct = _imports.coremltools()
print(json.dumps({"torchao": ct._deps._HAS_TORCHAO, "executorch": ct._deps._HAS_EXECUTORCH}))
""")
    assert got == {"torchao": True, "executorch": False}


@pytest.mark.slow
def test_the_executorch_runtime_imports_without_the_compiler_which_still_imports_afterwards() -> None:
    pytest.importorskip("executorch")
    got = _run("""
import json, sys
from mobilize import _imports
runtime = _imports.executorch_runtime()
compiler = [m for m in ("executorch.exir.program", "torch._dynamo") if m in sys.modules]
import executorch.exir
print(json.dumps({"runtime": runtime.__name__, "compiler": compiler, "to_edge": callable(executorch.exir.to_edge)}))
""")
    assert got == {"runtime": "executorch.runtime", "compiler": [], "to_edge": True}
