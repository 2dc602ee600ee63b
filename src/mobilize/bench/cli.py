"""``mobilize bench DIR``: the click command (registered by ``mobilize.cli`` with ``main.add_command(bench)``).

Exit codes: 0 measured (and every budget met), 1 an artifact fails a budget or could not be run, 2 could not run at
all (bad bundle, malformed option) — one line on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mobilize._clitypes import PathArg


def _bench(
    bundle: Path,
    threads: str | None,
    json_out: Path | None,
    budget: str | None,
    report_dir: Path | None,
    no_report: bool,
    no_manifest: bool,
    formats: str | None,
    precisions: str | None,
    source: str | None,
    no_baseline: bool,
    no_memory: bool,
    min_runs: int,
    min_seconds: float,
    warmup_seconds: float,
) -> None:
    """Measure latency, memory, size and compute of every artifact in BUNDLE (PyTorch eager as the baseline row).

    CPU latency on this machine — not device latency. Results go to the terminal, the bundle's manifest ("bench"),
    report.md and report.html (in the bundle or --report-dir), and --json.
    """
    from mobilize import cli as _cli

    try:
        from mobilize.guard import check_outputs, write_output

        writes_bundle = not no_manifest or (not no_report and report_dir is None)
        _cli.json_target(json_out)
        check_outputs(("--json", json_out), folders=(("--report-dir", report_dir),
                                                     *((("bundle", bundle),) if writes_bundle and bundle.is_dir()
                                                       else ())))
        from mobilize.bench import budget as budgets
        from mobilize.bench import report
        from mobilize.bench.latency import Settings
        from mobilize.bench.run import bench as run_bench
        from mobilize.bench.run import save

        parsed = budgets.parse(budget)  # malformed budgets fail before anything is measured
        settings = Settings(min_runs=min_runs, min_seconds=min_seconds, warmup_seconds=warmup_seconds)
        result = _cli._with_status(
            lambda step: run_bench(
                bundle,
                threads=threads,
                budget=parsed,
                formats=formats,
                precisions=precisions,
                source=source,
                baseline=not no_baseline,
                memory=not no_memory,
                settings=settings,
                on_step=step,
            )
        )
        report.print_table(result.data, _cli._console())
        written = save(result, report_dir=report_dir, write_manifest=not no_manifest, reports=not no_report)
        if json_out is not None:
            write_output(json_out, json.dumps(result.data, indent=2, allow_nan=False) + "\n", "--json")
            written.append(json_out)
        if written:
            _cli._console().print("[dim]wrote " + ", ".join(_cli._escape(str(p)) for p in written) + "[/]")
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
        raise
    except KeyboardInterrupt as exc:
        from mobilize.errors import interrupt_exit_code

        _cli._console(True).print("[yellow]interrupted[/]; nothing was written")
        raise SystemExit(interrupt_exit_code(exc)) from None
    except Exception as exc:  # noqa: BLE001 - same exit-code mapping as the rest of the CLI
        _cli._fail(exc)
    raise SystemExit(result.exit_code)


def _options(fn: Any) -> Any:
    opts = [
        click.argument("bundle", type=PathArg(path_type=Path)),
        click.option(
            "--threads",
            default=None,
            help="Comma-separated thread counts, e.g. 1,2 or 1,all [default: 1 and all usable cores].",
        ),
        click.option("--json", "json_out", type=PathArg(path_type=Path), metavar="FILE|-",
                     help="Write every figure (schema mobilize-bench/1) to FILE, or to stdout with `-`."),
        click.option(
            "--budget",
            default=None,
            help="Limits per artifact, e.g. latency_p90_ms=15,size_mb=10,threads=1 "
            "(keys: latency_p50_ms, latency_p90_ms, latency_p99_ms, latency_mean_ms, load_ms, "
            "first_inference_ms, peak_rss_mb, size_mb, zipped_mb; threads=N picks the thread count). "
            "Exit 1 when an artifact misses one.",
        ),
        click.option(
            "--report-dir",
            type=PathArg(path_type=Path),
            default=None,
            help="Write report.md and report.html here instead of into the bundle.",
        ),
        click.option("--no-report", is_flag=True, help="Do not write report.md / report.html."),
        click.option("--no-manifest", is_flag=True, help="Do not store the results in the bundle's manifest.json."),
        click.option("--formats", default=None, help="Only these formats (default: all in the bundle)."),
        click.option("--precisions", default=None, help="Only these precisions (default: all in the bundle)."),
        click.option(
            "--source",
            default=None,
            help="Model source (file.py:fn, package.module:fn, zoo:NAME) for the PyTorch eager baseline row; "
            "without it that row is skipped (mobilize never runs code named by a bundle's manifest).",
        ),
        click.option("--no-baseline", is_flag=True, help="Skip the PyTorch eager baseline row."),
        click.option("--no-memory", is_flag=True, help="Skip the peak-memory subprocesses."),
        click.option(
            "--min-runs",
            default=50,
            show_default=True,
            type=click.IntRange(min=1, max=1_000_000),
            help="Timed runs per configuration (at least).",
        ),
        click.option(
            "--min-seconds",
            default=1.0,
            show_default=True,
            type=click.FloatRange(min=0, max=3600),
            help="Timed seconds per configuration (at least).",
        ),
        click.option(
            "--warmup-seconds",
            default=0.5,
            show_default=True,
            type=click.FloatRange(min=0, max=3600),
            help="Untimed warm-up per configuration (at least; also ≥ 10 runs).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


bench = click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})(_options(_bench))
