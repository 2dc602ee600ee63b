"""Match PyTorch modules to a file's tensors: by the provenance the converter kept, then by shape and order.

1. **Provenance.** Each file tensor resolves to module paths (:class:`Resolver`): ONNX ``name_scopes`` (or, in a
   quantized file that lost them, the fp32 sibling's metadata for the same value name, or the captured graph's node
   of that name), TFLite name locations (a fused op lists every module it absorbed), Core ML op names (fx nodes of
   the decomposed graph). A module call is matched to the last tensor that carries its name and leaves it (read by
   another module or a graph output) with a compatible shape.
2. **Model outputs.** A module whose output is a model output is matched to that graph output.
3. **Fused.** A module named in a fused op's name, or whose only reader is in a matched layer while nothing in the
   file carries its own output (ONNX/Core ML fold a BatchNorm into the Conv before it), joins that layer's group: the
   group is compared at its last module's output and named after the module that owns the weights.
4. **Shape and order.** A module still unmatched takes the first unclaimed tensor of a compatible shape between its
   matched neighbours, unless that tensor's provenance names another module.

Whatever stays unmatched gets a reason (no op at inference, decomposed, renamed or removed) — never dropped.
Shapes are compatible when equal, a permutation (TFLite computes NHWC), or the same size (a reshape).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from mobilize.diff.graph import TRANSPARENT, Graph, Tensor
from mobilize.diff.torch_side import Leaf, TorchSide, clean_path

_FP_SUFFIX = re.compile(r"(_cast_fp(16|32)|_to_fp(16|32))+$")


@dataclasses.dataclass
class Transform:
    """PyTorch layout → file layout: transpose by ``perm`` (None: none), then reshape to ``shape``."""

    perm: list[int] | None
    shape: list[int]
    scale: float = 1.0  # the file holds the output × scale (a constant the converter folded into the op)

    def to_file(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if self.perm is not None:
            x = x.transpose(self.perm)
        x = x.reshape(self.shape)
        return x * np.asarray(self.scale, dtype=x.dtype) if self.scale != 1.0 else x

    def to_torch(self, y: np.ndarray, pshape: list[int]) -> np.ndarray:
        """File layout → PyTorch layout (the inverse of :meth:`to_file`)."""
        y = np.asarray(y)
        if self.scale != 1.0:
            y = y / np.asarray(self.scale, dtype=y.dtype if y.dtype.kind == "f" else np.float32)
        if self.perm is None:
            return y.reshape(pshape)
        return y.reshape([pshape[i] for i in self.perm]).transpose(np.argsort(self.perm))

    def describe(self) -> str:
        if self.perm is not None:
            return f"transposed {tuple(self.perm)}"
        return "" if self.perm is None and not self.shape else "reshaped"


def transforms(pshape: list[int], fshape: list[int] | None) -> list[Transform]:
    """Every plausible way a PyTorch tensor of ``pshape`` is laid out as ``fshape``: identity, channels-last (TFLite
    computes NHWC) and back, other permutations only when none of those fit, and adding or dropping unit dims.
    Equal dims (C == H == W) leave several candidates; :func:`mobilize.diff.analyze` picks by the values."""
    if fshape is None:
        return []
    p, f = list(pshape), list(fshape)
    if int(np.prod(p or [1])) != int(np.prod(f or [1])):
        return []
    out: list[Transform] = []
    n = len(p)
    if n == len(f):
        ident = list(range(n))
        preferred = [ident]
        if n >= 3:
            preferred += [[0, *range(2, n), 1], [0, n - 1, *range(1, n - 1)]]
        fits = [q for q in preferred if [p[i] for i in q] == f]
        if not fits and sorted(p) == sorted(f) and n <= 6:
            fits = [list(q) for q in itertools.permutations(range(n)) if [p[i] for i in q] == f]
        out = [Transform(None if q == ident else q, f) for q in fits]
    if not any(t.perm is None for t in out) and [d for d in p if d != 1] == [d for d in f if d != 1]:
        out.insert(0, Transform(None, f))  # only unit dims differ: a plain reshape keeps the element order
    # any other reshape of the same size ((B, H, S, D) vs (B, S, H·D), k vs kᵀ) would compare scrambled elements
    return out


class Resolver:
    """File tensor → PyTorch module paths (primary first) from the provenance each format keeps."""

    def __init__(self, side: TorchSide, fmt: str, sibling_scopes: dict[str, list[str]] | None = None) -> None:
        self.side = side
        self.fmt = fmt
        self.paths = set(side.classes)
        self.sibling = sibling_scopes or {}
        self._walk_cache: dict[str, str | None] = {}

    def modules(self, t: Tensor) -> list[str]:
        if self.fmt == "tflite":
            found = [p for p in (self.walk(loc) for loc in t.scopes) if p is not None]
            if not found:  # an output named by the signature: the op's weights carry the scope
                from mobilize.diff.tflite import locations

                found = [p for w in t.weights for p in (self.walk(loc) for loc in locations(w)) if p is not None]
            return self._primary_first(list(dict.fromkeys(found)))
        names = self.names(t)
        scopes = t.scopes or next((self.sibling[n] for n in names if n in self.sibling), [])
        for s in scopes:
            p = clean_path(s)
            if p in self.paths:
                return [p]
        for name in names:
            if name in self.side.node_modules:
                return [self.side.node_modules[name]]
        owner = self.weight_owner(t)
        return [owner] if owner is not None else []

    def weight_owner(self, t: Tensor) -> str | None:
        """The module whose parameter the op reads, from the constant's name: ONNX initializers keep the state-dict
        key (``fc1.weight``, ``fc1.weight_quantized``), Core ML constants the program's placeholder
        (``p_fc1_weight``)."""
        from mobilize.diff.onnx import base_name

        params: dict[str, str] = getattr(self.side, "param_modules", {})
        for w in t.weights:  # a weight the converter computed from a parameter is named after that fx node
            name = _FP_SUFFIX.sub("", w)
            if name in self.side.node_modules and name not in params:
                return self.side.node_modules[name]
        for w in t.weights:
            for name in dict.fromkeys((w, base_name(w), _FP_SUFFIX.sub("", w), re.sub(r"_(bias|scale|zero_point)$",
                                                                                      "", base_name(w)))):
                if name in params:
                    return params[name]
            hits = [k for k in params if "." in k and w.startswith(k)]
            if hits:
                return params[max(hits, key=len)]
        return None

    def names(self, t: Tensor) -> list[str]:
        """The fx node names a tensor may carry: its recorded node, its own name, and that name without the suffixes
        converters and quantizers append (``_cast_fp16``, ``_quantized``)."""
        from mobilize.diff.onnx import base_name

        out = [t.node, t.name, _FP_SUFFIX.sub("", t.name), base_name(t.name)]
        return list(dict.fromkeys(n for n in out if n))

    def _primary_first(self, paths: list[str]) -> list[str]:
        """A fused op names every module it absorbed, in no reliable order: its output is the output of the leaf
        that runs last (ReLU6 of Conv+BN+ReLU6); without leaves, the deepest scope."""
        if len(paths) <= 1:
            return paths
        order = self._first_order()
        leaves = [p for p in paths if p in order]
        first = paths[0]
        if first not in order and any(_inside(p, first) for p in leaves):
            prim = first  # a container's own op that absorbed a child's tail (Linear bias + residual add)
        elif leaves:
            prim = max(leaves, key=lambda p: order[p])
        else:
            prim = max(paths, key=lambda p: (p.count(".") + bool(p), len(p)))
        return [prim, *(p for p in paths if p != prim)]

    def _first_order(self) -> dict[str, int]:
        if not hasattr(self, "_order"):
            self._order: dict[str, int] = {}
            for leaf in self.side.leaves:
                if leaf.leaf:
                    self._order.setdefault(leaf.path, leaf.order)
        return self._order

    def walk(self, loc: str) -> str | None:
        """A TFLite location ``<root class>/<class>_<attr>/…`` → the deepest module path it names. Containers that
        are never called (``ModuleList``, ``ModuleDict``) leave no scope of their own, so a step may skip them."""
        if loc in self._walk_cache:
            return self._walk_cache[loc]
        comps = loc.split("/")
        root_cls = self.side.classes.get("", "")
        result: str | None = None
        if comps and (comps[0] == root_cls or root_cls.endswith("." + comps[0].rsplit(".", 1)[-1])):
            cur = ""
            for comp in comps[1:]:
                nxt = self._step(cur, comp)
                if nxt is None:
                    break
                cur = nxt
            result = cur
        self._walk_cache[loc] = result
        return result

    def _step(self, cur: str, comp: str, depth: int = 0) -> str | None:
        kids = self.side.children.get(cur, {})
        for attr, child in kids.items():
            q = self.side.classes.get(child, "")
            if comp == f"{q}_{attr}" or comp.endswith(f"{q.rsplit('.', 1)[-1]}_{attr}"):
                return child
        if depth < 2:
            for child in kids.values():
                if self.side.classes.get(child, "").rsplit(".", 1)[-1] in _UNCALLED:
                    found = self._step(child, comp, depth + 1)
                    if found is not None:
                        return found
        return None


_UNCALLED = {"ModuleList", "ModuleDict", "ParameterList", "ParameterDict"}


@dataclasses.dataclass
class Layer:
    """A compare point: a file tensor matched to a module call, plus the calls fused into it."""

    primary: int  # order of the call whose output is compared
    source: int  # tensor that carries the match (the op's own output)
    tensor: int  # visible tensor: ``source`` after the re-encoding ops that follow it
    by: str  # provenance | output | shape+order
    transforms: list[Transform]
    group: list[int] = dataclasses.field(default_factory=list)  # call orders, execution order, primary included
    chain: list[int] = dataclasses.field(default_factory=list)  # tensors from source to visible
    transform: Transform | None = None  # chosen after the values are known

    def owner(self, side: TorchSide) -> int:
        """The call named in reports: the first group member that owns a weight, else the compared one."""
        for o in self.group:
            if side.leaves[o].has_weight:
                return o
        return self.primary


@dataclasses.dataclass
class Matching:
    layers: list[Layer]
    unmatched: list[dict[str, Any]]  # {"order", "status", "why"}
    modules: dict[int, list[str]]  # tensor index → resolved module paths
    fused_into: dict[int, int]  # call order → primary of the layer it is fused into



def match(side: TorchSide, graph: Graph, resolver: Resolver, exclude: frozenset[str] = frozenset(),
          upstream: Callable[[Layer, Leaf], bool] | None = None,
          closer: Callable[[int, int, int], bool] | None = None) -> Matching:
    """``exclude``: leaf paths whose named tensors were shown not to hold their output (see analyze).
    ``upstream(layer, leaf)``: whether an unmatched weightless leaf right after ``layer``'s module is what that
    layer's tensor holds (a ReLU folded into a quantized output's range) — a choice between two places the leaf
    can only be, made by the values. ``closer(tensor, a, b)``: whether the tensor's values fit call ``a``'s output
    better than call ``b``'s (the same kind of choice)."""
    cons = graph.consumers()
    tensors = graph.tensors
    mods = {t.index: resolver.modules(t) for t in tensors if t.op != "input"}
    leaf_paths = side.leaf_paths()
    for t in sorted(tensors, key=lambda t: (t.step, t.index)):  # ops a converter made up inherit what they read
        if t.op != "input" and not mods.get(t.index):
            prims = {mods[i][0] for i in t.inputs if mods.get(i)}
            if len(prims) == 1 and next(iter(prims)) not in leaf_paths:  # never extend a leaf past its output
                mods[t.index] = [prims.pop()]
    calls_of: dict[str, list[Leaf]] = {}
    for leaf in side.leaves:
        if leaf.node is None and leaf.of is None:
            calls_of.setdefault(leaf.path, []).append(leaf)
    cand: dict[str, list[int]] = {}
    for idx, ms in mods.items():
        if ms and tensors[idx].op not in TRANSPARENT:
            cand.setdefault(ms[0], []).append(idx)
    claimed: set[int] = set()
    layers: list[Layer] = []
    matched: set[int] = set()

    def chain(idx: int) -> list[int]:
        out = [idx]
        while True:
            v = graph.visible(out[-1], cons)
            if v == out[-1]:
                return out
            out.append(v)

    def add(leaf: Leaf, idx: int, by: str) -> Layer | None:
        ch = chain(idx)
        vis = tensors[ch[-1]]
        ts = transforms(leaf.shape, vis.shape)
        if not ts or any(c in claimed for c in ch):
            return None
        if _encoded(vis) and leaf.outputs and np.asarray(leaf.outputs[0]).dtype.kind == "f":
            return None  # integers without a grid to read them back (DynamicQuantizeLinear, ConvInteger output)
        layer = Layer(leaf.order, idx, ch[-1], by, ts, [leaf.order], ch)
        layers.append(layer)
        claimed.update(ch)
        matched.add(leaf.order)
        return layer

    def _preferred(call: Leaf, ex: list[int], named: list[int]) -> list[int]:
        """A module's tensors in the order to try: those that leave it (read by another module, or a graph output),
        then the others; the last in execution order first within each (a decomposed module's output comes last)."""
        def fits(i: int) -> bool:
            return bool(transforms(call.shape, tensors[graph.visible(i, cons)].shape))

        rest = sorted((i for i in named if i not in ex), key=lambda i: (tensors[i].step, i))
        return [i for tier in (ex, rest) for i in reversed(tier) if fits(i)]

    def exits(path: str, idxs: list[int]) -> list[int]:
        out = []
        for i in idxs:
            v = graph.visible(i, cons)
            users = cons.get(v, [])
            if tensors[v].output is not None or not users or any(_outside((mods.get(u) or [None])[0], path)
                                                                  for u in users):
                out.append(i)
        return sorted(out, key=lambda i: (tensors[i].step, i))

    # 0. model outputs: the graph output is the module's output, whatever the file calls it
    for leaf in side.leaves:
        if leaf.order in matched or leaf.model_output is None:
            continue
        out = next((t for t in tensors if t.output == leaf.model_output and t.op != "input"), None)
        if out is not None and out.index not in claimed:
            src = out.index
            while tensors[src].op in TRANSPARENT and tensors[src].inputs:  # back to the op that computed it
                src = tensors[src].inputs[0]
            add(leaf, src if src not in claimed else out.index, "output")
    fn_nodes = getattr(side, "fn_dnodes", {}) if resolver.fmt == "coreml" else getattr(side, "fn_nodes", {})
    # 0b. a TFLite op named after a container and a child of it is either the container's own op that absorbed the
    # child's tail (``x + self.out(y)`` with the Linear's bias folded into the sum: compared at the fx node in the
    # container that reads the child's output) or the child's op itself (a Linear whose output a reshape in the
    # container reads). The values choose between the two; without such a node it is the child's.
    leaf_out = getattr(side, "leaf_out", {})
    users = getattr(side, "node_users", {})
    for t in tensors:
        ms = mods.get(t.index) or []
        kids = [p for p in ms[1:] if p in leaf_paths and _inside(p, ms[0])] if ms and ms[0] not in leaf_paths else []
        if not kids:
            continue
        hit = None
        for p in kids:
            nodes = [u for u in users.get(leaf_out.get(p, ""), []) if u in fn_nodes
                     and side.leaves[fn_nodes[u]].path == ms[0]]
            if len(nodes) == 1 and (closer is None or closer(t.index, fn_nodes[nodes[0]], calls_of[p][0].order)):
                hit = side.leaves[fn_nodes[nodes[0]]]
                break
        if hit is not None and hit.order not in matched and add(hit, t.index, "provenance"):
            continue
        last = max(kids, key=lambda p: calls_of[p][0].pos)
        mods[t.index] = [last, *(p for p in ms if p != last)]
        cand.setdefault(last, []).append(t.index)
    # 1. provenance (leaves first, then containers on what is left)
    for want_leaf in (True, False):
        for path, calls in calls_of.items():
            if calls[0].leaf != want_leaf or not calls[0].in_graph or calls[0].passthrough or calls[0].constant \
                    or calls[0].reuses or path in exclude or all(c.order in matched for c in calls):
                continue
            ex = exits(path, cand.get(path, []))
            if len(calls) == 1:
                for i in _preferred(calls[0], ex, cand.get(path, [])):
                    if add(calls[0], i, "provenance"):
                        break
                continue
            pos = 0
            for call in calls:
                while pos < len(ex) and not add(call, ex[pos], "provenance"):
                    pos += 1
                pos += 1
    # 1b. a leaf's other tensor outputs (a GRU's final hidden state): the last unclaimed exit that fits
    for extra in side.leaves:
        if extra.of is None or side.leaves[extra.of].call != 0 or len(calls_of.get(extra.path, [])) != 1:
            continue
        for i in reversed(exits(extra.path, cand.get(extra.path, []))):
            if i not in claimed and add(extra, i, "provenance"):
                break
    # 1c. ops a container runs itself, by their fx node name (ONNX values and Core ML ops carry it)
    if resolver.fmt != "tflite":
        for t in tensors:
            if t.op == "input" or t.op in TRANSPARENT or t.index in claimed:
                continue
            for name in resolver.names(t)[1:] if t.node else resolver.names(t):  # the value named after the node,
                if name in fn_nodes:                                               # not every op it decomposed into
                    pseudo = side.leaves[fn_nodes[name]]
                    if (mods.get(t.index) or [pseudo.path])[0] == pseudo.path and pseudo.order not in matched:
                        add(pseudo, t.index, "provenance")
                    break
    fused_into: dict[int, int] = {}
    by_primary = {layer.primary: layer for layer in layers}

    def join(order: int, layer: Layer) -> None:
        layer.group = sorted({*layer.group, order})
        fused_into[order] = layer.primary

    # 3a. fused ops that name the modules they absorbed (TFLite)
    for layer in list(layers):
        for p in mods.get(layer.source, [])[1:]:
            if p not in leaf_paths:
                continue
            prim = side.leaves[layer.primary]
            calls = [c for c in calls_of.get(p, []) if c.order not in matched and c.order not in fused_into
                     and c.pos <= prim.pos and not c.constant]
            if calls:
                join(calls[-1].order, layer)
    # 4. shape + order between matched neighbours
    leaves = [leaf for leaf in side.leaves if leaf.leaf]
    for leaf in leaves:
        if leaf.order in matched or leaf.order in fused_into or not leaf.in_graph or leaf.passthrough \
                or leaf.constant:
            continue
        if _only_reader_matched(side, leaf, matched, fused_into) and (not cand.get(leaf.path)
                                                                       or leaf.path in exclude):
            continue  # fused: nothing in the file carries its output (step 3b)
        lo, hi = _window(side, layers, leaf, tensors)
        allowed = {leaf.path, *_ancestors(leaf.path)}
        for t in sorted(tensors, key=lambda t: (t.step, t.index)):
            if t.op == "input" or t.op in TRANSPARENT or t.index in claimed or not lo < t.step < hi:
                continue
            prim = (mods.get(t.index) or [None])[0]
            if prim is not None and prim not in allowed:
                continue
            if add(leaf, t.index, "shape+order"):
                by_primary[leaf.order] = layers[-1]
                break
    # 3b. fused by data flow: the only reader of the call's output is (fused into) a matched layer
    changed = True
    while changed:
        changed = False
        for leaf in reversed(leaves):
            if leaf.order in matched or leaf.order in fused_into or not leaf.in_graph or leaf.passthrough \
                    or leaf.constant:
                continue
            if upstream is not None and not leaf.has_weight and len(leaf.inputs_from) == 1:
                src = leaf.inputs_from[0]
                up = by_primary.get(src)
                if up is not None and side.leaves[src].shape == leaf.shape and upstream(up, leaf):
                    del by_primary[src]
                    up.primary = leaf.order
                    up.group = sorted({*up.group, leaf.order}, key=lambda o: side.leaves[o].pos)
                    by_primary[leaf.order] = up
                    matched.discard(src)
                    matched.add(leaf.order)
                    fused_into.update({o: leaf.order for o, t in fused_into.items() if t == src})
                    fused_into[src] = leaf.order
                    changed = True
                    continue
            readers = [x.order for x in side.leaves if leaf.order in x.inputs_from and x.leaf]
            if len(readers) != 1:
                continue
            r = readers[0]
            target = by_primary.get(r) if r in matched else by_primary.get(fused_into.get(r, -1))
            if target is not None and leaf.pos <= side.leaves[target.primary].pos:
                join(leaf.order, target)
                changed = True
    unmatched = []
    for leaf in leaves:
        if leaf.order in matched or leaf.order in fused_into:
            continue
        unmatched.append({"order": leaf.order, **_why(side, leaf, cand, tensors, layers)})
    layers.sort(key=lambda layer: side.leaves[layer.primary].pos)
    return Matching(layers, unmatched, mods, fused_into)


def _encoded(t: Tensor) -> bool:
    return bool(t.dtype) and np.dtype(t.dtype).kind in "iub" and t.quant is None


def _inside(p: str, container: str) -> bool:
    return container == "" or p.startswith(container + ".")


def _outside(p: str | None, path: str) -> bool:
    """Whether a tensor of module ``p`` is outside module ``path`` (neither it nor one of its submodules)."""
    return p is None or (p != path and not p.startswith(path + ".") if path else False)


def _only_reader_matched(side: TorchSide, leaf: Leaf, matched: set[int], fused: dict[int, int]) -> bool:
    readers = [x.order for x in side.leaves if leaf.order in x.inputs_from and x.leaf]
    return len(readers) == 1 and (readers[0] in matched or readers[0] in fused)


def _ancestors(path: str) -> list[str]:
    parts = path.split(".") if path else []
    return ["", *(".".join(parts[:i]) for i in range(1, len(parts)))]


def _window(side: TorchSide, layers: list[Layer], leaf: Leaf, tensors: list[Tensor]) -> tuple[int, int]:
    before = [la for la in layers if side.leaves[la.primary].pos < leaf.pos and side.leaves[la.primary].leaf]
    after = [la for la in layers if side.leaves[la.primary].pos > leaf.pos and side.leaves[la.primary].leaf]
    lo = max((tensors[la.source].step for la in before), default=-1)
    hi = min((tensors[la.source].step for la in after), default=10**9)
    return lo, hi


def _why(side: TorchSide, leaf: Leaf, cand: dict[str, list[int]], tensors: list[Tensor],
         layers: list[Layer]) -> dict[str, str]:
    if leaf.passthrough:
        return {"status": "no-op", "why": "returns its input unchanged at inference (nothing to compare)"}
    if not leaf.in_graph:
        return {"status": "no-op", "why": "has no node in the captured graph (removed by torch.export)"}
    if leaf.constant:
        return {"status": "folded", "why": "its output does not depend on the model's inputs, so the converter "
                "computed it once into a constant (nothing to compare at run time)"}
    named = cand.get(leaf.path, [])
    if named:
        ops = sorted({tensors[i].op for i in named})
        shapes = sorted({tuple(tensors[i].shape or []) for i in named})
        return {"status": "decomposed", "why": f"{len(named)} file op(s) carry its name ({', '.join(ops)}) but none "
                f"produces its output shape {leaf.shape} (shapes {[list(s) for s in shapes[:3]]})"}
    calls = [x for x in side.leaves if x.path == leaf.path]
    if len(calls) > 1:
        return {"status": "renamed", "why": f"called {len(calls)} times; the file does not name call {leaf.call}"}
    return {"status": "renamed", "why": f"no tensor in the file carries its name and no unclaimed tensor of shape "
            f"{leaf.shape} lies between its matched neighbours (renamed, merged or removed by the converter)"}
