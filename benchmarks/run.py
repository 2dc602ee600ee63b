"""mobilize vs each converter's raw default path, on the built-in zoo, measured in one run.

For every zoo model:

- **mobilize**: ``mobilize.export(spec, dir, formats=F, verify=False)`` per format (ONNX and TFLite at fp32; Core ML
  at fp16, because ``ct.convert``'s default compute precision for an ML Program is float16);
- **raw**: the call a user would write from each converter's docs, with its defaults —
  ``torch.onnx.export(model, args, f)`` (torch 2.13: dynamo=True, external_data=True, optimize=True),
  ``ct.convert(torch.export.export(model, args).run_decompositions())`` then ``.save()``,
  ``litert_torch.convert(model, args).export(f)``;

then, in one process and one interleaved timing run (mobilize.bench.latency, the same loop as ``mobilize bench``),
latency of the ONNX (onnxruntime) and TFLite (ai-edge-litert) files, sizes on disk and zipped, and export wall time.
Core ML cannot run on Linux: its rows compare size and export time only.

    .venv/bin/python benchmarks/run.py                     # writes benchmarks/results.md and results.json
    .venv/bin/python benchmarks/run.py --models digits --threads 1,2 --min-seconds 2

Numbers are CPU latency on the machine described in the results, not device latency.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VARIANTS: list[tuple[str, str, str, Any]] = []
ZOO = ("digits", "mobilenet_v2", "text_encoder", "gru_classifier")


def _variants() -> list[tuple[str, str, str, Any]]:
    """(row label, format, precision, mobilize ExportOptions): mobilize's defaults, plus ONNX at opset 20 — the
    opset torch.onnx picks by default — to show what the opset alone changes."""
    from mobilize.export import ExportOptions

    return [
        ("onnx", "onnx", "fp32", None),
        ("onnx (opset 20)", "onnx", "fp32", ExportOptions(onnx_opset=20)),
        ("tflite", "tflite", "fp32", None),
        ("coreml", "coreml", "fp16", None),
    ]


# --- exports ------------------------------------------------------------------------------------------------------


def export_mobilize(spec: Any, fmt: str, precision: str, work: Path, options: Any = None) -> dict[str, Any]:
    from mobilize import api  # not mobilize.export: importing the mobilize.export package shadows that name
    from mobilize._quiet import captured_output

    out = work / f"mobilize-{fmt}"
    t0 = time.perf_counter()
    try:
        with captured_output():
            result = api.export(spec, out, formats=fmt, precisions=precision, verify=False, options=options)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed row
        return {"ok": False, "error": _short(exc), "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    art = result.artifacts[0]
    if art["status"] != "ok":
        return {"ok": False, "error": art["error"]["message"][:300], "seconds": seconds}
    return {"ok": True, "path": out / art["path"], "files": [out / art["path"]], "seconds": seconds}


def convert_raw(module: Any, args: tuple[Any, ...], fmt: str, work: Path) -> tuple[Path, list[Path]]:
    """Each converter's documented default call on the eager module, with nothing added: (the file, every file it
    wrote). Raises what the converter raises."""
    from mobilize._quiet import captured_output, quiet_imports

    with captured_output():
        if fmt == "onnx":
            import torch

            path = work / "raw.onnx"
            torch.onnx.export(module, args, str(path))
            return path, [p for p in (path, Path(str(path) + ".data")) if p.exists()]
        if fmt == "coreml":
            import coremltools as ct
            import torch

            path = work / "raw.mlpackage"
            ct.convert(torch.export.export(module, args).run_decompositions()).save(str(path))
            return path, [path]
        if fmt == "tflite":
            import litert_torch

            quiet_imports()
            path = work / "raw.tflite"
            litert_torch.convert(module, args).export(str(path))
            return path, [path]
    raise ValueError(fmt)


def export_raw(spec: Any, fmt: str, work: Path) -> dict[str, Any]:
    """:func:`convert_raw`, timed; a failure is a row, not an exception."""
    t0 = time.perf_counter()
    try:
        path, files = convert_raw(spec.module, tuple(spec.example_inputs), fmt, work)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed row
        return {"ok": False, "error": _short(exc), "seconds": time.perf_counter() - t0}
    return {"ok": True, "path": path, "files": files, "seconds": time.perf_counter() - t0}


# --- facts about a file -------------------------------------------------------------------------------------------


def files_bytes(files: list[Path]) -> int:
    from mobilize.bundle.hashing import size

    return sum(size(f) for f in files)


def files_zipped(files: list[Path]) -> int:
    """zip -9 of all the files an app must ship (the .onnx plus its .onnx.data side file, if any)."""
    from mobilize.bench.size import zipped_size

    return zipped_size(*files)


def graph_facts(fmt: str, path: Path) -> dict[str, Any]:
    """Op counts and I/O layout: what explains a size or speed difference."""
    try:
        if fmt == "onnx":
            import onnx

            m = onnx.load(str(path), load_external_data=False)
            ops: dict[str, int] = {}
            for n in m.graph.node:
                ops[n.op_type] = ops.get(n.op_type, 0) + 1
            return {
                "nodes": len(m.graph.node),
                "ops": ops,
                "opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
                "inputs": [[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in m.graph.input],
                "external_data": Path(str(path) + ".data").exists(),
            }
        if fmt == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            it = Interpreter(model_path=str(path))
            ops = {}
            for d in it._get_ops_details():
                ops[d["op_name"]] = ops.get(d["op_name"], 0) + 1
            return {
                "nodes": sum(ops.values()),
                "ops": ops,
                "inputs": [list(map(int, d["shape"])) for d in it.get_input_details()],
            }
    except Exception as exc:  # noqa: BLE001 - facts are optional
        return {"error": _short(exc)}
    return {}


# --- latency ------------------------------------------------------------------------------------------------------


def _path_onnx_runner() -> Any:
    """OnnxRunner that loads from the path (raw torch.onnx files keep weights in a side .onnx.data file, which an
    in-memory load cannot find). Used for both files so both load the same way."""
    from mobilize.runtime.onnx import OnnxRunner, _io

    class PathOnnxRunner(OnnxRunner):
        def _load(self) -> None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(self.path), sess_options=self.session_options(),
                                                 providers=["CPUExecutionProvider"])
            self._inputs = [_io(x) for x in self._session.get_inputs()]
            self._outputs = [_io(x) for x in self._session.get_outputs()]

    return PathOnnxRunner


def feeds_by_position(spec: Any) -> Any:
    """Feeds for a loaded runner: the spec's example inputs in order, cast to the file's dtypes."""
    from mobilize.verify.parity import adapt_feed

    arrays = [t.detach().cpu().numpy() for t in spec.example_inputs]

    def make(runner: Any) -> dict[str, Any]:
        return {t.name: adapt_feed(a, t) for t, a in zip(runner.inputs, arrays)}

    return make


# --- the run ------------------------------------------------------------------------------------------------------


def run(models: list[str], threads: list[int], settings: Any, keep: Path | None) -> dict[str, Any]:
    from mobilize._quiet import captured_output, set_verbose
    from mobilize.bench import latency, machine
    from mobilize.runtime.tflite import TFLiteRunner
    from mobilize.source import load_source

    set_verbose(False)
    work_root = Path(tempfile.mkdtemp(prefix="mobilize-bench-")) if keep is None else keep
    rows: list[dict[str, Any]] = []
    targets: list[Any] = []
    onnx_runner = _path_onnx_runner()
    global VARIANTS
    VARIANTS = _variants()
    try:
        # untimed warm-up of both paths (imports, lazy inits), so neither side's export time pays them
        print("warming up both export paths (untimed)", file=sys.stderr, flush=True)
        with captured_output():
            warm = load_source("zoo:digits")
        for fmt, prec in (("onnx", "fp32"), ("tflite", "fp32"), ("coreml", "fp16")):
            (work_root / "_warm" / fmt).mkdir(parents=True, exist_ok=True)
            export_mobilize(warm, fmt, prec, work_root / "_warm" / fmt)
            export_raw(warm, fmt, work_root / "_warm" / fmt)
        for name in models:
            print(f"[{name}] exporting", file=sys.stderr, flush=True)
            with captured_output():
                spec = load_source(f"zoo:{name}")
            for label, fmt, prec, options in VARIANTS:
                work = work_root / name / label.replace(" ", "_").replace("(", "").replace(")", "")
                work.mkdir(parents=True, exist_ok=True)
                mob = export_mobilize(spec, fmt, prec, work, options)
                raw = export_raw(spec, fmt, work)
                row: dict[str, Any] = {"model": name, "format": label, "precision": prec}
                for side, res in (("mobilize", mob), ("raw", raw)):
                    d: dict[str, Any] = {
                        "ok": res["ok"],
                        "export_s": round(res["seconds"], 3),
                        "error": res.get("error"),
                    }
                    if res["ok"]:
                        d.update(
                            bytes=files_bytes(res["files"]),
                            zipped_bytes=files_zipped(res["files"]),
                            files=[f.name for f in res["files"]],
                            facts=graph_facts(fmt, res["path"]),
                        )
                        if fmt in ("onnx", "tflite"):
                            cls = onnx_runner if fmt == "onnx" else TFLiteRunner
                            for t in threads:
                                key = f"{name} {label} {side} ×{t}"
                                targets.append(latency.RunnerTarget(key, cls, res["path"], t, feeds_by_position(spec)))
                                d.setdefault("keys", {})[str(t)] = key
                    row[side] = d
                rows.append(row)
        print(f"timing {len(targets)} configurations (interleaved)", file=sys.stderr, flush=True)
        measured = latency.measure(
            targets, settings, lambda m: print(f"  {m}", file=sys.stderr, flush=True) if "round 1 " in m else None
        )
    finally:
        if keep is None:
            shutil.rmtree(work_root, ignore_errors=True)
    for row in rows:
        for side in ("mobilize", "raw"):
            d = row[side]
            lat = {}
            for t, key in (d.pop("keys", None) or {}).items():
                m = measured[key]
                lat[t] = (
                    {"error": m.error}
                    if m.error
                    else {
                        k: round(v, 5) for k, v in (m.stats or {}).items() if k in ("p50", "p90", "p99", "mean", "cv")
                    }
                )
            d["latency_ms"] = lat or None
        _ratios(row, threads)
        row["why"] = explain(row)
    return {
        "machine": machine.describe(),
        "settings": {**settings.to_dict(), "threads": threads},
        "command": "PYTHONHASHSEED=0 .venv/bin/python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }


def _ratios(row: dict[str, Any], threads: list[int]) -> None:
    m, r = row["mobilize"], row["raw"]
    row["size_ratio"] = round(m["bytes"] / r["bytes"], 4) if m.get("bytes") and r.get("bytes") else None
    row["zipped_ratio"] = (
        round(m["zipped_bytes"] / r["zipped_bytes"], 4) if m.get("zipped_bytes") and r.get("zipped_bytes") else None
    )
    row["export_time_ratio"] = round(m["export_s"] / r["export_s"], 3) if m["ok"] and r["ok"] else None
    row["latency_ratio"] = {}
    for t in threads:
        a = ((m.get("latency_ms") or {}).get(str(t)) or {}).get("p50")
        b = ((r.get("latency_ms") or {}).get(str(t)) or {}).get("p50")
        row["latency_ratio"][str(t)] = round(a / b, 4) if a and b else None


def explain(row: dict[str, Any]) -> list[str]:
    """Why mobilize's file differs from the raw one, from facts measured on both files (not guesses)."""
    m, r = row["mobilize"], row["raw"]
    why: list[str] = []
    if not r["ok"]:
        why.append(f"raw default path failed: {r['error']}")
    if not m["ok"]:
        why.append(f"mobilize failed: {m['error']}")
    if not (m["ok"] and r["ok"]):
        return why
    mf, rf = m.get("facts") or {}, r.get("facts") or {}
    if rf.get("external_data"):
        why.append(
            "raw torch.onnx.export writes the weights to a side file (.onnx.data) by default; both files are "
            "counted. mobilize embeds them (one file for the app bundle)"
        )
    if row["format"] == "coreml":
        why.append("Core ML cannot run on Linux: size and export time only")
    if mf.get("opset") and rf.get("opset") and mf["opset"] != rf["opset"]:
        why.append(
            f"ONNX opset {mf['opset']} (mobilize's default --onnx-opset) vs {rf['opset']} (torch.onnx's "
            "default)"
            + (
                "; opset 18 has no Gelu op (added in opset 20), so GELU is written as its erf formula "
                "(Div, Erf, Add, Mul, Mul) — more nodes and bytes, and onnxruntime has to fuse it back"
                if rf["ops"].get("Gelu") and not mf["ops"].get("Gelu")
                else ""
            )
        )
    if mf.get("nodes") and rf.get("nodes") and mf["nodes"] != rf["nodes"]:
        extra = {k: mf["ops"].get(k, 0) - rf["ops"].get(k, 0) for k in set(mf["ops"]) | set(rf["ops"])}
        extra = {k: v for k, v in extra.items() if v}
        why.append(f"graph: {mf['nodes']} ops (mobilize) vs {rf['nodes']} (raw); differences {extra}")
    size_ratio = row.get("size_ratio") or 1.0
    if size_ratio > 1.01:
        why.append(f"mobilize's file is {100 * (size_ratio - 1):.1f}% larger on disk")
    for t, ratio in (row.get("latency_ratio") or {}).items():
        if ratio and ratio > 1.05:
            cvs = [((row[s].get("latency_ms") or {}).get(t) or {}).get("cv") or 0 for s in ("mobilize", "raw")]
            noise = " (CV above 5%: within noise)" if max(cvs) > 0.05 and ratio < 1 + 2 * max(cvs) else ""
            why.append(f"mobilize's file is {100 * (ratio - 1):.1f}% slower at {t} thread(s){noise}")
    if row["export_time_ratio"] and row["export_time_ratio"] > 1.2:
        extra = {
            "onnx": "the onnx checker's full check and an onnxruntime session to read the file's I/O",
            "tflite": "a second torch.export inside litert-torch (it re-exports the captured program.module()) "
            "and an interpreter load to read the file's I/O",
            "coreml": "reading the package's I/O spec",
        }.get(row["format"].split()[0], "reading the file's I/O")
        why.append(
            f"export time {row['export_time_ratio']:.2f}× the raw call: mobilize also runs the model once, "
            f"captures with torch.export (strategy chain), computes the PyTorch reference on three input "
            f"sets, {extra}, and writes the bundle atomically (manifest, reference.npz, fsync)"
        )
    return why


# --- output -------------------------------------------------------------------------------------------------------


def _fmt_kb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e3:,.1f} KB"


def _ms(d: dict[str, Any] | None, t: str) -> str:
    v = (d or {}).get(t) or {}
    if "error" in v:
        return "error"
    return "—" if v.get("p50") is None else f"{v['p50']:.3f}"


def markdown(data: dict[str, Any]) -> str:
    from mobilize.bench.report import fmt_num

    mach = data["machine"]
    threads = [str(t) for t in data["settings"]["threads"]]
    lines = [
        "# mobilize vs raw converter defaults",
        "",
        f"Machine: {mach['cpu']} ({mach['cores_usable']} usable cores, {', '.join(mach['cpu_flags'])}), "
        f"{mach['os']}, Python {mach['python']}, load average at the start {mach.get('load_avg')} "
        f"(the machine was shared with other jobs); "
        + ", ".join(f"{k} {v}" for k, v in mach["versions"].items() if v)
        + ".",
        f"Run: {data['created']}. Reproduce: `{data['command']}`",
        "",
        "CPU latency (p50, ms) via onnxruntime / ai-edge-litert (XNNPACK) in one interleaved timing run "
        f"(≥{data['settings']['min_runs']} runs and ≥{data['settings']['min_seconds']:g} s per file and thread "
        "count, warm-up untimed). Ratios are mobilize ÷ raw: below 1 means mobilize's file is faster / smaller. "
        "Sizes count every file an app must ship; zipped = zip -9. Export time: wall time of the whole call "
        "(mobilize: capture + convert + checks + bundle write, verification off).",
        "",
    ]
    lines += headline(data) + [""]
    head = ["model", "format", "prec"]
    for t in threads:
        head += [f"p50 ×{t} mobilize", f"p50 ×{t} raw", f"latency ratio ×{t}"]
    head += ["size mobilize", "size raw", "size ratio", "zipped ratio", "export s mobilize", "export s raw"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for row in data["rows"]:
        m, r = row["mobilize"], row["raw"]
        cells = [row["model"], row["format"], row["precision"]]
        for t in threads:
            cells += [
                _ms(m.get("latency_ms"), t),
                _ms(r.get("latency_ms"), t),
                fmt_num(row["latency_ratio"].get(t), ".2f", "×"),
            ]
        cells += [
            _fmt_kb(m.get("bytes")) if m["ok"] else "failed",
            _fmt_kb(r.get("bytes")) if r["ok"] else "failed",
            fmt_num(row["size_ratio"], ".3f", "×"),
            fmt_num(row["zipped_ratio"], ".3f", "×"),
            f"{m['export_s']:.1f}",
            f"{r['export_s']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Why the files differ", ""]
    for row in data["rows"]:
        if row["why"]:
            lines.append(f"- **{row['model']} {row['format']}**: " + "; ".join(row["why"]) + ".")
    lines.append("")
    return "\n".join(lines)


def headline(data: dict[str, Any]) -> list[str]:
    """Geometric means of the ratios per format (mobilize ÷ raw), over the models where both paths worked."""
    import math

    out = ["**Headline** (geometric mean over the zoo, mobilize ÷ raw):", ""]
    labels = list(dict.fromkeys(r["format"] for r in data["rows"]))
    for label in labels:
        rows = [r for r in data["rows"] if r["format"] == label]
        parts = []
        for name, values in (
            ("latency ×" + t, [r["latency_ratio"].get(t) for r in rows]) for t in map(str, data["settings"]["threads"])
        ):
            values = [v for v in values if v]
            if values:
                parts.append(f"{name} {math.exp(sum(map(math.log, values)) / len(values)):.3f}")
        for name, key in (("size", "size_ratio"), ("zipped", "zipped_ratio"), ("export time", "export_time_ratio")):
            values = [r[key] for r in rows if r.get(key)]
            if values:
                parts.append(f"{name} {math.exp(sum(map(math.log, values)) / len(values)):.3f}")
        failed = [r["model"] for r in rows if not (r["mobilize"]["ok"] and r["raw"]["ok"])]
        out.append(f"- {label}: " + ", ".join(parts) + (f"; failed: {', '.join(failed)}" if failed else ""))
    return out


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]}"


def with_overhead(text: str) -> str:
    """results.md starts with the export-overhead ratios (benchmarks/overhead.md, written by hand from
    benchmarks/overhead.py's runs), so re-rendering the size/latency tables keeps them."""
    extra = HERE / "overhead.md"
    return (extra.read_text().rstrip() + "\n\n" + text) if extra.is_file() else text


def main() -> int:
    from mobilize.bench.latency import Settings
    from mobilize.bench.run import parse_threads

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(ZOO), help="comma-separated zoo models")
    ap.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    ap.add_argument("--min-runs", type=int, default=50)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.md / results.json")
    ap.add_argument("--keep", type=Path, default=None, help="keep the exported files in this folder")
    ap.add_argument("--render", type=Path, default=None, help="only re-render results.md from this results.json")
    args = ap.parse_args()
    if args.render is not None:
        data = json.loads(args.render.read_text())
        for row in data["rows"]:
            row["why"] = explain(row)
        (args.out / "results.md").write_text(with_overhead(markdown(data)))
        return 0
    models = [m for m in args.models.split(",") if m]
    settings = Settings(min_runs=args.min_runs, min_seconds=args.min_seconds)
    data = run(models, parse_threads(args.threads), settings, args.keep)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(with_overhead(markdown(data)))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
