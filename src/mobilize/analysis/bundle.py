"""``mobilize inspect BUNDLE``: every artifact of a bundle read again — ops, weights per op type, and where its ops
would run on a phone (:mod:`mobilize.analysis.placement`) — each file in a worker process like every artifact.

The bundle is not modified. Core ML op names are mapped to PyTorch modules with the map the export stored (the
captured program is not needed again); ONNX and TFLite files carry their provenance inside.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TARGET_NOTE = re.compile(r"minimum deployment target (\w+)")


@dataclasses.dataclass
class InspectResult:
    """Per artifact: format, precision, path, ``analysis`` and ``placement`` records (see docs/inspect.md)."""

    bundle: Path
    artifacts: list[dict[str, Any]]

    @property
    def findings(self) -> list[str]:
        """What an app build must know: Core ML files that need a newer OS than their target, and files the
        inspection could not read."""
        from mobilize.analysis.placement import findings

        out = []
        for a in self.artifacts:
            label = f"{a['format']} {a['precision']}"
            p = a.get("placement") or {}
            if p.get("error"):
                out.append(f"{label}: not inspected: {p['error']}")
            out += [f"{label}: {line}" for line in findings(p)]
        return out

    @property
    def exit_code(self) -> int:
        return 1 if self.findings else 0

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "mobilize-inspect/1", "bundle": str(self.bundle), "findings": self.findings,
                "artifacts": self.artifacts}


def target_message(dep: dict[str, Any]) -> str:
    """``needs iOS17 but --coreml-target is iOS16: resize (iOS17) in decoder.up (Upsample)``."""
    over = dep.get("ops_newer_than_requested") or []
    parts = []
    for r in over:
        where = ", ".join((r.get("modules") or r.get("op_names") or [])[:3])
        parts.append(f"{r['op']} ×{r['count']} ({r['available_from']})" + (f" in {where}" if where else ""))
    why = "; ".join(parts) or dep.get("reason") or "the file's declared specification version"
    needed = dep["needed"].split("/")[0] if dep.get("requested", "").startswith("iOS") else dep["needed"]
    return f"needs {needed} but --coreml-target is {dep.get('requested')}: {why}"


def requested_target(art: dict[str, Any]) -> str | None:
    """The Core ML target an artifact was exported for (its placement record, else its notes)."""
    dep = (art.get("placement") or {}).get("deployment") or {}
    if dep.get("requested"):
        return dep["requested"]
    for note in art.get("notes") or []:
        m = _TARGET_NOTE.search(note)
        if m:
            return m.group(1)
    return None


def inspect_bundle(bundle: str | Path, *, coreml_target: str | None = None, isolate: bool = True,
                   on_step: Callable[[str], None] | None = None) -> InspectResult:
    """Inspect every exported artifact of ``bundle`` (files checked against the manifest's sha256 first)."""
    import contextlib

    from mobilize import isolate as iso
    from mobilize.bundle import manifest as mf
    from mobilize.errors import OptionError
    from mobilize.export import COREML_TARGETS

    if coreml_target is not None and coreml_target not in COREML_TARGETS:
        raise OptionError(f"--coreml-target {coreml_target!r} is unknown; use one of {', '.join(COREML_TARGETS)}")
    step = on_step or (lambda _m: None)
    bundle = Path(bundle)
    manifest = mf.read(bundle, check_files=True)
    from mobilize.progress import Plan

    plan = Plan(step, sum(a["status"] == "ok" for a in manifest["artifacts"]))  # one step per exported file
    with iso.pool() if isolate else contextlib.nullcontext():  # one worker per format, reused from file to file
        out = [_inspect_one(bundle, art, coreml_target, isolate, plan) for art in manifest["artifacts"]]
    return InspectResult(bundle, out)


def _inspect_one(bundle: Path, art: dict[str, Any], coreml_target: str | None, isolate: bool,
                 plan: Callable[[str], None]) -> dict[str, Any]:
    """One artifact's inspection record (read in its format's worker)."""
    from mobilize import api
    from mobilize import formats as registry
    from mobilize.analysis import placement
    from mobilize.bundle import manifest as mf

    rec: dict[str, Any] = {"format": art["format"], "precision": art["precision"], "path": art.get("path")}
    if art["status"] != "ok":
        rec["placement"] = {"error": "not exported"}
        return rec
    plugin = registry.get(art["format"])
    path = mf.artifact_path(bundle, art)
    plan(f"inspecting {art['format']} {art['precision']}")
    target = coreml_target or requested_target(art)
    found = api.inspect_and_verify(plugin, path, art["precision"], None, [], isolate=isolate, analyze=True,
                                   place={"coreml_target": target})
    rec["analysis"] = found.get("analysis")
    if found.get("analysis_error"):
        rec["analysis_error"] = found["analysis_error"]
    rec["placement"] = found.get("placement") or {"error": found.get("placement_error") or found.get("error")
                                                  or "no placement record"}
    known = ((art.get("placement") or {}).get("op_modules")) or {}
    placement.attach_modules(rec["placement"], known)
    return rec
