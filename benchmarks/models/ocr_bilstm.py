"""A small OCR-like model for benchmarks/refinterp.py (CRNN shape, ~1 M parameters): a conv stem over a 32×384
grayscale text line, then a 2-layer bidirectional LSTM over the 96 columns and a linear head per column."""

from __future__ import annotations


def build():  # noqa: ANN201 - a mobilize ModelSpec
    import torch
    from torch import nn

    from mobilize import ModelSpec

    class OCR(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d((2, 1)),
                nn.Conv2d(128, 256, (4, 1)), nn.ReLU(),
            )
            self.rnn = nn.LSTM(256, 128, num_layers=2, bidirectional=True, batch_first=True)
            self.head = nn.Linear(256, 80)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            f = self.stem(image)                    # (N, 256, 1, W/4)
            seq = f.squeeze(2).permute(0, 2, 1)     # (N, W/4, 256)
            y, _ = self.rnn(seq)
            return self.head(y)                     # (N, W/4, classes)

    torch.manual_seed(0)
    model = OCR().eval()
    return ModelSpec(module=model, example_inputs=(torch.rand(1, 1, 32, 384),), input_names=["image"],
                     output_names=["logits"], name="ocr_bilstm")
