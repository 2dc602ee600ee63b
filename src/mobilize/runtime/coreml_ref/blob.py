"""Reader for Core ML's MIL blob storage file (``weights/weight.bin``), in pure NumPy.

Layout (coremltools ``mlmodel/src/MILBlob/Blob/StorageFormat.hpp``), little-endian, every record 64-byte aligned::

    storage_header  uint32 count, uint32 version (= 2), 7 × uint64 reserved               64 bytes
    blob_metadata   uint32 sentinel (0xDEADBEEF), uint32 data type, uint64 size in bytes,
                    uint64 data offset, 5 × uint64 reserved                                64 bytes
    data            ``size in bytes`` bytes at ``data offset``

A ``BlobFileValue(fileName, offset)`` in the program points at a ``blob_metadata``. Sub-byte types (int4, uint1..6)
are packed least-significant bit first.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from mobilize.runtime.coreml_ref.errors import WeightFileError

SENTINEL = 0xDEADBEEF
HEADER_SIZE = 64
METADATA_SIZE = 64

# BlobDataType codes → (name, numpy holder dtype, bits per element)
BLOB_TYPES: dict[int, tuple[str, str, int]] = {
    1: ("fp16", "float16", 16), 2: ("fp32", "float32", 32), 3: ("uint8", "uint8", 8), 4: ("int8", "int8", 8),
    5: ("bf16", "uint16", 16), 6: ("int16", "int16", 16), 7: ("uint16", "uint16", 16), 8: ("int4", "int8", 4),
    9: ("uint1", "uint8", 1), 10: ("uint2", "uint8", 2), 11: ("uint4", "uint8", 4), 12: ("uint3", "uint8", 3),
    13: ("uint6", "uint8", 6), 14: ("int32", "int32", 32), 15: ("uint32", "uint32", 32),
}


class BlobFile:
    """One weight file, read into memory once; :meth:`read` returns the blob at a metadata offset."""

    def __init__(self, path: Path, *, display: str | None = None) -> None:
        self.path = path
        self.display = display or str(path)
        if not path.is_file():
            raise WeightFileError(f"{self.display}: weight file is missing")
        self.data = path.read_bytes()
        if len(self.data) < HEADER_SIZE:
            raise WeightFileError(f"{self.display}: truncated weight file ({len(self.data)} bytes, shorter than "
                                  f"its {HEADER_SIZE}-byte header)")
        self.count, self.version = struct.unpack_from("<II", self.data, 0)
        if self.version != 2:
            raise WeightFileError(f"{self.display}: unsupported blob storage version {self.version} (expected 2)")

    def read(self, offset: int, dtype_name: str, count: int) -> np.ndarray:
        """The ``count`` elements of the blob whose metadata is at ``offset``, as a flat array of ``dtype_name``
        (a MIL dtype name such as ``fp16`` or ``uint4``; sub-byte values come back unpacked, one per element)."""
        where = f"{self.display}: blob at offset {offset}"
        if offset < HEADER_SIZE or offset + METADATA_SIZE > len(self.data):
            raise WeightFileError(f"{where} lies outside the file ({len(self.data)} bytes; truncated weight file?)")
        sentinel, code, nbytes, data_offset = struct.unpack_from("<IIQQ", self.data, offset)
        if sentinel != SENTINEL:
            raise WeightFileError(f"{where}: bad metadata sentinel 0x{sentinel:08X} (expected 0xDEADBEEF; the file "
                                  "is corrupted or the offset is wrong)")
        if code not in BLOB_TYPES:
            raise WeightFileError(f"{where}: unknown blob data type code {code}")
        name, holder, bits = BLOB_TYPES[code]
        if name != dtype_name:
            raise WeightFileError(f"{where}: stores {name} but the program declares {dtype_name}")
        if data_offset + nbytes > len(self.data):
            raise WeightFileError(f"{where}: data [{data_offset}, {data_offset + nbytes}) runs past the end of the "
                                  f"file ({len(self.data)} bytes; truncated weight file?)")
        expected = -(-count * bits // 8)
        if nbytes != expected:
            raise WeightFileError(f"{where}: holds {nbytes} bytes but the program's shape needs {expected}")
        raw = np.frombuffer(self.data, dtype=np.uint8, count=nbytes, offset=data_offset)
        if bits < 8:
            return unpack_bits(raw, bits, count, signed=name.startswith("int"))
        if name == "bf16":
            return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        return raw.view(holder).copy()


def unpack_bits(packed: np.ndarray, bits: int, count: int, *, signed: bool) -> np.ndarray:
    """Unpack ``count`` ``bits``-wide integers stored least-significant bit first (uint8 out, int8 if ``signed``)."""
    flat = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")[: count * bits]
    weights = (1 << np.arange(bits)).astype(np.int16)
    values = flat.reshape(count, bits).astype(np.int16) @ weights
    if signed:
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
        return values.astype(np.int8)
    return values.astype(np.uint8)
