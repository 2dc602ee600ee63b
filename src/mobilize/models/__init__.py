"""mobilize's built-in model zoo: ``zoo:NAME`` sources.

Importing this package and listing :func:`names` is cheap; torch and the architecture modules are imported only
when a model is built with :func:`get`.

- ``digits``: small BatchNorm CNN trained on scikit-learn's 8x8 digits (real test accuracy, see
  :func:`mobilize.models.digits.digits_test_set`)
- ``mobilenet_v2``: MobileNetV2-style CNN, width 0.35, 96x96 RGB, seeded random weights
- ``text_encoder``: 2-layer transformer encoder, two int64 inputs, two outputs, seeded random weights
- ``gru_classifier``: GRU over a (1, 20, 16) sequence, 4 classes, seeded random weights
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING

from mobilize.errors import SourceError

if TYPE_CHECKING:
    from mobilize.spec import ModelSpec

TRAINED_DIGITS = "trained on scikit-learn digits"
SEEDED = "seeded random init (architecture test model)"


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One zoo model: its name, a one-line summary, where its weights come from, and a builder."""

    name: str
    summary: str
    weights: str
    build: Callable[[], ModelSpec]


def _digits() -> ModelSpec:
    from mobilize.models import digits
    from mobilize.spec import ModelSpec, Normalization

    return ModelSpec(
        module=digits.load_model(),
        example_inputs=(digits.example_input(),),
        input_names=["image"],
        output_names=["logits"],
        normalization=Normalization(mean=(digits.MEAN,), std=(digits.STD,), scale=digits.SCALE, layout="NCHW",
                                    color="GRAY"),
        labels=list(digits.LABELS),
        name="digits",
        description="Small CNN (3 conv + BatchNorm) trained on scikit-learn's 8x8 handwritten digits; "
                    "input (1,1,8,8) gray pixels scaled (p/16 - mean)/std, output 10 logits.",
    )


def _mobilenet_v2() -> ModelSpec:
    from mobilize.models import mobilenet
    from mobilize.spec import ModelSpec, Normalization

    return ModelSpec(
        module=mobilenet.build_model(),
        example_inputs=(mobilenet.example_input(),),
        input_names=["image"],
        output_names=["logits"],
        normalization=Normalization(mean=mobilenet.IMAGENET_MEAN, std=mobilenet.IMAGENET_STD, scale=255.0,
                                    layout="NCHW", color="RGB"),
        labels=[f"class_{i}" for i in range(mobilenet.NUM_CLASSES)],
        name="mobilenet_v2",
        description="MobileNetV2-style CNN (width 0.35, inverted residuals, BatchNorm, ReLU6) on 96x96 RGB, "
                    "10 classes; seeded random weights with non-trivial BatchNorm statistics.",
    )


def _text_encoder() -> ModelSpec:
    from mobilize.models import text
    from mobilize.spec import ModelSpec

    return ModelSpec(
        module=text.build_model(),
        example_inputs=text.example_inputs(),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state", "pooled"],
        input_ranges={"input_ids": (0, text.VOCAB_SIZE - 1), "attention_mask": (0, 1)},
        name="text_encoder",
        description="2-layer transformer encoder (vocab 1000, dim 64, 4 heads) with masked mean pooling; "
                    "int64 input_ids/attention_mask (1,16) → last_hidden_state (1,16,64), pooled (1,64).",
    )


def _gru_classifier() -> ModelSpec:
    from mobilize.models import sequence
    from mobilize.spec import ModelSpec

    return ModelSpec(
        module=sequence.build_model(),
        example_inputs=(sequence.example_input(),),
        input_names=["sequence"],
        output_names=["logits"],
        labels=[f"class_{i}" for i in range(sequence.NUM_CLASSES)],
        name="gru_classifier",
        description="GRU (16 → 32) over a (1, 20, 16) float sequence, linear head to 4 logits; seeded weights.",
    )


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("digits", "small BatchNorm CNN, 8x8 grayscale digits → 10 logits", TRAINED_DIGITS, _digits),
        ZooEntry("mobilenet_v2", "MobileNetV2-style CNN (width 0.35), 96x96 RGB → 10 logits", SEEDED, _mobilenet_v2),
        ZooEntry("text_encoder", "2-layer transformer encoder, int64 ids + mask → hidden states + pooled embedding",
                 SEEDED, _text_encoder),
        ZooEntry("gru_classifier", "GRU sequence classifier, (1, 20, 16) float → 4 logits", SEEDED, _gru_classifier),
    )
}

DEFAULT = "digits"


def names() -> list[str]:
    """The zoo's model names, in listing order."""
    return list(ZOO)


def get(name: str) -> ModelSpec:
    """Build the zoo model ``name`` (a fresh module each call, in eval mode).

    Raises:
        SourceError: ``name`` is not a zoo model.
    """
    entry = ZOO.get(name)
    if entry is None:
        msg = f"unknown zoo model {name!r}; available: {', '.join(ZOO)}"
        close = difflib.get_close_matches(str(name), list(ZOO), n=1, cutoff=0.6)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        raise SourceError(msg)
    spec = entry.build()
    spec.module.eval()
    return spec
