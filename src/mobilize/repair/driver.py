"""Convert as is; on a failure apply the repairs that match it and retry; record what ran and why.

::

    convert(capture) ──ok──▶ file (repairs: [] or the "always" ones)
         │ ConversionError
         ▼
    symptoms: the ops and nodes the converter named, every op Core ML's registry lacks, the message
         ▼
    repairs serving the format that the symptoms implicate ──none──▶ raise (ops + blamed modules)
         ▼
    stage(program, their decompositions) + their graph passes ──▶ convert(repaired capture) ──▶ … (≤ 3 rounds)

Each round re-applies every repair chosen so far to the *original* capture, so the program a converter sees is
always one deterministic rewrite of what torch.export captured. Parity later judges the repaired file like any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from mobilize.capture import Capture
from mobilize.errors import ConversionError
from mobilize.repair.registry import Repair, collecting, counting, for_format, record_hit

MAX_ROUNDS = 3
_MAX_MODULES = 8


def stage(fmt: str, program: Any, table: dict[Any, Callable[..., Any]]) -> Any:
    """``program`` with the decompositions ``table`` applied the way ``fmt``'s converter sees the program: Core ML
    converts the default-decomposed program (so ``table`` joins that table, and a repair can replace an op before
    torch's default decomposition turns it into something worse); torch.onnx and litert-torch decompose on their own,
    so only ``table`` runs here."""
    if fmt == "coreml":
        from mobilize.export.coreml import decompose

        return decompose(program, table)
    return program.run_decompositions(table)


def apply(program: Any, fmt: str, repairs: list[Repair]) -> tuple[Any, dict[str, list[str]]]:
    """A new program with ``repairs`` applied for ``fmt``, and where each one fired (``{name: [module, ...]}``)."""
    from mobilize.capture import module_of

    table: dict[Any, Callable[..., Any]] = {}
    for r in repairs:
        if r.decompositions is not None:
            for op, fn in r.decompositions().items():
                if op in table:
                    raise ValueError(f"repairs {r.name!r} and another both rewrite {op}")
                table[op] = counting(r.name, fn)
    with collecting() as hits:
        out = stage(fmt, program, table)
        passes = [r for r in repairs if r.graph_pass is not None]
        for r in passes:
            assert r.graph_pass is not None
            for node in r.graph_pass(out):
                record_hit(r.name, module_of(node))
        if passes:
            out.graph_module.graph.lint()
            out.graph_module.recompile()
    return out, {k: list(v) for k, v in hits.items()}


def present(repair: Repair, program: Any) -> bool:
    """Whether ``program`` has a node the repair rewrites."""
    targets = set(repair.ops)
    return any(n.op == "call_function" and str(n.target) in targets and (repair.applies is None or repair.applies(n))
               for n in program.graph.nodes)


def convert(fmt: str, capture: Capture, convert_fn: Callable[[Capture], Any], *,
            enabled: bool = True) -> tuple[Any, list[dict[str, Any]]]:
    """``convert_fn(capture)`` with repairs: returns ``(its result, repair records)``.

    Repairs ``always`` applied for ``fmt`` run first when the program has their pattern; after a
    :class:`~mobilize.errors.ConversionError` the repairs its symptoms implicate are added and the conversion
    retried. A failure no repair fixes is re-raised with every op the converter lacks and the modules of the nodes
    it failed on (``ops``, ``modules``) and the repairs tried (``repairs``). ``enabled=False`` (``--no-repair``)
    converts as is (the diagnostics still run).
    """
    records: list[dict[str, Any]] = []
    applied: list[Repair] = []
    cap = capture
    if enabled:
        always = [r for r in for_format(fmt) if r.always_for(fmt) and present(r, capture.program)]
        if always:
            try:
                program, hits = apply(capture.program, fmt, always)
            except Exception as exc:  # noqa: BLE001 - a repair that cannot apply must not cost the file
                records.append({"name": ",".join(r.name for r in always), "status": "error", "rewrites": 0,
                                "why": f"could not apply: {type(exc).__name__}: {_short(exc)}", "modules": []})
            else:
                applied = [r for r in always if hits.get(r.name)]
                records += [_record(r, f"applied to every {fmt} export: {r.equivalent} is {_ALWAYS_WHY}",
                                    hits[r.name]) for r in applied]
                if applied:
                    cap = dataclasses.replace(capture, program=program)
    try:
        return convert_fn(cap), records
    except ConversionError as exc:
        err = exc
    tried = {r.name for r in applied}
    for _ in range(MAX_ROUNDS if enabled else 0):
        ops, message = symptoms(fmt, err, cap.program)
        picked: list[tuple[Repair, str]] = []
        for r in for_format(fmt):
            why = None if (r.name in tried or r.always_for(fmt)) else r.implicated_by(ops, message)
            if why:
                picked.append((r, why))
        if not picked:
            break
        tried |= {r.name for r, _ in picked}
        try:
            program, hits = apply(capture.program, fmt, applied + [r for r, _ in picked])
        except Exception as exc:  # noqa: BLE001 - recorded; the conversion error stands
            records.append({"name": ",".join(r.name for r, _ in picked), "status": "error", "rewrites": 0,
                            "why": f"could not apply: {type(exc).__name__}: {_short(exc)}", "modules": []})
            break
        new = [(r, why) for r, why in picked if hits.get(r.name)]
        if not new:
            break
        for rec in records:  # counts of earlier repairs on the new program
            if rec["name"] in hits:
                rec.update(_counts(hits[rec["name"]]))
        records += [_record(r, f"{fmt} conversion failed: {why}", hits[r.name]) for r, why in new]
        applied += [r for r, _ in new]
        cap = dataclasses.replace(capture, program=program)
        try:
            return convert_fn(cap), records
        except ConversionError as exc:
            err = exc
    if any(r.always_for(fmt) for r in applied) and enabled:
        try:  # never worse than the converter alone: the unrepaired program, once
            return convert_fn(capture), [{**rec, "status": "reverted"} for rec in records]
        except ConversionError:
            pass
    explain(fmt, err, cap.program)
    err.repairs = records  # type: ignore[attr-defined]
    raise err


_ALWAYS_WHY = "equivalent and gives a smaller or faster file (docs/repairs.md)"


def symptoms(fmt: str, err: ConversionError, program: Any) -> tuple[list[str], str]:
    """The op names a failure implicates and the converter's message (with its causes)."""
    from mobilize.repair.diagnose import _messages

    explain(fmt, err, program)
    return list(err.ops), _messages(err)


def explain(fmt: str, err: ConversionError, program: Any) -> None:
    """Sharpen ``err`` in place: the nodes the converter failed on (their ops and modules first) and, for Core ML,
    every op of the program its registry lacks, each with the modules calling it."""
    if getattr(err, "_explained", None) is program:
        return
    from mobilize.repair.diagnose import blame, coreml_unsupported, failing_nodes

    ops: list[str] = list(err.ops)
    modules: list[str] = []
    staged = program
    unsupported: list[dict[str, Any]] = []
    try:
        if fmt == "coreml":
            staged = stage(fmt, program, {})
            unsupported = coreml_unsupported(staged)
        nodes = failing_nodes(err.__cause__ or err, staged)
        if not nodes and staged is not program:
            nodes = failing_nodes(err.__cause__ or err, program)
    except Exception:  # noqa: BLE001 - diagnostics are best effort; the converter's own message stands
        nodes = []
    for node in nodes:
        op = str(node.target)
        if op not in ops:
            ops.append(op)
        if blame(node) not in modules:
            modules.append(blame(node))
    for entry in unsupported:
        if entry["op"] not in ops:
            ops.append(entry["op"])
        for where in entry["modules"][:_MAX_MODULES]:
            line = f"{where} calls {entry['op']}"
            if line not in modules:
                modules.append(line)
    err.ops = [o for o in ops if not any(p != o and p.startswith(o + ".") for p in ops)]  # aten.view ⊂ .default
    if modules:
        err.modules = modules
    err.unsupported = unsupported  # type: ignore[attr-defined]
    err._explained = program  # type: ignore[attr-defined]


def _record(repair: Repair, why: str, where: list[str]) -> dict[str, Any]:
    return {"name": repair.name, "status": "applied", "why": why, "pattern": repair.pattern,
            "equivalent": repair.equivalent, **_counts(where)}


def _counts(where: list[str]) -> dict[str, Any]:
    modules: list[str] = []
    for m in where:
        if m not in modules:
            modules.append(m)
    return {"rewrites": len(where), "modules": modules[:_MAX_MODULES]
            + ([f"… and {len(modules) - _MAX_MODULES} more"] if len(modules) > _MAX_MODULES else [])}


def _short(exc: BaseException, limit: int = 300) -> str:
    from mobilize.errors import one_line

    return one_line(exc, limit)
