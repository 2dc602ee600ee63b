"""``mobilize check`` / ``mobilize baseline update`` on a real (tiny) project: real exports, real runtimes.

The session fixtures run the first check and record the baseline once; each test copies that project before
changing anything. Checks of an existing bundle (``--bundle``) re-verify and bench without exporting.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from .conftest import copy_project, invoke, write_config, write_weights
from .junit_schema import violations

CHECKS_PER_FLOAT_ARTIFACT = 9  # export, integrity, parity, fitness.size / .ops / .latency, regression.* (+ budgets)


def _junit(path: Path) -> tuple[ET.Element, list[ET.Element]]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return suite, suite.findall("testcase")


def _results(root: Path) -> dict[str, Any]:
    return json.loads((root / "mobilize-check" / "check.json").read_text())


def _checks(data: dict[str, Any], fmt: str, prec: str) -> dict[str, dict[str, Any]]:
    art = next(a for a in data["artifacts"] if a["format"] == fmt and a["precision"] == prec)
    return {c["name"]: c for c in art["checks"]}


def _steps(stderr: str) -> list[str]:
    """The numbered step lines of a log (``[00:12] step 3/8 · exporting onnx fp16``), checked to count 1…n against
    one total; returns their texts."""
    import re

    found = re.findall(r"^\[\d\d:\d\d\] step (\d+)/(\d+) · (.+)$", stderr, flags=re.M)
    assert found, stderr
    assert [int(k) for k, _, _ in found] == list(range(1, len(found) + 1)), stderr
    assert {int(n) for _, n, _ in found} == {len(found)}, stderr
    return [text for _, _, text in found]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# --- the first run and the baseline --------------------------------------------------------------------------------


@pytest.mark.slow
def test_first_check_reports_the_missing_baseline(first_check: tuple[Path, Any]) -> None:
    root, result = first_check
    assert result.exit_code == 0
    assert not (root / "mobilize-baseline.json").exists()  # only `baseline update` / --update-baseline create it
    data = _results(root)
    assert data["status"] == "pass" and data["baseline"]["exists"] is False
    from mobilize import schemas

    schemas.validate(data)
    assert any(n.startswith("no baseline yet: run `mobilize baseline update` or `mobilize check --update-baseline`")
               for n in data["notes"])
    for prec in ("fp32", "fp16"):
        checks = _checks(data, "onnx", prec)
        assert [checks[n]["status"] for n in ("export", "integrity", "parity")] == ["pass"] * 3
        assert checks["regression.size"]["status"] == "skip"
    art = data["artifacts"][0]
    assert art["latency"]["ratio_to_eager"] > 0 and art["latency"]["threads"] == 1
    assert "no baseline yet" in (root / "mobilize-check" / "summary.md").read_text()
    suite, cases = _junit(root / "mobilize-check" / "junit.xml")
    # the regression checks of both files cannot be judged yet: skipped test cases, with the reason
    assert violations(ET.parse(root / "mobilize-check" / "junit.xml").getroot()) == []
    assert len(cases) == 2 * CHECKS_PER_FLOAT_ARTIFACT and suite.get("failures") == "0"
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert suite.get("skipped") == str(len(skipped)) == "6"
    assert {c.get("name") for c in skipped} == {"regression.size", "regression.parity", "regression.latency"}
    assert all("no baseline" in c.find("skipped").get("message") for c in skipped)
    assert all(float(c.get("time")) > 0 for c in cases if c.get("name") in ("export", "parity"))
    manifest = json.loads((root / "mobilize-check" / "bundle" / "manifest.json").read_text())
    assert manifest["bench"]["results"][0]["format"] == "pytorch"  # bench figures kept with the bundle
    # not a terminal: every step of the plan numbered against the total known up front (export's, then bench, judge)
    assert _steps(result.log) == ["loading model", "capturing with torch.export", "computing the PyTorch reference",
                                     "exporting onnx fp32", "exporting onnx fp16",
                                     "finishing verification, judging fitness", "benchmarking", "judging"]


def test_baseline_update_records_the_last_check(first_check: tuple[Path, Any], baselined: tuple[Path, Any]) -> None:
    root, result = baselined
    assert result.exit_code == 0
    base = json.loads((root / "mobilize-baseline.json").read_text())
    data = _results(root)
    assert data == _results(first_check[0])  # used the last results: no new check ran
    assert base["schema"] == "mobilize-baseline/1" and base["mobilize_version"] == data["mobilize_version"]
    assert base["tools"]["onnxruntime"] and base["model"]["source"] == "model.py:build"
    assert [(a["format"], a["precision"]) for a in base["artifacts"]] == [("onnx", "fp32"), ("onnx", "fp16")]
    for b, a in zip(base["artifacts"], data["artifacts"]):
        assert b["bytes"] == a["bytes"] and b["sha256"] == a["sha256"]
        assert b["parity"]["max_abs_error"] == a["parity"]["max_abs_error"] and b["parity"]["snr_db"] > 30
        assert b["latency"]["ratio_to_eager"] == a["latency"]["ratio_to_eager"] > 0


# --- retraining ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retrained(baselined: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A copy of the baselined project, slightly retrained (same architecture, other weights), checked again."""
    from mobilize import check

    root = copy_project(baselined[0], tmp_path_factory.mktemp("check-retrained") / "project")
    write_weights(root / "weights.safetensors", noise=0.01, seed=1)
    return root, check.run(root / "mobilize.toml")


@pytest.mark.slow
def test_harmless_retrain_passes_against_the_baseline(retrained: tuple[Path, Any]) -> None:
    from mobilize import check

    root, result = retrained
    assert isinstance(result, check.CheckResult)
    assert result.exit_code == 0, [(a.label, c.name, c.message) for a, c in result.failed]
    assert [a.vs_baseline for a in result.artifacts] == ["changed", "changed"]  # new weights, new bytes
    for a in result.artifacts:
        assert {c.name: c.status for c in a.checks if c.name.startswith("regression")} == {
            "regression.size": "pass", "regression.parity": "pass", "regression.latency": "pass"}
    assert any("changed since the baseline" in n for n in result.notes)
    assert result.to_dict() == _results(root)


def test_summary_compares_with_the_baseline(retrained: tuple[Path, Any]) -> None:
    root, result = retrained
    out = root / "mobilize-check"
    assert out / "summary.html" in result.written
    base = {(a["format"], a["precision"]): a for a in json.loads((root / "mobilize-baseline.json").read_text())[
        "artifacts"]}
    data = _results(root)
    md = (out / "summary.md").read_text()
    for a in data["artifacts"]:  # every figure the regression checks compared: baseline, now, change, limit
        was = base[(a["format"], a["precision"])]
        rows = {r["metric"]: r for r in a["comparison"]}
        assert set(rows) == {"size", "latency ratio", "max abs error", "SNR"}
        assert (rows["size"]["baseline"], rows["size"]["current"]) == (was["bytes"], a["bytes"])
        assert rows["latency ratio"]["baseline"] == was["latency"]["ratio_to_eager"]
        assert rows["SNR"]["current"] == a["parity"]["snr_db"]
        assert all(r["status"] == "pass" and r["limit"] is not None for r in rows.values())
        assert f"| onnx {a['precision']} | size | " in md and f"| onnx {a['precision']} | SNR | " in md
    assert "[summary.html](summary.html)" in md
    page = (out / "summary.html").read_text()
    assert page.count("<svg") == 1 and "<h2>Baseline comparison</h2>" in page


@pytest.mark.skipif(not shutil.which("chromium") and not Path("/usr/bin/chromium").exists(),
                    reason="chromium is not installed")
def test_summary_html_renders_in_headless_chromium(retrained: tuple[Path, Any], tmp_path: Path) -> None:
    import subprocess

    from fixtures.axes import outside, points
    from mobilize.check.charts import baseline_figure

    root, _ = retrained
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "render_html.sh"
    png = tmp_path / "summary.png"
    subprocess.run([str(script), str(root / "mobilize-check" / "summary.html"), str(png), "1200", "900"],
                   check=True, timeout=120, capture_output=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    fig = baseline_figure(_results(root))  # the chart of this real record: every point inside its axes
    assert all(points(ax) for ax in fig.axes) and outside(fig) == []


@pytest.mark.slow
def test_retrain_that_breaks_parity_fails_naming_artifact_and_numbers(baselined: tuple[Path, Any],
                                                                      tmp_path: Path) -> None:
    root = copy_project(baselined[0], tmp_path / "project")
    before = (root / "mobilize-baseline.json").read_bytes()

    def blow_up(state: dict[str, Any]) -> None:  # one logit bias beyond float16's range (65504)
        state["head.bias"][3] = 1e6

    write_weights(root / "weights.safetensors", edit=blow_up)
    result = invoke("check", "--config", str(root / "mobilize.toml"), "--junit", str(tmp_path / "junit.xml"),
                    "--update-baseline")
    assert result.exit_code == 1
    data = _results(root)
    fp16 = _checks(data, "onnx", "fp16")
    assert fp16["parity"]["status"] == "fail"
    assert "max abs error 9.3" in fp16["parity"]["message"] and "allowed share 1.00%" in fp16["parity"]["message"]
    assert _checks(data, "onnx", "fp32")["parity"]["status"] == "pass"  # fp32 still tracks PyTorch
    _, cases = _junit(tmp_path / "junit.xml")
    failing = {(c.get("classname"), c.get("name")): c.find("failure") for c in cases if c.find("failure") is not None}
    assert ("mobilize.onnx.fp16", "parity") in failing
    assert "max abs error 9.3" in failing[("mobilize.onnx.fp16", "parity")].get("message")
    assert (root / "mobilize-baseline.json").read_bytes() == before  # --update-baseline only after a passing run
    assert "baseline not updated: the check failed" in data["notes"]
    assert "**onnx fp16** · `parity`" in (root / "mobilize-check" / "summary.md").read_text()
    # nor can `baseline update` record files that fail parity
    assert invoke("baseline", "update", "--config", str(root / "mobilize.toml")).exit_code == 1
    assert (root / "mobilize-baseline.json").read_bytes() == before


# --- budgets (judging the existing bundle: no export) --------------------------------------------------------------


def test_budget_breach_fails_naming_artifact_and_size(baselined: tuple[Path, Any], tmp_path: Path) -> None:
    root = copy_project(baselined[0], tmp_path / "project")
    write_config(root, "[budget]\nsize_mb = 0.001\n")
    junit = tmp_path / "junit.xml"
    result = invoke("check", "--config", str(root / "mobilize.toml"), "--bundle", str(root / "mobilize-check" /
                                                                                       "bundle"),
                    "--junit", str(junit))
    assert result.exit_code == 1
    _, cases = _junit(junit)
    failures = {c.get("classname"): c.find("failure").get("message") for c in cases
                if c.get("name") == "budget.size_mb"}
    sizes = {a["precision"]: a["bytes"] for a in _results(root)["artifacts"]}
    paths = {a["precision"]: a["path"] for a in _results(root)["artifacts"]}
    assert failures == {f"mobilize.onnx.{p}": f"{paths[p]}: size {b / 1e6:.3g} MB > budget 0.001 MB"
                        for p, b in sizes.items()}
    assert all(c.find("failure") is None for c in cases if c.get("name") != "budget.size_mb")


def test_generous_budget_passes_every_testcase(baselined: tuple[Path, Any], tmp_path: Path) -> None:
    root = copy_project(baselined[0], tmp_path / "project")
    write_config(root, "[budget]\nsize_mb = 100\nlatency_p90_ms = 10000\nzipped_mb = 100\nthreads = 1\n")
    step_summary = tmp_path / "step_summary.md"
    step_summary.write_text("earlier step\n")
    summary = tmp_path / "summary.md"
    result = invoke("check", "--config", str(root / "mobilize.toml"), "--bundle",
                    str(root / "mobilize-check" / "bundle"), "--junit", str(tmp_path / "junit.xml"),
                    "--summary", str(summary), env={"GITHUB_STEP_SUMMARY": str(step_summary)})
    assert result.exit_code == 0
    assert _steps(result.log) == ["verifying onnx fp32", "verifying onnx fp16",  # verify's plan, bench, judge
                                     "collecting the results, judging fitness", "benchmarking", "judging"]
    suite, cases = _junit(tmp_path / "junit.xml")
    assert len(cases) == int(suite.get("tests")) == 2 * (CHECKS_PER_FLOAT_ARTIFACT + 3)
    assert suite.get("failures") == "0" and suite.get("skipped") == "0" and suite.get("errors") == "0"
    assert all(c.find("failure") is None and c.find("skipped") is None for c in cases)
    assert {c.get("classname") for c in cases} == {"mobilize.onnx.fp32", "mobilize.onnx.fp16"}
    text = summary.read_text()
    assert text.startswith("## mobilize check ✅ passed: 24 passed, 0 failed, 0 skipped")
    appended = step_summary.read_text()
    assert appended.startswith("earlier step\n## mobilize check ✅ passed")
    # the same summary; a step summary cannot link the HTML page (with the chart), so it names the file
    assert text.split("Chart of these figures")[0] in appended
    page = root / "mobilize-check" / "summary.html"
    assert f"[summary.html]({os.path.relpath(page, tmp_path)})" in text
    assert f"`{page}` in the check's output folder" in appended
    assert json.loads((root / "mobilize-check" / "bundle" / "manifest.json").read_text()) == json.loads(
        (baselined[0] / "mobilize-check" / "bundle" / "manifest.json").read_text())  # --bundle: left as it was


def test_parity_tolerance_overrides_reach_the_verifier(baselined: tuple[Path, Any], tmp_path: Path) -> None:
    root = copy_project(baselined[0], tmp_path / "project")
    write_config(root, "[parity.fp32]\nmin_snr_db = 400\n\n[parity.fp16]\natol = 0.5\n")
    result = invoke("check", "--config", str(root / "mobilize.toml"), "--bundle",
                    str(root / "mobilize-check" / "bundle"), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)  # --json alone: the record on stdout
    fp32 = _checks(data, "onnx", "fp32")["parity"]
    assert fp32["status"] == "fail" and "dB < 400.0 dB" in fp32["message"]
    fp16 = next(a for a in data["artifacts"] if a["precision"] == "fp16")
    assert fp16["parity"]["status"] == "pass" and fp16["parity"]["atol"] == 0.5


# --- files changed after export ------------------------------------------------------------------------------------


def test_bundle_file_altered_after_baseline_fails(baselined: tuple[Path, Any], tmp_path: Path) -> None:
    root = copy_project(baselined[0], tmp_path / "project")
    bundle = root / "mobilize-check" / "bundle"
    onnx = next(bundle.glob("*_fp32.onnx"))
    manifest_sha = next(a["sha256"] for a in _results(root)["artifacts"] if a["precision"] == "fp32")
    _flip_byte(onnx)
    # the last check's results no longer describe the bundle: baseline update refuses to record them (exit 2)
    assert invoke("baseline", "update", "--config", str(root / "mobilize.toml")).exit_code == 2
    result = invoke("check", "--config", str(root / "mobilize.toml"), "--bundle", str(bundle))
    assert result.exit_code == 1
    data = _results(root)
    checks = _checks(data, "onnx", "fp32")
    assert checks["integrity"]["status"] == "fail"
    assert "changed after export" in checks["integrity"]["message"] and manifest_sha[:12] in checks["integrity"][
        "message"]
    assert checks["parity"]["status"] == "fail" and "sha256 differs" in checks["parity"]["message"]
    art = next(a for a in data["artifacts"] if a["precision"] == "fp32")
    assert art["vs_baseline"] == "changed" and art["sha256"] != manifest_sha
    assert _checks(data, "onnx", "fp16")["integrity"]["status"] == "pass"
    assert any("bundle files changed after export" in n for n in data["notes"])  # not benchmarked
    # replaced by something that is not even ONNX: still a failing check (exit 1), not "could not run"
    onnx.write_bytes(b"not a model at all\n")
    assert invoke("check", "--config", str(root / "mobilize.toml"), "--bundle", str(bundle)).exit_code == 1
    checks = _checks(_results(root), "onnx", "fp32")
    assert checks["integrity"]["status"] == "fail" and "(19 vs" in checks["integrity"]["message"]
    assert checks["parity"]["status"] == "fail" and "content is not recognised" in checks["parity"]["message"]


@pytest.mark.slow
def test_plain_rerun_fails_when_the_previous_bundle_was_altered(baselined: tuple[Path, Any],
                                                                 tmp_path: Path) -> None:
    """Without --bundle the check re-exports, which would silently replace an edited file: it is looked at first."""
    root = copy_project(baselined[0], tmp_path / "project")
    bundle = root / "mobilize-check" / "bundle"
    onnx = next(bundle.glob("*_fp32.onnx"))
    _flip_byte(onnx)
    result = invoke("check", "--config", str(root / "mobilize.toml"), "--junit", str(tmp_path / "j.xml"))
    assert result.exit_code == 1
    checks = _checks(_results(root), "onnx", "fp32")
    assert checks["integrity"]["status"] == "fail"
    assert "previous bundle" in checks["integrity"]["message"] and "changed after export" in checks["integrity"][
        "message"]
    assert _checks(_results(root), "onnx", "fp16")["integrity"]["status"] == "pass"
    _, cases = _junit(tmp_path / "j.xml")
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 and "fp32" in failed[0].get("classname", "") + failed[0].get("name", "")
    # the fresh export replaced the edited file: the next run is clean again
    assert invoke("check", "--config", str(root / "mobilize.toml")).exit_code == 0


@pytest.mark.slow
def test_update_baseline_flag_only_after_a_passing_run(first_check: tuple[Path, Any], tmp_path: Path) -> None:
    root = copy_project(first_check[0], tmp_path / "project")
    args = ["check", "--config", str(root / "mobilize.toml"), "--bundle", str(root / "mobilize-check" / "bundle"),
            "--update-baseline"]
    write_config(root, "[budget]\nsize_mb = 0.001\n")
    assert invoke(*args).exit_code == 1
    assert not (root / "mobilize-baseline.json").exists()
    write_config(root)
    assert invoke(*args).exit_code == 0
    base = json.loads((root / "mobilize-baseline.json").read_text())
    assert len(base["artifacts"]) == 2 and _results(root)["baseline"]["updated"] is True


# --- could not run: exit 2 -----------------------------------------------------------------------------------------


def test_could_not_run_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert invoke("check").exit_code == 2  # no config here
    assert invoke("baseline", "update").exit_code == 2
    (tmp_path / "mobilize.toml").write_text('source = "model.py:build"\n[budget]\nsize_mbb = 1\n')
    assert invoke("check").exit_code == 2
    # a valid config whose module cannot be imported
    (tmp_path / "mobilize.toml").write_text('source = "no_such_pkg.model:build"\nformats = ["onnx"]\n'
                                            'precisions = ["fp32"]\n')
    assert invoke("check").exit_code == 2
    assert not (tmp_path / "mobilize-check" / "check.json").exists()
    (tmp_path / "mobilize-baseline.json").write_text("{broken")
    assert invoke("check").exit_code == 2


def test_config_errors_print_one_line_each(tmp_path: Path) -> None:
    """As a user sees it: one `error:` line per problem on stderr, nothing on stdout, exit 2, no torch import."""
    import subprocess
    import sys

    (tmp_path / "mobilize.toml").write_text('source = "model.py:build"\nprecisions = ["fp61"]\n'
                                            "[budget]\nsize_mbb = 1\n")
    (tmp_path / "model.py").write_text("")
    proc = subprocess.run([sys.executable, "-m", "mobilize", "check"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "300"}, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: mobilize.toml: precisions: unknown value 'fp61' (did you mean 'fp16'?)",
        "error: mobilize.toml: budget.size_mbb: unknown key (did you mean 'size_mb'?)",
    ]
    (tmp_path / "mobilize.toml").unlink()
    proc = subprocess.run([sys.executable, "-m", "mobilize", "check"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "300"}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no mobilize.toml and no [tool.mobilize] in pyproject.toml in the current "
                                  "folder; create mobilize.toml")
