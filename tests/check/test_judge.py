"""The verdicts themselves, on hand-written figures: budget messages, regression thresholds, baseline file I/O,
and the JUnit / Markdown renderings (their real-export counterparts are in test_check.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from mobilize.check import baseline as bl
from mobilize.check import junit, summary
from mobilize.check.config import Config, load
from mobilize.check.judge import NO_BASELINE, judge_artifact
from mobilize.errors import ConfigError

from .junit_schema import violations

SHA_A, SHA_B = "a" * 64, "b" * 64


def _config(tmp_path: Path, extra: str = "") -> Config:
    (tmp_path / "m.py").write_text("")
    (tmp_path / "mobilize.toml").write_text('source = "m.py:build"\nformats = ["onnx"]\n'
                                            'precisions = ["fp32", "int8-weights"]\n' + extra)
    return load(tmp_path / "mobilize.toml")


def _art(prec: str = "fp32", *, bytes_: int = 2_310_000, sha: str = SHA_A, mae: float = 1e-6, snr: float = 120.0,
         status: str = "pass", **extra: Any) -> dict[str, Any]:
    return {"format": "onnx", "precision": prec, "status": "ok", "path": f"m_{prec}.onnx", "bytes": bytes_,
            "sha256": sha, "export_seconds": 1.0, "verify_seconds": 0.25, "error": None,
            "parity": {"status": status, "runtime": "onnxruntime", "reason": None if status == "pass" else "bad",
                       "failures": [] if status == "pass" else ["y: SNR 10.0 dB < 60 dB"], "max_abs_error": mae,
                       "snr_db": snr, "cosine": 1.0, "mismatch_ratio": 0.0,
                       "tolerance": {"atol": 1e-4, "rtol": 1e-4, "min_snr_db": 60.0}}, **extra}


def _rows(p50: float, p90: float | None = None, threads: int = 1) -> list[dict[str, Any]]:
    lat = {"p50": p50, "p90": p90 or p50 * 1.2, "p99": p50 * 1.5}
    return [{"threads": threads, "latency_ms": lat, "bytes": 2_310_000, "zipped_bytes": 2_000_000, "reason": None}]


def _base(**entry: Any) -> dict[str, Any]:
    e = {"format": "onnx", "precision": "fp32", "path": "m_fp32.onnx", "bytes": 2_000_000, "sha256": SHA_A,
         "parity": {"status": "pass", "max_abs_error": 1e-6, "snr_db": 120.0},
         "latency": {"threads": 1, "percentile": "p50", "ratio_to_eager": 0.25}, "accuracy": None}
    e.update(entry)
    return {"schema": bl.SCHEMA, "created": "2026-01-01T00:00:00+00:00", "mobilize_version": "0.1.0",
            "tools": {"onnxruntime": "1.0"}, "artifacts": [e]}


def _by_name(res: Any) -> dict[str, Any]:
    return {c.name: c for c in res.checks}


def test_budget_breach_message_carries_the_numbers(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "[budget]\nsize_mb = 1\nlatency_p90_ms = 0.5\nthreads = 1\n")
    res = judge_artifact(cfg, _art(), _rows(1.0), {1: 4.0}, None, None, None)
    checks = _by_name(res)
    assert checks["budget.size_mb"].status == "fail"
    assert checks["budget.size_mb"].message == "size 2.31 MB > budget 1.00 MB"
    assert checks["budget.latency_p90_ms"].message == "p90 latency 1.2 ms > budget 0.5 ms (at 1 thread)"
    assert res.status == "fail" and res.latency["ratio_to_eager"] == 0.25
    # the same set of checks whatever the outcome; no baseline → regression checks skipped with the hint
    assert [c.name for c in res.checks] == ["export", "integrity", "parity", "fitness.size", "fitness.ops",
                                            "fitness.latency", "budget.latency_p90_ms", "budget.size_mb",
                                            "regression.size", "regression.parity", "regression.latency"]
    assert checks["regression.size"].status == "skip" and checks["regression.size"].message == NO_BASELINE


def test_unmeasurable_budget_is_skipped_with_the_reason(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "[budget]\nlatency_p90_ms = 5\nsize_mb = 9\n")
    rows = [{"threads": 1, "latency_ms": None, "bytes": 1000, "reason": "not measurable here: Core ML needs macOS"}]
    checks = _by_name(judge_artifact(cfg, _art(bytes_=1000), rows, {}, None, None, None))
    assert checks["budget.latency_p90_ms"].status == "skip"
    assert "Core ML needs macOS" in checks["budget.latency_p90_ms"].message
    assert checks["budget.size_mb"].status == "pass" and checks["budget.size_mb"].message == (
        "size 0.001 MB ≤ budget 9.00 MB")


def test_regressions_against_the_baseline(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ok = _by_name(judge_artifact(cfg, _art(bytes_=2_100_000), _rows(1.0), {1: 4.0}, None, None, _base()))
    assert {k: c.status for k, c in ok.items() if k.startswith("regression")} == {
        "regression.size": "pass", "regression.parity": "pass", "regression.latency": "pass"}
    assert ok["regression.size"].message == "size 2.10 MB vs 2.00 MB in the baseline (+5.0%, allowed +10%)"
    bad = judge_artifact(cfg, _art(bytes_=2_400_000, sha=SHA_B, mae=5e-4, snr=70.0), _rows(2.0), {1: 4.0}, None,
                         None, _base())
    checks = _by_name(bad)
    assert bad.vs_baseline == "changed"
    assert checks["regression.size"].status == "fail" and "+20.0%, allowed +10%" in checks["regression.size"].message
    assert checks["regression.parity"].status == "fail"
    assert checks["regression.parity"].message.startswith(
        "max abs error grew 500.00× > 10×; SNR fell 50.0 dB > 20.0 dB")
    assert checks["regression.latency"].status == "fail"
    assert checks["regression.latency"].message == (
        "p50 latency 0.500× PyTorch eager at 1 thread vs 0.250× in the baseline (+100%, allowed +25%)")


def test_parity_noise_floor_and_switches(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "[regression]\nmax_size_growth_pct = false\nmax_latency_growth_pct = false\n")
    # 1e-6 → 9e-6 is 9× but below 0.1 × atol (1e-5): float noise, not a regression
    checks = _by_name(judge_artifact(cfg, _art(mae=9e-6, bytes_=9_000_000), _rows(9.0), {1: 1.0}, None, None,
                                     _base()))
    parity = checks["regression.parity"]
    assert parity.status == "pass" and "below the noise floor" in parity.message
    assert checks["regression.size"].status == "skip" and "turned off" in checks["regression.size"].message
    assert checks["regression.latency"].status == "skip"
    # no eager row this run → latency regression skipped, not failed
    checks = _by_name(judge_artifact(_config(tmp_path), _art(), _rows(1.0), {}, None, None, _base()))
    assert checks["regression.latency"].status == "skip"


def test_parity_failure_integrity_and_export_failure(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    checks = _by_name(judge_artifact(cfg, _art(status="fail", snr=10.0), _rows(1.0), {1: 4.0}, None, None, None))
    assert checks["parity"].status == "fail" and checks["parity"].message.startswith("y: SNR 10.0 dB < 60 dB")
    assert "max abs error 1e-06 (atol 0.0001)" in checks["parity"].message
    altered = judge_artifact(cfg, _art(), [], {}, "not measured", "m_fp32.onnx changed after export", None)
    checks = _by_name(altered)
    assert checks["integrity"].status == "fail" and checks["regression.size"].status == "skip"
    failed = {**_art(), "status": "failed", "path": None, "bytes": None, "sha256": None, "parity": None,
              "error": {"message": "onnx conversion failed: fmod", "modules": ["(root) calls aten.fmod"]}}
    res = judge_artifact(cfg, failed, [], {}, None, None, _base())
    assert [c.status for c in res.checks][:3] == ["fail", "skip", "skip"]
    assert res.checks[0].message == "onnx conversion failed: fmod (where: (root) calls aten.fmod)"


def test_quantized_accuracy_against_target_and_budget(tmp_path: Path) -> None:
    q = {"quantization": {"recipe": "dynamic", "achieved": {"snr_db": 23.0, "top1_agreement": 0.95},
                          "meets_target": False}}
    cfg = _config(tmp_path)
    check = _by_name(judge_artifact(cfg, _art("int8-weights", **q), [], {}, None, None, None))["accuracy"]
    assert check.status == "fail"
    assert check.message == "held-out SNR 23.0 dB < 25 dB; top-1 agreement 95.0% < 97.0% (recipe dynamic)"
    cfg = _config(tmp_path, "[budget.int8-weights]\nmin_snr_db = 20\nmin_top1 = 0.9\n")
    assert _by_name(judge_artifact(cfg, _art("int8-weights", **q), [], {}, None, None, None))["accuracy"].status == (
        "pass")
    no_cal = {"quantization": {"recipe": "dynamic", "achieved": None, "meets_target": None}}
    assert _by_name(judge_artifact(cfg, _art("int8-weights", **no_cal), [], {}, None, None, None))[
        "accuracy"].status == "skip"


def test_baseline_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "ci" / "base.json"
    assert bl.load(path) is None
    bl.save(path, _base())  # creates the folder
    assert bl.load(path)["artifacts"][0]["sha256"] == SHA_A
    assert not list(path.parent.glob(".base.json.*"))  # no temp file left behind
    path.write_text("{nope")
    with pytest.raises(ConfigError, match=r"base.json: not valid JSON .*; fix it, or delete it and run"):
        bl.load(path)
    path.write_text(json.dumps({**_base(), "schema": "mobilize-baseline/9"}))
    with pytest.raises(ConfigError, match="schema 'mobilize-baseline/9' is not 'mobilize-baseline/1'"):
        bl.load(path)
    broken = _base()
    broken["artifacts"][0]["bytes"] = "big"
    path.write_text(json.dumps(broken))
    with pytest.raises(ConfigError, match="invalid baseline at artifacts/0/bytes"):
        bl.load(path)


def test_baseline_diff_lists_what_changes() -> None:
    old = _base()
    new = _base(bytes=2_100_000, sha256=SHA_B)
    new["tools"] = {"onnxruntime": "1.1"}
    new["artifacts"].append({**new["artifacts"][0], "precision": "fp16"})
    rows = bl.diff(old, new)
    assert ("(all)", "onnxruntime", "1.0", "1.1") in rows
    assert ("onnx fp32", "size", "2.00 MB", "2.10 MB") in rows
    assert ("onnx fp32", "sha256", "a" * 12, "b" * 12) in rows
    assert ("onnx fp16", "size", "—", "2.10 MB") in rows
    assert bl.diff(old, old) == []


def _record(tmp_path: Path) -> dict[str, Any]:
    """A check record with one failing, one passing and one skipped artifact check."""
    from mobilize.check.pipeline import CheckResult

    cfg = _config(tmp_path, "[budget]\nsize_mb = 1\n")
    arts = [judge_artifact(cfg, _art(), _rows(1.0), {1: 4.0}, None, None, _base()),
            judge_artifact(cfg, _art("int8-weights", bytes_=500_000, quantization={
                "recipe": "dynamic", "achieved": {"snr_db": 30.0, "top1_agreement": None}}),
                _rows(1.0), {1: 4.0}, None, None, _base())]
    result = CheckResult(cfg, tmp_path / "bundle", arts, _base(), ["a note & <angle>"], "2026-01-01T00:00:00+00:00",
                         1.5, {"tools": {}, "model": {"name": "m"}})
    return result.to_dict()


def test_junit_counts_and_failure_messages(tmp_path: Path) -> None:
    data = _record(tmp_path)
    root = ET.fromstring(junit.render(data))
    assert violations(root) == []
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    # every check is a test case; the ones that could not be judged are <skipped message="why"/>
    assert len(cases) == int(suite.get("tests")) == int(root.get("tests")) == data["counts"]["tests"]
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert len(skipped) == int(suite.get("skipped")) == data["counts"]["skipped"] >= 1
    assert all(c.find("skipped").get("message") for c in skipped)
    failures = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failures) == data["counts"]["failed"]
    size = next(c for c in failures if c.get("name") == "budget.size_mb")
    assert size.get("classname") == "mobilize.onnx.fp32"
    path = data["artifacts"][0]["path"]
    assert size.find("failure").get("message") == f"{path}: size 2.31 MB > budget 1.00 MB"
    assert {c.get("classname") for c in cases} == {"mobilize.onnx.fp32", "mobilize.onnx.int8-weights"}
    assert suite.find("system-out").text == "a note & <angle>"
    # time: the export and verification each verdict rests on, from the manifest; checks read off figures take none
    times = {(c.get("classname"), c.get("name")): float(c.get("time")) for c in cases}
    assert times[("mobilize.onnx.fp32", "export")] == pytest.approx(_art()["export_seconds"], abs=1e-3)
    assert times[("mobilize.onnx.fp32", "parity")] == pytest.approx(_art()["verify_seconds"], abs=1e-3)
    assert times[("mobilize.onnx.fp32", "budget.size_mb")] == 0
    assert root.get("time") == suite.get("time") == "1.500"


def test_junit_is_valid_when_everything_is_skipped_or_failed(tmp_path: Path) -> None:
    """The schema check itself catches what a dashboard rejects (a test that cannot fail is a defect)."""
    data = _record(tmp_path)
    assert violations(ET.fromstring(junit.render(data))) == []
    bad = ET.fromstring(junit.render(data))
    bad.set("skipped", "1")  # what mobilize used to write
    ET.SubElement(bad.find("testsuite"), "testcase", {"name": "x", "elapsed": "1"})
    assert violations(bad) == ["/testsuites: attribute 'skipped' not allowed",
                               "/testsuites/testsuite/testcase: attribute 'elapsed' not allowed"]


def test_summary_markdown(tmp_path: Path) -> None:
    text = summary.render(_record(tmp_path))
    assert text.startswith("## mobilize check ❌ failed:")
    assert "| ❌ onnx fp32 | 2.31 MB | pass |" in text
    assert "- **onnx fp32** · `budget.size_mb`: size 2.31 MB > budget 1.00 MB" in text
    assert "### Notes" in text and "a note & <angle>" in text


# --- vs baseline: the figures, the Markdown table, the HTML chart ---------------------------------------------------


def _comparison(res: Any) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in res.comparison}


def test_comparison_mirrors_the_regression_checks(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    base = _base(parity={"status": "pass", "max_abs_error": 2e-6, "snr_db": 120.0})
    res = judge_artifact(cfg, _art(mae=5e-5, snr=90.0), _rows(1.0), {1: 4.0}, None, None, base)
    rows, checks = _comparison(res), _by_name(res)
    assert rows["size"] | {"pct": round(rows["size"]["pct"], 6)} == {
        "metric": "size", "unit": "bytes", "baseline": 2_000_000, "current": 2_310_000, "delta": 310_000,
        "pct": 15.5, "limit": pytest.approx(2_200_000), "fails": "above", "rule": "+10%", "status": "fail"}
    assert checks["regression.size"].status == "fail"
    lat = rows["latency ratio"]
    assert (lat["baseline"], lat["current"], lat["limit"], lat["threads"], lat["status"]) == (
        0.25, 0.25, pytest.approx(0.3125), 1, "pass") and checks["regression.latency"].status == "pass"
    mae, snr = rows["max abs error"], rows["SNR"]
    assert (mae["limit"], mae["rule"], mae["status"]) == (pytest.approx(2e-5), "10×", "fail")
    assert (snr["limit"], snr["rule"], snr["delta"], snr["pct"], snr["status"]) == (100.0, "-20 dB", -30.0, None,
                                                                                   "fail")
    assert checks["regression.parity"].status == "fail"
    # the parity check fails on the error alone: the SNR row says the SNR itself is within its limit
    res = judge_artifact(cfg, _art(mae=5e-5, snr=110.0), _rows(1.0), {1: 4.0}, None, None, base)
    assert _by_name(res)["regression.parity"].status == "fail"
    assert (_comparison(res)["max abs error"]["status"], _comparison(res)["SNR"]["status"]) == ("fail", "pass")
    # below the noise floor (0.1 × atol) nothing fails, and the limit says where the floor is
    res = judge_artifact(cfg, _art(mae=9e-6, snr=100.5), _rows(1.0), {1: 4.0}, None, None, _base())
    mae = _comparison(res)["max abs error"]
    assert (mae["limit"], mae["rule"], mae["status"]) == (pytest.approx(1e-5), "noise floor 0.1 × atol", "pass")
    # turned off: the figures are still shown, with no limit
    res = judge_artifact(_config(tmp_path, "[regression]\nmax_size_growth_pct = false\n"), _art(), _rows(1.0),
                         {1: 4.0}, None, None, _base())
    assert (_comparison(res)["size"]["limit"], _comparison(res)["size"]["rule"]) == (None, "not checked")
    # a file the baseline does not know, or no baseline: nothing to compare
    assert judge_artifact(cfg, _art("int8-weights"), _rows(1.0), {1: 4.0}, None, None, _base()).comparison == []
    assert judge_artifact(cfg, _art(), _rows(1.0), {1: 4.0}, None, None, None).comparison == []


def test_summary_vs_baseline_table_and_link(tmp_path: Path) -> None:
    text = summary.render(_record(tmp_path))
    section = text[text.index("### vs baseline"):text.index("### Failures")]
    assert "| artifact | figure | baseline | this run | Δ | Δ % | fails if | verdict |" in section
    assert "| onnx fp32 | size | 2.00 MB | 2.31 MB | +310.0 KB | +15.5% | > 2.20 MB (+10%) | ❌ |" in section
    assert ("| onnx fp32 | latency ÷ eager (p50, 1 thread) | 0.250× | 0.250× | ±0.000× | +0.0% | > 0.312× (+25%) "
            "| ✅ |") in section
    assert "| onnx fp32 | SNR | 120.0 dB | 120.0 dB | ±0.0 dB | — | < 100.0 dB (-20 dB) | ✅ |" in section
    assert "Not in the baseline, so not compared: onnx int8-weights." in section
    assert "[summary.html](summary.html)" in section
    assert "`out/summary.html` in the check's output folder" in summary.render(_record(tmp_path), "out/summary.html",
                                                                               linkable=False)


def test_no_baseline_says_so_and_draws_no_chart(tmp_path: Path) -> None:
    from mobilize.check import charts
    from mobilize.check.pipeline import CheckResult

    cfg = _config(tmp_path)
    arts = [judge_artifact(cfg, _art(), _rows(1.0), {1: 4.0}, None, None, None)]
    data = CheckResult(cfg, tmp_path / "bundle", arts, None, [NO_BASELINE], "2026-01-01T00:00:00+00:00", 1.5,
                       {"tools": {}, "model": {"name": "m"}}).to_dict()
    text = summary.render(data)
    assert f"### vs baseline\n\n{NO_BASELINE}\n" in text and "| figure |" not in text
    page = summary.html(data)
    assert "<h2>Baseline comparison</h2><p>no baseline yet" in page and "no chart" in page
    assert "<svg" not in page and charts.baseline_figure(data) is None
    assert "<h2>Baseline comparison</h2>" in summary.html(_record(tmp_path))
    assert summary.html(_record(tmp_path)).count("<svg") == 1


def _cmp(metric: str, was: float | None, now: float | None, limit: float | None, status: str = "pass",
         **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "baseline": was, "current": now, "limit": limit, "status": status,
            "fails": "below" if metric == "SNR" else "above", **extra}


def _wide_record(snr: bool) -> dict[str, Any]:
    """Wide ranges on purpose: 20 KB next to 3.4 MB, a limit far past every value, a file not timed now, a check
    turned off (no limit), a zero error (no place on a log axis), a big regression."""
    def art(prec: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"format": "onnx", "precision": prec, "comparison": rows}

    parity = (lambda was, now, lim, st="pass": _cmp("SNR", was, now, lim, st)) if snr else \
        (lambda was, now, lim, st="pass": _cmp("max abs error", was, now, lim, st))
    return {"artifacts": [
        art("fp32", [_cmp("size", 3_400_000, 3_410_000, 3_740_000), _cmp("latency ratio", 0.9, 1.694, 1.125, "fail",
                                                                           threads=1),
                     parity(130.0, 129.0, 110.0) if snr else parity(1.5e-6, 0.0, 1.5e-5)]),
        art("fp16", [_cmp("size", 1_700_000, 1_690_000, None, "skip"), _cmp("latency ratio", 0.5, None, 0.625, "skip",
                                                                            threads=1),
                     parity(60.0, 20.0, 40.0, "fail") if snr else parity(4e-3, 9.0, 4e-2, "fail")]),
        art("int8", [_cmp("size", 20_000, 21_000, 22_000), _cmp("latency ratio", 0.05, 0.06, 0.0625, threads=1),
                     parity(30.0, 31.0, 10.0) if snr else parity(0.5, 0.4, 5.0)]),
        {"format": "tflite", "precision": "fp32", "comparison": []}]}


@pytest.mark.parametrize("snr", [True, False], ids=["snr", "max-abs-error"])
def test_baseline_chart_keeps_every_point_inside_its_axes(snr: bool) -> None:
    from fixtures.axes import outside, points
    from mobilize.check import charts

    fig = charts.baseline_figure(_wide_record(snr))
    assert len(fig.axes) == 3 and all(points(ax) for ax in fig.axes)
    assert outside(fig) == []
    size, latency, parity = fig.axes
    assert "KB" not in size.get_xlabel() and "MB, 1 MB = 10⁶ bytes" in size.get_xlabel()  # one unit for all rows
    assert "÷ PyTorch eager" in latency.get_xlabel() and "< 1 = faster than eager" in latency.get_xlabel()
    assert ("SNR" in parity.get_xlabel() and "dB" in parity.get_xlabel()) if snr else parity.get_xscale() == "log"
    assert [t.get_text() for t in size.get_yticklabels()] == ["onnx int8", "onnx fp16", "onnx fp32"]  # no tflite


def test_baseline_chart_svg_is_inline_and_reproducible(tmp_path: Path) -> None:
    import re

    a, b = summary.html(_record(tmp_path)), summary.html(_record(tmp_path))
    assert a == b
    assert not re.search(r"https?://|<script|<link|@import|url\((?!#)", a, re.I)
