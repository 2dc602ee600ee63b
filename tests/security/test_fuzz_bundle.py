"""Fuzz the bundle reader: arbitrary manifest bytes or JSON raise only BundleError, never anything else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mobilize.bundle import manifest as mf
from mobilize.errors import BundleError

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
_SETTINGS = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read(folder: Path, data: bytes) -> None:
    (folder / "manifest.json").write_bytes(data)
    try:
        mf.read(folder)
    except BundleError as exc:
        assert "\n" not in str(exc)


@_SETTINGS
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    _read(tmp_path, data)


@pytest.mark.slow
@_SETTINGS
@given(doc=_json)
def test_arbitrary_json(tmp_path: Path, doc: object) -> None:
    _read(tmp_path, json.dumps(doc).encode())


@pytest.mark.slow
@_SETTINGS
@given(path=st.text(min_size=1, max_size=40), size=st.integers(min_value=-5, max_value=10**12))
def test_artifact_paths_and_sizes(tmp_path: Path, path: str, size: int) -> None:
    """A schema-valid manifest with a hostile artifact path or a wrong size never escapes the folder."""
    doc = {
        "schema_version": 1, "mobilize_version": "0", "created": "x", "tools": {},
        "model": {"name": "m", "source": "s", "inputs": [], "outputs": []},
        "capture": {"strategy": "s", "attempts": []},
        "reference": {"path": "reference.npz", "deterministic": True, "input_sets": []},
        "artifacts": [{"format": "onnx", "precision": "fp32", "status": "ok", "path": path, "bytes": size,
                       "sha256": "0" * 64, "inputs": [], "outputs": [], "parity": None}],
        "summary": {"exported": 1, "failed": 0, "parity": {}},
    }
    _read(tmp_path, json.dumps(doc).encode())


# --- a real bundle's manifest with one field changed, all the way through `verify` ---------------------------------

_FIELDS = ["model", "model.inputs", "model.inputs.0", "model.inputs.0.name", "model.inputs.0.shape",
           "model.inputs.0.dtype", "model.outputs", "model.name", "model.source", "model.weights", "reference",
           "reference.path", "reference.input_sets", "reference.deterministic", "artifacts", "artifacts.0",
           "artifacts.0.path", "artifacts.0.format", "artifacts.0.precision", "artifacts.0.status",
           "artifacts.0.bytes", "artifacts.0.sha256", "artifacts.0.inputs", "artifacts.0.outputs",
           "artifacts.0.parity", "artifacts.0.error", "artifacts.0.quantization", "artifacts.0.notes", "capture",
           "summary", "tools", "schema_version", "security"]
_extreme = st.one_of(
    _json,
    st.sampled_from([10**25, -1, 1e308, "../../etc/passwd", "/etc/passwd", "reference.npz", "tiny_fp32.onnx",
                     "\x1b]0;pwned\x07", "fp32", "int8", "onnx", "coreml", "ok", "failed", [], {}, [[[[[]]]]]]),
)


def _set(doc: Any, dotted: str, value: Any) -> Any:
    *parents, last = dotted.split(".")
    cur = doc
    for p in parents:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return doc


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(_FIELDS), value=_extreme)
def test_one_changed_field_is_a_bundle_error_or_a_verdict(tiny_bundle: Path, tmp_path: Path, field: str,
                                                          value: Any) -> None:
    """``verify`` of a real bundle whose manifest has one field replaced by anything: either a verdict or a one-line
    input error, never another exception."""
    import shutil
    import uuid

    from mobilize import api
    from mobilize.errors import MobilizeInputError

    work = tmp_path / uuid.uuid4().hex
    shutil.copytree(tiny_bundle, work)
    doc = _set(json.loads((work / "manifest.json").read_text()), field, value)
    (work / "manifest.json").write_text(json.dumps(doc))
    try:
        result = api.verify(work, isolate=False)
    except MobilizeInputError as exc:
        assert "\n" not in str(exc)
        return
    assert result.exit_code in (0, 1)
