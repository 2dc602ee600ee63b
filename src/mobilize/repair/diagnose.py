"""Sharper conversion diagnostics: which node failed, which PyTorch module it came from, and (for Core ML, whose
frontend has an op registry) every op the converter has no converter for — not only the first one it trips on.
"""

from __future__ import annotations

import operator
import re
from typing import Any

from mobilize.capture import module_of

#: how converters name the node they failed on
_NODE_PATTERNS = (
    r"Unsupported fx node (\w+)",  # coremltools' torch.export frontend
    r"While executing %(\w+)",  # torch.fx interpreters (torch.onnx's decomposition and type-promotion passes)
    r"Error when translating node %(\w+)",  # torch.onnx's ONNX translation step
    r'Layer "(\w+)", with type',  # coremltools' MIL validation (the layer is named after the node, maybe suffixed)
    r"converting '\w+' op \(located at: '(\w+)'\)",  # coremltools' per-op error log
)


def coreml_unsupported(program: Any) -> list[dict[str, Any]]:
    """Every ``call_function`` node of ``program`` (decomposed as Core ML converts it) whose op coremltools' torch
    frontend has no converter for, grouped by op: ``[{"op", "kind", "nodes", "modules"}]``."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    from coremltools.converters.mil.frontend.torch.utils import sanitize_op_kind

    found: dict[str, dict[str, Any]] = {}
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        try:
            kind = node.target.name()
        except AttributeError:
            kind = getattr(node.target, "__name__", str(node.target))
        kind = sanitize_op_kind(kind)
        if kind in _TORCH_OPS_REGISTRY:
            continue
        entry = found.setdefault(kind, {"op": _op_name(node.target), "kind": kind, "nodes": [], "modules": []})
        entry["nodes"].append(node.name)
        where = module_of(node)
        if where not in entry["modules"]:
            entry["modules"].append(where)
    return list(found.values())


def failing_nodes(exc: BaseException, program: Any) -> list[Any]:
    """The nodes of ``program`` the converter says it failed on: named in its message (coremltools, torch.onnx) or
    held by the converter's own frame (coremltools' per-node conversion loop keeps ``node`` in its locals)."""
    names: list[str] = []
    text = _messages(exc)
    for rx in _NODE_PATTERNS:
        names += re.findall(rx, text)
    names += _nodes_in_traceback(exc)
    by_name = {n.name: n for n in program.graph.nodes} if program is not None else {}
    out = []
    for name in names:
        node = by_name.get(name)
        parts = name.split("_")
        while node is None and len(parts) > 1:  # MIL layers add suffixes: "index_1_transpose_cast_fp16" → index_1
            parts.pop()
            node = by_name.get("_".join(parts))
        if node is not None and node not in out:
            out.append(node)
    return out


def blame(node: Any) -> str:
    """``path (Class) calls aten.op.overload`` for one node."""
    return f"{module_of(node)} calls {_op_name(node.target)}"


def _op_name(target: Any) -> str:
    if hasattr(target, "_schema"):  # an OpOverload: aten.fmod.Scalar
        return str(target)
    return getattr(target, "__name__", str(target))


def _messages(exc: BaseException) -> str:
    parts = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts.append(str(cur))
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)


def _nodes_in_traceback(exc: BaseException) -> list[str]:
    """Names of coremltools ``InternalTorchIRNode`` objects held as ``node`` by a frame of the failing call."""
    names: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        tb = cur.__traceback__
        while tb is not None:
            node = tb.tb_frame.f_locals.get("node")
            name, kind = getattr(node, "name", None), getattr(node, "kind", None)
            if isinstance(name, str) and isinstance(kind, str) and "coremltools" in tb.tb_frame.f_code.co_filename:
                names.append(name)
            tb = tb.tb_next
        cur = cur.__cause__ or cur.__context__
    return names[-1:]  # the innermost frame's node is the one being converted
