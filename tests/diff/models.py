"""Small models for the ``mobilize diff`` tests (loaded as ``tests/diff/models.py:<fn>`` sources).

- :func:`broken`: a CNN whose layers all have weights of distinct shapes, so a test can find one layer's weight in
  every format's file by shape alone (no mobilize code involved) and corrupt it.
- :func:`outlier`: an MLP whose ``wide`` layer has one output channel 300× larger than the others: with one int8
  grid for the whole tensor (per-tensor activation quantization), every other channel of that output collapses onto
  a few levels. ``mix`` divides that channel back down, so the model's output depends on all channels alike.
"""

from __future__ import annotations

import torch
from torch import nn

#: the module whose weight the corruption tests change
BROKEN_LAYER = "block.2"
#: the module whose output breaks a shared int8 range
OUTLIER_LAYER = "wide"
OUTLIER_GAIN = 300.0


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU(),
                                   nn.Conv2d(16, 20, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(20, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.stem(x)))
        x = self.pool(self.block(x))
        return self.head(torch.flatten(x, 1))


def _seed(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def broken() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(1)
    return _seed(Broken()), (torch.randn(1, 3, 16, 16, generator=g),)


class Outlier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act1 = nn.ReLU()
        self.wide = nn.Linear(32, 24)
        self.mix = nn.Linear(24, 32)
        self.act2 = nn.ReLU()
        self.out = nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act2(self.mix(self.wide(self.act1(self.fc1(x))))))


def outlier() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    model = _seed(Outlier(), seed=3)
    with torch.no_grad():
        model.wide.weight[0] *= OUTLIER_GAIN
        model.wide.bias[0] *= OUTLIER_GAIN
        model.mix.weight[:, 0] /= OUTLIER_GAIN
    g = torch.Generator().manual_seed(2)
    return model, (torch.randn(1, 16, generator=g),)


def outlier_calibration(n: int = 96, seed: int = 5) -> dict[str, object]:
    """Real-looking calibration samples for :func:`outlier` (an ``.npz`` payload keyed by input name)."""
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 1, 16, generator=g).numpy()}  # forward(self, x) names the input
