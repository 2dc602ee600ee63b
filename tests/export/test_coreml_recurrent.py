"""Recurrent layers stay recurrent in Core ML files (issue 11): nn.LSTM / nn.GRU / nn.RNN become Core ML's own
recurrent ops (lstm, rnn; PyTorch's GRU a while_loop) instead of per-time-step copies, the files stay near their
parameter floor and verify with the reference interpreter; layers Core ML cannot express fall back to the unrolled
conversion with a note saying why."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

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
