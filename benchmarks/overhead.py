"""Export overhead: `mobilize export` (verification, analysis, placement, timing and bundle included) against the raw
converter calls in one script (benchmarks/raw_convert.py), measured side by side in one run.

Each round runs both commands as fresh processes, one after the other (the order alternates between rounds), and
records the ratio of their wall times; the figure reported is the median ratio over the rounds. Only ratios are
compared: on a shared machine absolute seconds move with the load, a ratio of two runs taken back to back much less.

    .venv/bin/python benchmarks/overhead.py                                  # resnet18 + zoo:mobilenet_v2, fp32
    .venv/bin/python benchmarks/overhead.py --models benchmarks/models/resnet18.py:build --precisions fp32,fp16 \\
        --rounds 3 --json /tmp/overhead.json

The result is appended to benchmarks/overhead.json (one record per run) unless --no-record.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_MODELS = ("benchmarks/models/resnet18.py:build", "zoo:mobilenet_v2")
FORMATS = "onnx,coreml,tflite"


def _mobilize_cmd(source: str, out: Path, precisions: str) -> list[str]:
    return [sys.executable, "-m", "mobilize", "export", source, "--out", str(out), "--formats", FORMATS,
            "--precisions", precisions]


def _raw_cmd(source: str, out: Path, precisions: str) -> list[str]:
    return [sys.executable, str(HERE / "raw_convert.py"), source, str(out), "--precisions", precisions]


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds of the command and all its children, exit code, stderr tail)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode, (proc.stderr or "")[-2000:]


def measure(source: str, precisions: str, rounds: int, other: Path | None = None) -> dict[str, Any]:
    rows = []
    for i in range(rounds):
        work = Path(tempfile.mkdtemp(prefix="mobilize-overhead-"))
        try:
            order: tuple[str, ...] = ("raw", "mobilize") if i % 2 == 0 else ("mobilize", "raw")
            if other is not None:
                order = (*order, "other") if i % 2 == 0 else ("other", *order)
            got: dict[str, Any] = {}
            for which in order:
                cmd = (_raw_cmd if which == "raw" else _mobilize_cmd)(source, work / which, precisions)
                env = {**os.environ, "PYTHONPATH": str(other)} if which == "other" else None
                load = os.getloadavg()[0]
                seconds, cpu, rc, tail = _timed(cmd, env)
                got[which] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "exit_code": rc,
                              "load_1min_before": round(load, 2)}
                if which == "raw" and rc != 0:
                    got[which]["error"] = tail
            got["ratio"] = round(got["mobilize"]["seconds"] / got["raw"]["seconds"], 3)
            got["cpu_ratio"] = round(got["mobilize"]["cpu_seconds"] / got["raw"]["cpu_seconds"], 3)
            if other is not None:
                got["other_ratio"] = round(got["other"]["seconds"] / got["raw"]["seconds"], 3)
                got["other_cpu_ratio"] = round(got["other"]["cpu_seconds"] / got["raw"]["cpu_seconds"], 3)
            got["order"] = list(order)
            rows.append(got)
            print(f"  {source} {precisions} round {i + 1}: mobilize {got['mobilize']['seconds']:.1f} s "
                  f"(exit {got['mobilize']['exit_code']}), raw {got['raw']['seconds']:.1f} s → "
                  f"{got['ratio']:.2f}× (CPU {got['cpu_ratio']:.2f}×)"
                  + (f" (other: {got['other_ratio']:.2f}×, CPU {got['other_cpu_ratio']:.2f}×)" if other else ""),
                  file=sys.stderr, flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    ratios = [r["ratio"] for r in rows]
    out = {"source": source, "precisions": precisions, "formats": FORMATS, "rounds": rows,
           "median_ratio": round(statistics.median(ratios), 3), "min_ratio": min(ratios), "max_ratio": max(ratios),
           "median_cpu_ratio": round(statistics.median(r["cpu_ratio"] for r in rows), 3)}
    if other is not None:
        out["other"] = str(other)
        out["other_median_ratio"] = round(statistics.median(r["other_ratio"] for r in rows), 3)
        out["other_median_cpu_ratio"] = round(statistics.median(r["other_cpu_ratio"] for r in rows), 3)
    return out


def machine() -> dict[str, Any]:
    from mobilize.bench.machine import describe

    m = describe()
    return {"cpu": m["cpu"], "cores_usable": m["cores_usable"], "os": m["os"], "python": m["python"],
            "versions": m["versions"], "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--precisions", default="fp32", help="one set per run, e.g. fp32 or fp32,fp16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--other", type=Path, default=None,
                    help="also time another mobilize checkout's src/ folder (PYTHONPATH) in the same rounds")
    a = ap.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data = {"run": started, "machine": machine(), "results": []}
    for source in [m for m in a.models.split(",") if m]:
        data["results"].append(measure(source, a.precisions, a.rounds, a.other))
    data["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(data, indent=2)
    if a.json:
        a.json.write_text(text + "\n")
    if not a.no_record:
        log = HERE / "overhead.json"
        runs = json.loads(log.read_text()) if log.exists() else []
        runs.append(data)
        log.write_text(json.dumps(runs, indent=2) + "\n")
    for r in data["results"]:
        print(f"{r['source']} [{r['precisions']}]: mobilize ÷ raw = {r['median_ratio']:.2f}× (median of "
              f"{len(r['rounds'])}; {r['min_ratio']:.2f}–{r['max_ratio']:.2f}), CPU time {r['median_cpu_ratio']:.2f}×"
              + (f"; {r['other']}: {r['other_median_ratio']:.2f}×, CPU {r['other_median_cpu_ratio']:.2f}×"
                 if "other" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
