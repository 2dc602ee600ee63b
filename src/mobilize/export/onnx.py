"""ONNX exporter: torch.onnx (dynamo) from the captured program → one self-contained ``.onnx`` file.

Weights are embedded (``external_data=False``; app bundles want one file), the opset is ≥ 18, and the file passes
``onnx.checker.check_model(full_check=True)``. fp16 converts weights and compute to float16 with
onnxruntime's converter, keeping float32 inputs/outputs unless ``fp16_io`` is set.
"""

from __future__ import annotations

from pathlib import Path

from mobilize.capture import Capture
from mobilize.errors import ConversionError
from mobilize.export import ExportedFile, ExportOptions
from mobilize.spec import ModelSpec

_TWO_GB = 2**31


def export(capture: Capture, spec: ModelSpec, precision: str, dest: Path, options: ExportOptions) -> ExportedFile:
    import onnx
    import torch

    notes: list[str] = []
    try:
        program = torch.onnx.export(
            capture.program, capture.example_inputs or spec.example_inputs, dynamo=True, external_data=False,
            opset_version=options.onnx_opset, input_names=list(spec.input_names),
            output_names=list(spec.output_names or []), verbose=False, optimize=True,
        )
    except Exception as exc:  # noqa: BLE001 - converter failures become a ConversionError with the ops named
        raise ConversionError(str(exc), format="onnx", ops=_unsupported_ops(str(exc))) from exc
    model = program.model_proto
    name_dims(model, {d["symbol"]: name for name, d in capture.dims.items() if d.get("symbol")})
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=not options.fp16_io, disable_shape_infer=False)
        _toposort(model.graph)  # the converter appends its I/O casts at the end of the node list
        notes.append("fp16: weights and compute in float16 (onnxruntime float16 converter)"
                     + ("" if options.fp16_io else "; inputs/outputs stay float32"))
    elif precision != "fp32":
        raise ConversionError(f"onnx exporter has no precision {precision!r}", format="onnx")
    lean_metadata(model)
    if model.ByteSize() >= _TWO_GB:
        raise ConversionError("model is ≥ 2 GB, larger than a single-file ONNX protobuf can hold", format="onnx")
    onnx.checker.check_model(model, full_check=True)
    dest.write_bytes(model.SerializeToString())
    return ExportedFile(dest, notes)


def name_dims(model, names: dict[str, str]) -> None:  # noqa: ANN001 - onnx ModelProto
    """Rename torch.export's dim symbols (``s77``) to the user's dim names (``batch``) in every shape of the graph —
    inputs, outputs, value_info — including derived expressions such as ``2*s77``."""
    import re

    if not names:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(names, key=len, reverse=True)) + r")\b")

    def fix(values) -> None:  # noqa: ANN001
        for v in values:
            if not v.type.HasField("tensor_type"):
                continue
            for d in v.type.tensor_type.shape.dim:
                if d.HasField("dim_param"):
                    d.dim_param = pattern.sub(lambda m: names[m.group(1)], d.dim_param)

    g = model.graph
    fix(g.input)
    fix(g.output)
    fix(g.value_info)


#: the per-node metadata torch.onnx writes that a bundled file keeps: the PyTorch module path of each node (what
#: `mobilize diff` maps layers by). Stack traces (absolute paths of the machine that exported: different bytes in
#: every checkout), FX node dumps and class hierarchies cost ~800 bytes per node — more than the weights of a small
#: model — and an app never reads them.
KEEP_NODE_METADATA = ("pkg.torch.onnx.name_scopes",)


def lean_metadata(model) -> None:  # noqa: ANN001 - onnx ModelProto
    """Drop per-node debug metadata except :data:`KEEP_NODE_METADATA` (subgraphs included), in place."""
    from onnx import AttributeProto

    def graph(g) -> None:  # noqa: ANN001
        for node in g.node:
            keep = [(p.key, p.value) for p in node.metadata_props if p.key in KEEP_NODE_METADATA]
            del node.metadata_props[:]
            for k, v in keep:
                node.metadata_props.add(key=k, value=v)
            node.doc_string = ""
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    graph(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        graph(sub)

    graph(model.graph)


def _toposort(graph) -> None:  # noqa: ANN001 - onnx GraphProto
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (Kahn's algorithm, stable)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            raise ConversionError("fp16 conversion left a graph with a cycle or a dangling input "
                                  f"(first stuck node: {rest[0].name} {rest[0].op_type})", format="onnx")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def _unsupported_ops(message: str) -> list[str]:
    import re

    ops = re.findall(r"OpOverload\(op='([\w.]+)'", message)
    ops += re.findall(r"target=torch\.ops\.([\w.]+)", message)
    ops += re.findall(r"\b((?:aten|prims|torchvision)(?:::|\.)[A-Za-z_]\w*)", message)
    return sorted(set(ops))


def finalize(path: Path, info) -> list[str]:  # noqa: ANN001 - mobilize.export.metadata.FileInfo
    """Write ``info`` into the model's ``metadata_props`` (and its description into ``doc_string``), keeping other
    producers' keys, sorted; serialized deterministically."""
    import onnx

    model = onnx.ModelProto.FromString(path.read_bytes())
    entries = info.entries()
    kept = {p.key: p.value for p in model.metadata_props if p.key not in entries}
    del model.metadata_props[:]
    for key, value in sorted({**kept, **entries}.items()):
        model.metadata_props.add(key=key, value=value)
    model.doc_string = info.description
    path.write_bytes(model.SerializeToString(deterministic=True))
    return []
