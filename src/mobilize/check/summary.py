"""The Markdown summary of a check: a status line, one table row per artifact, every failure with its numbers, and
the notes. Written to the output folder, ``--summary FILE``, and appended to ``$GITHUB_STEP_SUMMARY`` in GitHub
Actions."""

from __future__ import annotations

from typing import Any

ICONS = {"pass": "✅", "fail": "❌", "skip": "⏭️"}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _size(a: dict[str, Any]) -> str:
    from mobilize.bench.report import fmt_bytes

    return fmt_bytes(a["bytes"]) if a["bytes"] is not None else "—"


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


def _checks(a: dict[str, Any]) -> str:
    n = {s: sum(c["status"] == s for c in a["checks"]) for s in ICONS}
    parts = [f"{ICONS['fail']} {n['fail']}" if n["fail"] else "", f"{ICONS['pass']} {n['pass']}",
             f"{ICONS['skip']} {n['skip']}" if n["skip"] else ""]
    return " ".join(p for p in parts if p)


def render(data: dict[str, Any]) -> str:
    """Markdown for a check record (:meth:`mobilize.check.CheckResult.to_dict`)."""
    c = data["counts"]
    ok = data["status"] == "pass"
    head = (f"## mobilize check {ICONS['pass'] if ok else ICONS['fail']} "
            f"{'passed' if ok else 'failed'}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")
    cfg = data["config"]
    base = data["baseline"]
    base_line = (f"baseline `{base['path']}` ({base['created']})" if base["exists"] else "no baseline yet")
    lines = [head, "", f"`{cfg['source']}` → {', '.join(cfg['formats'])} × {', '.join(cfg['precisions'])} · "
             f"{base_line} · {data['seconds']:.0f} s", ""]
    lines += ["| artifact | size | parity | max abs err | SNR dB | latency ÷ PyTorch eager | vs baseline | checks |",
              "|---|---:|---|---:|---:|---:|---|---|"]
    for a in data["artifacts"]:
        status, mae, snr = _parity(a)
        lines.append("| " + " | ".join(_cell(x) for x in (
            f"{ICONS[a['status']]} {a['format']} {a['precision']}", _size(a), status, mae, snr, _latency(a),
            a["vs_baseline"], _checks(a))) + " |")
    failures = [(a, ch) for a in data["artifacts"] for ch in a["checks"] if ch["status"] == "fail"]
    if failures:
        lines += ["", "### Failures", ""]
        lines += [f"- **{a['format']} {a['precision']}** · `{ch['name']}`: {_cell(ch['message'])}"
                  for a, ch in failures]
    if data["notes"]:
        lines += ["", "### Notes", ""] + [f"- {_cell(n)}" for n in data["notes"]]
    lines += ["", f"<sub>latency: p50 on this runner's CPU, divided by PyTorch eager timed in the same run (so a "
                  f"slower runner does not fail the check). {data['created']}, mobilize {data['mobilize_version']}."
                  "</sub>", ""]
    return "\n".join(lines)
