"""The ``mobilize check`` configuration: ``mobilize.toml`` or ``[tool.mobilize]`` in ``pyproject.toml``.

Read with :mod:`tomllib` and validated here, before any model is loaded: every problem becomes one line naming the
file, the key and the fix (``mobilize.toml: budget.size_mbb: unknown key (did you mean 'size_mb'?)``), and all
problems are raised together as one :class:`~mobilize.errors.ConfigError` (CLI exit 2). Paths resolve relative to
the config file's folder. The full commented example is in docs/ci.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mobilize.errors import ConfigError, MobilizeInputError, one_line
from mobilize.safeio import TOML_LIMIT, load_toml, read_bytes

CONFIG_NAME = "mobilize.toml"
PYPROJECT = "pyproject.toml"
DEFAULT_BASELINE = "mobilize-baseline.json"
DEFAULT_OUTPUT = "mobilize-check"
HOW_TO_CREATE = (f'create {CONFIG_NAME} with at least `source = "model.py:build"` (the full commented example is in '
                 "docs/ci.md), or pass --config FILE")

#: key → what it is, for the "unknown key" message (order = the documented order)
TOP_KEYS = ("source", "weights", "trust_pickle", "formats", "precisions", "calibration", "strict", "output", "baseline",
            "export", "accuracy", "parity", "budget", "bench", "regression", "fitness")
EXPORT_KEYS = ("onnx_opset", "coreml_target", "fp16_io", "repair")
ACCURACY_KEYS = ("min_snr", "min_top1", "max_size_ratio", "holdout", "snr_headroom", "metric", "min_metric",
                 "class_axes", "allow_below_target", "time_budget", "jobs")
BENCH_KEYS = ("enabled", "threads", "min_runs", "min_seconds", "warmup_seconds", "memory")
FITNESS_SWITCHES = ("allow_unfit",)
REGRESSION_KEYS = ("max_size_growth_pct", "max_parity_worsening", "parity_noise_floor", "max_latency_growth_pct")
#: budget keys judged by ``mobilize check`` itself (held-out figures of quantized files), beside bench's KEYS
ACCURACY_BUDGET_KEYS = ("min_snr_db", "min_top1")


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Limits per artifact: ``[budget]`` for every file, ``[budget.<precision>]`` replacing keys for one precision.

    Bench keys (``size_mb``, ``latency_p90_ms``…, see :mod:`mobilize.bench.budget`) are upper limits; ``min_snr_db``
    and ``min_top1`` are lower limits on a quantized file's held-out figures (default: the ``[accuracy]`` target).
    ``threads`` picks the thread count the per-thread budgets apply at.
    """

    default: dict[str, float] = dataclasses.field(default_factory=dict)
    per_precision: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    threads: int | None = None

    def limits(self, precision: str) -> dict[str, float]:
        return {**self.default, **self.per_precision.get(precision, {})}

    def bench_budget(self, precision: str) -> Any:
        """A :class:`mobilize.bench.budget.Budget` for the bench keys of ``precision``, or None."""
        from mobilize.bench.budget import KEYS, Budget

        limits = {k: v for k, v in self.limits(precision).items() if k in KEYS}
        return Budget(limits, self.threads) if limits else None

    def needs_memory(self) -> bool:
        return any("peak_rss_mb" in t for t in (self.default, *self.per_precision.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"default": dict(self.default), "per_precision": {k: dict(v) for k, v in self.per_precision.items()},
                "threads": self.threads}


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """``[bench]``: how the latency figures (and the PyTorch eager row they are divided by) are measured."""

    enabled: bool = True
    threads: tuple[int, ...] = (1,)
    min_runs: int = 50
    min_seconds: float = 1.0
    warmup_seconds: float = 0.5
    memory: bool | None = None  # None: measured only when a budget limits peak_rss_mb

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "threads": list(self.threads)}


@dataclasses.dataclass(frozen=True)
class Regression:
    """``[regression]``: how much worse than the committed baseline a file may get (None: not checked)."""

    max_size_growth_pct: float | None = 10.0
    max_parity_worsening: float | None = 10.0  # × max abs error (SNR may drop 20·log10 of it)
    parity_noise_floor: float = 0.1  # errors below this share of the tolerance's atol never count
    max_latency_growth_pct: float | None = 25.0  # growth of the p50 latency ratio to PyTorch eager

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Config:
    """A validated configuration. ``source`` is ready to load (file paths made absolute); ``source_text`` is the
    value as written (what the baseline records)."""

    path: Path
    label: str
    root: Path
    source: str
    source_text: str
    weights: Path | None = None
    trust_pickle: bool = False
    formats: tuple[str, ...] = ("onnx", "coreml", "tflite")
    precisions: tuple[str, ...] = ("fp32", "fp16")
    calibration: str | None = None
    strict: bool = False
    output: Path = Path(DEFAULT_OUTPUT)
    baseline: Path = Path(DEFAULT_BASELINE)
    export: Any = None  # mobilize.export.ExportOptions
    accuracy: Any = None  # mobilize.quantize.recipes.AccuracyTarget
    tolerances: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    budgets: Budgets = dataclasses.field(default_factory=Budgets)
    bench: BenchSettings = dataclasses.field(default_factory=BenchSettings)
    regression: Regression = dataclasses.field(default_factory=Regression)
    fitness: Any = None  # mobilize.verify.fitness.Thresholds
    allow_unfit: bool = False
    allow_below_target: bool = False
    repair: bool = True  # [export] repair: rewrite ops a converter rejects (docs/repairs.md)
    digest: str = ""

    @property
    def bundle(self) -> Path:
        """The bundle folder inside :attr:`output`."""
        return self.output / "bundle"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "source": self.source_text, "weights": _opt(self.weights),
            "trust_pickle": self.trust_pickle, "formats": list(self.formats), "precisions": list(self.precisions),
            "calibration": self.calibration, "strict": self.strict, "output": str(self.output),
            "baseline": str(self.baseline), "export": dataclasses.asdict(self.export),
            "accuracy": self.accuracy.to_dict(), "tolerances": self.tolerances, "budgets": self.budgets.to_dict(),
            "bench": self.bench.to_dict(), "regression": self.regression.to_dict(),
            "fitness": self.fitness.to_dict() if self.fitness is not None else None,
            "allow_unfit": self.allow_unfit, "allow_below_target": self.allow_below_target, "repair": self.repair,
            "digest": self.digest,
        }


def _opt(p: Path | None) -> str | None:
    return None if p is None else str(p)


# --- finding and reading the file -----------------------------------------------------------------------------------


def find(start: str | Path | None = None) -> Path:
    """``./mobilize.toml``, else ``./pyproject.toml`` with a ``[tool.mobilize]`` table; else a ConfigError saying
    how to create one."""
    folder = Path(start) if start is not None else Path(".")
    if (folder / CONFIG_NAME).exists():  # whatever it is: load() reads it, or says why it cannot
        return folder / CONFIG_NAME
    pyproject = folder / PYPROJECT
    if pyproject.is_file():
        try:
            data = load_toml(read_bytes(pyproject, limit=TOML_LIMIT).decode("utf-8"), str(pyproject))
        except (MobilizeInputError, UnicodeDecodeError):
            data = {"tool": {"mobilize": {}}}  # let load() report the problem against the file
        if isinstance(data.get("tool"), dict) and "mobilize" in data["tool"]:
            return pyproject
    where = "the current folder" if start is None else str(folder)
    raise ConfigError(f"no {CONFIG_NAME} and no [tool.mobilize] in {PYPROJECT} in {where}; {HOW_TO_CREATE}")


def load(path: str | Path | None = None) -> Config:
    """Read and validate a configuration (``path`` None: :func:`find` in the current folder)."""
    path, label, prefix, data, digest = read(path)
    if "models" in data:
        raise ConfigError(f"{label}: {prefix}models lists several models (a fleet); run it with `mobilize check` or "
                          "mobilize.fleet.run (mobilize.check.config.load reads one model)")
    reader = _Reader(label, prefix)
    config = _parse(reader, data, path, digest)
    if reader.problems:
        raise ConfigError(reader.problems)
    assert config is not None
    return config


def read(path: str | Path | None = None) -> tuple[Path, str, str, dict[str, Any], str]:
    """The config file's table: (path, label, key prefix, table, sha256 of the file's bytes)."""
    path = find() if path is None else Path(path)
    label = str(path)
    if not path.exists():
        raise ConfigError(f"{label}: no such file; {HOW_TO_CREATE}")
    try:  # a FIFO or device is refused without being opened; the file is read once, bounded
        raw = read_bytes(path, limit=TOML_LIMIT)
    except MobilizeInputError as exc:
        raise ConfigError(f"{exc}; give the path of a {CONFIG_NAME} or {PYPROJECT}") from None
    try:
        data = load_toml(raw.decode("utf-8"), label)
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not UTF-8 text; save it as UTF-8") from None
    except MobilizeInputError as exc:
        raise ConfigError(str(exc)) from None
    prefix = ""
    if path.name == PYPROJECT:
        tool = data.get("tool")
        if not isinstance(tool, dict) or "mobilize" not in tool:
            raise ConfigError(f"{label}: no [tool.mobilize] table; add one (keys as in docs/ci.md) or use a "
                              f"separate {CONFIG_NAME}")
        data, prefix = tool["mobilize"], "tool.mobilize."
        if not isinstance(data, dict):
            raise ConfigError(f"{label}: tool.mobilize must be a table ([tool.mobilize]); see docs/ci.md")
    return path, label, prefix, data, hashlib.sha256(raw).hexdigest()


# --- validation -----------------------------------------------------------------------------------------------------


class _Reader:
    """Collects one-line problems while reading typed values out of TOML tables."""

    def __init__(self, label: str, prefix: str) -> None:
        self.label = label
        self.prefix = prefix
        self.problems: list[str] = []

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{self.label}: {self.prefix}{key}: {text}")

    def unknown(self, table: Mapping[str, Any], allowed: Iterable[str], section: str = "") -> None:
        allowed = list(allowed)
        for key in table:
            if key in allowed:
                continue
            hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            fix = f"did you mean {hint[0]!r}?" if hint else f"known keys: {', '.join(allowed)}"
            self.problem(f"{section}{key}", f"unknown key ({fix})")

    def table(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem(key, f"must be a table ([{self.prefix}{key}] with key = value lines), not "
                              f"{_kind(value)}")
            return {}
        return value

    def string(self, data: Mapping[str, Any], key: str, what: str, section: str = "") -> str | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            self.problem(f"{section}{key}", f"{_show(value)} is {_kind(value)}; give {what}")
            return None
        return value.strip()

    def boolean(self, data: Mapping[str, Any], key: str, default: bool | None, section: str = "") -> bool | None:
        if key not in data:
            return default
        value = data[key]
        if not isinstance(value, bool):
            self.problem(f"{section}{key}", f"{_show(value)} is {_kind(value)}; give true or false (no quotes)")
            return default
        return value

    def number(self, data: Mapping[str, Any], key: str, default: Any, section: str = "", *, example: str,
               lo: float = 0.0, hi: float | None = None, integer: bool = False, allow_off: bool = False,
               above: bool = False) -> Any:
        """A number in [lo, hi] (``above``: strictly greater than lo); ``allow_off``: ``false`` means None."""
        if key not in data:
            return default
        value = data[key]
        where = f"{section}{key}"
        if allow_off and value is False:
            return None
        kind = "an integer" if integer else "a number"
        off = " (or false to turn it off)" if allow_off else ""
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            self.problem(where, f"{_show(value)} is {_kind(value)}; give {kind}{off}, e.g. {example}")
            return default
        bound = f"> {lo:g}" if above else f"≥ {lo:g}"
        if not math.isfinite(value) or (value <= lo if above else value < lo) or (hi is not None and value > hi):
            rng = f"{bound} and ≤ {hi:g}" if hi is not None else bound
            self.problem(where, f"{value!r} is out of range; give {kind} {rng}, e.g. {example}")
            return default
        return value

    def names(self, data: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: tuple[str, ...],
              example: str) -> tuple[str, ...]:
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",")]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = [v.strip() for v in value]
        else:
            self.problem(key, f"{_show(value)} is {_kind(value)}; give a list of names, e.g. {example}")
            return default
        items = [v for v in items if v]
        if not items:
            self.problem(key, f"is empty; choose from {', '.join(allowed)}")
            return default
        bad = [v for v in items if v not in allowed]
        for v in bad:
            hint = difflib.get_close_matches(v.lower(), allowed, n=1, cutoff=0.6)
            fix = f"did you mean {hint[0]!r}?" if hint else f"choose from {', '.join(allowed)}"
            self.problem(key, f"unknown value {v!r} ({fix})")
        return default if bad else tuple(dict.fromkeys(items))


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{one_line(value, 60)}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{…}"
    return one_line(repr(value), 60)


def _parse(r: _Reader, data: dict[str, Any], path: Path, digest: str) -> Config | None:
    from mobilize import formats as registry
    from mobilize.quantize import recipes

    root = path.resolve().parent
    r.unknown(data, TOP_KEYS)
    source_text = r.string(data, "source", 'a model source, e.g. source = "model.py:build" (file.py:fn, '
                                          "package.module:fn, zoo:NAME or model.pt2)")
    source = None
    if source_text is None and "source" not in data:
        r.problem("source", 'missing; add e.g. source = "model.py:build" (file.py:fn, package.module:fn, zoo:NAME '
                            "or model.pt2)")
    elif source_text is not None:
        source = _source(r, source_text, root)
    weights = _path(r, data, "weights", root, "a checkpoint path, e.g. weights = \"weights.safetensors\"",
                    must_exist="file")
    trust_pickle = bool(r.boolean(data, "trust_pickle", False))
    formats = r.names(data, "formats", tuple(registry.REGISTRY), registry.DEFAULT_FORMATS,
                      'formats = ["onnx", "tflite"]')
    precisions = r.names(data, "precisions", registry.PRECISIONS, registry.DEFAULT_PRECISIONS,
                         'precisions = ["fp32", "fp16"]')
    _pairs(r, data, formats, precisions)
    calibration = _calibration(r, data, root)
    if calibration is None and "calibration" not in data and recipes.needs_calibration(precisions):
        r.problem("calibration", "missing, but precisions has int8 (static), which calibrates on real samples; add "
                                 'calibration = "calib.npz" (an .npz, an image folder or file.py:fn) or drop int8')
    strict = bool(r.boolean(data, "strict", False))
    output = _path(r, data, "output", root, 'a folder, e.g. output = "mobilize-check"') or root / DEFAULT_OUTPUT
    baseline = (_path(r, data, "baseline", root, 'a file path, e.g. baseline = "mobilize-baseline.json"')
                or root / DEFAULT_BASELINE)
    if baseline.is_dir():
        r.problem("baseline", f"{baseline} is a folder; give a file path, e.g. baseline = \"{DEFAULT_BASELINE}\"")
    export_table = r.table(data, "export")
    export = _export(r, export_table)
    repair = bool(r.boolean(export_table, "repair", True, "export."))
    accuracy_table = r.table(data, "accuracy")
    accuracy = _accuracy(r, accuracy_table, root)
    allow_below_target = bool(r.boolean(accuracy_table, "allow_below_target", False, "accuracy."))
    fitness_table = r.table(data, "fitness")
    fitness = _fitness(r, fitness_table)
    allow_unfit = bool(r.boolean(fitness_table, "allow_unfit", False, "fitness."))
    tolerances = _tolerances(r, r.table(data, "parity"), precisions)
    budgets = _budgets(r, r.table(data, "budget"), precisions)
    bench = _bench(r, r.table(data, "bench"), budgets)
    regression = _regression(r, r.table(data, "regression"))
    if r.problems or source is None:
        return None
    return Config(path=path, label=r.label, root=root, source=source, source_text=source_text or "",
                  weights=weights, trust_pickle=trust_pickle, formats=formats, precisions=precisions,
                  calibration=calibration, strict=strict, output=output, baseline=baseline, export=export,
                  accuracy=accuracy, tolerances=tolerances, budgets=budgets, bench=bench, regression=regression,
                  fitness=fitness, allow_unfit=allow_unfit, allow_below_target=allow_below_target, repair=repair,
                  digest=digest)


def _resolve(root: Path, text: str) -> Path:
    p = Path(os.path.expanduser(text))
    return p if p.is_absolute() else root / p


def _existing(r: _Reader, key: str, root: Path, text: str, label: str | None = None,
              folder_ok: bool = False) -> Path | None:
    """``text`` resolved against the config's folder, or None after reporting that it does not exist."""
    p = _resolve(root, text)
    if p.is_file() or (folder_ok and p.exists()):
        return p
    r.problem(key, f"{label or text} does not exist (looked for {p}); paths resolve relative to the config file")
    return None


def _path(r: _Reader, data: Mapping[str, Any], key: str, root: Path, what: str,
          must_exist: str | None = None) -> Path | None:
    text = r.string(data, key, what)
    if text is None:
        return None
    return _existing(r, key, root, text) if must_exist == "file" else _resolve(root, text)


def _source(r: _Reader, text: str, root: Path) -> str | None:
    """The source grammar of ``mobilize export``, with file paths resolved against the config's folder."""
    if text.startswith("zoo:"):
        from mobilize import models

        name = text[4:]
        if name not in models.names():
            hint = difflib.get_close_matches(name, models.names(), n=1)
            fix = f"did you mean 'zoo:{hint[0]}'?" if hint else f"choose from {', '.join(models.names())}"
            r.problem("source", f"unknown zoo model {text!r} ({fix})")
            return None
        return text
    target, colon, fn = text.rpartition(":")
    if colon and (target.endswith(".py") or "/" in target or os.sep in target):
        if not fn.isidentifier():
            r.problem("source", f"{fn!r} is not a function name; give file.py:fn, e.g. source = \"model.py:build\"")
            return None
        p = _existing(r, "source", root, target, f"file {target}")
        return None if p is None else f"{p}:{fn}"
    if colon:  # package.module:fn — imported as usual (mobilize check also puts the config's folder on sys.path)
        return text
    if text.endswith(".pt2") or _resolve(root, text).is_file():
        p = _existing(r, "source", root, text)
        return None if p is None else str(p)
    r.problem("source", f"{text!r} is not a model source; give file.py:fn, package.module:fn, zoo:NAME or model.pt2")
    return None


def _pairs(r: _Reader, data: Mapping[str, Any], formats: tuple[str, ...], precisions: tuple[str, ...]) -> None:
    from mobilize import formats as registry
    from mobilize.quantize import recipes

    try:
        recipes.check_pairs(formats, precisions, converted_from={f: registry.get(f).converts_from for f in formats})
    except MobilizeInputError as exc:
        r.problem("precisions" if "precisions" in data else "formats", f"{exc}; drop the pair or the format")


def _calibration(r: _Reader, data: Mapping[str, Any], root: Path) -> str | None:
    text = r.string(data, "calibration", 'real input samples, e.g. calibration = "calib.npz" (an .npz, an image '
                                         "folder or file.py:fn)")
    if text is None:
        return None
    target, colon, fn = text.rpartition(":")
    if colon and target.endswith(".py"):
        p = _existing(r, "calibration", root, target, f"file {target}")
        return None if p is None else f"{p}:{fn}"
    p = _existing(r, "calibration", root, text, folder_ok=True)
    return None if p is None else str(p)


def _export(r: _Reader, t: dict[str, Any]) -> Any:
    from mobilize.export import COREML_TARGETS, ExportOptions

    r.unknown(t, EXPORT_KEYS, "export.")
    opset = r.number(t, "onnx_opset", 20, "export.", example="onnx_opset = 20", lo=18, hi=23, integer=True)
    target = r.string(t, "coreml_target", f"one of {', '.join(COREML_TARGETS)}", "export.") or "iOS16"
    if target not in COREML_TARGETS:
        hint = difflib.get_close_matches(target, COREML_TARGETS, n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else f"choose from {', '.join(COREML_TARGETS)}"
        r.problem("export.coreml_target", f"unknown target {target!r} ({fix})")
        target = "iOS16"
    fp16_io = bool(r.boolean(t, "fp16_io", False, "export."))
    return ExportOptions(onnx_opset=int(opset), coreml_target=target, fp16_io=fp16_io)


def _accuracy(r: _Reader, t: dict[str, Any], root: Path) -> Any:
    from mobilize.quantize.recipes import AccuracyTarget

    r.unknown(t, ACCURACY_KEYS, "accuracy.")
    d = AccuracyTarget()
    metric = r.string(t, "metric", 'a task metric, e.g. metric = "metric.py:exact_match" (fn(outputs, batch) -> '
                                   "float, higher is better)", "accuracy.")
    if metric is not None:
        target, colon, fn = metric.rpartition(":")
        if not colon or not target or not fn.isidentifier():
            r.problem("accuracy.metric", f"{metric!r} is not file.py:fn or package.module:fn, e.g. "
                                         'metric = "metric.py:exact_match"')
            metric = None
        elif target.endswith(".py") or "/" in target:
            p = _existing(r, "accuracy.metric", root, target, f"file {target}")
            metric = None if p is None else f"{p}:{fn}"
    min_metric = r.number(t, "min_metric", None, "accuracy.", example="min_metric = 0.9", lo=-math.inf)
    if min_metric is not None and metric is None:
        r.problem("accuracy.min_metric", 'needs accuracy.metric (the metric it applies to), e.g. metric = '
                                         '"metric.py:exact_match"')
        min_metric = None
    axes_raw = t.get("class_axes", {})
    if not isinstance(axes_raw, dict):
        r.problem("accuracy.class_axes", f"must be a table of output = axis, e.g. class_axes = {{ logits = -1 }}, not "
                                         f"{_kind(axes_raw)}")
        axes_raw = {}
    class_axes: dict[str, int] = {}
    for name, axis in axes_raw.items():
        if isinstance(axis, bool) or not isinstance(axis, int):
            r.problem(f"accuracy.class_axes.{name}", f"{_show(axis)} is {_kind(axis)}; give the class axis as an "
                                                     f"integer, e.g. {name} = -1")
        else:
            class_axes[name] = axis
    return AccuracyTarget(
        class_axes=class_axes, metric=metric, min_metric=None if min_metric is None else float(min_metric),
        headroom_db=float(r.number(t, "snr_headroom", d.headroom_db, "accuracy.", example="snr_headroom = 2",
                                   hi=20)),
        min_snr_db=float(r.number(t, "min_snr", d.min_snr_db, "accuracy.", example="min_snr = 25", lo=-math.inf)),
        min_top1=float(r.number(t, "min_top1", d.min_top1, "accuracy.", example="min_top1 = 0.97", hi=1,
                                above=True)),
        max_size_ratio=float(r.number(t, "max_size_ratio", d.max_size_ratio, "accuracy.",
                                      example="max_size_ratio = 0.35", hi=1, above=True)),
        holdout=float(r.number(t, "holdout", d.holdout, "accuracy.", example="holdout = 0.25", hi=0.99,
                               above=True)),
        time_budget_s=float(r.number(t, "time_budget", d.time_budget_s, "accuracy.",
                                     example="time_budget = 300 (seconds)", hi=7 * 24 * 3600.0, above=True)),
        jobs=r.number(t, "jobs", d.jobs, "accuracy.", example="jobs = 2", lo=1, hi=4096, integer=True),
    )


def _fitness(r: _Reader, t: dict[str, Any]) -> Any:
    """``[fitness]``: thresholds of :class:`mobilize.verify.fitness.Thresholds` (``false`` turns a ``max_*`` check
    off) plus ``allow_unfit``."""
    from mobilize.verify.fitness import FIELDS, Thresholds

    r.unknown(t, (*FIELDS, *FITNESS_SWITCHES), "fitness.")
    d = Thresholds()
    changes: dict[str, Any] = {}
    for key in FIELDS:
        if key not in t:
            continue
        off = key.startswith("max_")
        value = r.number(t, key, getattr(d, key), "fitness.", example=f"{key} = {getattr(d, key)}",
                         allow_off=off, integer=key == "op_slack",
                         lo=1.0 if key.endswith("ratio") and off else 0.0)
        changes[key] = value
    try:
        return dataclasses.replace(d, **changes)
    except MobilizeInputError as exc:
        r.problem("fitness", str(exc))
        return d


def _tolerances(r: _Reader, t: dict[str, Any], precisions: tuple[str, ...]) -> dict[str, dict[str, float]]:
    from mobilize import formats as registry
    from mobilize.verify.tolerance import FIELDS, field_problem

    r.unknown(t, registry.PRECISIONS, "parity.")
    out: dict[str, dict[str, float]] = {}
    for prec, fields in t.items():
        if prec not in registry.PRECISIONS:
            continue
        where = f"parity.{prec}"
        if not isinstance(fields, dict):
            r.problem(where, f"must be a table ([{r.prefix}{where}] with lines such as atol = 2e-2)")
            continue
        r.unknown(fields, FIELDS, f"{where}.")
        for key, value in fields.items():
            if key not in FIELDS:
                continue
            problem = field_problem(key, value)
            if problem:
                r.problem(f"{where}.{key}", f"{_show(value)} {problem}, e.g. {key} = 0.01")
            else:
                out.setdefault(prec, {})[key] = float(value)
        if prec not in precisions and fields:
            r.problem(where, f"{prec} is not among precisions ({', '.join(precisions)}); add it there or drop this "
                             "table")
    return out


def _budget_limits(r: _Reader, t: dict[str, Any], section: str) -> dict[str, Any]:
    from mobilize.bench.budget import KEYS
    from mobilize.check import placement

    out: dict[str, Any] = placement.parse(r, t, section)
    for key in (*KEYS, *ACCURACY_BUDGET_KEYS):
        if key not in t:
            continue
        if key == "min_top1":
            value = r.number(t, key, None, section, example="min_top1 = 0.97", hi=1)
        elif key == "min_snr_db":
            value = r.number(t, key, None, section, example="min_snr_db = 25", lo=-math.inf)
        else:
            unit = "megabytes" if key.endswith("_mb") else "milliseconds"
            value = r.number(t, key, None, section, example=f"{key} = 10 ({unit})")
        if value is not None:
            out[key] = float(value)
    return out


def _budgets(r: _Reader, t: dict[str, Any], precisions: tuple[str, ...]) -> Budgets:
    from mobilize import formats as registry
    from mobilize.bench.budget import KEYS
    from mobilize.check.placement import KEYS as PLACEMENT_KEYS

    limit_keys = (*KEYS, *ACCURACY_BUDGET_KEYS, *PLACEMENT_KEYS)
    r.unknown(t, (*limit_keys, "threads", *registry.PRECISIONS), "budget.")
    threads = r.number(t, "threads", None, "budget.", example="threads = 1", lo=1, hi=_cores(), integer=True)
    default = _budget_limits(r, t, "budget.")
    per: dict[str, dict[str, float]] = {}
    for prec in registry.PRECISIONS:
        if prec not in t:
            continue
        where = f"budget.{prec}"
        sub = t[prec]
        if not isinstance(sub, dict):
            r.problem(where, f"must be a table ([{r.prefix}{where}] with lines such as size_mb = 1)")
            continue
        if "threads" in sub:
            r.problem(f"{where}.threads", "threads applies to every precision; set it in [budget]")
        r.unknown({k: v for k, v in sub.items() if k != "threads"}, limit_keys, f"{where}.")
        per[prec] = _budget_limits(r, sub, f"{where}.")
        if prec not in precisions:
            r.problem(where, f"{prec} is not among precisions ({', '.join(precisions)}); add it there or drop this "
                             "table")
    return Budgets(default, per, None if threads is None else int(threads))


#: bounds on [bench] settings: beyond them a run would not end in any useful time
MAX_RUNS = 1_000_000
MAX_SECONDS = 3600.0


def _cores() -> int:
    from mobilize.bench.machine import usable_cores

    return usable_cores()


def _bench(r: _Reader, t: dict[str, Any], budgets: Budgets) -> BenchSettings:
    r.unknown(t, BENCH_KEYS, "bench.")
    d = BenchSettings()
    threads = t.get("threads", list(d.threads))
    if isinstance(threads, int) and not isinstance(threads, bool):
        threads = [threads]
    if (not isinstance(threads, list) or not threads
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in threads)):
        r.problem("bench.threads", f"{_show(threads)} is not a list of positive integers; e.g. threads = [1, 2]")
        threads = list(d.threads)
    elif max(threads) > _cores():  # more threads than cores cannot run in parallel (and crash some runtimes)
        r.problem("bench.threads", f"{max(threads)} is more than the {_cores()} core(s) this machine lets mobilize "
                                   f"use; give at most {_cores()}")
        threads = [x for x in threads if x <= _cores()] or list(d.threads)
    if budgets.threads is not None and budgets.threads not in threads:
        threads = [*threads, budgets.threads]  # the budget's thread count is always measured
    memory = r.boolean(t, "memory", None, "bench.")
    if memory is False and budgets.needs_memory():
        r.problem("bench.memory", "is false but a budget limits peak_rss_mb; set memory = true or drop that budget")
    return BenchSettings(
        enabled=bool(r.boolean(t, "enabled", True, "bench.")),
        threads=tuple(sorted(set(threads))),
        min_runs=int(r.number(t, "min_runs", d.min_runs, "bench.", example="min_runs = 50", lo=1, hi=MAX_RUNS,
                              integer=True)),
        min_seconds=float(r.number(t, "min_seconds", d.min_seconds, "bench.", example="min_seconds = 1.0",
                                   hi=MAX_SECONDS)),
        warmup_seconds=float(r.number(t, "warmup_seconds", d.warmup_seconds, "bench.",
                                      example="warmup_seconds = 0.5", hi=MAX_SECONDS)),
        memory=memory,
    )


def _regression(r: _Reader, t: dict[str, Any]) -> Regression:
    r.unknown(t, REGRESSION_KEYS, "regression.")
    d = Regression()
    return Regression(
        max_size_growth_pct=r.number(t, "max_size_growth_pct", d.max_size_growth_pct, "regression.",
                                     example="max_size_growth_pct = 10", allow_off=True),
        max_parity_worsening=r.number(t, "max_parity_worsening", d.max_parity_worsening, "regression.",
                                      example="max_parity_worsening = 10", lo=1, allow_off=True),
        parity_noise_floor=float(r.number(t, "parity_noise_floor", d.parity_noise_floor, "regression.",
                                          example="parity_noise_floor = 0.1")),
        max_latency_growth_pct=r.number(t, "max_latency_growth_pct", d.max_latency_growth_pct, "regression.",
                                        example="max_latency_growth_pct = 25", allow_off=True),
    )
