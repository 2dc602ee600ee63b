"""Wall time of the int8 search with ``--jobs 1`` and ``--jobs 2``, side by side in one run, and a check that both
choose the same file and write the same quantization record (timings apart).

    PYTHONHASHSEED=0 .venv/bin/python benchmarks/int8_jobs.py --rounds 2

Each round runs ``mobilize export benchmarks/models/crnn.py:build --formats onnx --precisions int8 …`` once per
``--jobs`` value as fresh processes, the order alternating between rounds. Reported: the whole command's wall time
and the search's own (``quantization.time_budget.spent_s``), per run and as medians.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "crnn.py"
# 47 dB is above what the all-int8 files reach (~45 dB): the per-layer search runs (12 probes, greedy steps)
ARGS = ["--formats", "onnx", "--precisions", "int8", "--calibration", f"{MODEL}:calibration",
        "--class-axis", "logits=-1", "--min-snr", "47", "--allow-below-target"]


def _strip(q: dict[str, Any]) -> dict[str, Any]:
    q = json.loads(json.dumps(q))
    for key in ("time_budget", "latency", "slower_than_fp32"):
        q.pop(key, None)
    for c in q["candidates"]:
        c.pop("latency_ratio", None)
        c.pop("latency_ratio_ci", None)
    if q.get("sensitivity"):
        q["sensitivity"].pop("seconds", None)
    return q


def run(jobs: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"jobs{jobs}"
    cmd = [str(Path(sys.executable).with_name("mobilize")), "export", f"{MODEL}:build", *ARGS, "--jobs", str(jobs),
           "--out", str(out), "--json", str(tmp / f"jobs{jobs}.json"), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    art = json.loads((tmp / f"jobs{jobs}.json").read_text())["artifacts"][0]
    q = art["quantization"]
    return {"jobs": jobs, "wall_s": round(wall, 1), "search_s": q["time_budget"]["spent_s"],
            "sha256": hashlib.sha256((out / art["path"]).read_bytes()).hexdigest(), "record": _strip(q),
            "probes": (q.get("sensitivity") or {}).get("probed_layers"),
            "skipped_cannot_win": len(q["skipped_cannot_win"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, default=HERE / "int8_jobs.json")
    a = ap.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for jobs in ((1, 2) if r % 2 == 0 else (2, 1)):
                res = run(jobs, Path(tmp))
                res["round"] = r
                runs.append(res)
                print(f"round {r} --jobs {jobs}: wall {res['wall_s']} s, search {res['search_s']} s", flush=True)
    same_file = len({x["sha256"] for x in runs}) == 1
    same_record = all(x["record"] == runs[0]["record"] for x in runs)
    summary = {j: {"wall_s": statistics.median(x["wall_s"] for x in runs if x["jobs"] == j),
                   "search_s": statistics.median(x["search_s"] for x in runs if x["jobs"] == j)} for j in (1, 2)}
    doc = {"machine": {"cores": len(os.sched_getaffinity(0)), "load_average_at_end": os.getloadavg(),
                       "python": sys.version.split()[0]},
           "command": "mobilize export benchmarks/models/crnn.py:build " + " ".join(ARGS[:2] + ARGS[2:4]) +
           " --calibration benchmarks/models/crnn.py:calibration " + " ".join(ARGS[6:]) + " --jobs N",
           "runs": [{k: v for k, v in x.items() if k != "record"} for x in runs], "median": summary,
           "same_file": same_file, "same_record": same_record}
    a.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"median": summary, "same_file": same_file, "same_record": same_record,
                      "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
