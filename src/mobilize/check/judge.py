"""Per-artifact verdicts of ``mobilize check``: one :class:`Check` per artifact × check, each with the numbers.

The checks, in the order they appear (and become JUnit test cases ``mobilize.<format>.<precision>`` / name):

    export             the converter produced the file
    integrity          the file's sha256 matches the manifest (a file altered after export fails here)
    parity             within the tolerance for format × precision (``[parity.<precision>]`` overrides)
    accuracy           quantized files only: held-out SNR / top-1 agreement / task metric ≥ the target (or budget
                       min_snr_db…); a below_target file fails unless [accuracy] allow_below_target = true
    fitness.size       size against the parameter floor and the other formats (mobilize.verify.fitness)
    fitness.ops        op count against the captured graph (an unrolled recurrence fails here)
    fitness.latency    single-thread latency against the other formats and, quantized, against its fp32 file
    budget.<key>       one per budget key (size_mb, latency_p90_ms, …), via :func:`mobilize.bench.budget.judge`;
                       placement keys (max_delegate_partitions, min_accelerated_mac_share, coreml_min_target) via
                       :mod:`mobilize.check.placement`
    regression.size    size growth vs the baseline ≤ max_size_growth_pct
    regression.parity  max abs error ≤ max_parity_worsening × the baseline's (SNR drop ≤ 20·log10 of it)
    regression.latency latency ratio to PyTorch eager (p50, same run) growth ≤ max_latency_growth_pct

The set of checks of an artifact does not depend on the outcome (a check that cannot be judged is ``skip`` with
the reason), so a CI dashboard sees stable test names from run to run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from mobilize.check.config import ACCURACY_BUDGET_KEYS, Config
from mobilize.check.placement import KEYS as PLACEMENT_KEYS
from mobilize.check.placement import checks as placement_checks

PASS, FAIL, SKIP = "pass", "fail", "skip"
NO_BASELINE = "no baseline yet: run `mobilize baseline update` or `mobilize check --update-baseline`"


@dataclasses.dataclass
class Check:
    name: str
    status: str  # pass | fail | skip
    message: str
    seconds: float = 0.0  # the work this verdict rests on (export, verification); 0 for checks read off figures

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ArtifactResult:
    """One artifact's figures and checks (``to_dict`` is what check.json, JUnit and the summary read)."""

    format: str
    precision: str
    path: str | None
    bytes: int | None
    sha256: str | None
    parity: dict[str, Any] | None
    latency: dict[str, Any] | None
    accuracy: dict[str, Any] | None
    vs_baseline: str  # same | changed | new | no baseline | not exported
    checks: list[Check] = dataclasses.field(default_factory=list)
    #: the figures the regression checks compare, baseline → this run, each with the limit that would fail
    #: (:func:`comparison`); empty when the baseline has no record of this file or it was not exported
    comparison: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.format} {self.precision}"

    @property
    def status(self) -> str:
        return FAIL if any(c.status == FAIL for c in self.checks) else PASS

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status
        return d


# --- helpers ---------------------------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return _megabytes(n / 1e6)


def _megabytes(v: float) -> str:
    """``2.31 MB``; three significant digits below 0.1 MB (a 15 KB file is ``0.0156 MB``, not ``0.02 MB``)."""
    return f"{v:.2f} MB" if v >= 0.1 or v == 0 else f"{v:.3g} MB"


def _ms(v: float) -> str:
    return f"{v:.3g} ms" if v < 100 else f"{v:.0f} ms"


def _threads(t: int | None) -> str:
    return "" if t is None else f" at {t} thread{'s' if t != 1 else ''}"


#: budget key → (noun for the message, how to print value and limit)
_BUDGET_WORDS: dict[str, tuple[str, Any]] = {
    "size_mb": ("size", _megabytes),
    "zipped_mb": ("zipped size", _megabytes),
    "peak_rss_mb": ("peak RSS", lambda v: f"{v:.1f} MB"),
    "latency_p50_ms": ("p50 latency", _ms),
    "latency_p90_ms": ("p90 latency", _ms),
    "latency_p99_ms": ("p99 latency", _ms),
    "latency_mean_ms": ("mean latency", _ms),
    "load_ms": ("load time", _ms),
    "first_inference_ms": ("first inference", _ms),
}


def summarize_parity(p: dict[str, Any] | None) -> dict[str, Any] | None:
    """The parity figures check.json and the baseline keep (the manifest has the full record)."""
    if p is None:
        return None
    tol = p.get("tolerance") or {}
    return {"status": p["status"], "runtime": p.get("runtime"), "reason": p.get("reason"),
            "max_abs_error": p.get("max_abs_error"), "snr_db": p.get("snr_db"), "cosine": p.get("cosine"),
            "mismatch_ratio": p.get("mismatch_ratio"), "atol": tol.get("atol"), "min_snr_db": tol.get("min_snr_db")}


def latency_record(rows: list[dict[str, Any]], eager: dict[int, float], threads: int) -> dict[str, Any] | None:
    """p50/p90/p99 at ``threads`` and the p50 ratio to PyTorch eager at the same thread count (None: not timed)."""
    row = next((r for r in rows if r["threads"] == threads and r.get("latency_ms")), None)
    if row is None:
        return None
    lat = row["latency_ms"]
    e = eager.get(threads)
    return {"threads": threads, "percentile": "p50", "ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"],
            "eager_ms": e, "ratio_to_eager": round(lat["p50"] / e, 5) if e else None, "noisy": bool(row.get("noisy"))}


def accuracy_record(art: dict[str, Any]) -> dict[str, Any] | None:
    q = art.get("quantization") or {}
    acc = art.get("accuracy") or {}
    if not q and not acc:
        return None
    ach = q.get("achieved") or {}
    return {"recipe": q.get("recipe"), "snr_db": ach.get("snr_db"), "top1_agreement": ach.get("top1_agreement"),
            "metric": ach.get("metric"), "meets_target": q.get("meets_target"), "test_top1": acc.get("top1_accuracy")}


# --- the checks ------------------------------------------------------------------------------------------------------


def judge_artifact(cfg: Config, art: dict[str, Any], rows: list[dict[str, Any]], eager: dict[int, float],
                   bench_reason: str | None, integrity: str | None, baseline: dict[str, Any] | None) -> ArtifactResult:
    """Every check of one manifest artifact.

    Args:
        rows: the artifact's bench rows (one per thread count; empty when bench did not run: ``bench_reason``).
        eager: PyTorch eager p50 (ms) per thread count, from the same bench run.
        integrity: why the file no longer matches the manifest, or None.
        baseline: the baseline file's data (None: no baseline yet).
    """
    from mobilize.check.baseline import entry

    fmt, prec = art["format"], art["precision"]
    exported = art["status"] == "ok"
    threads = cfg.budgets.threads or cfg.bench.threads[0]
    base = entry(baseline, fmt, prec)
    latency = latency_record(rows, eager, threads) if exported else None
    if base and base.get("latency") and exported and base["latency"].get("threads") != threads:
        latency = latency_record(rows, eager, base["latency"]["threads"]) or latency
    res = ArtifactResult(fmt, prec, art.get("path"), art.get("bytes"), art.get("sha256"),
                         summarize_parity(art.get("parity")), latency, accuracy_record(art),
                         _vs_baseline(art, baseline, base))
    checks = res.checks
    checks.append(_export(art))
    skip = None if exported else "not exported"
    checks.append(Check("integrity", SKIP, skip) if skip else
                  Check("integrity", FAIL, integrity) if integrity else
                  Check("integrity", PASS, "sha256 matches the manifest"))
    if integrity and not skip:
        skip = "the file changed after export"
    checks.append(dataclasses.replace(_parity(art, cfg.strict, skip), seconds=float(art.get("verify_seconds") or 0.0)))
    if prec in ("int8-weights", "int8", "int4-weights"):
        checks.append(_accuracy(cfg, prec, res.accuracy, skip))
    checks += _fitness(cfg, art, skip)
    checks += _budgets(cfg, art, rows, bench_reason, skip)
    checks += placement_checks(cfg.budgets.limits(prec), art, skip)
    checks += _regressions(cfg, res, base, baseline is not None, skip)
    if base is not None and exported:
        res.comparison = comparison(cfg, res, base)
    return res


def _vs_baseline(art: dict[str, Any], baseline: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    if art["status"] != "ok":
        return "not exported"
    if baseline is None:
        return "no baseline"
    if base is None:
        return "new"
    return "same" if base["sha256"] == art["sha256"] else "changed"


def _export(art: dict[str, Any]) -> Check:
    if art["status"] == "ok":
        secs = art.get("export_seconds")
        return Check("export", PASS, f"{art['path']} ({_mb(art['bytes'])})" + (f" in {secs:.1f} s" if secs else ""),
                     float(secs or 0.0))
    err = art.get("error") or {}
    where = "; ".join(err.get("modules") or err.get("ops") or [])
    message = (err.get("message") or "export failed")[:400]
    return Check("export", FAIL, message + (f" (where: {where})" if where else ""),
                 float(art.get("export_seconds") or 0))


def _parity_numbers(p: dict[str, Any]) -> str:
    tol = p.get("tolerance") or {}
    parts = []
    if p.get("max_abs_error") is not None:
        parts.append(f"max abs error {p['max_abs_error']:.3g}" + (f" (atol {tol['atol']:g})" if tol else ""))
    if p.get("snr_db") is not None:
        parts.append(f"SNR {p['snr_db']:.1f} dB" + (f" (≥ {tol['min_snr_db']:g} dB)" if tol else ""))
    return ", ".join(parts)


def _parity(art: dict[str, Any], strict: bool, skip: str | None) -> Check:
    p = art.get("parity")
    if skip and not (p and p["status"] == FAIL):  # an altered file that also fails parity: say so
        return Check("parity", SKIP, skip)
    if p is None:
        return Check("parity", SKIP, "not verified")
    numbers = _parity_numbers(p)
    if p["status"] == "pass":
        return Check("parity", PASS, numbers or "pass")
    if p["status"] == "unverified":
        return Check("parity", FAIL if strict else SKIP,
                     f"unverified: {p.get('reason') or 'no runtime here'}" + (" (strict = true)" if strict else ""))
    reasons = "; ".join(dict.fromkeys(p.get("failures") or [p.get("reason") or "fail"]))
    return Check("parity", FAIL, f"{reasons}" + (f" — {numbers}" if numbers and numbers not in reasons else ""))


def _accuracy(cfg: Config, prec: str, acc: dict[str, Any] | None, skip: str | None) -> Check:
    if skip:
        return Check("accuracy", SKIP, skip)
    if not acc or (acc.get("snr_db") is None and acc.get("metric") is None and acc.get("top1_agreement") is None):
        return Check("accuracy", SKIP, "not measured: no calibration data to hold out (set calibration = …)")
    limits = cfg.budgets.limits(prec)
    min_snr = limits.get("min_snr_db", cfg.accuracy.min_snr_db)
    min_top1 = limits.get("min_top1", cfg.accuracy.min_top1)
    got, bad = [], []
    if acc.get("snr_db") is not None:
        got.append(f"held-out SNR {acc['snr_db']:.1f} dB (≥ {min_snr:g} dB)")
        if acc["snr_db"] < min_snr:
            bad.append(f"held-out SNR {acc['snr_db']:.1f} dB < {min_snr:g} dB")
    top = acc.get("top1_agreement")
    if top is not None:
        got.append(f"top-1 agreement {top:.1%} (≥ {min_top1:.1%})")
        if top < min_top1:
            bad.append(f"top-1 agreement {top:.1%} < {min_top1:.1%}")
    m = acc.get("metric") or {}
    if m.get("value") is not None:
        floor = m.get("min")
        got.append(f"{m.get('name')} {m['value']:.4g} (PyTorch {m.get('pytorch')}"
                   + (f", ≥ {floor:.4g})" if floor is not None else ")"))
        if floor is not None and m["value"] < floor:
            bad.append(f"{m.get('name')} {m['value']:.4g} < {floor:.4g}")
    if bad:
        text = "; ".join(bad) + f" (recipe {acc.get('recipe')})"
        if cfg.allow_below_target:
            return Check("accuracy", PASS, f"below target, allowed ([accuracy] allow_below_target = true): {text}")
        return Check("accuracy", FAIL, text)
    return Check("accuracy", PASS, ", ".join(got))


#: JUnit check → the fitness findings (mobilize.verify.fitness) it reports
FITNESS_CHECKS = {"fitness.size": ("size.floor", "size.siblings"), "fitness.ops": ("ops",),
                  "fitness.latency": ("latency.siblings", "latency.fp32")}


def _fitness(cfg: Config, art: dict[str, Any], skip: str | None) -> list[Check]:
    fit = art.get("fitness")
    out = []
    for name, kinds in FITNESS_CHECKS.items():
        if skip:
            out.append(Check(name, SKIP, skip))
            continue
        if not fit:
            out.append(Check(name, SKIP, "not judged (no fitness record: an older bundle?)"))
            continue
        found = [f for f in fit.get("findings", []) if f["check"] in kinds and f["severity"] == "fail"]
        if found:
            text = "; ".join(f["message"] for f in found)
            reasons = list(dict.fromkeys(r for f in found for r in f.get("reasons") or []))
            text += f" — {'; '.join(reasons[:2])}" if reasons else ""
            out.append(Check(name, PASS, f"unfit, allowed ([fitness] allow_unfit = true): {text}")
                       if cfg.allow_unfit else Check(name, FAIL, text))
            continue
        out.append(Check(name, PASS, _fitness_figures(name, fit)))
    return out


def _fitness_figures(name: str, fit: dict[str, Any]) -> str:
    if name == "fitness.size":
        size = fit.get("size") or {}
        parts = [f"{size['floor_ratio']:.2f}× the parameter floor"] if size.get("floor_ratio") else []
        sib = size.get("smallest_sibling")
        if sib:
            parts.append(f"{sib['ratio']:.2f}× the {sib['format']} file")
        return ", ".join(parts) or "no floor known"
    if name == "fitness.ops":
        ops = fit.get("ops") or {}
        return f"{ops.get('count')} ops (captured graph: {ops.get('captured')})" if ops.get("count") is not None \
            else "op count not read"
    lat = fit.get("latency") or {}
    if lat.get("unmeasured") or not lat:
        return f"not measured: {lat.get('unmeasured') or 'no runtime here'}"
    parts = [f"{lat['median_ms']:.3g} ms (1 thread)"]
    if lat.get("vs_fastest_sibling"):
        parts.append(f"{lat['vs_fastest_sibling']['ratio']:.2f}× {lat['vs_fastest_sibling']['format']}")
    if lat.get("vs_fp32") is not None:
        parts.append(f"{lat['vs_fp32']:.2f}× its fp32 file")
    return ", ".join(parts)


def _budgets(cfg: Config, art: dict[str, Any], rows: list[dict[str, Any]], bench_reason: str | None,
             skip: str | None) -> list[Check]:
    from mobilize.bench import budget as bb

    limits = {k: v for k, v in cfg.budgets.limits(art["precision"]).items()
              if k not in ACCURACY_BUDGET_KEYS and k not in PLACEMENT_KEYS}
    if not limits:
        return []
    if skip:
        return [Check(f"budget.{k}", SKIP, skip) for k in limits]
    if not rows:  # bench did not run: sizes still come from the manifest
        rows = [{"threads": t, "bytes": art["bytes"], "reason": bench_reason} for t in cfg.bench.threads]
    verdict = bb.judge(bb.Budget(limits, cfg.budgets.threads), rows)
    out = []
    for key, limit in limits.items():
        noun, show = _BUDGET_WORDS[key]
        found = [c for c in verdict["checks"] if c["key"] == key]
        failed = [c for c in found if c["ok"] is False]
        known = [c for c in found if c["ok"] is not None]
        if failed:
            worst = max(failed, key=lambda c: c["value"])
            where = ", ".join(_threads(c["threads"]).strip() for c in failed if c["threads"] is not None)
            out.append(Check(f"budget.{key}", FAIL, f"{noun} {show(worst['value'])} > budget {show(limit)}"
                                                    + (f" ({where})" if where else "")))
        elif known:
            worst = max(known, key=lambda c: c["value"])
            out.append(Check(f"budget.{key}", PASS, f"{noun} {show(worst['value'])} ≤ budget {show(limit)}"
                                                    + _threads(worst["threads"])))
        else:
            why = next((c["reason"] for c in found if c.get("reason")), None) or bench_reason or "not measured"
            out.append(Check(f"budget.{key}", SKIP, f"{noun}: {why}"))
    return out


def _regressions(cfg: Config, res: ArtifactResult, base: dict[str, Any] | None, have_baseline: bool,
                 skip: str | None) -> list[Check]:
    names = ("regression.size", "regression.parity", "regression.latency")
    if skip:
        return [Check(n, SKIP, skip) for n in names]
    if not have_baseline:
        return [Check(n, SKIP, NO_BASELINE) for n in names]
    if base is None:
        return [Check(n, SKIP, "new since the baseline (record it with `mobilize baseline update`)") for n in names]
    reg = cfg.regression
    return [_size_regression(res, base, reg.max_size_growth_pct),
            _parity_regression(res, base, reg.max_parity_worsening, reg.parity_noise_floor),
            _latency_regression(res, base, reg.max_latency_growth_pct)]


def _size_regression(res: ArtifactResult, base: dict[str, Any], max_pct: float | None) -> Check:
    from mobilize.bench.report import fmt_bytes

    name = "regression.size"
    if max_pct is None:
        return Check(name, SKIP, "turned off ([regression] max_size_growth_pct = false)")
    old, new = base["bytes"], res.bytes or 0
    growth = (new - old) / old * 100 if old else (0.0 if new == old else math.inf)
    text = f"size {fmt_bytes(new)} vs {fmt_bytes(old)} in the baseline ({growth:+.1f}%, allowed +{max_pct:g}%)"
    return Check(name, FAIL if growth > max_pct else PASS, text)


def _parity_regression(res: ArtifactResult, base: dict[str, Any], factor: float | None, floor_share: float) -> Check:
    name = "regression.parity"
    if factor is None:
        return Check(name, SKIP, "turned off ([regression] max_parity_worsening = false)")
    now, was = res.parity or {}, base.get("parity") or {}
    new_e, old_e = now.get("max_abs_error"), was.get("max_abs_error")
    if new_e is None or old_e is None:
        return Check(name, SKIP, "no parity figures to compare (not verified here or in the baseline)")
    floor = floor_share * (now.get("atol") or 0.0)
    ratio = new_e / old_e if old_e > 0 else (1.0 if new_e == 0 else math.inf)
    new_snr, old_snr = now.get("snr_db"), was.get("snr_db")
    drop = (old_snr - new_snr) if (new_snr is not None and old_snr is not None) else None
    max_drop = 20 * math.log10(factor)
    text = f"max abs error {new_e:.3g} vs {old_e:.3g} in the baseline ({_times(ratio)}, allowed {factor:g}×)"
    if drop is not None:
        text += f"; SNR {new_snr:.1f} dB vs {old_snr:.1f} dB"
    if new_e <= floor:
        return Check(name, PASS, f"{text}; below the noise floor {floor:.2g} ({floor_share:g} × atol)")
    if ratio > factor or (drop is not None and drop > max_drop):
        why = [] if ratio <= factor else [f"max abs error grew {_times(ratio)} > {factor:g}×"]
        if drop is not None and drop > max_drop:
            why.append(f"SNR fell {drop:.1f} dB > {max_drop:.1f} dB")
        return Check(name, FAIL, f"{'; '.join(why)}: {text}")
    return Check(name, PASS, text)


def _times(ratio: float) -> str:
    return "∞×" if math.isinf(ratio) else f"{ratio:.2f}×"


def _latency_regression(res: ArtifactResult, base: dict[str, Any], max_pct: float | None) -> Check:
    name = "regression.latency"
    if max_pct is None:
        return Check(name, SKIP, "turned off ([regression] max_latency_growth_pct = false)")
    was = (base.get("latency") or {}).get("ratio_to_eager")
    now = (res.latency or {}).get("ratio_to_eager")
    if was is None:
        return Check(name, SKIP, "the baseline has no latency ratio for this file (not timed then)")
    if now is None:
        why = "not timed in this run" if res.latency is None else "no PyTorch eager row to divide by"
        return Check(name, SKIP, why)
    threads = res.latency["threads"] if res.latency else None
    growth = (now / was - 1) * 100 if was > 0 else 0.0
    text = (f"p50 latency {now:.3f}× PyTorch eager{_threads(threads)} vs {was:.3f}× in the baseline "
            f"({growth:+.0f}%, allowed +{max_pct:g}%)")
    if res.latency and res.latency.get("noisy"):
        text += "; noisy measurement"
    return Check(name, FAIL if growth > max_pct else PASS, text)


# --- the figures behind the regression checks (the summary's "vs baseline" table and chart) -----------------------


def comparison(cfg: Config, res: ArtifactResult, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Baseline → this run for size, latency ratio, max abs error and SNR, as the regression checks judge them.

    Each row: ``metric``, ``unit``, ``baseline``, ``current`` (None: not measured), ``delta`` (current − baseline),
    ``pct`` (delta as a share of the baseline, in %), ``limit`` (the value past which the check fails; None: not
    checked), ``fails`` ("above" or "below" the limit), ``rule`` (how the limit follows from the [regression]
    settings: ``+10%``, ``10×``, ``-20 dB``, ``noise floor``; "not checked" when turned off) and ``status`` (the
    row's verdict: the check's, or for parity the verdict on that figure alone). Latency rows add ``threads``.
    """
    reg = cfg.regression
    status = {c.name: c.status for c in res.checks}
    rows: list[dict[str, Any]] = []

    def row(metric: str, unit: str, was: float | None, now: float | None, limit: float | None, fails: str,
            rule: str, verdict: str, **extra: Any) -> None:
        if was is None:
            return
        delta = None if now is None else now - was
        pct = None if delta is None or was == 0 or unit == "dB" else delta / was * 100  # a dB change is the Δ
        rows.append({"metric": metric, "unit": unit, "baseline": was, "current": now, "delta": delta, "pct": pct,
                     "limit": limit, "fails": fails, "rule": rule, "status": verdict, **extra})

    pct = reg.max_size_growth_pct
    row("size", "bytes", base.get("bytes"), res.bytes,
        None if pct is None else base["bytes"] * (1 + pct / 100), "above",
        "not checked" if pct is None else f"+{pct:g}%",
        status.get("regression.size", SKIP))
    was = (base.get("latency") or {}).get("ratio_to_eager")
    now = (res.latency or {}).get("ratio_to_eager")
    pct = reg.max_latency_growth_pct
    row("latency ratio", "× PyTorch eager", was, now, None if pct is None or was is None else was * (1 + pct / 100),
        "above", "not checked" if pct is None else f"+{pct:g}%",
        status.get("regression.latency", SKIP),
        threads=(res.latency or {}).get("threads") or (base.get("latency") or {}).get("threads"))
    now_p, was_p = res.parity or {}, base.get("parity") or {}
    factor, verdict = reg.max_parity_worsening, status.get("regression.parity", SKIP)
    floor = reg.parity_noise_floor * (now_p.get("atol") or 0.0)
    new_e, old_e = now_p.get("max_abs_error"), was_p.get("max_abs_error")
    limit_e = None if factor is None or old_e is None else max(old_e * factor, floor)
    floored = limit_e is not None and limit_e == floor and floor > 0
    row("max abs error", "", old_e, new_e, limit_e, "above",
        "not checked" if factor is None else
        f"noise floor {reg.parity_noise_floor:g} × atol" if floored else f"{factor:g}×",
        _figure_verdict(verdict, new_e is not None and limit_e is not None and new_e > limit_e))
    new_s, old_s = now_p.get("snr_db"), was_p.get("snr_db")
    max_drop = None if factor is None else 20 * math.log10(factor)
    limit_s = None if max_drop is None or old_s is None else old_s - max_drop
    above_floor = new_e is None or new_e > floor
    row("SNR", "dB", old_s, new_s, limit_s, "below",
        "not checked" if max_drop is None else f"-{max_drop:.3g} dB",
        _figure_verdict(verdict, new_s is not None and limit_s is not None and new_s < limit_s and above_floor))
    return rows


def _figure_verdict(check: str, past_limit: bool) -> str:
    """One parity figure's verdict: the check's when it passed or was skipped; when it failed, fail only for the
    figure past its limit."""
    if check != FAIL:
        return check
    return FAIL if past_limit else PASS
