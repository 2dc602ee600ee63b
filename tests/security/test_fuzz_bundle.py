"""Fuzz the bundle reader: arbitrary manifest bytes or JSON raise only BundleError, never anything else."""

from __future__ import annotations

import json
from pathlib import Path

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


@_SETTINGS
@given(doc=_json)
def test_arbitrary_json(tmp_path: Path, doc: object) -> None:
    _read(tmp_path, json.dumps(doc).encode())


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
