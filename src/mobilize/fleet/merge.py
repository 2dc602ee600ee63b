"""One bundle per model from its jobs' bundles: the files side by side, one manifest, and the fitness judgement
made again across all of them (it compares each file with its siblings and times them together)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def merge(cfg: Any, jobs: list[tuple[Any, dict[str, Any], Path]], step: Callable[[str], None]) -> dict[str, Any] | None:
    """Merge ``(job, record, stored folder)`` triples into ``cfg.bundle`` (written atomically); returns the manifest,
    or None when no job produced a bundle. A job without a file becomes a ``failed`` artifact that says why."""
    from mobilize import api
    from mobilize.bundle import manifest as mf
    from mobilize.bundle.hashing import sha256
    from mobilize.bundle.writer import staged
    from mobilize.errors import MobilizeError
    from mobilize.verify import fitness as fitness_mod

    loaded = []
    for job, rec, folder in jobs:
        manifest = None
        if rec["status"] in ("done", "stored"):
            try:
                manifest = mf.read(folder / "bundle", check_files=True)
            except MobilizeError as exc:
                rec = {**rec, "status": "failed", "error": f"its stored bundle is unusable: {exc}"}
        loaded.append((job, rec, folder / "bundle", manifest))
    base = next((m for _j, _r, _f, m in loaded if m is not None), None)
    if base is None:
        return None
    base_folder = next(f for _j, _r, f, m in loaded if m is base)
    ref_sha = sha256(base_folder / mf.REFERENCE)
    artifacts: list[dict[str, Any]] = []
    cfg.bundle.parent.mkdir(parents=True, exist_ok=True)
    with staged(cfg.bundle) as tmp:
        shutil.copy2(base_folder / mf.REFERENCE, tmp / mf.REFERENCE)
        for job, rec, folder, manifest in loaded:
            art = None
            if manifest is not None:
                art = next((a for a in manifest["artifacts"] if a["format"] == job.format
                            and a["precision"] == job.precision), None)
            if art is None:
                why = rec.get("error") or ("the job's manifest has no such file" if manifest is not None
                                           else "no result")
                artifacts.append(_failed(job, f"job {job.label} {rec['status']}: {why}"))
                continue
            art = dict(art)
            for rel in [art.get("path"), *(c["path"] for c in art.get("companions") or [])]:
                if rel:
                    src = mf.safe_member(folder, rel, str(folder / mf.MANIFEST))
                    (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / rel)
            if sha256(folder / mf.REFERENCE) != ref_sha:  # every job draws the same seeded inputs: they must agree
                art["notes"] = [*art.get("notes", []), f"job {job.label} computed a different PyTorch reference "
                                                       "than the bundle's (a non-deterministic model?)"]
            artifacts.append(art)
        manifest = {**base, "artifacts": artifacts}
        step(f"{cfg.bundle.parent.name}: timing {sum(a['status'] == 'ok' for a in artifacts)} file(s) together")
        api.judge_fitness(tmp, artifacts, base["capture"].get("graph") or {}, base["model"].get("floor_bytes") or {},
                          ref_path=tmp / mf.REFERENCE, input_names=[t["name"] for t in base["model"]["inputs"]],
                          thresholds=cfg.fitness,
                          dynamic=fitness_mod.requested_dynamic(base["model"]["inputs"]))
        manifest["summary"] = api.summarize(artifacts)
        mf.validate(manifest)
        (tmp / mf.MANIFEST).write_bytes(mf.dumps(manifest))
    return manifest


def _failed(job: Any, message: str) -> dict[str, Any]:
    return {"format": job.format, "precision": job.precision, "status": "failed", "path": None, "bytes": None,
            "sha256": None, "inputs": [], "outputs": [], "parity": None, "notes": [],
            "error": {"message": message, "ops": [], "modules": [], "converter_log_tail": [], "kind": "internal"}}
