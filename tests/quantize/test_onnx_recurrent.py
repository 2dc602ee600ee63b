"""ONNX int8 recipes quantize recurrent layers (LSTM, GRU) instead of leaving their weights float.

Small sequence models (a 2-layer BiLSTM over 80 mel-like features and a BiGRU, hidden 24–32, 10 steps) are exported
by the real torch.onnx exporter, quantized by onnxruntime plus :mod:`mobilize.quantize.onnx_recurrent`, and run in
onnxruntime against PyTorch on held-out sequences; nothing is mocked. Without the recurrent pass, every int8 file of
these models keeps its LSTM/GRU weights float (``float_weights`` reports them) and is ~3× larger.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from mobilize.quantize import onnx as qonnx
from mobilize.quantize.onnx_recurrent import float_weights
from mobilize.quantize.recipes import recipe

STEPS = 10
INT8 = [("int8", "qdq-per-channel"), ("int8", "qoperator-per-channel"), ("int8-weights", "dynamic")]


class Tagger(torch.nn.Module):
    """Per-step classifier over a recurrent encoder (batch_first, like most sequence models)."""

    def __init__(self, kind: str, features: int, hidden: int, layers: int, bidirectional: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = getattr(torch.nn, kind)(features, hidden, num_layers=layers, bidirectional=bidirectional,
                                           batch_first=True)
        self.head = torch.nn.Linear(hidden * (2 if bidirectional else 1), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


def _sequences(n: int, features: int, seed: int) -> np.ndarray:
    """Structured sequences: per feature a sinusoid with its own frequency and phase, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(STEPS, dtype=np.float32)[None, :, None]
    freq = rng.uniform(0.2, 1.2, (n, 1, features))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, features))
    x = np.sin(freq * t + phase) * rng.uniform(0.5, 1.5, (n, 1, features))
    return (x + rng.normal(0, 0.05, x.shape)).astype(np.float32)


def _model(tmp_path_factory: pytest.TempPathFactory, kind: str, features: int, hidden: int, layers: int,
           bi: bool) -> dict:
    d = tmp_path_factory.mktemp(kind.lower())
    module = Tagger(kind, features, hidden, layers, bi).eval()
    fp32 = d / f"{kind.lower()}.onnx"
    torch.onnx.export(module, (torch.zeros(1, STEPS, features),), str(fp32), input_names=["x"], output_names=["y"],
                      dynamo=True, external_data=False, opset_version=20)
    calib, held = _sequences(24, features, 0), _sequences(8, features, 1)
    with torch.no_grad():
        ref = module(torch.from_numpy(held)).numpy()
    params = sum(p.numel() for p in module.parameters())
    return {"dir": d, "fp32": fp32, "calib": [{"x": c[None]} for c in calib], "held": held, "ref": ref,
            "params": params, "kind": kind}


@pytest.fixture(scope="module")
def bilstm(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # 80 input features: weight_ih_l0 (128×80) is above the exporter's constant-folding limit (8192 elements), so
    # the file computes that W with Slice/Concat, as in real speech/OCR models
    return _model(tmp_path_factory, "LSTM", 80, 32, 2, True)


@pytest.fixture(scope="module")
def gru(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _model(tmp_path_factory, "GRU", 16, 24, 1, True)


def _session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if optimized is not None:  # EXTENDED: every load-time rewrite that is not hardware-specific
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _snr(path: Path, m: dict) -> float:
    s = _session(path)
    got = np.concatenate([s.run(None, {"x": x[None]})[0] for x in m["held"]])
    ref = m["ref"]
    return float(10 * np.log10((ref ** 2).sum() / ((got - ref) ** 2).sum()))


def _weight_bytes(path: Path) -> int:
    return sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer)


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.slow
def test_float_weights_sees_recurrent_weights_behind_the_exporters_gate_reordering(bilstm: dict) -> None:
    """torch.onnx computes LSTM W/R from PyTorch's weights with Slice/Concat (gate order): still float weights."""
    model = onnx.load(str(bilstm["fp32"]))
    inits = {i.name for i in model.graph.initializer}
    lstms = [n for n in model.graph.node if n.op_type == "LSTM"]
    # the exporter folds small constants only: the larger W/R stay Slice/Concat outputs, which this pass must fold
    assert len(lstms) == 2 and any(n.input[k] not in inits for n in lstms for k in (1, 2))
    left = float_weights(bilstm["fp32"])
    assert left.pop("LSTM") == 2 and sum(left.values()) == 1  # and the head (MatMul or Gemm)
    assert [layer["op"] for layer in qonnx.layers(bilstm["fp32"])].count("LSTM") == 2  # sensitivity can probe them


@pytest.mark.parametrize(("precision", "name"), INT8)
@pytest.mark.parametrize("which", ["bilstm", "gru"])
def test_int8_recipes_leave_no_float_recurrent_weights(request: pytest.FixtureRequest, which: str, precision: str,
                                                       name: str, tmp_path: Path) -> None:
    m = request.getfixturevalue(which)
    out = tmp_path / f"{name}.onnx"
    notes = qonnx.quantize(m["fp32"], out, recipe("onnx", precision, name), m["calib"], [], tmp_path / "w")
    left = float_weights(out)
    assert "LSTM" not in left and "GRU" not in left, (left, notes)
    assert left == {}, left  # the head (Gemm/MatMul) is quantized by onnxruntime itself
    ops = _ops(out)
    if m["kind"] == "LSTM":
        assert ops.count("DynamicQuantizeLSTM") == 2 and "LSTM" not in ops
        assert any("DynamicQuantizeLSTM (2 node(s)" in n for n in notes), notes
    else:
        assert ops.count("GRU") == 1 and ops.count("DequantizeLinear") >= 2
        assert any(n.startswith("GRU weights int8 per gate row") for n in notes), notes
    # the weights are stored as int8: about one byte per parameter, plus float biases and per-row scales (4 KB on
    # these tiny models; fp32 weights would be 4 bytes per parameter). File sizes are checked end to end, where the
    # quantized file has its debug metadata stripped.
    assert _weight_bytes(out) <= 1.25 * m["params"] + 4096
    assert _snr(out, m) > 25.0


def test_lstm_weights_are_rounded_exactly_as_onnxruntimes_own_lstm_path(bilstm: dict, tmp_path: Path) -> None:
    """``quantize_dynamic``'s LSTM path (operators/lstm.py) on the folded float graph gives the same int8 weights and
    scales as mobilize's pass on the same graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from mobilize.quantize.onnx_recurrent import quantize_recurrent

    pre = qonnx.preprocess(bilstm["fp32"], tmp_path)  # W/R folded into initializers, which ORT's path requires
    theirs, ours = tmp_path / "ort.onnx", tmp_path / "ours.onnx"
    quantize_dynamic(str(pre), str(theirs), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["LSTM"])
    ours.write_bytes(pre.read_bytes())
    quantize_recurrent(ours)

    def weights(p: Path) -> list[list[np.ndarray]]:
        model = onnx.load(str(p))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return [[inits[n.input[k]] for k in (1, 2, 8, 9, 10, 11)] for n in model.graph.node
                if n.op_type == "DynamicQuantizeLSTM"]

    a, b = weights(theirs), weights(ours)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            assert u.dtype == v.dtype and u.shape == v.shape
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("which", ["bilstm", "gru"])
def test_a_recurrent_layer_kept_float_stays_float_when_onnxruntime_loads_the_file(request: pytest.FixtureRequest,
                                                                                  which: str, tmp_path: Path) -> None:
    """The sensitivity search keeps a layer float by excluding it: its weights stay fp32 in the file and onnxruntime's
    load-time optimiser does not rewrite it; the other recurrent layers are still quantized."""
    m = request.getfixturevalue(which)
    kind = m["kind"]
    names = [layer["name"] for layer in qonnx.layers(m["fp32"]) if layer["op"] == kind]
    out = tmp_path / "kept.onnx"
    notes = qonnx.quantize(m["fp32"], out, recipe("onnx", "int8", "qdq-per-channel"), m["calib"], names[:1],
                           tmp_path / "w")
    assert float_weights(out) == {kind: 1}
    assert any(n.startswith(f"weights left float32: {kind} ×1") and "kept float on purpose" in n for n in notes)
    model = onnx.load(str(out))
    (kept,) = [n for n in model.graph.node if n.name == names[0]]
    inits = {i.name: i for i in model.graph.initializer}
    assert kept.op_type == kind and inits[kept.input[1]].data_type == onnx.TensorProto.FLOAT

    optimized = tmp_path / "optimized.onnx"
    _session(out, optimized)
    after = {n.name: n.op_type for n in onnx.load(str(optimized)).graph.node}
    assert after[names[0]] == kind
    if kind == "LSTM":
        assert after[names[1]] == "DynamicQuantizeLSTM"
    assert _snr(out, m) > 25.0


def test_int4_weights_names_the_op_types_left_float(bilstm: dict, tmp_path: Path) -> None:
    out = tmp_path / "int4.onnx"
    notes = qonnx.quantize(bilstm["fp32"], out, recipe("onnx", "int4-weights", "matmul-nbits"), None, [],
                           tmp_path / "w")
    assert float_weights(out).get("LSTM") == 2
    assert any(n.startswith("weights left float32:") and "LSTM ×2" in n for n in notes), notes


class LineReader(torch.nn.Module):
    """OCR-shaped: a small CNN over a text-line image, then a 2-layer BiLSTM over its columns, per-column logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.cnn = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d((4, 1)))
        self.rnn = torch.nn.LSTM(32, 48, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(96, 20)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.cnn(image)  # N, 16, 2, W/2
        n, c, h, w = f.shape
        return self.fc(self.rnn(f.permute(0, 3, 1, 2).reshape(n, w, c * h))[0])


def _text_lines(n: int) -> np.ndarray:
    """Dark lines with bright vertical strokes of random position, width, height and intensity, plus noise."""
    rng = np.random.default_rng(0)
    x = np.zeros((n, 1, 16, 64), np.float32)
    for i in range(n):
        for _ in range(rng.integers(6, 14)):
            c, w, top, bot = rng.integers(0, 62), rng.integers(1, 3), rng.integers(0, 6), rng.integers(10, 16)
            x[i, 0, top:bot, c:c + w] = rng.uniform(0.5, 1.0)
    return x + rng.normal(0, 0.05, x.shape).astype(np.float32)


@pytest.mark.slow  # the whole export pipeline (~15 s)
def test_export_of_a_cnn_bilstm_stores_its_int8_files_at_about_one_byte_per_weight(tmp_path: Path) -> None:
    from mobilize import api
    from mobilize.bundle import manifest as mf
    from mobilize.spec import ModelSpec

    module = LineReader().eval()
    params = sum(p.numel() for p in module.parameters())
    np.savez(tmp_path / "calib.npz", image=_text_lines(32))
    spec = ModelSpec(module, (torch.zeros(1, 1, 16, 64),), input_names=["image"], name="lines")
    result = api.export(spec, tmp_path / "b", formats="onnx", precisions="fp32,int8,int8-weights,int4-weights",
                        calibration=tmp_path / "calib.npz", isolate=False)
    mf.validate(result.manifest)
    arts = {a["precision"]: a for a in result.artifacts}
    assert all(a["status"] == "ok" for a in arts.values()), {k: a["error"] for k, a in arts.items()}
    for prec in ("int8", "int8-weights"):
        a, q = arts[prec], arts[prec]["quantization"]
        assert q["float_weights"] == {}, (prec, q["float_weights"], a["notes"])
        # static int8 runs the LSTMs as DynamicQuantizeLSTM; the weight-only recipe stores their weights int8 and
        # dequantizes them once at load (either way no LSTM weight stays float)
        lstm_int8 = ("DynamicQuantizeLSTM (2 node(s)" if prec == "int8" else "LSTM ×2")
        assert any(lstm_int8 in n for n in a["notes"]), (prec, a["notes"])
        assert a["bytes"] <= 1.25 * params + 64 * 1024, (prec, a["bytes"], params)
        assert q["meets_target"] is True, (prec, q["achieved"])
    q4 = arts["int4-weights"]["quantization"]
    assert q4["float_weights"] == {"Conv": 2, "LSTM": 2}
    assert any(n.startswith("weights left float32: Conv ×2, LSTM ×2") for n in arts["int4-weights"]["notes"])
