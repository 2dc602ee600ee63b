"""Child-process entry for :mod:`mobilize.isolate`: ``python -m mobilize._worker < job.json``.

Jobs:
  {"op": "inspect", "format", "path"}                                   → {"inputs", "outputs"}
  {"op": "verify", "format", "path", "precision", "reference", "input_names", "tolerance"?}
                                                                        → {"inputs", "outputs", "parity"}
  either of those with "analyze": true                                  → also {"analysis"} (or "analysis_error")
  either of those with "place": {options}                               → also {"placement"} (or "placement_error")
  {"op": "latency", "items": [{"key", "format", "path"}], "reference", "input_names"}
                                                                        → {"latency": {key: record}}
  {"op": "diff", "format", "path", "samples", "input_names", "values", …}  → see mobilize.diff.worker
Errors that mobilize understands come back as {"error": message, "kind": class name}.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def handle(job: dict[str, Any]) -> dict[str, Any]:
    from mobilize import formats
    from mobilize.errors import MobilizeError

    if job["op"] == "latency":
        from mobilize.verify.timing import measure_in_process

        return {"latency": measure_in_process(job["items"], Path(job["reference"]), job["input_names"])}
    if job["op"] == "diff":
        from mobilize.diff.worker import handle as diff_job

        return diff_job(job)
    plugin = formats.get(job["format"])
    path = Path(job["path"])
    out: dict[str, Any] = {}
    try:
        ins, outs = plugin.load("io_reader")(path)
        out["inputs"] = [t.to_dict() for t in ins]
        out["outputs"] = [t.to_dict() for t in outs]
    except (MobilizeError, ValueError, OSError) as exc:
        if job["op"] == "inspect":
            return {"error": str(exc), "kind": type(exc).__name__}
        out["inputs"] = out["outputs"] = []
    if job["op"] == "verify":
        from mobilize.api import verify_in_process
        from mobilize.verify.parity import Reference
        from mobilize.verify.tolerance import Tolerance

        ref = Reference.load(Path(job["reference"]))
        tol = Tolerance(**job["tolerance"]) if job.get("tolerance") else None
        out["parity"] = verify_in_process(plugin, path, job["precision"], ref, job["input_names"], tol).to_dict()
    if job.get("analyze"):
        from mobilize._quiet import captured_output
        from mobilize.analysis import analyze

        try:
            with captured_output():
                out["analysis"] = analyze(plugin.name, path)
        except (MobilizeError, ValueError, OSError) as exc:
            out["analysis_error"] = str(exc)
    if job.get("place") is not None:
        out.update(place_in_process(plugin.name, path, job["place"]))
    return out


def place_in_process(fmt: str, path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """``{"placement": record}`` or ``{"placement_error": why}``: any failure of a runtime's analysis tool is that
    file's result, never the run's (the tools are native code and third-party Python)."""
    from mobilize._quiet import captured_output
    from mobilize.analysis.placement import place

    try:
        with captured_output():
            return {"placement": place(fmt, path, options)}
    except Exception as exc:  # noqa: BLE001 - see the docstring
        return {"placement_error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}


def main() -> None:
    from mobilize import _quiet

    _quiet.set_verbose(False)  # a child process of its own: its logging settings die with it
    job = json.loads(sys.stdin.read())
    if job.get("memory_mb"):  # the limit is set here, not in a preexec_fn: forking a threaded parent is unsafe
        import resource

        limit = int(job["memory_mb"]) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    fault = os.environ.get("MOBILIZE_WORKER_FAULT")  # test hook: simulate a runtime crash (e.g. "SIGSEGV")
    if fault:
        os.kill(os.getpid(), getattr(signal, fault))
    result = handle(job)
    Path(job["result_path"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
