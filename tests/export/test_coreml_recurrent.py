"""Recurrent layers stay recurrent in Core ML files (issue 11): nn.LSTM / nn.GRU / nn.RNN become Core ML's own
recurrent ops (lstm, rnn; PyTorch's GRU a while_loop) instead of per-time-step copies, the files stay near their
parameter floor and verify with the reference interpreter; layers Core ML cannot express fall back to the unrolled
conversion with a note saying why."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from mobilize import ModelSpec
from mobilize.export import coreml_recurrent

pytestmark = pytest.mark.filterwarnings("ignore:The tensor attributes .* were assigned during export")

SEQ, FEAT, HID = 16, 24, 32  # every LSTM weight ≥ 2048 elements, the int8 recipes compress it


class BiLSTM(nn.Module):
    """2-layer bidirectional batch-first LSTM with its initial states as inputs; returns the head's sequence and
    the final states."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(FEAT, HID, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * HID, 10)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, (h, c) = self.rnn(x, (h0, c0))
        return self.head(y), h, c


class GruRnn(nn.Module):
    """Sequence-first GRU (2 layers, bidirectional) feeding a 2-layer ReLU RNN whose initial state is an input;
    returns the RNN's sequence and both final states."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(FEAT, HID, num_layers=2, bidirectional=True)
        self.rnn = nn.RNN(2 * HID, HID, num_layers=2, nonlinearity="relu")

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, h_gru = self.gru(x)
        z, h_rnn = self.rnn(y, h0)
        return z, h_gru, h_rnn


class Unsupported(nn.Module):
    """An LSTM with proj_size and a bidirectional RNN (no native Core ML form) next to a plain LSTM and a GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LSTM(FEAT, HID, proj_size=8, batch_first=True)
        self.plain = nn.LSTM(8, 8, batch_first=True)
        self.birnn = nn.RNN(8, 8, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(FEAT, HID, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p, _ = self.proj(x)
        a, _ = self.plain(p)
        b, _ = self.birnn(p)
        c, _ = self.gru(x)
        return a, b, c


def _spec(module: nn.Module, *inputs: torch.Tensor, names: list[str], name: str) -> ModelSpec:
    torch.manual_seed(0)
    module = module.eval()
    for p in module.parameters():  # PyTorch's default init leaves the states tiny; spread the gates out
        nn.init.uniform_(p, -0.3, 0.3)
    return ModelSpec(module, inputs, input_names=names, name=name)


def _floor(spec: ModelSpec, bytes_per_weight: int) -> int:
    return sum(p.numel() for p in spec.module.parameters()) * bytes_per_weight


def _export(spec: ModelSpec, out: Path, precisions: str, target: str = "iOS16") -> dict[str, dict[str, Any]]:
    from mobilize import api
    from mobilize.export import ExportOptions

    result = api.export(spec, out, formats="coreml", precisions=precisions,
                        options=ExportOptions(coreml_target=target), isolate=False)
    arts = {a["precision"]: a for a in result.artifacts}
    for a in arts.values():
        assert a["status"] == "ok", a["error"]
        a["file"] = out / a["path"]
    return arts


def _ops(path: Path) -> list[Any]:
    from mobilize.runtime.coreml_ref.program import Program

    return list(Program(path).operations())


def _assert_verified(art: dict[str, Any]) -> None:
    p = art["parity"]
    assert p["status"] == "pass" and p["runtime"] == "reference", (p["status"], p["reason"], p["failures"])


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def bilstm(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, dict[str, dict[str, Any]]]:
    torch.manual_seed(1)
    spec = _spec(BiLSTM(), torch.randn(1, SEQ, FEAT), torch.randn(4, 1, HID), torch.randn(4, 1, HID),
                 names=["x", "h0", "c0"], name="bilstm")
    return spec, _export(spec, tmp_path_factory.mktemp("bilstm") / "b", "fp32,fp16,int8-weights", target="iOS17")


@pytest.mark.slow
def test_bilstm_stays_two_native_lstm_ops_near_its_floor(bilstm) -> None:  # noqa: ANN001
    spec, arts = bilstm
    a = arts["fp32"]
    assert _size(a["file"]) <= 1.25 * _floor(spec, 4) + 64 * 1024, (_size(a["file"]), _floor(spec, 4))
    counts = collections.Counter(op.type for op in _ops(a["file"]))
    assert counts["lstm"] == 2 and counts["matmul"] == 0, counts
    assert any("kept as native Core ML ops: rnn (nn.LSTM, 2 layers, bidirectional, batch_first) → lstm ×2" in n
               for n in a["notes"]), a["notes"]
    _assert_verified(a)


@pytest.mark.slow
def test_bilstm_fp16_computes_and_stores_the_lstm_in_half_precision(bilstm) -> None:  # noqa: ANN001
    from coremltools.proto import MIL_pb2

    spec, arts = bilstm
    a = arts["fp16"]
    assert _size(a["file"]) <= 1.25 * _floor(spec, 2) + 64 * 1024, (_size(a["file"]), _floor(spec, 2))
    lstms = [op for op in _ops(a["file"]) if op.type == "lstm"]
    assert len(lstms) == 2
    assert all(op.outputs[0].type.tensorType.dataType == MIL_pb2.DataType.FLOAT16 for op in lstms)
    _assert_verified(a)


@pytest.mark.slow
def test_bilstm_int8_weights_compress_the_recurrent_weights(bilstm) -> None:  # noqa: ANN001
    _, arts = bilstm
    a = arts["int8-weights"]
    ops = _ops(a["file"])
    made_by = {o.name: op.type for op in ops for o in op.outputs}
    weights = [arg.arguments[0].name for op in ops if op.type == "lstm" for key, arg in op.inputs.items()
               if key.startswith("weight_")]
    assert len(weights) == 8  # ih/hh × forward/backward × 2 layers
    assert {made_by[w] for w in weights} == {"constexpr_affine_dequantize"}
    assert _size(a["file"]) < 0.4 * _size(arts["fp32"]["file"])
    _assert_verified(a)


@pytest.mark.slow
def test_gru_and_rnn_stay_recurrent_and_verify(tmp_path: Path) -> None:
    torch.manual_seed(2)
    spec = _spec(GruRnn(), torch.randn(SEQ, 1, FEAT), torch.randn(2, 1, HID), names=["x", "h0"], name="grurnn")
    arts = _export(spec, tmp_path / "b", "fp32,fp16")
    a = arts["fp32"]
    assert _size(a["file"]) <= 1.25 * _floor(spec, 4) + 64 * 1024, (_size(a["file"]), _floor(spec, 4))
    counts = collections.Counter(op.type for op in _ops(a["file"]))
    assert counts["while_loop"] == 4 and counts["rnn"] == 2, counts  # GRU: 2 layers × 2 directions
    note = next(n for n in a["notes"] if n.startswith("recurrent layers kept as native"))
    assert "gru (nn.GRU, 2 layers, bidirectional)" in note and "rnn (nn.RNN, 2 layers)" in note, note
    for prec in ("fp32", "fp16"):
        _assert_verified(arts[prec])
    # iOS16: Core ML's rnn op is fp32-only, and the fp16 file says so
    assert any("float32-only before iOS17" in n and "rnn ×2" in n for n in arts["fp16"]["notes"]), arts["fp16"]


@pytest.mark.slow
def test_layers_core_ml_cannot_express_are_unrolled_with_a_reason(tmp_path: Path) -> None:
    torch.manual_seed(3)
    spec = _spec(Unsupported(), torch.randn(1, SEQ, FEAT), names=["x"], name="unsupported")
    a = _export(spec, tmp_path / "b", "fp32")["fp32"]
    notes = " | ".join(a["notes"])
    assert "proj (nn.LSTM, batch_first) unrolled" in notes and "proj_size" in notes, notes
    assert "plain (nn.LSTM, batch_first) unrolled" in notes and "other aten.lstm.input calls" in notes, notes
    assert "birnn (nn.RNN, bidirectional, batch_first) unrolled" in notes, notes
    assert "kept as native Core ML ops: gru (nn.GRU, batch_first) → while_loop ×1" in notes, notes
    counts = collections.Counter(op.type for op in _ops(a["file"]))
    assert counts["lstm"] == counts["rnn"] == 0 and counts["while_loop"] == 1, counts
    _assert_verified(a)


class LstmGruRnn(nn.Module):
    """2-layer BiLSTM → bidirectional GRU → RNN, batch-first: every recurrent op kind coremltools writes."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(FEAT, HID, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(2 * HID, HID, bidirectional=True, batch_first=True)
        self.rnn = nn.RNN(2 * HID, HID, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        z, _ = self.gru(y)
        w, _ = self.rnn(z)
        return w


def _producers(path: Path, op_types: tuple[str, ...]) -> dict[str, str]:
    """Parameter input (weight_*, bias*) of each ``op_types`` op → the type of the op that makes it."""
    ops = _ops(path)
    made_by = {o.name: op.type for op in ops for o in op.outputs}
    return {f"{op.outputs[0].name}.{key}": made_by.get(arg.arguments[0].name, "const")
            for op in ops if op.type in op_types for key, arg in op.inputs.items()
            if key.startswith(("weight", "bias")) and arg.arguments[0].name}


@pytest.mark.slow
def test_fp16_ios16_stores_recurrent_weights_in_half_precision(tmp_path: Path) -> None:
    """iOS16: Core ML's lstm/rnn ops compute in float32; their weights are stored fp16 (constexpr_cast at load), so
    the fp16 file stays near its fp16 floor and still verifies. fp32 and int8-weights (quantized from the fp32 file)
    are untouched."""
    torch.manual_seed(4)
    spec = _spec(LstmGruRnn(), torch.randn(1, SEQ, FEAT), names=["x"], name="lstmgrurnn")
    arts = _export(spec, tmp_path / "b", "fp32,fp16,int8-weights")
    a = arts["fp16"]
    assert _size(a["file"]) <= 1.25 * _floor(spec, 2) + 64 * 1024, (_size(a["file"]), _floor(spec, 2))
    made_by = _producers(a["file"], ("lstm", "rnn"))
    assert len(made_by) == 15 and set(made_by.values()) == {"constexpr_cast"}, made_by  # lstm 2×2×3, rnn 3
    counts = collections.Counter(op.type for op in _ops(a["file"]))
    assert counts["lstm"] == 2 and counts["rnn"] == 1 and counts["while_loop"] == 2, counts
    note = next(n for n in a["notes"] if "float32-only before iOS17" in n)
    assert "lstm ×2, rnn ×1 op(s) compute in float32; their weights are stored in float16" in note, note
    _assert_verified(a)
    assert a["fitness"]["status"] == "fit", a["fitness"]
    for prec in ("fp32", "int8-weights"):
        assert "constexpr_cast" not in {op.type for op in _ops(arts[prec]["file"])}, prec
    assert set(_producers(arts["fp32"]["file"], ("lstm", "rnn")).values()) == {"const"}
    assert "constexpr_affine_dequantize" in set(_producers(arts["int8-weights"]["file"], ("lstm",)).values())


# --- without a converter ------------------------------------------------------------------------------------------

def test_plan_names_each_layer_and_why_it_cannot_stay_native() -> None:
    spec = _spec(Unsupported(), torch.randn(1, SEQ, FEAT), names=["x"], name="unsupported")
    program = torch.export.export(spec.module, spec.example_inputs, strict=False)
    plan = coreml_recurrent.plan(program)
    by_name = {la.name: la for la in plan.layers}
    assert set(by_name) == {"proj", "plain", "birnn", "gru"}
    assert "proj_size" in by_name["proj"].reason and by_name["plain"].reason == ""
    assert "bidirectional" in by_name["birnn"].reason
    assert plan.native_ops == {"aten.gru.input"}
    table = {str(k) for k in plan.decompositions()}
    assert "aten.gru.input" not in table and {"aten.lstm.input", "aten.rnn_tanh.input"} <= table


def test_exir_converters_are_registered_only_while_converting() -> None:
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    mapping = _TORCH_OPS_REGISTRY.name_to_func_mapping

    def theirs(context: Any, node: Any) -> None:  # stands for a converter coremltools registers itself one day
        raise AssertionError

    assert "lstm.input" not in mapping and "gru.input" not in mapping
    mapping["gru.input"] = theirs
    try:
        with coreml_recurrent.exir_converters({"aten.lstm.input", "aten.gru.input", "aten.rnn_relu.input"}):
            assert mapping["lstm.input"] is not mapping["lstm"] and "rnn_relu.input" in mapping
            assert mapping["gru.input"] is theirs  # never overridden
            assert "rnn_tanh.input" not in mapping  # not asked for
        assert "lstm.input" not in mapping and "rnn_relu.input" not in mapping
        assert mapping["gru.input"] is theirs
    finally:
        del mapping["gru.input"]


# --- fp16 storage of recurrent weights on MIL programs (coremltools' builder; no PyTorch capture) ----------------

_R = np.random.default_rng(5)
_S, _B, _IN, _H = 6, 1, 24, 32


def _f32(*shape: int) -> np.ndarray:
    return _R.uniform(-0.3, 0.3, shape).astype(np.float32)


def _mil_model(build: Any, target: str, precision: str) -> Any:
    """``build(x)`` (MIL builder calls on an fp32 input of shape (S, B, IN)) converted as mobilize converts: the
    default pass pipeline, ``precision`` compute."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    from mobilize._quiet import captured_output

    tgt = getattr(ct.target, target)
    with captured_output():
        prog = mb.program(input_specs=[mb.TensorSpec(shape=(_S, _B, _IN))], opset_version=tgt)(build)
        return ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=tgt,
                          compute_precision=getattr(ct.precision, precision))


_LSTM = {"weight_ih": _f32(4 * _H, _IN), "weight_hh": _f32(4 * _H, _H), "bias": _f32(4 * _H)}
_RNN = {"weight_ih": _f32(_H, _H), "weight_hh": _f32(_H, _H), "bias": _f32(_H)}


def _lstm_rnn(params: dict[str, dict[str, np.ndarray]]) -> Any:
    def build(x: Any) -> Any:
        from coremltools.converters.mil import Builder as mb

        zeros = np.zeros((_B, _H), np.float32)
        y = mb.lstm(x=x, initial_h=zeros, initial_c=zeros, **params["lstm"], output_sequence=True)[0]
        z = mb.rnn(x=y, initial_h=zeros, **params["rnn"], output_sequence=True)[0]
        return mb.relu(x=z)

    return build


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    from mobilize.runtime.coreml_ref.program import Program

    program = Program(path)
    return program.run({program.input_names[0]: x})[program.output_names[0]]


@pytest.mark.slow
def test_store_weights_fp16_keeps_float32_compute_with_half_the_weight_bytes(tmp_path: Path) -> None:
    model = _mil_model(_lstm_rnn({"lstm": _LSTM, "rnn": _RNN}), "iOS16", "FLOAT16")
    assert coreml_recurrent.float32_recurrent_ops(model) == {"lstm": 1, "rnn": 1}  # the premise: iOS16 keeps fp32
    out, done = coreml_recurrent.store_weights_fp16(model)
    assert done.ops == {"lstm": 1, "rnn": 1} and done.tensors == 6
    n_params = sum(v.size for p in (_LSTM, _RNN) for v in p.values())
    assert done.saved_bytes == 2 * n_params
    assert coreml_recurrent.float32_recurrent_ops(out) == {"lstm": 1, "rnn": 1}  # still computes in float32
    before, after = tmp_path / "before.mlpackage", tmp_path / "after.mlpackage"
    coreml_recurrent.save(model, str(before))
    coreml_recurrent.save(out, str(after))
    assert set(_producers(before, ("lstm", "rnn")).values()) == {"const"}
    assert set(_producers(after, ("lstm", "rnn")).values()) == {"constexpr_cast"}
    assert _size(before) - _size(after) >= 0.9 * done.saved_bytes, (_size(before), _size(after))
    # the values are the weights rounded to fp16, computed in fp32: the same outputs as a file built from
    # fp16-rounded fp32 weights
    rounded = {k: {n: v.astype(np.float16).astype(np.float32) for n, v in p.items()}
               for k, p in (("lstm", _LSTM), ("rnn", _RNN))}
    want = tmp_path / "rounded.mlpackage"
    coreml_recurrent.save(_mil_model(_lstm_rnn(rounded), "iOS16", "FLOAT16"), str(want))
    x = _R.standard_normal((_S, _B, _IN)).astype(np.float32)
    got = _run(after, x)
    np.testing.assert_array_equal(got, _run(want, x))
    assert np.abs(got - _run(before, x)).max() < 1e-2


def test_store_weights_fp16_leaves_constants_other_ops_read(tmp_path: Path) -> None:
    def build(x: Any) -> Any:
        from coremltools.converters.mil import Builder as mb

        bias = mb.const(val=_RNN["bias"])  # the rnn's bias, also added to its output by a non-recurrent op
        z = mb.rnn(x=x, initial_h=np.zeros((_B, _H), np.float32), weight_ih=_f32(_H, _IN),
                   weight_hh=_RNN["weight_hh"], bias=bias, output_sequence=True)[0]
        return mb.add(x=z, y=bias)

    model = _mil_model(build, "iOS16", "FLOAT32")
    out, done = coreml_recurrent.store_weights_fp16(model)
    assert done.tensors == 2 and not done.ops  # weight_ih, weight_hh; the shared bias stays float32
    path = tmp_path / "m.mlpackage"
    coreml_recurrent.save(out, str(path))
    made_by = _producers(path, ("rnn",))
    assert sorted(made_by.values()) == ["const", "constexpr_cast", "constexpr_cast"], made_by


@pytest.mark.slow
def test_fp16_notes_per_deployment_target() -> None:
    import coremltools as ct

    from mobilize.export import ExportOptions
    from mobilize.export.coreml import _fp16_recurrent

    old = _mil_model(_lstm_rnn({"lstm": _LSTM, "rnn": _RNN}), "iOS15", "FLOAT16")
    same, notes = _fp16_recurrent(ct, old, ExportOptions(coreml_target="iOS15"))
    assert same is old and len(notes) == 1, notes
    assert "lstm ×1, rnn ×1 op(s) compute in float32 and keep float32 weights (iOS15 has no load-time cast" in notes[0]
    new = _mil_model(_lstm_rnn({"lstm": _LSTM, "rnn": _RNN}), "iOS16", "FLOAT16")
    rewritten, notes = _fp16_recurrent(ct, new, ExportOptions(coreml_target="iOS16"))
    assert rewritten is not new and "their weights are stored in float16 and cast to float32 when the model loads " \
        "(constexpr_cast; 6 tensors" in notes[0], notes
    assert _fp16_recurrent(ct, _mil_model(_lstm_rnn({"lstm": _LSTM, "rnn": _RNN}), "iOS17", "FLOAT16"),
                           ExportOptions(coreml_target="iOS17"))[1] == []
