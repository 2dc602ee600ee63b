"""TFLite placement: GPU delegate, XNNPACK delegate, NPU ahead-of-time compilation.

- ``gpu``: ai-edge-litert's model analyzer (``_pywrap_analyzer_wrapper.ModelAnalyzer(model, False, True)``, the tool
  behind ``tf.lite.experimental.Analyzer``) prints every op and, for each one the GPU delegate would refuse, a
  ``GPU COMPATIBILITY WARNING`` line. Its output is parsed, not re-derived. Before trusting a clean report, the
  analyzer is shown a canary — a one-op model whose op is a custom op the GPU delegate cannot have — and if it calls
  that compatible too, its GPU check is not active in this build (ai-edge-litert 2.3's analyzer prints the verdict
  without running the per-op check) and the path is ``unverified`` with that reason, never "all on GPU".
  With per-op verdicts, partitions follow TFLite's own rule (``PartitionGraphIntoIndependentNodeSubsets``, greedy):
  maximal runs of same-kind nodes in dependency order; the GPU delegate takes the largest one by default
  (``TfLiteGpuDelegateOptionsV2Default: max_delegated_partitions = 1``).
- ``xnnpack``: LiteRT's interpreter here applies its default XNNPACK delegate; the ``DELEGATE`` nodes it leaves in
  the graph are the partitions, and the ops outside them run on LiteRT's builtin kernels. Measured on this machine's
  LiteRT (an x86 build); the ARM build on a phone has the same op coverage but can differ in details.
- ``npu``: ``ai_edge_litert.aot`` compiles the file for each vendor whose compiler plugin *and* SDK are installed
  (``pip install ai-edge-litert-sdk-<vendor>``); others are ``not installed`` — never assumed to work.

MACs per op (CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, CONV_3D, FULLY_CONNECTED, BATCH_MATMUL) come from the
tensor shapes in the file; ``mac_share`` is the share of those MACs inside the delegated partition(s).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.analysis.placement import module_of_tflite_tensor, share

ANALYZER = "ai_edge_litert._pywrap_analyzer_wrapper.ModelAnalyzer(model, False, gpu_compatibility=True)"
#: TfLiteGpuDelegateOptionsV2Default() delegates only the largest partition
GPU_MAX_DELEGATED_PARTITIONS = 1
#: vendor id in ai_edge_litert.aot → the pip package that brings its SDK
NPU_VENDORS = {"qualcomm": "ai-edge-litert-sdk-qualcomm", "mediatek": "ai-edge-litert-sdk-mediatek",
               "google_tensor": "ai-edge-litert-sdk-google-tensor", "samsung": "ai-edge-litert-sdk-samsung",
               "intel_openvino": "ai-edge-litert-sdk-intel"}

_OP_LINE = re.compile(r"^\s+Op#(\d+) ([^(\s]+)\(")
_SUBGRAPH_LINE = re.compile(r"^Subgraph#(\d+)")
_WARNING = "GPU COMPATIBILITY WARNING: "
_VERSION = re.compile(r"TFLite runtime version (\S+?)\.?\s*$", re.M)


def place(path: Path, options: dict[str, Any]) -> dict[str, Any]:
    data = Path(path).read_bytes()
    graph = read_graph(data)
    paths: dict[str, Any] = {"gpu": gpu(data, graph), "xnnpack": xnnpack(data, graph)}
    paths["npu"] = npu(Path(path), run=bool(options.get("npu", True)))
    return {"format": "tflite", "ops": len(graph["ops"]), "macs": int(sum(o["macs"] for o in graph["ops"])),
            "paths": paths}


# --- the file's primary subgraph -------------------------------------------------------------------------------------


def read_graph(data: bytes) -> dict[str, Any]:
    """Subgraph 0's ops (name, inputs, outputs, MACs, module) and its output tensors, from the flatbuffer."""
    from mobilize.runtime import tflite_flatbuffer as fb

    S = fb.schema()
    model = S.Model.GetRootAs(data, 0)
    names = fb.builtin_names()
    g = model.Subgraphs(0)
    shapes = {}
    tnames = {}
    for t in range(g.TensorsLength()):
        tensor = g.Tensors(t)
        shapes[t] = [int(x) for x in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        tnames[t] = tensor.Name().decode(errors="replace")
    ops = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        name = fb.op_name(model, op, names)
        ins = [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else []
        module = next((m for m in (module_of_tflite_tensor(tnames.get(t, "")) for t in outs) if m), None)
        ops.append({"index": i, "op": name, "inputs": ins, "outputs": outs,
                    "macs": _macs(name, ins, outs, shapes, op), "module": module})
    outputs = [int(v) for v in g.OutputsAsNumpy()] if g.OutputsLength() else []
    return {"ops": ops, "outputs": outputs, "subgraphs": model.SubgraphsLength()}


def _macs(name: str, ins: list[int], outs: list[int], shapes: dict[int, list[int]], op: Any) -> int:
    def shape(i: int) -> list[int]:
        return [max(d, 1) for d in shapes.get(i, [])] if i >= 0 else []

    if not outs or not ins:
        return 0
    out = int(np.prod(shape(outs[0]))) if shape(outs[0]) else 0
    w = shape(ins[1]) if len(ins) > 1 else []
    if name in ("CONV_2D", "CONV_3D") and len(w) >= 4:  # OHWI / DHWIO: all but the output-channel dim
        per = int(np.prod(w[1:])) if name == "CONV_2D" else int(np.prod(w[:-1]))
        return out * per
    if name == "DEPTHWISE_CONV_2D" and len(w) == 4:  # 1HWO
        return out * w[1] * w[2]
    if name == "TRANSPOSE_CONV" and len(ins) > 2:  # inputs: output_shape, weights OHWI, input
        wt, x = shape(ins[1]), shape(ins[2])
        return int(np.prod(x)) * int(np.prod(wt[:3])) if len(wt) == 4 and x else 0
    if name == "FULLY_CONNECTED" and len(w) == 2:
        return out * w[1]
    if name == "BATCH_MATMUL":
        a = shape(ins[0])
        if len(a) >= 2:
            adj_x = False
            opts = op.BuiltinOptions()
            if opts is not None:
                from mobilize.runtime import tflite_flatbuffer as fb

                bm = fb.schema().BatchMatMulOptions()
                bm.Init(opts.Bytes, opts.Pos)
                adj_x = bool(bm.AdjX())
            return out * (a[-2] if adj_x else a[-1])
    return 0


def partitions(ops: list[dict[str, Any]], supported: set[int]) -> list[tuple[bool, list[int]]]:
    """TFLite's greedy partitioning (``PartitionGraphIntoIndependentNodeSubsets``): each round takes, in node
    order and until nothing changes, every not-yet-placed node whose inputs are ready and whose kind (supported or
    not) matches the round's first node. Returns (supported?, node indices) per round."""
    produced = {t for o in ops for t in o["outputs"]}
    ready: set[int] = set()
    placed: set[int] = set()
    rounds: list[tuple[bool, list[int]]] = []
    while len(placed) < len(ops):
        kind: bool | None = None
        nodes: list[int] = []
        changed = True
        while changed:
            changed = False
            for o in ops:
                i = o["index"]
                if i in placed or any(t >= 0 and t in produced and t not in ready for t in o["inputs"]):
                    continue
                k = i in supported
                if kind is None:
                    kind = k
                if k != kind:
                    continue
                placed.add(i)
                nodes.append(i)
                ready.update(o["outputs"])
                changed = True
        if not nodes:  # a cycle or a dangling input: what is left cannot be scheduled
            break
        rounds.append((bool(kind), nodes))
    return rounds


def _path_figures(graph: dict[str, Any], supported: set[int], max_delegated: int | None) -> dict[str, Any]:
    ops = graph["ops"]
    parts = [nodes for kind, nodes in partitions(ops, supported) if kind]
    ranked = sorted(parts, key=len, reverse=True)
    delegated = ranked if max_delegated is None else ranked[:max_delegated]
    macs = {o["index"]: o["macs"] for o in ops}
    total = sum(macs.values())
    on = sum(macs[i] for p in delegated for i in p)
    unsupported = [o for o in ops if o["index"] not in supported]
    return {
        "ops": len(ops), "supported_ops": len(supported), "partitions": len(parts),
        "partition_sizes": [len(p) for p in parts], "delegated_partitions": len(delegated),
        "delegated_ops": sum(len(p) for p in delegated),
        "macs": {"total": int(total), "supported": int(sum(macs[i] for i in supported)), "delegated": int(on)},
        "mac_share": share(on, total), "node_share": share(sum(len(p) for p in delegated), len(ops)),
        "unsupported_ops": dict(Counter(o["op"] for o in unsupported).most_common()),
        "unsupported": [{"index": o["index"], "op": o["op"], "module": o["module"]} for o in unsupported][:200],
    }


# --- GPU: the model analyzer -----------------------------------------------------------------------------------------


def analyze_text(data: bytes) -> str:
    from ai_edge_litert import _pywrap_analyzer_wrapper as aw

    return aw.ModelAnalyzer(data, False, True)


def parse_analyzer(text: str) -> dict[str, Any]:
    """The analyzer's report as data: per subgraph, per op ``(index, op, warnings)``; the runtime version; whether
    it declared the model compatible."""
    subgraphs: dict[int, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for line in text.splitlines():
        m = _SUBGRAPH_LINE.match(line)
        if m:
            current = subgraphs.setdefault(int(m.group(1)), [])
            continue
        m = _OP_LINE.match(line)
        if m and current is not None:
            current.append({"index": int(m.group(1)), "op": m.group(2), "warnings": []})
            continue
        if line.startswith(_WARNING) and current:
            message = line[len(_WARNING):].strip()
            if "has GPU delegate compatibility issues at nodes" not in message:
                current[-1]["warnings"].append(message)
    version = _VERSION.search(text)
    return {"subgraphs": subgraphs, "runtime_version": version.group(1) if version else None,
            "declared_compatible": "looks compatible with GPU delegate" in text or
                                   "looks compatibile with GPU delegate" in text}


@functools.lru_cache(maxsize=1)
def analyzer_checks_gpu() -> tuple[bool, str]:
    """Whether this build's analyzer runs its per-op GPU check: it must flag a custom op no GPU delegate has."""
    try:
        report = parse_analyzer(analyze_text(canary_model()))
    except Exception as exc:  # noqa: BLE001 - an analyzer that cannot read the canary cannot be trusted either
        return False, f"the analyzer failed on a one-op probe model ({type(exc).__name__}: {exc})"
    ops = report["subgraphs"].get(0) or []
    if ops and ops[0]["warnings"]:
        return True, ""
    version = report["runtime_version"] or "?"
    return False, (f"ai-edge-litert's model analyzer (TFLite runtime {version}) runs no per-op GPU check: it called "
                   "a probe model whose only op is a custom op no GPU delegate implements compatible, so its "
                   "'compatible' verdict says nothing. Check on a device (GPU delegate with "
                   "max_delegated_partitions) or with an analyzer build that checks")


def canary_model() -> bytes:
    """A valid one-op TFLite flatbuffer: a custom op ``MobilizeGpuCanary`` from input to output."""
    import flatbuffers

    from mobilize.runtime import tflite_flatbuffer as fb

    S = fb.schema()
    tensors = []
    for name in ("x", "y"):
        t = S.TensorT()
        t.shape = [1, 4]
        t.type = S.TensorType.FLOAT32
        t.buffer = 0
        t.name = name
        tensors.append(t)
    code = S.OperatorCodeT()
    code.builtinCode = S.BuiltinOperator.CUSTOM
    code.deprecatedBuiltinCode = S.BuiltinOperator.CUSTOM
    code.customCode = "MobilizeGpuCanary"
    code.version = 1
    op = S.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [0]
    op.outputs = [1]
    sub = S.SubGraphT()
    sub.tensors = tensors
    sub.inputs = [0]
    sub.outputs = [1]
    sub.operators = [op]
    sub.name = "main"
    model = S.ModelT()
    model.version = 3
    model.operatorCodes = [code]
    model.subgraphs = [sub]
    model.buffers = [S.BufferT()]
    model.description = "mobilize GPU-analyzer probe"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def gpu(data: bytes, graph: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"tool": ANALYZER, "estimate": "static (the analyzer's rules; no GPU involved)"}
    try:
        report = parse_analyzer(analyze_text(data))
    except Exception as exc:  # noqa: BLE001 - the analyzer is a native extension: report, do not crash the record
        return {**base, "status": "unverified", "reason": f"the analyzer failed: {type(exc).__name__}: {exc}"}
    base["runtime_version"] = report["runtime_version"]
    verdicts = report["subgraphs"].get(0) or []
    if len(verdicts) != len(graph["ops"]):
        return {**base, "status": "unverified",
                "reason": f"the analyzer listed {len(verdicts)} ops in subgraph 0, the file has {len(graph['ops'])}"}
    flagged = {v["index"]: v["warnings"] for v in verdicts if v["warnings"]}
    checks, why = analyzer_checks_gpu()
    if not checks:
        return {**base, "status": "unverified", "reason": why,
                "analyzer_verdict": "compatible" if report["declared_compatible"] and not flagged else "issues",
                "ops": len(graph["ops"])}
    supported = {o["index"] for o in graph["ops"] if o["index"] not in flagged}
    figures = _path_figures(graph, supported, GPU_MAX_DELEGATED_PARTITIONS)
    reasons = {i: "; ".join(w) for i, w in flagged.items()}
    for u in figures["unsupported"]:
        u["reason"] = reasons.get(u["index"], "")
    other = {s: sum(1 for v in ops if v["warnings"]) for s, ops in report["subgraphs"].items() if s}
    if any(other.values()):
        figures["other_subgraphs_flagged"] = other
    return {**base, "status": "analyzed", **figures, "max_delegated_partitions": GPU_MAX_DELEGATED_PARTITIONS}


# --- XNNPACK: as LiteRT applies it here ---------------------------------------------------------------------------


def xnnpack(data: bytes, graph: dict[str, Any]) -> dict[str, Any]:
    """Which ops LiteRT's default XNNPACK delegate takes (its ``DELEGATE`` nodes), measured with this machine's
    LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    base = {"tool": "ai_edge_litert Interpreter (default XNNPACK delegate), this machine",
            "estimate": "measured on this machine's LiteRT build (x86); the phone's ARM build may differ in details"}
    try:
        it = Interpreter(model_content=data, num_threads=1)
        it.allocate_tensors()
        w = it._interpreter  # noqa: SLF001 - node listing; the public API only returns it through _get_ops_details
        nodes = [(w.NodeName(i), list(w.NodeInputs(i)), list(w.NodeOutputs(i))) for i in range(w.NumNodes())]
    except Exception as exc:  # noqa: BLE001 - a file LiteRT cannot load: say so
        return {**base, "status": "unverified", "reason": f"LiteRT could not load the file: {exc}"[:300]}
    ops = graph["ops"]
    producer = {t: o["index"] for o in ops for t in o["outputs"]}
    delegated: list[list[int]] = []
    for name, ins, outs in nodes[len(ops):]:
        if name != "DELEGATE":
            continue
        inside: set[int] = set()
        stack = [producer[t] for t in outs if t in producer]
        boundary = set(ins)
        while stack:
            i = stack.pop()
            if i in inside:
                continue
            inside.add(i)
            stack.extend(producer[t] for t in ops[i]["inputs"] if t in producer and t not in boundary)
        delegated.append(sorted(inside))
    supported = {i for p in delegated for i in p}
    figures = _path_figures(graph, supported, None)
    figures["partitions"] = len(delegated)  # what the runtime did (the rule above reproduces it; tests check)
    figures["partition_sizes"] = [len(p) for p in delegated]
    return {**base, "status": "analyzed", **figures}


# --- NPU: ahead-of-time compilation per vendor plugin ---------------------------------------------------------


def npu_vendors() -> dict[str, dict[str, Any]]:
    """Per vendor: whether its compiler plugin and SDK are installed here, and how to install them otherwise."""
    import importlib.util

    import ai_edge_litert

    root = Path(ai_edge_litert.__file__).parent
    out = {}
    for vendor, pip_name in NPU_VENDORS.items():
        plugins = sorted((root / "vendors" / vendor / "compiler").glob("libLiteRtCompilerPlugin_*.so"))
        sdk = pip_name.replace("-", "_")
        have_sdk = importlib.util.find_spec(sdk) is not None
        if vendor == "intel_openvino":
            have_sdk = have_sdk and importlib.util.find_spec("openvino") is not None
        if plugins and have_sdk:
            out[vendor] = {"status": "installed", "plugin": plugins[0].name}
        else:
            missing = [] if plugins else ["compiler plugin"]
            missing += [] if have_sdk else [f"SDK (pip install {pip_name})"]
            out[vendor] = {"status": "not installed", "missing": missing}
    return out


def npu(path: Path, run: bool = True) -> dict[str, Any]:
    vendors = npu_vendors()
    for vendor, rec in vendors.items():
        if rec["status"] != "installed":
            rec["status"] = "not installed"
            rec["reason"] = f"plugin not installed: {', '.join(rec.pop('missing'))}"
            continue
        if not run:
            rec["status"] = "unverified"
            rec["reason"] = "compilation not requested"
            continue
        rec.update(_aot_compile(path, vendor))
    installed = [v for v, r in vendors.items() if r["status"] == "analyzed"]
    status = "analyzed" if installed else ("unverified" if any(r["status"] == "unverified" for r in vendors.values())
                                           else "not installed")
    parts = [vendors[v].get("partitions") for v in installed if vendors[v].get("partitions") is not None]
    return {"tool": "ai_edge_litert.aot.aot_compile", "status": status, "vendors": vendors,
            "partitions": max(parts) if parts else None,
            **({} if installed else {"reason": "no NPU vendor plugin with its SDK is installed here"
                                     if status == "not installed" else "no installed vendor plugin gave an answer"})}


def _aot_compile(path: Path, vendor: str) -> dict[str, Any]:
    """Compile for every SoC the vendor's backend lists; per SoC: compiled or the error, and the share of ops the
    NPU took where the compiled model says (NPU-dispatch ops vs the rest)."""
    import tempfile

    try:
        from ai_edge_litert.aot import aot_compile as aot
        from ai_edge_litert.aot.vendors import import_vendor

        backend = import_vendor.import_vendor(vendor)
        with tempfile.TemporaryDirectory(prefix="mobilize-aot-") as tmp:
            result = aot.aot_compile(str(path), output_dir=tmp, target=backend.create({"backend_id": vendor}).target,
                                     keep_going=True)
            socs: dict[str, Any] = {}
            for backend_obj, model in getattr(result, "models_with_backend", []):
                socs[str(backend_obj.target_id)] = _compiled_summary(model)
            for backend_obj, error in getattr(result, "failed_backends", []):
                socs[str(backend_obj.target_id)] = _failure(str(error))
    except Exception as exc:  # noqa: BLE001 - a vendor toolchain failure is that vendor's result
        why = f"ahead-of-time compilation failed: {type(exc).__name__}: {exc}"
        return {"status": "unverified", "reason": why[:400]}
    compiled = [s for s, r in socs.items() if r.get("compiled")]
    parts = [r["partitions"] for r in socs.values() if r.get("partitions") is not None]
    out = {"status": "analyzed" if parts or compiled else "unverified", "socs": socs, "compiled_for": compiled,
           "partitions": max(parts) if parts else None}
    if not compiled:  # the plugin's partitioning stands; the device binary could not be built here
        out["reason"] = "compilation failed for every SoC here: " + next(
            (r["error"] for r in socs.values() if r.get("error")), "no SoC listed")[:300]
    return out


def _failure(error: str) -> dict[str, Any]:
    """A failed compilation: the plugin's log (which ai_edge_litert leaves in a temp file) gives the partition
    statistics the plugin computed before compiling, and the first error line; the log file is removed."""
    import re as _re

    from ai_edge_litert.aot.core import apply_plugin

    out: dict[str, Any] = {"compiled": False, "error": error[:300]}
    m = _re.search(r"See (\S+\.error) for details", error)
    if not m:
        return out
    log = Path(m.group(1))
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return out
    finally:
        log.unlink(missing_ok=True)
    stats = apply_plugin._RE_PARTITION_STATS.findall(text)  # noqa: SLF001 - the plugin's own stats format
    if stats:
        sub, offloaded, total, parts = (int(x) for x in stats[0])
        out.update(partitions=parts, node_share=share(offloaded, total),
                   subgraphs=[{"subgraph": int(a), "ops_offloaded": int(b), "ops": int(c), "partitions": int(d)}
                              for a, b, c, d in stats])
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = next((i for i, ln in enumerate(lines) if ln.startswith("ERROR:")), None)
    if first is not None:
        detail = " ".join(ln for ln in lines[first:first + 6] if not ln.startswith(("INFO:", "WARNING:")))
        out["error"] = " ".join(detail.split())[:400]
    return out


def _compiled_summary(model: Any) -> dict[str, Any]:
    """The vendor plugin's own partition statistics for one compiled model (``aot_types.PartitionStats``: per
    subgraph the ops offloaded to the NPU, the total, and the NPU partitions)."""
    stats = getattr(model, "partition_stats", None)
    subgraphs = [{"subgraph": s.subgraph_index, "ops_offloaded": s.num_ops_offloaded, "ops": s.num_total_ops,
                  "partitions": s.num_partitions_offloaded} for s in getattr(stats, "subgraph_stats", []) or []]
    main = next((s for s in subgraphs if s["subgraph"] == 0), None)
    out: dict[str, Any] = {"compiled": True, "subgraphs": subgraphs}
    if main is not None:
        out.update(partitions=main["partitions"], node_share=share(main["ops_offloaded"], main["ops"]))
    return out
