"""The PyTorch side of ``mobilize diff``: every leaf module's output (forward hooks) and the captured graph's nodes.

Leaf modules (modules without children) are the rows of the report: a forward hook records each call's first
tensor output for every input sample, and which earlier leaf calls produced its inputs (the data flow that tells a
fused layer — a Conv2d feeding a BatchNorm2d — from a missing one). The captured graph (``torch.export``, as the
exporters use it, and its default decomposition, which Core ML converts) maps fx node names to the module that
called them (``nn_module_stack``): ONNX values and Core ML ops are named after those nodes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

#: tensor outputs of one module call that are compared (the first, plus h_n/c_n of recurrent layers and the like)
MAX_OUTPUTS = 4


@dataclasses.dataclass
class Leaf:
    order: int  # position in the execution order (one entry per call)
    path: str
    cls: str  # short class name
    qualname: str  # module.qualname of the class
    call: int  # k-th call of this module in one forward pass
    has_weight: bool  # owns a parameter with two or more dimensions (conv, linear, embedding…)
    outputs: list[np.ndarray]  # per sample: the call's first tensor output
    inputs_from: list[int]  # orders of the leaf calls whose outputs this call reads directly
    model_output: int | None = None  # position among the model's outputs when the call's output is one
    tensor_outputs: int = 1
    in_graph: bool = True  # the captured graph has at least one node for this module
    leaf: bool = True  # False: a container, or an op a container runs itself (a compare point, not a row to cover)
    node: str | None = None  # for an op a container runs itself: its fx node
    op: str | None = None
    pos: float = -1.0  # execution position (module exit order; between them for a container's own ops)
    of: int | None = None  # for a leaf's second, third… tensor output: the order of the leaf call itself
    reuses: bool = False  # a container whose output is its last child's (nothing of its own to compare)
    passthrough: bool = False  # the output is the input unchanged (Dropout/Identity at inference)
    constant: bool = False  # no node of the module depends on the model's inputs (converters fold it)

    @property
    def shape(self) -> list[int]:
        return list(self.outputs[0].shape) if self.outputs else []

    @property
    def label(self) -> str:
        return f"{self.path}{f'#{self.call}' if self.call else ''} ({self.cls})"


@dataclasses.dataclass
class TorchSide:
    leaves: list[Leaf]
    samples: int
    classes: dict[str, str]  # module path → qualified class name
    children: dict[str, dict[str, str]]  # module path → {attribute name: child path}
    node_modules: dict[str, str] = dataclasses.field(default_factory=dict)  # fx node name → module path
    notes: list[str] = dataclasses.field(default_factory=list)

    def leaf_paths(self) -> set[str]:
        return {leaf.path for leaf in self.leaves if leaf.leaf}


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def run(spec: Any, samples: Sequence[dict[str, np.ndarray]]) -> TorchSide:
    """Run ``spec.module`` on every sample with a forward hook on every module (leaves are the rows; containers'
    outputs are extra compare points, e.g. a residual block's sum)."""
    import torch

    from mobilize.source import flatten_outputs

    module = spec.module
    named = dict(module.named_modules())
    classes = {p: qualified(type(m)) for p, m in named.items()}
    children: dict[str, dict[str, str]] = {}
    for p, m in named.items():
        children[p] = {n: f"{p}.{n}" if p else n for n, _ in m.named_children()}
    is_leaf = {p: not any(True for _ in m.children()) for p, m in named.items()}
    hooked = {p: m for p, m in named.items() if p or len(named) == 1}
    produced: dict[int, int] = {}  # id(output tensor) → call position in the current pass
    keep: list[Any] = []
    records: list[list[tuple[str, Any, list[int], int]]] = []

    def hook(path: str) -> Any:
        def fn(_mod: Any, args: Any, output: Any) -> None:
            _, flat = flatten_outputs(output)
            tensors = [t for t in flat if isinstance(t, torch.Tensor)]
            if not tensors:
                return
            srcs: list[int] = []
            ins = _tensors_in(args)
            for a in ins:
                if id(a) in produced and produced[id(a)] not in srcs:
                    srcs.append(produced[id(a)])
            pos = len(records[-1])
            reused = id(tensors[0]) in produced  # a container returning its last child's output unchanged
            for t in tensors:
                produced.setdefault(id(t), pos)  # the innermost module that made it (containers exit later)
                keep.append(t)
            out0 = tensors[0]
            same = any(a is out0 or (a.shape == out0.shape and a.dtype == out0.dtype and torch.equal(a, out0))
                       for a in ins)
            extra = [t.detach().cpu().numpy().copy() for t in tensors[1:MAX_OUTPUTS]]
            records[-1].append((path, out0.detach().cpu().numpy().copy(), srcs, len(tensors), same, extra, reused))
        return fn

    handles = [m.register_forward_hook(hook(p)) for p, m in hooked.items()]
    model_outs: list[list[int | None]] = []
    try:
        for s in samples:
            records.append([])
            produced.clear()
            keep.clear()
            args = tuple(torch.from_numpy(np.ascontiguousarray(s[n])) for n in spec.input_names)
            with torch.no_grad():
                _, flat = flatten_outputs(module(*args))
            model_outs.append([produced.get(id(t)) for t in flat])
    finally:
        for h in handles:
            h.remove()
        keep.clear()
    first = records[0] if records else []
    usable = [i for i, r in enumerate(records) if [x[0] for x in r] == [x[0] for x in first]]
    leaves: list[Leaf] = []
    count: dict[str, int] = {}
    extras: list[Leaf] = []
    for pos, (path, _val, srcs, n_out, _same, extra, reused) in enumerate(first):
        m = hooked[path]
        k = count.get(path, 0)
        count[path] = k + 1
        has_weight = any(p.dim() >= 2 for p in m.parameters(recurse=False))
        outs = [records[i][pos][1] for i in usable]
        mo = next((j for j, c in enumerate(model_outs[0]) if c == pos), None) if model_outs else None
        same = all(records[i][pos][4] for i in usable)
        leaves.append(Leaf(pos, path, type(m).__name__, qualified(type(m)), k, has_weight, outs, srcs, mo, n_out,
                           leaf=is_leaf[path], passthrough=same, pos=float(pos), reuses=reused and not is_leaf[path]))
        for j in range(len(extra)) if is_leaf[path] else ():  # h_n of a GRU, (h, c) of an LSTM…
            vals = [records[i][pos][5][j] for i in usable]
            extras.append(Leaf(-1, path, type(m).__name__, qualified(type(m)), k, False, vals, srcs, leaf=False,
                               op=f"output {j + 1}", pos=pos + 0.25, of=pos))
    for e in extras:
        e.order = len(leaves)
        leaves.append(e)
    side = TorchSide(leaves, len(usable), classes, children)
    if len(usable) < len(records):
        side.notes.append(f"{len(records) - len(usable)} sample(s) took a different path through the model's "
                          "modules and were left out")
    side.usable = usable  # type: ignore[attr-defined]
    return side


def _tensors_in(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, list | tuple):
        return [t for o in obj for t in _tensors_in(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors_in(o)]
    return []


def clean_path(path: str) -> str:
    """``L['self'].layers[0].fc`` (strict export) → ``layers.0.fc``; dotted paths pass through."""
    if "L[" not in path and "[" not in path:
        return path
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r".\1", path)
    return path.strip(".")


def node_modules(program: Any) -> dict[str, str]:
    """fx node name → path of the innermost module that called it ('' for the root)."""
    out: dict[str, str] = {}
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if node.op == "call_function" and stack:
            out[node.name] = clean_path(list(stack.values())[-1][0])
    return out


def input_dependent(program: Any) -> set[str]:
    """Names of the nodes whose value depends on a user input (the rest is constant: converters fold it)."""
    try:
        user = set(program.graph_signature.user_inputs)
    except AttributeError:
        user = {n.name for n in program.graph.nodes if n.op == "placeholder"}
    dyn: set[str] = set()
    for node in program.graph.nodes:
        if node.op == "placeholder":
            if node.name in user:
                dyn.add(node.name)
        elif any(a.name in dyn for a in node.all_input_nodes):
            dyn.add(node.name)
    return dyn


#: ops that only move data: no row of their own (their error is their input's)
_MOVES = {"view", "reshape", "_unsafe_view", "permute", "transpose", "t", "select", "slice", "unsqueeze", "squeeze",
          "expand", "clone", "contiguous", "to", "_to_copy", "alias", "detach", "flatten", "getitem", "split",
          "split_with_sizes", "chunk", "unbind", "_assert_tensor_metadata", "lift_fresh_copy", "arange", "full",
          "zeros", "ones", "empty", "scalar_tensor", "sym_size"}


def _op_name(node: Any) -> str:
    return str(node.target).replace("aten.", "").split(".")[0]


def add_graph(side: TorchSide, spec: Any, samples: Sequence[dict[str, np.ndarray]], *, decomposed: bool) -> None:
    """Read the captured program (and its default decomposition when ``decomposed``: Core ML converts that): node
    name → module (``side.node_modules``), leaves with no node (no-op) or no input-dependent node (folded), and the
    values of the functional ops that containers compute themselves (a residual sum, attention scores) as extra
    compare points (``side.fn_nodes`` / ``side.fn_dnodes``: node name → pseudo-leaf order)."""
    from mobilize._quiet import captured_output
    from mobilize.capture import capture
    from mobilize.errors import describe

    try:
        with captured_output():
            cap = capture(spec)
            program = cap.program
            nodes = node_modules(program)
            dynamic = {nodes[n] for n in input_dependent(program) if n in nodes}
            dprogram = program.run_decompositions() if decomposed else None
    except Exception as exc:  # noqa: BLE001 - names from the graph are a hint; matching still has other evidence
        side.notes.append(f"could not capture the model to read its graph's node names ({describe(exc, 200)})")
        return
    side.node_modules = {**nodes, **(node_modules(dprogram) if dprogram is not None else {})}
    present = set(nodes.values())
    for leaf in side.leaves:
        leaf.in_graph = leaf.path in present or any(p.startswith(leaf.path + ".") for p in present)
        leaf.constant = leaf.leaf and leaf.path in present and leaf.path not in dynamic
    side.node_users = {n.name: [u.name for u in n.users] for n in program.graph.nodes}  # type: ignore[attr-defined]
    side.param_modules = {}  # type: ignore[attr-defined]
    for prog in (program, dprogram):
        sig = getattr(prog, "graph_signature", None)
        for name, fqn in {**getattr(sig, "inputs_to_parameters", {}), **getattr(sig, "inputs_to_buffers", {})}.items():
            owner = fqn.rsplit(".", 1)[0] if "." in fqn else ""
            side.param_modules[name] = side.param_modules[fqn] = owner  # type: ignore[attr-defined]
    side.leaf_out = _leaf_outputs(program, side)  # type: ignore[attr-defined]
    try:
        side.fn_nodes = _functional(side, program, spec, samples)  # type: ignore[attr-defined]
        side.fn_dnodes = _functional(side, dprogram, spec, samples) if dprogram is not None \
            else {}  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - the functional compare points are extra; leaves still compare
        side.notes.append(f"could not run the captured graph for its functional ops ({describe(exc, 200)})")
        side.fn_nodes, side.fn_dnodes = {}, {}  # type: ignore[attr-defined]


def _leaf_outputs(program: Any, side: TorchSide) -> dict[str, str]:
    """Leaf module path → the node that carries its output (its last node used outside it; single-call leaves)."""
    scope = node_modules(program)
    out: dict[str, str] = {}
    for node in program.graph.nodes:
        p = scope.get(node.name)
        if p is None or p not in side.leaf_paths():
            continue
        if any(scope.get(u.name) != p for u in node.users) or not node.users:
            out[p] = node.name
    return out


def _functional(side: TorchSide, program: Any, spec: Any, samples: Sequence[dict[str, np.ndarray]]) -> dict[str, int]:
    """Pseudo-leaves (``leaf=False``) for the compute nodes that a container or the root runs itself, with their
    values on every sample; returns node name → order."""
    import torch

    scope = node_modules(program)
    leaf_paths = side.leaf_paths()
    first: dict[str, int] = {}
    for leaf in side.leaves:
        first.setdefault(leaf.path, leaf.order)
    wanted: dict[str, Any] = {}
    pos: dict[str, float] = {}
    for node in program.graph.nodes:
        p = scope.get(node.name)
        base = max((pos.get(a.name, -0.5) for a in node.all_input_nodes), default=-0.5)
        if p is not None and p in leaf_paths:
            pos[node.name] = float(first.get(p, base))
            continue
        pos[node.name] = base
        val = node.meta.get("val")
        if node.op != "call_function" or p is None or _op_name(node) in _MOVES or not isinstance(val, torch.Tensor) \
                or not val.is_floating_point():
            continue
        wanted[node.name] = node
        pos[node.name] = base + 0.5
    if not wanted:
        return {}
    values = _node_values(program, spec, samples, set(wanted))
    out: dict[str, int] = {}
    for name, node in wanted.items():
        if name not in values or len(values[name]) != len(samples):
            continue
        p = scope[name]
        cls = side.classes.get(p, "")
        order = len(side.leaves)
        side.leaves.append(Leaf(order, p, cls.rsplit(".", 1)[-1], cls, 0, False, values[name], [], leaf=False,
                                node=name, op=_op_name(node), pos=pos[name]))
        out[name] = order
    return out


def _node_values(program: Any, spec: Any, samples: Sequence[dict[str, np.ndarray]], names: set[str]
                 ) -> dict[str, list[np.ndarray]]:
    """Run the program's graph node by node on every sample and keep the values of ``names``."""
    import torch

    gm = program.module()
    found: dict[str, list[np.ndarray]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if n.name in names and isinstance(out, torch.Tensor):
                found.setdefault(n.name, []).append(out.detach().cpu().numpy().copy())
            return out

    for s in samples:
        args = [torch.from_numpy(np.ascontiguousarray(s[n])) for n in spec.input_names]
        with torch.no_grad():
            Recorder(gm).run(*args)
    return found
