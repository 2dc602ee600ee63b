"""A fleet config: ``[[models]]`` tables in ``mobilize.toml`` (or ``[tool.mobilize]``), plus ``[executor]``.

Top-level keys are defaults for every model; each ``[[models]]`` table replaces the keys it sets (whole tables:
a model's ``[models.budget]`` replaces the top-level ``[budget]``). Every model is validated by the same reader as a
single-model config (:mod:`mobilize.check.config`), its problems prefixed with ``models.<name>.``, all reported at
once. Each model writes into ``<output>/<name>/`` and compares against its own baseline
(``mobilize-baseline-<name>.json`` beside the config unless the table sets ``baseline``).

    output = "mobilize-check"
    formats = ["onnx", "tflite"]
    [executor]
    kind = "ray"            # or "local" (the default)
    address = "auto"        # Ray: an existing cluster (ray.init(address=…)); absent: a local one
    jobs = 2                # local: parallel job processes (default: the usable cores)
    retries = 2             # attempts after the first when a job's process (or Ray worker) dies
    [[models]]
    name = "digits"
    source = "zoo:digits"
    [[models]]
    name = "gru"
    source = "zoo:gru_classifier"
    precisions = ["fp32", "fp16"]
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from mobilize.check import config as single
from mobilize.check.config import Config, _Reader
from mobilize.errors import ConfigError

EXECUTOR_KEYS = ("kind", "address", "jobs", "retries", "num_cpus")
EXECUTORS = ("local", "ray")
MODEL_ONLY_KEYS = ("name",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class Executor:
    """``[executor]``: where the jobs run. ``jobs`` None: the usable cores; ``retries``: attempts after the first
    for a job whose process or Ray worker died (a job that raises is not retried: bad input stays bad)."""

    kind: str = "local"
    address: str | None = None
    jobs: int | None = None
    retries: int = 2
    num_cpus: int | None = None  # Ray: CPUs of the local cluster started when no address is given

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Fleet:
    """A validated fleet: one :class:`~mobilize.check.config.Config` per model, in the file's order."""

    path: Path
    label: str
    root: Path
    output: Path
    models: tuple[tuple[str, Config], ...]
    executor: Executor
    digest: str

    def names(self) -> list[str]:
        return [n for n, _ in self.models]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "output": str(self.output), "models": self.names(),
                "executor": self.executor.to_dict(), "digest": self.digest}


def is_fleet(path: str | Path | None = None) -> bool:
    """Whether the config (default: found in the current folder) lists ``[[models]]``."""
    try:
        _p, _l, _pre, data, _d = single.read(path)
    except ConfigError:
        return False
    return "models" in data


def load(path: str | Path | None = None) -> Fleet:
    """Read and validate a fleet config; every problem of every model in one :class:`ConfigError`."""
    path, label, prefix, data, digest = single.read(path)
    r = _Reader(label, prefix)
    models_raw = data.get("models")
    if not isinstance(models_raw, list) or not models_raw or not all(isinstance(m, dict) for m in models_raw):
        raise ConfigError(f"{label}: {prefix}models must be a list of tables ([[models]] with source = … each), "
                          "not " + single._kind(models_raw))
    executor = _executor(r, r.table(data, "executor"))
    top = {k: v for k, v in data.items() if k not in ("models", "executor")}
    unknown_top = [k for k in top if k not in single.TOP_KEYS]
    r.unknown({k: top[k] for k in unknown_top}, single.TOP_KEYS)
    root = path.resolve().parent
    output = single._resolve(root, top["output"]) if isinstance(top.get("output"), str) else \
        root / single.DEFAULT_OUTPUT
    models: list[tuple[str, Config]] = []
    seen: set[str] = set()
    problems = list(r.problems)
    for i, table in enumerate(models_raw):
        name = table.get("name")
        if name is None:
            name = _default_name(table.get("source", top.get("source")), i)
        where = f"models[{i}]"
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{label}: {prefix}{where}.name: {single._show(name)} is not a usable name; give letters, "
                            "digits, '.', '_' or '-' (it names the model's output folder), e.g. name = \"digits\"")
            continue
        if name in seen:
            problems.append(f"{label}: {prefix}{where}.name: {name!r} is used by another model; names must differ")
            continue
        seen.add(name)
        merged = {**{k: v for k, v in top.items() if k in single.TOP_KEYS}, **{k: v for k, v in table.items()
                                                                                 if k != "name"}}
        merged["output"] = str(output / name) if "output" not in table else table["output"]
        if "baseline" not in table:
            merged["baseline"] = f"mobilize-baseline-{name}.json"
        mr = _Reader(label, f"{prefix}models.{name}.")
        cfg = single._parse(mr, merged, path, _model_digest(digest, name, merged))
        problems += [p for p in mr.problems if p not in problems]
        if cfg is not None:
            models.append((name, cfg))
    if problems:
        raise ConfigError(problems)
    return Fleet(path=path, label=label, root=root, output=output, models=tuple(models), executor=executor,
                 digest=digest)


def _model_digest(file_digest: str, name: str, merged: dict[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps({"file": file_digest, "name": name, "table": merged}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def _default_name(source: Any, i: int) -> str:
    if isinstance(source, str):
        text = source[4:] if source.startswith("zoo:") else Path(source.rpartition(":")[0] or source).stem
        text = re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip("._-")
        if text:
            return text[:64]
    return f"model{i + 1}"


def _executor(r: _Reader, t: dict[str, Any]) -> Executor:
    r.unknown(t, EXECUTOR_KEYS, "executor.")
    kind = r.string(t, "kind", f"one of {', '.join(EXECUTORS)}", "executor.") or "local"
    if kind not in EXECUTORS:
        r.problem("executor.kind", f"unknown executor {kind!r}; choose from {', '.join(EXECUTORS)}")
        kind = "local"
    address = r.string(t, "address", 'a Ray cluster address, e.g. address = "auto" or "ray://head:10001"',
                       "executor.")
    if address is not None and kind != "ray":
        r.problem("executor.address", 'applies to kind = "ray" only; set kind = "ray" or drop address')
    jobs = r.number(t, "jobs", None, "executor.", example="jobs = 2", lo=1, hi=1024, integer=True)
    retries = r.number(t, "retries", 2, "executor.", example="retries = 2", lo=0, hi=20, integer=True)
    num_cpus = r.number(t, "num_cpus", None, "executor.", example="num_cpus = 2", lo=1, hi=4096, integer=True)
    return Executor(kind=kind, address=address, jobs=None if jobs is None else int(jobs), retries=int(retries),
                    num_cpus=None if num_cpus is None else int(num_cpus))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` (1 ≤ i ≤ N) → (i, N); raises :class:`~mobilize.errors.OptionError` with the fix."""
    from mobilize.errors import OptionError

    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise OptionError(f"--shard {text!r}: give i/N with 1 ≤ i ≤ N, e.g. --shard 1/4 (this CI job's index and "
                          "the number of jobs)")
    return int(m.group(1)), int(m.group(2))
