"""What the user sees: quiet converters, -v, ``mobilize zoo`` and ``mobilize demo`` (tasks 9 and 10)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ._util import FORMATS, NOISE, PRECISIONS, load_json, run_cli

pytestmark = pytest.mark.slow


def _table_rows(stdout: str) -> set[tuple[str, str]]:
    rows = set()
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 3 and cells[1] in FORMATS:
            rows.add((cells[1], cells[2]))
    return rows


def test_export_is_quiet(digits_run) -> None:
    run = digits_run.run
    assert run.returncode == 0, run.describe()
    for stream_name, text in (("stdout", run.stdout), ("stderr", run.stderr)):
        for marker in (*NOISE, "Failed to load", "FutureWarning", "UserWarning", "absl::", "oneDNN"):
            assert marker not in text, f"{marker!r} leaked into {stream_name}:\n{run.describe()}"
        assert not [ln for ln in text.splitlines() if ln.lstrip().startswith(("WARNING", "W0", "W1", "I0000"))], (
            run.describe()
        )
    assert _table_rows(run.stdout) == {(f, p) for f in FORMATS for p in PRECISIONS}
    # not a terminal (a CI log): one timestamped line per step on stderr, and a line per finished artifact
    lines = run.stderr.splitlines()
    assert lines and all(re.match(r"\[\d\d:\d\d\] \S", ln) for ln in lines), run.stderr
    n = len(FORMATS) * len(PRECISIONS)
    done = [ln for ln in lines if re.search(r" exported [\d.]+ [KMG]?B, parity pass \(\d+/\d+\)$", ln)]
    assert [ln.rsplit("(", 1)[1] for ln in done] == [f"{k}/{n})" for k in range(1, n + 1)], run.stderr


def test_quiet_prints_results_only(tmp_path: Path) -> None:
    run = run_cli(["export", "zoo:digits", "--formats", "onnx", "--precisions", "fp32", "--out", "b", "--quiet"],
                  tmp_path, timeout=600)
    assert run.returncode == 0, run.describe()
    assert run.stderr.strip() == "" and ("onnx", "fp32") in _table_rows(run.stdout)


def test_verbose_shows_converter_output(verbose_run) -> None:
    run = verbose_run.run
    assert run.returncode == 0, run.describe()
    both = run.stdout + run.stderr
    seen = [m for m in ("Running MIL", "LiteRT-Torch", "Converting PyTorch Frontend") if m in both]
    assert seen, f"-v should show converter logs:\n{run.describe()}"
    assert re.search(r"^\[\d\d:\d\d\] step \d+/\d+ · exporting coreml fp32$", run.stderr, flags=re.M), run.stderr


def test_zoo_lists_every_model(tmp_path: Path) -> None:
    from mobilize import models

    run = run_cli(["zoo"], tmp_path, timeout=120)
    assert run.returncode == 0, run.describe()
    for name in models.names():
        assert f"zoo:{name}" in run.stdout, run.describe()
    assert run.stderr.strip() == ""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    run = run_cli(["demo", "--out", "demo_out"], work, timeout=600)
    print(f"mobilize demo took {run.seconds:.1f} s")
    return run, work / "demo_out"


def _cell_matches(cell: str, value: str) -> bool:
    return cell == value or (cell.endswith("…") and value.startswith(cell[:-1]))


def test_demo(demo_run, record_property) -> None:
    run, out = demo_run
    record_property("demo_seconds", round(run.seconds, 1))
    assert run.returncode == 0, run.describe()
    manifest = load_json(out / "manifest.json")
    assert manifest["model"]["source"] == "zoo:digits"
    assert manifest["summary"]["failed"] == 0
    precisions = {a["precision"] for a in manifest["artifacts"]}
    assert set(PRECISIONS) <= precisions
    assert {(a["format"], a["precision"]) for a in manifest["artifacts"]} == {
        (f, p) for f in FORMATS for p in precisions
    }
    rows = _table_rows(run.stdout)
    assert len(rows) == len(FORMATS) * len(precisions), run.describe()
    for f in FORMATS:  # a table row for every format x precision
        for p in precisions:
            assert any(rf == f and _cell_matches(rp, p) for rf, rp in rows), (f, p, run.stdout)


def test_demo_table_shows_full_names_when_piped(demo_run) -> None:
    run, out = demo_run
    manifest = load_json(out / "manifest.json")
    assert _table_rows(run.stdout) == {(a["format"], a["precision"]) for a in manifest["artifacts"]}
    assert "…" not in run.stdout.split("bundle:")[0], run.stdout
