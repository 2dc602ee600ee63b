"""``mobilize inspect BUNDLE``: the click command (registered by ``mobilize.cli``).

Exit codes: 0 inspected, 1 a Core ML file needs a newer OS than its target or a file could not be inspected,
2 could not run (not a bundle, a changed file, a bad option) — one line on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mobilize._clitypes import PathArg


@click.command()
@click.argument("bundle", type=PathArg(path_type=Path))
@click.option("--coreml-target", default=None, metavar="iOS16",
              help="Judge Core ML files against this deployment target (default: the one each file was exported "
              "for).")
@click.option("--json", "json_out", type=PathArg(path_type=Path), metavar="FILE|-",
              help="Write every record (schema mobilize-inspect/1) to FILE, or to stdout with `-`.")
@click.option("--ops", "show_ops", is_flag=True, help="Also print each file's op histogram with parameters and bytes "
              "per op type.")
def inspect(bundle: Path, coreml_target: str | None, json_out: Path | None, show_ops: bool) -> None:
    """Where each file of BUNDLE would run on a phone: ops, GPU/XNNPACK/NPU (TFLite), NNAPI and CoreML EPs (ONNX),
    deployment target and Neural Engine estimate (Core ML) — static analysis with the runtimes' own tools, not a
    device measurement (docs/inspect.md)."""
    from mobilize import cli as _cli
    from mobilize.analysis.bundle import inspect_bundle
    from mobilize.guard import check_outputs

    _cli.json_target(json_out)
    check_outputs(("--json", json_out))
    result = _cli._with_status(lambda step: inspect_bundle(bundle, coreml_target=coreml_target, on_step=step))
    print_result(result, show_ops)
    if json_out:
        from mobilize.guard import write_output

        write_output(json_out, json.dumps(result.to_dict(), indent=2) + "\n", "--json")
    raise SystemExit(result.exit_code)


def print_result(result: Any, show_ops: bool = False) -> None:
    from rich.table import Table

    from mobilize import cli as _cli
    from mobilize.analysis.placement import summary_line

    esc = _cli._escape
    table = Table(title=f"mobilize inspect {result.bundle}")
    for col in ("format", "precision", "ops", "MACs", "placement (static analysis)"):
        table.add_column(col, justify="right" if col in ("ops", "MACs") else "left",
                         no_wrap=col in ("format", "precision"))
    notes: list[str] = []
    for a in result.artifacts:
        p = a.get("placement") or {}
        an = a.get("analysis") or {}
        macs = p.get("macs")
        table.add_row(a["format"], a["precision"], str(an.get("op_count", "")),
                      _count(macs) if macs else "", esc(summary_line(p)))
        notes += [f"[yellow]{a['format']} {a['precision']}[/]: {esc(line)}" for line in detail_lines(p)]
        if show_ops and an:
            by_op = an.get("weights_by_op") or {}
            ops = ", ".join(f"{op} ×{n}" + (f" ({_count(by_op[op]['parameters'])} params, "
                                              f"{_cli._fmt_bytes(by_op[op]['bytes'])})" if op in by_op else "")
                            for op, n in (an.get("ops") or {}).items())
            notes.append(f"[dim]{a['format']} {a['precision']} ops[/]: {esc(ops)}")
    console = _cli._console()
    console.print(table)
    for line in notes:
        console.print(f"  {line}")
    for f in result.findings:
        console.print(f"[red]finding[/]: {esc(f)}")


def _count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


def detail_lines(p: dict[str, Any]) -> list[str]:
    """The lines that say what falls off each accelerator and where it came from in PyTorch."""
    from mobilize.analysis.bundle import target_message

    lines = []
    dep = p.get("deployment") or {}
    if dep.get("exceeds_requested"):
        lines.append(target_message(dep))
    for name, path in (p.get("paths") or {}).items():
        if path.get("status") == "unverified" and name != "npu":
            lines.append(f"{name}: unverified — {path.get('reason')}")
        unsupported = path.get("unsupported") or []
        if unsupported:
            by_op: dict[str, list[str]] = {}
            for u in unsupported:
                by_op.setdefault(u["op"], [])
                if u.get("module") and u["module"] not in by_op[u["op"]]:
                    by_op[u["op"]].append(u["module"])
            text = "; ".join(f"{op}" + (f" in {', '.join(m[:3])}" if m else "") for op, m in by_op.items())
            lines.append(f"{name}: not supported — {text}")
        for b in path.get("blockers") or []:
            where = ", ".join((b.get("modules") or b.get("op_names") or b.get("inputs") or [])[:3])
            lines.append(f"{name}: {b['what']}" + (f" — {where}" if where else "") + f" [{b['source']}]")
    return lines
