"""The int8 search within a time budget: the best file so far is kept and the record says the budget bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mobilize.errors import OptionError
from mobilize.quantize import AccuracyTarget


@pytest.mark.slow
def test_a_budget_that_binds_keeps_the_first_file_and_says_so(digits_onnx: dict[str, Any], tmp_path: Path) -> None:
    from mobilize.quantize import driver as D

    ctx = D.Context.build(digits_onnx["spec"], digits_onnx["calib"], AccuracyTarget(time_budget_s=1e-3))
    dest = tmp_path / "int8.onnx"
    notes, q = D.quantize_artifact("onnx", "int8", digits_onnx["fp32"], dest, ctx, tmp_path / "work")
    assert dest.is_file()
    budget = q["time_budget"]
    assert budget["bound"] is True and budget["seconds"] == pytest.approx(1e-3)
    assert budget["skipped"], "every trial after the first was skipped"
    assert sum(1 for c in q["candidates"]) == 1
    assert any("search budget ran out" in n for n in notes)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_budget(bad: float) -> None:
    with pytest.raises(OptionError, match="--time-budget"):
        AccuracyTarget(time_budget_s=bad)


def test_cli_refuses_a_bad_budget_before_any_work(tmp_path: Path) -> None:
    import subprocess
    import sys

    got = subprocess.run([sys.executable, "-m", "mobilize", "export", "zoo:digits", "--out", str(tmp_path / "b"),
                          "--formats", "onnx", "--precisions", "fp32", "--time-budget", "0"],
                         capture_output=True, text=True, check=False)
    assert got.returncode == 2, got.stderr
    assert "--time-budget 0 must be a number of seconds > 0" in got.stderr
    assert not (tmp_path / "b").exists()
