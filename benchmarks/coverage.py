"""Coverage matrix: which architectures convert to which format — with the raw converter calls, and with mobilize.

For every architecture in benchmarks/coverage_archs.py (built from ``transformers`` configs, random weights, small
sizes; nothing is downloaded), in its own child process:

- **raw**: the call a user would write from each converter's docs, with its defaults —
  ``torch.onnx.export(model, args, f)``, ``ct.convert(torch.export.export(model, args).run_decompositions())``,
  ``litert_torch.convert(model, args).export(f)`` — then the file checked against PyTorch with mobilize's own
  verification (the same runtimes, inputs and tolerances; Core ML's default compute precision is fp16, so its raw
  file is judged with the fp16 tolerance);
- **mobilize**: ``mobilize.export(spec, dir, formats="onnx,coreml,tflite", precisions="fp32")`` — conversion,
  repairs (docs/repairs.md) and parity.

It writes benchmarks/coverage.md (architecture × format: raw / mobilize / repaired by which pass / failing op, with
totals) and benchmarks/coverage.json (everything measured)::

    .venv/bin/python benchmarks/coverage.py                      # all architectures, 2 at a time
    .venv/bin/python benchmarks/coverage.py --archs swin,beit --jobs 1 --out /tmp/cov.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # coverage_archs.py and run.py (the raw converter calls) live beside this script
FORMATS = ("onnx", "coreml", "tflite")
RAW_PRECISION = {"onnx": "fp32", "coreml": "fp16", "tflite": "fp32"}  # what each converter writes by default


# --- one architecture (runs in a child process) -------------------------------------------------------------------


def run_one(name: str, formats: tuple[str, ...]) -> dict[str, Any]:
    import coverage_archs

    from mobilize._quiet import captured_output, set_verbose

    set_verbose(False)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"arch": name, "category": coverage_archs.ARCHITECTURES[name][0], "formats": {}}
    from mobilize.source import _run_once

    with captured_output():
        spec = coverage_archs.build(name)
        _run_once(spec, spec.name)  # fills the output names, as mobilize.export does for a ModelSpec
    result["parameters"] = sum(p.numel() for p in spec.module.parameters())
    with tempfile.TemporaryDirectory(prefix=f"mobilize-coverage-{name}-") as tmp:
        work = Path(tmp)
        ref_path = _reference(spec, work)
        for fmt in formats:
            result["formats"][fmt] = {"raw": raw(spec, fmt, work, ref_path)}
        t1 = time.perf_counter()
        mob = mobilize_export(spec, formats, work / "bundle")
        result["mobilize_seconds"] = round(time.perf_counter() - t1, 1)
        for fmt in formats:
            result["formats"][fmt]["mobilize"] = mob.get(fmt) or {"status": "error", "detail": mob.get("error")}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _reference(spec: Any, work: Path) -> Path:
    from mobilize.verify.inputs import make_input_sets
    from mobilize.verify.parity import compute_reference

    path = work / "reference.npz"
    compute_reference(spec, make_input_sets(spec)).save(path)
    return path


def raw(spec: Any, fmt: str, work: Path, ref_path: Path) -> dict[str, Any]:
    """The converter's documented default call on the eager module (benchmarks/run.py's ``convert_raw``), then
    parity of what it wrote."""
    from run import convert_raw  # benchmarks/run.py, the raw-vs-mobilize comparison

    t0 = time.perf_counter()
    try:
        path, _files = convert_raw(spec.module, tuple(spec.example_inputs), fmt, work)
    except Exception as exc:  # noqa: BLE001 - a converter failure is the finding
        return {"status": "fail", "seconds": round(time.perf_counter() - t0, 1), "error": _short(exc),
                "ops": _ops_named(fmt, exc)}
    seconds = round(time.perf_counter() - t0, 1)
    parity = _raw_parity(fmt, path, spec, ref_path)
    return {"status": "ok", "seconds": seconds, "parity": parity["status"], "parity_reason": parity.get("reason")}


def _raw_parity(fmt: str, path: Path, spec: Any, ref_path: Path) -> dict[str, Any]:
    from mobilize import formats as registry
    from mobilize._quiet import captured_output
    from mobilize.verify.parity import Reference, verify_file

    runner = registry.get(fmt).load("runner")
    if fmt == "onnx":  # the raw file keeps its weights in a side file (.onnx.data): load it from its path
        from run import _path_onnx_runner  # benchmarks/run.py, the raw-vs-mobilize comparison

        runner = _path_onnx_runner()
    try:
        with captured_output():
            record = verify_file(runner, path, fmt, RAW_PRECISION[fmt], Reference.load(ref_path),
                                 list(spec.input_names))
    except Exception as exc:  # noqa: BLE001
        return {"status": "error", "reason": _short(exc)}
    return {"status": record.status, "reason": record.reason}


def mobilize_export(spec: Any, formats: tuple[str, ...], out: Path) -> dict[str, Any]:
    from mobilize import api
    from mobilize._quiet import captured_output

    try:
        with captured_output():
            result = api.export(spec, out, formats=list(formats), precisions="fp32", isolate=False)
    except Exception as exc:  # noqa: BLE001 - e.g. capture failed: every format fails
        return {"error": _short(exc)}
    found: dict[str, Any] = {}
    for a in result.artifacts:
        rec: dict[str, Any] = {"repairs": [r["name"] for r in a.get("repairs") or [] if r.get("status") == "applied"],
                               "export_seconds": a.get("export_seconds")}
        if a["status"] != "ok":
            err = a["error"] or {}
            rec.update(status="fail", error=err.get("message", "")[:400], ops=err.get("ops") or [],
                       modules=(err.get("modules") or [])[:4])
        else:
            p = a["parity"] or {}
            rec.update(status=p.get("status", "unchecked"), reason=p.get("reason"),
                       max_abs_error=p.get("max_abs_error"))
        found[a["format"]] = rec
    return found


def _ops_named(fmt: str, exc: BaseException) -> list[str]:
    """The ops a converter's message names (the same parsing mobilize applies to its own failures)."""
    import importlib

    try:
        return importlib.import_module(f"mobilize.export.{fmt}")._unsupported_ops(str(exc))
    except Exception:  # noqa: BLE001
        return []


def _short(exc: BaseException, limit: int = 400) -> str:
    from mobilize.errors import one_line

    text = str(exc)
    if "## Exception summary" in text:  # torch.onnx: the summary names the failing op
        text = text.split("## Exception summary", 1)[1]
    return one_line(f"{type(exc).__name__}: {one_line(text, limit)}", limit)


# --- the matrix ---------------------------------------------------------------------------------------------------


_RESULT = "@@coverage-result@@ "  # marks the worker's answer among anything a converter prints


class _Worker:
    """A child process that converts architectures one at a time (``--serve``): the converters are imported once
    per worker, not once per architecture; a crash or a hang costs one architecture and a fresh worker."""

    def __init__(self, formats: tuple[str, ...]) -> None:
        self.formats = formats
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        import tempfile as _tf

        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--formats", ",".join(self.formats)]
        env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
        # converters' chatter; read back only to explain a crash (lives as long as the worker)
        self._err = _tf.TemporaryFile(mode="w+")  # noqa: SIM115
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True,
                                env=env, bufsize=1)

    def run(self, name: str, timeout: float) -> dict[str, Any]:
        import queue
        import threading

        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        t0 = time.perf_counter()
        proc.stdin.write(name + "\n")
        proc.stdin.flush()
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(_RESULT):
                    lines.put(line[len(_RESULT):])
                    return
            lines.put("")

        threading.Thread(target=read, daemon=True).start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            self.proc = None
            return {"arch": name, "crash": f"timed out after {timeout:.0f} s", "seconds": timeout}
        if not line:
            self._err.seek(0)
            tail = [ln for ln in self._err.read().splitlines() if ln.strip()][-3:]
            self.proc = None
            return {"arch": name, "crash": f"worker died (exit {proc.wait()}): {' | '.join(tail)[-400:]}",
                    "seconds": round(time.perf_counter() - t0, 1)}
        out = json.loads(line)
        out["wall_seconds"] = round(time.perf_counter() - t0, 1)
        return out

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run_all(archs: list[str], formats: tuple[str, ...], jobs: int, timeout: float) -> list[dict[str, Any]]:
    """Every architecture, ``jobs`` at a time, each in a long-lived worker process; results in ``archs`` order."""
    import queue
    import threading

    todo: queue.Queue[str] = queue.Queue()
    for a in archs:
        todo.put(a)
    results: dict[str, dict[str, Any]] = {}

    def drive() -> None:
        worker = _Worker(formats)
        try:
            while True:
                try:
                    name = todo.get_nowait()
                except queue.Empty:
                    return
                results[name] = worker.run(name, timeout)
                print(f"  {name}: {results[name].get('wall_seconds', results[name].get('seconds'))} s"
                      + (f" — {results[name]['crash']}" if "crash" in results[name] else ""), file=sys.stderr,
                      flush=True)
        finally:
            worker.close()

    threads = [threading.Thread(target=drive) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [results[a] for a in archs]


def serve(formats: tuple[str, ...]) -> int:
    """Worker loop: one architecture name per stdin line → one JSON line on stdout."""
    for line in sys.stdin:
        name = line.strip()
        if name:
            print(_RESULT + json.dumps(run_one(name, formats)), flush=True)
    return 0


def cell_raw(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        ops = ", ".join(dict.fromkeys(_short_op(o) for o in r.get("ops") or []))
        return f"✗ {ops or _first_words(r.get('error', ''))}"
    return {"pass": "✓", "unverified": "✓ (unverified)", "fail": "✓ converts, parity ✗"}.get(
        r.get("parity"), f"✓ ({r.get('parity')})")


def cell_mobilize(m: dict[str, Any]) -> str:
    status = m.get("status")
    rep = f" repaired: {', '.join(m['repairs'])}" if m.get("repairs") else ""
    if status == "pass":
        return f"✓{rep}"
    if status == "fail" and "error" in m:
        where = (m.get("modules") or [""])[0]
        ops = ", ".join(dict.fromkeys(_short_op(o) for o in m.get("ops") or [])) or _first_words(m.get("error", ""))
        return f"✗ {ops}{f' ({where})' if where else ''}{rep}"
    if status == "unverified":
        return f"? unverified: {_first_words(m.get('reason') or '', 12)}{rep}"
    return f"✗ parity {status}: {_first_words(m.get('reason') or '', 12)}{rep}"


def _short_op(op: str) -> str:
    return op.replace("torch.ops.", "").replace("aten.", "").replace(".default", "").replace("aten::", "")


def _first_words(text: str, n: int = 10) -> str:
    words = text.replace("|", "/").split()
    return " ".join(words[:n]) + (" …" if len(words) > n else "")


def totals(results: list[dict[str, Any]], formats: tuple[str, ...]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for fmt in formats:
        t = {"architectures": 0, "raw_converts": 0, "raw_pass": 0, "mobilize_pass": 0, "mobilize_unverified": 0,
             "repaired": 0, "mobilize_worse": 0, "mobilize_better": 0}
        for res in results:
            cell = (res.get("formats") or {}).get(fmt)
            if cell is None:
                continue
            r, m = cell["raw"], cell["mobilize"]
            t["architectures"] += 1
            t["raw_converts"] += r["status"] == "ok"
            raw_ok = r["status"] == "ok" and r.get("parity") == "pass"
            t["raw_pass"] += raw_ok
            mob_ok = m.get("status") == "pass"
            t["mobilize_pass"] += mob_ok
            t["mobilize_unverified"] += m.get("status") == "unverified"
            t["repaired"] += bool(m.get("repairs")) and mob_ok
            t["mobilize_worse"] += raw_ok and not mob_ok
            t["mobilize_better"] += mob_ok and not raw_ok
        out[fmt] = t
    return out


def write_md(results: list[dict[str, Any]], formats: tuple[str, ...], path: Path, meta: dict[str, Any]) -> None:
    tot = totals(results, formats)
    lines = ["# Coverage: architectures × formats, raw converters vs mobilize", "",
             f"Machine: {meta['machine']}; {meta['versions']}.",
             f"Run: {meta['started']}, {meta['archs']} architectures, {meta['jobs']} at a time, "
             f"**{meta['wall_seconds'] / 60:.1f} min** wall time, {meta['cpu_seconds'] / 60:.1f} min of CPU "
             f"(≈ {meta['cpu_seconds'] / 60 / max(1, meta['jobs']):.1f} min on {meta['jobs']} idle cores). "
             f"Reproduce: `{meta['command']}`", "",
             "Every architecture is built from a `transformers` config with random weights and small sizes "
             "(benchmarks/coverage_archs.py; nothing downloaded). **raw**: the converter's documented default call "
             "on the eager model, then mobilize's parity check of the file it wrote (Core ML's default is an fp16 "
             "program, judged with the fp16 tolerance). **mobilize**: `mobilize.export(..., precisions=\"fp32\")` — "
             "conversion, repairs on failure (docs/repairs.md) and parity. ✓ = converted and matches PyTorch; "
             "✗ = failed, with the op the converter named (and, for mobilize, the module of the failing node); "
             "? = converted but could not be checked here.", "",
             "## Totals", "",
             "| format | architectures | raw converts | raw passes parity | mobilize passes parity | "
             "passed thanks to a repair | mobilize better than raw | mobilize worse than raw |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for fmt in formats:
        t = tot[fmt]
        lines.append(f"| {fmt} | {t['architectures']} | {t['raw_converts']} | {t['raw_pass']} | "
                     f"{t['mobilize_pass']} | {t['repaired']} | {t['mobilize_better']} | {t['mobilize_worse']} |")
    all_pass = sum(all((r.get("formats") or {}).get(f, {}).get("mobilize", {}).get("status") == "pass"
                       for f in formats) for r in results)
    raw_all = sum(all((r.get("formats") or {}).get(f, {}).get("raw", {}).get("parity") == "pass"
                      for f in formats) for r in results)
    lines += ["", f"Architectures passing parity in every format: raw **{raw_all}** / {len(results)}, "
                  f"mobilize **{all_pass}** / {len(results)}.", "",
              "## Matrix", "",
              "| architecture | kind | params | " + " | ".join(f"{f} raw | {f} mobilize" for f in formats)
              + " | seconds |",
              "|---|---|---:|" + "---|---|" * len(formats) + "---:|"]
    for res in results:
        if "crash" in res:
            lines.append(f"| {res['arch']} | | | " + " | ".join(["—", f"crash: {res['crash'][:80]}"] * len(formats))
                         + f" | {res.get('seconds', '')} |")
            continue
        cells = []
        for fmt in formats:
            c = res["formats"][fmt]
            cells += [cell_raw(c["raw"]), cell_mobilize(c["mobilize"])]
        lines.append(f"| {res['arch']} | {res['category']} | {res['parameters']:,} | " + " | ".join(cells)
                     + f" | {res.get('wall_seconds', res.get('seconds'))} |")
    repaired = [(res["arch"], fmt, res["formats"][fmt]["mobilize"]) for res in results if "formats" in res
                for fmt in formats if res["formats"][fmt]["mobilize"].get("repairs")]
    if repaired:
        lines += ["", "## What the repairs did", ""]
        for arch, fmt, m in repaired:
            lines.append(f"- **{arch} {fmt}**: {', '.join(m['repairs'])} → {m.get('status')}"
                         + (f" (max abs err {m['max_abs_error']:.2e})" if m.get("max_abs_error") is not None else ""))
    failing = [(res["arch"], fmt, res["formats"][fmt]["mobilize"]) for res in results if "formats" in res
               for fmt in formats if res["formats"][fmt]["mobilize"].get("status") != "pass"]
    if failing:
        lines += ["", "## Not passing with mobilize", ""]
        for arch, fmt, m in failing:
            detail = m.get("error") or m.get("reason") or m.get("detail") or ""
            lines.append(f"- **{arch} {fmt}** ({m.get('status')}): {' '.join(str(detail).split())[:300]}"
                         + (f" — where: {'; '.join(m.get('modules') or [])}" if m.get("modules") else ""))
    path.write_text("\n".join(lines) + "\n")


def _children_cpu() -> float:
    """CPU seconds (user + system) of every finished worker: what the run costs on idle cores, whatever the load."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(ru.ru_utime + ru.ru_stime, 1)


def _meta(archs: list[str], jobs: int, started: str, wall: float, argv: list[str]) -> dict[str, Any]:
    from importlib.metadata import version

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except Exception:  # noqa: BLE001
            return "?"

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpu = platform.processor() or platform.machine()
    return {"machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
                       f"{platform.python_version()}, load average at the end {[round(x, 2) for x in load or []]}",
            "versions": ", ".join(f"{p} {v(p)}" for p in ("torch", "transformers", "coremltools", "litert-torch",
                                                           "onnxruntime", "ai-edge-litert")),
            "started": started, "archs": len(archs), "jobs": jobs, "wall_seconds": wall,
            "command": "PYTHONHASHSEED=0 .venv/bin/python benchmarks/coverage.py " + " ".join(argv)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="", help="comma-separated names, or 'all' (default: coverage_archs.DEFAULT)")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--jobs", type=int, default=2, help="architectures converted at the same time")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per architecture")
    ap.add_argument("--out", type=Path, default=HERE / "coverage.md")
    ap.add_argument("--json", type=Path, default=None, help="default: --out with .json")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    formats = tuple(f for f in args.formats.split(",") if f)
    if args.one:
        print(json.dumps(run_one(args.one, formats)), flush=True)
        return 0
    if args.serve:
        return serve(formats)
    import coverage_archs

    archs = [a for a in args.archs.split(",") if a] or list(coverage_archs.DEFAULT)
    if archs == ["all"]:
        archs = list(coverage_archs.ARCHITECTURES)
    unknown = set(archs) - set(coverage_archs.ARCHITECTURES)
    if unknown:
        ap.error(f"unknown architectures {sorted(unknown)}; choose from {', '.join(coverage_archs.ARCHITECTURES)}")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.perf_counter()
    results = run_all(archs, formats, args.jobs, args.timeout)
    wall = time.perf_counter() - t0
    meta = _meta(archs, args.jobs, started, wall, [a for a in (argv if argv is not None else sys.argv[1:])])
    meta["cpu_seconds"] = _children_cpu()
    write_md(results, formats, args.out, meta)
    json_path = args.json or args.out.with_suffix(".json")
    json_path.write_text(json.dumps({"meta": meta, "totals": totals(results, formats), "results": results},
                                    indent=1) + "\n")
    print(f"wrote {args.out} and {json_path} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
