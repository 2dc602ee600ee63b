"""Sizes and checksums of artifacts, files or package folders alike."""

from __future__ import annotations

import hashlib
from pathlib import Path


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_files(path: Path) -> list[Path]:
    return sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())


def sha256(path: Path) -> str:
    """sha256 of a file; for a folder (``.mlpackage``), sha256 over ``"<relpath>\\0<sha256 of file>\\n"`` for each
    file in sorted relative-path order — so renaming, adding, dropping or changing any file changes it."""
    if path.is_file():
        return _file_sha(path)
    h = hashlib.sha256()
    for p in package_files(path):
        h.update(f"{p.relative_to(path).as_posix()}\0{_file_sha(p)}\n".encode())
    return h.hexdigest()


def size(path: Path) -> int:
    """Bytes on disk of a file or all files of a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in package_files(path))
