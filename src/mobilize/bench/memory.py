"""Peak memory: load and run one artifact in its own subprocess and read the kernel's high-water mark.

The child imports only what that artifact needs (numpy + its runtime; PyTorch only for the eager baseline), records
its resident set after the imports (``baseline``), loads the file, runs it a few times, and reports ``VmHWM`` from
``/proc/self/status`` (Linux) or ``ru_maxrss`` (elsewhere). ``peak_rss_mb`` is the whole process, interpreter and
runtime libraries included — what the OS charges for running that file; ``model_rss_mb = peak − baseline`` is the
part the model itself added.

Run as ``python -m mobilize.bench.memory '<json job>'``; the result is one line ``MOBILIZE_MEMORY {json}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from mobilize.errors import one_line

MARKER = "MOBILIZE_MEMORY "


def measure(job: dict[str, Any], *, timeout: float = 600.0) -> dict[str, Any]:
    """Run ``job`` in a fresh interpreter; returns ``{peak_rss_mb, baseline_rss_mb, model_rss_mb}`` or
    ``{error}``.

    Args:
        job: ``{"kind": "runner", "format", "path", "threads", "reference", "input_names", "runs"}`` for a bundle
            file, or ``{"kind": "torch", "source", "reference", "input_names", "threads", "runs"}`` for PyTorch eager.
    """
    import tempfile

    from mobilize.isolate import python_command

    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("TQDM_DISABLE", "1")
    job = {**job, **{k: os.path.abspath(job[k]) for k in ("path", "reference") if job.get(k)}}
    # an isolated interpreter in a private folder: a module named like a runtime in the bundle or the current
    # folder is never imported (the PyTorch baseline keeps the caller's path: it imports the model the user named)
    argv = python_command("mobilize.bench.memory", json.dumps(job), keep_cwd=job.get("kind") == "torch")
    try:
        with tempfile.TemporaryDirectory(prefix="mobilize-memory-") as cwd:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=cwd,
                check=False,
            )
    except subprocess.TimeoutExpired:
        return {"error": f"memory measurement timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            if "error" in data:
                return {"error": data["error"]}
            peak = data["peak_kb"] * 1024 / 1e6  # ru_maxrss is KiB on Linux; reported in decimal MB like sizes
            base = data["baseline_kb"] * 1024 / 1e6
            return {
                "peak_rss_mb": round(peak, 2),
                "baseline_rss_mb": round(base, 2),
                "model_rss_mb": round(max(peak - base, 0.0), 2),
            }
    tail = " ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-2:])[:300]
    return {"error": f"memory subprocess exited with code {proc.returncode} without a result: {tail}"}


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _maxrss_kb() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux


def _current_kb() -> int:
    return _status_kb("VmRSS") or _maxrss_kb()


def _peak_kb() -> int:
    return _status_kb("VmHWM") or _maxrss_kb()


def _child(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from mobilize.verify.parity import Reference

    ref = Reference.load(job["reference"])
    runs = int(job.get("runs", 5))
    threads = int(job["threads"])
    if job["kind"] == "torch":
        import torch

        from mobilize._quiet import captured_output, set_verbose
        from mobilize.source import load_source

        set_verbose(False)
        baseline = _current_kb()
        with captured_output():
            spec = (
                load_source(job["source"], weights=job["weights"]) if job.get("weights") else load_source(job["source"])
            )
        torch.set_num_threads(threads)
        arrays = pick_set(ref, job["input_names"])
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in job["input_names"])
        with torch.inference_mode():
            for _ in range(runs):
                spec.module(*tensors)
    else:
        from mobilize import formats

        runner_cls = formats.get(job["format"]).load("runner")
        runner_cls.preload()  # imported before the baseline so the runtime counts as runtime, not model
        baseline = _current_kb()
        with runner_cls(job["path"], threads=threads) as runner:
            feeds = feeds_for(runner, ref, job["input_names"])
            for _ in range(runs):
                runner.infer(feeds)
    return {"peak_kb": _peak_kb(), "baseline_kb": baseline}


def pick_set(ref: Any, input_names: list[str], fits: Any = None) -> dict[str, Any]:
    """The reference input set to benchmark with: the ``example`` set, else the first one ``fits`` accepts."""
    sets = sorted(ref.sets, key=lambda s: s.label != "example")
    for s in sets:
        if all(n in s.arrays for n in input_names) and (fits is None or fits(s.arrays)):
            return s.arrays
    from mobilize.errors import RuntimeFailure

    raise RuntimeFailure("no reference input set fits the file's input shapes")


def feeds_for(runner: Any, ref: Any, input_names: list[str]) -> dict[str, Any]:
    """Feeds for a loaded runner: a reference input set, mapped to the file's names and cast to its dtypes."""
    from mobilize.verify.parity import adapt_feed, io_map

    in_map = io_map(input_names, runner.inputs)
    file_in = {t.name: t for t in runner.inputs}
    arrays = pick_set(ref, input_names, lambda a: all(_fits(a[m].shape, file_in[f].shape) for m, f in in_map.items()))
    return {f: adapt_feed(arrays[m], file_in[f]) for m, f in in_map.items()}


def _fits(shape: tuple[int, ...], declared: tuple[Any, ...]) -> bool:
    return len(shape) == len(declared) and all(
        not isinstance(d, int) or d < 0 or d == s for s, d in zip(shape, declared)
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = sys.stdout
    try:
        result = _child(json.loads(argv[0]))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as data (sys.exit() in a model too)
        result = {"error": f"{type(exc).__name__}: {one_line(exc, 300)}"}
    out.write(MARKER + json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    from mobilize._exit import exit_now

    exit_now(main())
