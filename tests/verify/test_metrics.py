"""Per-output error metrics (mobilize.verify.metrics) and how parity.judge reads them."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from mobilize.verify import tolerance as T
from mobilize.verify.metrics import SNR_CAP_DB, OutputMetrics, compare, merge
from mobilize.verify.parity import judge

TIGHT = {"atol": 1e-4, "rtol": 1e-4}


def test_identical_arrays() -> None:
    ref = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    m = compare(ref.copy(), ref, **TIGHT)
    assert m.max_abs_error == 0.0 and m.max_rel_error == 0.0
    assert m.cosine == pytest.approx(1.0, abs=1e-12)
    assert m.snr_db == SNR_CAP_DB
    assert m.mismatch_ratio == 0.0
    assert (m.nan_count, m.inf_count, m.ref_nan_count, m.ref_inf_count) == (0, 0, 0, 0)
    assert m.elements == 40
    assert judge("y", m, T.FP32) == []


def test_all_zero_arrays_have_no_cosine_or_snr() -> None:
    """Equal zero vectors prove nothing: cosine and SNR are undefined, not 1.0 and the cap (issue #11)."""
    z = np.zeros((3, 3))
    m = compare(z, z, **TIGHT)
    assert m.cosine is None and m.snr_db is None and m.max_rel_error == 0.0 and m.mismatch_ratio == 0.0


def test_uniform_offset_by_hand() -> None:
    ref = np.ones(100, np.float32)
    act = ref + np.float32(0.01)
    m = compare(act, ref, **TIGHT)
    assert m.max_abs_error == pytest.approx(0.01, rel=1e-5)
    assert m.max_rel_error == pytest.approx(0.01, rel=1e-5)
    # signal = 100 * 1^2, noise = 100 * 0.01^2 → 10 log10(1e4) = 40 dB
    assert m.snr_db == pytest.approx(40.0, abs=1e-3)
    assert m.cosine == pytest.approx(1.0, abs=1e-9)  # same direction
    assert m.mismatch_ratio == 1.0  # every element outside 1e-4 + 1e-4·1
    assert compare(act, ref, atol=0.02, rtol=0).mismatch_ratio == 0.0
    assert compare(act, ref, atol=0.0, rtol=0.02).mismatch_ratio == 0.0


def test_single_element_perturbation_by_hand() -> None:
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    act = np.array([1.0, 2.0, 3.0, 4.5])
    m = compare(act, ref, **TIGHT)
    assert m.max_abs_error == pytest.approx(0.5)
    assert m.max_rel_error == pytest.approx(0.125)
    # signal = 1+4+9+16 = 30, noise = 0.25 → 10 log10(120)
    assert m.snr_db == pytest.approx(10 * math.log10(120))
    # cosine = (1+4+9+18) / (sqrt(1+4+9+20.25) · sqrt(30))
    assert m.cosine == pytest.approx(32 / (math.sqrt(34.25) * math.sqrt(30)))
    assert m.mismatch_ratio == 0.25
    fails = judge("y", m, T.FP32)
    assert any("25.00% of elements" in f for f in fails)
    assert any("SNR" in f for f in fails)


def test_sign_flip_gives_negative_cosine() -> None:
    ref = np.array([1.0, -2.0, 3.0])
    m = compare(-ref, ref, **TIGHT)
    assert m.cosine == pytest.approx(-1.0)
    # noise = sum((2r)^2) = 4·signal → 10 log10(1/4)
    assert m.snr_db == pytest.approx(10 * math.log10(0.25))


def test_zero_reference_with_nonzero_actual() -> None:
    m = compare(np.array([0.0, 1.0]), np.zeros(2), **TIGHT)
    assert m.cosine is None and m.snr_db is None
    assert m.mismatch_ratio == 0.5  # the element-wise check still sees the difference
    assert m.max_rel_error == pytest.approx(1e6)  # relative error uses a 1e-6 floor


def test_snr_is_capped() -> None:
    ref = np.ones(10)
    m = compare(ref + 1e-15, ref, **TIGHT)
    assert m.snr_db == SNR_CAP_DB  # 10 log10(1e30) would be 300


def test_ints_and_fp16_are_compared_as_float64() -> None:
    m = compare(np.array([1, 2, 3], np.int32), np.array([1, 2, 4], np.int64), **TIGHT)
    assert m.max_abs_error == 1.0
    h = compare(np.array([0.5], np.float16), np.array([0.5], np.float32), **TIGHT)
    assert h.max_abs_error == 0.0


def test_nan_in_actual_is_counted_and_judged_a_failure() -> None:
    ref = np.linspace(-1, 1, 1000)
    act = ref.copy()
    act[10] = np.nan
    m = compare(act, ref, **TIGHT)
    assert m.nan_count == 1 and m.ref_nan_count == 0
    assert m.mismatch_ratio == pytest.approx(1 / 1000)
    assert m.max_abs_error == 0.0  # the finite elements agree
    # FP16 allows 1% mismatching elements — the NaN must still fail on its own
    fails = judge("logits", m, T.FP16)
    assert len(fails) == 1
    assert fails[0].startswith("logits: 1 NaN / 0 Inf where PyTorch has 0 / 0")


def test_inf_in_actual_is_counted_and_judged() -> None:
    ref = np.ones(500)
    act = ref.copy()
    act[3] = np.inf
    m = compare(act, ref, **TIGHT)
    assert m.inf_count == 1 and m.mismatch_ratio == pytest.approx(1 / 500)
    assert any("1 Inf" in f for f in judge("y", m, T.FP16))


def test_reference_nan_is_reported() -> None:
    ref = np.array([1.0, np.nan, 3.0])
    m = compare(ref.copy(), ref, **TIGHT)  # same NaN in both: not a mismatch…
    assert m.ref_nan_count == 1 and m.nan_count == 1
    assert m.mismatch_ratio == 0.0
    fails = judge("y", m, T.FP32)  # …but the reference itself is broken
    assert len(fails) == 1
    assert "PyTorch reference itself has 1 NaN / 0 Inf" in fails[0]


def test_matching_infinities_are_not_mismatches_but_opposite_ones_are() -> None:
    ref = np.array([np.inf, -np.inf, 1.0])
    assert compare(ref.copy(), ref, **TIGHT).mismatch_ratio == 0.0
    flipped = np.array([-np.inf, -np.inf, 1.0])
    assert compare(flipped, ref, **TIGHT).mismatch_ratio == pytest.approx(1 / 3)


def test_nan_where_reference_is_finite_and_vice_versa_both_count() -> None:
    ref = np.array([np.nan, 1.0, 2.0])
    act = np.array([0.0, np.nan, 2.0])
    m = compare(act, ref, **TIGHT)
    assert m.mismatch_ratio == pytest.approx(2 / 3)
    assert judge("y", m, T.FP16)  # fails (reference NaN, plus mismatches)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"shape \[2, 3\] differs from the reference's \[3, 2\]"):
        compare(np.zeros((2, 3)), np.zeros((3, 2)), **TIGHT)
    with pytest.raises(ValueError):
        compare(np.zeros(6), np.zeros((1, 6)), **TIGHT)


def test_top1_on_classifier_outputs() -> None:
    ref = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])
    act = ref.copy()
    act[3] = [0.9, 0.0, 0.1]  # one row's argmax changes
    assert compare(act, ref, **TIGHT).top1_agreement == 0.75
    assert compare(ref, ref, **TIGHT).top1_agreement == 1.0
    vec = np.array([0.1, 0.7, 0.2])  # (C,) is one row
    assert compare(vec, vec, **TIGHT).top1_agreement == 1.0
    assert compare(np.array([0.7, 0.1, 0.2]), vec, **TIGHT).top1_agreement == 0.0


@pytest.mark.parametrize("shape", [(1, 16, 64), (4, 1), (), (2, 100001), (1,)])
def test_top1_is_none_for_non_classifier_shapes(shape) -> None:
    a = np.ones(shape)
    assert compare(a, a, **TIGHT).top1_agreement is None


def _m(**kw) -> OutputMetrics:
    base = dict(max_abs_error=0.0, max_rel_error=0.0, cosine=1.0, snr_db=SNR_CAP_DB, mismatch_ratio=0.0,
                nan_count=0, inf_count=0, ref_nan_count=0, ref_inf_count=0, top1_agreement=None, elements=10)
    base.update(kw)
    return OutputMetrics(**base)


def test_merge_takes_the_worst_case() -> None:
    a = _m(max_abs_error=0.1, max_rel_error=0.5, cosine=0.99, snr_db=50.0, mismatch_ratio=0.5, nan_count=1,
           top1_agreement=1.0, elements=10)
    b = _m(max_abs_error=0.3, max_rel_error=0.2, cosine=0.999, snr_db=40.0, mismatch_ratio=0.0, inf_count=2,
           ref_nan_count=3, top1_agreement=0.5, elements=30)
    c = _m(top1_agreement=None, elements=0)
    m = merge([a, b, c])
    assert m.max_abs_error == 0.3 and m.max_rel_error == 0.5
    assert m.cosine == 0.99 and m.snr_db == 40.0
    assert m.mismatch_ratio == pytest.approx((0.5 * 10) / 40)  # element-weighted
    assert (m.nan_count, m.inf_count, m.ref_nan_count) == (1, 2, 3)
    assert m.top1_agreement == pytest.approx(0.75)  # mean over the sets that have one
    assert m.elements == 40


def test_merge_of_one_is_identity() -> None:
    a = _m(max_abs_error=0.2, cosine=0.5, top1_agreement=0.25)
    assert merge([a]) == a


def test_merge_without_top1() -> None:
    assert merge([_m(), _m()]).top1_agreement is None


def test_to_dict_is_json_ready() -> None:
    d = compare(np.ones(3), np.ones(3), **TIGHT).to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(OutputMetrics)}
    assert all(isinstance(v, (int, float)) or v is None for v in d.values())
