"""JUnit XML for CI dashboards: one ``<testcase>`` per artifact × check, valid against the common ``junit-10.xsd``
(Jenkins xunit, GitLab, GitHub test-reporter actions).

``classname`` is ``mobilize.<format>.<precision>``, ``name`` the check (``parity``, ``budget.size_mb``,
``regression.latency``…). Failures carry the file and the numbers (``digits_fp32.onnx: size 2.31 MB >
budget 1.00 MB``); passing checks put their figures in ``<system-out>``. Checks that could not be judged (no baseline
yet, bench off) are ``<skipped message="…"/>`` cases. ``time`` is the work a verdict rests on: the conversion for
``export``, reading and verifying the file for ``parity``; checks read off those figures take no time of their own.
The ``<testsuites>`` element carries only the attributes the schema allows (name, time, tests, failures, errors).
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from typing import Any

_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # not allowed anywhere in XML 1.0


def _clean(text: Any) -> str:
    return _ILLEGAL.sub("?", str(text))


def classname(fmt: str, precision: str) -> str:
    return f"mobilize.{fmt}.{precision}"


def _time(seconds: float) -> str:
    return f"{max(float(seconds), 0.0):.3f}"


def render(data: dict[str, Any]) -> bytes:
    """The JUnit document for a check record (:meth:`mobilize.check.CheckResult.to_dict`)."""
    counts = data["counts"]
    totals = {"tests": str(counts["tests"]), "failures": str(counts["failed"]), "errors": "0",
              "time": _time(data["seconds"])}
    root = ET.Element("testsuites", {"name": "mobilize check", **totals})
    suite = ET.SubElement(root, "testsuite", {
        "name": _clean(f"mobilize check {data['config']['source']}"), **totals, "skipped": str(counts["skipped"]),
        "timestamp": data["created"], "hostname": _clean(socket.gethostname())})
    props = ET.SubElement(suite, "properties")
    for name, value in (("config", data["config"]["path"]), ("bundle", data["bundle"]),
                        ("baseline", data["baseline"]["path"]), ("mobilize", data["mobilize_version"])):
        ET.SubElement(props, "property", {"name": name, "value": _clean(value)})
    for art in data["artifacts"]:
        cls = classname(art["format"], art["precision"])
        where = f"{art['format']} {art['precision']}" + (f" ({art['path']})" if art.get("path") else "")
        for check in art["checks"]:
            message = _clean(check["message"])
            case = ET.SubElement(suite, "testcase", {"classname": cls, "name": check["name"],
                                                     "time": _time(check.get("seconds") or 0.0)})
            if check["status"] == "skip":
                ET.SubElement(case, "skipped", {"message": message})
            elif check["status"] == "fail":
                text = f"{art['path']}: {message}" if art.get("path") else message
                node = ET.SubElement(case, "failure", {"message": _clean(text), "type": check["name"]})
                node.text = f"{where} {check['name']}: {message}"
            else:
                ET.SubElement(case, "system-out").text = message
    if data["notes"]:
        ET.SubElement(suite, "system-out").text = _clean("\n".join(data["notes"]))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
