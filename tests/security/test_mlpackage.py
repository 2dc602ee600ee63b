"""``.mlpackage`` folders are validated before coremltools, Core ML or the reference interpreter touches them."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from mobilize.errors import BundleError, MobilizeInputError
from mobilize.runtime.coreml import read_io

ROOT = "11111111-2222-3333-4444-555555555555"


def _package(folder: Path, spec_path: str = "com.apple.CoreML/model.mlmodel") -> Path:
    pkg = folder / "m.mlpackage"
    (pkg / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    (pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\x08\x09")
    (pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(b"\x00" * 64)
    _manifest(pkg, spec_path)
    return pkg


def _manifest(pkg: Path, spec_path: str) -> None:
    (pkg / "Manifest.json").write_text(json.dumps({
        "fileFormatVersion": "1.0.0", "rootModelIdentifier": ROOT,
        "itemInfoEntries": {ROOT: {"author": "com.apple.CoreML", "name": "model.mlmodel", "path": spec_path},
                            "w": {"author": "com.apple.CoreML", "name": "weights",
                                  "path": "com.apple.CoreML/weights"}}}))


def check_package(pkg: Path) -> None:
    from mobilize.bundle.mlpackage import check_package as check

    check(pkg)


def test_a_well_formed_package_passes(tmp_path: Path) -> None:
    check_package(_package(tmp_path))


@pytest.mark.parametrize("spec_path", ["../../../../../../etc/passwd", "/etc/passwd", "com.apple.CoreML/../../x",
                                       "com.apple.CoreML\\model.mlmodel", "com.apple.CoreML/model.mlmodel\n"])
def test_manifest_paths_outside_the_package_are_refused_before_coremltools(tmp_path: Path, spec_path: str) -> None:
    pkg = _package(tmp_path, spec_path)
    with pytest.raises(BundleError, match="outside the package") as info:
        read_io(pkg)  # what the worker calls: coremltools would open whatever the manifest names
    assert "\n" not in str(info.value)


def test_a_folder_linked_out_of_the_package_is_refused(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.mlmodel").write_bytes(b"secret")
    data = pkg / "Data" / "com.apple.CoreML"
    (data / "model.mlmodel").unlink()
    (data / "model.mlmodel").symlink_to(outside / "model.mlmodel")
    with pytest.raises(BundleError, match="symlink"):
        read_io(pkg)


def test_special_files_in_a_package_are_refused_without_opening_them(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    os.mkfifo(pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin.fifo")
    done: list[BaseException] = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(BundleError, check_package, pkg).value))
    t.start()
    t.join(timeout=30)
    assert done and "FIFO" in str(done[0]), "checking a package with a FIFO in it hung or passed"


def test_a_fifo_manifest_is_refused_without_opening_it(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    (pkg / "Manifest.json").unlink()
    os.mkfifo(pkg / "Manifest.json")
    with pytest.raises(BundleError, match="FIFO"):
        check_package(pkg)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a": ' + "1" * 5000 + "}",
                                  " " * (2 << 20) + "{}", '{"rootModelIdentifier": NaN}'])
def test_hostile_manifest_json_is_a_one_line_error(tmp_path: Path, text: str) -> None:
    pkg = _package(tmp_path)
    (pkg / "Manifest.json").write_text(text)
    with pytest.raises(MobilizeInputError) as info:
        check_package(pkg)
    assert "\n" not in str(info.value) and "Manifest.json" in str(info.value)
