"""weight.bin parsing: real files, sub-byte unpacking, and clear typed errors for missing, truncated or corrupted
weight files."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

from mobilize.errors import MobilizeError, RuntimeFailure
from mobilize.runtime.coreml_ref import CoreMLReferenceRunner, WeightFileError
from mobilize.runtime.coreml_ref.blob import BlobFile, unpack_bits

from .conftest import save_program

W = np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x = np.zeros((2, 16), np.float32)
    return save_program(lambda v: mb.linear(x=v, weight=W), [x], tmp_path_factory.mktemp("blob") / "m.mlpackage")


def _copy(package: Path, tmp_path: Path) -> tuple[Path, Path]:
    dst = tmp_path / "m.mlpackage"
    shutil.copytree(package, dst)
    return dst, dst / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


def _run(path: Path) -> np.ndarray:
    with CoreMLReferenceRunner(path) as r:
        return next(iter(r.infer({"v": np.ones((2, 16), np.float32)}).values()))


def test_reads_the_weights_it_was_given(package: Path) -> None:
    np.testing.assert_allclose(_run(package), np.ones((2, 16)) @ W.T, rtol=1e-6, atol=1e-5)
    blob = BlobFile(package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin")
    assert blob.version == 2 and blob.count >= 1
    np.testing.assert_array_equal(blob.read(64, "fp32", W.size).reshape(W.shape), W)


def test_agrees_with_coremltools_native_blob_reader(package: Path) -> None:
    native = pytest.importorskip("coremltools.libmilstoragepython")
    path = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    ours = BlobFile(path).read(64, "fp32", W.size)
    theirs = native._BlobStorageReader(str(path)).read_float_data(64)
    np.testing.assert_array_equal(ours, np.asarray(theirs))


def test_missing_weight_file(package: Path, tmp_path: Path) -> None:
    pkg, weights = _copy(package, tmp_path)
    weights.unlink()
    with pytest.raises(WeightFileError, match=r"weight\.bin: weight file is missing") as ei:
        _run(pkg)
    assert isinstance(ei.value, RuntimeFailure) and "\n" not in str(ei.value)


@pytest.mark.parametrize("keep,match", [(10, "truncated weight file .*header"),
                                        (100, "outside the file|runs past the end"),
                                        (64 + 64 + 100, "runs past the end of the file")])
def test_truncated_weight_file(package: Path, tmp_path: Path, keep: int, match: str) -> None:
    pkg, weights = _copy(package, tmp_path)
    weights.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(WeightFileError, match=match) as ei:
        _run(pkg)
    assert "weight.bin" in str(ei.value) and "\n" not in str(ei.value)


def test_corrupted_metadata_sentinel(package: Path, tmp_path: Path) -> None:
    pkg, weights = _copy(package, tmp_path)
    data = bytearray(weights.read_bytes())
    data[64:68] = struct.pack("<I", 0x12345678)
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match="bad metadata sentinel"):
        _run(pkg)


def test_blob_type_mismatch_and_bad_offset(package: Path) -> None:
    blob = BlobFile(package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin")
    with pytest.raises(WeightFileError, match="stores fp32 but the program declares fp16"):
        blob.read(64, "fp16", W.size)
    with pytest.raises(WeightFileError, match="outside the file"):
        blob.read(10 ** 9, "fp32", 1)
    with pytest.raises(WeightFileError, match="needs"):
        blob.read(64, "fp32", W.size + 1)


def test_missing_model_spec_is_a_typed_error(package: Path, tmp_path: Path) -> None:
    pkg, _ = _copy(package, tmp_path)
    (pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").unlink()
    with pytest.raises(MobilizeError, match="model spec"):
        _run(pkg)
    with pytest.raises(MobilizeError, match="no Manifest.json"):
        _run(tmp_path)


@pytest.mark.parametrize("bits,signed", [(1, False), (2, False), (3, False), (4, False), (6, False), (4, True)])
def test_unpack_bits_matches_coremltools_packing(bits: int, signed: bool) -> None:
    from coremltools.optimize import _utils as ct_utils

    rng = np.random.default_rng(bits)
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    values = rng.integers(lo, hi, size=37).astype(np.int8 if signed else np.uint8)
    packed = ct_utils.pack_elements_into_bits(values, bits)
    np.testing.assert_array_equal(unpack_bits(packed, bits, values.size, signed=signed), values)
