"""``gru_classifier``: a GRU sequence classifier with seeded random weights (architecture test model).

Input ``sequence`` float32 ``(1, 20, 16)`` (batch, time, features) → one GRU layer (16 → 32, batch-first, zero
initial state) → linear on the last hidden state → ``logits`` ``(1, 4)``.
"""

from __future__ import annotations

import torch
from torch import nn

SEED = 0
STEPS = 20
FEATURES = 16
HIDDEN = 32
NUM_CLASSES = 4


class GRUClassifier(nn.Module):
    def __init__(self, features: int = FEATURES, hidden: int = HIDDEN, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(sequence)
        return self.head(h[-1])


def _init(model: nn.Module, seed: int) -> None:
    """Seeded uniform weights (twice PyTorch's default GRU bound, so the gates are not all near 0.5)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            bound = 1.0 / HIDDEN ** 0.5
            p.copy_(torch.empty(p.shape).uniform_(-bound * 2, bound * 2, generator=gen))


def build_model(seed: int = SEED) -> GRUClassifier:
    """The zoo's GRU classifier in eval mode with seeded weights."""
    with torch.random.fork_rng(devices=[]):  # default layer init draws from the global RNG; restore it
        model = GRUClassifier()
    _init(model, seed)
    return model.eval()


def example_input(seed: int = SEED) -> torch.Tensor:
    """A seeded standard-normal sequence, ``(1, 20, 16)`` float32."""
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(1, STEPS, FEATURES, generator=gen)
