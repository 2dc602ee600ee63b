"""Verification input sets (mobilize.verify.inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mobilize.spec import ModelSpec
from mobilize.verify.inputs import InputSet, is_mask, make_input_sets, random_like


def _spec(inputs: dict[str, torch.Tensor], **kw) -> ModelSpec:
    return ModelSpec(module=torch.nn.Identity(), example_inputs=tuple(inputs.values()), input_names=list(inputs),
                     **kw)


def _prefix_mask_rows(arr: np.ndarray) -> bool:
    """Every row along the last axis is 1…1 0…0 with at least one 1."""
    rows = arr.reshape(-1, arr.shape[-1]).astype(np.int64)
    for r in rows:
        ones = int(r.sum())
        if ones < 1 or not (r[:ones] == 1).all() or not (r[ones:] == 0).all():
            return False
    return True


def test_example_set_equals_example_inputs() -> None:
    x = torch.randn(2, 3)
    ids = torch.tensor([[3, 1, 4]], dtype=torch.int64)
    sets = make_input_sets(_spec({"x": x, "ids": ids}))
    ex = sets[0]
    assert ex.label == "example"
    assert list(ex.arrays) == ["x", "ids"]
    np.testing.assert_array_equal(ex.arrays["x"], x.numpy())
    np.testing.assert_array_equal(ex.arrays["ids"], ids.numpy())
    assert ex.arrays["x"].dtype == np.float32 and ex.arrays["ids"].dtype == np.int64
    x.add_(100)  # the example set is a copy, not a view of the tensor
    assert ex.arrays["x"].max() < 50


def test_set_count_labels_and_describe() -> None:
    sets = make_input_sets(_spec({"x": torch.randn(2, 3)}), n_random=3, seed=10)
    assert [s.label for s in sets] == ["example", "random(seed=11)", "random(seed=12)", "random(seed=13)"]
    assert sets[1].describe() == {"label": "random(seed=11)", "shapes": {"x": [2, 3]}}
    assert len(make_input_sets(_spec({"x": torch.randn(2)}), n_random=0)) == 1


def test_random_sets_are_seeded() -> None:
    spec = _spec({"x": torch.randn(4, 5) * 3, "ids": torch.randint(0, 50, (2, 8))})
    a = make_input_sets(spec, seed=0)
    b = make_input_sets(spec, seed=0)
    c = make_input_sets(spec, seed=7)
    for sa, sb in zip(a, b, strict=True):
        for k in sa.arrays:
            np.testing.assert_array_equal(sa.arrays[k], sb.arrays[k])
    for k in ("x", "ids"):
        assert not np.array_equal(a[1].arrays[k], c[1].arrays[k])
        assert not np.array_equal(a[1].arrays[k], a[2].arrays[k])  # the two random sets differ from each other
        assert not np.array_equal(a[0].arrays[k], a[1].arrays[k])  # and from the example


def test_int_inputs_respect_inclusive_input_ranges() -> None:
    spec = _spec({"ids": torch.zeros(1, 4000, dtype=torch.int64)}, input_ranges={"ids": (3, 6)})
    for s in make_input_sets(spec)[1:]:
        ids = s.arrays["ids"]
        assert ids.dtype == np.int64
        assert ids.min() == 3 and ids.max() == 6  # both ends reached: inclusive range
        assert set(np.unique(ids).tolist()) == {3, 4, 5, 6}


def test_int_inputs_stay_within_example_min_max() -> None:
    ex = torch.tensor([[10, 12, 15, 11] * 500], dtype=torch.int32)
    for s in make_input_sets(_spec({"ids": ex}))[1:]:
        ids = s.arrays["ids"]
        assert ids.dtype == np.int32
        assert ids.min() == 10 and ids.max() == 15


def test_constant_int_example_stays_constant() -> None:
    ex = torch.full((2, 3), 7, dtype=torch.int64)
    for s in make_input_sets(_spec({"k": ex}))[1:]:
        assert (s.arrays["k"] == 7).all()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_masks_stay_prefix_masks(dtype) -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]], dtype=dtype)
    spec = _spec({"ids": torch.randint(0, 9, (2, 8)), "attention_mask": mask})
    seen_lengths = set()
    for s in make_input_sets(spec, n_random=6)[1:]:
        m = s.arrays["attention_mask"]
        assert m.dtype == mask.numpy().dtype and m.shape == (2, 8)
        assert _prefix_mask_rows(m)
        seen_lengths.update(m.astype(np.int64).sum(-1).tolist())
    assert len(seen_lengths) > 2  # lengths really are random


def test_mask_with_explicit_range_uses_the_range() -> None:
    mask = torch.tensor([[1, 1, 0, 0]] * 500)
    spec = _spec({"m": mask}, input_ranges={"m": (0, 1)})
    m = make_input_sets(spec)[1].arrays["m"]
    assert set(np.unique(m).tolist()) == {0, 1}
    assert not _prefix_mask_rows(m)  # plain uniform 0/1, not prefix masks


def test_float_in_unit_interval_stays_there() -> None:
    x = torch.rand(3, 1000)
    for s in make_input_sets(_spec({"x": x}))[1:]:
        a = s.arrays["x"]
        assert a.dtype == np.float32
        assert a.min() >= 0.0 and a.max() <= 1.0
        assert a.min() < 0.05 and a.max() > 0.95  # spread over the interval


def test_float_in_symmetric_unit_interval() -> None:
    x = torch.rand(3, 1000) * 2 - 1
    a = make_input_sets(_spec({"x": x}))[1].arrays["x"]
    assert a.min() >= -1.0 and a.max() <= 1.0 and a.min() < -0.9


def test_float_outside_unit_interval_follows_example_statistics() -> None:
    x = torch.randn(100, 100) * 5 + 20
    a = make_input_sets(_spec({"x": x}))[1].arrays["x"]
    assert abs(a.mean() - 20) < 0.5 and abs(a.std() - 5) < 0.5


def test_float_input_range() -> None:
    x = torch.randn(4, 500)
    a = make_input_sets(_spec({"x": x}, input_ranges={"x": (-3.0, -2.0)}))[1].arrays["x"]
    assert a.min() >= -3.0 and a.max() <= -2.0


def test_dynamic_dims_last_set_changes_only_the_dynamic_axis() -> None:
    spec = _spec({"ids": torch.randint(0, 9, (2, 6)), "mask": torch.ones(2, 6, dtype=torch.int64),
                  "img": torch.rand(2, 3, 5)},
                 dynamic_dims={"ids": {1: "seq"}, "mask": {-1: "seq"}})
    sets = make_input_sets(spec, n_random=3)
    for s in sets[:-1]:
        assert {k: v.shape for k, v in s.arrays.items()} == {"ids": (2, 6), "mask": (2, 6), "img": (2, 3, 5)}
    last = sets[-1]
    assert last.label == "random(seed=3, other dynamic sizes)"
    ids, mask, img = last.arrays["ids"].shape, last.arrays["mask"].shape, last.arrays["img"].shape
    assert ids[0] == 2 and mask[0] == 2  # static axis unchanged
    assert ids[1] != 6 and ids[1] == mask[1]  # one new size per dim name, shared
    assert img == (2, 3, 5)  # inputs without dynamic dims unchanged


def test_vary_dynamic_false_keeps_shapes() -> None:
    spec = _spec({"x": torch.rand(2, 6)}, dynamic_dims={"x": {0: "batch"}})
    for s in make_input_sets(spec, vary_dynamic=False):
        assert s.arrays["x"].shape == (2, 6)


@pytest.mark.parametrize("size", [1, 4, 100, 5000])
def test_dynamic_size_differs_and_is_positive(size) -> None:
    spec = _spec({"x": torch.rand(size, 1)}, dynamic_dims={"x": {0: "n"}})
    n = make_input_sets(spec, n_random=1)[-1].arrays["x"].shape[0]
    assert n != size and n >= 1


def test_is_mask() -> None:
    assert is_mask(np.array([[1, 1, 0]]))
    assert is_mask(np.array([True]))
    assert not is_mask(np.array([[1, 1, 1]]))  # only ones: not recognisably a mask
    assert not is_mask(np.array([[0, 1, 2]]))
    assert not is_mask(np.array([[0.0, 1.0]]))
    assert not is_mask(np.array([1]))


def test_input_set_is_a_plain_record() -> None:
    s = InputSet("example", {"x": np.zeros((2, 3), np.float32)})
    assert s.describe() == {"label": "example", "shapes": {"x": [2, 3]}}


# --- random_like properties ------------------------------------------------------------------------------------

_shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6)
_int_dtypes = st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8])
_float_dtypes = st.sampled_from([np.float16, np.float32, np.float64])


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data(), dtype=_int_dtypes, shape=_shapes)
def test_random_like_int_properties(data, dtype, shape) -> None:
    ex = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
                              elements=st.integers(0, 100)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    out = random_like(ex, shape, np.random.default_rng(seed))
    assert out.shape == shape and out.dtype == ex.dtype
    if is_mask(ex):
        assert _prefix_mask_rows(out)
    else:
        assert out.min() >= ex.min() and out.max() <= ex.max()
    again = random_like(ex, shape, np.random.default_rng(seed))
    np.testing.assert_array_equal(out, again)


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data(), dtype=_float_dtypes, shape=_shapes)
def test_random_like_float_properties(data, dtype, shape) -> None:
    lo, hi = data.draw(st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (-50.0, 50.0)]))
    ex = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
                              elements=st.floats(lo, hi, width=16)))
    out = random_like(ex, shape, np.random.default_rng(data.draw(st.integers(0, 1000))))
    assert out.shape == shape and out.dtype == ex.dtype
    assert np.isfinite(out).all()
    if ex.min() >= 0 and ex.max() <= 1:
        assert out.min() >= 0 and out.max() <= 1
    elif ex.min() >= -1 and ex.max() <= 1:
        assert out.min() >= -1 and out.max() <= 1


@settings(max_examples=40, deadline=None, database=None)
@given(shape=_shapes, low=st.integers(-1000, 1000), width=st.integers(0, 50), seed=st.integers(0, 1000))
def test_random_like_value_range_is_inclusive_for_ints(shape, low, width, seed) -> None:
    ex = np.zeros((1,), np.int64)
    out = random_like(ex, shape, np.random.default_rng(seed), (low, low + width))
    assert out.dtype == np.int64 and out.shape == shape
    assert out.min() >= low and out.max() <= low + width


@settings(max_examples=40, deadline=None, database=None)
@given(shape=_shapes, seed=st.integers(0, 1000))
def test_random_like_bool_is_prefix_mask(shape, seed) -> None:
    out = random_like(np.array([True, False]), shape, np.random.default_rng(seed))
    assert out.dtype == np.bool_ and out.shape == shape
    assert _prefix_mask_rows(out)


def test_random_like_scalar_shapes() -> None:
    rng = np.random.default_rng(0)
    assert random_like(np.array(True), (), rng).shape == ()
    assert random_like(np.array(5, np.int64), (), rng) == 5
    assert random_like(np.array(0.5, np.float32), (), rng).shape == ()


def test_random_like_empty_bool_input() -> None:
    out = random_like(np.zeros((2, 0), np.bool_), (2, 0), np.random.default_rng(0))
    assert out.shape == (2, 0) and out.dtype == np.bool_
