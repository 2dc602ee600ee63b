"""Placement budgets of ``mobilize check``: ``[budget]`` keys judged on each artifact's placement record
(:mod:`mobilize.analysis.placement`), one JUnit case per key and artifact.

    max_delegate_partitions = 1        at most this many partitions on each judged accelerator path
    min_accelerated_mac_share = 0.9    at least this share of MACs inside the delegated partition(s)
    coreml_min_target = "iOS16"        the app's oldest OS: a Core ML file must not need a newer one
    accelerators = ["gpu", "coreml-ep"]  which paths the first two judge (default: gpu for TFLite, coreml-ep and
                                        nnapi for ONNX, ane for Core ML, xnnpack for
                                        ExecuTorch; others: npu, coreml-ep-neuralnetwork)

A path whose tool could not answer (``unverified``: e.g. the TFLite GPU analyzer in this ai-edge-litert build) is a
``skip`` with that reason, never a pass; a format without a judged path is a ``skip`` too, so check names stay
stable from run to run.
"""

from __future__ import annotations

from typing import Any

KEYS = ("max_delegate_partitions", "min_accelerated_mac_share", "coreml_min_target", "accelerators")


def parse(r: Any, t: dict[str, Any], section: str) -> dict[str, Any]:
    """The placement keys of one ``[budget]`` table, validated with ``r`` (mobilize.check.config._Reader)."""
    from mobilize.analysis.placement import ALL_ACCELERATORS
    from mobilize.export import COREML_TARGETS

    out: dict[str, Any] = {}
    if "max_delegate_partitions" in t:
        v = r.number(t, "max_delegate_partitions", None, section, example="max_delegate_partitions = 1",
                     integer=True)
        if v is not None:
            out["max_delegate_partitions"] = int(v)
    if "min_accelerated_mac_share" in t:
        v = r.number(t, "min_accelerated_mac_share", None, section, example="min_accelerated_mac_share = 0.9", hi=1)
        if v is not None:
            out["min_accelerated_mac_share"] = float(v)
    if "coreml_min_target" in t:
        v = t["coreml_min_target"]
        if v not in COREML_TARGETS:
            r.problem(f"{section}coreml_min_target", f"{v!r} is not a Core ML target; choose from "
                                                     f"{', '.join(COREML_TARGETS)}")
        else:
            out["coreml_min_target"] = v
    if "accelerators" in t:
        v = r.names(t, "accelerators", ALL_ACCELERATORS, (), 'accelerators = ["gpu", "coreml-ep"]')
        if v:
            out["accelerators"] = list(v)
    return out


def checks(limits: dict[str, Any], art: dict[str, Any], skip: str | None) -> list[Any]:
    """One :class:`~mobilize.check.judge.Check` per placement key in ``limits``."""
    from mobilize.check.judge import FAIL, PASS, SKIP, Check

    keys = [k for k in KEYS if k in limits and k != "accelerators"]
    if not keys:
        return []
    if skip:
        return [Check(f"budget.{k}", SKIP, skip) for k in keys]
    record = art.get("placement")
    if not record or record.get("error"):
        why = (record or {}).get("error") or "no placement record (a bundle from before mobilize inspect?)"
        return [Check(f"budget.{k}", SKIP, f"not inspected: {why}") for k in keys]
    out = []
    for key in keys:
        if key == "coreml_min_target":
            out.append(_target(limits[key], art, record, PASS, FAIL, SKIP, Check))
        else:
            out.append(_paths(key, limits[key], limits.get("accelerators"), art, record, PASS, FAIL, SKIP, Check))
    return out


def _target(limit: str, art: dict[str, Any], record: dict[str, Any], PASS: str, FAIL: str, SKIP: str,
            Check: Any) -> Any:
    from mobilize.analysis.coreml_placement import TARGET_SPEC

    name = "budget.coreml_min_target"
    dep = record.get("deployment")
    if art["format"] != "coreml" or not dep:
        return Check(name, SKIP, "not a Core ML file")
    needed = dep["needed_spec"]
    if needed > TARGET_SPEC[limit]:
        over = [f"{r['op']} ({r['available_from']})" + (f" in {', '.join(r['modules'][:2])}" if r.get("modules")
                                                         else "")
                for r in dep.get("ops_newer_than_ios15") or [] if TARGET_SPEC.get(r["available_from"], 6) >
                TARGET_SPEC[limit]]
        why = "; ".join(over) or dep.get("reason") or f"the file declares {dep['declared']}"
        return Check(name, FAIL, f"needs {dep['needed']} > budget {limit}: {why}")
    return Check(name, PASS, f"needs {dep['needed']} ≤ budget {limit}")


def _paths(key: str, limit: float, chosen: list[str] | None, art: dict[str, Any], record: dict[str, Any],
           PASS: str, FAIL: str, SKIP: str, Check: Any) -> Any:
    from mobilize.analysis.placement import DEFAULT_ACCELERATORS, accelerator_figures

    name = f"budget.{key}"
    wanted = chosen if chosen is not None else list(DEFAULT_ACCELERATORS.get(art["format"], ()))
    figures = accelerator_figures(record, wanted)
    if not figures:
        return Check(name, SKIP, f"no judged accelerator path for {art['format']} files ({', '.join(wanted) or 'none'})"
                                 + (": see the .onnx file of the same precision" if art["format"] == "ort" else ""))
    field = "partitions" if key == "max_delegate_partitions" else "mac_share"
    bad, good, unknown = [], [], []
    for f in figures:
        value = f.get(field)
        if f["status"] != "analyzed" or value is None:
            why = f.get("reason") or ("the partitions are decided on the device" if field == "partitions"
                                      else "no MACs to share")
            unknown.append(f"{f['path']}: {f['status'] if f['status'] != 'analyzed' else 'unknown'} ({why[:160]})")
            continue
        suffix = " (static estimate)" if "static" in str(f.get("estimate") or "") else ""
        if field == "partitions":
            over = value > limit
            text = f"{f['path']} {value} partition{'s' if value != 1 else ''} {'>' if over else '≤'} {limit:g}"
        else:
            over = value < limit
            text = f"{f['path']} {value:.1%} of MACs {'<' if over else '≥'} {limit:.0%}"
        (bad if over else good).append(text + suffix)
    if bad:
        return Check(name, FAIL, "; ".join(bad + good))
    if good:
        return Check(name, PASS, "; ".join(good + unknown))
    return Check(name, SKIP, "; ".join(unknown))
