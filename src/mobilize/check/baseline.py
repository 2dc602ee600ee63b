"""The committed baseline (``mobilize-baseline.json``): what ``mobilize check`` compares each run against.

A small JSON file meant to live in the repository next to the model code::

    {"schema": "mobilize-baseline/1", "created": "...", "mobilize_version": "0.1.0", "tools": {...},
     "model": {"source": "model.py:build", "name": "Net"},
     "artifacts": [{"format": "onnx", "precision": "fp32", "path": "Net_fp32.onnx", "bytes": 71234,
                    "sha256": "...", "parity": {"status": "pass", "max_abs_error": 1.6e-06, "snr_db": 130.7, ...},
                    "latency": {"threads": 1, "percentile": "p50", "ms": 0.013, "eager_ms": 0.107,
                                "ratio_to_eager": 0.126},
                    "accuracy": null}]}

Latency is stored as a ratio to PyTorch eager measured in the same run, so a baseline recorded on a laptop still
means something on a slower CI runner. Written atomically (temp file + rename).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from mobilize.errors import ConfigError, one_line

SCHEMA = "mobilize-baseline/1"
FIX = "fix it, or delete it and run `mobilize baseline update`"

_NUM = {"type": ["number", "null"]}
_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "artifacts"],
    "properties": {
        "schema": {"const": SCHEMA},
        "created": {"type": "string"},
        "mobilize_version": {"type": ["string", "null"]},
        "tools": {"type": "object"},
        "model": {"type": "object"},
        "artifacts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["format", "precision", "bytes", "sha256"],
                "properties": {
                    "format": {"type": "string"},
                    "precision": {"type": "string"},
                    "path": {"type": ["string", "null"]},
                    "bytes": {"type": "integer", "minimum": 0},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "parity": {"type": ["object", "null"], "properties": {"max_abs_error": _NUM, "snr_db": _NUM}},
                    "latency": {"type": ["object", "null"],
                                "properties": {"ratio_to_eager": _NUM, "threads": {"type": "integer"}}},
                    "accuracy": {"type": ["object", "null"]},
                },
            },
        },
    },
}


def load(path: Path) -> dict[str, Any] | None:
    """The baseline at ``path``; None when there is none yet. A malformed file raises a one-line ConfigError."""
    import jsonschema

    from mobilize.errors import MobilizeInputError
    from mobilize.safeio import JSON_LIMIT, load_json, read_bytes

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    try:  # special files refused unopened, size bounded, nesting and numbers bounded
        data = load_json(read_bytes(path, limit=JSON_LIMIT), str(path))
    except MobilizeInputError as exc:
        raise ConfigError(f"{exc}; {FIX}") from None
    if isinstance(data, dict) and isinstance(data.get("schema"), str) and data["schema"] != SCHEMA:
        raise ConfigError(f"{path}: schema {data['schema']!r} is not {SCHEMA!r} (written by another mobilize "
                          f"version?); {FIX}")
    try:
        jsonschema.validate(data, _SCHEMA)
    except jsonschema.ValidationError as exc:
        loc = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: invalid baseline at {loc}: {one_line(exc.message, 160)}; {FIX}") from None
    return data


def entry(baseline: dict[str, Any] | None, fmt: str, precision: str) -> dict[str, Any] | None:
    """The baseline's record of one artifact, or None."""
    for a in (baseline or {}).get("artifacts", []):
        if a["format"] == fmt and a["precision"] == precision:
            return a
    return None


def from_check(check: dict[str, Any]) -> dict[str, Any]:
    """A baseline from a check record (:meth:`mobilize.check.CheckResult.to_dict`): every exported artifact."""
    arts = []
    for a in check["artifacts"]:
        if a["bytes"] is None or a["sha256"] is None:
            continue
        arts.append({"format": a["format"], "precision": a["precision"], "path": a["path"], "bytes": a["bytes"],
                     "sha256": a["sha256"], "parity": a["parity"], "latency": a["latency"],
                     "accuracy": a["accuracy"]})
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "mobilize_version": check.get("mobilize_version"),
        "tools": check.get("tools") or {},
        "machine": check.get("machine"),
        "model": {"source": check["config"]["source"], "name": check.get("model_name")},
        "artifacts": arts,
    }


def save(path: Path, data: dict[str, Any]) -> None:
    """Write the baseline atomically (temp file in the same folder, then rename), creating its folder."""
    from mobilize.bundle.writer import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())


# --- differences, old → new -----------------------------------------------------------------------------------------


def _mb(n: Any) -> str:
    from mobilize.bench.report import fmt_bytes

    return fmt_bytes(n) if isinstance(n, int) else "—"


def _num(v: Any, spec: str, suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def _get(rec: dict[str, Any] | None, *keys: str) -> Any:
    value: Any = rec
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else None
    return value


#: (label, how to read it from an artifact record, how to print it)
FIELDS: tuple[tuple[str, tuple[str, ...], Any], ...] = (
    ("size", ("bytes",), _mb),
    ("sha256", ("sha256",), lambda v: "—" if v is None else v[:12]),
    ("parity", ("parity", "status"), lambda v: v or "—"),
    ("max abs err", ("parity", "max_abs_error"), lambda v: _num(v, ".2e")),
    ("SNR", ("parity", "snr_db"), lambda v: _num(v, ".1f", " dB")),
    ("latency ÷ eager", ("latency", "ratio_to_eager"), lambda v: _num(v, ".3f", "×")),
    ("held-out SNR", ("accuracy", "snr_db"), lambda v: _num(v, ".1f", " dB")),
    ("top-1 agreement", ("accuracy", "top1_agreement"), lambda v: _num(v, ".1%")),
)


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(artifact, field, old, new)`` for every figure that differs (printed values), plus versions and artifacts
    that appeared or disappeared."""
    rows: list[tuple[str, str, str, str]] = []
    old_tools = (old or {}).get("tools") or {}
    if old is not None and old.get("mobilize_version") != new.get("mobilize_version"):
        rows.append(("(all)", "mobilize", str(old.get("mobilize_version")), str(new.get("mobilize_version"))))
    if old is not None:
        for name in sorted(set(old_tools) | set(new.get("tools") or {})):
            a, b = old_tools.get(name), (new.get("tools") or {}).get(name)
            if a != b:
                rows.append(("(all)", name, str(a or "—"), str(b or "—")))
    for a in new["artifacts"]:
        label = f"{a['format']} {a['precision']}"
        before = entry(old, a["format"], a["precision"])
        for name, keys, show in FIELDS:
            was, now = show(_get(before, *keys)) if before else "—", show(_get(a, *keys))
            if was != now and not (before is None and now == "—"):
                rows.append((label, name, was, now))
    for b in (old or {}).get("artifacts", []):
        if entry(new, b["format"], b["precision"]) is None:
            rows.append((f"{b['format']} {b['precision']}", "artifact", "recorded", "gone"))
    return rows
