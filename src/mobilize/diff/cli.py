"""``mobilize diff BUNDLE``: the click command (registered by ``mobilize.cli``).

Exit codes: 0 compared and no layer crosses its threshold, 1 a layer does (its name is the first line under the
table), 2 could not run (bad bundle, source or option, or a file its runtime cannot run) — one line on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mobilize._clitypes import PathArg


@click.command("diff")
@click.argument("bundle", type=PathArg(path_type=Path))
@click.option("--artifact", "artifacts", multiple=True, metavar="FORMAT/PRECISION",
              help="Compare only this file (e.g. onnx/fp32, tflite/int8, or a bare format for all its precisions); "
              "repeat or comma-separate. Default: every exported file.")
@click.option("--source", default=None, help="The model the bundle was exported from (file.py:fn, pkg.mod:fn, "
              "zoo:NAME, model.pt2). It is run; without it only the files' outputs are compared with the stored "
              "reference.")
@click.option("--inputs", default=None, metavar="FILE.npz|DIR|FILE.py:FN",
              help="Samples to compare on (as --calibration of export; real data shows what quantized layers "
              "really see). Default: the bundle's verification inputs. Needs --source.")
@click.option("--threshold", type=float, default=None, metavar="DB",
              help="A layer diverges when the SNR of the error it adds falls below this (default per precision: "
              "fp32 60, fp16 40, int8-weights 25, int8 20, int4-weights 12).")
@click.option("--samples", type=int, default=8, show_default=True, help="Compare on at most this many samples.")
@click.option("--top", type=int, default=20, show_default=True, help="Rows per table (worst layers first).")
@click.option("--html", "html_dir", type=PathArg(path_type=Path), default=None,
              help="Write a self-contained diff.html (chart of the error per layer, module tree) into this folder.")
@click.option("--json", "json_out", type=PathArg(path_type=Path), default=None, metavar="FILE|-",
              help="Write every layer of every compared file (schema mobilize-diff/1) to FILE, or to stdout with `-`.")
@click.option("--weights", type=PathArg(path_type=Path), default=None, help="Checkpoint for --source "
              "(as export --weights).")
@click.option("--trust-pickle", is_flag=True, help="Allow unpickling for --weights / a .pt2 --source (as export).")
def diff(bundle: Path, artifacts: tuple[str, ...], source: str | None, inputs: str | None, threshold: float | None,
         samples: int, top: int, html_dir: Path | None, json_out: Path | None, weights: Path | None,
         trust_pickle: bool) -> None:
    """Where does each file of BUNDLE diverge from PyTorch? Layer by layer, named by your modules."""
    from mobilize import cli as _cli
    from mobilize.diff import diff as run_diff
    from mobilize.diff.report import print_result
    from mobilize.guard import check_outputs

    _cli.json_target(json_out)
    check_outputs(("--json", json_out))
    result = _cli._with_status(lambda step: run_diff(
        bundle, artifacts=list(artifacts) or None, inputs=inputs, source=source, threshold=threshold,
        samples=samples, weights=weights, trust_pickle=trust_pickle, on_step=step))
    print_result(result, _cli._console(), top=max(1, top))
    if json_out:
        from mobilize.guard import write_output

        write_output(json_out, json.dumps(result.to_dict(), indent=2) + "\n", "--json")
    if html_dir:
        path = result.write_html(html_dir)
        _cli._console().print(f"report: {path}")
    bad = next((r for r in result.reports if r.get("could_not_run")), None)
    if bad is not None:  # as `mobilize verify`: a file its runtime cannot run is unusable input
        _cli._console(True).print(f"[bold red]error:[/] {_cli._escape(bad['summary'])}")
    raise SystemExit(result.exit_code)
