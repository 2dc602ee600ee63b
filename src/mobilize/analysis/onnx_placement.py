"""ONNX placement: the NNAPI and CoreML execution providers, and the ORT mobile runtime.

The EP figures are onnxruntime's own mobile usability checker
(``python -m onnxruntime.tools.check_onnx_model_mobile_usability``), called through the functions it is made of, in
its order: optimize the model to the BASIC level (``optimize_model``), run ONNX shape inference
(``ModelProtoWithShapeInfo``), then ``check_nnapi_partitions`` / ``check_coreml_partitions`` (ML Program and
NeuralNetwork op lists) with fixed input sizes required — and, when inputs are dynamic, again as if they were fixed.
Every figure is read from the returned ``PartitioningInfo`` (partitions, partition sizes, supported nodes,
unsupported ops, nodes refused for dynamic shapes or rank, the caveats it could not check, its YES/MAYBE/NO
verdict), so it matches what the checker prints. Node names survive the BASIC optimisation, which is how each
refused node is mapped back to its PyTorch module (``pkg.torch.onnx.name_scopes`` in the exported file). MACs per
node (Conv, ConvTranspose, MatMul, Gemm and their quantized/fused forms) come from the inferred shapes.

Mobile runtime: since onnxruntime 1.19 the mobile packages (``onnxruntime-android``, ``onnxruntime-c`` /
``onnxruntime-objc``) are full builds — every ONNX operator and the contrib ops — so a file that this onnxruntime
loads runs there; the reduced-operator "ORT Mobile" packages ended with 1.18. An app that wants the smaller
binary builds onnxruntime with ``--include_ops_by_config``: the operators that build needs come from converting the
file to ORT format (``convert_onnx_models_to_ort``), as ``mobilize export --formats ort`` does.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from mobilize.analysis.placement import module_of_name_scopes, share

CHECKER = "onnxruntime.tools.check_onnx_model_mobile_usability (mobile_helpers.usability_checker)"
#: path name → (checker function, ops table) ; the table names follow onnxruntime's file names
EPS = {"nnapi": ("check_nnapi_partitions", None),
       "coreml-ep": ("check_coreml_partitions", "coreml_supported_mlprogram_ops.md"),
       "coreml-ep-neuralnetwork": ("check_coreml_partitions", "coreml_supported_neuralnetwork_ops.md")}
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
#: per-node MAC formulas read the weight from this input index
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3, "FusedConv": 1, "NhwcConv": 1}
_MATMULS = ("MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "MatMulNBits", "Gemm", "QGemm")


def place(path: Path, options: dict[str, Any]) -> dict[str, Any]:
    import onnx

    from mobilize.runtime.onnx import refuse_external_data

    data = Path(path).read_bytes()
    refuse_external_data(data, Path(path).name)
    original = onnx.ModelProto.FromString(data)
    modules = node_modules(original.graph)
    with tempfile.TemporaryDirectory(prefix="mobilize-ortcheck-") as tmp:
        paths, checked = ep_paths(Path(path), Path(tmp), modules)
        mobile = mobile_runtime(data, original, Path(tmp), Path(path).stem)
    return {"format": "onnx", "tool": CHECKER, "checked_graph": checked, "paths": paths, "mobile_runtime": mobile}


def node_modules(graph: Any) -> dict[str, str | None]:
    """Node name → PyTorch module, from ``pkg.torch.onnx.name_scopes``; a node without it (added after export, e.g.
    a quantizer's DequantizeLinear) takes the module of the node that reads its output."""
    modules = {n.name: module_of_name_scopes(p.value) for n in graph.node for p in n.metadata_props
               if p.key == "pkg.torch.onnx.name_scopes"}
    readers: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.name)
    for n in reversed(graph.node):  # consumers come later in a sorted graph: resolve from the end backwards
        if modules.get(n.name):
            continue
        for out in n.output:
            found = next((modules[r] for r in readers.get(out, []) if modules.get(r)), None)
            if found:
                modules[n.name] = found
                break
    return modules


def ep_paths(path: Path, tmp: Path, modules: dict[str, str | None]) -> tuple[dict[str, Any], dict[str, Any]]:
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    optimized = tmp / "basic.onnx"
    optimize_model(path, optimized, use_external_initializers=True)
    model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
    dynamic_inputs, _ = uc.check_shapes(model.graph, logging.getLogger("mobilize.ortcheck"))
    macs = node_macs(model)
    paths: dict[str, Any] = {}
    for name, (fn, table) in EPS.items():
        def check(fixed: bool, fn: str = fn, table: str | None = table) -> Any:
            f = getattr(uc, fn)
            return f(model, fixed) if table is None else f(model, fixed, table)

        info = check(True)
        rec = _ep_record(info, model, macs, modules)
        rec["tool"] = f"{CHECKER}: {fn}" + (f" ({table})" if table else "")
        rec["estimate"] = "static (onnxruntime's op lists; op-specific limits listed under caveats are not checked)"
        if dynamic_inputs and rec["suitability"] != "YES":
            fixed = _ep_record(check(False), model, macs, modules)
            rec["if_fixed_shapes"] = {k: fixed[k] for k in ("partitions", "partition_sizes", "supported_nodes",
                                                              "mac_share", "suitability")}
        paths[name] = rec
    checked = {"level": "BASIC (as the checker does)", "nodes": len(model.graph.node),
               "dynamic_inputs": [i.name for i in dynamic_inputs]}
    return paths, checked


def _ep_record(info: Any, model: Any, macs: dict[str, int], modules: dict[str, str | None]) -> dict[str, Any]:
    caveats = info.supported_ops_checker.get_caveats()
    in_groups = {id(n) for g in info.supported_groups for n in g}
    names_in = {n.name for g in info.supported_groups for n in g}
    refused = []
    for node in model.graph.node:
        if id(node) in in_groups:
            continue
        op_ok = info.supported_ops_checker.is_op_supported(node)
        refused.append({"node": node.name, "op": f"{node.domain or 'ai.onnx'}:{node.op_type}",
                        "reason": "operator" if not op_ok else "dynamic shape or rank",
                        "module": modules.get(node.name)})
    total = sum(macs.values())
    on = sum(v for k, v in macs.items() if k in names_in)
    return {
        "status": "analyzed",
        "partitions": int(info.num_partitions),
        "partition_sizes": [len(g) for g in info.supported_groups],
        "supported_nodes": int(info.num_supported_nodes), "nodes": int(info.num_nodes),
        "node_share": share(info.num_supported_nodes, info.num_nodes),
        "macs": {"total": int(total), "supported": int(on)}, "mac_share": share(on, total),
        "unsupported_ops": sorted(info.unsupported_ops),
        "unsupported_op_counts": dict(Counter(r["op"] for r in refused if r["reason"] == "operator").most_common()),
        "nodes_unsupported": {"operator": int(info.nodes_unsupported_due_to_op),
                              "dynamic_shape": int(info.nodes_unsupported_due_to_dynamic_input),
                              "rank": int(info.num_unsupported_nodes_due_to_rank)},
        "ops_with_unsupported_rank": sorted(info.ops_with_unsupported_rank),
        "subgraphs": {"count": int(info.num_subgraphs), "nodes": int(info.num_nodes_in_subgraphs)},
        "caveats": caveats,
        "suitability": info.suitability().name,
        "unsupported": refused[:200],
    }


def node_macs(model: Any) -> dict[str, int]:
    """MACs of the convolution and matrix-multiply nodes of the main graph, by node name, from inferred shapes
    (an unknown dim counts as 1)."""
    from onnx import numpy_helper  # noqa: F401 - keeps onnx's helpers loaded for the shape reads below

    shapes: dict[str, list[int]] = {}
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = [int(d) for d in init.dims]

    def prod(xs: list[int]) -> int:
        out = 1
        for x in xs:
            out *= max(int(x), 1)
        return out

    out: dict[str, int] = {}
    for node in model.graph.node:
        op = node.op_type
        y = shapes.get(node.output[0]) if node.output else None
        if op in _WEIGHT_INPUT:
            idx = _WEIGHT_INPUT[op]
            w = shapes.get(node.input[idx]) if len(node.input) > idx else None
            if not w or len(w) < 3:
                continue
            if op == "ConvTranspose":
                x = shapes.get(node.input[0])
                if x:
                    out[node.name] = prod(x) * prod(w[1:])
            elif y:
                out[node.name] = prod(y) * prod(w[1:])
        elif op in _MATMULS and y:
            a = shapes.get(node.input[0]) if node.input else None
            if not a:
                continue
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if (trans_a and len(a) >= 2) else a[-1]
            out[node.name] = prod(y) * max(k, 1)
    return out


def mobile_runtime(data: bytes, model: Any, tmp: Path, stem: str) -> dict[str, Any]:
    """Whether the full mobile packages run the file, and the operators a reduced build needs."""
    import onnxruntime as ort

    domains = sorted({n.domain or "ai.onnx" for n in _all_nodes(model.graph)})
    custom = [d for d in domains if d not in STANDARD_DOMAINS]
    opsets = {o.domain or "ai.onnx": int(o.version) for o in model.opset_import}
    out: dict[str, Any] = {"onnxruntime": ort.__version__, "opsets": opsets}
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        loads, why = True, ""
    except Exception as exc:  # noqa: BLE001 - the runtime's refusal is the answer
        loads, why = False, " ".join(str(exc).split())[:300]
    out["full_package"] = {
        "packages": "onnxruntime-android, onnxruntime-c / onnxruntime-objc (full operator set since 1.19)",
        "runs": bool(loads and not custom),
        "reason": why or (f"operators from non-standard domains {custom}: a custom op library is needed" if custom
                          else f"loads in onnxruntime {ort.__version__} (CPU EP); the app's package must be at least "
                               "as new for these opsets"),
    }
    out["reduced_package"] = {"packages": "onnxruntime-mobile (reduced operator set)", "runs": None,
                              "reason": "the pre-built reduced-operator packages ended with onnxruntime 1.18; build "
                                        "your own from the ORT-format operator config (--formats ort)"}
    if loads:
        try:
            ort_path, config = convert_to_ort(data, tmp, stem)
            out["ort_format"] = {"converts": True, "bytes": ort_path.stat().st_size,
                                 "required_operators": parse_config(config.read_text())}
        except Exception as exc:  # noqa: BLE001
            out["ort_format"] = {"converts": False, "reason": " ".join(str(exc).split())[:300]}
    return out


def _all_nodes(graph: Any) -> list[Any]:
    from onnx import AttributeProto

    nodes = []
    for n in graph.node:
        nodes.append(n)
        for a in n.attribute:
            if a.type == AttributeProto.GRAPH:
                nodes += _all_nodes(a.g)
            elif a.type == AttributeProto.GRAPHS:
                for g in a.graphs:
                    nodes += _all_nodes(g)
    return nodes


def convert_to_ort(data: bytes, work: Path, stem: str) -> tuple[Path, Path]:
    """onnxruntime's ``convert_onnx_models_to_ort`` (fixed optimisation style, level "all", no NCHWc): the ORT-format
    file and the ``required_operators.config`` for a reduced build, in ``work``. Its progress prints are captured."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    from mobilize._quiet import captured_output

    src = work / "src" / f"{stem}.onnx"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    out_dir = work / "ort"
    with captured_output():
        convert_onnx_models_to_ort(src, output_dir=out_dir, optimization_styles=[OptimizationStyle.Fixed])
    ort_path = out_dir / f"{stem}.ort"
    config = out_dir / f"{stem}.required_operators.config"
    if not ort_path.is_file() or not config.is_file():
        from mobilize.errors import ConversionError

        raise ConversionError(f"convert_onnx_models_to_ort wrote no {ort_path.name} / {config.name}", format="ort")
    return ort_path, config


def parse_config(text: str) -> dict[str, Any]:
    """``domain;opset;Op1,Op2`` lines → ``{"ai.onnx;20": ["Conv", …]}`` and the operator count."""
    ops: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        domain, opset, names = (line.split(";", 2) + ["", ""])[:3]
        ops[f"{domain};{opset}"] = sorted(n.split("{")[0] for n in names.split(",") if n)
    return {"operators": ops, "count": sum(len(v) for v in ops.values())}


def place_ort(path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """An ORT-format file: the operators a reduced build needs (its companion config, written at conversion) and
    which onnxruntime packages load it. Execution-provider coverage is the ONNX file's (same graph, before ORT's
    optimisations): onnxruntime's checker reads ONNX only."""
    from mobilize.export.ort import companion

    config = companion(Path(path))
    record: dict[str, Any] = {"format": "ort", "paths": {},
                              "note": "NNAPI / CoreML EP coverage: see the .onnx file of the same precision"}
    if config.is_file():
        record["reduced_build"] = {"config": config.name, **parse_config(config.read_text()),
                                   "how": "build onnxruntime with --minimal_build --include_ops_by_config "
                                          f"{config.name}"}
    else:
        record["reduced_build"] = {"config": None, "reason": f"{config.name} is missing beside the file"}
    return record
