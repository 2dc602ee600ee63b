"""Sharper conversion diagnostics: which node failed, which PyTorch module it came from, and (for Core ML, whose
frontend has an op registry) every op the converter has no converter for — not only the first one it trips on.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator
from typing import Any

from mobilize.capture import module_of

#: how converters name the node they failed on
_NODE_PATTERNS = (
    r"Unsupported fx node (\w+)",  # coremltools' torch.export frontend
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
    """The nodes the converter failed on: the torch.fx node an interpreter was running when it raised (torch.onnx
    runs its own decomposed copy of the program: that node carries the module stack), else the nodes of ``program``
    its message names (coremltools' node and MIL layer names, litert-torch's source lines) or its per-node
    conversion loop held (coremltools keeps ``node`` in its locals)."""
    running = _fx_nodes_in_traceback(exc)
    if running:
        return running
    names: list[str] = []
    text = _messages(exc)
    for rx in _NODE_PATTERNS:
        names += re.findall(rx, text)
    names += _nodes_in_traceback(exc)
    out = _nodes_at_source_lines(text, program)
    by_name = {n.name: n for n in program.graph.nodes} if program is not None else {}
    for name in names:
        node = by_name.get(name)
        parts = name.split("_")
        while node is None and len(parts) > 1:  # MIL layers add suffixes: "index_1_transpose_cast_fp16" → index_1
            parts.pop()
            node = by_name.get("_".join(parts))
        if node is not None and node not in out:
            out.append(node)
    return out


def _nodes_at_source_lines(text: str, program: Any) -> list[Any]:
    """Nodes created at a source line an MLIR diagnostic points at (litert-torch: ``file.py:253:0: error: 'tfl.mul'
    op …``), narrowed to the op the diagnostic names when some of them call it."""
    if program is None:
        return []
    found: list[Any] = []
    for path, line, op in re.findall(r"([^\s:'\"]+\.py):(\d+):\d+: error: '\w+\.(\w+)' op", text):
        at = [n for n in program.graph.nodes if n.op == "call_function" and _innermost(n) == (path, int(line))]
        named = [n for n in at if op in str(n.target).split(".")[-2:][0]]
        for n in named or at:
            if n not in found:
                found.append(n)
    return found


def _innermost(node: Any) -> tuple[str, int] | None:
    frames = re.findall(r'File "([^"]+)", line (\d+)', node.meta.get("stack_trace") or "")
    return (frames[-1][0], int(frames[-1][1])) if frames else None


def blame(node: Any) -> str:
    """``path (Class) calls aten.op.overload`` for one node."""
    return f"{module_of(node)} calls {_op_name(node.target)}"


def _op_name(target: Any) -> str:
    if hasattr(target, "_schema"):  # an OpOverload: aten.fmod.Scalar
        return str(target)
    return getattr(target, "__name__", str(target))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during (``__cause__`` / ``__context__``), each once."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _frames(exc: BaseException) -> Iterator[Any]:
    """Every traceback frame of every exception in the chain, outermost first within each."""
    for cur in _chain(exc):
        tb = cur.__traceback__
        while tb is not None:
            yield tb.tb_frame
            tb = tb.tb_next


def _messages(exc: BaseException) -> str:
    return "\n".join(str(cur) for cur in _chain(exc))


def _fx_nodes_in_traceback(exc: BaseException) -> list[Any]:
    """The innermost ``torch.fx.Node`` a frame of the failing call was running (``Interpreter.run_node(n)``)."""
    import torch

    found = [node for frame in _frames(exc) if frame.f_code.co_name == "run_node"
             for node in [frame.f_locals.get("n")]
             if isinstance(node, torch.fx.Node) and node.op == "call_function"]
    return found[-1:]


def _nodes_in_traceback(exc: BaseException) -> list[str]:
    """Names of coremltools ``InternalTorchIRNode`` objects held as ``node`` by a frame of the failing call."""
    names: list[str] = []
    for frame in _frames(exc):
        node = frame.f_locals.get("node")
        name, kind = getattr(node, "name", None), getattr(node, "kind", None)
        if isinstance(name, str) and isinstance(kind, str) and "coremltools" in frame.f_code.co_filename:
            names.append(name)
    return names[-1:]  # the innermost frame's node is the one being converted
