"""One tiny real bundle (zoo:digits → ONNX + TFLite, fp32) and one quick bench run of it, shared by the session."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

#: fast settings for tests (the CLI defaults are ≥ 50 runs and ≥ 1 s; tests check structure, not speed)
QUICK = {"min_runs": 5, "min_seconds": 0.0, "warmup_seconds": 0.0, "warmup_runs": 2, "rounds": 2}

#: the progress messages of the session's export and bench runs ("export", "bench"), for the progress tests
STEPS: dict[str, list[str]] = {}


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # api.export, not mobilize.export: once the mobilize.export package is imported, it shadows that attribute
    from mobilize import api

    out = tmp_path_factory.mktemp("bench") / "digits"
    result = api.export("zoo:digits", out, formats="onnx,tflite", precisions="fp32",
                        on_step=STEPS.setdefault("export", []).append)
    assert result.exit_code == 0
    return out


@pytest.fixture
def bundle_copy(digits_bundle: Path, tmp_path: Path) -> Path:
    """A private copy (bench writes into the bundle)."""
    dest = tmp_path / "bundle"
    shutil.copytree(digits_bundle, dest)
    return dest


@pytest.fixture(scope="session")
def bench_run(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """bench (with baseline and memory subprocesses) on a copy of the bundle, saved: (result, bundle, files)."""
    from mobilize.bench.latency import Settings
    from mobilize.bench.run import bench, save

    dest = tmp_path_factory.mktemp("bench-run") / "digits"
    shutil.copytree(digits_bundle, dest)
    result = bench(dest, threads="1", budget="latency_p90_ms=10000,size_mb=100", settings=Settings(**QUICK),
                   source="zoo:digits", on_step=STEPS.setdefault("bench", []).append)
    files = save(result)
    return result, dest, files
