"""Harness honesty: does ``mobilize bench`` report what a bare timing loop around the same runtime call measures?

For every fp32 ONNX / TFLite artifact of a bundle, in one process, alternating ``--pairs`` times (default 3), with
a bare loop before the first and after every harness run:

1. a bare loop — a fresh ``onnxruntime.InferenceSession`` (intra-op threads = N, inter-op 1) or
   ``ai_edge_litert`` ``Interpreter(model_path, num_threads=N)`` + its signature runner, fed the bundle's example
   inputs straight from reference.npz; warm-up, then ``perf_counter`` around each call; median;
2. ``mobilize.bench.run.bench(bundle, threads=[N], precisions="fp32")`` (the harness, its own sessions);

Each harness p50 is divided by the mean of the bare p50s just before and after it; the script prints the median of
those ratios per artifact (and each one); within ±5% is the target. Not a unit test:
the ratio is a property of this machine at this moment (another process on the CPU moves it).

    .venv/bin/python benchmarks/harness_honesty.py BUNDLE [--threads 1] [--seconds 2] [--pairs 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def example_feeds(bundle: Path, art: dict[str, Any]) -> dict[str, np.ndarray]:
    """The 'example' input set from reference.npz, keyed by the file's own input names, cast to its dtypes."""
    with np.load(bundle / "reference.npz", allow_pickle=False) as z:
        labels = [str(x) for x in z["__labels__"]]
        i = labels.index("example") if "example" in labels else 0
        arrays = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(f"in{i}/")}
    model_names = list(arrays)
    feeds = {}
    for pos, t in enumerate(art["inputs"]):
        src = arrays[t.get("model_name") or model_names[pos]]
        feeds[t["name"]] = np.ascontiguousarray(src.astype(t["dtype"]))
    return feeds


def bare_call(fmt: str, path: Path, threads: int, feeds: dict[str, np.ndarray]) -> Any:
    if fmt == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, feeds)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    runner = interp.get_signature_runner()
    return lambda: runner(**feeds)


def bare_p50(call: Any, seconds: float) -> tuple[float, float]:
    """(median ms of individually timed runs, mean ms of the whole loop) after a 0.5 s warm-up."""
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        call()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 50:
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), (time.perf_counter() - start) * 1000 / len(times)


def main() -> int:
    ap = argparse.ArgumentParser(description="harness p50 vs a bare timing loop, per fp32 artifact")
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per bare loop")
    ap.add_argument("--pairs", type=int, default=3, help="bare/harness alternations (median ratio is reported)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from mobilize._quiet import captured_output, set_verbose
    from mobilize.bench.latency import Settings
    from mobilize.bench.run import bench

    set_verbose(False)
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    arts = [
        a
        for a in manifest["artifacts"]
        if a["status"] == "ok" and a["precision"] == "fp32" and a["format"] in ("onnx", "tflite")
    ]
    if not arts:
        print("no fp32 onnx/tflite artifact in the bundle", file=sys.stderr)
        return 2
    calls = {}
    with captured_output():
        for a in arts:
            feeds = example_feeds(args.bundle, a)
            calls[a["format"]] = bare_call(a["format"], args.bundle / a["path"], args.threads, feeds)
    # alternate bare / harness phases; each harness p50 is compared with the mean of the bare loops on either
    # side of it, so slow drift of a shared machine cancels; the median over the pairs is the verdict
    bares = [{f: bare_p50(c, args.seconds) for f, c in calls.items()}]
    harness = []
    for _ in range(args.pairs):
        result = bench(
            args.bundle,
            threads=[args.threads],
            precisions="fp32",
            formats=",".join(calls),
            baseline=False,
            memory=False,
            settings=Settings(min_seconds=max(1.0, args.seconds)),
        )
        harness.append({r["format"]: r for r in result.rows if r["threads"] == args.threads})
        bares.append({f: bare_p50(c, args.seconds) for f, c in calls.items()})
    rows = []
    print(f"{'artifact':<14}{'harness p50':>13}{'bare p50':>11}{'bare mean':>11}{'ratio':>8}   per pair")
    for f in calls:
        pairs = []
        for k, h in enumerate(harness):
            b = (bares[k][f][0] + bares[k + 1][f][0]) / 2
            pairs.append((h[f]["latency_ms"]["p50"], b, (bares[k][f][1] + bares[k + 1][f][1]) / 2))
        ratios = [h / b for h, b, _ in pairs]
        ratio = statistics.median(ratios)
        h_med = statistics.median(p[0] for p in pairs)
        b_med = statistics.median(p[1] for p in pairs)
        bm_med = statistics.median(p[2] for p in pairs)
        rows.append(
            {
                "artifact": f"{f} fp32",
                "threads": args.threads,
                "harness_p50_ms": h_med,
                "bare_p50_ms": b_med,
                "bare_mean_ms": bm_med,
                "ratio": ratio,
                "ratios": ratios,
            }
        )
        flag = "ok" if abs(ratio - 1) <= 0.05 else "OUTSIDE ±5%"
        print(
            f"{f + ' fp32':<14}{h_med:>11.4f}ms{b_med:>9.4f}ms{bm_med:>9.4f}ms{ratio:>7.3f}×   "
            + " ".join(f"{r:.3f}" for r in ratios)
            + f"  {flag}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"bundle": str(args.bundle), "rows": rows, "machine": result.data["machine"]}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
