"""The public API surface: names stay what they are, and importing mobilize stays cheap."""

from __future__ import annotations

import subprocess
import sys


def test_api_functions_survive_stage_imports() -> None:
    import mobilize
    import mobilize.export.onnx  # noqa: F401 - the stage packages share names with the API functions
    import mobilize.verify.parity  # noqa: F401

    assert callable(mobilize.export) and mobilize.export.__module__ == "mobilize"
    assert callable(mobilize.verify) and callable(mobilize.load_bundle)
    assert issubclass(mobilize.SourceError, mobilize.MobilizeInputError)
    assert issubclass(mobilize.MobilizeInputError, ValueError)


def test_import_and_help_do_not_load_torch() -> None:
    code = ("import sys, mobilize, mobilize.cli, mobilize.models; mobilize.models.names(); "
            "print(sorted(m for m in ('torch', 'onnx', 'coremltools', 'litert_torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    help_out = subprocess.run([sys.executable, "-m", "mobilize", "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "export" in help_out.stdout and "verify" in help_out.stdout
