"""ExecuTorch exporter: the captured program lowered to a ``.pte`` with XNNPACK's partitioner.

``torch.export`` program → ``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])`` →
``.to_executorch()``, with ExecuTorch's recommended XNNPACK configs. What XNNPACK takes runs in its delegate; every
other op runs on ExecuTorch's portable CPU kernels. The artifact notes say which share was delegated and which ops
(and PyTorch modules) stay portable; the analysis of the file (:mod:`mobilize.analysis.pte`) says the same from the
file alone.

- **fp16**: weights, buffers and compute in float16 (the captured graph with its float tensors and float-producing
  ops switched to float16, re-traced), inputs and outputs kept float32 by casts at the edges; XNNPACK runs fp16
  kernels where the CPU has them.
- **Dynamic dims** must have an upper bound: ExecuTorch plans memory for it. A dim without a maximum gets
  :func:`default_max`; the bound is recorded (``max_shape`` of the artifact's inputs, and a note).
- **The quantizer's input.** PT2E quantization works on the torch program, not on a ``.pte`` (the XNNPACK payload
  has no graph to re-quantize). Every export remembers the program it lowered, keyed by the file it wrote
  (:func:`source_for`); :mod:`mobilize.quantize.pte` starts from there — see docs/architecture.md. Converters run
  in forked children, so the quantizer's child re-derives it from the captured program
  (:func:`mobilize.quantize.pte.from_capture`, called by ``api._quantize_one``).
- **Metadata** lives in a constant method of the program, :data:`METADATA_METHOD`, returning one JSON string (the
  ExecuTorch convention for configuration values: LLM exports carry ``get_max_seq_len`` and the like). The exporter
  writes the file's I/O description there (:data:`IO_KEY`; the runner reads names and dynamic dims from it); the
  finalizer adds the ModelSpec facts (docs/metadata.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mobilize.capture import Capture, dim_ident, finite_bound
from mobilize.errors import ConversionError
from mobilize.export import ExportedFile, ExportOptions
from mobilize.spec import ModelSpec

#: the constant method that returns the file's metadata (a JSON object as a string)
METADATA_METHOD = "mobilize_metadata"
#: the metadata key holding the file's own I/O: ``{"inputs": [{"name", "dynamic": {axis: dim name}}], "outputs"}``
IO_KEY = "mobilize.io"
#: the smallest upper bound given to a dynamic dim that has none (ExecuTorch needs one to plan memory)
DEFAULT_MAX = 64
#: serialisation settings of ExecuTorch's XNNPACK backend config (``get_xnnpack_executorch_backend_config``);
#: the finalizer re-serialises with the same, so a file's bytes only change where the metadata changed
_SEGMENT_ALIGNMENT = 128
#: programs remembered for the quantizer, most recent last (see :func:`source_for`)
_SOURCES: dict[str, Source] = {}
_KEEP_SOURCES = 16


@dataclasses.dataclass
class Source:
    """The torch program a ``.pte`` was lowered from, and the I/O facts the lowering needs again after PT2E
    quantization (which re-traces the quantized graph)."""

    program: Any  # torch.export.ExportedProgram, dynamic dims bounded
    args: tuple[Any, ...]  # example inputs the program was traced with
    dynamic_shapes: tuple[Any, ...] | None  # for re-tracing: torch.export.Dim per dynamic axis, with bounds
    input_names: list[str]
    output_names: list[str]
    dims: dict[str, dict[int, str]]  # input → {axis: dim name}, the dims that are dynamic in the program
    bounds: dict[str, tuple[int, int]]  # dim name → (min, max)
    notes: list[str] = dataclasses.field(default_factory=list)
    out_dims: list[dict[int, str]] = dataclasses.field(default_factory=list)  # per output: {axis: size expression}

    def io(self) -> dict[str, Any]:
        """The file's I/O description written under :data:`IO_KEY`: names and the dynamic dims of each input and
        output (``{axis: dim name}``; an output's may be an expression such as ``2*seq``), and the bounds."""
        outs = self.out_dims if len(self.out_dims) == len(self.output_names) else [{} for _ in self.output_names]
        return {"inputs": [{"name": n, "dynamic": {str(a): d for a, d in sorted(self.dims.get(n, {}).items())}}
                           for n in self.input_names],
                "outputs": [{"name": n, "dynamic": {str(a): d for a, d in sorted(o.items())}}
                            for n, o in zip(self.output_names, outs)],
                "bounds": {d: list(b) for d, b in sorted(self.bounds.items())}}


def default_max(example_size: int) -> int:
    """The upper bound of a dynamic dim that has none: :data:`DEFAULT_MAX`, or twice the example's size."""
    return max(DEFAULT_MAX, 2 * int(example_size))


def remember(path: Path, source: Source) -> None:
    """Keep ``source`` reachable from the file it produced (for :mod:`mobilize.quantize.pte`)."""
    key = str(Path(path).resolve())
    _SOURCES.pop(key, None)
    _SOURCES[key] = source
    while len(_SOURCES) > _KEEP_SOURCES:
        _SOURCES.pop(next(iter(_SOURCES)))


def has_source(path: Path) -> bool:
    return str(Path(path).resolve()) in _SOURCES


def source_for(path: Path) -> Source:
    """The program that the ``.pte`` at ``path`` was exported from in this process."""
    src = _SOURCES.get(str(Path(path).resolve()))
    if src is None:
        raise ConversionError(f"{Path(path).name}: ExecuTorch files are quantized from the torch program they were "
                              "lowered from (PT2E), and this file was not exported in this run; export it with "
                              "mobilize in the same run as its quantized precisions", format="pte")
    return src


def export(capture: Capture, spec: ModelSpec, precision: str, dest: Path, options: ExportOptions) -> ExportedFile:
    if precision not in ("fp32", "fp16"):
        raise ConversionError(f"pte exporter has no precision {precision!r}", format="pte")
    src = prepare(capture, spec)
    notes = list(src.notes)
    program = src.program
    if precision == "fp16":
        program, changed = to_half(src)
        notes.append("fp16: weights, buffers and compute in float16 (XNNPACK fp16 kernels where the CPU has them, "
                     "portable kernels otherwise); inputs/outputs stay float32" +
                     (f"; {changed} op(s) that created float32 tensors now create float16" if changed else ""))
    data, record = lower(program, src, fp16_conv_weights=precision == "fp16")
    dest.write_bytes(data)
    remember(dest, src)
    notes.append(describe_delegation(record))
    notes += bound_notes(src, record)
    return ExportedFile(dest, notes)


# --- the program -------------------------------------------------------------------------------------------------


def prepare(capture: Capture, spec: ModelSpec) -> Source:
    """The captured program with every dynamic dim bounded (re-traced with ``torch.export.Dim`` bounds when one has
    no maximum), and the I/O facts of it."""
    import torch

    program = capture.program
    args = tuple(capture.example_inputs or spec.example_inputs)
    names = {}  # symbol → the user's dim name
    for dname, d in (capture.dims or {}).items():
        if d.get("dynamic") and d.get("symbol"):
            names[d["symbol"]] = dname
    user = list(program.graph_signature.user_inputs)
    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    dims: dict[str, dict[int, str]] = {}
    bounds: dict[str, tuple[int, int | None]] = {}
    for i, name in enumerate(spec.input_names):
        val = vals.get(user[i]) if i < len(user) else None
        for ax, d in enumerate(getattr(val, "shape", ()) or ()):
            if not isinstance(d, torch.SymInt) or not getattr(d.node.expr, "free_symbols", None):
                continue
            sym = str(d)
            dname = names.get(sym, sym)
            dims.setdefault(name, {})[ax] = dname
            rng = program.range_constraints.get(d.node.expr)
            lo = finite_bound(rng.lower) if rng is not None else None
            hi = finite_bound(rng.upper) if rng is not None else None
            bounds[dname] = (lo if lo is not None else 1, hi)
    notes: list[str] = []
    unbounded = sorted(d for d, (_lo, hi) in bounds.items() if hi is None)
    dyn_shapes = None
    if dims:
        for dname in unbounded:
            where = next((n, a) for n, axes in dims.items() for a, d in axes.items() if d == dname)
            hint = int(args[list(spec.input_names).index(where[0])].shape[where[1]])
            bounds[dname] = (bounds[dname][0], default_max(hint))
        dyn_shapes = _dynamic_shapes(spec.input_names, dims, bounds)
        if unbounded:
            try:
                program = torch.export.export(capture.program.module(check_guards=False), args,
                                              dynamic_shapes=dyn_shapes, strict=False)
                notes.append("dynamic dims without a maximum get an upper bound in the .pte (ExecuTorch plans memory "
                             "for it): " + ", ".join(f"{d} ≤ {bounds[d][1]}" for d in unbounded)
                             + "; give your own with --dynamic INPUT:AXIS=NAME:MIN:MAX")
            except Exception as exc:  # noqa: BLE001 - keep the captured program; its dims fall back to the example
                from mobilize.errors import describe

                for dname in unbounded:
                    where = next((n, a) for n, axes in dims.items() for a, d in axes.items() if d == dname)
                    dims[where[0]].pop(where[1])
                    bounds.pop(dname)
                dims = {n: axes for n, axes in dims.items() if axes}
                dyn_shapes = _dynamic_shapes(spec.input_names, dims, bounds) if dims else None
                notes.append(f"{', '.join(unbounded)} fixed at the example's size in the .pte: it has no maximum and "
                             f"re-tracing with one failed ({describe(exc, 160)})")
    src = Source(program, args, dyn_shapes, list(spec.input_names), list(spec.output_names or []), dims,
                 {d: (lo, int(hi)) for d, (lo, hi) in bounds.items() if hi is not None}, notes)
    user = list(program.graph_signature.user_inputs)
    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    names = {}
    for i, name in enumerate(spec.input_names):
        shape = getattr(vals.get(user[i]) if i < len(user) else None, "shape", ())
        for ax, dname in dims.get(name, {}).items():
            if ax < len(shape) and isinstance(shape[ax], torch.SymInt):
                names[str(shape[ax])] = dname
    src.out_dims = output_dims(program, names)
    return src


def output_dims(program: Any, names: dict[str, str]) -> list[dict[int, str]]:
    """Per output of ``program``: its dynamic axes as size expressions in the inputs' dim names (``2*seq``)."""
    import torch

    out_node = next(n for n in program.graph.nodes if n.op == "output")
    flat = out_node.args[0] if isinstance(out_node.args[0], list | tuple) else [out_node.args[0]]
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(names, key=len, reverse=True)) + r")\b") \
        if names else None
    result = []
    for node in flat:
        val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
        axes = {}
        for ax, d in enumerate(getattr(val, "shape", ()) or ()):
            if isinstance(d, torch.SymInt) and getattr(d.node.expr, "free_symbols", None):
                text = str(d)
                axes[ax] = pattern.sub(lambda m: names[m.group(1)], text) if pattern else text
        result.append(axes)
    return result


def _dynamic_shapes(input_names: list[str], dims: dict[str, dict[int, str]],
                    bounds: dict[str, tuple[int, int | None]]) -> tuple[Any, ...]:
    import torch

    made: dict[str, Any] = {}
    out = []
    for name in input_names:
        entry = {}
        for ax, dname in dims.get(name, {}).items():
            if dname not in made:
                lo, hi = bounds[dname]
                made[dname] = torch.export.Dim(dim_ident(dname), min=lo, max=hi)
            entry[ax] = made[dname]
        out.append(entry or None)
    return tuple(out)


def to_half(src: Source) -> tuple[Any, int]:
    """The program in float16 with float32 I/O: every floating parameter, buffer and constant as float16, every op
    that creates a float32 tensor (factories, casts) asked for float16, a cast to float16 after each float32 input
    and back to float32 before each float32 output, then re-traced (the graph module itself, so every node keeps the
    PyTorch module it came from). Returns (program, number of ops switched)."""
    import copy

    import torch

    gm = copy.deepcopy(src.program.module(check_guards=False))
    gm = gm.half()  # parameters and buffers
    for name, value in list(vars(gm).items()):  # lifted constants are plain tensor attributes
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype == torch.float32:
            setattr(gm, name, value.half())
    changed = 0
    graph = gm.graph
    to = torch.ops.aten.to.dtype
    for node in list(graph.nodes):
        val = node.meta.get("val")
        if node.op == "placeholder" and isinstance(val, torch.Tensor) and val.dtype == torch.float32:
            with graph.inserting_after(node):
                cast = graph.call_function(to, (node, torch.float16))
            node.replace_all_uses_with(cast, delete_user_cb=lambda user, c=cast: user is not c)
            continue
        if node.op == "output":
            def back(arg: Any, out: Any = node) -> Any:
                v = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
                if isinstance(v, torch.Tensor) and v.dtype == torch.float32:
                    with graph.inserting_before(out):
                        return graph.call_function(to, (arg, torch.float32))
                return arg

            node.args = torch.fx.node.map_aggregate(node.args, back)
            continue
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        for i, arg in enumerate(node.target._schema.arguments):
            if arg.name != "dtype":
                continue
            if arg.kwarg_only or i >= len(node.args):
                value = node.kwargs.get("dtype")
                if value is None and isinstance(val, torch.Tensor) and val.dtype == torch.float32:
                    value = torch.float32  # a factory that used the default dtype
                if value == torch.float32:
                    node.kwargs = {**node.kwargs, "dtype": torch.float16}
                    changed += 1
            elif node.args[i] == torch.float32:
                node.args = (*node.args[:i], torch.float16, *node.args[i + 1:])
                changed += 1
    gm.recompile()
    try:
        program = torch.export.export(gm, src.args, dynamic_shapes=src.dynamic_shapes, strict=False)
    except Exception as exc:  # noqa: BLE001 - the fp16 re-trace is ours; say what failed
        raise ConversionError(f"fp16: re-tracing the float16 program failed: {type(exc).__name__}: {exc}",
                              format="pte", ops=ops_in(str(exc))) from exc
    return program, changed


# --- lowering ------------------------------------------------------------------------------------------------------


def lower(program: Any, src: Source, *, fp16_conv_weights: bool = False) -> tuple[bytes, dict[str, Any]]:
    """``program`` → ``.pte`` bytes through XNNPACK, with :data:`METADATA_METHOD` describing the I/O; and the
    delegation record (:func:`delegation`). ``fp16_conv_weights``: see :func:`_conv_weights_as_stored`.

    A program with dynamic dims is lowered from a fresh re-trace, and its bounds are restored before memory planning
    (:func:`_restore_bounds`): XNNPACK's passes re-trace the graph, and torch's convolution backend selection (a
    heuristic that picks the output's memory format) guards on the batch size there, which *refines the symbol's
    range in the program's shape environment* — a conv model's batch bound went from 32 to 15, in the captured
    program too, which the other formats share."""
    import torch

    from mobilize._quiet import quiet_imports

    meta = json.dumps({IO_KEY: src.io()}, sort_keys=True, separators=(",", ":"))
    keep = _conv_weights_as_stored if fp16_conv_weights else contextlib.nullcontext
    want = _wanted_max(src)
    if want:
        program = torch.export.export(program.module(check_guards=False), src.args,
                                      dynamic_shapes=src.dynamic_shapes, strict=False)
    try:
        with keep():
            return _lower(program, meta, want)
    finally:
        quiet_imports()


def _restore_bounds(program: Any, want: dict[tuple[int, int], int]) -> None:
    """Set each dynamic input dim's upper bound back to ``want`` in ``program``'s shape environment where a pass
    narrowed it (the bound ExecuTorch's memory planning reads)."""
    from torch.utils._sympy.value_ranges import ValueRanges

    user = list(program.graph_signature.user_inputs)
    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    for (i, ax), hi in want.items():
        shape = getattr(vals.get(user[i]) if i < len(user) else None, "shape", ())
        d = shape[ax] if ax < len(shape) else None
        node = getattr(d, "node", None)
        env = getattr(node, "shape_env", None)
        sym = getattr(node, "expr", None)
        rng = env.var_to_range.get(sym) if env is not None else None
        if rng is not None and finite_bound(rng.upper) is not None and finite_bound(rng.upper) < hi:
            env.var_to_range[sym] = ValueRanges(rng.lower, hi)


@contextlib.contextmanager
def _conv_weights_as_stored() -> Iterator[None]:
    """ExecuTorch 1.5's XNNPACK convolution visitor serialises filters and biases as float32 whatever their dtype
    (``force_fp32=True``: XNNPACK then converts them when it packs the weights), so an fp16 CNN file kept float32 conv
    weights — a MobileNetV2 fp16 ``.pte`` was 1.94× its fp16 floor. For the duration of an fp16 lowering the visitor
    keeps each constant's own dtype, as ExecuTorch already does for linear layers; XNNPACK defines float16 filters
    natively (parity checks every file)."""
    from executorch.backends.xnnpack.operators import node_visitor

    cls = node_visitor._node_visitor_dict.get("aten.convolution.default")  # noqa: SLF001 - the visitor registry
    if cls is None:
        yield
        return
    original = cls.define_tensor

    def define_tensor(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["force_fp32"] = False
        return original(self, *args, **kwargs)

    cls.define_tensor = define_tensor
    try:
        yield
    finally:
        cls.define_tensor = original


def _lower(program: Any, meta: str, want: dict[tuple[int, int], int] | None = None) -> tuple[bytes, dict[str, Any]]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.utils.configs import (
        get_xnnpack_edge_compile_config,
        get_xnnpack_executorch_backend_config,
    )
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                           compile_config=get_xnnpack_edge_compile_config(),
                                           constant_methods={METADATA_METHOD: meta})
        record = delegation(edge.exported_program())
        if want:
            _restore_bounds(edge.exported_program(), want)
        et = edge.to_executorch(get_xnnpack_executorch_backend_config())
        record["input_max_shapes"] = _input_max_shapes(et.exported_program())
        missing = missing_kernels(et.executorch_program)
        if missing:
            raise ConversionError(
                f"the ExecuTorch runtime has no kernel for {', '.join(missing)} (the portable kernel library of the "
                "executorch package; XNNPACK does not take these ops): the method would fail to load", format="pte",
                ops=sorted({"aten." + m.split("::", 1)[1].split(".")[0] for m in missing if m.startswith("aten::")}))
        return bytes(et.buffer), record
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - ExecuTorch's failures become a ConversionError naming the ops
        raise ConversionError(f"ExecuTorch lowering failed: {type(exc).__name__}: {exc}", format="pte",
                              ops=ops_in(str(exc))) from exc


def missing_kernels(program: Any) -> list[str]:
    """Operators of the emitted program (``aten::cummax.out``) that ExecuTorch's runtime here has no kernel for —
    the method would not load (``Missing operator``)."""
    from executorch.runtime import Runtime

    have = Runtime.get().operator_registry.operator_names
    out = []
    for plan in program.execution_plan:
        for op in plan.operators:
            name = f"{op.name}.{op.overload}" if op.overload else op.name
            if name not in have and op.name not in have and name not in out:
                out.append(name)
    return out


def _input_max_shapes(program: Any) -> list[list[int]]:
    """The memory-planned (largest) shape of every user input of the final program."""
    user = set(program.graph_signature.user_inputs)
    out = []
    for n in program.graph.nodes:
        if n.op == "placeholder" and n.name in user:
            spec = n.meta.get("spec")
            out.append([int(s) for s in getattr(spec, "shape", ())] if spec is not None else [])
    return out


def _wanted_max(src: Source) -> dict[tuple[int, int], int]:
    return {(i, ax): src.bounds[d][1] for i, n in enumerate(src.input_names) for ax, d in src.dims.get(n, {}).items()
            if d in src.bounds}


def bound_notes(src: Source, record: dict[str, Any]) -> list[str]:
    """A note for every dynamic dim whose planned bound in the file differs from the one asked."""
    shapes = record.get("input_max_shapes") or []
    out = []
    for (i, ax), hi in _wanted_max(src).items():
        if i < len(shapes) and ax < len(shapes[i]) and shapes[i][ax] != hi:
            d = src.dims[src.input_names[i]][ax]
            out.append(f"{d} is at most {shapes[i][ax]} in the .pte, not {hi}: ExecuTorch's XNNPACK lowering narrowed "
                       "the bound it plans memory for")
    return out


def op_name(target: Any) -> str:
    """``aten.mean.dim`` for ATen / edge ops (edge ops print as ``<EdgeOpOverload: aten.mean.dim>: schema …``)."""
    text = str(target)
    m = re.match(r"<EdgeOpOverload: ([\w.]+)>", text)
    return m.group(1) if m else getattr(target, "__name__", text)


def delegation(edge_program: Any) -> dict[str, Any]:
    """Which ops of the lowered edge program run in XNNPACK and which on portable kernels (with their modules)."""
    import operator

    from mobilize.capture import module_of

    delegated = 0
    subgraphs = 0
    portable: dict[str, int] = {}
    modules: dict[str, list[str]] = {}
    for node in edge_program.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if "executorch_call_delegate" in str(node.target):
            lowered = getattr(edge_program.graph_module, str(node.args[0].target), None)
            inner = getattr(lowered, "original_module", None)
            subgraphs += 1
            if inner is not None:
                delegated += sum(1 for n in inner.graph.nodes
                                 if n.op == "call_function" and n.target is not operator.getitem)
            continue
        name = op_name(node.target)
        if name.endswith("sym_size.int"):  # shape bookkeeping, not compute
            continue
        portable[name] = portable.get(name, 0) + 1
        where = module_of(node)
        if where not in modules.setdefault(name, []):
            modules[name].append(where)
    total = delegated + sum(portable.values())
    return {"backend": "XnnpackBackend", "subgraphs": subgraphs, "delegated_ops": delegated,
            "portable_ops": dict(sorted(portable.items(), key=lambda kv: (-kv[1], kv[0]))),
            "portable_modules": {k: v[:5] for k, v in sorted(modules.items())},
            "delegated_share": round(delegated / total, 4) if total else None}


def describe_delegation(record: dict[str, Any]) -> str:
    n_port = sum(record["portable_ops"].values())
    total = record["delegated_ops"] + n_port
    head = (f"XNNPACK runs {record['delegated_ops']} of {total} ops ({(record['delegated_share'] or 0):.0%}) in "
            f"{record['subgraphs']} delegated subgraph(s)")
    if not n_port:
        return head + "; no op left on the portable CPU kernels"
    ops = ", ".join(f"{op} ×{n} ({', '.join(record['portable_modules'].get(op, [])[:2])})"
                    for op, n in list(record["portable_ops"].items())[:6])
    return f"{head}; portable CPU kernels run {n_port}: {ops}"


def ops_in(message: str) -> list[str]:
    """Operator names an ExecuTorch error mentions (``aten::foo``, ``aten.foo.default``)."""
    ops = re.findall(r"\baten::(\w+)", message) + re.findall(r"\baten\.(\w+)(?:\.\w+)?", message)
    return sorted({f"aten.{o}" for o in ops})


# --- finalize ------------------------------------------------------------------------------------------------------


def read_metadata(data: bytes) -> dict[str, Any]:
    """The JSON object :data:`METADATA_METHOD` returns, read from the program (no runtime); {} without one."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(data).program
    return _metadata_of(program)


def _metadata_of(program: Any) -> dict[str, Any]:
    plan = next((p for p in program.execution_plan if p.name == METADATA_METHOD), None)
    if plan is None or not plan.values:
        return {}
    val = getattr(plan.values[0].val, "string_val", None)
    try:
        return json.loads(val) if isinstance(val, str) else {}
    except ValueError:
        return {}


def finalize(path: Path, info) -> list[str]:  # noqa: ANN001 - mobilize.export.metadata.FileInfo
    """``info`` as the JSON object :data:`METADATA_METHOD` returns (the file's I/O description kept), written by
    re-serialising the program with the settings it was written with (the rest of the bytes stay as they are)."""
    from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary
    from executorch.exir.schema import Chain, ContainerMetadata, EValue, ExecutionPlan, String
    from executorch.extension.pytree import tree_flatten

    pte = deserialize_pte_binary(path.read_bytes())
    program = pte.program
    entry: dict[str, Any] = {k: (json.loads(v) if k in _JSON_KEYS else v) for k, v in info.entries().items()}
    old = _metadata_of(program)
    if IO_KEY in old:
        entry[IO_KEY] = old[IO_KEY]
    text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    _, spec = tree_flatten(text)
    plan = ExecutionPlan(name=METADATA_METHOD, values=[EValue(String(text))], inputs=[], outputs=[0],
                         chains=[Chain(inputs=[], outputs=[], instructions=[], stacktrace=None)], operators=[],
                         delegates=[], non_const_buffer_sizes=[0], container_meta_type=ContainerMetadata("",
                                                                                                        spec.to_str()))
    plans = [p for p in program.execution_plan if p.name != METADATA_METHOD]
    at = next((i for i, p in enumerate(program.execution_plan) if p.name == METADATA_METHOD), len(plans))
    plans.insert(at, plan)
    program.execution_plan = plans
    path.write_bytes(bytes(serialize_pte_binary(pte, extract_delegate_segments=True,
                                                segment_alignment=_SEGMENT_ALIGNMENT)))
    return []


_JSON_KEYS = ("mobilize.inputs", "mobilize.outputs", "labels", "normalization")
