"""An OCR-like CRNN (a small CNN over a 32×512 text-line image, then a 2-layer BiLSTM over the 128 columns and a
per-column classifier: (1, 128, 37) logits) with seeded random weights, and calibration lines for it. Used by
``benchmarks/int8_jobs.py`` to time the int8 search with ``--jobs 1`` against ``--jobs 2``:

    .venv/bin/mobilize export benchmarks/models/crnn.py:build --formats onnx --precisions int8 \\
        --calibration benchmarks/models/crnn.py:calibration --class-axis logits=-1 --jobs 2
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from mobilize import ModelSpec


class CRNN(nn.Module):
    def __init__(self, classes: int = 37) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),        # 16 × 256
            nn.Conv2d(32, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),       # 8 × 128
            nn.Conv2d(64, 96, 3, 1, 1), nn.BatchNorm2d(96), nn.ReLU(), nn.MaxPool2d((2, 1)),  # 4 × 128
            nn.Conv2d(96, 128, 3, 1, 1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d((4, 1)),  # 1 × 128
        )
        self.rnn = nn.LSTM(128, 96, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(192, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.cnn(image).squeeze(2).transpose(1, 2)  # (N, 128 columns, 128)
        return self.head(self.rnn(f)[0])


def build() -> ModelSpec:
    torch.manual_seed(0)
    model = CRNN().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return ModelSpec(model, (torch.rand(1, 1, 32, 512),), input_names=["image"], output_names=["logits"],
                     name="crnn")


def calibration() -> Iterator[tuple[torch.Tensor]]:
    """256 synthetic text lines: dark strokes (random bars) on a light, slightly noisy background."""
    g = torch.Generator().manual_seed(1)
    for _ in range(256):
        img = 0.9 + 0.05 * torch.randn(1, 1, 32, 512, generator=g)
        for _ in range(48):
            x = int(torch.randint(0, 508, (1,), generator=g))
            y = int(torch.randint(4, 12, (1,), generator=g))
            h = int(torch.randint(8, 20, (1,), generator=g))
            img[..., y:y + h, x:x + 3] = 0.1
        yield (img.clamp(0, 1),)
