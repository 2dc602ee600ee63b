"""A ResNet-18 (the torchvision architecture, 224×224 RGB → 1000 logits) with seeded random weights, written out
so the benchmarks need no torchvision and no download. Used to check the harness on an ImageNet-sized CNN:

    .venv/bin/mobilize export benchmarks/models/resnet18.py:build --out /tmp/resnet18 --formats onnx,tflite \\
        --precisions fp32
    .venv/bin/python benchmarks/harness_honesty.py /tmp/resnet18
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build():  # noqa: ANN201 - returns a mobilize.ModelSpec
    from mobilize import ModelSpec, Normalization

    torch.manual_seed(0)
    model = ResNet18().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics so activations stay in range
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return ModelSpec(
        module=model,
        example_inputs=(torch.rand(1, 3, 224, 224),),
        input_names=["image"],
        output_names=["logits"],
        name="resnet18",
        normalization=Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    )
