"""``manifest.json``: what an app build reads. Schema in ``manifest.schema.json`` (documented in docs/manifest.md).

Reading a bundle is defensive: the manifest is validated against the schema, every artifact path must stay inside
the bundle folder (no ``..``, no absolute paths, no symlinks leading out), and sizes and checksums are re-checked.
"""

from __future__ import annotations

import json
import os
import platform
import stat
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from mobilize.bundle.hashing import sha256, size
from mobilize.errors import BundleError, MobilizeInputError, one_line
from mobilize.safeio import refuse_special

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE = "reference.npz"
_TOOLS = ("torch", "onnx", "onnxruntime", "onnxscript", "coremltools", "litert-torch", "ai-edge-litert",
          "ai-edge-quantizer", "executorch", "numpy")


def tool_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "platform": f"{sys.platform}-"
                                  f"{platform.machine()}"}
    for name in _TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def schema() -> dict[str, Any]:
    return json.loads((Path(__file__).with_name("manifest.schema.json")).read_text())


#: manifest.json is read whole; a larger one is not a manifest (mobilize's are a few KB to a few hundred KB)
MANIFEST_LIMIT = 64 << 20


def read_bounded(path: Path, limit: int) -> bytes:
    from mobilize.errors import MobilizeInputError
    from mobilize.safeio import read_bytes

    try:
        return read_bytes(path, limit=limit)
    except MobilizeInputError as exc:
        raise BundleError(str(exc)) from None


def parse(data: bytes | str, where: str) -> Any:
    """Parse manifest JSON text with bounds (nesting, number sizes, NaN); a one-line :class:`BundleError`."""
    from mobilize.errors import MobilizeInputError
    from mobilize.safeio import load_json

    try:
        return load_json(data, where)
    except MobilizeInputError as exc:
        raise BundleError(str(exc)) from None


def validate(manifest: Any, where: str = MANIFEST) -> None:
    """Raise :class:`BundleError` naming the first schema violation."""
    import jsonschema

    try:
        jsonschema.validate(manifest, schema())
    except jsonschema.ValidationError as exc:
        loc = one_line("/".join(str(p) for p in exc.absolute_path), 120) or "(top level)"
        if exc.validator == "pattern" and loc.endswith("path"):
            raise BundleError(f"{where}: {loc} {one_line(repr(exc.instance), 80)} points outside the bundle or has "
                              "illegal characters; "
                              "a bundle may only list its own files, by relative path") from None
        detail = f"{exc.instance!r} is not allowed here" if exc.validator == "pattern" else exc.message
        raise BundleError(f"{where}: invalid manifest at {loc}: {one_line(detail, 200)}") from None


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n").encode()


def safe_member(root: Path, rel: str, where: str) -> Path:
    """``root/rel``, refusing absolute paths, ``..`` and symlinks that lead outside ``root``."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel or any(ord(c) < 32 for c in rel):
        raise BundleError(f"{where}: path {rel!r} points outside the bundle; a bundle may only list its own files")
    full = root / p
    try:
        resolved = full.resolve(strict=False)
        resolved.relative_to(root.resolve())
    except ValueError:
        raise BundleError(f"{where}: path {rel!r} resolves outside the bundle (symlink?); refusing it") from None
    return full


#: the largest file of each format: ONNX and TFLite are single protobufs / flatbuffers (2 GB at most); an ExecuTorch
#: program keeps its weights in segments after the flatbuffer (64-bit offsets: multi-GB LLM programs exist)
FILE_LIMITS = {"onnx": 2 << 30, "tflite": 2 << 30, "coreml": 16 << 30, "pte": 16 << 30}


def artifact_where(bundle: Path, art: dict[str, Any]) -> str:
    return f"{bundle / MANIFEST} [{art['format']} {art['precision']}]"


def artifact_path(bundle: Path, art: dict[str, Any]) -> Path:
    """The existing file (or package folder) of an ``ok`` artifact, refusing paths — and, inside a package, symlinks —
    that lead outside the bundle."""
    from mobilize.bundle.mlpackage import check_package
    from mobilize.safeio import special_kind

    where = artifact_where(bundle, art)
    path = safe_member(bundle, art["path"], where)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BundleError(f"{where}: file {art['path']!r} is missing from the bundle") from None
    except OSError as exc:
        raise BundleError(f"{where}: cannot read {art['path']!r} ({exc.strerror or exc})") from None
    kind = special_kind(st.st_mode)
    if kind:  # opening a FIFO blocks, a device streams forever: refused before anything opens it
        raise BundleError(f"{where}: {art['path']!r} is {kind}, not a regular file; a bundle holds regular files")
    if stat.S_ISDIR(st.st_mode):  # a package: validated (no links, nothing outside) before any reader touches it
        check_package(path, where)
    elif st.st_size > FILE_LIMITS.get(art["format"], FILE_LIMITS["coreml"]):  # e.g. a sparse 100 GB "model"
        limit = FILE_LIMITS.get(art["format"], FILE_LIMITS["coreml"])
        raise BundleError(f"{where}: {art['path']!r} is {st.st_size >> 20} MB, more than any {art['format']} file "
                          f"holds ({limit >> 30} GB); refusing to read it")
    return path


def read(bundle: Path, *, check_files: bool = True) -> dict[str, Any]:
    """Load, validate and (optionally) check every artifact's size and sha256 against the files."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: not a folder; give the folder `mobilize export --out` wrote")
    mpath = bundle / MANIFEST
    if not mpath.exists() and not mpath.is_symlink():
        raise BundleError(f"{bundle}: no {MANIFEST}; is this a mobilize bundle?")
    safe_member(bundle, MANIFEST, str(mpath))  # a manifest.json symlinked to a file elsewhere is not read
    manifest = parse(read_bounded(mpath, MANIFEST_LIMIT), str(mpath))
    validate(manifest, str(mpath))
    seen: set[tuple[str, str]] = set()
    for art in manifest["artifacts"]:  # one file per format × precision: a repeated entry only multiplies work
        key = (art["format"], art["precision"])
        if key in seen:
            raise BundleError(f"{mpath}: lists {key[0]} {key[1]} twice; a bundle holds one file per format and "
                              "precision")
        seen.add(key)
    ref = safe_member(bundle, manifest["reference"]["path"], str(mpath))
    try:  # a FIFO or device in place of reference.npz is refused before anything opens it
        refuse_special(ref, str(mpath))
    except MobilizeInputError as exc:
        raise BundleError(str(exc)) from None
    if check_files:
        for art in manifest["artifacts"]:
            if art["status"] != "ok":
                continue
            where = artifact_where(bundle, art)
            path = artifact_path(bundle, art)
            if size(path) != art["bytes"]:
                raise BundleError(f"{where}: {art['path']!r} is {size(path)} bytes but the manifest says "
                                  f"{art['bytes']}; "
                                  "the file changed after export")
            if sha256(path) != art["sha256"]:
                raise BundleError(f"{where}: {art['path']!r} sha256 does not match the manifest; the file changed "
                                  "after export")
            for comp in art.get("companions") or []:  # files that ship with the artifact (ORT's operator config)
                cpath = safe_member(bundle, comp["path"], where)
                if not cpath.is_file() or sha256(cpath) != comp["sha256"]:
                    raise BundleError(f"{where}: companion file {comp['path']!r} is missing or changed after export")
    return manifest
