"""Showing a diff: the terminal table (worst layers first), and a self-contained HTML page — one chart of the error
per layer along the network for every artifact (matplotlib SVG, inlined; no JavaScript) and the module tree with
the worst layers highlighted."""

from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import Any

from mobilize.diff.analyze import describe_layer, ranked, score

TOP = 20


def _db(m: dict[str, Any] | None) -> str:
    """The SNR a layer is ranked by; ``ch`` marks the median channel's, when it is below the whole tensor's."""
    if not m:
        return "—"
    if m.get("nonfinite"):
        return "NaN/Inf"
    if m["snr_db"] is None:
        return "no signal"
    ch = m.get("channel_snr_db")
    return f"{ch:.1f} ch" if ch is not None and ch < m["snr_db"] else f"{m['snr_db']:.1f}"


def _err(m: dict[str, Any] | None) -> str:
    return "—" if not m else f"{m['max_abs_error']:.2e}"


def _module_cell(r: dict[str, Any]) -> str:
    fused = len(r["group"]) - 1
    name = r["module"] or "(root)"
    call = f"#{r['call']}" if r.get("call") else ""
    op = f" · {r['torch_op']}" if r.get("torch_op") else ""
    return f"{name}{call}{op} ({r['class']})" + (f" +{fused} fused" if fused else "")


def _quant_cells(r: dict[str, Any]) -> list[str]:
    q = r.get("quant")
    grid = ""
    if q:
        if isinstance(q["scale"], list):
            grid = f"{q['dtype']} s={q['scale'][0]:.2g}…{q['scale'][1]:.2g}"
        else:
            grid = f"{q['dtype']} s={q['scale']:.3g} zp={q['zero_point']}"
    rng = r.get("torch_range")
    seen = f"[{rng[0]:.3g}, {rng[1]:.3g}]" if rng else ""
    clip = "" if r.get("clipped_share") is None else f"{r['clipped_share']:.2%}"
    kept = {True: "yes", False: "", None: ""}[r.get("kept_float")]
    return [grid, seen, clip, kept]


def table(report: dict[str, Any], top: int = TOP) -> Any:
    """A rich Table of the ``top`` worst layers of one artifact report."""
    from rich.markup import escape
    from rich.table import Table

    quantized = any(r.get("quant") for r in report["layers"]) or report.get("kept_float")
    t = Table(title=f"{report['format']} {report['precision']} vs PyTorch — worst {min(top, len(report['layers']))} "
              f"of {len(report['layers'])} layers", title_justify="left")
    cols = ["#", "module", "op", "match", "added SNR dB", "added max err", "output SNR dB", "output max err"]
    if quantized:
        cols += ["output grid", "PyTorch range", "clipped", "kept float"]
    for c in cols:
        t.add_column(c, justify="right" if c in ("#", "added SNR dB", "added max err", "output SNR dB",
                                                  "output max err", "clipped") else "left",
                     overflow="fold" if c == "module" else "ellipsis")
    first = report.get("first_divergent") or {}
    for i, r in enumerate(ranked(report["layers"])[:top], 1):
        style = "bold red" if (r["module"], r.get("call")) == (first.get("module"), first.get("call")) else \
            ("red" if r["diverges"] else None)
        cells = [str(i), escape(_module_cell(r)), escape(r["op"]), r["by"], _db(r["added"]), _err(r["added"]),
                 _db(r["output"]), _err(r["output"])]
        if quantized:
            cells += [escape(c) for c in _quant_cells(r)]
        t.add_row(*cells, style=style)
    return t


def coverage_line(report: dict[str, Any]) -> str:
    c = report.get("coverage")
    if not c:
        return ""
    share = f"{c['share']:.0%}" if c["share"] is not None else "—"
    return (f"coverage: {c['leaf_modules']} leaf modules — {c['compared']} compared at their own output, "
            f"{c['fused']} fused into a compared layer, {c['no_op']} no-op, {c['unmatched']} unmatched "
            f"({share} of the comparable ones)")


def lines(report: dict[str, Any], max_unmatched: int = 8) -> list[str]:
    """Plain text lines under a report's table: the first culprit, coverage, unmatched modules, notes."""
    out = [report["summary"]]
    cov = coverage_line(report)
    if cov:
        out.append(cov)
    um = [u for u in report.get("unmatched", []) if u["status"] != "no-op"]
    for u in um[:max_unmatched]:
        out.append(f"  not compared: {u['module']} ({u['class']}): {u['status']} — {u['why']}")
    if len(um) > max_unmatched:
        out.append(f"  … and {len(um) - max_unmatched} more not compared (see --json)")
    noop = [u for u in report.get("unmatched", []) if u["status"] == "no-op"]
    if noop:
        out.append(f"  no-op at inference (nothing to compare): {', '.join(u['module'] for u in noop[:6])}"
                   + (" …" if len(noop) > 6 else ""))
    f = report.get("feeding")
    if f and not f["available"] and report.get("layers"):
        out.append(f"  added error not measured: {f['why_not']}")
    if report.get("kept_float"):
        out.append(f"  kept in float by the accuracy search: {', '.join(report['kept_float'][:6])}"
                   + (" …" if len(report["kept_float"]) > 6 else ""))
    for n in dict.fromkeys(report.get("notes") or []):
        out.append(f"  note: {n}")
    return out


def print_result(result: Any, console: Any, top: int = TOP) -> None:
    from rich.markup import escape
    from rich.table import Table

    for rep in result.reports:
        if rep.get("outputs") is not None:
            t = Table(title=f"{rep['format']} {rep['precision']}: outputs vs the stored reference",
                      title_justify="left")
            for c in ("output", "SNR dB", "max abs err"):
                t.add_column(c, justify="left" if c == "output" else "right")
            for o in rep["outputs"]:
                t.add_row(escape(o["output"]), _db(o["metrics"]), _err(o["metrics"]))
            console.print(t)
        elif rep.get("layers"):
            console.print(table(rep, top))
        for i, line in enumerate(lines(rep)):
            color = "red" if i == 0 and (rep.get("first_divergent") or rep.get("error")) else None
            console.print(f"[{color}]{escape(line)}[/]" if color else escape(line))
        console.print("")


def culprit_lines(result: Any) -> list[str]:
    """One line per analysed artifact (``mobilize export`` prints these under its table): its first divergent
    layer, or — when no single layer crosses the threshold — the layer that adds the most error."""
    out = []
    for r in result.reports:
        if r.get("first_divergent") or r.get("error") or not r.get("layers"):
            out.append(r["summary"])
            continue
        w = ranked(r["layers"])[0]
        m = w["added"] if w["added"] is not None else w["output"]
        out.append(f"{r['format']} {r['precision']}: no single layer crosses {r['threshold_db']:g} dB; the worst, "
                   f"{describe_layer(w)}, {'adds' if w['added'] is not None else 'outputs at'} {_db(m)} dB SNR")
    return out


# --- HTML ---------------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:32px} h3{font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{background:#f5f5f7} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{color:#b00020} tr.first td{color:#b00020;font-weight:600;background:#fff0f0}
.summary{font-weight:600} .muted{color:#6e6e73;font-size:13px}
ul.tree{list-style:none;padding-left:18px;font-size:13px;margin:0} ul.tree li{margin:1px 0}
.badge{display:inline-block;border-radius:3px;padding:0 4px;margin-left:4px;font-size:12px;background:#eef}
.badge.bad{background:#b00020;color:white} .badge.worst{background:#ffe0b2} .badge.fused{background:#eee;color:#555}
.badge.none{background:#fff3cd}
"""


def chart_svg(result: Any) -> str:
    """Error per layer (added SNR, solid; output SNR, dotted) along PyTorch's execution order, one colour per
    artifact, as an SVG string (empty when nothing was compared per layer)."""
    reports = [r for r in result.reports if r.get("layers")]
    if not reports:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, rep in enumerate(reports):
        c = colors[i % len(colors)]
        rows = sorted(rep["layers"], key=lambda r: r["order"])
        xs = [r["order"] for r in rows]
        label = f"{rep['format']} {rep['precision']}"
        if any(r["added"] is not None for r in rows):
            ax.plot(xs, [_clip(score(r["added"])) for r in rows], "-", color=c, lw=1.4, marker=".", ms=4,
                    label=f"{label}: added")
        ax.plot(xs, [_clip(score(r["output"])) for r in rows], ":", color=c, lw=1.0, label=f"{label}: output")
        ax.axhline(rep["threshold_db"], color=c, lw=0.6, ls="--", alpha=0.5)
        fd = rep.get("first_divergent")
        if fd:
            r = next(r for r in rows if r["module"] == fd["module"] and r.get("call") == fd.get("call"))
            ax.annotate(fd["module"], (r["order"], _clip(score(r["added"] or r["output"]))), fontsize=8, color=c,
                        xytext=(4, -12 - 10 * i), textcoords="offset points")
    ax.set_xlabel("layer (PyTorch execution order)")
    ax.set_ylabel("SNR vs PyTorch (dB, higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower left")
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):] if "<svg" in svg else svg


def _clip(v: float) -> float:
    return max(-20.0, min(v, 160.0)) if math.isfinite(v) else -20.0


def _tree(result: Any) -> str:
    reports = [r for r in result.reports if r.get("layers") is not None and r.get("coverage")]
    if not reports:
        return ""
    classes: dict[str, str] = dict(getattr(result, "modules", {}) or {})
    cell: dict[str, dict[int, tuple[float, str, str]]] = {}  # path → file → (rank score, text, css class)

    def put(path: str, k: int, value: tuple[float, str, str]) -> None:
        have = cell.setdefault(path, {}).get(k)
        if have is None or value[0] < have[0]:  # several rows on one module (its own ops): show the worst
            cell[path][k] = value

    for k, rep in enumerate(reports):
        worst = {id(r) for r in ranked(rep["layers"])[:5]}
        for r in rep["layers"]:
            kind = "bad" if r["diverges"] else ("worst" if id(r) in worst else "")
            m = r["added"] if r["added"] is not None else r["output"]
            sc = score(m)
            op = f" ({r['torch_op']})" if r.get("torch_op") else ""
            for g in r["group"]:
                if g["module"] == r["module"] or g["module"] == r.get("compared_at"):
                    put(g["module"], k, (sc, f"{_db(m)} dB{op}", kind))
                else:
                    put(g["module"], k, (sc + 1e-3, f"fused into {r['module']}", "fused"))
                classes.setdefault(g["module"], g["class"])
        for u in rep.get("unmatched", []):
            put(u["module"], k, (math.inf, u["status"], "none"))
            classes.setdefault(u["module"], u["class"])
    paths = sorted(cell, key=lambda p: [int(x) if x.isdigit() else x for x in p.split(".")])
    tree: dict[str, Any] = {}
    for p in paths:
        node = tree
        for part in p.split(".") if p else [""]:
            node = node.setdefault(part, {})
    labels = [f"{r['format']} {r['precision']}" for r in reports]

    def render(node: dict[str, Any], prefix: str) -> str:
        items = []
        for name, sub in node.items():
            path = f"{prefix}.{name}" if prefix else name
            badges = ""
            for k, lab in enumerate(labels):
                if k in cell.get(path, {}):
                    _, text, kind = cell[path][k]
                    badges += f'<span class="badge {kind}">{html.escape(lab)}: {html.escape(text)}</span>'
            cls = classes.get(path, "")
            items.append(f"<li><b>{html.escape(name or '(root)')}</b> <span class='muted'>{html.escape(cls)}</span>"
                         f"{badges}{render(sub, path) if sub else ''}</li>")
        return f"<ul class='tree'>{''.join(items)}</ul>"

    return render(tree, "")


def _html_table(rep: dict[str, Any], top: int) -> str:
    quantized = any(r.get("quant") for r in rep["layers"])
    head = ["#", "module", "op", "match", "added SNR dB", "added max err", "output SNR dB", "output max err"]
    head += ["output grid", "PyTorch range", "clipped", "kept float"] if quantized else []
    first = rep.get("first_divergent") or {}
    rows = []
    for i, r in enumerate(ranked(rep["layers"])[:top], 1):
        cls = "first" if (r["module"], r.get("call")) == (first.get("module"), first.get("call")) else \
            ("bad" if r["diverges"] else "")
        cells = [str(i), _module_cell(r), r["op"], r["by"], _db(r["added"]), _err(r["added"]), _db(r["output"]),
                 _err(r["output"])] + (_quant_cells(r) if quantized else [])
        tds = "".join(f"<td class='{'num' if j in (0, 4, 5, 6, 7) else ''}'>{html.escape(c)}</td>"
                      for j, c in enumerate(cells))
        rows.append(f"<tr class='{cls}'>{tds}</tr>")
    ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><tr>{ths}</tr>{''.join(rows)}</table>"


def render_html(result: Any, top: int = TOP) -> str:
    parts = [f"<h1>mobilize diff — {html.escape(str(result.bundle))}</h1>"]
    inputs = result.inputs or {}
    parts.append(f"<p class='muted'>model: {html.escape(result.source or 'not given (outputs only)')}; inputs: "
                 f"{html.escape(str(inputs.get('source', '')))}, {inputs.get('samples', '?')} sample(s)</p>")
    svg = chart_svg(result)
    if svg:
        parts.append("<h2>Error per layer along the network</h2><p class='muted'>solid: the error a layer adds when "
                     "fed PyTorch's own input; dotted: the error of its output with everything before it; dashed: "
                     "each artifact's threshold.</p>" + svg)
    for rep in result.reports:
        parts.append(f"<h2>{html.escape(rep['format'])} {html.escape(rep['precision'])}</h2>")
        for k, line in enumerate(lines(rep)):
            parts.append(f"<p class='{'summary' if k == 0 else 'muted'}'>{html.escape(line)}</p>")
        if rep.get("layers"):
            parts.append(_html_table(rep, top))
        if rep.get("outputs"):
            rows = "".join(f"<tr><td>{html.escape(o['output'])}</td><td class='num'>{_db(o['metrics'])}</td>"
                           f"<td class='num'>{_err(o['metrics'])}</td></tr>" for o in rep["outputs"])
            parts.append(f"<table><tr><th>output</th><th>SNR dB</th><th>max abs err</th></tr>{rows}</table>")
    tree = _tree(result)
    if tree:
        parts.append("<h2>Module tree</h2><p class='muted'>per file: the SNR of what the module adds (or of its "
                     "output where it could not be fed); red: below the file's threshold; orange: the file's five "
                     "worst.</p>" + tree)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>mobilize diff</title><style>{_CSS}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def write_html(result: Any, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "diff.html"
    tmp = folder / ".diff.html.tmp"
    tmp.write_text(render_html(result))
    tmp.replace(path)
    return path
