"""One artifact, layer by layer: run the file twice in the worker (every tensor exposed; then every matched tensor
fed PyTorch's value), match its tensors to PyTorch's modules, and measure per layer

- **output error**: the file's tensor against PyTorch's output of the module (everything upstream included);
- **added error**: the same tensor when the layer's inputs are PyTorch's own values — what this layer adds.

The first layer (in execution order) whose added error crosses the threshold is the culprit. Quantized layers also
get the grid of their output (scale, zero point, representable range), the range PyTorch's output actually took on
the inputs and the share of it outside the grid (clipped), and whether the accuracy search kept them in float.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.diff.graph import Graph
from mobilize.diff.match import Layer, Matching, Resolver, match, transforms
from mobilize.diff.torch_side import TorchSide

#: a layer "diverges" when the SNR of what it adds falls below this (dB), per precision; ``--threshold`` overrides.
#: fp32 layers add ~100+ dB (float rounding); fp16 compute ~60-70 dB per op; int8 weights ~35-45; int8 ~25-40.
DEFAULT_THRESHOLD_DB = {"fp32": 60.0, "fp16": 40.0, "int8-weights": 25.0, "int8": 20.0, "int4-weights": 12.0}
#: the SNR reported for an exact match (as verify.metrics)
SNR_CAP = 200.0
#: a layer whose added error is this much worse than its output error was fed something the file does not compute
MISFED_DB = 20.0
#: re-matching rounds after misfed tensors are found
MAX_REMATCH = 2


def threshold_for(precision: str, override: float | None) -> float:
    return float(override) if override is not None else DEFAULT_THRESHOLD_DB.get(precision, 20.0)


def _metrics(got: Sequence[np.ndarray], ref: Sequence[np.ndarray], channel_axis: int | None = None
             ) -> dict[str, Any]:
    """SNR (dB) and max abs error over every sample together; with ``channel_axis``, also the median over channels
    of each channel's SNR — an outlier channel that stretches a shared int8 grid leaves the whole-tensor SNR high
    while every other channel is lost."""
    sig = noise = 0.0
    mae = 0.0
    nonfinite = 0
    ch_sig: np.ndarray | None = None
    ch_noise: np.ndarray | None = None
    for a, r in zip(got, ref):
        r = np.asarray(r, dtype=np.float64)
        a = np.asarray(a, dtype=np.float64).reshape(r.shape)
        ok = np.isfinite(a) & np.isfinite(r)
        agree = (np.isnan(a) & np.isnan(r)) | (np.isinf(a) & np.isinf(r) & (a == r))  # -inf masks on both sides
        nonfinite += int((~ok & ~agree).sum())
        d = np.where(ok, a - r, 0.0)
        rr = np.where(ok, r, 0.0)
        sig += float(np.sum(rr**2))
        noise += float(np.sum(d**2))
        if ok.any():
            mae = max(mae, float(np.abs(d).max()))
        if channel_axis is not None and r.ndim >= 2:
            axes = tuple(i for i in range(r.ndim) if i != channel_axis % r.ndim)
            cs, cn = np.sum(rr**2, axis=axes), np.sum(d**2, axis=axes)
            ch_sig = cs if ch_sig is None else ch_sig + cs
            ch_noise = cn if ch_noise is None else ch_noise + cn
    out = {"snr_db": _snr(sig, noise), "max_abs_error": float(f"{mae:.4g}")}
    if ch_sig is not None and ch_noise is not None and ch_sig.size > 1:
        live = ch_sig > 1e-6 * ch_sig.max() if ch_sig.max() > 0 else np.zeros_like(ch_sig, dtype=bool)
        per = [_snr(float(s_), float(n_)) for s_, n_ in zip(ch_sig[live], ch_noise[live])]
        per = [p for p in per if p is not None]
        out["channel_snr_db"] = round(float(np.median(per)), 2) if per else None
    if nonfinite:
        out["nonfinite"] = nonfinite
    return out


def _snr(sig: float, noise: float) -> float | None:
    if noise == 0:
        return SNR_CAP
    if sig == 0:
        return None  # PyTorch's output has no energy: only the max abs error says anything
    return round(min(SNR_CAP, 10 * math.log10(sig / noise)), 2)


def channel_axis(shape: Sequence[int]) -> int | None:
    """PyTorch's channel axis: 1 for (N, C, H, W…), the last one for (N, C) and (N, T, C)."""
    if len(shape) >= 4:
        return 1
    return -1 if len(shape) >= 2 else None


def score(m: dict[str, Any] | None) -> float:
    """A number to rank by (lower is worse): the lower of the whole-tensor SNR and the median channel SNR; for an
    all-zero reference 0 dB when the file is not zero."""
    if not m:
        return SNR_CAP
    if m.get("nonfinite"):
        return -math.inf
    if m["snr_db"] is None:
        return SNR_CAP if m["max_abs_error"] <= 1e-6 else 0.0
    ch = m.get("channel_snr_db")
    return float(min(m["snr_db"], ch)) if ch is not None else float(m["snr_db"])


def run_artifact(art: dict[str, Any], path: Path, side: TorchSide, samples: Path, input_names: list[str],
                 *, threshold_db: float | None, isolate: bool, sibling: Path | None = None,
                 step: Any = None) -> dict[str, Any]:
    """The per-layer report of one artifact (``side``: PyTorch's values on the same samples)."""
    step = step or (lambda _m: None)
    label = f"{art['format']} {art['precision']}"
    thr = threshold_for(art["precision"], threshold_db)
    report: dict[str, Any] = {"format": art["format"], "precision": art["precision"], "path": art["path"],
                              "threshold_db": thr, "notes": list(side.notes)}
    with tempfile.TemporaryDirectory(prefix="mobilize-diff-") as tmp:
        step(f"{label}: running with every tensor exposed")
        obs_path = Path(tmp) / "observed.npz"
        found = _job({"op": "diff", "format": art["format"], "path": str(path), "samples": str(samples),
                      "input_names": input_names, "values": str(obs_path),
                      "provenance": str(sibling) if sibling else None}, isolate)
        if "error" in found:
            report.update(error=f"could not run the file with its tensors exposed: {found['error']}",
                          could_not_run=True, layers=[], unmatched=[], coverage=None, first_divergent=None)
            report["summary"] = summary_line(report)
            return report
        graph = Graph.from_dict(found["graph"])
        used = list(found["used"])
        report["runtime"] = graph.runtime
        report["samples"] = len(used)
        report["notes"] += list(graph.notes) + [f"skipped {s}" for s in found.get("skipped", [])]
        observed = _load(obs_path, len(used))
        resolver = Resolver(side, art["format"], found.get("sibling_scopes"))
        exclude: frozenset[str] = frozenset()
        def upstream(layer: Layer, leaf: Any) -> bool:
            """Does the layer's tensor hold ``leaf``'s output rather than its own module's? (values of sample 0)"""
            got = observed[0].get(layer.tensor)
            if got is None:
                return False
            mine, theirs = side.leaves[layer.primary].outputs[used[0]], leaf.outputs[used[0]]

            def fit(ref: np.ndarray) -> float:
                return max(score(_metrics([tr.to_torch(got, list(ref.shape))], [ref])) for tr in layer.transforms)

            q = graph.tensors[layer.tensor].quant
            if q and len(q["scale"]) == 1:  # a grid that cannot hold the module's output but holds the next one's
                lo = (q["qmin"] - (q["zero_point"] or [0])[0] - 0.5) * q["scale"][0]
                if np.mean(mine < lo) > 0.01 and np.mean(theirs < lo) < 0.001:
                    return True
            return fit(theirs) > fit(mine) + 3.0

        def closer(tensor: int, a: int, b: int) -> bool:
            got = observed[0].get(tensor)
            if got is None:
                return False
            shape = graph.tensors[tensor].shape

            def fit(order: int) -> float:
                ref = side.leaves[order].outputs[used[0]]
                return max((score(_metrics([tr.to_torch(got, list(ref.shape))], [ref]))
                            for tr in transforms(list(ref.shape), shape)), default=-math.inf)

            return fit(a) > fit(b)

        for attempt in range(MAX_REMATCH + 1):
            m = match(side, graph, resolver, exclude, upstream, closer)
            refs = {la.primary: [side.leaves[la.primary].outputs[i] for i in used] for la in m.layers}
            for la in m.layers:
                _choose_transform(la, refs[la.primary], [observed[n].get(la.tensor) for n in range(len(used))])
            fed_layers, fedded, feed_note = _feed(art, path, samples, input_names, found["graph"], graph, m, refs,
                                                  len(used), Path(tmp) / f"fed{attempt}", isolate, step, label)
            fed_set = {la.tensor for la in fed_layers} | {t.index for t in graph.inputs}
            rows = [_row(la, m, side, graph, refs[la.primary], observed, fedded, fed_set, art, thr, feed_note)
                    for la in m.layers if la.transform is not None]
            wrong = _misfed(rows, m, side, graph, fed_set) if fedded is not None else set()
            if not wrong or attempt == MAX_REMATCH:
                break
            report["notes"].append(f"{', '.join(sorted(wrong))}: the file's tensor named after it does not hold its "
                                   "output (feeding PyTorch's output there broke the layers that read it); "
                                   "compared as fused into the layer that reads it")
            exclude = exclude | wrong
        if fedded is not None and graph.notes:
            report["notes"] += [n for n in graph.notes if n not in report["notes"]]
    rows.sort(key=lambda r: r["order"])
    for depth, r in enumerate(rows):
        r["depth"] = depth
    report["layers"] = rows
    report["coverage"] = coverage(side, m)
    report["unmatched"] = [_unmatched_row(u, side) for u in m.unmatched] + [
        {"module": side.leaves[la.primary].path, "class": side.leaves[la.primary].cls, "status": "unmatched",
         "why": "no layout of its output fits the file tensor's values"} for la in m.layers
        if la.transform is None and side.leaves[la.primary].leaf]
    report["feeding"] = _feeding(art["format"], fedded is not None, feed_note)
    report["kept_float"] = list((art.get("quantization") or {}).get("kept_float") or [])
    report["first_divergent"] = first_divergent(rows)
    report["summary"] = summary_line(report)
    return report


def _feed(art: dict[str, Any], path: Path, samples: Path, input_names: list[str], graph_dict: dict[str, Any],
          graph: Graph, m: Matching, refs: dict[int, list[np.ndarray]], count: int, base: Path, isolate: bool,
          step: Any, label: str) -> tuple[list[Layer], list[dict[int, np.ndarray]] | None, str | None]:
    """Run the file with every layer matched by provenance fed PyTorch's output (a shape+order match is compared
    but never fed: a wrong one would poison everything after it). Returns (fed layers, values, why not)."""
    cons = graph.consumers()
    fed_layers = [la for la in m.layers if la.transform is not None and cons.get(la.tensor)
                  and la.by in ("provenance", "output")]
    if not fed_layers:
        return [], None, "no matched tensor is read by another op"
    step(f"{label}: feeding every layer PyTorch's input")
    fed_path = base.with_suffix(".in.npz")
    arrays = {f"s{n}/t{la.tensor}": np.ascontiguousarray(la.transform.to_file(refs[la.primary][n]))  # type: ignore[union-attr]
              .astype(np.float32) for la in fed_layers for n in range(count)}
    np.savez(fed_path, **arrays)
    out_path = base.with_suffix(".out.npz")
    fed = _job({"op": "diff", "format": art["format"], "path": str(path), "samples": str(samples),
                "input_names": input_names, "values": str(out_path), "graph": graph_dict, "fed": str(fed_path)},
               isolate)
    if "error" in fed:
        return fed_layers, None, f"could not run the file with PyTorch's values fed in: {fed['error']}"
    graph.notes += [n for n in Graph.from_dict(fed["graph"]).notes if n not in graph.notes]
    return fed_layers, _load(out_path, count), None


def _misfed(rows: list[dict[str, Any]], m: Matching, side: TorchSide, graph: Graph, fed: set[int]) -> set[str]:
    """Leaves whose matched tensor is not really their output. Feeding a layer PyTorch's exact inputs can only help
    it; when its added error is far worse than its output error, an input it was fed is not what the file computes
    there (e.g. a LayerNorm whose scale the converter folded into the next Linear) — that input's layer is wrong."""
    by_tensor = {la.tensor: la for la in m.layers}
    by_row = {(r["tensor"]): r for r in rows}
    wrong: set[str] = set()
    for la in m.layers:
        r = by_row.get(graph.tensors[la.tensor].name)
        if r is None or r["added"] is None:
            continue
        if score(r["added"]) >= score(r["output"]) - MISFED_DB:
            continue
        for i in _region(graph, la, fed, boundary=True):
            src = by_tensor.get(i)
            if src is not None and src is not la and side.leaves[src.primary].leaf and src.by != "output":
                wrong.add(side.leaves[src.primary].path)
    return wrong


def _job(job: dict[str, Any], isolate: bool) -> dict[str, Any]:
    if not isolate:
        from mobilize.diff.worker import handle

        return handle(job)
    from mobilize import isolate as iso

    try:
        return iso.run(job)
    except iso.WorkerDied as exc:
        tail = f" — last output: {exc.log_tail[-1][:200]}" if exc.log_tail else ""
        return {"error": f"{exc}{tail}", "kind": "WorkerDied"}


def _load(path: Path, count: int) -> list[dict[int, np.ndarray]]:
    out: list[dict[int, np.ndarray]] = [{} for _ in range(count)]
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            n, t = key.split("/")
            out[int(n[1:])][int(t[1:])] = z[key]
    return out


def _choose_transform(layer: Layer, refs: list[np.ndarray], got: list[np.ndarray | None]) -> None:
    """Of the layouts that fit the shapes, the one whose values agree best (a layout choice, not a match)."""
    if any(g is None for g in got) or not refs:
        layer.transform = None
        return
    shape = list(refs[0].shape)
    best = layer.transforms[0] if len(layer.transforms) == 1 else max(
        layer.transforms, key=lambda tr: score(_metrics([tr.to_torch(got[0], shape)], [refs[0]])))
    layer.transform = _folded_scale(best, got[0], refs[0])


def _folded_scale(tr: Any, got: np.ndarray, ref: np.ndarray) -> Any:
    """The layout with the constant factor a converter folded into the op (TFLite moves SDPA's 1/√d scaling into the
    query and key Linear weights), when the file is that multiple of PyTorch's output almost exactly: SNR ≥ 35 dB
    after the factor, 15 dB better than without it. A broken weight is not a multiple of the output."""
    import dataclasses as dc

    f = np.asarray(tr.to_torch(got, list(ref.shape)), dtype=np.float64).ravel()
    r = np.asarray(ref, dtype=np.float64).ravel()
    ok = np.isfinite(f) & np.isfinite(r)
    denom = float(np.dot(r[ok], r[ok]))
    if denom == 0:
        return tr
    alpha = float(np.dot(f[ok], r[ok]) / denom)
    if not np.isfinite(alpha) or alpha == 0 or abs(alpha - 1) < 1e-3:
        return tr
    raw, scaled = _snr(denom, float(np.sum((f[ok] - r[ok]) ** 2))), \
        _snr(float(alpha * alpha * denom), float(np.sum((f[ok] - alpha * r[ok]) ** 2)))
    if raw is None or scaled is None or scaled < 35 or scaled - raw < 15:
        return tr
    return dc.replace(tr, scale=float(f"{alpha:.6g}"))


def _region(graph: Graph, layer: Layer, fed: set[int], boundary: bool = False) -> list[int]:
    """Tensors computed in the fed run between fed tensors and this layer's output (its own ops, plus any unmatched
    ops in between); with ``boundary``, the fed tensors it reads instead."""
    own = set(layer.chain)
    seen: set[int] = set()
    edge: set[int] = set()
    todo = [layer.source]
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        for j in graph.tensors[i].inputs:
            if (j in fed and j not in own) or graph.tensors[j].op == "input":
                edge.add(j)
                continue
            todo.append(j)
    return sorted(edge) if boundary else sorted(seen | own)


def _row(layer: Layer, m: Matching, side: TorchSide, graph: Graph, refs: list[np.ndarray],
         observed: list[dict[int, np.ndarray]], fedded: list[dict[int, np.ndarray]] | None, fed: set[int],
         art: dict[str, Any], thr: float, feed_note: str | None) -> dict[str, Any]:
    assert layer.transform is not None
    tr = layer.transform
    ref_file = [tr.to_file(r) for r in refs]
    pshape = list(refs[0].shape)
    axis = channel_axis(pshape)

    def metrics(values: list[dict[int, np.ndarray]]) -> dict[str, Any]:
        got = [tr.to_torch(values[n][layer.tensor], list(refs[n].shape)) for n in range(len(refs))]
        return _metrics(got, refs, axis)

    owner = side.leaves[layer.owner(side)]
    prim = side.leaves[layer.primary]
    t = graph.tensors[layer.tensor]
    region = _region(graph, layer, fed)
    group_paths = {side.leaves[o].path for o in layer.group}
    others: list[str] = []
    for i in region:
        for p in (m.modules.get(i) or [])[:1]:
            if p not in group_paths and not any(g.startswith(p + ".") or p == "" for g in group_paths) \
                    and p not in others:
                others.append(p)
    row: dict[str, Any] = {
        "module": owner.path, "class": owner.cls, "call": owner.call,
        "order": min(side.leaves[o].pos for o in layer.group),
        "torch_op": prim.op if (prim.node or prim.of is not None) and owner.order == prim.order else None,
        "leaf": prim.leaf, "compared_at": prim.path if prim.order != owner.order else None,
        "group": [{"module": side.leaves[o].path, "class": side.leaves[o].cls} for o in layer.group],
        "by": layer.by, "op": graph.tensors[layer.source].op,
        "ops": list(dict.fromkeys(graph.tensors[i].op for i in region)),
        "tensor": t.name, "layout": tr.describe() or None, "scale": tr.scale if tr.scale != 1.0 else None,
        "file_ops": list(dict.fromkeys(graph.tensors[i].op_name for i in region if graph.tensors[i].op_name)),
        "output": metrics(observed),
    }
    if fedded is not None:
        row["added"] = metrics(fedded)
        row["added_note"] = (f"also includes {len(others)} unmatched op scope(s) between its inputs and it: "
                             f"{', '.join(o or '(root)' for o in others[:4])}") if others else None
    else:
        row["added"] = None
        row["added_note"] = feed_note or "the format cannot be fed here"
    q = t.quant
    lo = float(min(np.min(r) for r in refs)) if refs else None
    hi = float(max(np.max(r) for r in refs)) if refs else None
    row["torch_range"] = [lo, hi] if lo is not None else None
    row["quant"] = _quant_view(q) if q else None
    row["clipped_share"] = _clipped(ref_file, q) if q else None
    kept = set((art.get("quantization") or {}).get("kept_float") or [])
    row["kept_float"] = bool(kept & {graph.tensors[i].op_name for i in region} | kept & {graph.tensors[i].name
                                                                                        for i in region}) \
        if art.get("quantization") else None
    row["diverges"] = score(row["added"] if row["added"] is not None else row["output"]) < thr
    return row


def _quant_view(q: dict[str, Any]) -> dict[str, Any]:
    scales = q["scale"]
    zps = q["zero_point"] or [0]
    if len(scales) == 1:
        s, z = scales[0], zps[0]
        return {"scale": s, "zero_point": z, "dtype": q["dtype"],
                "range": [(q["qmin"] - z) * s, (q["qmax"] - z) * s]}
    return {"scale": [min(scales), max(scales)], "zero_point": "per-channel", "dtype": q["dtype"],
            "axis": q.get("axis"), "range": None}


def _clipped(ref_file: list[np.ndarray], q: dict[str, Any]) -> float | None:
    """Share of PyTorch's values that fall outside the grid's representable range (by more than half a step)."""
    if len(q["scale"]) != 1:
        return None
    s, z = q["scale"][0], (q["zero_point"] or [0])[0]
    lo, hi = (q["qmin"] - z - 0.5) * s, (q["qmax"] - z + 0.5) * s
    total = sum(r.size for r in ref_file)
    out = sum(int(((r < lo) | (r > hi)).sum()) for r in ref_file)
    return round(out / total, 6) if total else None


def _unmatched_row(u: dict[str, Any], side: TorchSide) -> dict[str, Any]:
    leaf = side.leaves[u["order"]]
    return {"module": leaf.path, "class": leaf.cls, "call": leaf.call, "order": leaf.pos, "status": u["status"],
            "why": u["why"]}


def coverage(side: TorchSide, m: Matching) -> dict[str, Any]:
    leaves = [leaf for leaf in side.leaves if leaf.leaf]
    compared = {la.primary if side.leaves[la.primary].of is None else side.leaves[la.primary].of
                for la in m.layers if la.transform is not None}
    direct = sum(1 for leaf in leaves if leaf.order in compared)
    fused = sum(1 for o in m.fused_into if side.leaves[o].leaf)
    no_op = sum(1 for u in m.unmatched if u["status"] in ("no-op", "folded"))
    by: dict[str, int] = {}
    for la in m.layers:
        if side.leaves[la.primary].leaf and la.transform is not None:
            by[la.by] = by.get(la.by, 0) + 1
    m.unmatched = [u for u in m.unmatched if u["order"] not in compared]  # compared through another output
    reasons: dict[str, int] = {}
    for u in m.unmatched:
        reasons[u["status"]] = reasons.get(u["status"], 0) + 1
    comparable = len(leaves) - no_op
    return {"leaf_modules": len(leaves), "compared": direct, "fused": fused, "no_op": no_op,  # incl. folded
            "unmatched": comparable - direct - fused, "share": round((direct + fused) / comparable, 4)
            if comparable else None, "by": by, "reasons": reasons}


def first_divergent(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first row, in execution order, that diverges (by what it adds; by its output where not fed)."""
    for r in sorted(rows, key=lambda r: r["order"]):
        if r["diverges"]:
            return {k: r[k] for k in ("module", "class", "call", "torch_op", "group", "op", "output", "added", "order",
                                      "compared_at", "tensor", "depth")}
    return None


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst first: by added error where measured (else output error), then by execution order."""
    return sorted(rows, key=lambda r: (score(r["added"] if r["added"] is not None else r["output"]), r["order"]))


def describe_layer(r: dict[str, Any]) -> str:
    fused = [g for g in r["group"] if g["module"] != r["module"]]
    names = ", ".join(f"{g['module'] or '(root)'} {g['class']}" for g in fused)
    extra = f", fused with {names} in this file" if fused else ""
    op = f" · {r['torch_op']}" if r.get("torch_op") else ""
    return f"{r['module'] or '(root)'}{op} ({r['class']}{extra})"


def summary_line(report: dict[str, Any]) -> str:
    label = f"{report['format']} {report['precision']}"
    if report.get("error"):
        return f"{label}: {report['error']}"
    fd = report.get("first_divergent")
    thr = report["threshold_db"]
    if fd is None:
        return f"{label}: no layer crosses the threshold ({thr:g} dB SNR added per layer)"
    m = fd["added"] if fd["added"] is not None else fd["output"]
    what = "adds" if fd["added"] is not None else "output at"
    snr = "no signal" if m["snr_db"] is None else f"{m['snr_db']:.1f} dB SNR"
    ch = m.get("channel_snr_db")
    if m["snr_db"] is not None and ch is not None and ch < m["snr_db"]:
        snr = f"{ch:.1f} dB SNR in its median channel ({m['snr_db']:.1f} dB over the whole tensor)"
    line = (f"{label}: first divergent layer: {describe_layer(fd)} — {what} {snr} (threshold {thr:g} dB), "
            f"max abs error {m['max_abs_error']:.3g}")
    worst = ranked(report.get("layers") or [])[:1]
    if worst and (worst[0]["module"], worst[0].get("call")) != (fd["module"], fd.get("call")):
        w = worst[0]["added"] if worst[0]["added"] is not None else worst[0]["output"]
        line += f"; the worst is {describe_layer(worst[0])} at {score(w):.1f} dB"
    return line


def _feeding(fmt: str, done: bool, note: str | None) -> dict[str, Any]:
    how = {"onnx": "each fed tensor becomes a graph input of a copy; its readers read PyTorch's value",
           "tflite": "each fed tensor gets a twin subgraph input in a copy of the flatbuffer; int8 tensors are fed "
                     "PyTorch's value on their own grid",
           "coreml": "the reference interpreter replaces each fed op output with PyTorch's value"}.get(fmt, "")
    return {"available": done, "how": how, "why_not": None if done else note}


def outputs_only(art: dict[str, Any], path: Path, samples: Path, input_names: list[str],
                 ref_outputs: list[dict[str, np.ndarray]], output_names: list[str], *, threshold_db: float | None,
                 isolate: bool, why: str | None = None) -> dict[str, Any]:
    """Without the model (no ``--source``): the file's outputs against the bundle's stored reference outputs. Also
    for formats that expose no per-layer tensors (``why``: the format's reason, shown instead)."""
    thr = threshold_for(art["precision"], threshold_db)
    report: dict[str, Any] = {"format": art["format"], "precision": art["precision"], "path": art["path"],
                              "threshold_db": thr, "layers": [], "unmatched": [], "coverage": None,
                              "notes": [why or "per-layer comparison needs the model: pass --source (the model the "
                                        "bundle was exported from); a bundle never names code that mobilize runs"]}
    with tempfile.TemporaryDirectory(prefix="mobilize-diff-") as tmp:
        obs_path = Path(tmp) / "observed.npz"
        found = _job({"op": "diff", "format": art["format"], "path": str(path), "samples": str(samples),
                      "input_names": input_names, "values": str(obs_path)}, isolate)
        if "error" in found:
            report.update(error=f"could not run the file: {found['error']}", could_not_run=True,
                          summary=f"{art['format']} {art['precision']}: could not run the file: {found['error']}")
            return report
        graph = Graph.from_dict(found["graph"])
        used = list(found["used"])
        observed = _load(obs_path, len(used))
    outs = sorted((t for t in graph.tensors if t.output is not None), key=lambda t: t.output or 0)
    from mobilize.runtime.base import IOTensor
    from mobilize.verify.parity import io_map

    mapping = io_map(output_names, [IOTensor(t.io_name or t.name, tuple(t.shape or []), t.dtype) for t in outs])
    by_io = {t.io_name or t.name: t for t in outs}
    rows = []
    for name, fname in mapping.items():
        t = by_io[fname]
        refs = [ref_outputs[i][name] for i in used]
        got = [observed[n][t.index].reshape(refs[n].shape) for n in range(len(used))]
        rows.append({"output": name, "tensor": t.name, "metrics": _metrics(got, refs)})
    report["runtime"] = graph.runtime
    report["samples"] = len(used)
    report["outputs"] = rows
    worst = min((score(r["metrics"]) for r in rows), default=SNR_CAP)
    report["first_divergent"] = None
    tail = "this format exposes no per-layer tensors" if why else "per-layer comparison needs --source"
    report["summary"] = f"{art['format']} {art['precision']}: outputs only (worst SNR {worst:.1f} dB); {tail}"
    if why:
        report["outputs_only"] = why
    return report
