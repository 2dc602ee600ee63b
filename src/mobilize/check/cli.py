"""``mobilize check`` and ``mobilize baseline update`` (registered by ``mobilize.cli`` with ``main.add_command``).

Exit codes: 0 every check passed, 1 a check failed, 2 could not run (bad config, missing source, unusable bundle) —
one line per problem on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mobilize._clitypes import PathArg

_CTX = {"help_option_names": ["-h", "--help"]}


def _guard(fn: Callable[[], None]) -> None:
    """The CLI's exit-code mapping, with a ConfigError's problems printed one per line."""
    from mobilize import cli as _cli
    from mobilize.errors import ConfigError

    try:
        fn()
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
        raise
    except KeyboardInterrupt as exc:
        from mobilize.errors import interrupt_exit_code

        _cli._console(True).print("[yellow]interrupted[/]; the previous bundle and baseline are untouched")
        raise SystemExit(interrupt_exit_code(exc)) from None
    except ConfigError as exc:
        if _cli._STATE["verbose"]:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        for line in exc.problems:
            _cli._console(True).print(f"[bold red]error:[/] {_cli._escape(line)}")
        raise SystemExit(2) from None
    except Exception as exc:  # noqa: BLE001 - same exit-code mapping as the rest of the CLI
        _cli._fail(exc)


@click.command("check", context_settings=_CTX)
@click.option("--config", "config", type=PathArg(path_type=Path), default=None,
              help="mobilize.toml or pyproject.toml ([tool.mobilize]) [default: ./mobilize.toml, then "
                   "./pyproject.toml].")
@click.option("--junit", type=PathArg(path_type=Path), default=None,
              help="Also write the JUnit XML here (always written to <output>/junit.xml).")
@click.option("--summary", type=PathArg(path_type=Path), default=None,
              help="Also write the Markdown summary here (always written to <output>/summary.md; appended to "
                   "$GITHUB_STEP_SUMMARY when set).")
@click.option("--update-baseline", is_flag=True, help="After a passing run, create or refresh the baseline file.")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
              help="Write the results as JSON to FILE (`--json` alone: stdout, and the table goes to stderr).")
@click.option("--bundle", type=PathArg(path_type=Path), default=None,
              help="Judge this existing bundle instead of exporting (its files are re-verified against its stored "
                   "reference; a file changed after export fails).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Fleets ([[models]]): run the model × format × precision jobs as local processes or as Ray tasks "
                   "[default: the config's [executor] kind, else local].")
@click.option("--jobs", "jobs", type=click.IntRange(1, 1024), default=None,
              help="Fleets, local executor: parallel jobs [default: the usable cores].")
@click.option("--shard", default=None, metavar="I/N",
              help="Fleets: run only every N-th job starting at the I-th (CI matrices; each shard writes its own "
                   "results).")
def check(config: Path | None, junit: Path | None, summary: Path | None, update_baseline: bool,
          json_out: str | None, bundle: Path | None, executor: str | None, jobs: int | None,
          shard: str | None) -> None:
    """Export, verify and benchmark the model a config describes — or every model of a fleet ([[models]]); fail
    on parity, budgets or regressions against the committed baseline (exit 0 all good, 1 a check failed, 2 could
    not run)."""
    from mobilize.fleet import is_fleet

    if is_fleet(config):
        _guard(lambda: _fleet(config, junit, summary, update_baseline, json_out, bundle, executor, jobs, shard))
        return
    if executor or jobs or shard:
        _guard(lambda: _no_fleet(config))
    _guard(lambda: _check(config, junit, summary, update_baseline, json_out, bundle))


def _no_fleet(config: Path | None) -> None:
    from mobilize.errors import OptionError

    raise OptionError(f"--executor, --jobs and --shard run fleets; {config or 'the config'} has no [[models]] "
                      "tables (put the model in one: [[models]] with its source = …; see docs/ci.md)")


def _fleet(config: Path | None, junit: Path | None, summary: Path | None, update_baseline: bool,
           json_out: str | None, bundle: Path | None, executor: str | None, jobs: int | None,
           shard: str | None) -> None:
    from mobilize import cli as _cli
    from mobilize import fleet
    from mobilize.bundle.writer import write_atomic
    from mobilize.errors import OptionError
    from mobilize.fleet import report
    from mobilize.guard import check_outputs

    if bundle is not None:
        raise OptionError("--bundle judges one model's bundle; with a fleet config, run `mobilize check` on a "
                          "single-model config for that bundle")
    check_outputs(("--junit", junit), ("--summary", summary), ("--json", None if json_out == "-" else json_out))
    where = fleet.parse_shard(shard)
    fl = fleet.load(config)
    result = _cli._with_status(lambda step: fleet.run(fl, executor=executor, jobs=jobs, shard=where,
                                                      update_baseline=update_baseline, on_step=step))
    data = result.to_dict()
    written = list(result.written)
    for path, payload in ((junit, report.junit(result)), (summary, report.summary(result).encode())):
        if path is not None:
            write_atomic(path, payload)
            written.append(path)
    _github_summary(report.summary(result))
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    if json_out not in (None, "-"):
        write_atomic(Path(json_out), text.encode())
        written.append(Path(json_out))
    console = _cli._console(stderr=json_out == "-")
    for name, rec in result.models.items():
        c = rec["counts"]
        mark = "[green]pass[/]" if rec["exit_code"] == 0 else "[red]fail[/]"
        console.print(f"{_cli._escape(name)}: {mark} ({c['passed']} passed, {c['failed']} failed, {c['skipped']} "
                      "skipped)")
        if rec["exit_code"] or _cli._STATE["verbose"]:
            for a in rec["artifacts"]:
                for ch in a["checks"]:
                    if ch["status"] == "fail":
                        console.print(f"  [red]✗[/] {a['format']} {a['precision']} {ch['name']}: "
                                      f"{_cli._escape(ch['message'])}")
    for j in result.jobs:
        if j["status"] in ("failed", "error"):
            console.print(f"  [yellow]job[/] {j['model']}/{j['format']}/{j['precision']} {j['status']} after "
                          f"{j['attempts']} attempt(s): {_cli._escape(j.get('error', ''))}")
    c = data["counts"]
    verdict = "[bold green]check passed[/]" if result.exit_code == 0 else "[bold red]check failed[/]"
    console.print(f"{verdict}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped "
                  f"({len(result.models)} model(s), {len(result.jobs)} job(s) on {result.executor}, "
                  f"{data['seconds']:.0f} s)")
    console.print("[dim]wrote " + ", ".join(_cli._escape(str(p)) for p in written) + "[/]")
    if json_out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    raise SystemExit(result.exit_code)


def _check(config: Path | None, junit: Path | None, summary: Path | None, update_baseline: bool,
           json_out: str | None, bundle: Path | None) -> None:
    from mobilize import cli as _cli
    from mobilize.bundle.writer import write_atomic
    from mobilize.check import junit as junit_xml
    from mobilize.check import summary as summary_md
    from mobilize.check.config import load
    from mobilize.check.pipeline import run
    from mobilize.guard import check_outputs

    check_outputs(("--junit", junit), ("--summary", summary), ("--json", None if json_out == "-" else json_out))
    cfg = load(config)
    result = _cli._with_status(lambda step: run(cfg, bundle=bundle, update_baseline=update_baseline,
                                                on_step=step))
    data = result.to_dict()
    written = list(result.written)
    page = cfg.output / summary_md.HTML_NAME
    for path, payload in ((junit, junit_xml.render(data)),
                          (summary, summary_md.render(data, _relative_to(page, summary)).encode())):
        if path is not None:
            write_atomic(path, payload)
            written.append(path)
    _github_summary(summary_md.render(data, _relative_to(page, None), linkable=False))
    if json_out not in (None, "-"):
        write_atomic(Path(json_out), (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())
        written.append(Path(json_out))
    console = _cli._console(stderr=json_out == "-")
    print_result(result, console)
    console.print("[dim]wrote " + ", ".join(_cli._escape(str(p)) for p in written) + "[/]")
    if json_out == "-":
        sys.stdout.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
        sys.stdout.flush()
    raise SystemExit(result.exit_code)


def _relative_to(page: Path, markdown: Path | None) -> str:
    """``page`` as a link from the Markdown file's folder; with no file (the step summary), the path to name:
    relative to the current folder when inside it (``mobilize-check/summary.html``), else absolute."""
    page = page.resolve()
    if markdown is None:
        return page.relative_to(Path.cwd()).as_posix() if page.is_relative_to(Path.cwd()) else page.as_posix()
    try:
        return Path(os.path.relpath(page, Path(markdown).resolve().parent)).as_posix()
    except ValueError:  # another drive (Windows)
        return page.as_posix()


def _github_summary(text: str) -> None:
    """Append to ``$GITHUB_STEP_SUMMARY`` (GitHub Actions shows it on the run's page); a failure only warns."""
    from mobilize import cli as _cli
    from mobilize.errors import MobilizeInputError
    from mobilize.safeio import refuse_special

    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    try:
        refuse_special(target, "$GITHUB_STEP_SUMMARY")  # appending to a FIFO would block
        with open(target, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    except MobilizeInputError as exc:
        _cli._console(True).print(f"[yellow]warning:[/] not appended: {_cli._escape(str(exc))}")
    except OSError as exc:
        _cli._console(True).print(f"[yellow]warning:[/] could not append to $GITHUB_STEP_SUMMARY ({target}): "
                                  f"{_cli._escape(exc.strerror or str(exc))}")


def print_result(result: Any, console: Any) -> None:
    """The results table, each failing check with its numbers (every check with -v), the notes, the verdict."""
    from rich.table import Table

    from mobilize import cli as _cli
    from mobilize.check import summary as summary_md

    esc = _cli._escape
    data = result.to_dict()
    table = Table(title=f"mobilize check {esc(data['config']['source'])}")
    for col in ("format", "precision", "size", "parity", "max abs err", "SNR dB", "latency ÷ eager", "vs baseline",
                "checks"):
        table.add_column(col, justify="right" if col in ("size", "max abs err", "SNR dB", "latency ÷ eager") else
                         "left", no_wrap=col in ("format", "precision"))
    colors = {"pass": "green", "fail": "red", "unverified": "yellow", "—": "dim"}
    for a in data["artifacts"]:
        status, mae, snr = summary_md._parity(a)
        n_fail = sum(c["status"] == "fail" for c in a["checks"])
        n_pass = sum(c["status"] == "pass" for c in a["checks"])
        n_skip = sum(c["status"] == "skip" for c in a["checks"])
        checks = (f"[red]{n_fail} failed[/], " if n_fail else "") + f"{n_pass} passed" + \
            (f", {n_skip} skipped" if n_skip else "")
        table.add_row(a["format"], a["precision"], summary_md._size(a), f"[{colors.get(status, 'white')}]{status}[/]",
                      mae, snr, summary_md._latency(a), a["vs_baseline"], checks)
    console.print(table)
    verbose = _cli._STATE["verbose"]
    marks = {"fail": "[red]✗[/]", "pass": "[green]✓[/]", "skip": "[dim]–[/]"}
    for a in data["artifacts"]:
        for c in a["checks"]:
            if c["status"] == "fail" or verbose:
                console.print(f"  {marks[c['status']]} {a['format']} {a['precision']} {c['name']}: "
                              f"{esc(c['message'])}")
    for note in data["notes"]:
        console.print(f"  [yellow]note:[/] {esc(note)}")
    c = data["counts"]
    verdict = "[bold green]check passed[/]" if data["status"] == "pass" else "[bold red]check failed[/]"
    console.print(f"{verdict}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped "
                  f"({c['tests']} checks, {data['seconds']:.0f} s)")


# --- mobilize baseline update ----------------------------------------------------------------------------------------


@click.group("baseline", context_settings=_CTX)
def baseline() -> None:
    """Manage the baseline file `mobilize check` compares against (commit it with the model code)."""


@baseline.command("update", context_settings=_CTX)
@click.option("--config", "config", type=PathArg(path_type=Path), default=None,
              help="mobilize.toml or pyproject.toml ([tool.mobilize]) [default: ./mobilize.toml, then "
                   "./pyproject.toml].")
@click.option("--rerun", is_flag=True, help="Run the check again even when the last check's results are current.")
def update(config: Path | None, rerun: bool) -> None:
    """Record the current results as the new baseline, after showing the differences (old → new).

    Uses the last `mobilize check` results in the output folder when they match the config and model files (and
    the bundle's files are unchanged); otherwise runs the check first. Refuses results whose files failed export,
    integrity or parity (exit 1).
    """
    _guard(lambda: _update(config, rerun))


def _update(config: Path | None, rerun: bool) -> None:
    from rich.table import Table

    from mobilize import cli as _cli
    from mobilize.check import baseline as bl
    from mobilize.check.config import load
    from mobilize.check.pipeline import last_results, run

    cfg = load(config)
    console, err = _cli._console(), _cli._console(True)
    data, why = (None, "--rerun") if rerun else last_results(cfg)
    if data is None:
        err.print(f"[dim]running the check ({_cli._escape(why or '')})[/]")
        result = _cli._with_status(lambda step: run(cfg, on_step=step))
        print_result(result, console)
        data = result.to_dict()
    else:
        console.print(f"[dim]using the results of the last check ({data['created']}, "
                      f"{_cli._escape(str(cfg.output))})[/]")
    broken = [f"{a['format']} {a['precision']} {c['name']}: {c['message']}" for a in data["artifacts"]
              for c in a["checks"] if c["status"] == "fail" and c["name"] in ("export", "integrity", "parity")]
    if broken:
        for line in broken:
            err.print(f"[bold red]error:[/] {_cli._escape(line)}")
        err.print("[bold red]error:[/] not recording a baseline from files that fail export, integrity or parity; "
                  "fix them and run `mobilize check` again")
        raise SystemExit(1)
    old = bl.load(cfg.baseline)
    new = bl.from_check(data)
    rows = bl.diff(old, new)
    if old is None:
        console.print(f"new baseline {_cli._escape(str(cfg.baseline))} ({len(new['artifacts'])} artifacts)")
    elif not rows:
        console.print("no differences from the current baseline (its date is refreshed)")
    if rows:
        table = Table(title=f"baseline {cfg.baseline.name}: old → new")
        for col in ("artifact", "figure", "old", "new"):
            table.add_column(col, justify="right" if col in ("old", "new") else "left")
        for row in rows:
            table.add_row(*(_cli._escape(x) for x in row))
        console.print(table)
    others = [f"{a['format']} {a['precision']} {c['name']}" for a in data["artifacts"] for c in a["checks"]
              if c["status"] == "fail"]
    if others:
        console.print(f"  [yellow]note:[/] recording despite failing checks ({_cli._escape(', '.join(others))}): "
                      "they compare against limits or the old baseline")
    bl.save(cfg.baseline, new)
    console.print(f"wrote [bold]{_cli._escape(str(cfg.baseline))}[/] — commit it with the model code")
