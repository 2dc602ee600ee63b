"""Calibration data: the three source kinds, and every lint rule with its one-line message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilize.quantize import calibration as C
from mobilize.quantize.calibration import CalibrationError
from mobilize.spec import ModelSpec, Normalization


class _Img(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _Two(torch.nn.Module):
    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return x.sum(-1) + ids.float().sum(-1)


@pytest.fixture()
def img_spec() -> ModelSpec:
    g = torch.Generator().manual_seed(0)
    return ModelSpec(_Img(), (torch.rand(1, 3, 8, 8, generator=g) * 2 - 1,), input_names=["image"],
                     output_names=["out"], normalization=Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))


@pytest.fixture()
def two_spec() -> ModelSpec:
    return ModelSpec(_Two(), (torch.randn(1, 4), torch.tensor([[1, 2, 3]])), input_names=["x", "ids"],
                     output_names=["y"], input_ranges={"ids": (0, 9)})


def _imgs(n: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 8, 8)).astype(np.float32)


def test_npz_single_input_under_any_key(tmp_path: Path, img_spec: ModelSpec) -> None:
    np.savez(tmp_path / "c.npz", whatever=_imgs())
    data = C.load(tmp_path / "c.npz", img_spec)
    assert data.samples == 10 and data.arrays["image"].shape == (10, 1, 3, 8, 8)
    assert data.feeds()[3]["image"].shape == (1, 3, 8, 8)


def test_npz_by_name_and_by_position(tmp_path: Path, two_spec: ModelSpec) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 4)).astype(np.float32)
    ids = rng.integers(0, 10, (9, 3))
    np.savez(tmp_path / "named.npz", ids=ids, x=x)
    np.savez(tmp_path / "pos.npz", x, ids)  # arr_0, arr_1
    for f in ("named.npz", "pos.npz"):
        data = C.load(tmp_path / f, two_spec)
        assert data.arrays["x"].shape == (9, 1, 4) and data.arrays["ids"].shape == (9, 1, 3)


def test_npz_with_unknown_keys_names_the_inputs(tmp_path: Path, two_spec: ModelSpec) -> None:
    np.savez(tmp_path / "c.npz", a=np.zeros((4, 4)), b=np.zeros((4, 3)))
    with pytest.raises(CalibrationError, match=r"do not name the model's inputs \['x', 'ids'\]"):
        C.load(tmp_path / "c.npz", two_spec)


def test_image_folder_is_normalised_and_resized(tmp_path: Path, img_spec: ModelSpec) -> None:
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 255 * (i % 2), np.uint8)).save(tmp_path / f"{i}.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "n.jpg")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(CalibrationError, match="constant"):  # the flat images are blank: rejected
        C.load(tmp_path, img_spec)
    for i in range(3):
        (tmp_path / f"{i}.png").unlink()
    data = C.load(tmp_path, img_spec)
    a = data.arrays["image"]
    assert a.shape == (1, 1, 3, 8, 8) and a.dtype == np.float32 and a.min() >= -1.0 and a.max() <= 1.0


def test_image_folder_needs_normalization(tmp_path: Path, img_spec: ModelSpec) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    img_spec.normalization = None
    with pytest.raises(CalibrationError, match="declares no normalization"):
        C.load(tmp_path, img_spec)


def test_function_source_yields_tuples(tmp_path: Path, two_spec: ModelSpec) -> None:
    (tmp_path / "cal.py").write_text(textwrap.dedent("""
        import torch
        def samples():
            g = torch.Generator().manual_seed(0)
            for i in range(8):
                yield torch.randn(1, 4, generator=g), torch.randint(0, 10, (1, 3), generator=g)
        def bad():
            yield (torch.randn(1, 4),)
    """))
    data = C.load(f"{tmp_path / 'cal.py'}:samples", two_spec)
    assert data.samples == 8 and data.arrays["ids"].dtype == np.int64
    with pytest.raises(CalibrationError, match="sample 0 has 1 tensors; the model takes 2"):
        C.load(f"{tmp_path / 'cal.py'}:bad", two_spec)


@pytest.mark.parametrize(("arr", "message"), [
    (_imgs()[:, :, :4], "samples are [1, 3, 4, 8], the model takes [1, 3, 8, 8]"),
    ((_imgs() * 127 + 128).astype(np.uint8), "is uint8 but the model takes float"),
    (_imgs() * 200, "far outside the example input's"),
    (np.where(np.arange(10)[:, None, None, None] == 3, np.nan, _imgs()), "192 NaN/Inf values"),
    (np.concatenate([_imgs(9), np.zeros((1, 3, 8, 8), np.float32)]), "sample 9 is constant"),
    (np.repeat(_imgs(1), 10, axis=0), "the same in all 10 samples"),
    (_imgs()[:, 0], "has shape [10, 8, 8]"),
])
def test_lint_rejects_bad_data(tmp_path: Path, img_spec: ModelSpec, arr: np.ndarray, message: str) -> None:
    np.savez(tmp_path / "c.npz", x=arr.astype(arr.dtype))
    with pytest.raises(CalibrationError) as e:
        C.load(tmp_path / "c.npz", img_spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_lint_int_inputs(tmp_path: Path, two_spec: ModelSpec) -> None:
    x = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x, ids=np.full((9, 3), 12))
    with pytest.raises(CalibrationError, match=r"outside the model's range \[0, 9\]"):
        C.load(tmp_path / "c.npz", two_spec)
    np.savez(tmp_path / "c.npz", x=x, ids=np.full((9, 3), 1.5))
    with pytest.raises(CalibrationError, match="model takes integers"):
        C.load(tmp_path / "c.npz", two_spec)


def test_doubtful_range_is_a_warning(tmp_path: Path) -> None:
    spec = ModelSpec(_Img(), (torch.rand(1, 3, 8, 8),), input_names=["image"], output_names=["out"])
    np.savez(tmp_path / "c.npz", x=_imgs())  # [-1, 1] while the example is in [0, 1]
    data = C.load(tmp_path / "c.npz", spec)
    assert data.warnings and "same normalisation" in data.warnings[0]


def test_unreadable_and_missing_sources(tmp_path: Path, img_spec: ModelSpec) -> None:
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CalibrationError, match="not a readable .npz"):
        C.load(tmp_path / "bad.npz", img_spec)
    with pytest.raises(CalibrationError, match="no such file or folder"):
        C.load(tmp_path / "missing.bin", img_spec)
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CalibrationError, match="pickled objects"):
        C.load(tmp_path / "obj.npz", img_spec)


def test_static_precision_refuses_to_run_without_data() -> None:
    with pytest.raises(CalibrationError, match="never calibrates on random inputs"):
        C.require(None, ["fp32", "int8"])
    C.require(None, ["fp32", "int8-weights", "int4-weights"])  # weight-only recipes need no data


def test_too_few_samples_for_static(tmp_path: Path, img_spec: ModelSpec) -> None:
    np.savez(tmp_path / "c.npz", x=_imgs(5))
    data = C.load(tmp_path / "c.npz", img_spec)
    with pytest.raises(CalibrationError, match="5 sample\\(s\\) are too few for int8"):
        C.require(data, ["int8"])


def test_split_holds_out_spread_samples(img_spec: ModelSpec) -> None:
    data = C.CalibrationData({"image": np.arange(32, dtype=np.float32)[:, None, None]}, "t")
    cal, held = data.split(0.25)
    assert cal.samples == 24 and held.samples == 8
    assert held.arrays["image"][0].item() == 0 and held.arrays["image"][-1].item() == 31
    assert not set(cal.arrays["image"].ravel()) & set(held.arrays["image"].ravel())
