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

Core ML's ``lstm`` / ``gru`` / ``rnn`` ops are float32-only before iOS17, so an fp16 file for iOS15/iOS16 keeps them
computing in float32 — and coremltools keeps their weights in float32 too, about doubling an LSTM model's fp16 file.
From iOS16 on :func:`store_weights_fp16` stores those weights as float16 and casts them to float32 when the model
loads (``constexpr_cast``); iOS15 has no such op.
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


#: recurrent-op inputs that hold parameters (weight_ih, weight_hh_back, bias, peephole_back …)
_PARAM_PREFIXES = ("weight", "bias", "peephole")


@dataclasses.dataclass
class Fp16Storage:
    """What :func:`store_weights_fp16` did: per recurrent op type, how many float32 ops now read all their
    parameters from float16 storage; how many tensors and bytes moved from float32 to float16 storage."""

    ops: collections.Counter[str]
    tensors: int
    saved_bytes: int


def store_weights_fp16(model: Any) -> tuple[Any, Fp16Storage]:
    """An fp16 program whose recurrent ops compute in float32 (Core ML's lstm/gru/rnn are float32-only before
    iOS17) with their parameters stored as float16 and cast to float32 at load (``constexpr_cast``, an iOS16 op
    evaluated when the model loads): the same ops and float32 compute, half the bytes for their weights.

    coremltools has no pass for this: ``compute_precision=FLOAT16`` (``FP16ComputePrecision``) casts an op's inputs
    only where the op's type domain allows fp16, so before iOS17 it leaves the lstm/rnn op, and the constants feeding
    it, in float32. The rewrite is a graph pass run the way coremltools' own weight compression runs its passes
    (``_apply_graph_pass``: program loaded from the model, pass applied, program converted back). A constant is
    rewritten only when every use of it is a parameter input of such an op and its values fit float16; they are
    rounded to float16, as the rest of the fp16 file's weights are. The model is returned unchanged when there is
    nothing to rewrite. Needs a program at iOS16 or newer (the caller checks the deployment target)."""
    import numpy as np
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass
    from coremltools.models.utils import _apply_graph_pass

    stats = Fp16Storage(collections.Counter(), 0, 0)

    def float32_params(op: Any) -> Iterator[tuple[str, Any]]:
        spec = op.input_spec.input_types
        for name, var in op.inputs.items():
            if (name.startswith(_PARAM_PREFIXES) and getattr(spec.get(name), "const", False) and var.op is not None
                    and var.op.op_type == "const" and types.is_tensor(var.sym_type) and var.dtype == types.fp32):
                yield name, var

    def fits_fp16(val: Any) -> bool:  # finite values beyond float16's range stay float32 (coremltools' rule too)
        big = np.abs(val[np.isfinite(val)])
        return not big.size or float(big.max()) <= np.finfo(np.float16).max

    def only_params_of_recurrent_ops(var: Any) -> bool:
        return all(child.op_type in ("lstm", "gru", "rnn") and all(
            v is not var or name.startswith(_PARAM_PREFIXES) for name, v in child.inputs.items())
            for child in var.child_ops)

    class _StoreRecurrentWeightsFp16(AbstractGraphPass):
        def apply(self, prog: Any) -> None:
            for fn in prog.functions.values():
                self._block(fn)

        def _block(self, block: Any) -> None:
            for op in list(block.operations):
                for nested in op.blocks:
                    self._block(nested)
                if op.op_type not in ("lstm", "gru", "rnn") or op.outputs[0].dtype != types.fp32:
                    continue
                for _, var in list(float32_params(op)):
                    if not only_params_of_recurrent_ops(var) or not fits_fp16(var.val):
                        continue
                    const = var.op
                    with const.enclosing_block:
                        cast = mb.constexpr_cast(source_val=var.val.astype(np.float16), output_dtype="fp32",
                                                 name=f"{var.name}_fp16", before_op=const)
                    # anchored at the const: every use of it is replaced, nested blocks included
                    const.enclosing_block.replace_uses_of_var_after_op(anchor_op=const, old_var=var, new_var=cast,
                                                                      force_replace=True)
                    stats.tensors += 1
                    stats.saved_bytes += 2 * var.val.size
                if not any(True for _ in float32_params(op)):
                    stats.ops[op.op_type] += 1

    rewrite = _StoreRecurrentWeightsFp16()
    spec_version = model.get_spec().specificationVersion
    out = _apply_graph_pass(model, [rewrite], spec_version=spec_version, skip_model_load=True)
    return (out if stats.tensors else model), stats


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
