"""Core ML placement: the deployment target the file's ops need, and what keeps it off the Neural Engine.

Deployment target. Each op of the ML Program is looked up in coremltools' op registry
(``SSAOpRegistry.core_ops[op_type]``: the opsets — iOS15, iOS16, … — that define the op); the earliest one is the
op's availability (ML Programs start at iOS15). The file also declares its own specification version (what
coremltools wrote: it raises it silently when, e.g., weight compression adds ``constexpr_*`` ops that need iOS16).
``needed`` is the newer of the two; it is compared with the target the export asked for (``--coreml-target``), and
every op newer than that target is listed with the PyTorch module it came from.

Neural Engine: Core ML decides placement when it compiles the model on the device; no public rule set exists, so
this is a **static estimate** from a documented list (each entry cites its source in :data:`ANE_BLOCKERS`):
float32 compute, recurrent layers, gathers, dilated convolutions and inputs with a range of shapes. On macOS with
Core ML's compute plan (``MLComputePlan``, macOS 14.4+) the runtime's own per-op device choice is read instead.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from mobilize.analysis.placement import share

#: ML Program specification version → the iOS / macOS release that runs it
SPEC_TARGETS = {6: ("iOS15", "macOS12"), 7: ("iOS16", "macOS13"), 8: ("iOS17", "macOS14"), 9: ("iOS18", "macOS15")}
TARGET_SPEC = {name: v for v, names in SPEC_TARGETS.items() for name in names}
_OPSET_SPEC = {"CoreML5": 6, "CoreML6": 7, "CoreML7": 8, "CoreML8": 9}

_HOLLANCE = "https://github.com/hollance/neural-engine/blob/master/docs/unsupported-layers.md"
#: what is known to keep (part of) a model off the Neural Engine, with where it is documented
ANE_BLOCKERS: dict[str, dict[str, str]] = {
    "float32": {"what": "float32 compute: Core ML runs float32 ML Programs on the GPU and CPU only",
                "source": "https://apple.github.io/coremltools/docs-guides/source/typed-execution-example.html"},
    "recurrent": {"what": "recurrent layers (LSTM, GRU, RNN)", "source": _HOLLANCE},
    "gather": {"what": "gather ops", "source": _HOLLANCE},
    "dilated_conv": {"what": "dilated convolutions", "source": _HOLLANCE},
    "range_shape": {"what": "inputs with a range of shapes: the Neural Engine runs only the default shape",
                    "source": "https://developer.apple.com/forums/thread/724930 (answer by an Apple engineer)"},
}
_RECURRENT = ("lstm", "gru", "rnn")
_GATHER = ("gather", "gather_nd", "gather_along_axis")
_NOT_COMPUTE = ("const", "cast")


def place(path: Path, options: dict[str, Any]) -> dict[str, Any]:
    from mobilize.runtime.coreml_ref.program import Program

    program = Program(path)
    ops = list(program.operations())
    shapes, dtypes = _types(program, ops)
    deployment = deployment_target(program, ops, options.get("coreml_target"))
    ane = neural_engine(program, ops, shapes, dtypes)
    plan = compute_plan(Path(path))
    ane["compute_plan"] = plan
    if plan.get("status") == "analyzed":  # the runtime's own answer replaces the estimate's op share
        ane["estimate"] = "Core ML's compute plan on this Mac (placement for this machine's Neural Engine)"
        ane["node_share"] = plan.get("node_share")
    return {"format": "coreml", "deployment": deployment, "paths": {"ane": ane},
            "ops": sum(1 for op in ops if op.type != "const" and not op.type.startswith("constexpr_"))}


def _types(program: Any, ops: list[Any]) -> tuple[dict[str, list[int]], dict[str, str]]:
    from coremltools.proto import MIL_pb2

    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}

    def record(name: str, vtype: Any) -> None:
        if vtype.WhichOneof("type") != "tensorType":
            return
        tt = vtype.tensorType
        shapes[name] = [d.constant.size if d.WhichOneof("dimension") == "constant" else 1 for d in tt.dimensions]
        dtypes[name] = MIL_pb2.DataType.Name(tt.dataType)

    for inp in program.function.inputs:
        record(inp.name, inp.type)
    for op in ops:
        for out in op.outputs:
            record(out.name, out.type)
    return shapes, dtypes


def _available(op_type: str) -> tuple[str | None, int | None]:
    """The earliest target whose opset defines ``op_type`` (ML Programs start at iOS15), per coremltools."""
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    versions = SSAOpRegistry.core_ops.get(op_type)
    if not versions:
        return None, None
    first = max(6, min(int(t.value) for t in versions))
    return SPEC_TARGETS.get(first, (f"spec{first}",))[0], first


def target_spec(name: str | None) -> int | None:
    return TARGET_SPEC.get(name) if name else None


def deployment_target(program: Any, ops: list[Any], requested: str | None) -> dict[str, Any]:
    declared = int(program.spec.specificationVersion)
    opset_spec = _OPSET_SPEC.get(program.opset)
    by_type: dict[str, dict[str, Any]] = {}
    names: dict[str, list[str]] = defaultdict(list)
    unknown = set()
    for op in ops:
        first_name, first = _available(op.type)
        if first is None:
            unknown.add(op.type)
            continue
        by_type.setdefault(op.type, {"op": op.type, "available_from": first_name, "spec": first, "count": 0})
        by_type[op.type]["count"] += 1
        out = op.outputs[0].name if len(op.outputs) else ""
        if len(names[op.type]) < 20:
            names[op.type].append(out)
    ops_need = max([r["spec"] for r in by_type.values()] or [6])
    needed = max(declared, ops_need, opset_spec or 6)
    req_spec = target_spec(requested)
    newest = sorted((r for r in by_type.values() if r["spec"] > 6), key=lambda r: (-r["spec"], r["op"]))
    record: dict[str, Any] = {
        "tool": "coremltools SSAOpRegistry (per-op availability by opset) + the file's specification version",
        "declared": _name(declared), "declared_spec": declared, "opset": program.opset,
        "needed_by_ops": _name(ops_need), "needed": _name(needed), "needed_spec": needed,
        "requested": requested, "requested_spec": req_spec,
        "exceeds_requested": bool(req_spec is not None and needed > req_spec),
        "ops_newer_than_ios15": [{**{k: v for k, v in r.items() if k != "spec"}, "op_names": names[r["op"]]}
                                 for r in newest],
    }
    if unknown:
        record["ops_not_in_registry"] = sorted(unknown)
    if req_spec is not None:
        over = [r for r in record["ops_newer_than_ios15"] if TARGET_SPEC.get(r["available_from"], 6) > req_spec]
        record["ops_newer_than_requested"] = over
        if needed > req_spec and not over:
            record["reason"] = (f"the file declares specification version {declared} ({_name(declared)}): "
                                f"coremltools raised it above {requested} for an op version or feature it used")
    return record


def _name(spec: int) -> str:
    return "/".join(SPEC_TARGETS.get(spec, (f"spec{spec}",)))


def _macs(op: Any, shapes: dict[str, list[int]]) -> int:
    def arg(name: str) -> str | None:
        a = op.inputs.get(name)
        if a is None or not a.arguments:
            return None
        b = a.arguments[0]
        return b.name if b.WhichOneof("binding") == "name" else None

    def prod(xs: list[int]) -> int:
        out = 1
        for x in xs:
            out *= max(int(x), 1)
        return out

    out = shapes.get(op.outputs[0].name) if len(op.outputs) else None
    if not out:
        return 0
    if op.type in ("conv", "conv_transpose"):
        w = shapes.get(arg("weight") or "")
        if not w or len(w) < 3:
            return 0
        if op.type == "conv_transpose":
            x = shapes.get(arg("x") or "")
            return prod(x) * prod(w[1:]) if x else 0
        return prod(out) * prod(w[1:])
    if op.type == "linear":
        w = shapes.get(arg("weight") or "")
        return prod(out) * w[-1] if w else 0
    if op.type in ("matmul", "einsum"):
        x = shapes.get(arg("x") or "")
        return prod(out) * x[-1] if x else 0
    return 0


def _const_value(program: Any, op: Any, name: str, consts: dict[str, Any]) -> Any:
    a = op.inputs.get(name)
    if a is None or not a.arguments:
        return None
    b = a.arguments[0]
    if b.WhichOneof("binding") == "name":
        return consts.get(b.name)
    try:
        return program.decode(b.value)
    except Exception:  # noqa: BLE001
        return None


def neural_engine(program: Any, ops: list[Any], shapes: dict[str, list[int]], dtypes: dict[str, str]) -> dict[str, Any]:
    import numpy as np

    consts: dict[str, Any] = {}
    try:
        consts = program.constants()
    except Exception:  # noqa: BLE001 - without constants dilations stay unknown (counted as not dilated)
        consts = {}
    compute = [op for op in ops if op.type not in _NOT_COMPUTE and not op.type.startswith("constexpr_")]
    kinds = Counter(dtypes.get(op.outputs[0].name, "") for op in compute if len(op.outputs))
    fp32 = kinds.get("FLOAT32", 0) > kinds.get("FLOAT16", 0)
    blockers: list[dict[str, Any]] = []
    off: set[int] = set()

    def block(kind: str, members: list[Any], detail: str = "") -> None:
        if not members:
            return
        off.update(id(m) for m in members)
        names = [m.outputs[0].name for m in members if len(m.outputs)]
        blockers.append({"kind": kind, **ANE_BLOCKERS[kind], "ops": dict(Counter(m.type for m in members)),
                         "count": len(members), "op_names": names[:20], **({"detail": detail} if detail else {})})

    if fp32:
        block("float32", [op for op in compute if dtypes.get(op.outputs[0].name) == "FLOAT32"],
              f"{kinds.get('FLOAT32', 0)} of {len(compute)} ops compute in float32 (export fp16 for the Neural Engine)")
    block("recurrent", [op for op in compute if op.type in _RECURRENT])
    block("gather", [op for op in compute if op.type in _GATHER])
    dilated = []
    for op in compute:
        if op.type in ("conv", "conv_transpose"):
            d = _const_value(program, op, "dilations", consts)
            if d is not None and np.any(np.asarray(d) > 1):
                dilated.append(op)
    block("dilated_conv", dilated)
    ranged = [i.name for i in program.spec.description.input
              if i.type.WhichOneof("Type") == "multiArrayType" and
              i.type.multiArrayType.WhichOneof("ShapeFlexibility") == "shapeRange"]
    if ranged:
        blockers.append({"kind": "range_shape", **ANE_BLOCKERS["range_shape"], "inputs": ranged, "count": len(ranged)})
    macs = {id(op): _macs(op, shapes) for op in compute}
    total = sum(macs.values())
    on = sum(v for k, v in macs.items() if k not in off)
    return {"status": "analyzed", "tool": "static estimate from a documented list (docs/inspect.md)",
            "estimate": "static estimate: Core ML places ops when it compiles the model on the device",
            "partitions": None, "compute_precision": "float32" if fp32 else "float16",
            "ops": len(compute), "ops_off_ane": len(off), "node_share": share(len(compute) - len(off), len(compute)),
            "macs": {"total": int(total), "on_ane": int(on)}, "mac_share": share(on, total),
            "blockers": blockers}


def compute_plan(path: Path) -> dict[str, Any]:
    """Core ML's own per-op device choice (``MLComputePlan``), where this machine has Core ML (macOS 14.4+)."""
    if sys.platform != "darwin":
        return {"status": "unverified", "tool": "coremltools.models.compute_plan.MLComputePlan",
                "reason": "Core ML's compute plan needs macOS 14.4 or newer; this machine runs "
                          f"{sys.platform} — the Neural Engine figures are the static estimate"}
    try:
        import coremltools as ct
        from coremltools.models.compute_plan import MLComputePlan

        compiled = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL).get_compiled_model_path()
        plan = MLComputePlan.load_from_path(path=compiled, compute_units=ct.ComputeUnit.ALL)
        program = plan.model_structure.program
        devices: Counter[str] = Counter()
        off: list[str] = []
        for fn in program.functions.values():
            for op in fn.block.operations:
                usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
                if usage is None:
                    continue
                dev = type(usage.preferred_compute_device).__name__.replace("ML", "").replace("ComputeDevice", "")
                devices[dev] += 1
                if dev != "NeuralEngine" and op.operator_name not in ("const",):
                    off.append(f"{op.operator_name}:{op.outputs[0].name if op.outputs else ''}")
        total = sum(devices.values())
        return {"status": "analyzed", "tool": "MLComputePlan (Core ML on this Mac)", "devices": dict(devices),
                "node_share": share(devices.get("NeuralEngine", 0), total), "partitions": None,
                "off_ane": off[:200]}
    except Exception as exc:  # noqa: BLE001 - an older macOS or coremltools without the API
        return {"status": "unverified", "tool": "MLComputePlan", "reason": f"{type(exc).__name__}: {exc}"[:300]}
