"""A small CNN classifier for the CI example: 1×28×28 grayscale in, 10 logits out.

In a real project ``build()`` constructs your architecture and loads the freshly trained checkpoint — or leaves that
to mobilize: set ``weights = "checkpoints/latest.safetensors"`` in mobilize.toml and it is loaded into the module
(strictly, without unpickling anything).
"""

from __future__ import annotations

import torch
from torch import nn

from mobilize import ModelSpec, Normalization


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(image), 1))


def build() -> ModelSpec:
    torch.manual_seed(0)  # stands in for training: replace with load_state_dict(...) or `weights =` in the config
    model = SmallCNN().eval()
    return ModelSpec(
        module=model,
        example_inputs=(torch.randn(1, 1, 28, 28),),
        input_names=["image"],
        output_names=["logits"],
        normalization=Normalization(mean=(0.5,), std=(0.5,)),
        labels=[str(i) for i in range(10)],
        name="small_cnn",
    )
