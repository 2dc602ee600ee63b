"""Every repair, applied to a captured program, computes what PyTorch computes: the rewritten program (run by torch)
against the eager module, on edge values as well as random ones — and the op it replaces is gone.

Converter acceptance of each rewrite is checked end to end in tests/e2e/test_repairs.py (slow).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilize.repair import REPAIRS, apply, get

TESTED: set[str] = set()  # repairs exercised below; test_every_repair_has_an_equivalence_test checks it is all


def check(name: str, fmt: str, module: nn.Module, *inputs: tuple[torch.Tensor, ...], gone: tuple[str, ...] = (),
          atol: float = 0.0, rtol: float = 0.0) -> torch.export.ExportedProgram:
    """Capture ``module`` on ``inputs[0]``, apply repair ``name`` for ``fmt``; the repaired program must fire, drop
    every op in ``gone`` and match the module on every input tuple (NaN where PyTorch gives NaN)."""
    TESTED.add(name)
    module = module.eval()
    program = torch.export.export(module, inputs[0])
    repaired, hits = apply(program, fmt, [get(name)])
    assert hits.get(name), f"{name} did not fire: {hits}"
    targets = {str(n.target) for n in repaired.graph.nodes if n.op == "call_function"}
    assert not set(gone) & targets, f"{name} left {set(gone) & targets}"
    run = repaired.module()
    for args in inputs:
        with torch.no_grad():
            want, got = module(*args), run(*args)
        for w, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            assert g.dtype == w.dtype and g.shape == w.shape
            torch.testing.assert_close(g, w, atol=atol, rtol=rtol, equal_nan=True)
    return repaired


class Fn(nn.Module):
    def __init__(self, fn) -> None:  # noqa: ANN001
        super().__init__()
        self.fn = fn

    def forward(self, *args: torch.Tensor):  # noqa: ANN201
        return self.fn(*args)


EDGES = torch.tensor([-3.0, -1.5, -0.75, -0.0, 0.0, 0.3, 0.75, 1.5, 2.2, float("nan"), float("inf"), -float("inf")])


# --- arithmetic and layout -----------------------------------------------------------------------------------------


def test_fmod_matches_on_signs_multiples_and_non_finite_values() -> None:
    x = torch.cat([EDGES, torch.randn(50) * 4])
    check("fmod-remainder", "coreml", Fn(lambda a: torch.fmod(a, 0.75) + torch.fmod(a, -1.25)), (x,),
          gone=("aten.fmod.Scalar",), atol=1e-6)


def test_fmod_tensor_divisor_and_integers() -> None:
    a, b = torch.randn(4, 6) * 5, torch.randn(6).abs() + 0.5
    b[0] = -b[0]
    ints = torch.tensor([-7, -3, 0, 3, 7, 10])
    check("fmod-remainder", "coreml", Fn(lambda x, y, i: (torch.fmod(x, y), torch.fmod(i, 4), torch.fmod(i, -3))),
          (a, b, ints), gone=("aten.fmod.Tensor", "aten.fmod.Scalar"), atol=1e-5)


@pytest.mark.parametrize("shifts,dims", [((2, -1), (1, 2)), ((-5,), (1,)), ((9,), (2,)), ((3,), ()), ((0,), (1,))])
def test_roll_becomes_slices(shifts, dims) -> None:  # noqa: ANN001
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    repaired = check("roll-slices", "coreml", Fn(lambda t: torch.roll(t, shifts, dims) * 1.0), (x,),
                     gone=("aten.roll.default", "aten.fmod.Scalar", "aten.index_select.default"))
    assert repaired is not None


def test_alias_of_a_full_slice() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("ids", torch.arange(6).unsqueeze(0), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.ids[:, : x.shape[-1]]

    check("alias-identity", "coreml", M(), (torch.randn(2, 6),), gone=("aten.alias.default",))


def test_as_strided_of_adaptive_pooling_becomes_a_reshape() -> None:
    from tests.fixtures.models.repair_gaps import pooled_tokens

    model, args = pooled_tokens()  # the pooled tokens are transposed: torch's decomposition restrides the mean
    repaired = check("as-strided-gather", "coreml", model, args, (torch.randn_like(args[0]),),
                     gone=("aten.as_strided.default",), atol=1e-6)
    assert "aten.index_select.default" not in {str(n.target) for n in repaired.graph.nodes}


def test_as_strided_window_becomes_a_gather() -> None:
    check("as-strided-gather", "coreml", Fn(lambda t: torch.as_strided(t * 1.0, (3, 2, 2), (2, 5, 1), 1)),
          (torch.randn(4, 5),), gone=("aten.as_strided.default",))


@pytest.mark.parametrize("kw", [dict(kernel_size=(3, 2)), dict(kernel_size=3, padding=1, stride=2),
                                dict(kernel_size=(2, 3), dilation=(2, 1), padding=(1, 0), stride=(1, 2))])
def test_unfold_becomes_grouped_conv(kw) -> None:  # noqa: ANN001
    check("im2col-grouped-conv", "coreml", Fn(lambda t: F.unfold(t, **kw)), (torch.randn(2, 3, 7, 6),),
          gone=("aten.im2col.default", "aten.index.Tensor"), atol=1e-6)


@pytest.mark.parametrize("kw,out,atol", [(dict(kernel_size=2, stride=2), (8, 6), 0.0),
                                         (dict(kernel_size=3, padding=1), (5, 4), 1e-6),
                                         (dict(kernel_size=(2, 3), stride=(2, 1), dilation=(1, 2)), (7, 9), 1e-6)])
def test_fold_becomes_grouped_conv_transpose(kw, out, atol) -> None:  # noqa: ANN001
    unfolded = F.unfold(torch.randn(2, 3, *out), **kw)
    check("col2im-grouped-conv-transpose", "coreml", Fn(lambda t: F.fold(t, out, **kw)), (unfolded,),
          gone=("aten.col2im.default", "aten.index_put.default"), atol=atol)


def test_full_like_gets_a_float_fill() -> None:
    repaired = check("full-like-dtype", "coreml", Fn(lambda t: (torch.zeros_like(t) + t, torch.ones_like(t) * 2)),
                     (torch.randn(3, 4),))
    fills = [n.args[1] for n in repaired.graph.nodes if str(n.target) == "aten.full_like.default"]
    assert fills and all(isinstance(v, float) for v in fills)


@pytest.mark.parametrize("case", ["one_index", "accumulate", "two_adjacent", "non_adjacent", "broadcast_value"])
def test_index_put_with_whole_slices(case: str) -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        if case == "one_index":
            y[:, torch.tensor([0, 3])] = x[:, 1:3] * 2
        elif case == "accumulate":
            y[:, :, torch.tensor([1, 1, 2])] += 1.5  # a repeated index accumulates twice
        elif case == "two_adjacent":
            y[:, torch.tensor([1, 0]), torch.tensor([2, 3])] = x[:, 0, :2] * 3
        elif case == "non_adjacent":
            y[torch.tensor([1, 0]), :, torch.tensor([0, 2])] = x[:, :, 0] * 3  # torch puts the index block first
        else:
            y[:, torch.tensor([4])] = 7.0
        return y

    check("index-put-leading", "coreml", Fn(fn), (torch.randn(2, 5, 4),), atol=1e-6)


def test_rank6_reduction_and_unroll() -> None:
    from tests.fixtures.models.repair_gaps import query_pool

    model, args = query_pool()
    program = torch.export.export(model, args)
    repaired, hits = apply(program, "coreml", [get("high-rank-reduce"), get("high-rank-gather")])
    TESTED.update({"high-rank-reduce", "high-rank-gather"})
    assert hits.get("high-rank-reduce") and hits.get("high-rank-gather"), hits
    ranks = [n.meta["val"].dim() for n in repaired.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    assert max(ranks) <= 5, ranks
    for x in (args[0], torch.randn_like(args[0])):
        torch.testing.assert_close(repaired.module()(x), model(x), rtol=0, atol=0)


def test_view_of_transposed_attention_gets_a_contiguous_copy() -> None:
    from tests.fixtures.models.repair_gaps import shifted_window

    model, args = shifted_window()
    repaired = check("view-contiguous", "onnx", model, args, (torch.randn_like(args[0]),), atol=1e-6)
    views = [n for n in repaired.graph.nodes if str(n.target) == "aten.view.default"]
    assert all(str(v.args[0].target) not in ("aten.transpose.int", "aten.permute.default") for v in views)


def test_tanh_gelu_is_written_out_and_exact_gelu_kept() -> None:
    x = torch.cat([torch.linspace(-8, 8, 201), EDGES])
    repaired = check("gelu-tanh-formula", "coreml",
                     Fn(lambda t: (F.gelu(t, approximate="tanh"), F.gelu(t))), (x,), atol=1e-6, rtol=1e-6)
    gelus = [n for n in repaired.graph.nodes if str(n.target) == "aten.gelu.default"]
    assert len(gelus) == 1 and "tanh" not in (*gelus[0].args[1:], *gelus[0].kwargs.values())
    assert REPAIRS["gelu-tanh-formula"].applies is not None


# --- TFLite --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slopes", ["in_unit_interval", "outside", "zero", "single"])
def test_prelu_is_bit_identical(slopes: str) -> None:
    act = nn.PReLU(1 if slopes == "single" else 6)
    weights = {"outside": [-0.5, 0.1, 0.25, 1.0, 1.5, 3.0], "zero": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}
    with torch.no_grad():
        act.weight.copy_(torch.tensor(weights[slopes]) if slopes in weights
                         else torch.linspace(0.05, 1, act.weight.numel()))
    model = nn.Sequential(nn.Conv2d(3, 6, 1), act)
    x = torch.randn(2, 3, 4, 4)
    x[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    with torch.no_grad():  # the first channel sees +inf and -inf (0·inf is NaN: a zero slope cannot use w·x)
        model[0].weight.fill_(0.0).add_(torch.eye(6, 3).view(6, 3, 1, 1))
    repaired = check("prelu-maximum", "tflite", model, (x,), (torch.randn(2, 3, 4, 4) * 1e3,))
    ops = {str(n.target) for n in repaired.graph.nodes}
    assert "aten.prelu.default" not in ops
    assert ("aten.maximum.default" in ops) == (slopes in ("in_unit_interval", "single")), ops  # needs 0 < w ≤ 1


def test_explicit_expand_becomes_implicit_broadcast() -> None:
    from tests.fixtures.models.repair_gaps import linear_attention

    model, args = linear_attention()
    repaired = check("implicit-broadcast", "tflite", model.attn, (torch.randn(1, 8, 4, 16),), atol=1e-6)
    assert "aten.expand.default" not in {str(n.target) for n in repaired.graph.nodes}


def test_every_repair_has_an_equivalence_test() -> None:
    """Adding a repair means adding its test here (this module's tests run in file order; this one is last)."""
    assert set(REPAIRS) - TESTED == set(), f"repairs without an equivalence test: {sorted(set(REPAIRS) - TESTED)}"


def test_fmod_rounding_bound() -> None:
    """The remainder form is ``a - b·q`` with one rounding, like the C fmod: within an ulp of |a|."""
    a = torch.randn(10_000, dtype=torch.float64) * 1e3
    got = torch.where((torch.remainder(a, 0.7) != 0) & ((torch.remainder(a, 0.7) < 0) != (a < 0)),
                      torch.remainder(a, 0.7) - 0.7, torch.remainder(a, 0.7))
    assert float((got - torch.fmod(a, 0.7)).abs().max()) <= 1e3 * math.ulp(1.0) * 4
