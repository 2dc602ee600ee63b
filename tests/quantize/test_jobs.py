"""``--jobs``: the independent int8 trials run in worker processes, and the result is the same for every N."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mobilize.errors import OptionError
from mobilize.quantize import AccuracyTarget
from mobilize.quantize import driver as D


def _run(digits_onnx: dict[str, Any], tmp: Path, jobs: int) -> tuple[bytes, dict[str, Any]]:
    # 45 dB is above what the all-int8 digits files reach: the per-layer search runs, and some of its greedy steps
    # keep so much float that they are over the size limit
    target = AccuracyTarget(min_snr_db=45.0, jobs=jobs)
    ctx = D.Context.build(digits_onnx["spec"], digits_onnx["calib"], target)
    dest = tmp / f"chosen{jobs}.onnx"
    _, record = D.quantize_artifact("onnx", "int8", digits_onnx["fp32"], dest, ctx, tmp / f"work{jobs}")
    return dest.read_bytes(), record


def _without_timings(record: dict[str, Any]) -> dict[str, Any]:
    r = json.loads(json.dumps(record))
    r.pop("time_budget")
    r.pop("latency")
    r.pop("slower_than_fp32")
    for c in r["candidates"]:
        c.pop("latency_ratio")
        c.pop("latency_ratio_ci")
    r["sensitivity"].pop("seconds")
    return r


@pytest.mark.slow
def test_jobs_2_chooses_the_same_file_and_records_the_same_as_jobs_1(digits_onnx: dict[str, Any], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    starts: list[int] = []
    real_start = D.TrialRunner._start

    def counted(self: D.TrialRunner) -> Any:
        starts.append(self.jobs)
        return real_start(self)

    monkeypatch.setattr(D.TrialRunner, "_start", counted)
    monkeypatch.setitem(D.POOL_WORTH_S, "onnx", 0.0)  # digits' trials are quick: start the workers anyway
    one, r1 = _run(digits_onnx, tmp_path, 1)
    assert starts == []  # --jobs 1: every trial in this process
    two, r2 = _run(digits_onnx, tmp_path, 2)
    assert starts == [2]  # the base trials and the probes went to the worker processes
    assert one == two
    assert _without_timings(r1) == _without_timings(r2)
    assert (r1["time_budget"]["jobs"], r2["time_budget"]["jobs"]) == (1, 2)
    # the search went through the per-layer probes, and a budget that does not bind changes nothing
    assert r1["sensitivity"]["probed_layers"] > 1 and len(r1["candidates"]) > 4
    assert r1["time_budget"]["bound"] is False and r1["time_budget"]["skipped"] == []
    assert r1["time_budget"]["seconds"] == 300.0
    # greedy steps over the size limit are listed as skipped (never measured), with the reason
    over = [s for s in r1["sensitivity"]["greedy_steps"] if s["over_size_limit"]]
    assert over and all(s["snr_db"] is None for s in over)
    assert len(r1["skipped_cannot_win"]) == len(over)
    assert all("over the size limit" in s["why"] for s in r1["skipped_cannot_win"])


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_jobs(bad: Any) -> None:
    with pytest.raises(OptionError, match="--jobs .* must be a whole number of worker processes ≥ 1"):
        AccuracyTarget(jobs=bad)


def test_api_refuses_bad_jobs_before_any_work(tmp_path: Path) -> None:
    from mobilize import api

    with pytest.raises(OptionError, match="--jobs 0 must be"):
        api.export("zoo:digits", tmp_path / "b", formats="onnx", precisions="fp32", jobs=0)
    assert not (tmp_path / "b").exists()


def test_cli_refuses_bad_jobs_in_one_line(tmp_path: Path) -> None:
    got = subprocess.run([sys.executable, "-m", "mobilize", "export", "zoo:digits", "--out", str(tmp_path / "b"),
                          "--formats", "onnx", "--precisions", "fp32", "--jobs", "two"],
                         capture_output=True, text=True, check=False)
    assert got.returncode == 2, got.stderr
    assert got.stderr.strip().count("\n") == 0 and "--jobs 'two' must be a whole number" in got.stderr
    assert not (tmp_path / "b").exists()


def test_the_default_is_the_usable_cores() -> None:
    import os

    from mobilize.quantize.recipes import usable_cores

    assert D.trial_jobs("onnx", None) == usable_cores() == len(os.sched_getaffinity(0))
    assert D.trial_jobs("onnx", 3) == 3
    assert D.trial_jobs("pte", 3) == 1  # ExecuTorch's program lives in this process only


def test_trial_file_names_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    code = ("from pathlib import Path; from mobilize.quantize.driver import trial_path; "
            "from mobilize.quantize.recipes import recipe; "
            "print(trial_path(recipe('onnx', 'int8', 'qdq-per-channel'), 'minmax', ['a', 'b'], Path('w'), "
            "Path('m.onnx')))")
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**__import__("os").environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(names) == 1, names
