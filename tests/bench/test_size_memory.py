"""Sizes (bytes, zipped, floor) and peak memory from a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

from mobilize.bench import memory
from mobilize.bench.size import floor_bytes, size_record, zipped_size

ZIP_OVERHEAD = 512  # local header + central directory + end record for one entry, generously


def test_zipped_file(tmp_path: Path) -> None:
    p = tmp_path / "m.bin"
    p.write_bytes(os.urandom(10_000))  # incompressible: zip can only add its headers
    z = zipped_size(p)
    assert 0 < z <= p.stat().st_size + ZIP_OVERHEAD
    q = tmp_path / "zeros.bin"
    q.write_bytes(bytes(100_000))
    assert 0 < zipped_size(q) < 2_000


def test_zipped_package_folder(tmp_path: Path) -> None:
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    (pkg / "Data" / "weights.bin").write_bytes(os.urandom(4_000))
    assert 4_000 < zipped_size(pkg) <= 4_002 + 2 * ZIP_OVERHEAD


def test_floor() -> None:
    assert floor_bytes(1000, "fp32") == 4000
    assert floor_bytes(1000, "fp16") == 2000
    assert floor_bytes(1000, "int8") == 1000
    assert floor_bytes(None, "fp32") is None and floor_bytes(10, "weird") is None


def test_size_record_matches_files(digits_bundle: Path) -> None:
    path = next(digits_bundle.glob("*.onnx"))
    rec = size_record(path, "fp32", 1000)
    assert rec["bytes"] == path.stat().st_size
    assert 0 < rec["zipped_bytes"] <= rec["bytes"] + ZIP_OVERHEAD
    assert rec["floor_ratio"] == round(rec["bytes"] / 4000, 4)


def test_memory_subprocess(digits_bundle: Path) -> None:
    import json

    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    res = memory.measure(
        {
            "kind": "runner",
            "format": "onnx",
            "path": str(digits_bundle / art["path"]),
            "threads": 1,
            "reference": str(digits_bundle / "reference.npz"),
            "input_names": [t["name"] for t in manifest["model"]["inputs"]],
            "runs": 2,
        }
    )
    assert "error" not in res, res
    assert res["peak_rss_mb"] > 0 and res["peak_rss_mb"] >= res["baseline_rss_mb"] > 0
    assert res["model_rss_mb"] >= 0


def test_memory_subprocess_reports_errors(tmp_path: Path) -> None:
    res = memory.measure(
        {
            "kind": "runner",
            "format": "onnx",
            "path": str(tmp_path / "missing.onnx"),
            "threads": 1,
            "reference": str(tmp_path / "missing.npz"),
            "input_names": ["x"],
        }
    )
    assert "error" in res and res["error"]
