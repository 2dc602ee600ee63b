"""Bad input through the CLI (task 5): exit code 2, one ``error:`` line on stderr, no traceback, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ._util import FIXTURES, error_line, listing, run_cli, tree_digest

pytestmark = pytest.mark.slow

# id → (arguments, substrings the error line must contain)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "missing_file": (["export", "missing.py:build", "--out", "out"], ["missing.py", "does not exist"]),
    "missing_function": (["export", "bad_models.py:nope", "--out", "out"], ["nope", "bad_models.py"]),
    "wrong_return_type": (["export", "bad_models.py:wrong_type", "--out", "out"], ["wrong_type()", "dict"]),
    "fails_on_example": (
        ["export", "bad_models.py:fails_on_example", "--out", "out"],
        ["fails on its example inputs", "RuntimeError"],
    ),
    "unknown_format": (
        ["export", "zoo:digits", "--formats", "onnx,foo", "--out", "out"],
        ["foo", "onnx", "coreml", "tflite"],
    ),
    "unknown_precision": (
        ["export", "zoo:digits", "--precisions", "fp32,fp8", "--out", "out"],
        ["fp8", "fp32", "fp16"],
    ),
    "out_is_not_a_bundle": (["export", "zoo:digits", "--out", "keep"], ["keep", "not a mobilize bundle"]),
    "unknown_zoo_name": (["export", "zoo:nope", "--out", "out"], ["nope", "digits", "mobilenet_v2"]),
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(FIXTURES / "bad_models.py", tmp_path / "bad_models.py")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("my own files\n")
    (keep / "sub").mkdir()
    (keep / "sub" / "data.bin").write_bytes(bytes(range(256)))
    return tmp_path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exit_2_one_line_nothing_written(workdir: Path, case: str) -> None:
    args, expected = CASES[case]
    before = tree_digest(workdir)
    run = run_cli(args, workdir, timeout=300)
    assert run.returncode == 2, run.describe()
    line = error_line(run)
    for text in expected:
        assert text in line, f"{text!r} missing from: {line}"
    assert tree_digest(workdir) == before, f"the working folder changed: {listing(workdir)}"
    assert not (workdir / "out").exists()
    assert not [n for n in listing(workdir) if ".tmp-" in n or ".old-" in n]


def test_verbose_shows_traceback(workdir: Path) -> None:
    run = run_cli(["-v", "export", "missing.py:build", "--out", "out"], workdir, timeout=300)
    assert run.returncode == 2, run.describe()
    assert "Traceback (most recent call last)" in run.stderr, run.describe()
    assert "SourceError" in run.stderr
    assert [ln for ln in run.stderr.splitlines() if ln.strip()][-1].startswith("error:")
    assert not (workdir / "out").exists()
