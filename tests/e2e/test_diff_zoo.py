"""``mobilize diff`` on the zoo's CNN and transformer bundles (every format at fp32 and fp16): at least 90 % of the
PyTorch leaf modules are matched in every file, the unmatched ones carry a reason, and no layer of these healthy
files is reported as diverging."""

from __future__ import annotations

import json

import pytest

from ._util import run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["mobilenet_v2", "text_encoder"])
def test_diff_covers_the_zoo_models(zoo_runs, name: str, tmp_path) -> None:
    er = zoo_runs[name]
    assert er.run.returncode == 0, er.run.describe()
    out = tmp_path / "diff.json"
    run = run_cli(["diff", str(er.out), "--source", f"zoo:{name}", "--samples", "2", "--json", str(out)], tmp_path,
                  timeout=900)
    assert run.returncode == 0, run.describe()
    from mobilize import schemas

    schemas.validate(json.loads(out.read_text()))
    reports = json.loads(out.read_text())["artifacts"]
    assert {(r["format"], r["precision"]) for r in reports} == {(f, p) for f in ("onnx", "coreml", "tflite")
                                                                for p in ("fp32", "fp16")}
    for rep in reports:
        c = rep["coverage"]
        label = f"{name} {rep['format']} {rep['precision']}"
        assert (c["compared"] + c["fused"]) / c["leaf_modules"] >= 0.9, (label, c, rep["unmatched"])
        assert c["share"] >= 0.9, (label, c)
        assert all(u["why"] for u in rep["unmatched"])  # never dropped silently
        assert rep["first_divergent"] is None, rep["summary"]
        assert all(r["added"] is not None for r in rep["layers"] if r["by"] != "shape+order"), label
