"""``manifest.json``: what an app build reads. Schema in ``manifest.schema.json`` (documented in docs/manifest.md).

Reading a bundle is defensive: the manifest is validated against the schema, every artifact path must stay inside
the bundle folder (no ``..``, no absolute paths, no symlinks leading out), and sizes and checksums are re-checked.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from mobilize.bundle.hashing import sha256, size
from mobilize.errors import BundleError, one_line

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


def validate(manifest: Any, where: str = MANIFEST) -> None:
    """Raise :class:`BundleError` naming the first schema violation."""
    import jsonschema

    try:
        jsonschema.validate(manifest, schema())
    except jsonschema.ValidationError as exc:
        loc = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        if exc.validator == "pattern" and loc.endswith("path"):
            raise BundleError(f"{where}: {loc} {exc.instance!r} points outside the bundle or has illegal characters; "
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


def artifact_where(bundle: Path, art: dict[str, Any]) -> str:
    return f"{bundle / MANIFEST} [{art['format']} {art['precision']}]"


def artifact_path(bundle: Path, art: dict[str, Any]) -> Path:
    """The existing file (or package folder) of an ``ok`` artifact, refusing paths — and, inside a package, symlinks —
    that lead outside the bundle."""
    where = artifact_where(bundle, art)
    path = safe_member(bundle, art["path"], where)
    if path.is_dir():  # a package: no member may lead outside the bundle either
        for member in path.rglob("*"):
            if member.is_symlink():
                safe_member(bundle, member.relative_to(bundle).as_posix(), where)
    if not path.exists():
        raise BundleError(f"{where}: file {art['path']!r} is missing from the bundle")
    return path


def read(bundle: Path, *, check_files: bool = True) -> dict[str, Any]:
    """Load, validate and (optionally) check every artifact's size and sha256 against the files."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: not a folder; give the folder `mobilize export --out` wrote")
    mpath = bundle / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{bundle}: no {MANIFEST}; is this a mobilize bundle?")
    try:
        manifest = json.loads(mpath.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc})") from None
    validate(manifest, str(mpath))
    safe_member(bundle, manifest["reference"]["path"], str(mpath))
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
    return manifest
