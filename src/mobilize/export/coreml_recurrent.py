"""Recurrent layers stay recurrent in Core ML files.

torch.export's default decompositions turn ``aten.lstm`` / ``aten.gru`` / ``aten.rnn_tanh`` / ``aten.rnn_relu``
into one set of elementwise ops per time step, with the weights copied for every step: a CNN + 2-layer BiLSTM OCR
model became a 543 MB ``.mlpackage`` (its ONNX file: 36 MB). coremltools converts these ATen ops to Core ML's own
recurrent ops, but only under their TorchScript names (``lstm``, ``gru``, ``rnn_tanh``, ``rnn_relu``); its EXIR
frontend looks them up as ``lstm.input`` & co. and rejects them. So the exporter

1. keeps the ``.input`` overloads of the layers that can stay native out of the decomposition table
   (:func:`plan`, :meth:`Plan.decompositions`), and
2. registers coremltools' own converters under the EXIR names for the duration of the conversion only
   (:func:`exir_converters`), adapting their outputs to what the EXIR graph expects (one tuple read by
   ``getitem`` nodes).

coremltools then writes ``lstm`` (uni- and bidirectional, one op per layer) and ``rnn`` (one per layer) ops, and
PyTorch's GRU as a ``while_loop`` over the time steps with one copy of the weights (Core ML's ``gru`` op computes
the candidate state as W·(r·h), PyTorch as r·(W·h)). Layers Core ML's ops cannot express are decomposed as before
and named in the artifact notes with the reason: packed sequences, LSTM ``proj_size``, bidirectional ``nn.RNN``.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

# ATen overload kept native → (coremltools' converter name, number of outputs)
NATIVE = {
    "aten.lstm.input": ("lstm", 3),
    "aten.gru.input": ("gru", 2),
    "aten.rnn_tanh.input": ("rnn_tanh", 2),
    "aten.rnn_relu.input": ("rnn_relu", 2),
}
# packed-sequence overloads (nn.utils.rnn.pack_padded_sequence): always decomposed
PACKED = ("aten.lstm.data", "aten.gru.data", "aten.rnn_tanh.data", "aten.rnn_relu.data")
# MIL ops the native conversions write
MIL_OPS = ("lstm", "rnn", "gru", "while_loop")


@dataclasses.dataclass
class Layer:
    """One recurrent ATen call in the captured graph (one nn.LSTM / nn.GRU / nn.RNN call)."""

    name: str  # module path ("encoder.rnn"), or the graph node's name when the module is unknown
    module: str  # "nn.LSTM"
    op: str  # "aten.lstm.input"
    detail: str  # "2 layers, bidirectional"
    reason: str = ""  # why Core ML's op cannot express it ('' = it can)

    def describe(self) -> str:
        return f"{self.name} ({self.module}{', ' + self.detail if self.detail else ''})"


@dataclasses.dataclass
class Plan:
    """Which recurrent layers of a captured program stay native Core ML ops."""

    layers: list[Layer]

    @property
    def native(self) -> list[Layer]:
        return [la for la in self.layers if la.op in self.native_ops]

    @property
    def unrolled(self) -> list[Layer]:
        return [la for la in self.layers if la.op not in self.native_ops]

    @property
    def native_ops(self) -> set[str]:
        """Overloads kept out of the decomposition: every call of the overload can stay native (the table is per
        overload, so one layer that cannot takes the others of its kind with it)."""
        ops = {la.op for la in self.layers if la.op in NATIVE}
        return {op for op in ops if not any(la.reason for la in self.layers if la.op == op)}

    def decompositions(self) -> dict[Any, Any]:
        """torch.export's default decomposition table without the overloads that stay native."""
        import torch

        table = torch.export.default_decompositions()
        for key in list(table):
            if str(key) in self.native_ops:
                del table[key]
        return table

    def unrolled_notes(self) -> list[str]:
        notes = []
        for la in self.unrolled:
            why = la.reason or next((o.reason for o in self.layers if o.op == la.op and o.reason), "")
            if not la.reason and why:
                why = f"decomposed with the other {la.op} calls ({why})"
            notes.append(f"recurrent layer {la.describe()} unrolled into per-time-step ops (a weight copy per "
                         f"step: larger file, more ops): {why}")
        return notes

    def native_note(self, model: Any) -> str:
        counts = mil_op_counts(model)
        ops = ", ".join(f"{op} ×{n}" for op, n in sorted(counts.items()))
        note = (f"recurrent layers kept as native Core ML ops: {', '.join(la.describe() for la in self.native)}"
                f" → {ops or 'no recurrent op (folded away)'}")
        if any(la.op == "aten.gru.input" for la in self.native):
            note += ("; nn.GRU runs as a while_loop over the time steps with one copy of its weights (coremltools' "
                     "conversion: Core ML's gru op computes the candidate state differently from PyTorch's)")
        return note


def plan(program: Any) -> Plan:
    """The recurrent layers of ``program`` (an ExportedProgram before decomposition) and which can stay native."""
    layers = []
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        op = str(node.target)
        if op in NATIVE or op in PACKED:
            layers.append(_layer(node, op))
    return Plan(layers)


def _layer(node: Any, op: str) -> Layer:
    stack = node.meta.get("nn_module_stack") or {}
    path, cls = next(reversed(stack.values()), ("", ""))
    cls = str(getattr(cls, "__module__", "") + "." + cls.__qualname__ if isinstance(cls, type) else cls)
    module = f"nn.{cls.rsplit('.', 1)[-1]}" if cls.startswith("torch.nn.") else cls.rsplit(".", 1)[-1]
    module = module or {"lstm": "nn.LSTM", "gru": "nn.GRU"}.get(op.split(".")[1], "nn.RNN")
    name = path or node.name
    if op in PACKED:
        return Layer(name, module, op, "", "packed sequence input (PackedSequence): Core ML's recurrent ops take "
                                            "padded tensors; pass the padded batch instead to keep it native")
    args = list(node.args)
    params, has_bias, num_layers, bidir = args[2], bool(args[3]), int(args[4]), bool(args[7])
    detail = ", ".join(x for x in (f"{num_layers} layers" if num_layers > 1 else "",
                                   "bidirectional" if bidir else "", "batch_first" if args[8] else "") if x)
    reason = ""
    expected = 2 * num_layers * (2 if bidir else 1) * (2 if has_bias else 1)
    if op == "aten.lstm.input" and len(params) != expected:
        reason = "proj_size (Core ML's lstm op has no output projection)"
    elif op.startswith("aten.rnn_") and bidir:
        reason = "bidirectional nn.RNN (coremltools converts simple RNNs in one direction only)"
    elif len(params) != expected:
        reason = f"unexpected weight layout ({len(params)} tensors, expected {expected})"
    return Layer(name, module, op, detail, reason)


def _tuple_outputs(convert: Callable[..., Any], n_out: int) -> Callable[..., Any]:
    """coremltools' TorchScript-style converter (one context name per output) → the EXIR form (one tuple under
    the node's name, which the graph's ``getitem`` nodes index)."""

    def convert_exir(context: Any, node: Any) -> None:
        shim = copy.copy(node)
        shim.outputs = [f"{node.name}__out{i}" for i in range(n_out)]
        convert(context, shim)
        context.add(tuple(context[n] for n in shim.outputs), torch_name=node.name)

    convert_exir.__name__ = f"{convert.__name__}_exir"
    return convert_exir


@contextlib.contextmanager
def exir_converters(ops: set[str]) -> Iterator[None]:
    """Register coremltools' recurrent converters under their EXIR names (``lstm.input`` …) for ``ops`` while the
    block runs; a name coremltools already registers itself is left alone, and the registry is restored after."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    mapping = _TORCH_OPS_REGISTRY.name_to_func_mapping
    added: dict[str, Callable[..., Any]] = {}
    for op in sorted(ops):
        base, n_out = NATIVE[op]
        kind = op.removeprefix("aten.")
        if kind in mapping or base not in mapping:
            continue
        added[kind] = mapping[kind] = _tuple_outputs(mapping[base], n_out)
    try:
        yield
    finally:
        for kind, fn in added.items():
            if mapping.get(kind) is fn:
                del mapping[kind]


def _ops(model: Any) -> Iterator[Any]:
    """Every op of the converted model's program, nested blocks included."""
    def walk(block: Any) -> Iterator[Any]:
        for op in block.operations:
            yield op
            for nested in op.blocks:
                yield from walk(nested)

    for fn in model.get_spec().mlProgram.functions.values():
        for block in fn.block_specializations.values():
            yield from walk(block)


def mil_op_counts(model: Any) -> collections.Counter[str]:
    """How many recurrent / loop ops the converted model has."""
    return collections.Counter(op.type for op in _ops(model) if op.type in MIL_OPS)


def float32_recurrent_ops(model: Any) -> collections.Counter[str]:
    """Recurrent ops that compute in float32 (in an fp16 file: Core ML's lstm/gru/rnn are fp32-only before iOS17,
    so coremltools keeps them, and their weights, in float32)."""
    from coremltools.proto import MIL_pb2

    return collections.Counter(op.type for op in _ops(model) if op.type in ("lstm", "gru", "rnn") and op.outputs
                               and op.outputs[0].type.tensorType.dataType == MIL_pb2.DataType.FLOAT32)


def save(model: Any, dest: str) -> None:
    """``model.save``, also for programs with control flow: coremltools writes an ExecuTorch debug-handle map next
    to EXIR-converted programs and cannot build one for ops with nested blocks (``NotImplementedError:
    Multi-block case``), so such a program is saved without that map (the map is not part of the model)."""
    prog = getattr(model, "_mil_program", None)
    if prog is None or not any(op.blocks for fn in prog.functions.values() for op in fn.operations):
        model.save(dest)
        return
    model._mil_program = None
    try:
        model.save(dest)
    finally:
        model._mil_program = prog
