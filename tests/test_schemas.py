"""The JSON Schemas shipped for every --json document: well-formed, found by the document's own `schema` field,
and strict enough to reject a document of the wrong shape (real documents are validated where each command's
tests produce them: bench, check, verify, inspect, diff)."""

from __future__ import annotations

import jsonschema
import pytest

from mobilize import schemas


@pytest.mark.parametrize("command", schemas.COMMANDS)
def test_each_schema_is_valid_and_names_its_document(command: str) -> None:
    schema = schemas.load(command)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"mobilize-{command}/1"
    assert schema["properties"]["schema"] == {"const": f"mobilize-{command}/1"}


def test_a_document_of_the_wrong_shape_is_rejected() -> None:
    good = {"schema": "mobilize-verify/1", "bundle": "b",
            "summary": {"exported": 1, "failed": 0, "parity": {"pass": 1, "fail": 0, "unverified": 0}},
            "artifacts": [{"format": "onnx", "precision": "fp32", "path": "m.onnx", "sha256": "0" * 64,
                           "parity": {"status": "pass"}}]}
    schemas.validate(good)
    bad = {**good, "artifacts": [{**good["artifacts"][0], "parity": {"status": "ok"}}]}
    with pytest.raises(jsonschema.ValidationError):
        schemas.validate(bad)
    with pytest.raises(jsonschema.ValidationError, match="unknown document schema"):
        schemas.validate({**good, "schema": "mobilize-verify/9"})
