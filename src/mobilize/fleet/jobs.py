"""One fleet job: one model × format × precision, exported and verified by ``mobilize.api.export`` in a process of
its own (``python -m mobilize.fleet.jobs SPEC OUT``), so a crash, an abort or a killed worker costs one attempt of
one job.

A job is keyed by what decides its result (:func:`job_key`): the model's config table, the bytes of the files it
names (model source, weights, calibration), the format and precision, and the versions of mobilize and of the
converters and runtimes. A key whose result is already stored in ``<output>/.jobs/<key>/`` is not run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

JOBS_DIR = ".jobs"
RESULT = "result.json"


class JobLost(Exception):
    """The job's process ended without a result (crashed, killed, or its worker died): worth another attempt."""


@dataclasses.dataclass(frozen=True)
class Job:
    model: str
    format: str
    precision: str
    key: str
    config: str  # the fleet config's path (the job process reads the model's table from it)
    store: str  # the fleet's job store: <output>/.jobs

    @property
    def label(self) -> str:
        return f"{self.model}/{self.format}/{self.precision}"

    def spec(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def job_key(cfg: Any, fmt: str, precision: str) -> str:
    """sha256 over the model's validated config, the files it names, the job's format × precision and the tool
    versions: equal keys give equal files."""
    from mobilize import __version__
    from mobilize.bundle.hashing import sha256
    from mobilize.bundle.manifest import tool_versions
    from mobilize.check.pipeline import _file_part

    d = cfg.to_dict()
    for k in ("path", "output", "baseline", "digest", "bench", "budgets", "regression"):
        d.pop(k, None)  # where results go and how they are judged do not change the exported files
    files = {}
    for p in (_file_part(cfg.source), cfg.weights, _file_part(cfg.calibration)):
        if p is not None and Path(p).is_file():
            files[str(p)] = sha256(Path(p))
        elif p is not None and Path(p).is_dir():
            files[str(p)] = _folder_digest(Path(p))
    payload = {"config": d, "files": files, "format": fmt, "precision": precision, "mobilize": __version__,
               "tools": tool_versions()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _folder_digest(folder: Path) -> str:
    from mobilize.bundle.hashing import sha256

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + bytes.fromhex(sha256(p)))
    return h.hexdigest()


# --- running a job -------------------------------------------------------------------------------------------------


def execute(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one job in a fresh process and return ``{"result": …, "archive": bytes}`` (the job's bundle as a tar),
    or raise :class:`JobLost`. Runs in the caller's process: a thread of the local executor or a Ray worker."""
    _count_attempt(spec)
    _fault(spec, where="worker")
    with tempfile.TemporaryDirectory(prefix="mobilize-job-") as tmp:
        out = Path(tmp)
        cmd = [sys.executable, "-m", "mobilize.fleet.jobs", json.dumps(spec), str(out)]
        env = {**os.environ}
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise JobLost(f"{spec['model']}/{spec['format']}/{spec['precision']}: timed out after {timeout:g} s") \
                from None
        result_path = out / RESULT
        if not result_path.is_file():
            tail = (proc.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-3:]
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   and -proc.returncode in {s.value for s in signal.Signals} else f"exit code {proc.returncode}")
            raise JobLost(f"the job's process ended without a result ({how})"
                          + (f": {' / '.join(tail)[:300]}" if tail else ""))
        result = json.loads(result_path.read_text())
        buf = io.BytesIO()
        if (out / "bundle").is_dir():
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                tar.add(out / "bundle", arcname="bundle")
        return {"result": result, "archive": buf.getvalue()}


def _count_attempt(spec: dict[str, Any]) -> None:
    store = Path(spec["store"])
    store.mkdir(parents=True, exist_ok=True)
    with (store / f"{spec['key']}.attempts").open("a") as f:
        f.write(f"{time.time():.3f} {os.getpid()}\n")


def attempts(store: Path, key: str) -> int:
    p = store / f"{key}.attempts"
    return len(p.read_text().splitlines()) if p.is_file() else 0


def _fault(spec: dict[str, Any], *, where: str) -> None:
    """Test hook ``MOBILIZE_FLEET_FAULT="model/format/precision@where:times"``: the first ``times`` attempts of
    that job die by SIGKILL mid-job — ``where`` = ``worker`` kills the process running :func:`execute` (a Ray
    worker), ``job`` the job's own process, after its export has started (``times`` = ``always``: every attempt)."""
    for item in filter(None, os.environ.get("MOBILIZE_FLEET_FAULT", "").split(",")):
        label, _, rest = item.partition("@")
        place, _, times = rest.partition(":")
        if label != f"{spec['model']}/{spec['format']}/{spec['precision']}" or place != where:
            continue
        if where == "worker" and spec.get("executor") != "ray":  # never the process that runs a local fleet
            continue
        if times == "always" or attempts(Path(spec["store"]), spec["key"]) <= int(times or 1):
            if where == "worker":  # let the job's process start first, so the worker dies mid-job
                threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
            else:
                os.kill(os.getpid(), signal.SIGKILL)


def _watch_parent() -> None:
    """End this job's process when the process that started it dies (a killed Ray worker must not leave an
    orphan export running)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="mobilize-job-parent-watch").start()


def main(argv: list[str]) -> int:
    """``python -m mobilize.fleet.jobs SPEC_JSON OUT_DIR``: export one model × format × precision into
    ``OUT_DIR/bundle`` and write ``OUT_DIR/result.json``."""
    _watch_parent()
    spec = json.loads(argv[0])
    out = Path(argv[1])
    from mobilize import formats as registry
    from mobilize.check.pipeline import _on_sys_path
    from mobilize.fleet.config import load

    fleet = load(spec["config"])
    cfg = dict(fleet.models)[spec["model"]]
    fmts = [spec["format"]]
    source = registry.get(spec["format"]).converts_from
    if source:
        fmts.insert(0, source)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"key": spec["key"], "model": spec["model"], "format": spec["format"],
                              "precision": spec["precision"]}
    try:
        from mobilize import api

        def step(msg: str) -> None:
            if msg.startswith("exporting"):
                _fault(spec, where="job")

        with _on_sys_path(cfg.root):
            res = api.export(cfg.source, out / "bundle", formats=fmts, precisions=[spec["precision"]],
                             options=cfg.export, strict=cfg.strict, weights=cfg.weights,
                             trust_pickle=cfg.trust_pickle, calibration=cfg.calibration, target=cfg.accuracy,
                             tolerances=cfg.tolerances, fitness=cfg.fitness, on_step=step,
                             # the fleet already runs its jobs side by side (one core each): one process per job
                             # unless the config's [accuracy] jobs asks for more
                             jobs=(cfg.accuracy.jobs if cfg.accuracy is not None else None) or 1)
        result.update(ok=True, exit_code=res.exit_code)
    except Exception as exc:  # noqa: BLE001 - reported as this job's error (not retried: it would raise again)
        result.update(ok=False, error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:600]}",
                      kind=type(exc).__name__)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    (out / RESULT).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    from mobilize._exit import exit_now

    exit_now(main(sys.argv[1:]))
