"""Bundle checksums (mobilize.bundle.hashing) and defensive manifest reading (mobilize.bundle.manifest)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from mobilize.bundle import hashing
from mobilize.bundle import manifest as mf
from mobilize.errors import BundleError

# --- hashing ---------------------------------------------------------------------------------------------------


def _package(root: Path) -> Path:
    pkg = root / "m.mlpackage"
    (pkg / "Data" / "weights").mkdir(parents=True)
    (pkg / "Manifest.json").write_text('{"fileFormatVersion": "1.0.0", "rootModelIdentifier": "m", "itemInfoEntries": '
                                       '{"m": {"path": "model.mlmodel"}, "w": {"path": "weights"}}}')
    (pkg / "Data" / "model.mlmodel").write_bytes(b"spec")
    (pkg / "Data" / "weights" / "weight.bin").write_bytes(b"\x00" * 64)
    return pkg


def test_sha256_of_a_file_is_plain_sha256(tmp_path: Path) -> None:
    f = tmp_path / "m.onnx"
    data = b"onnx bytes" * 100_000  # more than one 1 MiB read chunk
    f.write_bytes(data)
    assert hashing.sha256(f) == hashlib.sha256(data).hexdigest()
    assert hashing.size(f) == len(data)


def test_sha256_of_a_folder_is_stable(tmp_path: Path) -> None:
    a = _package(tmp_path / "a")
    b = _package(tmp_path / "b")
    assert hashing.sha256(a) == hashing.sha256(b)  # content-defined, not location-defined
    assert len(hashing.sha256(a)) == 64
    assert hashing.size(a) == len((a / "Manifest.json").read_bytes()) + 4 + 64


@pytest.mark.parametrize("change", ["edit", "rename", "add", "remove", "move"])
def test_sha256_of_a_folder_changes_with_any_file(tmp_path: Path, change: str) -> None:
    pkg = _package(tmp_path)
    before = hashing.sha256(pkg)
    w = pkg / "Data" / "weights" / "weight.bin"
    if change == "edit":
        w.write_bytes(b"\x00" * 63 + b"\x01")
    elif change == "rename":
        w.rename(w.with_name("weight2.bin"))
    elif change == "add":
        (pkg / "extra.txt").write_bytes(b"")
    elif change == "remove":
        w.unlink()
    elif change == "move":
        w.rename(pkg / "weight.bin")
    assert hashing.sha256(pkg) != before


def test_package_files_are_sorted_relative(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    rel = [p.relative_to(pkg).as_posix() for p in hashing.package_files(pkg)]
    assert rel == ["Data/model.mlmodel", "Data/weights/weight.bin", "Manifest.json"]


# --- a minimal valid bundle ------------------------------------------------------------------------------------

ONNX_BYTES = b"fake onnx model bytes"


def _artifact(path: str | None, data: bytes | None, *, fmt: str = "onnx", status: str = "ok") -> dict[str, Any]:
    art: dict[str, Any] = {
        "format": fmt, "precision": "fp32", "status": status, "path": path,
        "bytes": len(data) if data is not None else None,
        "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
        "inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": [1, 3], "dtype": "float32"}],
        "parity": {"status": "pass", "runtime": "onnxruntime", "reason": None, "max_abs_error": 0.0},
        "notes": [],
        "error": None,
    }
    if status != "ok":
        art.update(path=None, bytes=None, sha256=None, parity=None, error={"message": "conversion failed"})
    return art


def minimal_manifest() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "mobilize_version": "0.1.0",
        "created": "2025-01-01T00:00:00+00:00",
        "tools": {"torch": "2.13.0", "coremltools": None},
        "model": {"name": "m", "source": "zoo:digits",
                  "inputs": [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}],
                  "outputs": [{"name": "y", "shape": [1, 3], "dtype": "float32"}]},
        "capture": {"strategy": "torch.export(strict=False)", "dynamic": False,
                    "attempts": [{"strategy": "torch.export(strict=False)", "ok": True, "error": None}]},
        "reference": {"path": "reference.npz", "deterministic": True, "input_sets": []},
        "artifacts": [_artifact("m_fp32.onnx", ONNX_BYTES)],
        "summary": {"exported": 1, "failed": 0, "parity": {"pass": 1, "fail": 0, "unverified": 0}},
    }


def write_bundle(root: Path, manifest: dict[str, Any] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "m_fp32.onnx").write_bytes(ONNX_BYTES)
    (root / "reference.npz").write_bytes(b"npz")
    (root / "manifest.json").write_bytes(mf.dumps(manifest if manifest is not None else minimal_manifest()))
    return root


def _read_error(bundle: Path, **kw) -> str:
    with pytest.raises(BundleError) as ei:
        mf.read(bundle, **kw)
    return str(ei.value)


def test_valid_manifest_passes(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b")
    assert mf.read(bundle) == minimal_manifest()


def test_failed_artifacts_are_not_checked_on_disk(tmp_path: Path) -> None:
    m = minimal_manifest()
    m["artifacts"].append(_artifact(None, None, fmt="coreml", status="failed"))
    assert len(mf.read(write_bundle(tmp_path / "b", m))["artifacts"]) == 2


def test_folder_artifact_is_checked_as_a_whole(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    pkg = _package(bundle)
    m = minimal_manifest()
    art = _artifact("m.mlpackage", b"", fmt="coreml")
    art.update(bytes=hashing.size(pkg), sha256=hashing.sha256(pkg))
    m["artifacts"].append(art)
    write_bundle(bundle, m)
    mf.read(bundle)
    (pkg / "Data" / "model.mlmodel").write_bytes(b"SPEC")  # same size, different content
    assert "sha256 does not match" in _read_error(bundle)


def test_schema_in_package_is_valid_json_schema() -> None:
    import jsonschema

    s = mf.schema()
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["properties"]["schema_version"]["const"] == mf.SCHEMA_VERSION


def _without(d: dict[str, Any], dotted: str) -> dict[str, Any]:
    d = copy.deepcopy(d)
    *parents, last = dotted.split(".")
    cur: Any = d
    for p in parents:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    del cur[last]
    return d


def _with(d: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    *parents, last = dotted.split(".")
    cur: Any = d
    for p in parents:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return d


@pytest.mark.parametrize("manifest, location, words", [
    (_without(minimal_manifest(), "summary"), "(top level)", "'summary' is a required property"),
    (_with(minimal_manifest(), "schema_version", 2), "schema_version", "1 was expected"),
    (_with(minimal_manifest(), "artifacts.0.format", "pytorch"), "artifacts/0/format", "'pytorch'"),
    (_with(minimal_manifest(), "artifacts.0.status", "maybe"), "artifacts/0/status", "'maybe'"),
    (_with(minimal_manifest(), "artifacts.0.sha256", "ABC"), "artifacts/0/sha256", "'ABC'"),
    (_with(minimal_manifest(), "artifacts.0.bytes", -1), "artifacts/0/bytes", "-1"),
    (_without(minimal_manifest(), "model.inputs.0.dtype"), "model/inputs/0", "'dtype' is a required property"),
    (_with(minimal_manifest(), "artifacts.0.parity.status", "ok"), "artifacts/0/parity/status", "'ok'"),
    (_with(minimal_manifest(), "reference.deterministic", "yes"), "reference/deterministic", "'yes'"),
    ([], "(top level)", "object"),
])
def test_schema_violations_name_the_location(tmp_path: Path, manifest, location, words) -> None:
    bundle = write_bundle(tmp_path / "b", manifest)
    msg = _read_error(bundle)
    assert f"invalid manifest at {location}:" in msg
    assert words in msg
    assert "manifest.json" in msg


def test_failed_artifact_needs_an_error_message(tmp_path: Path) -> None:
    m = minimal_manifest()
    bad = _artifact(None, None, status="failed")
    bad["error"] = {"ops": []}
    m["artifacts"].append(bad)
    assert "artifacts/1/error" in _read_error(write_bundle(tmp_path / "b", m))


@pytest.mark.parametrize("path", ["../m_fp32.onnx", "sub/../../x.onnx", "/etc/passwd", "..", "a\\..\\b.onnx"])
@pytest.mark.parametrize("field", ["artifact", "reference"])
def test_paths_leaving_the_bundle_are_refused(tmp_path: Path, path: str, field: str) -> None:
    m = minimal_manifest()
    if field == "artifact":
        m["artifacts"][0]["path"] = path
    else:
        m["reference"]["path"] = path
    assert _read_error(write_bundle(tmp_path / "b", m), check_files=False)


@pytest.mark.parametrize("path", ["../x", "/abs/x", "a/../../x", "a\\b"])
def test_safe_member_refuses_escaping_paths(tmp_path: Path, path: str) -> None:
    with pytest.raises(BundleError, match="points outside the bundle"):
        mf.safe_member(tmp_path, path, "manifest.json")


def test_safe_member_accepts_inner_paths(tmp_path: Path) -> None:
    assert mf.safe_member(tmp_path, "a/b.onnx", "w") == tmp_path / "a" / "b.onnx"
    assert mf.safe_member(tmp_path, "..hidden.onnx", "w") == tmp_path / "..hidden.onnx"


def test_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(ONNX_BYTES)
    bundle = write_bundle(tmp_path / "b")
    (bundle / "m_fp32.onnx").unlink()
    (bundle / "m_fp32.onnx").symlink_to(outside)  # same bytes, same sha256: only the location is wrong
    msg = _read_error(bundle)
    assert "resolves outside the bundle" in msg and "m_fp32.onnx" in msg


def test_symlinked_reference_pointing_outside_is_refused(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b")
    (bundle / "reference.npz").unlink()
    (bundle / "reference.npz").symlink_to(tmp_path / "elsewhere.npz")
    assert "resolves outside the bundle" in _read_error(bundle, check_files=False)


def test_symlink_inside_the_bundle_is_fine(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b")
    (bundle / "real").mkdir()
    (bundle / "m_fp32.onnx").rename(bundle / "real" / "m.onnx")
    (bundle / "m_fp32.onnx").symlink_to(Path("real") / "m.onnx")
    mf.read(bundle)


def test_symlink_inside_a_package_pointing_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("outside the bundle")
    bundle = tmp_path / "b"
    pkg = _package(bundle)
    (pkg / "Data" / "leak").symlink_to(tmp_path / "secret.txt")
    m = minimal_manifest()
    art = _artifact("m.mlpackage", b"", fmt="coreml")
    art.update(bytes=hashing.size(pkg), sha256=hashing.sha256(pkg))  # checksums made to match
    m["artifacts"].append(art)
    write_bundle(bundle, m)
    with pytest.raises(BundleError, match="outside the bundle"):
        mf.read(bundle)


def test_wrong_bytes(tmp_path: Path) -> None:
    m = _with(minimal_manifest(), "artifacts.0.bytes", len(ONNX_BYTES) + 1)
    bundle = write_bundle(tmp_path / "b", m)
    msg = _read_error(bundle)
    assert f"is {len(ONNX_BYTES)} bytes but the manifest says {len(ONNX_BYTES) + 1}" in msg
    assert "[onnx fp32]" in msg
    mf.read(bundle, check_files=False)  # schema-only reading does not look at the files


def test_wrong_sha256(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", _with(minimal_manifest(), "artifacts.0.sha256", "0" * 64))
    assert "sha256 does not match the manifest" in _read_error(bundle)


def test_changed_file_same_size(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b")
    data = bytearray(ONNX_BYTES)
    data[0] ^= 1
    (bundle / "m_fp32.onnx").write_bytes(bytes(data))
    assert "sha256 does not match" in _read_error(bundle)


def test_missing_artifact_file(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b")
    (bundle / "m_fp32.onnx").unlink()
    msg = _read_error(bundle)
    assert "m_fp32.onnx" in msg and "is missing from the bundle" in msg


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe\x00garbage", b'{"a": 1'])
def test_invalid_json(tmp_path: Path, content: bytes) -> None:
    bundle = write_bundle(tmp_path / "b")
    (bundle / "manifest.json").write_bytes(content)
    assert "not valid JSON" in _read_error(bundle)


def test_missing_manifest(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b")
    (bundle / "manifest.json").unlink()
    assert "no manifest.json" in _read_error(bundle)


def test_not_a_folder(tmp_path: Path) -> None:
    assert "not a folder" in _read_error(tmp_path / "missing")
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a folder" in _read_error(f)


def test_dumps_is_strict_json(tmp_path: Path) -> None:
    out = mf.dumps(minimal_manifest())
    assert out.endswith(b"\n") and json.loads(out) == minimal_manifest()
    with pytest.raises(ValueError):
        mf.dumps({"x": float("nan")})


def test_tool_versions_lists_every_tool() -> None:
    v = mf.tool_versions()
    assert {"python", "platform", "torch", "numpy"} <= set(v)
    assert v["torch"] and v["numpy"]


def test_pipeline_manifest_passes_the_schema(tmp_path: Path, linear_spec) -> None:
    """The manifest api.export builds (without converters) validates and reads back."""
    from mobilize import api
    from mobilize.capture import Attempt, Capture
    from mobilize.verify.inputs import make_input_sets
    from mobilize.verify.parity import compute_reference

    ref = compute_reference(linear_spec, make_input_sets(linear_spec))
    cap = Capture(program=None, strategy="torch.export(strict=False)",
                  attempts=[Attempt("torch.export(strict=False)", True)], dynamic=False)
    ok = _artifact("m_fp32.onnx", ONNX_BYTES)
    failed = _artifact(None, None, fmt="coreml", status="failed")
    manifest = api._manifest(linear_spec, "file.py:build", cap, ref, [ok, failed])
    mf.validate(manifest)
    assert manifest["summary"] == {"exported": 1, "failed": 1, "parity": {"pass": 1, "fail": 0, "unverified": 0},
                                   "fitness": {"fit": 0, "unfit": 0, "below_target": 0}, "repaired": 0}
    assert manifest["model"]["outputs"] == [{"name": "y", "shape": [2, 3], "dtype": "float32"}]
    bundle = write_bundle(tmp_path / "b", manifest)
    assert mf.read(bundle)["model"]["parameters"] == 4 * 3 + 3
