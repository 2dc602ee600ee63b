"""The summaries of a check: Markdown (``summary.md``, ``--summary FILE``, appended to ``$GITHUB_STEP_SUMMARY`` in
GitHub Actions) and HTML (``summary.html`` next to it in the output folder).

Both hold a status line, one table row per artifact, the "vs baseline" figures (each with its change and the limit
that would fail), every failure with its numbers, and the notes. The HTML page adds the baseline comparison chart
(:mod:`mobilize.check.charts`: matplotlib's SVG inlined, no scripts, no network); GitHub's step summary does not
render inline SVG, so the Markdown links the page instead.
"""

from __future__ import annotations

import html as _html
from typing import Any

ICONS = {"pass": "✅", "fail": "❌", "skip": "⏭️"}
WORDS = {"pass": "pass", "fail": "FAIL", "skip": "skip"}  # the HTML page's (a browser may lack an emoji font)
HTML_NAME = "summary.html"
ARTIFACT_HEADERS = ["artifact", "size", "parity", "max abs err", "SNR dB", "latency ÷ PyTorch eager (< 1× faster)",
                    "vs baseline", "checks"]
COMPARISON_HEADERS = ["artifact", "figure", "baseline", "this run", "Δ", "Δ %", "fails if", "verdict"]
LATENCY_NOTE = ("latency: p50 on this runner's CPU, divided by PyTorch eager timed in the same run (so a slower "
                "runner does not fail the check)")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _bytes(n: int | float | None) -> str:
    from mobilize.bench.report import fmt_bytes

    return fmt_bytes(round(n)) if n is not None else "—"


def _size(a: dict[str, Any]) -> str:
    return _bytes(a["bytes"])


def _parity(a: dict[str, Any]) -> tuple[str, str, str]:
    p = a["parity"] or {}
    mae = f"{p['max_abs_error']:.2e}" if p.get("max_abs_error") is not None else "—"
    snr = f"{p['snr_db']:.1f}" if p.get("snr_db") is not None else "—"
    return p.get("status") or "—", mae, snr


def _latency(a: dict[str, Any]) -> str:
    lat = a["latency"] or {}
    if lat.get("ratio_to_eager") is None:
        return "—"
    return f"{lat['ratio_to_eager']:.3f}× ({lat['ms']:.3g} ms)"


def _checks(a: dict[str, Any], icons: dict[str, str] = ICONS) -> str:
    n = {s: sum(c["status"] == s for c in a["checks"]) for s in ICONS}
    parts = [f"{icons['fail']} {n['fail']}" if n["fail"] else "", f"{icons['pass']} {n['pass']}",
             f"{icons['skip']} {n['skip']}" if n["skip"] else ""]
    return " ".join(p for p in parts if p)


def _head(data: dict[str, Any], icons: bool = True) -> str:
    c = data["counts"]
    ok = data["status"] == "pass"
    mark = f"{ICONS['pass'] if ok else ICONS['fail']} " if icons else ""
    return (f"mobilize check {mark}{'passed' if ok else 'failed'}: "
            f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")


def _baseline_line(data: dict[str, Any]) -> str:
    base = data["baseline"]
    return f"baseline {base['path']} ({base['created']})" if base["exists"] else "no baseline yet"


def artifact_rows(data: dict[str, Any], icons: dict[str, str] = ICONS) -> list[list[str]]:
    """The artifact table's cells (``ARTIFACT_HEADERS``)."""
    rows = []
    for a in data["artifacts"]:
        status, mae, snr = _parity(a)
        rows.append([f"{icons[a['status']]} {a['format']} {a['precision']}", _size(a), status, mae, snr, _latency(a),
                     a["vs_baseline"], _checks(a, icons)])
    return rows


# --- vs baseline ----------------------------------------------------------------------------------------------------


def _signed(v: float, show: Any) -> str:
    return ("+" if v > 0 else "-" if v < 0 else "±") + str(show(abs(v)))  # ASCII signs, as in the Δ % column


def _figure(r: dict[str, Any]) -> tuple[str, Any]:
    """(label, how to print a value) of one comparison row."""
    metric = r["metric"]
    if metric == "size":
        return "size", _bytes
    if metric == "latency ratio":
        t = r.get("threads")
        return (f"latency ÷ eager (p50{f', {t} thread' + ('s' if t != 1 else '') if t else ''})",
                lambda v: f"{v:.3f}×")
    if metric == "SNR":
        return "SNR", lambda v: f"{v:.1f} dB"
    return metric, lambda v: f"{v:.2e}"


def comparison_rows(data: dict[str, Any], icons: dict[str, str] = ICONS) -> list[list[str]]:
    """The "vs baseline" table's cells (``COMPARISON_HEADERS``): per artifact the baseline's figure, this run's, the
    change (Δ, and in % of the baseline) and the value past which the regression check fails."""
    rows = []
    for a in data["artifacts"]:
        for r in a.get("comparison") or []:
            label, show = _figure(r)
            now, delta, pct, limit = r["current"], r["delta"], r["pct"], r["limit"]
            if limit is None:
                fails = "not checked"
            else:
                fails = f"{'>' if r['fails'] == 'above' else '<'} {show(limit)} ({r['rule']})"
            rows.append([f"{a['format']} {a['precision']}", label, show(r["baseline"]),
                         "—" if now is None else show(now), "—" if delta is None else _signed(delta, show),
                         "—" if pct is None else f"{pct:+.1f}%", fails, icons.get(r["status"], r["status"])])
    return rows


def _not_compared(data: dict[str, Any]) -> str | None:
    """The sentence naming this run's files the baseline has no record of (None: there are none)."""
    new = [f"{a['format']} {a['precision']}" for a in data["artifacts"] if a.get("vs_baseline") == "new"]
    return f"Not in the baseline, so not compared: {', '.join(new)}." if new else None


def _comparison_state(data: dict[str, Any]) -> str | None:
    """Why there is nothing to compare (None: there is)."""
    from mobilize.check.judge import NO_BASELINE

    if not data["baseline"]["exists"]:
        return NO_BASELINE
    if not any(a.get("comparison") for a in data["artifacts"]):
        return "the baseline has no record of any file of this run (new formats or precisions?)"
    return None


def _failures(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f"{a['format']} {a['precision']}", ch["name"], ch["message"]) for a in data["artifacts"]
            for ch in a["checks"] if ch["status"] == "fail"]


# --- Markdown --------------------------------------------------------------------------------------------------------


def _md_table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if i in right else "---"
                                                              for i in range(len(headers))) + "|"]
    return out + ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]


def render(data: dict[str, Any], html_link: str | None = HTML_NAME, *, linkable: bool = True) -> str:
    """Markdown for a check record (:meth:`mobilize.check.CheckResult.to_dict`). ``html_link``: where the HTML page
    (with the baseline chart) is, relative to the Markdown file (``linkable``: a Markdown link) or, where no link
    can reach it (GitHub's step summary), the path to name; None leaves it out."""
    cfg = data["config"]
    base = data["baseline"]
    base_line = (f"baseline `{base['path']}` ({base['created']})" if base["exists"] else "no baseline yet")
    lines = [f"## {_head(data)}", "", f"`{cfg['source']}` → {', '.join(cfg['formats'])} × "
             f"{', '.join(cfg['precisions'])} · {base_line} · {data['seconds']:.0f} s", ""]
    lines += _md_table(ARTIFACT_HEADERS, artifact_rows(data), {1, 3, 4, 5})
    lines += ["", "### vs baseline", ""]
    why = _comparison_state(data)
    if why:
        lines.append(why)
    else:
        lines += _md_table(COMPARISON_HEADERS, comparison_rows(data), {2, 3, 4, 5})
        new = _not_compared(data)
        lines += ["", *([new, ""] if new else []),
                  "Δ = this run − baseline; latency ÷ eager < 1× is faster than PyTorch eager (lower is better); "
                  "SNR higher and max abs error lower are closer to PyTorch."]
    if html_link and linkable:
        lines += ["", f"Chart of these figures (baseline vs this run, per artifact): [{HTML_NAME}]({html_link})"]
    elif html_link:
        lines += ["", f"Chart of these figures (baseline vs this run, per artifact): `{html_link}` in the check's "
                      "output folder (keep it as a CI artifact)"]
    failures = _failures(data)
    if failures:
        lines += ["", "### Failures", ""]
        lines += [f"- **{label}** · `{name}`: {_cell(msg)}" for label, name, msg in failures]
    if data["notes"]:
        lines += ["", "### Notes", ""] + [f"- {_cell(n)}" for n in data["notes"]]
    lines += ["", f"<sub>{LATENCY_NOTE}. {data['created']}, mobilize {data['mobilize_version']}.</sub>", ""]
    return "\n".join(lines)


# --- HTML ------------------------------------------------------------------------------------------------------------


def _e(text: Any) -> str:
    return _html.escape(str(text), quote=True)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;margin:24px;max-width:1400px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px} .sub{color:#4b5563;margin:2px 0}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:10px;display:inline-block} svg.chart{font-family:inherit}
table{border-collapse:collapse;font-size:12.5px;margin-top:6px} th,td{padding:4px 7px;border-bottom:1px solid #e5e7eb}
th{background:#f9fafb;text-align:left} td{white-space:nowrap} td.r,th.r{text-align:right}
.muted{color:#6b7280;font-size:12px} ul li{margin:2px 0} code{background:#f3f4f6;padding:0 3px}
"""


def _html_table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    head = "".join(f'<th class="{"r" if i in right else ""}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"r" if i in right else ""}">{_e(c)}</td>' for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html(data: dict[str, Any]) -> str:
    """One self-contained page: the Markdown summary's content plus the baseline comparison chart (inline CSS and
    SVG, no scripts, no external references)."""
    from mobilize.check.charts import baseline_svg

    cfg = data["config"]
    parts = [f"<h1>{_e(_head(data, icons=False))}</h1>",
             f'<p class="sub"><code>{_e(cfg["source"])}</code> → {_e(", ".join(cfg["formats"]))} × '
             f'{_e(", ".join(cfg["precisions"]))} · {_e(_baseline_line(data))} · {data["seconds"]:.0f} s</p>',
             _html_table(ARTIFACT_HEADERS, artifact_rows(data, WORDS), {1, 3, 4, 5}),
             "<h2>Baseline comparison</h2>"]
    why = _comparison_state(data)
    chart = None if why else baseline_svg(data)
    if why or chart is None:
        parts.append(f"<p>{_e(why or 'nothing to compare')} — no chart.</p>")
    else:
        parts += [f'<div class="card">{chart}</div>',
                  '<p class="muted">Hollow: the baseline; filled: this run (green pass, red fail, grey not judged); '
                  "red tick: where the regression check fails. Latency ÷ PyTorch eager below 1× is faster than "
                  "eager; SNR higher / max abs error lower is closer to PyTorch.</p>",
                  _html_table(COMPARISON_HEADERS, comparison_rows(data, WORDS), {2, 3, 4, 5})]
        new = _not_compared(data)
        if new:
            parts.append(f"<p>{_e(new)}</p>")
    failures = _failures(data)
    if failures:
        parts.append("<h2>Failures</h2><ul>" + "".join(
            f"<li><b>{_e(label)}</b> · <code>{_e(name)}</code>: {_e(msg)}</li>" for label, name, msg in failures)
            + "</ul>")
    if data["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in data["notes"]) + "</ul>")
    parts.append(f'<p class="muted">{_e(LATENCY_NOTE)}. {_e(data["created"])}, mobilize '
                 f'{_e(data["mobilize_version"])}.</p>')
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(_head(data, icons=False))}</title><style>{_CSS}</style></head><body>" + "".join(parts)
            + "</body></html>\n")
