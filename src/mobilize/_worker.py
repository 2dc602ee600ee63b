"""Child-process entry for :mod:`mobilize.isolate`: ``python -m mobilize._worker < job.json``.

Jobs:
  {"op": "inspect", "format", "path"}                                   → {"inputs", "outputs"}
  {"op": "verify", "format", "path", "precision", "reference", "input_names", "tolerance"?}
                                                                        → {"inputs", "outputs", "parity"}
  either of those with "analyze": true                                  → also {"analysis"} (or "analysis_error")
  either of those with "place": {options}                               → also {"placement"} (or "placement_error")
  {"op": "latency", "items": [{"key", "format", "path"}], "reference", "input_names", "pairs"}
                                                                        → {"latency": {key: record}}
  {"op": "diff", "format", "path", "samples", "input_names", "values", …}  → see mobilize.diff.worker
  {"op": "warm", "formats": [...]}                                      → {"warm": [...]} (imports the runtimes,
                                                                          readers and analysers of those formats)
Errors that mobilize understands come back as {"error": message, "kind": class name}.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mobilize._exit import exit_now


def handle(job: dict[str, Any]) -> dict[str, Any]:
    from mobilize import formats
    from mobilize.errors import MobilizeError

    for fmt in {job.get("format"), *(it.get("format") for it in job.get("items") or []), *(job.get("formats") or [])}:
        light_imports(fmt)

    if job["op"] == "warm":
        return {"warm": warm(job["formats"])}
    if job["op"] == "latency":
        from mobilize.verify.timing import measure_in_process

        return {"latency": measure_in_process(job["items"], Path(job["reference"]), job["input_names"],
                                              pairs=job.get("pairs"))}
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


def light_imports(fmt: str | None) -> None:
    """Import, before a job on ``fmt`` files does, the packages whose ``__init__`` would pull in PyTorch for nothing a
    worker needs: coremltools (its torch, scikit-learn, ExecuTorch and torchao probes: 3.7 s → 0.9 s CPU, measured;
    :func:`mobilize._imports.coremltools`) and onnxruntime.tools (a torch export helper). A worker reads and runs
    files; it never converts, so these frontends are dead weight there. Where torch is already loaded it stays
    visible to coremltools."""
    if fmt == "coreml":
        from mobilize import _imports

        with contextlib.suppress(Exception):  # the job's own import reports the problem
            _imports.coremltools(without_torch=True)
    if fmt in ("onnx", "ort") and "onnxruntime.tools" not in sys.modules:
        import importlib.util

        try:
            spec = importlib.util.find_spec("onnxruntime.tools")
        except (ImportError, ValueError):
            return
        if spec is None or spec.submodule_search_locations is None:
            return
        module = importlib.util.module_from_spec(spec)  # the package without its __init__ (which imports torch)
        module.have_torch = None  # type: ignore[attr-defined]
        sys.modules["onnxruntime.tools"] = module
        sys.modules["onnxruntime"].tools = module  # type: ignore[attr-defined]


#: third-party modules a format's jobs import lazily (runtime, static reader, placement tools): a pooled worker imports
#: them while the parent process is still converting. A format missing here is warmed through its plug-in only.
WARM_IMPORTS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxruntime", "onnxruntime.tools.mobile_helpers.usability_checker",
             "onnxruntime.tools.convert_onnx_models_to_ort", "onnxruntime.tools.onnx_model_utils"),
    "ort": ("onnxruntime", "onnxruntime.tools.convert_onnx_models_to_ort"),
    "coreml": ("coremltools", "coremltools.proto.MIL_pb2", "coremltools.converters.mil.mil.ops.registry"),
    "tflite": ("flatbuffers", "ai_edge_litert.interpreter", "ai_edge_litert._pywrap_analyzer_wrapper"),
}


def warm(fmts: list[str]) -> list[str]:
    """Import what jobs on these formats' files will need (a pooled worker does this while the parent converts)."""
    import importlib

    from mobilize import formats
    from mobilize._quiet import captured_output

    done = []
    with captured_output():
        for module in ("numpy", "mobilize.api", "mobilize.verify.parity", "mobilize.analysis",
                       "mobilize.analysis.placement", "mobilize.verify.timing"):
            importlib.import_module(module)
        for fmt in fmts:
            try:
                light_imports(fmt)
                plugin = formats.get(fmt)
                for piece in ("io_reader", "runner", "fallback_runner", "analyzer", "placement"):
                    if getattr(plugin, piece, None):
                        plugin.load(piece)
                for module in WARM_IMPORTS.get(fmt, ()):
                    importlib.import_module(module)
            except Exception:  # noqa: BLE001 - warming only saves time; the real job reports any problem
                continue
            done.append(fmt)
    return done


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


def _limit_memory(memory_mb: Any) -> None:
    if memory_mb:  # the limit is set here, not in a preexec_fn: forking a threaded parent is unsafe
        import resource

        limit = int(memory_mb) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _fault(job: dict[str, Any]) -> None:
    fault = os.environ.get("MOBILIZE_WORKER_FAULT")  # test hook: simulate a runtime crash (e.g. "SIGSEGV")
    if fault and job.get("op") != "warm":
        os.kill(os.getpid(), getattr(signal, fault))


def main() -> None:
    from mobilize import _quiet

    _quiet.set_verbose(False)  # a child process of its own: its logging settings die with it
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return
    job = json.loads(sys.stdin.read())
    _limit_memory(job.get("memory_mb"))
    _fault(job)
    result = handle(job)
    Path(job["result_path"]).write_text(json.dumps(result))
    exit_now(0)  # its result is on disk: no interpreter teardown


def serve(done_fd: int, memory_mb: int) -> None:
    """A pooled worker (:class:`mobilize.isolate.Pool`): one JSON job per line on stdin, each result written to the
    job's ``result_path``, then one line on ``done_fd``; ends at end of input. Runtimes, readers and coremltools'
    protobufs stay loaded from one file to the next."""
    _limit_memory(memory_mb)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        _fault(job)
        result = handle(job)
        Path(job["result_path"]).write_text(json.dumps(result))
        os.write(done_fd, b"done\n")
    exit_now(0)  # every result is on disk: no interpreter teardown


if __name__ == "__main__":
    main()
