"""The constraints of the common JUnit schema (``junit-10.xsd`` as Jenkins' xunit plugin, GitLab and the GitHub
test-report actions read it), checked on a parsed document. Written from the schema's rules: which attributes each
element may carry and must carry, which children it may hold, and the ``time`` pattern."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

_TIME = re.compile(r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?")
_ATTRS = {  # element: (allowed, required)
    "testsuites": ({"name", "time", "tests", "failures", "errors"}, set()),
    "testsuite": ({"name", "tests", "failures", "errors", "group", "time", "skipped", "timestamp", "hostname", "id",
                   "package", "file", "log", "url"}, {"name", "tests", "failures", "errors"}),
    "properties": (set(), set()),
    "property": ({"name", "value"}, {"name", "value"}),
    "testcase": ({"name", "time", "classname", "group"}, {"name"}),
    "skipped": ({"type", "message"}, set()),
    "failure": ({"type", "message"}, set()),
    "error": ({"type", "message"}, set()),
    "system-out": (set(), set()),
    "system-err": (set(), set()),
}
_CHILDREN = {
    "testsuites": {"testsuite"},
    "testsuite": {"testsuite", "properties", "testcase", "system-out", "system-err"},
    "properties": {"property"},
    "testcase": {"skipped", "error", "failure", "system-out", "system-err"},
}


def violations(root: ET.Element) -> list[str]:
    """Every place the document breaks the schema (empty: valid)."""
    found: list[str] = []

    def visit(el: ET.Element, path: str) -> None:
        where = f"{path}/{el.tag}"
        if el.tag not in _ATTRS:
            found.append(f"{where}: element not in the schema")
            return
        allowed, required = _ATTRS[el.tag]
        found.extend(f"{where}: attribute {a!r} not allowed" for a in set(el.attrib) - allowed)
        found.extend(f"{where}: attribute {a!r} missing" for a in required - set(el.attrib))
        if el.tag in ("testsuites", "testsuite") and "time" in el.attrib and not _TIME.fullmatch(el.get("time", "")):
            found.append(f"{where}: time {el.get('time')!r} does not match the schema's pattern")
        for child in el:
            if child.tag not in _CHILDREN.get(el.tag, set()):
                found.append(f"{where}: child <{child.tag}> not allowed")
            visit(child, where)

    if root.tag != "testsuites":
        found.append(f"root is <{root.tag}>, not <testsuites>")
    visit(root, "")
    return found
