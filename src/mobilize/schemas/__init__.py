"""JSON Schemas of every ``--json`` document (``"schema": "mobilize-<command>/N"``), shipped in the package.

``load("verify")`` returns the schema of ``mobilize-verify/1``; :func:`validate` checks a document against the schema
its own ``schema`` field names. The bundle manifest's schema is ``mobilize/bundle/manifest.schema.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COMMANDS = ("verify", "inspect", "diff", "bench", "check")


def load(command: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(__file__).with_name(f"{command}.schema.json")).read_text())
    return data


def validate(document: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` matches the schema its ``schema`` field names."""
    import jsonschema

    name = str(document.get("schema", ""))
    command, _, version = name.removeprefix("mobilize-").partition("/")
    if command not in COMMANDS or version != "1":
        raise jsonschema.ValidationError(f"unknown document schema {name!r}")
    jsonschema.validate(document, load(command))
