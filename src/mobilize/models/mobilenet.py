"""``mobilenet_v2``: a MobileNetV2-style CNN (width 0.35, 96x96 input, 10 classes) with seeded random weights.

It is an architecture test model: the weights are not trained, but every BatchNorm has seeded, non-trivial running
statistics and affine parameters so that converters' BN folding is really exercised.

Structure (as in Sandler et al. 2018): stem 3x3 conv stride 2 → inverted residual blocks (1x1 expand, 3x3
depthwise, 1x1 linear projection; residual add when stride 1 and in == out channels) → 1x1 conv to the head width →
global average pool → linear classifier (no dropout). BatchNorm after every conv, ReLU6 activations.
"""

from __future__ import annotations

import torch
from torch import nn

SEED = 0
INPUT_SIZE = 96
NUM_CLASSES = 10
WIDTH = 0.35
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expand ratio t, output channels c, repeats n, first stride s), the MobileNetV2 table
_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 activation: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if activation:
            layers.append(nn.ReLU6())
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers.append(ConvBNReLU6(hidden, hidden, kernel=3, stride=stride, groups=hidden))
        layers.append(ConvBNReLU6(hidden, cout, kernel=1, activation=False))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, width: float = WIDTH, last_channels: int = 640) -> None:
        super().__init__()
        cin = _make_divisible(32 * width)
        features: list[nn.Module] = [ConvBNReLU6(3, cin, kernel=3, stride=2)]
        for t, c, n, s in _SETTINGS:
            cout = _make_divisible(c * width)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvBNReLU6(cin, last_channels, kernel=1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(image))
        return self.classifier(torch.flatten(x, 1))


def _init(model: MobileNetV2, seed: int) -> None:
    """Seeded weights without touching the global RNG: Kaiming-normal convs, small linear, random BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0, generator=gen))
                m.num_batches_tracked.fill_(1000)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.01 * (640 / m.in_features) ** 0.5)
                m.bias.copy_(torch.randn(m.out_features, generator=gen) * 0.01)


def build_model(seed: int = SEED) -> MobileNetV2:
    """The zoo's MobileNetV2 in eval mode with seeded weights."""
    with torch.random.fork_rng(devices=[]):  # default layer init draws from the global RNG; restore it
        model = MobileNetV2()
    _init(model, seed)
    return model.eval()


def example_input(seed: int = SEED) -> torch.Tensor:
    """A seeded image-like input: uniform 0..255 pixels, ImageNet-normalised, ``(1, 3, 96, 96)`` float32."""
    gen = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randint(0, 256, (1, 3, INPUT_SIZE, INPUT_SIZE), generator=gen).float()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels / 255.0 - mean) / std
