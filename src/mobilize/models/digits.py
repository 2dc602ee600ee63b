"""``digits``: a small CNN classifier for the scikit-learn 8x8 handwritten digits.

The input is one 8x8 grayscale image, ``(1, 1, 8, 8)`` float32, whose pixels (0..16 in the data set) are scaled as
``(pixel / 16 - MEAN) / STD``. The output is ``(1, 10)`` logits for the classes ``"0"`` … ``"9"``.

The trained weights live in ``weights/digits.safetensors`` (written by ``python -m mobilize.models.train_digits``)
and are loaded with :func:`safetensors.torch.load_file`, never with pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

#: mean and std of ``pixel / 16`` over the training split (rounded, fixed so the app-side recipe never changes)
MEAN = 0.3052
STD = 0.3760
SCALE = 16.0
LABELS = tuple(str(i) for i in range(10))
WEIGHTS_PATH = Path(__file__).with_name("weights") / "digits.safetensors"

#: the fixed train/test split shared by training and evaluation
SPLIT_TEST_SIZE = 0.25
SPLIT_RANDOM_STATE = 0


class DigitsCNN(nn.Module):
    """conv(1→16)+BN+ReLU → conv(16→32)+BN+ReLU → maxpool 2 → conv(32→32)+BN+ReLU → global avg pool →
    linear(32→10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(32, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(image), 1))


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, x_test, y_train, y_test)``: raw pixels (0..16) as float32 ``(N, 1, 8, 8)``, labels int64."""
    import importlib.util

    if importlib.util.find_spec("sklearn") is None:
        from mobilize.errors import MissingExtraError

        raise MissingExtraError("the digits dataset comes with scikit-learn, which is not installed: "
                                "pip install 'mobilize[datasets]' (or 'mobilize[all]')")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.images.astype(np.float32).reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=SPLIT_TEST_SIZE, random_state=SPLIT_RANDOM_STATE,
                                              stratify=y)
    return x_tr, x_te, y_tr, y_te


def normalize(pixels: np.ndarray) -> np.ndarray:
    """Raw 0..16 pixels → model input: ``(pixel / 16 - MEAN) / STD`` as float32."""
    return ((np.asarray(pixels, dtype=np.float32) / SCALE - MEAN) / STD).astype(np.float32)


def digits_train_set() -> tuple[np.ndarray, np.ndarray]:
    """The training split, normalised: ``x`` float32 ``(N, 1, 8, 8)``, ``y`` int64 ``(N,)``."""
    x_tr, _, y_tr, _ = _split()
    return normalize(x_tr), y_tr


def digits_test_set() -> tuple[np.ndarray, np.ndarray]:
    """The held-out test split (25 %, stratified, ``random_state=0``), normalised: ``x`` float32 ``(N, 1, 8, 8)``,
    ``y`` int64 ``(N,)``."""
    _, x_te, _, y_te = _split()
    return normalize(x_te), y_te


def load_model(weights: str | Path | None = None) -> DigitsCNN:
    """A :class:`DigitsCNN` in eval mode with the trained weights (from safetensors)."""
    from safetensors.torch import load_file

    path = Path(weights) if weights is not None else WEIGHTS_PATH
    with torch.random.fork_rng(devices=[]):  # default layer init draws from the global RNG; restore it
        model = DigitsCNN()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


#: the first digit of the test split (a "2"), raw 0..16 pixels: the example input needs no dataset, so a bundle's
#: bytes are the same with or without scikit-learn installed (tests check it against the split)
FIRST_TEST_DIGIT = (0, 0, 7, 16, 14, 3, 0, 0, 0, 0, 9, 14, 11, 15, 0, 0, 0, 0, 1, 5, 0, 15, 5, 0, 0, 0, 0, 0, 0, 16,
                    5, 0, 0, 0, 0, 0, 3, 16, 4, 0, 0, 0, 0, 1, 12, 14, 1, 0, 0, 0, 5, 12, 16, 16, 14, 1, 0, 0, 8, 16,
                    14, 10, 13, 3)


def example_input() -> torch.Tensor:
    """A real test digit, normalised, ``(1, 1, 8, 8)`` float32."""
    x = normalize(np.asarray(FIRST_TEST_DIGIT, dtype=np.float32).reshape(1, 1, 8, 8))
    return torch.from_numpy(x)


def calibration_set(samples: int = 256) -> Any:
    """Real calibration data for quantizing the digits model: the first ``samples`` training digits, normalised
    (never test digits — those measure accuracy)."""
    from mobilize.quantize.calibration import CalibrationData

    x, _ = digits_train_set()
    return CalibrationData({"image": x[:samples, None]}, f"scikit-learn digits training split ({samples} samples)")
