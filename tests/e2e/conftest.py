"""Shared, expensive exports for the end-to-end tests, run once per test run in a small pool of CLI subprocesses.

Every export a test module needs is declared in :data:`JOBS` and reached through a fixture listed in
:data:`NEEDS`. When the first e2e test starts, the pool submits exactly the jobs the *selected* tests need (so
``-k zoo`` does not pay for BERT), two at a time on a 2-core machine; a test blocks only on its own job. Under
pytest-xdist the workers share the jobs (:class:`ExportPool`), so e2e modules spread over the workers freely.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._util import FIXTURES, ZOO_NAMES, Run, load_json, run_cli

# key → CLI arguments (run with cwd = the pool's folder; each job writes --out <key> and --json <key>.json)
JOBS: dict[str, list[str]] = {
    **{
        f"zoo_{n}": ["export", f"zoo:{n}", "--formats", "onnx,coreml,tflite", "--precisions", "fp32,fp16"]
        for n in ZOO_NAMES
    },
    "bert": ["export", f"{FIXTURES / 'bert_tiny.py'}:build", "--precisions", "fp32"],
    "dynamic": ["export", f"{FIXTURES / 'dynamic_conv.py'}:spec", "--precisions", "fp32"],
    "fmod": ["export", f"{FIXTURES / 'unsupported_ops.py'}:fmod_model", "--precisions", "fp32", "--no-repair"],
    "fmod_repaired": ["export", f"{FIXTURES / 'unsupported_ops.py'}:fmod_model", "--precisions", "fp32"],
    "spectral": [
        "export",
        f"{FIXTURES / 'unsupported_ops.py'}:spectral_model",
        "--formats",
        "onnx,coreml",
        "--precisions",
        "fp32",
    ],
    # -v after the subcommand: the global flags are accepted anywhere
    "verbose": ["export", "zoo:digits", "--formats", "coreml,tflite", "--precisions", "fp32", "-v"],
    "placement": ["export", f"{FIXTURES / 'placement_models.py'}:accelerator_model", "--formats",
                  "onnx,ort,tflite,coreml", "--precisions", "fp32,int8-weights", "--coreml-target", "iOS15"],
}
# longest first, so the pool finishes early
ORDER = [
    "zoo_mobilenet_v2",
    "zoo_gru_classifier",
    "zoo_text_encoder",
    "zoo_digits",
    "placement",
    "bert",
    "fmod",
    "fmod_repaired",
    "dynamic",
    "spectral",
    "verbose",
]
# fixture name → jobs it waits on
NEEDS: dict[str, tuple[str, ...]] = {
    "zoo_runs": tuple(f"zoo_{n}" for n in ZOO_NAMES),
    "digits_run": ("zoo_digits",),
    "bert_run": ("bert",),
    "dynamic_run": ("dynamic",),
    "fmod_run": ("fmod",),
    "fmod_repaired_run": ("fmod_repaired",),
    "spectral_run": ("spectral",),
    "verbose_run": ("verbose",),
    "placement_run": ("placement",),
}


@dataclasses.dataclass
class ExportRun:
    """One finished ``mobilize export``: the process, the bundle folder and both manifests."""

    run: Run
    out: Path
    json_path: Path

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest the CLI wrote with --json."""
        assert self.json_path.is_file(), f"--json file missing\n{self.run.describe()}"
        return load_json(self.json_path)

    @property
    def bundle_manifest(self) -> dict[str, Any]:
        return load_json(self.out / "manifest.json")


class ExportPool:
    """Runs the export jobs ahead of the tests that wait on them, each job once per test run.

    The jobs live in one folder shared by every pytest-xdist worker of the run (``make test`` runs the suite on
    every core). A job's lock file (``flock``) makes it run once: the worker that takes the lock runs the CLI and
    writes ``<key>.run.json``; a worker that wants the job meanwhile waits on the lock, then reads the record. Each
    worker prefetches in the background, skipping jobs another worker has already taken.
    """

    def __init__(self, root: Path, keys: set[str], threads: int) -> None:
        self.root = root
        self._executor = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="e2e-export")
        self._futures: dict[str, cf.Future[ExportRun | None]] = {}
        # concurrent exports on two cores: one intra-op thread each avoids oversubscription
        self._env = {"OMP_NUM_THREADS": "1"} if (os.cpu_count() or 1) > 1 else {}
        for key in [k for k in ORDER if k in keys] + sorted(keys - set(ORDER)):
            self._futures[key] = self._executor.submit(self._run, key, False)

    def _run(self, key: str, wait: bool) -> ExportRun | None:
        """The job's result, running it if nobody has; ``wait=False`` (prefetch): None if another worker holds it."""
        record = self.root / f"{key}.run.json"
        with (self.root / f"{key}.lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                return None
            if not record.is_file():
                args = [*JOBS[key], "--out", key, "--json", f"{key}.json"]
                run = run_cli(args, self.root, timeout=600, env=self._env)
                tmp = record.with_suffix(".tmp")
                tmp.write_text(json.dumps({**dataclasses.asdict(run), "cwd": str(run.cwd)}))
                tmp.replace(record)
        done = json.loads(record.read_text())
        run = Run(**{**done, "cwd": Path(done["cwd"])})
        return ExportRun(run, self.root / key, self.root / f"{key}.json")

    def get(self, key: str) -> ExportRun:
        future = self._futures.get(key)
        found = future.result() if future is not None else None
        if found is None:  # not prefetched here, or another worker took it first: wait for its record
            found = self._run(key, True)
        assert found is not None
        return found

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class _Lazy:
    """Mapping-like view that waits only for the key asked for."""

    def __init__(self, pool: ExportPool, prefix: str) -> None:
        self._pool, self._prefix = pool, prefix

    def __getitem__(self, name: str) -> ExportRun:
        return self._pool.get(f"{self._prefix}{name}")


@pytest.fixture(scope="session", autouse=True)
def export_pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportPool]:
    here = Path(__file__).parent
    keys: set[str] = set()
    for item in request.session.items:
        if here in Path(str(item.fspath)).parents:
            for name in getattr(item, "fixturenames", ()):
                keys.update(NEEDS.get(name, ()))
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    # under xdist each worker's base temp is <run>/<worker>: the run's folder is shared by the workers
    root = tmp_path_factory.getbasetemp().parent / "e2e-exports" if worker else tmp_path_factory.mktemp("exports")
    root.mkdir(exist_ok=True)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    pool = ExportPool(root, keys, threads=max(1, min(2, (os.cpu_count() or 1) // workers)))
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def zoo_runs(export_pool: ExportPool) -> _Lazy:
    return _Lazy(export_pool, "zoo_")


@pytest.fixture(scope="session")
def digits_run(export_pool: ExportPool) -> ExportRun:
    return export_pool.get("zoo_digits")


@pytest.fixture(scope="session")
def placement_run(export_pool: ExportPool) -> ExportRun:
    return export_pool.get("placement")


@pytest.fixture(scope="session")
def bert_run(export_pool: ExportPool) -> ExportRun:
    return export_pool.get("bert")


@pytest.fixture(scope="session")
def dynamic_run(export_pool: ExportPool) -> ExportRun:
    return export_pool.get("dynamic")


@pytest.fixture(scope="session")
def fmod_run(export_pool: ExportPool) -> ExportRun:
    return export_pool.get("fmod")


@pytest.fixture(scope="session")
def fmod_repaired_run(export_pool: ExportPool) -> ExportRun:
    return export_pool.get("fmod_repaired")


@pytest.fixture(scope="session")
def spectral_run(export_pool: ExportPool) -> ExportRun:
    return export_pool.get("spectral")


@pytest.fixture(scope="session")
def verbose_run(export_pool: ExportPool) -> ExportRun:
    return export_pool.get("verbose")


@pytest.fixture
def bundle(digits_run: ExportRun, tmp_path: Path) -> Path:
    """A private copy of the digits bundle (every format, fp32 + fp16) at ``tmp_path / "b"``, for tests that edit or
    re-verify it."""
    import shutil

    assert digits_run.run.returncode == 0, digits_run.run.describe()
    dest = tmp_path / "b"
    shutil.copytree(digits_run.out, dest, symlinks=True)
    return dest
