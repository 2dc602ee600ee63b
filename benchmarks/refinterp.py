"""Core ML reference interpreter speed: this tree against a baseline commit, side by side in one run.

The files are made once with this tree (`mobilize export`): the zoo models at fp32 and fp16, and the CNN + BiLSTM
OCR model of benchmarks/models/ocr_bilstm.py at fp32, int8-weights (weight-only) and int8 (W8A8, calibrated on 32
random lines). Then, for every round, two fresh worker processes — the baseline's ``src`` (``git archive``) first on
PYTHONPATH, and this tree — load every file and time its predictions (median of ``--runs`` after one warm-up run);
the order alternates between rounds. Last, `mobilize export` of the OCR model to ``--formats coreml --precisions
fp32,int8`` (verification, calibration and the quantization trials included) is timed the same way. Each figure is
the median over rounds of the per-round ratio after ÷ before: on a shared machine seconds move with the load, a ratio
of two runs taken back to back much less.

    PYTHONHASHSEED=0 .venv/bin/python benchmarks/refinterp.py --baseline main --rounds 3
    PYTHONHASHSEED=0 .venv/bin/python benchmarks/refinterp.py --baseline 3866eb0 --no-export --blas-threads 1

Writes the run (every round) into benchmarks/refinterp.json under its BLAS thread setting unless --no-record,
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OCR = "benchmarks/models/ocr_bilstm.py:build"
ZOO = ("digits", "mobilenet_v2", "text_encoder", "gru_classifier")


def _env(src: Path | None, blas_threads: int | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    if src is not None:
        env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if blas_threads:
        env.update(OPENBLAS_NUM_THREADS=str(blas_threads), OMP_NUM_THREADS=str(blas_threads),
                   MKL_NUM_THREADS=str(blas_threads))
    return env


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def _export(source: str, out: Path, precisions: str, calib: Path | None, env: dict[str, str],
            verify: bool = True) -> float:
    cmd = [sys.executable, "-m", "mobilize", "export", source, "--out", str(out), "--formats", "coreml",
           "--precisions", precisions]
    if calib is not None:
        cmd += ["--calibration", str(calib)]
    if not verify:
        cmd.append("--no-verify")
    start = time.perf_counter()
    _run(cmd, env, ROOT)
    return time.perf_counter() - start


def _baseline_src(ref: str, dest: Path) -> tuple[Path, str]:
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src", commit


def _make_files(work: Path, calib: Path) -> list[dict[str, str]]:
    env = _env(None, None)
    files = []
    for name in ZOO:
        out = work / f"zoo_{name}"
        _export(f"zoo:{name}", out, "fp32,fp16", None, env, verify=False)
        files += [{"key": f"zoo:{name} {p}", "path": str(out / f"{name}_{p}.mlpackage"),
                   "reference": str(out / "reference.npz")} for p in ("fp32", "fp16")]
    out = work / "ocr"
    _export(OCR, out, "fp32,int8-weights,int8", calib, env, verify=False)
    files += [{"key": f"ocr_bilstm {p}", "path": str(out / f"ocr_bilstm_{p}.mlpackage"),
               "reference": str(out / "reference.npz")} for p in ("fp32", "int8-weights", "int8")]
    return files


def worker(files_json: str, runs: int) -> None:
    """In a fresh process: load every file with the interpreter on sys.path and time its predictions."""
    import coremltools.proto.MIL_pb2  # noqa: F401 - imported before timing (it imports torch: seconds)
    import numpy as np

    import mobilize
    from mobilize.runtime.coreml_ref.program import Program

    out: dict[str, Any] = {"mobilize": str(Path(mobilize.__file__).parent), "files": {}}
    for f in json.loads(Path(files_json).read_text()):
        ref = np.load(f["reference"])
        feeds = {k.split("/", 1)[1]: ref[k] for k in ref.files if k.startswith("in0/")}
        t0 = time.perf_counter()
        program = Program(f["path"])
        program.constants()
        program.run(feeds)  # warm-up (the first run also compiles the plan where there is one)
        first = time.perf_counter() - t0
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            program.run(feeds)
            times.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        again = Program(f["path"])  # a second Program of the same file (calibration, verification, trials do this)
        again.run(feeds)
        second = time.perf_counter() - t0
        out["files"][f["key"]] = {"predict_s": statistics.median(times), "min_s": min(times),
                                  "load_and_first_run_s": first, "second_program_first_run_s": second}
    print(json.dumps(out))


def _machine() -> dict[str, Any]:
    import numpy as np

    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "numpy": np.__version__, "load_average": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="main", help="git ref of the 'before' tree (default: main)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=7, help="timed predictions per file per round")
    ap.add_argument("--no-export", action="store_true", help="skip timing `mobilize export` of the OCR model")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="OPENBLAS/OMP/MKL_NUM_THREADS for the timed processes (default: the environment's)")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--worker", nargs=2, metavar=("FILES_JSON", "RUNS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="refinterp-") as tmp:
        work = Path(tmp)
        (work / "baseline").mkdir()
        base_src, commit = _baseline_src(args.baseline, work / "baseline")
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True,
                                    text=True, check=True).stdout.strip())
        calib = work / "calib.npz"
        np.savez(calib, image=np.random.default_rng(0).random((32, 1, 32, 384), dtype=np.float32))
        print("making the Core ML files …", file=sys.stderr)
        files = _make_files(work, calib)
        files_json = work / "files.json"
        files_json.write_text(json.dumps(files))
        sides = {"before": _env(base_src, args.blas_threads), "after": _env(None, args.blas_threads)}
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            rec: dict[str, Any] = {"order": order}
            for side in order:
                print(f"round {r + 1}: interpreter, {side} …", file=sys.stderr)
                proc = _run([sys.executable, str(Path(__file__).resolve()), "--worker", str(files_json),
                             str(args.runs)], sides[side], ROOT)
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                want = str(base_src / "mobilize") if side == "before" else str(ROOT / "src" / "mobilize")
                assert res["mobilize"] == want, (side, res["mobilize"], want)  # the tree we meant to time
                rec[side] = res["files"]
            if not args.no_export:
                for side in order:
                    print(f"round {r + 1}: mobilize export, {side} …", file=sys.stderr)
                    rec.setdefault("export_s", {})[side] = _export(OCR, work / f"export_{side}_{r}", "fp32,int8",
                                                                    calib, sides[side])
            rounds.append(rec)

    def ratio(get: Any) -> dict[str, Any]:
        ratios = [get(rd, "after") / get(rd, "before") for rd in rounds]
        return {"ratio": round(statistics.median(ratios), 3), "range": [round(min(ratios), 3), round(max(ratios), 3)],
                "before_s": round(statistics.median(get(rd, "before") for rd in rounds), 5),
                "after_s": round(statistics.median(get(rd, "after") for rd in rounds), 5)}

    summary: dict[str, Any] = {}
    for f in files:
        k = f["key"]
        summary[k] = {"predict": ratio(lambda rd, s, k=k: rd[s][k]["predict_s"]),
                      "second_program": ratio(lambda rd, s, k=k: rd[s][k]["second_program_first_run_s"])}
    if not args.no_export:
        summary["mobilize export ocr_bilstm coreml fp32,int8"] = {"wall": ratio(lambda rd, s: rd["export_s"][s])}
    record = {"command": " ".join(["PYTHONHASHSEED=0", ".venv/bin/python", "benchmarks/refinterp.py", *sys.argv[1:]]),
              "baseline": {"ref": args.baseline, "commit": commit}, "after": {"commit": head, "src_dirty": dirty},
              "blas_threads": args.blas_threads or os.environ.get("OPENBLAS_NUM_THREADS") or "default",
              "machine": _machine(), "rounds": args.rounds, "runs": args.runs, "summary": summary,
              "per_round": rounds}
    if not args.no_record:  # one record per BLAS thread setting, the last run of each
        path = HERE / "refinterp.json"
        doc = json.loads(path.read_text()) if path.is_file() else {}
        doc[f"blas_threads={record['blas_threads']}"] = record
        path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nbaseline {args.baseline} ({commit[:10]}) vs {head[:10]}{' + changes' if dirty else ''}; "
          f"median of {args.rounds} rounds, after ÷ before\n")
    print("| file | before ms/prediction | after ms/prediction | after ÷ before | range | second Program, first "
          "run: after ÷ before |")
    print("|---|---:|---:|---:|---:|---:|")
    for f in files:
        p, s = summary[f["key"]]["predict"], summary[f["key"]]["second_program"]
        print(f"| {f['key']} | {1e3 * p['before_s']:.2f} | {1e3 * p['after_s']:.2f} | {p['ratio']:.3f}× | "
              f"{p['range'][0]:.2f}–{p['range'][1]:.2f}× | {s['ratio']:.3f}× |")
    if not args.no_export:
        w = summary["mobilize export ocr_bilstm coreml fp32,int8"]["wall"]
        print(f"| `mobilize export` ocr_bilstm --formats coreml --precisions fp32,int8 (wall) | {w['before_s']:.1f} s "
              f"| {w['after_s']:.1f} s | {w['ratio']:.3f}× | {w['range'][0]:.2f}–{w['range'][1]:.2f}× | |")


if __name__ == "__main__":
    main()
