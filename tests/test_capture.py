"""capture(): the torch.export strategy chain (mobilize.capture). torch.export only, on tiny models."""

from __future__ import annotations

import pytest
import torch

from mobilize.capture import Attempt, Capture, capture, dynamic_shapes_for
from mobilize.errors import CaptureError
from mobilize.spec import ModelSpec


def _placeholder_shapes(program) -> list[tuple]:
    user = {s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
    return [tuple(n.meta["val"].shape) for n in program.graph.nodes if n.op == "placeholder" and n.name in user]


def test_simple_model_uses_non_strict(linear_spec: ModelSpec) -> None:
    cap = capture(linear_spec)
    assert isinstance(cap, Capture)
    assert cap.strategy == "torch.export(strict=False)"
    assert cap.attempts == [Attempt("torch.export(strict=False)", True, None)]
    assert cap.dynamic is False
    assert isinstance(cap.program, torch.export.ExportedProgram)
    x = linear_spec.example_inputs[0]
    torch.testing.assert_close(cap.program.module()(x), linear_spec.module(x))
    d = cap.to_dict()
    assert d == {"strategy": "torch.export(strict=False)", "dynamic": False,
                 "attempts": [{"strategy": "torch.export(strict=False)", "ok": True, "error": None}],
                 "graph": {"op_count": 1, "ops": {"linear.default": 1}, "kinds": {}}}


def test_graph_stats_name_the_modules_of_recurrent_and_prelu_ops() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(4, 8, batch_first=True)
            self.act = torch.nn.PReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.rnn(x)[0])

    cap = capture(ModelSpec(Net(), (torch.randn(1, 5, 4),)))
    assert cap.graph["kinds"] == {"recurrent": ["rnn (GRU)"], "prelu": ["act (PReLU)"]}
    assert cap.graph["op_count"] == sum(cap.graph["ops"].values())


def test_floor_bytes_count_each_storage_once_and_weights_at_the_precision() -> None:
    from mobilize.capture import floor_bytes

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 6)
            self.out = torch.nn.Linear(6, 10, bias=True)
            self.out.weight = self.emb.weight  # tied: stored once
            self.register_buffer("steps", torch.zeros(3, dtype=torch.int64))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.out(self.emb(ids)) + self.steps.sum()

    floors = floor_bytes(capture(ModelSpec(Tied(), (torch.tensor([[1, 2]]),))).program)
    weights, bias, ints = 60, 10, 3
    assert floors["fp32"] == 4 * (weights + bias) + 4 * ints  # int64 counted at 4 bytes (int32 in mobile files)
    assert floors["fp16"] == 2 * (weights + bias) + 4 * ints
    assert floors["int8"] == floors["int8-weights"] == weights + 4 * bias + 4 * ints
    assert floors["int4-weights"] == weights // 2 + 4 * bias + 4 * ints


def test_capture_puts_module_in_eval_mode(models) -> None:
    spec = ModelSpec(module=models.TinyLinear().train(), example_inputs=(torch.randn(2, 4),))
    capture(spec)
    assert not spec.module.training


def test_strict_fallback_when_non_strict_fails(models) -> None:
    spec = ModelSpec(module=models.NumpyInside(), example_inputs=(torch.randn(2, 3),))
    cap = capture(spec)
    assert cap.strategy == "torch.export(strict=True)"
    assert [(a.strategy, a.ok) for a in cap.attempts] == [("torch.export(strict=False)", False),
                                                           ("torch.export(strict=True)", True)]
    first = cap.attempts[0].error
    assert first and "numpy" in first and "\n" not in first and len(first) <= 300
    x = spec.example_inputs[0]
    torch.testing.assert_close(cap.program.module()(x), torch.sin(x) + 1)


def test_data_dependent_control_flow_fails_every_strategy(models) -> None:
    m = models.DataDependent()
    x = torch.randn(2, 3)
    m(x)  # runs fine eagerly: only capture fails
    for strict in (False, True):  # check it really is uncapturable, so the test below is meaningful
        with pytest.raises(Exception):  # noqa: B017
            torch.export.export(m, (x,), strict=strict)
    spec = ModelSpec(module=m, example_inputs=(x,), input_names=["x"], dynamic_dims={"x": {0: "batch"}})
    with pytest.raises(CaptureError) as ei:
        capture(spec)
    msg = str(ei.value)
    for strategy in ("torch.export(strict=False)", "torch.export(strict=True)",
                     "torch.export(strict=False, static shapes)"):
        assert f"{strategy}:" in msg
    assert "\n" not in msg


def test_static_strategy_only_tried_with_dynamic_dims(models) -> None:
    spec = ModelSpec(module=models.DataDependent(), example_inputs=(torch.randn(2, 3),))
    with pytest.raises(CaptureError) as ei:
        capture(spec)
    msg = str(ei.value)
    assert "torch.export(strict=False):" in msg and "torch.export(strict=True):" in msg
    assert "static shapes" not in msg


def test_dynamic_dims_kept(linear_spec: ModelSpec) -> None:
    spec = ModelSpec(module=linear_spec.module, example_inputs=(torch.randn(3, 4),), input_names=["x"],
                     dynamic_dims={"x": {0: "batch"}})
    cap = capture(spec)
    assert cap.dynamic is True
    assert cap.strategy == "torch.export(strict=False)"
    (shape,) = _placeholder_shapes(cap.program)
    assert isinstance(shape[0], torch.SymInt) and not isinstance(shape[1], torch.SymInt)
    assert shape[1] == 4
    out = cap.program.module()(torch.randn(7, 4))  # another batch size runs
    assert out.shape == (7, 3)


def test_dynamic_capture_falls_back_to_static_shapes(models) -> None:
    """A model that fixes its batch: the named Dim fails, Dim.AUTO keeps what it can (nothing) and says so."""
    spec = ModelSpec(module=models.FixedBatch(), example_inputs=(torch.randn(2, 6),), input_names=["x"],
                     dynamic_dims={"x": {0: "batch"}})
    cap = capture(spec)
    assert cap.strategy == "torch.export(strict=False, Dim.AUTO: keep what can stay dynamic)"
    assert cap.dynamic is False
    assert [a.ok for a in cap.attempts] == [False, False, True]
    assert all(a.error for a in cap.attempts[:2])
    assert _placeholder_shapes(cap.program) == [(2, 6)]
    assert cap.dims == {"batch": {"dynamic": False, "symbol": None, "min": None, "max": None, "axes": ["x:0"]}}


def test_a_batch_of_one_is_captured_dynamic_with_its_bounds() -> None:
    """torch.export specialises size-1 dims: the capture enlarges them, so a batch-1 example still gives a dynamic
    batch (the README's example), with the bounds asked for."""
    spec = ModelSpec(module=torch.nn.Linear(6, 3), example_inputs=(torch.randn(1, 6),), input_names=["x"],
                     dynamic_dims={"x": {0: ("batch", 1, 64)}})
    cap = capture(spec)
    assert cap.strategy == "torch.export(strict=False)" and cap.dynamic is True
    assert cap.dims["batch"]["dynamic"] and (cap.dims["batch"]["min"], cap.dims["batch"]["max"]) == (1, 64)
    assert cap.example_inputs[0].shape == (2, 6) and spec.example_inputs[0].shape == (1, 6)
    for n in (1, 4, 64):
        torch.testing.assert_close(cap.program.module()(torch.ones(n, 6)), spec.module(torch.ones(n, 6)))


def test_dynamic_shapes_for_shares_dims_by_name() -> None:
    spec = ModelSpec(module=torch.nn.Identity(), example_inputs=(torch.zeros(2, 5), torch.zeros(2, 5, 3),
                                                                 torch.zeros(4)),
                     input_names=["a", "b", "c"], dynamic_dims={"a": {0: "batch", -1: "seq"}, "b": {1: "seq"}})
    dyn = dynamic_shapes_for(spec)
    assert len(dyn) == 3
    assert set(dyn[0]) == {0, 1}  # negative axes are normalised
    assert dyn[0][1] is dyn[1][1]  # same name → same Dim object
    assert dyn[2] is None
    assert dynamic_shapes_for(ModelSpec(module=torch.nn.Identity(), example_inputs=(torch.zeros(1),))) is None


def test_dynamic_shapes_for_turns_names_into_identifiers() -> None:
    spec = ModelSpec(module=torch.nn.Identity(), example_inputs=(torch.zeros(2, 5),), input_names=["a"],
                     dynamic_dims={"a": {0: "batch size", 1: "3d"}})
    dyn = dynamic_shapes_for(spec)
    names = {d.__name__ for d in dyn[0].values()}
    assert names == {"batch_size", "d_3d"}


def test_exported_program_short_circuits(linear_spec: ModelSpec) -> None:
    program = torch.export.export(linear_spec.module, linear_spec.example_inputs)
    spec = ModelSpec(module=linear_spec.module, example_inputs=linear_spec.example_inputs,
                     exported_program=program)
    cap = capture(spec)
    assert cap.program is program
    assert cap.strategy == "torch.export.load (.pt2)"
    assert [a.ok for a in cap.attempts] == [True]
