"""Fleets: many models in one ``mobilize check`` (``[[models]]`` tables; docs/ci.md).

```
fleet config ──▶ jobs (model × format × precision, keyed) ──▶ executor (local processes | Ray tasks), retries
      ──▶ <output>/.jobs/<key>/bundle (stored; a stored key is not run again)
      ──▶ per model: merge the jobs' files into one bundle, fitness judged across them ──▶ check.pipeline.run
      ──▶ <output>/<model>/ (bundle, check.json, junit.xml, summary.md) + <output>/junit.xml, summary.md, fleet.json
```
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mobilize.fleet.config import Executor, Fleet, is_fleet, load, parse_shard
from mobilize.fleet.jobs import JOBS_DIR, RESULT, Job, attempts, job_key

__all__ = ["Executor", "Fleet", "FleetResult", "is_fleet", "load", "parse_shard", "plan", "run"]

StepCallback = Callable[[str], None]
FLEET_RESULTS = "fleet.json"
FLEET_SCHEMA = "mobilize-fleet/1"


@dataclasses.dataclass
class FleetResult:
    fleet: Fleet
    models: dict[str, dict[str, Any]]  # name → check record (CheckResult.to_dict()), or a failure record
    jobs: list[dict[str, Any]]
    shard: tuple[int, int] | None
    seconds: float
    executor: str = "local"
    written: list[Path] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(m["exit_code"] for m in self.models.values()) else 0

    def counts(self) -> dict[str, int]:
        out = {"tests": 0, "passed": 0, "failed": 0, "skipped": 0}
        for m in self.models.values():
            for k in out:
                out[k] += m["counts"][k]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"schema": FLEET_SCHEMA, "status": "fail" if self.exit_code else "pass", "exit_code": self.exit_code,
                "seconds": round(self.seconds, 2), "counts": self.counts(), "fleet": self.fleet.to_dict(),
                "shard": list(self.shard) if self.shard else None, "executor": self.executor, "jobs": self.jobs,
                "models": {n: {"exit_code": m["exit_code"], "counts": m["counts"], "status": m["status"]}
                           for n, m in self.models.items()}}


def plan(fleet: Fleet, shard: tuple[int, int] | None = None) -> list[Job]:
    """Every model × format × precision job in a fixed order (models as listed, formats in dependency order,
    precisions as listed); ``shard`` (i, N) keeps every N-th job starting at the i-th."""
    from mobilize import formats as registry

    store = str(fleet.output / JOBS_DIR)
    jobs = [Job(name, fmt, prec, job_key(cfg, fmt, prec), str(fleet.path), store)
            for name, cfg in fleet.models
            for fmt in registry.in_dependency_order(list(cfg.formats)) for prec in cfg.precisions]
    if shard is not None:
        i, n = shard
        jobs = [j for k, j in enumerate(jobs) if k % n == i - 1]
    return jobs


def run(fleet: Fleet | str | Path | None = None, *, executor: str | None = None, jobs: int | None = None,
        shard: tuple[int, int] | None = None, update_baseline: bool = False,
        on_step: StepCallback | None = None) -> FleetResult:
    """Run every job of the fleet (on ``executor``: the config's ``[executor]`` unless given), merge each model's
    files into its bundle, judge it with the single-model check, and write the merged JUnit, summary and
    ``fleet.json`` into the fleet's output folder. Returns the :class:`FleetResult` (exit code 1 if any check
    failed, including a job that failed every attempt)."""
    fleet = fleet if isinstance(fleet, Fleet) else load(fleet)
    step = on_step or (lambda _m: None)
    ex = fleet.executor
    if executor is not None:
        ex = dataclasses.replace(ex, kind=executor)
    if jobs is not None:
        ex = dataclasses.replace(ex, jobs=jobs)
    t0 = time.perf_counter()
    fleet.output.mkdir(parents=True, exist_ok=True)
    todo = plan(fleet, shard)
    store = fleet.output / JOBS_DIR
    cached = {j.key for j in todo if _stored(store, j.key)}
    fresh = [j for j in todo if j.key not in cached]
    for j in fresh:  # attempts are counted per run
        (store / f"{j.key}.attempts").unlink(missing_ok=True)
    step(f"{len(todo)} job(s): {len(cached)} stored, {len(fresh)} to run on {ex.kind}")
    if ex.kind == "ray":
        from mobilize.fleet.executors import run_ray

        outcomes = run_ray(fresh, address=ex.address, retries=ex.retries, num_cpus=ex.num_cpus, on_event=step)
    else:
        from mobilize.bench.machine import usable_cores
        from mobilize.fleet.executors import run_local

        outcomes = run_local(fresh, workers=ex.jobs or usable_cores(), retries=ex.retries, on_event=step)
    records = []
    for job in todo:
        rec = {"model": job.model, "format": job.format, "precision": job.precision, "key": job.key,
               "attempts": attempts(store, job.key)}
        if job.key in cached:
            rec.update(status="stored")
        else:
            out = outcomes[job.key]
            if out["status"] == "done":
                _store(store, job.key, out["payload"])
                result = out["payload"]["result"]
                rec.update(status="done" if result.get("ok") else "error", seconds=result.get("seconds"),
                           **({"error": result["error"]} if not result.get("ok") else {}))
            else:
                rec.update(status="failed", error=out["error"])
        records.append(rec)
    models: dict[str, dict[str, Any]] = {}
    for name, cfg in fleet.models:
        mine = [(j, r) for j, r in zip(todo, records) if j.model == name]
        if not mine:
            continue
        step(f"{name}: merging {len(mine)} job(s)")
        models[name] = _check_model(cfg, name, mine, store, update_baseline, step)
    result = FleetResult(fleet, models, records, shard, time.perf_counter() - t0, ex.kind)
    result.written = write_outputs(result)
    return result


def _stored(store: Path, key: str) -> bool:
    """A job result kept from an earlier run whose files still match its manifest."""
    from mobilize.bundle import manifest as mf
    from mobilize.errors import MobilizeError

    folder = store / key
    try:
        result = json.loads((folder / RESULT).read_text())
        if not result.get("ok"):
            return False
        mf.read(folder / "bundle", check_files=True)
    except (OSError, ValueError, MobilizeError):
        return False
    return True


def _store(store: Path, key: str, payload: dict[str, Any]) -> None:
    folder = store / key
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if payload["archive"]:
        with tarfile.open(fileobj=io.BytesIO(payload["archive"]), mode="r:gz") as tar:
            tar.extractall(folder, filter="data")
    (folder / RESULT).write_text(json.dumps(payload["result"]))


def _check_model(cfg: Any, name: str, mine: list[tuple[Job, dict[str, Any]]], store: Path, update_baseline: bool,
                 step: StepCallback) -> dict[str, Any]:
    from mobilize.check.pipeline import run as check_run
    from mobilize.fleet.merge import merge

    merged = merge(cfg, [(j, r, store / j.key) for j, r in mine], step)
    if merged is None:
        return _failed_model(cfg, name, mine)
    from mobilize.progress import as_details

    # a fleet has no plan of its own (jobs finish in any order): each model's numbered steps are details
    result = check_run(cfg, exported=(merged, cfg.bundle), update_baseline=update_baseline, on_step=as_details(step))
    data = result.to_dict()
    data["jobs"] = [r for _, r in mine]
    return data


def _failed_model(cfg: Any, name: str, mine: list[tuple[Job, dict[str, Any]]]) -> dict[str, Any]:
    """No job of the model produced a bundle: one failing ``export`` check per job, with its error."""
    import datetime as _dt

    from mobilize import __version__

    arts = [{"format": j.format, "precision": j.precision, "path": None, "vs_baseline": "—",
             "checks": [{"name": "export", "status": "fail",
                         "message": f"job {j.label} {r['status']}: {r.get('error', 'no result')}"}]}
            for j, r in mine]
    return {"schema": "mobilize-check/1", "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "seconds": 0.0, "status": "fail", "exit_code": 1,
            "counts": {"tests": len(arts), "passed": 0, "failed": len(arts), "skipped": 0},
            "config": {**cfg.to_dict(), "source": cfg.source_text}, "bundle": str(cfg.bundle), "model_name": name,
            "mobilize_version": __version__, "baseline": {"path": str(cfg.baseline), "exists": False,
                                                          "created": None, "updated": False},
            "notes": [f"no job of {name} produced a file"], "artifacts": arts, "jobs": [r for _, r in mine],
            "no_bundle": True}


def write_outputs(result: FleetResult) -> list[Path]:
    """``junit.xml`` (one suite per model), ``summary.md`` and ``fleet.json`` in the fleet's output folder."""
    from mobilize.bundle.writer import write_atomic
    from mobilize.fleet.report import junit, summary

    out = result.fleet.output
    files = {out / "junit.xml": junit(result), out / "summary.md": summary(result).encode(),
             out / FLEET_RESULTS: (json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n").encode()}
    for path, payload in files.items():
        write_atomic(path, payload)
    return list(files)
