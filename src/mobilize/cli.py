"""The ``mobilize`` command. Exit codes: 0 all good, 1 a conversion or parity failure, 2 could not run (bad input)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from mobilize import __version__
from mobilize._clitypes import PathArg

_STATE: dict[str, Any] = {"verbose": 0, "quiet": False}
#: options of the ``mobilize`` group that may stand anywhere on the command line (``mobilize zoo -v``)
_GLOBAL_FLAGS = ("-v", "-vv", "-vvv", "--verbose", "-q", "--quiet")


def _console(stderr: bool = False) -> Any:
    """A rich console on a duplicate of the original stdout/stderr, so it survives fd redirection of converters."""
    from rich.console import Console

    stderr = stderr or bool(_STATE.get("json_stdout"))  # `--json -`: stdout carries the JSON document only
    key = "err" if stderr else "out"
    if key not in _STATE:
        fd = os.dup(2 if stderr else 1)
        stream = open(fd, "w", buffering=1, closefd=True)  # noqa: SIM115 - lives as long as the process
        width = None if stream.isatty() else 160
        # stderr carries one-line errors: never wrap them (soft_wrap); stdout tables get a fixed width when piped
        _STATE[key] = Console(file=stream, stderr=stderr, highlight=False, soft_wrap=stderr, width=width)
    return _STATE[key]


def _fail(exc: BaseException) -> None:
    """One line, no traceback (unless -v), and the exit code for the kind of error."""
    from mobilize.errors import MobilizeError, MobilizeInputError

    if _STATE["verbose"]:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, MobilizeInputError):
        _console(True).print(f"[bold red]error:[/] {_escape(str(exc))}")
        raise SystemExit(2)
    if isinstance(exc, MobilizeError):
        _console(True).print(f"[bold red]error:[/] {_escape(str(exc))}")
        raise SystemExit(1)
    if isinstance(exc, ValueError) and "null byte" in str(exc):  # a path argument holding \0 (os.stat refuses it)
        _console(True).print("[bold red]error:[/] a path argument contains a NUL byte (\\0); paths cannot hold one")
        raise SystemExit(2)
    if isinstance(exc, OSError):  # a full disk, a vanished folder, a permission: the system's words, one line
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        _console(True).print(f"[bold red]error:[/] {_escape(exc.strerror or str(exc))}{_escape(where)}; "
                             "nothing was replaced (the previous bundle, if any, is untouched)")
        raise SystemExit(2)
    _console(True).print(f"[bold red]internal error:[/] {type(exc).__name__}: {_escape(' '.join(str(exc).split()))}"
                         " (run with -v for the traceback)")
    raise SystemExit(2)


def json_target(json_out: Path | str | None) -> None:
    """Every ``--json`` takes a path or ``-`` (standard output; the human-readable output then goes to stderr)."""
    _STATE["json_stdout"] = json_out is not None and str(json_out) == "-"


VERIFY_SCHEMA = "mobilize-verify/1"
JSON_HELP = "Write the results as JSON to FILE, or to standard output with `-` (the tables then go to stderr)."


def _escape(text: str) -> str:
    """Text from files (paths, converter messages, a bundle's manifest) made safe to print: rich markup escaped, and
    terminal control characters (ESC sequences, bidi overrides) shown as ``\\x1b`` instead of being obeyed."""
    from rich.markup import escape

    from mobilize.safeio import printable

    return escape(printable(text))


class _Group(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """-v / -vv / --quiet are accepted anywhere before ``--``: moved in front of the subcommand."""
        end = args.index("--") if "--" in args else len(args)
        flags = [a for a in args[:end] if a in _GLOBAL_FLAGS]
        rest = [a for a in args[:end] if a not in _GLOBAL_FLAGS] + args[end:]
        return super().parse_args(ctx, flags + rest)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C (130) or SIGTERM (143): staging folders are already gone
            from mobilize.errors import interrupt_exit_code

            _console(True).print("[yellow]interrupted[/]; the previous bundle (if any) is untouched")
            raise SystemExit(interrupt_exit_code(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the single place where errors become exit codes
            _fail(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True,
              help="-v: converter logs and tracebacks; -vv: also their debug logging. Accepted anywhere.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output (results and errors only). Accepted anywhere.")
@click.version_option(__version__, prog_name="mobilize")
def main(verbose: int, quiet: bool) -> None:
    """Turn a PyTorch model into verified ONNX, Core ML and TFLite files in an app-ready bundle."""
    from mobilize import _quiet
    from mobilize.guard import start_cli

    if verbose and quiet:
        raise click.UsageError("-v and --quiet contradict each other: pass one")
    _STATE["verbose"] = verbose
    _STATE["quiet"] = quiet
    _quiet.set_verbose(verbose > 0)
    if verbose > 1:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    start_cli()  # SIGTERM unwinds like Ctrl-C; MOBILIZE_* settings are checked before any work


_FORMATS_HELP = ("Comma-separated formats: onnx, coreml, tflite, ort (ORT format + required_operators.config for a "
                 "reduced onnxruntime build), pte (ExecuTorch; not in the default set).")


def _fitness_options(fn: Any) -> Any:
    """--fitness, --allow-unfit, --allow-below-target (export and verify)."""
    fn = click.option("--allow-below-target", is_flag=True,
                      help="Exit 0 even when a quantized file misses its accuracy target (it is still reported "
                      "below_target).")(fn)
    fn = click.option("--allow-unfit", is_flag=True,
                      help="Exit 0 even when a file is not fit to ship (too big, too many ops, too slow); the "
                      "findings are still reported.")(fn)
    return click.option("--fitness", default=None, metavar="KEY=VALUE,...",
                        help="Fitness thresholds, e.g. max_floor_ratio=1.5,max_latency_vs_sibling=off "
                        "(keys: max_floor_ratio, floor_slack_kb, slack_per_op_kb, max_sibling_ratio, max_op_ratio, "
                        "op_slack, max_latency_vs_sibling, max_latency_vs_fp32, min_latency_gap_ms; see "
                        "docs/fitness.md).")(fn)
_PREC_HELP = ("Comma-separated precisions: fp32, fp16, int8-weights (weight-only/dynamic int8), int8 (static, "
              "calibrated: needs --calibration), int4-weights.")


@main.command()
@click.argument("source")
@click.option("--out", "out", default=None, type=PathArg(path_type=Path),
              help="Bundle folder (default: ./<model-name>-bundle). Replaced atomically.")
@click.option("--formats", default=None, help=_FORMATS_HELP + " Default: onnx, coreml and tflite, each whose extra is "
              "installed (pip install 'mobilize[all]').")
@click.option("--precisions", default="fp32,fp16", show_default=True, help=_PREC_HELP)
@click.option("--coreml-target", default="iOS16", show_default=True,
              help="Core ML minimum deployment target (iOS15..iOS18, macOS12..macOS15).")
@click.option("--onnx-opset", default=20, show_default=True, type=int,
              help="ONNX opset (18..23); 20 has a native Gelu op, 18 runs on older onnxruntime builds.")
@click.option("--fp16-io", is_flag=True, help="fp16 artifacts take and return float16 instead of float32.")
@click.option("--dynamic", "dynamic", multiple=True, metavar="INPUT:AXIS=NAME[:MIN[:MAX]]",
              help="A dim that may vary at run time (repeatable), e.g. image:0=batch or tokens:1=seq:1:512. Files "
              "that cannot keep it dynamic say so (a fitness finding).")
@click.option("--no-verify", is_flag=True, help="Skip parity checks (artifacts get parity null).")
@click.option("--no-repair", is_flag=True, help="Hand every converter the captured program as is: no rewrites of "
              "the ops it rejects (see docs/repairs.md). Parity judges repaired files either way.")
@click.option("--strict", is_flag=True, help="Treat 'unverified' parity (e.g. Core ML on Linux) as a failure.")
@click.option("--json", "json_out", type=PathArg(path_type=Path), metavar="FILE|-",
              help="Also write the manifest (schema_version 1, docs/manifest.md) to FILE, or to stdout with `-`.")
@click.option("--weights", type=PathArg(path_type=Path), default=None,
              help="Checkpoint loaded into the model (.safetensors preferred; torch.save files load weights-only).")
@click.option("--trust-pickle", is_flag=True, help="Allow unpickling arbitrary Python objects from --weights or a "
              ".pt2 (runs code from the file: only for files you trust). Recorded in the manifest.")
@click.option("--calibration", default=None, help="Real input samples for quantization: an .npz keyed by input "
              "name (or arr_0, arr_1, …; first axis = samples), a folder of images, or file.py:fn yielding input "
              "tuples. Part is held out to measure the quantized files.")
@click.option("--min-snr", default=25.0, show_default=True, type=float,
              help="Accuracy target: SNR (dB) of every output vs PyTorch on held-out calibration samples.")
@click.option("--min-top1", default=0.97, show_default=True, type=float,
              help="Accuracy target: top-1 agreement with PyTorch for classifier outputs (0..1).")
@click.option("--max-size-ratio", default=0.35, show_default=True, type=float,
              help="int8: stop keeping layers in float before the file exceeds this share of fp32.")
@click.option("--holdout", default=0.25, show_default=True, type=float,
              help="Share of the calibration samples held out to measure accuracy.")
@click.option("--snr-headroom", default=2.0, show_default=True, type=float,
              help="int8: the recipe/layer search aims this many dB above --min-snr (guard band for data the "
              "held-out samples do not cover); files are judged against --min-snr.")
@click.option("--metric", default=None, metavar="FILE.py:FN",
              help="Task metric for quantized files: fn(outputs, batch) -> float, higher is better, computed on the "
              "held-out calibration samples (outputs and inputs concatenated along axis 0, plus the .npz's extra "
              "arrays such as labels). Drives the int8 search and is recorded for PyTorch and every quantized file.")
@click.option("--min-metric", default=None, type=float,
              help="Accuracy target: the value --metric must reach (without it the metric is recorded only).")
@click.option("--class-axis", "class_axis", default=None, metavar="OUTPUT=AXIS,...",
              help="Judge top-1 agreement of these outputs along this axis (e.g. logits=-1 for a (N, T, C) "
              "sequence output); plain (N, C) outputs are judged without it.")
@click.option("--time-budget", "time_budget", default=300.0, show_default=True, type=float, metavar="SECONDS",
              help="Quantized precisions: wall seconds the search of one format × precision may spend; when it runs "
              "out the best file so far is kept and the quantization record says so.")
@click.option("--jobs", "jobs", default=None, metavar="N",
              help="Processes that work side by side: the converters of fp32/fp16 files, or the independent candidate "
              "trials of one quantized file (default: the usable cores; 1: one after another). The files are the "
              "same for every N.")
@_fitness_options
def export(source: str, out: Path | None, formats: str, precisions: str, coreml_target: str, onnx_opset: int,
           fp16_io: bool, no_verify: bool, no_repair: bool, strict: bool, json_out: Path | None,
           weights: Path | None, trust_pickle: bool, calibration: str | None, min_snr: float, min_top1: float,
           max_size_ratio: float, holdout: float, snr_headroom: float, metric: str | None, min_metric: float | None,
           class_axis: str | None, time_budget: float, jobs: str | None, fitness: str | None, allow_unfit: bool,
           allow_below_target: bool, dynamic: tuple[str, ...]) -> None:
    """Export SOURCE (file.py:fn, package.module:fn, zoo:NAME or model.pt2) to a verified bundle."""
    from mobilize import api
    from mobilize.export import ExportOptions
    from mobilize.guard import check_outputs, write_output
    from mobilize.quantize.recipes import AccuracyTarget, parse_class_axes, parse_jobs
    from mobilize.spec import parse_dynamic
    from mobilize.verify.fitness import parse_thresholds

    json_target(json_out)
    check_outputs(("--json", json_out))  # an unwritable --json must fail before the bundle is replaced
    options = ExportOptions(onnx_opset=onnx_opset, coreml_target=coreml_target, fp16_io=fp16_io)
    target = AccuracyTarget(min_snr_db=min_snr, min_top1=min_top1, max_size_ratio=max_size_ratio, holdout=holdout,
                            headroom_db=snr_headroom, class_axes=parse_class_axes(class_axis), metric=metric,
                            min_metric=min_metric, time_budget_s=time_budget, jobs=parse_jobs(jobs))
    if out is None:
        stem = source.split(":")[-1] if source.startswith("zoo:") else Path(source.split(":")[0]).stem
        out = Path(f"{stem or 'model'}-bundle")
    result = _with_status(lambda step: api.export(source, out, formats=formats, precisions=precisions,
                                                  options=options, verify=not no_verify, strict=strict,
                                                  weights=weights, trust_pickle=trust_pickle, on_step=step,
                                                  calibration=calibration, target=target,
                                                  fitness=parse_thresholds(fitness), allow_unfit=allow_unfit,
                                                  allow_below_target=allow_below_target,
                                                  dynamic=parse_dynamic(dynamic), repair=not no_repair))
    _print_result(result, title=f"mobilize export {source}")
    _print_diagnosis(result, source)
    if json_out:
        write_output(json_out, json.dumps(result.manifest, indent=2) + "\n", "--json")
    raise SystemExit(result.exit_code)


def _print_diagnosis(result: Any, source: str) -> None:
    """Under the table: the first layer where each failing file diverges (``mobilize diff`` shows every layer)."""
    if result.diagnosis is None:
        return
    from mobilize.diff.report import culprit_lines

    lines = culprit_lines(result.diagnosis)
    for line in lines:
        _console().print(f"  [red]{_escape(line)}[/]")
    if lines:
        _console().print(f"  [dim]every layer: mobilize diff {_escape(str(result.out))} --source {_escape(source)}[/]")


@main.command()
@click.argument("bundle", type=PathArg(path_type=Path))
@click.option("--json", "json_out", type=PathArg(path_type=Path), metavar="FILE|-",
              help="Write the verification results (schema mobilize-verify/1) to FILE, or to stdout with `-`.")
@click.option("--source", default=None, help="Recompute the reference from this model source instead of the "
              "bundle's stored reference.npz.")
@click.option("--strict", is_flag=True, help="Treat 'unverified' parity as a failure.")
@_fitness_options
def verify(bundle: Path, json_out: Path | None, source: str | None, strict: bool, fitness: str | None,
           allow_unfit: bool, allow_below_target: bool) -> None:
    """Re-verify an existing BUNDLE (exit 0 all pass, 1 a parity failure or a file not fit to ship, 2 could not
    run)."""
    from mobilize import api
    from mobilize.guard import check_outputs, write_output
    from mobilize.verify.fitness import parse_thresholds

    json_target(json_out)
    check_outputs(("--json", json_out))
    thresholds = parse_thresholds(fitness)
    result = _with_status(lambda step: api.verify(bundle, source=source, strict=strict, on_step=step,
                                                  fitness=thresholds, allow_unfit=allow_unfit,
                                                  allow_below_target=allow_below_target))
    _print_result(result, title=f"mobilize verify {bundle}")
    if json_out:
        payload = {"schema": VERIFY_SCHEMA, "bundle": str(bundle), "summary": result.manifest["summary"],
                   "artifacts": [{k: a.get(k) for k in ("format", "precision", "path", "sha256", "parity", "fitness")}
                                 for a in result.artifacts]}
        write_output(json_out, json.dumps(payload, indent=2) + "\n", "--json")
    if any(a["parity"] and a["parity"].get("could_not_run") for a in result.artifacts):
        bad = next(a for a in result.artifacts if a["parity"] and a["parity"].get("could_not_run"))
        _console(True).print(f"[bold red]error:[/] {_escape(bad['parity']['reason'])}")
        raise SystemExit(2)
    raise SystemExit(result.exit_code)


@main.command()
def zoo() -> None:
    """List the built-in models (use them as zoo:NAME)."""
    from rich.table import Table

    from mobilize import models

    table = Table(title="mobilize zoo")
    for col in ("name", "model", "weights"):
        table.add_column(col)
    for name in models.names():
        e = models.ZOO[name]
        table.add_row(f"zoo:{name}" + (" (default)" if name == models.DEFAULT else ""), e.summary, e.weights)
    _console().print(table)


@main.command()
@click.option("--out", default=Path("mobilize-demo"), show_default=True, type=PathArg(path_type=Path))
def demo(out: Path) -> None:
    """Export the built-in digits classifier to every format at fp32, fp16, int8-weights and int8 (calibrated on
    training digits), verify, and print the table with each file's real test-set accuracy."""
    from mobilize import api, models
    from mobilize.models.digits import calibration_set

    source = f"zoo:{models.DEFAULT}"
    result = _with_status(lambda step: api.export(source, out, precisions="fp32,fp16,int8-weights,int8",
                                                  calibration=calibration_set(), on_step=step))
    _print_result(result, title=f"mobilize demo ({source})")
    raise SystemExit(result.exit_code)


def _with_status(fn: Any) -> Any:
    """Run ``fn(on_step)`` with progress on stderr (mobilize.progress): a live line in a terminal, one timestamped
    line per step otherwise (CI logs), nothing with --quiet. With -v the converters' logs interleave with the
    steps, so the steps are printed as lines there too."""
    from mobilize.progress import Reporter

    console = _console(True)
    live = console.is_terminal and not _STATE["verbose"]
    with Reporter(console, live=live, quiet=_STATE["quiet"]) as report:
        return fn(report)


def _fmt_bytes(n: int | None) -> str:
    from mobilize.bench.report import fmt_bytes

    return fmt_bytes(n)


_FIT_CELL = {"fit": "[green]fit[/]", "unfit": "[red]unfit[/]", "below_target": "[red]below target[/]"}


def _fit_cell(a: dict[str, Any]) -> str:
    fit = a.get("fitness")
    return _FIT_CELL.get(fit["status"], fit["status"]) if fit else ""


def _fit_notes(a: dict[str, Any], label: str) -> list[str]:
    """One line per finding that makes the file unfit (or below target), with the reason the analysis found."""
    from mobilize.verify.fitness import failing

    found = failing(a)
    if not found:
        return []
    status = a["fitness"]["status"].replace("_", " ")
    lines = [f"[red]{label} {status}[/]: " + "; ".join(_escape(f["message"]) for f in found)]
    reasons = list(dict.fromkeys(r for f in found for r in f.get("reasons") or []))
    if reasons:
        lines.append(f"    [dim]why: {_escape('; '.join(reasons[:3]))}[/]")
    return lines


def _print_result(result: Any, title: str) -> None:
    """The results table, then one line per artifact that did not pass (what happened and why)."""
    from rich.table import Table

    colors = {"pass": "green", "fail": "red", "unverified": "yellow"}
    table = Table(title=title)
    quantized = any(a.get("quantization") for a in result.artifacts)
    with_acc = any(a.get("accuracy") for a in result.artifacts)
    cols = ["format", "precision", "size", "parity", "fit", "max abs err", "SNR dB", "runtime"]
    cols += ["recipe", "held-out SNR / top-1", "latency ÷ fp32"] if quantized else []
    cols += ["test accuracy"] if with_acc else []
    for col in cols:
        table.add_column(col, justify="right" if col in ("size", "max abs err", "SNR dB", "latency ÷ fp32",
                                                         "test accuracy") else "left",
                         no_wrap=col in ("format", "precision", "runtime", "recipe"))
    extra = len(cols) - 8
    notes: list[str] = []
    shared_warnings: dict[str, list[str]] = {}  # the same caveat for several artifacts is printed once
    for a in result.artifacts:
        p = a["parity"]
        label = f"{a['format']} {a['precision']}"
        tail = _quant_cells(a, quantized, with_acc)
        for line in _quant_notes(a):
            notes.append(f"[yellow]{label}[/]: {_escape(line)}")
        for rec in a.get("repairs") or []:
            notes.append(f"[cyan]{label}[/]: {_escape(_repair_line(rec))}")
        if a["status"] != "ok":
            err = a["error"] or {}
            where = "; ".join(err.get("modules") or err.get("ops") or [])
            table.add_row(a["format"], a["precision"], "—", "[red]export failed[/]", "", "", "", "", *[""] * extra)
            notes.append(f"[red]{label}[/]: {_escape(err.get('message', '')[:300])}"
                         + (f" [dim](where: {_escape(where)})[/]" if where else ""))
            continue
        notes += _fit_notes(a, label)
        notes += [f"[red]{label}[/]: {_escape(line)}" for line in _placement_findings(a)]
        if p is None:
            table.add_row(a["format"], a["precision"], _fmt_bytes(a["bytes"]), "not checked", _fit_cell(a), "", "",
                          "", *tail)
            continue
        mae = f"{p['max_abs_error']:.2e}" if p.get("max_abs_error") is not None else ""
        snr = f"{p['snr_db']:.1f}" if p.get("snr_db") is not None else ""
        table.add_row(a["format"], a["precision"], _fmt_bytes(a["bytes"]),
                      f"[{colors[p['status']]}]{p['status']}[/]", _fit_cell(a), mae, snr, p["runtime"] or "—", *tail)
        if p["status"] != "pass" and p.get("reason"):
            notes.append(f"[{colors[p['status']]}]{label}[/]: {_escape(p['reason'])}")
        for warning in p.get("warnings") or []:
            shared_warnings.setdefault(warning, []).append(label)
    for warning, labels in shared_warnings.items():
        notes.append(f"[yellow]{', '.join(labels)}[/]: {_escape(warning)}")
    console = _console()
    console.print(table)
    for line in dict.fromkeys(notes):
        console.print(f"  {line}")
    s = result.manifest["summary"]
    fit = s.get("fitness") or {}
    fit_text = (f"; fitness: {fit.get('fit', 0)} fit, {fit.get('unfit', 0)} unfit, {fit.get('below_target', 0)} below "
                "target" if fit else "")
    console.print(f"bundle: [bold]{_escape(str(result.out))}[/]  ({s['exported']} exported, {s['failed']} failed; "
                  f"parity: {s['parity']['pass']} pass, {s['parity']['fail']} fail, "
                  f"{s['parity']['unverified']} unverified{fit_text})")


def _placement_findings(a: dict[str, Any]) -> list[str]:
    """What the placement analysis found that an app build must act on (a Core ML file that needs a newer OS)."""
    from mobilize.analysis.placement import findings

    return findings(a.get("placement"))


def _quant_cells(a: dict[str, Any], quantized: bool, with_acc: bool) -> list[str]:
    """Extra table cells: recipe, held-out SNR / top-1 agreement, latency ratio, test-set accuracy."""
    cells: list[str] = []
    q = a.get("quantization") or {}
    if quantized:
        ach = q.get("achieved") or {}
        fig = ""
        if ach:
            top = ach.get("top1_agreement")
            fig = f"{ach['snr_db']:.1f} dB / {'—' if top is None else f'{top:.0%}'}"
            fig = fig if q.get("meets_target") else f"[red]{fig}[/]"
        lat = q.get("latency") or {}
        measured = ((a.get("fitness") or {}).get("latency") or {}).get("vs_fp32")  # the export's last timing
        value = measured if measured is not None else lat.get("ratio")
        ratio = f"{value:.2f}×" if value is not None else ""
        slower = any(f["check"] == "latency.fp32" for f in (a.get("fitness") or {}).get("findings", []))
        ratio = f"[red]{ratio}[/]" if slower else ratio
        kept = f" +{len(q['kept_float'])} float" if q.get("kept_float") else ""
        cells += [f"{q['recipe']}{kept}" if q else "", fig, ratio]
    if with_acc:
        acc = a.get("accuracy") or {}
        cells.append(f"{acc['top1_accuracy']:.1%}" if acc.get("top1_accuracy") is not None else
                     ("unverified" if acc else ""))
    return cells


def _repair_line(rec: dict[str, Any]) -> str:
    """One line per repair record: what ran, where, why (docs/repairs.md)."""
    verb = "repaired:" if rec.get("status") == "applied" else f"repair {rec.get('status', '')}:"
    where = " in " + ", ".join(rec["modules"]) if rec.get("modules") else ""
    return f"{verb} {rec['name']} ({rec.get('rewrites', 0)} node(s){where}) — {rec.get('why')}"


def _quant_notes(a: dict[str, Any]) -> list[str]:
    q = a.get("quantization") or {}
    out = []
    if q.get("kept_float"):
        out.append(f"{len(q['kept_float'])} layer(s) kept in float by sensitivity analysis")
    return out


def _register_optional_commands() -> None:
    """Commands that live in their own packages; importing them pulls in click only."""
    from mobilize.analysis.cli import inspect
    from mobilize.bench.cli import bench
    from mobilize.check.cli import baseline, check
    from mobilize.diff.cli import diff

    main.add_command(inspect)
    main.add_command(bench)
    main.add_command(check)
    main.add_command(baseline)
    main.add_command(diff)


_register_optional_commands()


def run() -> None:
    """The ``mobilize`` command (console script and ``python -m mobilize``): :func:`main`, then
    :func:`mobilize._exit.exit_now` (a normal exit minus the second spent tearing down torch and the converters)."""
    from mobilize._exit import exit_now

    try:
        main()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, (int, str)) or exc.code is None else 1
    exit_now(code)


if __name__ == "__main__":  # pragma: no cover
    run()
