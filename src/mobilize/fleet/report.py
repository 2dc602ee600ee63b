"""A fleet's merged JUnit file (one ``<testsuite>`` per model, classnames ``mobilize.<model>.<format>.<precision>``)
and its Markdown summary (one line per model, then each model's own summary)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def junit(result: Any) -> bytes:
    from mobilize.check import junit as single

    c = result.counts()
    attrs = {"tests": c["tests"] - c["skipped"], "failures": c["failed"], "errors": 0, "skipped": 0,
             "time": f"{result.seconds:.2f}"}
    root = ET.Element("testsuites", {"name": "mobilize check (fleet)", **{k: str(v) for k, v in attrs.items()}})
    for name, data in result.models.items():
        doc = ET.fromstring(single.render(data))
        for suite in doc.iter("testsuite"):
            suite.set("name", single._clean(f"mobilize check {name}"))
            for case in suite.iter("testcase"):
                case.set("classname", case.get("classname", "").replace("mobilize.", f"mobilize.{name}.", 1))
            root.append(suite)
    failed_jobs = [j for j in result.jobs if j["status"] in ("failed", "error")]
    if failed_jobs:
        ET.SubElement(root, "system-out").text = single._clean("\n".join(
            f"job {j['model']}/{j['format']}/{j['precision']} {j['status']} after {j['attempts']} attempt(s): "
            f"{j.get('error', '')}" for j in failed_jobs))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def summary(result: Any) -> str:
    from mobilize.check import summary as single

    c = result.counts()
    ok = result.exit_code == 0
    shard = f" · shard {result.shard[0]}/{result.shard[1]}" if result.shard else ""
    lines = [f"# mobilize check (fleet) {'✅ passed' if ok else '❌ failed'}: {c['passed']} passed, {c['failed']} "
             f"failed, {c['skipped']} skipped · {len(result.models)} model(s) · {len(result.jobs)} job(s) on "
             f"{result.executor}{shard} · "
             f"{result.seconds:.0f} s", "",
             "| model | status | passed | failed | skipped | jobs |", "|---|---|---:|---:|---:|---|"]
    for name, data in result.models.items():
        jobs = [j for j in result.jobs if j["model"] == name]
        states = ", ".join(f"{n} {s}" for s, n in _tally(j["status"] for j in jobs).items())
        lines.append(f"| {name} | {data['status']} | {data['counts']['passed']} | {data['counts']['failed']} | "
                     f"{data['counts']['skipped']} | {states} |")
    bad = [j for j in result.jobs if j["status"] in ("failed", "error")]
    if bad:
        lines += ["", "Jobs without a file:"]
        lines += [f"- `{j['model']}/{j['format']}/{j['precision']}` {j['status']} after {j['attempts']} attempt(s): "
                  f"{j.get('error', '')}" for j in bad]
    for name, data in result.models.items():
        if not data.get("no_bundle"):
            page = Path(os.path.relpath(Path(data["config"]["output"]) / single.HTML_NAME, result.fleet.output))
            lines += ["", f"## {name}", "", single.render(data, page.as_posix()).replace("\n## ", "\n### ", 1)]
    return "\n".join(lines) + "\n"


def _tally(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in items:
        out[s] = out.get(s, 0) + 1
    return out
