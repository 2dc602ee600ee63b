"""Check a ``.mlpackage`` folder before coremltools, Core ML or the reference interpreter touches it.

A package is ``Manifest.json`` plus ``Data/…``; the manifest's ``itemInfoEntries`` name the model spec and the weights
by path, and coremltools' C++ package reader opens whatever those paths say. So, from ``os.stat`` and one bounded
read of ``Manifest.json``:

- the package is a real folder holding regular files and folders only — no symlinks (in or out), FIFOs, devices or
  sockets — and at most :data:`MAX_ENTRIES` of them;
- ``Manifest.json`` is small, valid, shallow JSON of the expected shape;
- every item path is relative, has no ``..``, no backslash or control character, and names an existing file or folder
  inside ``Data/``; the root model item is a regular file of bounded size.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from mobilize.errors import BundleError, MobilizeInputError
from mobilize.safeio import MB, check_tree, load_json, read_bytes, refuse_special

MANIFEST_LIMIT = 1 * MB
SPEC_LIMIT = 512 * MB  # the model.mlmodel protobuf (weights live in weight.bin, which may be much larger)
MAX_ENTRIES = 10_000
PACKAGE_LIMIT = 16 << 30


def check_package(path: str | Path, where: str | None = None) -> None:
    """Raise :class:`~mobilize.errors.BundleError` (one line) unless ``path`` is a well-formed, self-contained
    ``.mlpackage``."""
    pkg = Path(path)
    label = where or str(pkg)
    try:
        _check(pkg, label)
    except BundleError:
        raise
    except MobilizeInputError as exc:
        raise BundleError(f"{label}: {exc}") from None


def _check(pkg: Path, label: str) -> None:
    if pkg.is_symlink():
        raise BundleError(f"{label}: {pkg.name} is a symlink; a package must be a real folder")
    st = refuse_special(pkg)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise BundleError(f"{label}: {pkg.name} is not a folder; a .mlpackage is a folder")
    files = check_tree(pkg, max_entries=MAX_ENTRIES)  # no symlinks, no special files, bounded
    total = sum(f.stat().st_size for f in files)
    if total > PACKAGE_LIMIT:
        raise BundleError(f"{label}: {pkg.name} holds {total >> 20} MB, more than a Core ML package mobilize reads "
                          f"({PACKAGE_LIMIT >> 30} GB); refusing it")
    manifest_path = pkg / "Manifest.json"
    if not manifest_path.is_file():
        raise BundleError(f"{label}: {pkg.name} has no Manifest.json; not a .mlpackage")
    doc = load_json(read_bytes(manifest_path, limit=MANIFEST_LIMIT), f"{pkg.name}/Manifest.json", max_depth=8)
    entries = doc.get("itemInfoEntries") if isinstance(doc, dict) else None
    root_id = doc.get("rootModelIdentifier") if isinstance(doc, dict) else None
    if not isinstance(entries, dict) or not entries or not isinstance(root_id, str) or root_id not in entries:
        raise BundleError(f"{label}: {pkg.name}/Manifest.json is malformed (itemInfoEntries / rootModelIdentifier); "
                          "re-export the package")
    data = pkg / "Data"
    for item_id, item in entries.items():
        rel = item.get("path") if isinstance(item, dict) else None
        if not isinstance(rel, str) or not rel:
            raise BundleError(f"{label}: {pkg.name}/Manifest.json item {str(item_id)[:60]!r} has no path")
        target = _inside(data, rel, pkg, label, "the model spec" if item_id == root_id else "the item")
        if item_id == root_id:
            st = refuse_special(target)
            if st is None or not stat.S_ISREG(st.st_mode):
                raise BundleError(f"{label}: the model spec {rel!r} named by {pkg.name}/Manifest.json is missing")
            if st.st_size > SPEC_LIMIT:
                raise BundleError(f"{label}: the model spec {rel!r} is {st.st_size} bytes, more than a Core ML spec "
                                  "holds; refusing it")


def _inside(data: Path, rel: str, pkg: Path, label: str, what: str) -> Path:
    parts = rel.split("/")
    if (rel.startswith("/") or "\\" in rel or ".." in parts or any(ord(c) < 32 for c in rel)
            or any(p in ("", ".") for p in parts)):
        raise BundleError(f"{label}: {pkg.name}/Manifest.json names {rel[:80]!r}, which points outside the package; "
                          "refusing it")
    target = data.joinpath(*parts)
    try:
        target.resolve(strict=True).relative_to(pkg.resolve())
    except FileNotFoundError:
        raise BundleError(f"{label}: {what} {rel[:80]!r} named by {pkg.name}/Manifest.json is missing from the "
                          "package") from None
    except (ValueError, OSError):
        raise BundleError(f"{label}: {pkg.name}/Manifest.json names {rel[:80]!r}, which resolves outside the "
                          "package; refusing it") from None
    return target


def manifest_doc(pkg: Path) -> dict[str, Any]:
    """``Manifest.json`` of a checked package."""
    return load_json(read_bytes(pkg / "Manifest.json", limit=MANIFEST_LIMIT), f"{pkg.name}/Manifest.json",
                     max_depth=8)
