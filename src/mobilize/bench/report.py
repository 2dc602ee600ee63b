"""Reports of a bench record: a rich terminal table, ``report.md`` (fits a PR comment) and ``report.html`` (one
self-contained page: inline CSS and hand-drawn inline SVG charts, no scripts, no network)."""

from __future__ import annotations

import html as _html
import math
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


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (1-2-5 steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 0.5:
        ticks.append(round(v, 10))
        v += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade covering [lo, hi] (both > 0)."""
    lo, hi = max(lo, 1e-9), max(hi, lo * 10)
    ticks = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            ticks.append(m * 10.0**k)
    first = max(i for i, t in enumerate(ticks) if t <= lo)
    last = min(i for i, t in enumerate(ticks) if t >= hi)
    return [float(f"{t:.6g}") for t in ticks[first : last + 1]]


def _marker(shape: str, x: float, y: float, color: str, r: float = 6, hollow: bool = False) -> str:
    fill = "white" if hollow else color
    if shape == "square":
        return (
            f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" fill="{fill}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
    if shape == "triangle":
        pts = f"{x:.1f},{y - r * 1.2:.1f} {x - r * 1.1:.1f},{y + r * 0.8:.1f} {x + r * 1.1:.1f},{y + r * 0.8:.1f}"
        return f'<polygon points="{pts}" fill="{fill}" stroke="{color}" stroke-width="2"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{fill}" stroke="{color}" stroke-width="2"/>'


_SHAPES = {"fp32": "circle", "fp16": "square"}


def _shape(precision: str) -> str:
    return _SHAPES.get(precision, "triangle")


def scatter_svg(data: dict[str, Any], width: int = 640, height: int = 380) -> str:
    """Latency p50 (y) against size on disk (x), one marker per artifact × thread count; PyTorch eager as dashed
    lines (it has no file)."""
    pts = [r for r in data["results"] if r["status"] == "ok" and r.get("bytes") and _lat(r, "p50")]
    base = [r for r in data["results"] if r["format"] == "pytorch" and _lat(r, "p50")]
    ml, mr, mt, mb = 64, 150, 20, 46
    pw, ph = width - ml - mr, height - mt - mb
    parts = [
        f'<svg class="chart" role="img" aria-label="latency versus size" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}">'
    ]
    if not pts:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="muted">no artifact could be '
            "timed on this machine</text></svg>"
        )
        return "".join(parts)
    xs = [r["bytes"] / 1e6 for r in pts]
    ys = [_lat(r, "p50") for r in pts] + [_lat(r, "p50") for r in base]
    xt = nice_ticks(0, max(xs) * 1.1)
    x_hi = xt[-1]
    log_y = max(ys) / max(min(ys), 1e-9) > 20  # spans more than ~1.3 decades: log axis so every point is readable
    if log_y:
        yt = log_ticks(min(ys) / 1.3, max(ys) * 1.3)
        y_lo, y_hi = math.log10(yt[0]), math.log10(yt[-1])
    else:
        yt = nice_ticks(0, max(ys) * 1.1)
        y_lo, y_hi = 0.0, yt[-1]

    def sx(v: float) -> float:
        return ml + pw * v / x_hi

    def sy(v: float) -> float:
        v = math.log10(max(v, 1e-12)) if log_y else v
        return mt + ph - ph * (v - y_lo) / (y_hi - y_lo)

    for t in xt:
        parts.append(
            f'<line x1="{sx(t):.1f}" y1="{mt}" x2="{sx(t):.1f}" y2="{mt + ph}" class="grid"/>'
            f'<text x="{sx(t):.1f}" y="{mt + ph + 16}" text-anchor="middle" class="tick">{t:g}</text>'
        )
    for t in yt:
        parts.append(
            f'<line x1="{ml}" y1="{sy(t):.1f}" x2="{ml + pw}" y2="{sy(t):.1f}" class="grid"/>'
            f'<text x="{ml - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" class="tick">{t:g}</text>'
        )
    parts.append(
        f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle" class="axis">size on disk (MB)</text>'
        f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 14 {mt + ph / 2})">latency p50 (ms{", log scale" if log_y else ""})</text>'
    )
    threads = sorted({r["threads"] for r in pts})
    for r in base:
        y = sy(_lat(r, "p50"))
        dash = "6 4" if r["threads"] == threads[0] else "2 3"
        parts.append(
            f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="{FORMAT_COLORS["pytorch"]}" '
            f'stroke-dasharray="{dash}"/><text x="{ml + pw - 4}" y="{y - 4:.1f}" text-anchor="end" '
            f'class="tick">PyTorch eager ×{r["threads"]}</text>'
        )
    for r in pts:
        hollow = r["threads"] != threads[0]
        x, y = sx(r["bytes"] / 1e6), sy(_lat(r, "p50"))
        parts.append(
            f"<g><title>{_e(r['format'])} {_e(r['precision'])} ×{r['threads']}: p50 "
            f"{fmt_ms(_lat(r, 'p50'))} ms, {fmt_bytes(r['bytes'])}</title>"
            + _marker(_shape(r["precision"]), x, y, _color(r["format"]), hollow=hollow)
            + "</g>"
        )
    # legend
    lx, ly = ml + pw + 16, mt + 8
    fmts = list(dict.fromkeys(r["format"] for r in pts))
    precs = list(dict.fromkeys(r["precision"] for r in pts))
    for f in fmts:
        parts.append(
            _marker("circle", lx + 6, ly, _color(f)) + f'<text x="{lx + 18}" y="{ly + 4}" class="tick">{_e(f)}</text>'
        )
        ly += 20
    ly += 6
    for p in precs:
        parts.append(
            _marker(_shape(p), lx + 6, ly, "#374151") + f'<text x="{lx + 18}" y="{ly + 4}" class="tick">{_e(p)}</text>'
        )
        ly += 20
    ly += 6
    for i, t in enumerate(threads):
        parts.append(
            _marker("circle", lx + 6, ly, "#374151", hollow=i > 0) + f'<text x="{lx + 18}" y="{ly + 4}" '
            f'class="tick">{t} thread{"s" if t > 1 else ""}</text>'
        )
        ly += 20
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(data: dict[str, Any], width: int = 640) -> str:
    """Horizontal bars: latency p50 per format × precision, one bar per thread count, a whisker to p90."""
    rows = [r for r in data["results"] if _lat(r, "p50")]
    groups = list(dict.fromkeys((r["format"], r["precision"]) for r in data["results"]))
    threads = sorted({r["threads"] for r in data["results"]})
    bar_h, gap, ml, mr, mt = 14, 12, 130, 70, 24
    height = mt + len(groups) * (len(threads) * (bar_h + 3) + gap) + 30
    parts = [
        f'<svg class="chart" role="img" aria-label="latency per format and precision" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
    ]
    files = [r for r in rows if r["format"] != "pytorch"] or rows
    hi = max((_lat(r, "p90") or 0 for r in files), default=1.0) or 1.0
    ticks = nice_ticks(0, hi * 1.05)
    pw = width - ml - mr

    def sx(v: float) -> float:  # bars beyond the axis (a slow baseline) are clipped and marked ▸
        return ml + pw * min(v, ticks[-1] * 1.04) / ticks[-1]

    for t in ticks:
        parts.append(
            f'<line x1="{sx(t):.1f}" y1="{mt - 6}" x2="{sx(t):.1f}" y2="{height - 26}" class="grid"/>'
            f'<text x="{sx(t):.1f}" y="{height - 12}" text-anchor="middle" class="tick">{t:g}</text>'
        )
    parts.append(
        f'<text x="{ml}" y="14" class="axis">latency p50 (ms), whisker to p90; lighter bar = more threads</text>'
    )
    y = mt
    for fmt, prec in groups:
        parts.append(
            f'<text x="{ml - 8}" y="{y + (len(threads) * (bar_h + 3)) / 2 + 2:.1f}" text-anchor="end" '
            f'class="label">{_e(fmt)} {_e(prec)}</text>'
        )
        for i, t in enumerate(threads):
            r = next(
                (r for r in data["results"] if (r["format"], r["precision"], r["threads"]) == (fmt, prec, t)), None
            )
            p50, p90 = (_lat(r, "p50"), _lat(r, "p90")) if r else (None, None)
            opacity = 1.0 - 0.45 * i / max(len(threads) - 1, 1)
            if p50:
                parts.append(
                    f"<g><title>{_e(fmt)} {_e(prec)} ×{t}: p50 {fmt_ms(p50)} ms, p90 {fmt_ms(p90)} ms"
                    f'</title><rect x="{ml}" y="{y}" width="{max(sx(p50) - ml, 1):.1f}" height="{bar_h}" '
                    f'fill="{_color(fmt)}" fill-opacity="{opacity:.2f}"/>'
                    f'<line x1="{sx(p50):.1f}" y1="{y + bar_h / 2}" x2="{sx(p90 or p50):.1f}" '
                    f'y2="{y + bar_h / 2}" stroke="#111827" stroke-width="1.5"/>'
                    f'<line x1="{sx(p90 or p50):.1f}" y1="{y + 3}" x2="{sx(p90 or p50):.1f}" '
                    f'y2="{y + bar_h - 3}" stroke="#111827" stroke-width="1.5"/>'
                    + (
                        f'<text x="{sx(p50) - 4:.1f}" y="{y + bar_h - 3}" text-anchor="end" class="tick" '
                        f'style="fill:white;font-weight:600">{fmt_ms(p50)} ms ×{t} ▸ off scale</text></g>'
                        if p50 > ticks[-1]
                        else f'<text x="{sx(p90 or p50) + 5:.1f}" y="{y + bar_h - 3}" class="tick">{fmt_ms(p50)} '
                        f"×{t}</text></g>"
                    )
                )
            else:
                why = _status_cell(r) if r else "not run"
                parts.append(f'<text x="{ml + 4}" y="{y + bar_h - 3}" class="muted">×{t}: {_e(why)}</text>')
            y += bar_h + 3
        y += gap
    parts.append("</svg>")
    return "".join(parts)


def size_parity_svg(data: dict[str, Any], width: int = 640) -> str:
    """Per artifact: size on disk (bar, coloured by parity status), zipped size (inner bar), parameter-byte floor
    (tick)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in data["results"]:
        if r["format"] != "pytorch":
            seen.setdefault((r["format"], r["precision"]), r)
    arts = list(seen.values())
    bar_h, gap, ml, mr, mt = 18, 10, 130, 170, 24
    height = mt + len(arts) * (bar_h + gap) + 58
    parts = [
        f'<svg class="chart" role="img" aria-label="size and parity per artifact" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
    ]
    hi = max((r.get("bytes") or 0 for r in arts), default=0) / 1e6 or 1.0
    ticks = nice_ticks(0, hi * 1.05)
    pw = width - ml - mr

    def sx(v: float) -> float:
        return ml + pw * v / ticks[-1]

    for t in ticks:
        parts.append(
            f'<line x1="{sx(t):.1f}" y1="{mt - 6}" x2="{sx(t):.1f}" y2="{height - 54}" class="grid"/>'
            f'<text x="{sx(t):.1f}" y="{height - 40}" text-anchor="middle" class="tick">{t:g}</text>'
        )
    parts.append(
        f'<text x="{ml}" y="14" class="axis">MB on disk (bar, coloured by parity), zipped (inner bar), '
        "parameter floor (tick)</text>"
    )
    y = mt
    for r in arts:
        parity = r.get("parity")
        color = PARITY_COLORS.get(parity, PARITY_COLORS[None])
        parts.append(
            f'<text x="{ml - 8}" y="{y + bar_h - 4}" text-anchor="end" class="label">{_e(r["format"])} '
            f"{_e(r['precision'])}</text>"
        )
        if r.get("bytes"):
            mb = r["bytes"] / 1e6
            zmb = (r.get("zipped_bytes") or 0) / 1e6
            parts.append(
                f"<g><title>{_e(r['format'])} {_e(r['precision'])}: {fmt_bytes(r['bytes'])} on disk, "
                f"{fmt_bytes(r.get('zipped_bytes'))} zipped, parity {_e(parity or 'not checked')}</title>"
                f'<rect x="{ml}" y="{y}" width="{max(sx(mb) - ml, 1):.1f}" height="{bar_h}" fill="{color}" '
                f'fill-opacity="0.35" stroke="{color}"/>'
                f'<rect x="{ml}" y="{y + 5}" width="{max(sx(zmb) - ml, 1):.1f}" height="{bar_h - 10}" '
                f'fill="{color}"/></g>'
            )
            if r.get("floor_bytes"):
                fx = sx(r["floor_bytes"] / 1e6)
                parts.append(
                    f'<line x1="{fx:.1f}" y1="{y - 2}" x2="{fx:.1f}" y2="{y + bar_h + 2}" stroke="#111827" '
                    'stroke-width="2"/>'
                )
            parts.append(
                f'<text x="{sx(mb) + 6:.1f}" y="{y + bar_h - 4}" class="tick">{fmt_bytes(r["bytes"])} · '
                f"parity {_e(parity or '—')}</text>"
            )
        else:
            parts.append(f'<text x="{ml + 4}" y="{y + bar_h - 4}" class="muted">{_e(_status_cell(r))}</text>')
        y += bar_h + gap
    legend = (
        ("pass", PARITY_COLORS["pass"]),
        ("fail", PARITY_COLORS["fail"]),
        ("unverified", PARITY_COLORS["unverified"]),
        ("not checked", PARITY_COLORS[None]),
    )
    for i, (name, col) in enumerate(legend):
        lx = ml + i * 130
        parts.append(
            f'<rect x="{lx}" y="{height - 20}" width="12" height="12" fill="{col}"/>'
            f'<text x="{lx + 18}" y="{height - 10}" class="tick">parity {name}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


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
    charts = [
        '<div class="charts">',
        f'<div class="card"><h2>Latency vs size</h2>{scatter_svg(data)}</div>',
        f'<div class="card"><h2>Latency per format × precision</h2>{bars_svg(data)}</div>',
        f'<div class="card"><h2>Size and parity</h2>{size_parity_svg(data)}</div>',
        "</div>",
    ]
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
