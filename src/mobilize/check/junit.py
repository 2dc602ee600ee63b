"""JUnit XML for CI dashboards: one ``<testcase>`` per artifact × check.

``classname`` is ``mobilize.<format>.<precision>``, ``name`` the check (``parity``, ``budget.size_mb``,
``regression.latency``…). Failures carry the file and the numbers (``digits_fp32.onnx: size 2.31 MB >
budget 1.00 MB``); passing checks put their figures in ``<system-out>``. Checks that could not be judged (no baseline
yet, bench off) are not test cases — a skipped case reads as "not passing" on some dashboards — and are listed
with their reasons in the suite's ``<system-out>`` and in ``check.json``.
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


def render(data: dict[str, Any]) -> bytes:
    """The JUnit document for a check record (:meth:`mobilize.check.CheckResult.to_dict`)."""
    counts = data["counts"]
    attrs = {"tests": counts["tests"] - counts["skipped"], "failures": counts["failed"], "errors": 0, "skipped": 0,
             "time": f"{data['seconds']:.2f}"}
    root = ET.Element("testsuites", {"name": "mobilize check", **{k: str(v) for k, v in attrs.items()}})
    suite = ET.SubElement(root, "testsuite", {
        "name": _clean(f"mobilize check {data['config']['source']}"), **{k: str(v) for k, v in attrs.items()},
        "timestamp": data["created"], "hostname": _clean(socket.gethostname())})
    props = ET.SubElement(suite, "properties")
    for name, value in (("config", data["config"]["path"]), ("bundle", data["bundle"]),
                        ("baseline", data["baseline"]["path"]), ("mobilize", data["mobilize_version"])):
        ET.SubElement(props, "property", {"name": name, "value": _clean(value)})
    skipped = []
    for art in data["artifacts"]:
        cls = classname(art["format"], art["precision"])
        where = f"{art['format']} {art['precision']}" + (f" ({art['path']})" if art.get("path") else "")
        for check in art["checks"]:
            message = _clean(check["message"])
            if check["status"] == "skip":
                skipped.append(f"skipped {where} {check['name']}: {message}")
                continue
            case = ET.SubElement(suite, "testcase", {"classname": cls, "name": check["name"], "time": "0"})
            if check["status"] == "fail":
                text = f"{art['path']}: {message}" if art.get("path") else message
                node = ET.SubElement(case, "failure", {"message": _clean(text), "type": check["name"]})
                node.text = f"{where} {check['name']}: {message}"
            else:
                ET.SubElement(case, "system-out").text = message
    if data["notes"] or skipped:
        ET.SubElement(suite, "system-out").text = _clean("\n".join([*data["notes"], *skipped]))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
