"""Size: bytes on disk, bytes zipped (what an app download costs), and the ratio to the parameter-byte floor."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

#: bits per stored parameter for each precision (the floor is parameters × bits / 8)
BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}


def zipped_size(*paths: Path) -> int:
    """Bytes of a ``zip -9`` archive (deflate, level 9) holding the files, each package folder under its folder
    name — the size an app store download or an over-the-air model update costs."""
    fd, tmp = tempfile.mkstemp(suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            for path in map(Path, paths):
                if path.is_dir():
                    for p in sorted(q for q in path.rglob("*") if q.is_file()):
                        z.write(p, arcname=(Path(path.name) / p.relative_to(path)).as_posix())
                else:
                    z.write(path, arcname=path.name)
        return os.path.getsize(tmp)
    finally:
        os.unlink(tmp)


def floor_bytes(parameters: int | None, precision: str) -> int | None:
    """``parameters × bits / 8`` for ``precision`` (None when either is unknown)."""
    bits = BITS.get(precision)
    if not parameters or bits is None:
        return None
    return parameters * bits // 8


def size_record(path: Path, precision: str, parameters: int | None) -> dict[str, int | float | None]:
    from mobilize.bundle.hashing import size

    n = size(Path(path))
    floor = floor_bytes(parameters, precision)
    return {
        "bytes": n,
        "zipped_bytes": zipped_size(path),
        "floor_bytes": floor,
        "floor_ratio": round(n / floor, 4) if floor else None,
    }
