"""Fit to ship, not just equal: judge every artifact on size, graph size, speed and accuracy.

Parity says a file computes what PyTorch computes. Fitness says whether a mobile team should ship it. Each artifact
gets a record ``{"status", "findings", "size", "ops", "latency"}`` with status

    fit            nothing wrong was found
    unfit          a finding of severity "fail" (size, op count, latency) — exit 1 unless --allow-unfit
    below_target   a quantized file misses its accuracy target — exit 1 unless --allow-below-target

Checks (thresholds in :class:`Thresholds`, documented with their reasons in docs/fitness.md):

- ``size.floor``     bytes > max_floor_ratio × the parameter floor (stored tensors × bytes per value at the
                     precision, :func:`mobilize.capture.floor_bytes`) + a graph allowance;
- ``size.siblings``  bytes > max_sibling_ratio × the smallest file of the same precision in another format;
- ``ops``            op count > max_op_ratio × the captured graph's op count + op_slack;
- ``latency.siblings`` single-thread latency > max_latency_vs_sibling × the fastest sibling of the same precision;
- ``latency.fp32``   a quantized file slower than its own fp32 file by more than max_latency_vs_fp32;
- ``accuracy``       the quantization record's ``meets_target`` is false (held-out SNR / top-1 / user metric);
- ``dynamic``        a dim the user asked to be dynamic is fixed in the file (its declared input shape).

Latency findings are raised only when the difference survives the measurement noise (the 95 % confidence intervals
of the two medians do not reach the threshold) and is at least ``min_latency_gap_ms``; a timing that cannot decide
never fails a file. Size findings name the reason the analysis found (:mod:`mobilize.analysis`): duplicated or
repeated constants, an unrolled recurrence, a decomposed activation, weights left in float.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from mobilize.errors import OptionError

FIT, UNFIT, BELOW_TARGET = "fit", "unfit", "below_target"
FAIL, INFO = "fail", "info"
QUANTIZED = ("int8-weights", "int8", "int4-weights")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a file stops being fit to ship. ``None`` turns a check off."""

    max_floor_ratio: float | None = 1.25
    floor_slack_kb: float = 32.0  # fixed allowance: file headers, I/O descriptions, metadata
    slack_per_op_kb: float = 1.0  # per captured op: each op's name, attributes and shapes cost bytes too
    max_sibling_ratio: float | None = 1.5
    max_op_ratio: float | None = 4.0
    op_slack: int = 100
    max_latency_vs_sibling: float | None = 2.0
    max_latency_vs_fp32: float | None = 1.1
    min_latency_gap_ms: float = 0.1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.name.startswith("max_"):
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise OptionError(f"fitness threshold {f.name}={v!r} must be a finite number ≥ 0")
            if f.name.startswith("max_") and f.name.endswith("ratio") and v < 1:
                raise OptionError(f"fitness threshold {f.name}={v!r} must be ≥ 1 (a ratio to a floor or a sibling)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(Thresholds))
_OFF = ("off", "none", "false")


def parse_thresholds(text: str | None, base: Thresholds | None = None) -> Thresholds | None:
    """``"max_floor_ratio=1.5,max_latency_vs_sibling=off"`` → :class:`Thresholds` (``off`` turns a ``max_*`` check
    off); None/empty → ``base``. Raises :class:`~mobilize.errors.OptionError` naming the bad item."""
    if not text or not text.strip():
        return base
    changes: dict[str, Any] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in FIELDS:
            import difflib

            hint = difflib.get_close_matches(key, FIELDS, n=1)
            raise OptionError(f"--fitness: {item!r} is not KEY=VALUE with a known key"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; keys: {', '.join(FIELDS)}")
        if value.lower() in _OFF:
            if not key.startswith("max_"):
                raise OptionError(f"--fitness: {key} cannot be turned off; give a number")
            changes[key] = None
            continue
        try:
            changes[key] = float(value)
        except ValueError:
            raise OptionError(f"--fitness: {key}={value!r} is not a number (or 'off' for a max_* key)") from None
    return from_mapping(changes, base)


def from_mapping(changes: dict[str, Any], base: Thresholds | None = None) -> Thresholds:
    """``base`` (or the defaults) with ``changes`` applied; validated (one-line :class:`OptionError`)."""
    unknown = [k for k in changes if k not in FIELDS]
    if unknown:
        raise OptionError(f"fitness: unknown threshold {unknown[0]!r}; keys: {', '.join(FIELDS)}")
    if "op_slack" in changes and changes["op_slack"] is not None:
        changes["op_slack"] = int(changes["op_slack"])
    return dataclasses.replace(base or Thresholds(), **changes)


def _kb(n: float) -> str:
    from mobilize.bench.report import fmt_bytes

    return fmt_bytes(int(n))


def _finding(check: str, message: str, *, severity: str = FAIL, value: float | None = None,
             limit: float | None = None, reasons: Sequence[str] = ()) -> dict[str, Any]:
    return {"check": check, "severity": severity, "message": message, "value": value, "limit": limit,
            "reasons": list(reasons)}


def _tensor_label(name: str) -> str:
    """A short label for a stored tensor: the last path segment, without a converter's ``;N`` suffix."""
    import re

    tail = re.sub(r";\d+$", "", name.rsplit("/", 1)[-1]) or name
    if tail.startswith("torch.nn.modules."):  # litert-torch: <module path>/torch.nn.modules.linear.Linear_fc;1
        tail = tail.rsplit(".", 1)[-1]
    return tail if len(tail) <= 48 else tail[:47] + "…"


def size_reasons(analysis: dict[str, Any] | None, graph: dict[str, Any], fmt_ops_kinds: dict[str, int],
                 precision: str) -> list[str]:
    """Why a file is bigger than its parameters, as far as the static analysis can tell (largest first)."""
    if not analysis:
        return []
    found: list[tuple[int, str]] = []
    for d in analysis.get("duplicates", []):
        names = ", ".join(f"`{_tensor_label(n)}`" for n in d["tensors"][:3])
        found.append((d["extra_bytes"], f"duplicated constants: {len(d['tensors'])} tensors hold the same values "
                                        f"({d['relation']}; {_kb(d['extra_bytes'])} extra): {names}"))
    for r in analysis.get("repeated_constants", []):
        label = _tensor_label(r["tensor"])
        found.append((r["extra_bytes"], f"repeated constant: `{label}` stores one slice {r['repeats']}× along axis "
                                        f"{r['axis']} (a broadcast folded into the file; {_kb(r['extra_bytes'])} "
                                        "extra)"))
    kinds = graph.get("kinds") or {}
    if kinds.get("recurrent") and not fmt_ops_kinds.get("recurrent"):
        found.append((1, f"unrolled recurrence: {', '.join(kinds['recurrent'])} became {analysis['op_count']} ops "
                         "(no native recurrent op in the file)"))
    if kinds.get("prelu") and not fmt_ops_kinds.get("prelu"):
        found.append((0, f"decomposed activation: PReLU in {', '.join(kinds['prelu'][:3])} is lowered to elementwise "
                         "ops (no native PReLU op in the file)"))
    if precision in QUANTIZED:
        fl = analysis.get("float_weight_bytes") or {}
        total = sum(fl.values())
        if total:
            ops = ", ".join(f"{k} {_kb(v)}" for k, v in list(fl.items())[:4])
            found.append((total, f"weights left in float: {_kb(total)} ({ops})"))
    elif precision == "fp16":
        fl = analysis.get("float32_weight_bytes") or {}
        total = sum(fl.values())
        if total:
            ops = ", ".join(f"{k} {_kb(v)}" for k, v in list(fl.items())[:4])
            found.append((total, f"weights stored as float32 in an fp16 file: {_kb(total)} ({ops})"))
    const = (analysis.get("constants") or {}).get("bytes", 0)
    return [text for _, text in sorted(found, key=lambda x: -x[0])] or (
        [f"constants hold {_kb(const)}; the rest is graph structure and metadata"] if const else [])


def judge(artifacts: Sequence[dict[str, Any]], graph: dict[str, Any], floors: dict[str, int],
          thresholds: Thresholds | None = None, dynamic: dict[str, dict[int, str]] | None = None) -> None:
    """Set ``art["fitness"]`` on every exported artifact (in place), judging each against its siblings.
    ``dynamic``: the dims the user asked to be dynamic (``{input: {axis: name}}``)."""
    th = thresholds or Thresholds()
    ok = [a for a in artifacts if a.get("status") == "ok"]
    for a in artifacts:
        if a.get("status") != "ok":
            a["fitness"] = None
    for art in ok:
        art["fitness"] = _judge_one(art, ok, graph, floors, th)
        fixed = fixed_dims(art, dynamic or {})
        if fixed:
            art["fitness"]["findings"].append(_finding(
                "dynamic", "fixed where dynamic was asked: " + "; ".join(fixed), value=len(fixed), limit=0))
            if art["fitness"]["status"] == FIT:
                art["fitness"]["status"] = UNFIT


def requested_dynamic(model_inputs: Sequence[dict[str, Any]]) -> dict[str, dict[int, str]]:
    """``{input: {axis: dim name}}`` from the manifest's model inputs (a dynamic dim's shape entry is its name)."""
    return {t["name"]: {i: d for i, d in enumerate(t.get("shape") or []) if isinstance(d, str)}
            for t in model_inputs if any(isinstance(d, str) for d in t.get("shape") or [])}


def fixed_dims(art: dict[str, Any], dynamic: dict[str, dict[int, str]]) -> list[str]:
    """The requested dynamic dims this file fixes: its declared input has a number there."""
    out = []
    for t in art.get("inputs") or []:
        axes = dynamic.get(t.get("model_name") or t["name"], {})
        shape = t.get("shape") or []
        for ax, name in sorted(axes.items()):
            if ax < len(shape) and isinstance(shape[ax], int):
                out.append(f"{name} ({t['name']} axis {ax}) is {shape[ax]} in the file")
    return out


def _latency(art: dict[str, Any]) -> dict[str, Any] | None:
    lat = art.get("latency")
    return lat if lat and lat.get("median_ms") is not None else None


def _judge_one(art: dict[str, Any], ok: Sequence[dict[str, Any]], graph: dict[str, Any], floors: dict[str, int],
               th: Thresholds) -> dict[str, Any]:
    fmt, prec, nbytes = art["format"], art["precision"], art.get("bytes") or 0
    analysis = art.get("analysis")
    findings: list[dict[str, Any]] = []
    kinds = (analysis or {}).get("kinds") or {}
    captured_ops = int(graph.get("op_count") or 0)
    # --- size against the parameter floor -------------------------------------------------------------------
    floor = floors.get(prec)
    size: dict[str, Any] = {"bytes": nbytes, "floor_bytes": floor}
    slack = (th.floor_slack_kb + th.slack_per_op_kb * captured_ops) * 1000
    if floor:
        size["floor_ratio"] = round(nbytes / floor, 3)
        allowed = th.max_floor_ratio * floor + slack if th.max_floor_ratio is not None else None
        size["allowed_bytes"] = int(allowed) if allowed is not None else None
        if allowed is not None and nbytes > allowed:
            findings.append(_finding(
                "size.floor", f"{_kb(nbytes)} is {nbytes / floor:.2f}× its parameter floor {_kb(floor)} at {prec} "
                f"(allowed {th.max_floor_ratio:g}× + {_kb(slack)})", value=round(nbytes / floor, 3),
                limit=th.max_floor_ratio, reasons=size_reasons(analysis, graph, kinds, prec)))
    # --- size against the same precision in the other formats ---------------------------------------------------
    sibs = [s for s in ok if s is not art and s["precision"] == prec and s["format"] != fmt and s.get("bytes")]
    if sibs:
        smallest = min(sibs, key=lambda s: (s["bytes"], s["format"]))
        ratio = nbytes / smallest["bytes"]
        size["smallest_sibling"] = {"format": smallest["format"], "bytes": smallest["bytes"],
                                    "ratio": round(ratio, 3)}
        if th.max_sibling_ratio is not None and nbytes > th.max_sibling_ratio * smallest["bytes"] + slack:
            findings.append(_finding(
                "size.siblings", f"{_kb(nbytes)} is {ratio:.2f}× the {smallest['format']} {prec} file "
                f"({_kb(smallest['bytes'])}; allowed {th.max_sibling_ratio:g}×)", value=round(ratio, 3),
                limit=th.max_sibling_ratio, reasons=size_reasons(analysis, graph, kinds, prec)))
    # --- op count against the captured graph ------------------------------------------------------------------
    ops: dict[str, Any] = {"count": None, "captured": captured_ops}
    if analysis:
        n = int(analysis.get("op_count") or 0)
        ops["count"] = n
        ops["ratio"] = round(n / captured_ops, 2) if captured_ops else None
        if th.max_op_ratio is not None and captured_ops and n > th.max_op_ratio * captured_ops + th.op_slack:
            reasons = [r for r in size_reasons(analysis, graph, kinds, prec) if r.startswith(("unrolled", "decomp"))]
            findings.append(_finding(
                "ops", f"{n} ops where the captured graph has {captured_ops} ({n / captured_ops:.0f}×; allowed "
                f"{th.max_op_ratio:g}× + {th.op_slack})", value=n, limit=th.max_op_ratio * captured_ops + th.op_slack,
                reasons=reasons))
    # --- latency -----------------------------------------------------------------------------------------------
    lat_rec = _latency_findings(art, ok, th, findings)
    # --- accuracy (quantized files) ----------------------------------------------------------------------------
    q = art.get("quantization") or {}
    below = False
    if prec in QUANTIZED and q.get("meets_target") is False:
        below = True
        findings.append(_finding("accuracy", accuracy_miss(q), value=(q.get("achieved") or {}).get("snr_db"),
                                 limit=(q.get("target") or {}).get("min_snr_db")))
    status = BELOW_TARGET if below else (UNFIT if any(f["severity"] == FAIL for f in findings) else FIT)
    return {"status": status, "findings": findings, "size": size, "ops": ops, "latency": lat_rec,
            "thresholds": th.to_dict()}


def accuracy_miss(q: dict[str, Any]) -> str:
    """One sentence: what the quantized file achieved on held-out data against the target."""
    a, t = q.get("achieved") or {}, q.get("target") or {}
    parts = []
    if a.get("snr_db") is not None and t.get("min_snr_db") is not None and a["snr_db"] < t["min_snr_db"]:
        parts.append(f"held-out SNR {a['snr_db']:.1f} dB < {t['min_snr_db']:g} dB")
    if a.get("top1_agreement") is not None and t.get("min_top1") is not None and a["top1_agreement"] < t["min_top1"]:
        parts.append(f"top-1 agreement {a['top1_agreement']:.1%} < {t['min_top1']:.1%}")
    m = a.get("metric") or {}
    if m.get("value") is not None and m.get("min") is not None and m["value"] < m["min"]:
        parts.append(f"{m.get('name', 'metric')} {m['value']:.4g} < {m['min']:.4g} (PyTorch: {m.get('pytorch')})")
    return "below the accuracy target: " + ("; ".join(parts) or "the target was not met") + \
        f" (recipe {q.get('recipe')})"


def _latency_findings(art: dict[str, Any], ok: Sequence[dict[str, Any]], th: Thresholds,
                      findings: list[dict[str, Any]]) -> dict[str, Any] | None:
    mine = _latency(art)
    if mine is None:
        lat = art.get("latency")
        return {"unmeasured": lat.get("unmeasured")} if lat else None
    rec: dict[str, Any] = {"median_ms": mine["median_ms"], "threads": mine.get("threads", 1)}
    prec, fmt = art["precision"], art["format"]
    sibs = [s for s in ok if s["precision"] == prec and s["format"] != fmt and _latency(s)]
    if sibs:
        fastest = min(sibs, key=lambda s: (_latency(s)["median_ms"], s["format"]))
        other = _latency(fastest)
        rec["vs_fastest_sibling"] = {"format": fastest["format"], "ratio": round(mine["median_ms"] /
                                                                                 other["median_ms"], 3)}
        lim = th.max_latency_vs_sibling
        if lim is not None and _surely_slower(mine, other, lim, th.min_latency_gap_ms):
            emulated = prec == "fp16" and not _native_fp16()
            findings.append(_finding(
                "latency.siblings", f"{mine['median_ms']:.3g} ms is {mine['median_ms'] / other['median_ms']:.2f}× the "
                f"{fastest['format']} {prec} file ({other['median_ms']:.3g} ms, single thread; allowed {lim:g}×)"
                + ("; not judged: this CPU has no fp16 arithmetic, so fp16 compute is emulated here and its latency "
                   "says little about a phone" if emulated else ""),
                severity=INFO if emulated else FAIL, value=round(mine["median_ms"] / other["median_ms"], 3),
                limit=lim))
    if prec in QUANTIZED:
        base = next((s for s in ok if s["format"] == fmt and s["precision"] == "fp32" and _latency(s)), None)
        if base is not None:
            other = _latency(base)
            rec["vs_fp32"] = round(mine["median_ms"] / other["median_ms"], 3)
            lim = th.max_latency_vs_fp32
            if lim is not None and _surely_slower(mine, other, lim, th.min_latency_gap_ms):
                findings.append(_finding(
                    "latency.fp32", f"slower than its fp32 file: {mine['median_ms']:.3g} ms vs "
                    f"{other['median_ms']:.3g} ms ({mine['median_ms'] / other['median_ms']:.2f}×, single thread; "
                    f"allowed {lim:g}×)", value=round(mine["median_ms"] / other["median_ms"], 3), limit=lim))
    return rec


def latency_pairs(items: Sequence[tuple[str, str, str]], thresholds: Thresholds | None = None) -> list[list[Any]]:
    """The latency comparisons :func:`judge` will make among ``(key, format, precision)`` files, as
    ``[key_a, key_b, ratio]`` ("is a slower than ratio × b?"): each file against every sibling of its precision
    (``max_latency_vs_sibling``), each quantized file against its fp32 file (``max_latency_vs_fp32``). The timing
    stops once they are settled (:func:`mobilize.verify.timing.decided_by`)."""
    th = thresholds or Thresholds()
    pairs: list[list[Any]] = []
    for key, fmt, prec in items:
        if th.max_latency_vs_sibling is not None:
            pairs += [[key, k, th.max_latency_vs_sibling] for k, f, p in items if p == prec and f != fmt]
        if th.max_latency_vs_fp32 is not None and prec in QUANTIZED:
            pairs += [[key, k, th.max_latency_vs_fp32] for k, f, p in items if f == fmt and p == "fp32"]
    return pairs


def _native_fp16() -> bool:
    from mobilize.bench.machine import native_fp16

    return native_fp16()


def _surely_slower(a: dict[str, Any], b: dict[str, Any], ratio: float, min_gap_ms: float) -> bool:
    """Whether ``a`` is slower than ``ratio`` × ``b`` beyond doubt: the low end of a's confidence interval exceeds
    ``ratio`` × the high end of b's, and the gap between the medians is at least ``min_gap_ms``."""
    a_lo = a.get("ci_low_ms", a["median_ms"])
    b_hi = b.get("ci_high_ms", b["median_ms"])
    return a_lo > ratio * b_hi and a["median_ms"] - b["median_ms"] >= min_gap_ms


def failing(art: dict[str, Any]) -> list[dict[str, Any]]:
    """The findings that make an artifact unfit or below target."""
    fit = art.get("fitness") or {}
    return [f for f in fit.get("findings", []) if f["severity"] == FAIL]
