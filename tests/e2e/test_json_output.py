"""One output convention: every ``--json`` takes a path or ``-`` (standard output, holding only the JSON document,
with the tables moved to stderr), and every document names its schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mobilize import schemas

from ._util import run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("args", "schema"), [(["verify", "b"], "mobilize-verify/1"),
                                              (["inspect", "b"], "mobilize-inspect/1")])
def test_json_to_stdout(bundle: Path, args: list[str], schema: str) -> None:
    run = run_cli([*args, "--json", "-"], bundle.parent, timeout=600)
    assert run.returncode == 0, run.describe()
    doc = json.loads(run.stdout)  # nothing but the document on stdout
    assert doc["schema"] == schema and doc["bundle"] == "b"
    schemas.validate(doc)  # the JSON Schema shipped in the package
    assert "onnx" in run.stderr and "fp32" in run.stderr  # the table moved to stderr
    assert not (bundle.parent / "-").exists()


def test_json_to_a_file_keeps_the_table_on_stdout(bundle: Path) -> None:
    run = run_cli(["verify", "b", "--json", "v.json"], bundle.parent, timeout=600)
    assert run.returncode == 0, run.describe()
    assert json.loads((bundle.parent / "v.json").read_text())["schema"] == "mobilize-verify/1"
    assert "onnx" in run.stdout
