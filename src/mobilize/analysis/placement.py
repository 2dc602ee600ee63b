"""Will it run well on the phone? Where each exported file's ops would run, read from the runtimes' own analysis
tools — statically, on this machine: no phone, GPU or NPU is involved, so every figure is an estimate of placement,
never a device measurement (docs/inspect.md says what each number means and what it cannot tell).

One reader per format, registered as the format plug-in's ``placement`` (``module:function``, ``(path, options) ->
record``):

- TFLite (:mod:`mobilize.analysis.tflite_placement`): GPU-delegate compatibility from ai-edge-litert's model analyzer,
  the XNNPACK delegate's placement as LiteRT applies it here, NPU ahead-of-time compilation per installed vendor
  plugin;
- ONNX (:mod:`mobilize.analysis.onnx_placement`): NNAPI and CoreML execution-provider partitions from onnxruntime's
  mobile usability checker, the ORT mobile packages and the operators a reduced build needs;
- ORT format (:mod:`mobilize.analysis.onnx_placement`): the reduced-build operator config written beside the file;
- Core ML (:mod:`mobilize.analysis.coreml_placement`): the deployment target the ops need against ``--coreml-target``
  and a static estimate of what keeps the model off the Neural Engine.

Every record has ``paths``: one entry per accelerator path (``gpu``, ``xnnpack``, ``npu``, ``nnapi``, ``coreml-ep``,
``coreml-ep-neuralnetwork``, ``ane``), each with a ``status`` (``analyzed``: the tool gave an answer; ``unverified``:
it could not, with the ``reason``; ``not installed``) and, where the tool knows them, ``partitions`` and
``mac_share``, which ``mobilize check`` budgets read. Unsupported ops carry the PyTorch ``module`` they came from:
ONNX node metadata ``pkg.torch.onnx.name_scopes``, TFLite tensor names, Core ML op names (resolved against the
captured program by :func:`coreml_modules`).

Runs in the worker process like every file reader (:mod:`mobilize._worker`, job key ``"place"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: accelerator paths ``mobilize check`` judges by default, per format (``[budget] accelerators`` replaces them)
DEFAULT_ACCELERATORS: dict[str, tuple[str, ...]] = {"tflite": ("gpu",), "onnx": ("coreml-ep", "nnapi"),
                                                    "coreml": ("ane",), "ort": (), "pte": ("xnnpack",)}
ALL_ACCELERATORS = ("gpu", "xnnpack", "npu", "nnapi", "coreml-ep", "coreml-ep-neuralnetwork", "ane")


def place(fmt: str, path: Any, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The placement record of one file (run this in the worker for untrusted files)."""
    from mobilize import formats

    plugin = formats.get(fmt)
    return plugin.load("placement")(Path(path), dict(options or {}))


def share(part: float | None, total: float | None) -> float | None:
    if part is None or not total:
        return None
    return round(float(part) / float(total), 4)


def module_of_tflite_tensor(name: str) -> str | None:
    """The PyTorch module path in a litert-torch tensor name, e.g. ``__main__.M/__main__.Head_head/torch.nn.modules.
    linear.Linear_proj;1`` → ``head.proj (Linear)``; None for names without one (``arith.constant``)."""
    best = None
    for part in name.split(";"):
        segs = [s for s in part.split("/") if s]
        if len(segs) < 2:
            continue
        attrs, cls = [], ""
        for seg in segs[1:]:
            qual, _, attr = _split_segment(seg)
            if not attr:
                break
            attrs.append(attr)
            cls = qual.rsplit(".", 1)[-1]
        if attrs and (best is None or len(attrs) > best[0]):
            best = (len(attrs), f"{'.'.join(attrs)} ({cls})" if cls else ".".join(attrs))
    return best[1] if best else None


def _split_segment(seg: str) -> tuple[str, str, str]:
    """``torch.nn.modules.conv.Conv2d_conv`` → (``torch.nn.modules.conv.Conv2d``, ``_``, ``conv``): the class is the
    dotted name up to the first underscore after its last dot."""
    dot = seg.rfind(".")
    under = seg.find("_", dot + 1)
    if under <= 0:
        return seg, "", ""
    return seg[:under], "_", seg[under + 1:]


def module_of_name_scopes(value: str) -> str | None:
    """torch.onnx's ``pkg.torch.onnx.name_scopes`` (``['', 'features', 'features.0', 'conv2d']``) → the innermost
    module path (``features.0``); None for the root."""
    parts = re.findall(r"'([^']*)'", value)
    mods = [p for p in parts[:-1] if p]
    return mods[-1] if mods else ("(root)" if parts else None)


#: suffixes coremltools appends to the FX node name it names an op after
_COREML_SUFFIX = re.compile(r"_(?:cast_fp16|cast_fp32|to_fp16|to_fp32|quantized|palettized|sparsified|fp16|fp32|\d+)$")


def coreml_modules(program: Any, names: Iterable[str]) -> dict[str, str]:
    """Core ML op (output) names → the PyTorch module that produced them, from the captured program.

    coremltools names each op after the FX node it converts (``convolution_3``, ``linear_1_cast_fp16``) and each
    weight after its placeholder (``p_conv_weight_to_fp16``). The decomposed program (what the Core ML exporter
    converts) gives node name → ``nn_module_stack``; a parameter placeholder → its owning module.
    """
    wanted = [n for n in names if n]
    if not wanted:
        return {}
    try:
        graph_program = program.run_decompositions()
    except Exception:  # noqa: BLE001 - provenance is a hint; without it the op names stand alone
        graph_program = program
    by_node: dict[str, str] = {}
    for node in graph_program.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, cls = list(stack.values())[-1]
            cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
            by_node[node.name] = f"{path or '(root)'} ({cls_name.rsplit('.', 1)[-1]})"
    sig = getattr(graph_program, "graph_signature", None)
    params = dict(getattr(sig, "inputs_to_parameters", {}) or {}) if sig is not None else {}
    if sig is not None:
        params.update(getattr(sig, "inputs_to_buffers", {}) or {})
    for placeholder, target in params.items():
        owner = target.rsplit(".", 1)[0] if "." in target else "(root)"
        by_node.setdefault(placeholder, f"{owner} (parameter {target})")
    out: dict[str, str] = {}
    for name in wanted:
        candidate = name
        while candidate:
            if candidate in by_node:
                out[name] = by_node[candidate]
                break
            shorter = _COREML_SUFFIX.sub("", candidate)
            if shorter == candidate:
                break
            candidate = shorter
    return out


def _op_name_lists(record: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The entries of a Core ML placement record that name ops (``op_names``), where modules get attached."""
    if not record or record.get("format") != "coreml":
        return []
    dep = record.get("deployment") or {}
    entries = list(dep.get("ops_newer_than_ios15") or []) + list(dep.get("ops_newer_than_requested") or [])
    for p in (record.get("paths") or {}).values():
        entries += [b for b in p.get("blockers") or [] if b.get("op_names")]
    return entries


def coreml_op_names(record: Mapping[str, Any] | None) -> set[str]:
    return {n for e in _op_name_lists(record) for n in e.get("op_names") or []}


def attach_modules(record: Mapping[str, Any] | None, modules: Mapping[str, str]) -> None:
    """Add ``modules`` (the PyTorch modules, de-duplicated) beside every ``op_names`` list of a Core ML record, and
    keep the map itself as ``op_modules`` (``mobilize inspect`` reuses it without the captured program)."""
    used: dict[str, str] = {}
    for e in _op_name_lists(record):
        found = [modules[n] for n in e.get("op_names") or [] if n in modules]
        used.update({n: modules[n] for n in e.get("op_names") or [] if n in modules})
        if found:
            e["modules"] = list(dict.fromkeys(found))
    if used and isinstance(record, dict):
        record["op_modules"] = dict(sorted(used.items()))


def findings(record: Mapping[str, Any] | None) -> list[str]:
    """Lines an app build must act on: a Core ML file that needs a newer OS than the target it was exported for."""
    from mobilize.analysis.bundle import target_message

    dep = (record or {}).get("deployment") or {}
    return [target_message(dep)] if dep.get("exceeds_requested") else []


def summary_line(record: Mapping[str, Any] | None) -> str:
    """One line per file for tables: ``gpu: 2 partitions, 93% MACs; xnnpack: 1 partition`` (bench and inspect)."""
    if not record:
        return ""
    if record.get("error"):
        return f"not inspected: {record['error']}"
    parts = []
    for name, p in (record.get("paths") or {}).items():
        if name == "npu":
            ok = [f"{v} ({r['partitions']} partition{'s' if r['partitions'] != 1 else ''}"
                  + ("" if r.get("compiled_for") else ", not compiled here") + ")"
                  for v, r in (p.get("vendors") or {}).items()
                  if r.get("status") == "analyzed" and r.get("partitions") is not None]
            parts.append(f"npu: {', '.join(ok) if ok else p.get('status')}")
            continue
        status = p.get("status")
        if status != "analyzed":
            parts.append(f"{name}: {status}")
            continue
        bits = []
        if p.get("partitions") is not None:
            bits.append(f"{p['partitions']} partition{'s' if p['partitions'] != 1 else ''}")
        if p.get("mac_share") is not None:
            bits.append(f"{p['mac_share']:.0%} MACs")
        elif p.get("node_share") is not None:
            bits.append(f"{p['node_share']:.0%} nodes")
        if p.get("blockers"):
            bits.append(f"{len(p['blockers'])} blocker(s)")
        parts.append(f"{name}: {', '.join(bits) or 'analyzed'}")
    rb = record.get("reduced_build")
    if rb:
        parts.append(f"reduced build: {rb['count']} operators ({rb['config']})" if rb.get("config")
                     else f"reduced build: {rb.get('reason')}")
    mobile = (record.get("mobile_runtime") or {}).get("full_package")
    if mobile is not None:
        parts.append("ORT mobile packages: " + ("run it" if mobile.get("runs") else f"no ({mobile.get('reason')})"))
    rb = record.get("reduced_build")
    if rb:
        parts.append(f"reduced build: {rb['count']} operators ({rb['config']})" if rb.get("config")
                     else f"reduced build: {rb.get('reason')}")
    mobile = (record.get("mobile_runtime") or {}).get("full_package")
    if mobile is not None:
        parts.append("ORT mobile packages: " + ("run it" if mobile.get("runs") else f"no ({mobile.get('reason')})"))
    dep = record.get("deployment")
    if dep and dep.get("needed"):
        over = " > " + dep["requested"] if dep.get("exceeds_requested") else ""
        parts.insert(0, f"needs {dep['needed']}{over}")
    return "; ".join(parts)


def accelerator_figures(record: Mapping[str, Any] | None, accelerators: Iterable[str]) -> list[dict[str, Any]]:
    """``[{"path", "status", "partitions", "mac_share", "reason"}]`` for the chosen accelerator paths present in a
    record (what ``mobilize check`` judges)."""
    out = []
    for name in accelerators:
        p = ((record or {}).get("paths") or {}).get(name)
        if p is None:
            continue
        out.append({"path": name, "status": p.get("status"), "partitions": p.get("partitions"),
                    "mac_share": p.get("mac_share"), "reason": p.get("reason"), "estimate": p.get("estimate")})
    return out
