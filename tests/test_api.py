"""The public API surface: names stay what they are, and importing mobilize stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_api_functions_survive_stage_imports() -> None:
    import mobilize
    import mobilize.export.onnx  # noqa: F401 - the stage packages share names with the API functions
    import mobilize.verify.parity  # noqa: F401
    from mobilize import api
    from mobilize.diff import diff

    # the real functions, with their signatures (not *args/**kwargs wrappers): type checkers see every keyword
    assert mobilize.export is api.export and mobilize.verify is api.verify and mobilize.load_bundle is api.load_bundle
    assert mobilize.diff is diff and mobilize.Result is api.Result
    assert issubclass(mobilize.SourceError, mobilize.MobilizeInputError)
    assert issubclass(mobilize.MobilizeInputError, ValueError)


def test_import_and_help_do_not_load_torch() -> None:
    code = ("import sys, mobilize, mobilize.cli, mobilize.models; mobilize.models.names(); "
            "print(sorted(m for m in ('torch', 'onnx', 'coremltools', 'litert_torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    help_out = subprocess.run([sys.executable, "-m", "mobilize", "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "export" in help_out.stdout and "verify" in help_out.stdout


def test_public_signatures_are_typed() -> None:
    import inspect

    import mobilize

    for fn in (mobilize.export, mobilize.verify, mobilize.load_bundle, mobilize.diff):
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, fn.__name__
        assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()), fn.__name__
        assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), fn.__name__


@pytest.mark.slow  # mypy reads the package cold: ~30 s
def test_a_misspelt_keyword_is_a_type_error(tmp_path) -> None:
    """mypy (make lint runs it --strict on the public modules) rejects ``fromats=``: the signatures are real."""
    import shutil

    mypy = shutil.which("mypy", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert mypy, "mypy is a dev dependency"
    snippet = tmp_path / "use.py"
    snippet.write_text("import mobilize\n\nmobilize.export('zoo:digits', 'out', fromats='onnx')\n"
                       "r: mobilize.Result = mobilize.export('zoo:digits', 'out', formats='onnx')\n")
    run = subprocess.run([mypy, "--strict", "--follow-imports=silent", "--ignore-missing-imports", str(snippet)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1
    errors = [ln for ln in run.stdout.splitlines() if ": error:" in ln]
    assert len(errors) == 1 and 'Unexpected keyword argument "fromats"' in errors[0], run.stdout
