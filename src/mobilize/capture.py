"""Capture once: turn a ModelSpec into one ``torch.export.ExportedProgram`` that feeds every converter.

Strategies are tried in order; each returns a :class:`Attempt` instead of raising, so the manifest can say which
one won and why the others failed (the torch.onnx exporter's pattern)::

    non-strict  →  strict  →  non-strict on a deep copy with dynamic dims dropped (static shapes)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mobilize.errors import CaptureError, describe
from mobilize.spec import ModelSpec


@dataclasses.dataclass
class Attempt:
    strategy: str
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "ok": self.ok, "error": self.error}


@dataclasses.dataclass
class Capture:
    """The winning program plus the record of every attempt."""

    program: Any  # torch.export.ExportedProgram
    strategy: str
    attempts: list[Attempt]
    dynamic: bool  # whether the program kept any of the spec's dynamic dims
    #: the inputs the program was captured with (dynamic size-1 axes enlarged, see capture_inputs); converters
    #: that re-trace use these
    example_inputs: tuple[Any, ...] | None = None
    #: per requested dynamic dim: kept dynamic?, symbol, bounds (see dim_report)
    dims: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    _graph: dict[str, Any] | None = dataclasses.field(default=None, repr=False)

    @property
    def graph(self) -> dict[str, Any]:
        """:func:`graph_stats` of the program (computed once)."""
        if self._graph is None:
            self._graph = graph_stats(self.program)
        return self._graph

    def to_dict(self) -> dict[str, Any]:
        d = {"strategy": self.strategy, "dynamic": self.dynamic, "attempts": [a.to_dict() for a in self.attempts],
             "graph": self.graph}
        if self.dims:
            d["dims"] = self.dims
        return d


#: ATen ops (name before the overload) that a format may run natively or lower into many small ops; the fitness
#: judgement compares them with what each file kept (mobilize.analysis ``kinds``)
OP_KINDS: dict[str, tuple[str, ...]] = {
    "recurrent": ("lstm", "gru", "rnn_tanh", "rnn_relu"),
    "prelu": ("prelu", "_prelu_kernel"),
}


def graph_stats(program: Any) -> dict[str, Any]:
    """The captured graph's op count and histogram (before any decomposition) and, per op kind of :data:`OP_KINDS`,
    the PyTorch modules that call it (``{"recurrent": ["rnn (LSTM)"]}``)."""
    import operator

    hist: dict[str, int] = {}
    kinds: dict[str, list[str]] = {}
    for node in program.graph.nodes if program is not None else ():
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        name = str(node.target).replace("aten.", "", 1)
        hist[name] = hist.get(name, 0) + 1
        base = name.split(".")[0]
        for kind, ops in OP_KINDS.items():
            if base in ops:
                where = module_of(node)
                if where not in kinds.setdefault(kind, []):
                    kinds[kind].append(where)
    return {"op_count": sum(hist.values()), "ops": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
            "kinds": kinds}


def module_of(node: Any) -> str:
    """``path (Class)`` of the innermost PyTorch module a captured node came from, ``(root)`` when unknown."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "(root)"
    path, cls = list(stack.values())[-1]
    cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
    return f"{path or '(root)'} ({cls_name.rsplit('.', 1)[-1]})"


def floor_bytes(program: Any) -> dict[str, int]:
    """The parameter floor per precision: what the captured program's stored tensors (parameters, buffers, lifted
    constants; each storage once) need at that precision. Float tensors with two or more non-trivial dims are
    weights (4 / 2 / 1 / 0.5 bytes per value at fp32 / fp16 / int8 / int4); other float tensors (biases, norm
    scales) stay float in quantized files (4 bytes); integer tensors keep their width (at most 4 bytes: the mobile
    formats store int64 as int32)."""
    seen: set[tuple[int, int]] = set()
    totals = {"fp32": 0.0, "fp16": 0.0, "int8": 0.0, "int4": 0.0}
    if program is None:
        return {}
    tensors = list(program.state_dict.values()) + list(getattr(program, "constants", {}).values())
    for t in tensors:
        if not hasattr(t, "numel"):
            continue
        try:
            key = (t.untyped_storage().data_ptr(), t.storage_offset())
        except (RuntimeError, AttributeError):  # fake / meta tensors have no storage
            key = (id(t), 0)
        if key in seen:
            continue
        seen.add(key)
        n = t.numel()
        if not t.is_floating_point():
            width = min(t.element_size(), 4)
            for k in totals:
                totals[k] += n * width
            continue
        matrix = sum(1 for d in t.shape if d > 1) >= 2
        totals["fp32"] += 4 * n
        totals["fp16"] += 2 * n
        totals["int8"] += (1 if matrix else 4) * n
        totals["int4"] += (0.5 if matrix else 4) * n
    by_precision = {"fp32": totals["fp32"], "fp16": totals["fp16"], "int8-weights": totals["int8"],
                    "int8": totals["int8"], "int4-weights": totals["int4"]}
    return {k: int(round(v)) for k, v in by_precision.items()}


def dynamic_shapes_for(spec: ModelSpec, *, auto: bool = False) -> tuple[Any, ...] | None:
    """``spec.dynamic_dims`` as torch.export ``dynamic_shapes``: one named ``torch.export.Dim`` per distinct name
    with the spec's bounds (``auto``: ``Dim.AUTO`` hints instead, which let torch.export keep what it can and
    specialise the rest instead of failing)."""
    if not spec.dynamic_dims:
        return None
    import torch

    dims: dict[str, Any] = {}
    out = []
    for name, t in zip(spec.input_names, spec.example_inputs):
        axes = spec.dynamic_dims.get(name, {})
        entry = {}
        for ax, dname in axes.items():
            lo, hi = spec.dynamic_bounds.get(dname, (1, None))
            if dname not in dims:
                dims[dname] = (torch.export.Dim.AUTO(min=lo, max=hi) if auto else
                               torch.export.Dim(dim_ident(dname), min=lo, max=hi))
            entry[ax % t.dim()] = dims[dname]
        out.append(entry or None)
    return tuple(out)


def finite_bound(bound: Any) -> int | None:
    """A sympy/torch bound as an int, None for ±infinity (torch's ``int_oo``)."""
    try:
        value = int(bound)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    return value if abs(value) < 2**62 else None


def dim_ident(name: str) -> str:
    """A dynamic dim's name as a Python identifier (what ``torch.export.Dim`` requires)."""
    ident = "".join(c if c.isalnum() else "_" for c in str(name))
    return ident if ident and not ident[0].isdigit() else f"d_{ident}"


def capture_inputs(spec: ModelSpec) -> tuple[Any, ...]:
    """The example inputs to capture with: a dynamic axis whose example size is 1 is repeated to 2 (or to its
    minimum), because torch.export specialises size-1 dimensions ("0/1 specialisation") — a batch-1 example would
    otherwise give static files whatever ``dynamic_dims`` says."""
    out = []
    for name, t in zip(spec.input_names, spec.example_inputs):
        for ax, dname in (spec.dynamic_dims or {}).get(name, {}).items():
            lo, hi = spec.dynamic_bounds.get(dname, (1, None))
            size = t.shape[ax]
            want = max(2, lo)
            if size < 2 and (hi is None or want <= hi):
                reps = [1] * t.dim()
                reps[ax] = want
                t = t.repeat(*reps)
        out.append(t)
    return tuple(out)


def _specialised_enlarged(dims: dict[str, dict[str, Any]], spec: ModelSpec) -> bool:
    """Whether a dim that :func:`capture_inputs` enlarged came out static (fixed at the enlarged size)."""
    for d in dims.values():
        if d["dynamic"]:
            continue
        for where in d["axes"]:
            name, _, ax = where.rpartition(":")
            if int(spec.example_inputs[list(spec.input_names).index(name)].shape[int(ax)]) < 2:
                return True
    return False


def dim_report(program: Any, spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """Per requested dynamic dim name: whether the captured program kept it dynamic, its symbol there (``s77``:
    the name converters see) and the bounds torch.export proved."""
    if not spec.dynamic_dims or program is None:
        return {}
    import torch

    user = list(program.graph_signature.user_inputs)
    shapes = {n.name: n.meta.get("val").shape for n in program.graph.nodes
              if n.op == "placeholder" and n.name in user and hasattr(n.meta.get("val"), "shape")}
    report: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(spec.input_names):
        shape = shapes.get(user[i]) if i < len(user) else None
        for ax, dname in spec.dynamic_dims.get(name, {}).items():
            entry = report.setdefault(dname, {"dynamic": True, "symbol": None, "min": None, "max": None,
                                              "axes": []})
            entry["axes"].append(f"{name}:{ax}")
            d = shape[ax] if shape is not None and ax < len(shape) else None
            if not isinstance(d, torch.SymInt) or not getattr(d.node.expr, "free_symbols", None):
                entry["dynamic"] = False
                continue
            entry["symbol"] = str(d)
            rng = program.range_constraints.get(d.node.expr)
            if rng is not None:
                entry["min"] = finite_bound(rng.lower)
                entry["max"] = finite_bound(rng.upper)
    return report


def capture(spec: ModelSpec) -> Capture:
    """Run the strategy chain; raise :class:`CaptureError` listing every strategy's reason if all fail."""
    import torch

    if spec.exported_program is not None:
        return Capture(spec.exported_program, "torch.export.load (.pt2)", [Attempt("torch.export.load (.pt2)", True)],
                       False)
    spec.module.eval()
    dyn = dynamic_shapes_for(spec)
    inputs = capture_inputs(spec) if dyn is not None else spec.example_inputs
    strategies: list[tuple[str, dict[str, Any], tuple[Any, ...]]] = [
        ("torch.export(strict=False)", {"strict": False, "dynamic_shapes": dyn}, inputs),
        ("torch.export(strict=True)", {"strict": True, "dynamic_shapes": dyn}, inputs),
    ]
    if dyn is not None:
        auto = dynamic_shapes_for(spec, auto=True)
        strategies += [("torch.export(strict=False, Dim.AUTO: keep what can stay dynamic)",
                        {"strict": False, "dynamic_shapes": auto}, inputs)]
        if inputs is not spec.example_inputs:
            strategies += [("torch.export(strict=False, Dim.AUTO, the example's own sizes)",
                            {"strict": False, "dynamic_shapes": auto}, spec.example_inputs)]
        strategies += [("torch.export(strict=False, static shapes)", {"strict": False, "dynamic_shapes": None},
                        spec.example_inputs)]
    attempts: list[Attempt] = []
    for name, kwargs, args in strategies:
        try:
            with torch.no_grad():
                program = torch.export.export(spec.module, args, **kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure (sys.exit() in forward too) is recorded
            attempts.append(Attempt(name, False, describe(exc)))
            continue
        dims = dim_report(program, spec)
        if args is not spec.example_inputs and _specialised_enlarged(dims, spec):
            attempts.append(Attempt(name, False, "it fixed a dim at the enlarged capture size, which the example "
                                                 "does not have"))
            continue
        attempts.append(Attempt(name, True))
        return Capture(program, name, attempts, any(d["dynamic"] for d in dims.values()), example_inputs=args,
                       dims=dims)
    reasons = "; ".join(f"{a.strategy}: {a.error}" for a in attempts)
    raise CaptureError(f"could not capture the model with torch.export ({reasons})")
