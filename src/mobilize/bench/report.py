"""Reports of a bench record: a rich terminal table, ``report.md`` (fits a PR comment) and ``report.html`` (one
self-contained page: inline CSS and matplotlib's SVG charts inlined (:mod:`mobilize.bench.charts`), no scripts, no
network)."""

from __future__ import annotations

import html as _html
from typing import Any

FORMAT_COLORS = {"pytorch": "#6b7280", "onnx": "#2563eb", "tflite": "#ea580c", "coreml": "#16a34a",
                 "ort": "#7c3aed"}
PARITY_COLORS = {"pass": "#16a34a", "fail": "#dc2626", "unverified": "#ca8a04", None: "#9ca3af"}
_EXTRA_COLORS = ("#7c3aed", "#0891b2", "#be185d", "#65a30d")


# --- formatting helpers -------------------------------------------------------------------------------------------


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1e3:.1f} KB"
    if n < 1_000_000_000:
        return f"{n / 1e6:.2f} MB"
    return f"{n / 1e9:.2f} GB"


def fmt_num(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def fmt_macs(v: int | None) -> str:
    if not v:
        return "—"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if v >= div:
            return f"{v / div:.2f} {unit}"
    return str(v)


def _lat(row: dict[str, Any], key: str) -> float | None:
    return (row.get("latency_ms") or {}).get(key)


def _cv(row: dict[str, Any]) -> str:
    cv = _lat(row, "cv")
    if cv is None:
        return "—"
    return f"{cv * 100:.1f}%" + ("⚠" if row.get("noisy") else "")


def _status_cell(row: dict[str, Any]) -> str:
    return {
        "ok": "",
        "not_measurable": "not measurable here",
        "failed": "export failed",
        "error": "could not run",
        "missing": "baseline missing",
    }.get(row["status"] or "", row["status"] or "")


def notes(data: dict[str, Any]) -> list[str]:
    """One plain sentence per thing a reader must know: unmeasured rows, noisy rows, memory errors, budget misses."""
    out: list[str] = []
    seen: set[str] = set()

    def add(text: str) -> None:
        if text not in seen:
            seen.add(text)
            out.append(text)

    for r in data["results"]:
        label = f"{r['format']} {r['precision']}"
        if r["status"] in ("not_measurable", "failed", "error", "missing") and r.get("reason"):
            add(f"{label}: {r['reason']}")
        if r.get("noisy"):
            add(
                f"{label} ×{r['threads']}: noisy (CV {_lat(r, 'cv') * 100:.1f}% > "
                f"{data['settings']['cv_threshold'] * 100:.0f}% even after re-measuring); treat with care"
            )
        if r.get("memory_error"):
            add(f"{label} ×{r['threads']}: memory not measured ({r['memory_error']})")
    b = data.get("budget")
    if b:
        for a in b["artifacts"]:
            for c in a["checks"]:
                if c["ok"] is False:
                    where = f" at {c['threads']} thread(s)" if c["threads"] else ""
                    value = c["value"]
                    add(f"budget: {a['format']} {a['precision']} {c['key']} = {value:.4g} > {c['limit']:g}{where}")
    return out


PLACEMENT_NOTE = ("where the ops would run on a phone: static analysis with the runtimes' own tools at export "
                  "(mobilize inspect), not a device measurement")


def placements(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(format, precision, placement summary) per artifact, beside the latency rows."""
    out, seen = [], set()
    for r in data["results"]:
        key = (r["format"], r["precision"])
        if r.get("placement") and key not in seen:
            seen.add(key)
            out.append((*key, r["placement"]))
    return out


def _table_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in data["results"]:
        rows.append(
            [
                r["format"],
                r["precision"],
                str(r["threads"]),
                fmt_ms(_lat(r, "p50")),
                fmt_ms(_lat(r, "p90")),
                fmt_ms(_lat(r, "p99")),
                _cv(r),
                fmt_ms(r.get("load_ms")),
                fmt_ms(r.get("first_inference_ms")),
                fmt_num(r.get("peak_rss_mb"), ".0f"),
                fmt_bytes(r.get("bytes")),
                fmt_bytes(r.get("zipped_bytes")),
                fmt_num(r.get("floor_ratio"), ".2f", "×"),
                fmt_num(r.get("gmacs_per_s"), ".2f"),
                fmt_num(None if r.get("peak_share") is None else r["peak_share"] * 100, ".1f", "%"),
                fmt_num(r.get("latency_vs_pytorch"), ".2f", "×"),
                r.get("parity") or "—",
                r.get("budget") or "",
                _status_cell(r),
            ]
        )
    return rows


HEADERS = [
    "format",
    "prec",
    "thr",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "CV",
    "load ms",
    "1st ms",
    "RSS MB",
    "size",
    "zipped",
    "/floor",
    "GMAC/s",
    "peak",
    "p50 ÷ torch",
    "parity",
    "budget",
    "status",
]


def machine_line(data: dict[str, Any]) -> str:
    m = data["machine"]
    v = m["versions"]
    peaks = ", ".join(f"{k} thr {p} GMAC/s" for k, p in m.get("peak_gmacs", {}).items() if p)
    return (
        f"{m['cpu']} ({m['cores_usable']} usable of {m['cores_logical']} logical cores), {m['os']}, "
        f"Python {m['python']}, torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, "
        f"ai-edge-litert {v.get('ai-edge-litert')}; load average {m.get('load_avg')}; measured matmul peak: "
        f"{peaks or 'n/a'}"
    )


# --- terminal -----------------------------------------------------------------------------------------------------


def print_table(data: dict[str, Any], console: Any) -> None:
    """Two compact tables (timing per artifact × threads; size per artifact), then notes and the machine."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    colors = {"pass": "green", "fail": "red", "unverified": "yellow", "unknown": "yellow"}

    def cell(c: str) -> str:
        return f"[{colors[c]}]{c}[/]" if c in colors else escape(c)

    m = data["model"]
    title = f"mobilize bench {data['bundle']} — {m['name']}, {fmt_macs(m['macs'])}MAC/inference (CPU, not device)"
    timing = Table(title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False)
    cols = [
        "format",
        "prec",
        "thr",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "CV",
        "load ms",
        "1st ms",
        "RSS MB",
        "GMAC/s",
        "peak",
        "p50 ÷ torch",
        "budget",
    ]
    if not data.get("budget"):
        cols.remove("budget")
    timing.caption = ("n/a = not measurable here (see notes); CV flagged ⚠ above the noise threshold; "
                      "p50 ÷ torch: this file's latency over PyTorch eager's (< 1× is faster)")
    for h in cols:
        timing.add_column(
            h,
            justify="left" if h in ("format", "prec", "budget") else "right",
            no_wrap=True,
            min_width=7 if h == "budget" else None,
        )
    for r, cells in zip(data["results"], _table_rows(data)):
        row = dict(zip(HEADERS, cells))
        out = [cell(row[h]) for h in cols]
        if r["status"] != "ok":
            short = {"not_measurable": "n/a", "failed": "failed", "error": "error", "missing": "missing"}
            budget_cell = [out[-1]] if "budget" in cols else []
            blanks = [""] * (len(cols) - 4 - len(budget_cell))
            out = [*out[:3], f"[dim]{short.get(r['status'], '—')}[/]", *blanks, *budget_cell]
        timing.add_row(*out)
    console.print(timing)
    sizes = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    scols = ["format", "prec", "size", "zipped", "/floor", "parity"]
    for h in scols:
        sizes.add_column(h, justify="left" if h in ("format", "prec", "parity") else "right", no_wrap=True)
    seen = set()
    for r, cells in zip(data["results"], _table_rows(data)):
        if r["format"] == "pytorch" or (r["format"], r["precision"]) in seen:
            continue
        seen.add((r["format"], r["precision"]))
        row = dict(zip(HEADERS, cells))
        sizes.add_row(*[cell(row[h]) for h in scols])
    console.print(sizes)
    for fmt, prec, text in placements(data):
        console.print(f"  [cyan]placement[/] {escape(fmt)} {escape(prec)}: {escape(text)}")
    for line in notes(data):
        console.print(f"  [yellow]•[/] {escape(line)}")
    console.print(f"[dim]machine: {escape(machine_line(data))}[/]")
    b = data.get("budget")
    if b:
        color = colors.get(b["status"], "white")
        console.print(
            f"budget [{color}]{b['status']}[/] "
            f"({', '.join(f'{k}={v:g}' for k, v in b['limits'].items())}"
            + (f", threads={b['threads']}" if b["threads"] else "")
            + ")"
        )


# --- Markdown -----------------------------------------------------------------------------------------------------


def markdown(data: dict[str, Any]) -> str:
    """A compact Markdown report for a pull-request comment."""
    m = data["model"]
    s = data["settings"]
    lines = [
        f"### mobilize bench — {m['name']}",
        "",
        f"`{m['source']}` · {fmt_num(m['parameters'], ',d') if m['parameters'] else '—'} parameters · "
        f"{fmt_macs(m['macs'])}MAC per inference · input {s['input_shapes']}",
        "",
    ]
    b = data.get("budget")
    if b:
        icon = {"pass": "✅", "fail": "❌", "unknown": "❔"}[b["status"]]
        limits = ", ".join(f"{k}={v:g}" for k, v in b["limits"].items())
        lines += [
            f"**Budget {icon} {b['status']}** ({limits}" + (f", threads={b['threads']}" if b["threads"] else "") + ")",
            "",
        ]
    heads = [h for h in HEADERS if h != "status"]
    lines.append("| " + " | ".join(heads) + " |")
    lines.append("|" + "|".join("---" if h in ("format", "prec", "parity", "budget") else "---:" for h in heads) + "|")
    for r, cells in zip(data["results"], _table_rows(data)):
        cells = cells[:-1]
        if r["status"] != "ok":
            cells[3] = f"*{_status_cell(r)}*"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    placed = placements(data)
    if placed:
        lines += [f"**Placement** — {PLACEMENT_NOTE}", ""]
        lines += [f"- {fmt} {prec}: {text}" for fmt, prec, text in placed]
        lines.append("")
    for n in notes(data):
        lines.append(f"- {n}")
    lines += [
        "",
        f"<sub>CPU latency on the machine below, not device latency. p50/p90/p99 over ≥{s['min_runs']} runs "
        f"and ≥{s['min_seconds']:g} s per row (formats interleaved); RSS = peak resident set of a subprocess "
        f"that loads and runs the file; size zipped = zip -9; /floor = bytes ÷ (parameters × bits/8); peak = "
        f"share of this CPU's measured float32 matmul rate. Machine: {machine_line(data)}. "
        f"{data['created']}.</sub>",
        "",
    ]
    return "\n".join(lines)


# --- HTML + SVG ---------------------------------------------------------------------------------------------------


def _e(text: Any) -> str:
    return _html.escape(str(text), quote=True)


def _color(fmt: str) -> str:
    if fmt in FORMAT_COLORS:
        return FORMAT_COLORS[fmt]
    return _EXTRA_COLORS[sum(map(ord, fmt)) % len(_EXTRA_COLORS)]


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;margin:24px;max-width:1400px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.muted{fill:#6b7280;color:#6b7280;font-size:12px} .sub{color:#4b5563;margin:2px 0}
.charts{display:flex;flex-wrap:wrap;gap:18px} .card{border:1px solid #e5e7eb;border-radius:8px;padding:10px}
svg.chart{font-family:inherit} .grid{stroke:#e5e7eb} .tick{font-size:11px;fill:#374151}
.axis{font-size:12px;fill:#111827} .label{font-size:12px;fill:#111827}
table{border-collapse:collapse;font-size:12.5px;margin-top:6px} th,td{padding:4px 7px;border-bottom:1px solid #e5e7eb}
th{background:#f9fafb;text-align:right;position:sticky;top:0} td{text-align:right;white-space:nowrap}
td.l,th.l{text-align:left} .pass{color:#15803d;font-weight:600} .fail{color:#b91c1c;font-weight:600}
.unverified,.unknown{color:#a16207;font-weight:600} ul.notes li{margin:2px 0} code{background:#f3f4f6;padding:0 3px}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;color:white;font-weight:600}
"""


def html(data: dict[str, Any]) -> str:
    """One self-contained page (inline CSS + SVG, no scripts, no external references)."""
    m = data["model"]
    s = data["settings"]
    head = [
        f"<h1>mobilize bench — {_e(m['name'])}</h1>",
        f'<p class="sub"><code>{_e(m["source"])}</code> · '
        f"{_e(fmt_num(m['parameters'], ',d') if m['parameters'] else '—')} parameters · "
        f"{_e(fmt_macs(m['macs']))}MAC per inference · input {_e(s['input_shapes'])} · {_e(data['created'])}</p>",
        f'<p class="sub">{_e(machine_line(data))}</p>',
    ]
    b = data.get("budget")
    if b:
        col = {"pass": PARITY_COLORS["pass"], "fail": PARITY_COLORS["fail"]}.get(
            b["status"], PARITY_COLORS["unverified"]
        )
        limits = ", ".join(f"{k}={v:g}" for k, v in b["limits"].items()) + (
            f", threads={b['threads']}" if b["threads"] else ""
        )
        head.append(
            f'<p>Budget <span class="badge" style="background:{col}">{_e(b["status"])}</span> '
            f"<code>{_e(limits)}</code></p>"
        )
    from mobilize.bench.charts import charts_html

    charts = ['<div class="charts">',
              *(f'<div class="card"><h2>{_e(title)}</h2>{chart}</div>' for title, chart in charts_html(data)),
              "</div>"]
    left = {"format", "prec", "parity", "budget", "status"}
    table = [
        "<h2>All figures</h2><table><thead><tr>"
        + "".join(f'<th class="{"l" if h in left else ""}">{_e(h)}</th>' for h in HEADERS)
        + "</tr></thead><tbody>"
    ]
    for cells in _table_rows(data):
        tds = []
        for h, c in zip(HEADERS, cells):
            cls = ("l " if h in left else "") + (c if c in ("pass", "fail", "unverified", "unknown") else "")
            tds.append(f'<td class="{cls.strip()}">{_e(c)}</td>')
        table.append("<tr>" + "".join(tds) + "</tr>")
    table.append("</tbody></table>")
    note_items = "".join(f"<li>{_e(n)}</li>" for n in notes(data))
    placed = "".join(f"<li><b>{_e(f)} {_e(p)}</b>: {_e(t)}</li>" for f, p, t in placements(data))
    if placed:
        table.append(f'<h2>Placement</h2><p class="muted">{_e(PLACEMENT_NOTE)}</p><ul class="notes">{placed}</ul>')
    foot = [
        f'<h2>Notes</h2><ul class="notes">{note_items or "<li>none</li>"}</ul>',
        f'<p class="muted">CPU latency on this machine, not device latency. Each row: untimed warm-up '
        f"(≥{s['warmup_runs']} runs and ≥{s['warmup_seconds']:g} s), then ≥{s['min_runs']} timed runs and "
        f"≥{s['min_seconds']:g} s in {s['rounds']} interleaved blocks; CV above {s['cv_threshold'] * 100:.0f}% is "
        "re-measured once and flagged ⚠. RSS MB = peak resident set of a subprocess that loads and runs the "
        "file (interpreter and runtime included). /floor = bytes ÷ (parameters × bits/8). peak = achieved "
        "GMAC/s ÷ this CPU's measured float32 matmul rate at the same thread count.</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>mobilize bench — {_e(m['name'])}</title><style>{_CSS}</style></head><body>"
        + "".join(head + charts + table + foot)
        + "</body></html>\n"
    )
