"""Detect a file's format from its content, never its extension.

Every sniffer reads at most a few KB and raises nothing but :class:`~mobilize.errors.MobilizeInputError`
subclasses (fuzzed in tests/test_sniff.py).
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from mobilize.errors import MobilizeInputError

KINDS = ("onnx", "tflite", "ort", "pte", "mlpackage", "pt2", "torch-zip", "pickle", "safetensors", "npz", "unknown")


def sniff(path: str | Path) -> str:
    """One of :data:`KINDS` for ``path`` (a file or an ``.mlpackage`` folder)."""
    from mobilize.safeio import refuse_special

    p = Path(path)
    refuse_special(p)  # a FIFO would block the open below; a device is not a model
    try:
        if p.is_dir():
            return "mlpackage" if (p / "Manifest.json").is_file() else "unknown"
        with p.open("rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise MobilizeInputError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return sniff_bytes(head, p)


def sniff_bytes(head: bytes, path: Path | None = None) -> str:
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if len(head) >= 8 and head[4:8] == b"ORTM":  # onnxruntime's ORT-format flatbuffer
        return "ort"
    if len(head) >= 8 and head[4:6] == b"ET" and head[6:8].isdigit():  # ExecuTorch program flatbuffer ("ET12")
        return "pte"
    if head[:4] == b"PK\x03\x04" and path is not None:
        return _sniff_zip(path)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if _is_safetensors(head):
        return "safetensors"
    if _is_onnx(head):
        return "onnx"
    return "unknown"


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except Exception:  # noqa: BLE001 - zipfile raises many types (even IndexError) on hostile archives
        return "unknown"
    if any(n.endswith("archive_format") for n in names):
        return "pt2"
    if any(n.endswith("data.pkl") for n in names):
        return "torch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "unknown"


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if not 2 <= n <= 100_000_000 or head[8:9] != b"{":
        return False
    if n + 8 <= len(head):
        try:
            return isinstance(json.loads(head[8 : 8 + n]), dict)
        except (ValueError, UnicodeDecodeError):
            return False
    return True


def _is_onnx(head: bytes) -> bool:
    """An ONNX ModelProto starts with field 1 (ir_version, varint, tag 0x08) and small ir_version values; the
    writers we know put it first. Checking the first two fields keeps random bytes from passing."""
    if len(head) < 4 or head[0] != 0x08 or not 1 <= head[1] <= 20:
        return False
    # next field: producer_name (2, len-delimited: 0x12), opset_import (8: 0x42), graph (7: 0x3a), domain (4: 0x22)...
    return head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x52, 0x72)


def expect(path: str | Path, kind: str, what: str) -> None:
    """Raise :class:`MobilizeInputError` unless ``path`` holds ``kind``."""
    got = sniff(path)
    if got != kind:
        found = "not recognised" if got == "unknown" else f"{got} data"
        raise MobilizeInputError(f"{path}: expected {what} but the content is {found}; the file may be truncated, "
                                 "corrupted or mislabelled")
