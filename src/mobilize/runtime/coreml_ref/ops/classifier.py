"""The classifier op coremltools appends for a ``ClassifierConfig``."""

from __future__ import annotations

import numpy as np

from mobilize.runtime.coreml_ref.registry import register


@register("classify", "iOS15.classify.classify")
def classify(probabilities, classes):  # noqa: ANN001, ANN201 - the registry's style: MIL names, numpy values
    """``(top label, {label: score})`` from a probability (or score) vector of one sample, labels in order."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    labels = [c if isinstance(c, str) else str(np.asarray(c).reshape(-1)[0]) for c in classes]
    if len(labels) != p.size:
        raise ValueError(f"{len(labels)} classes for {p.size} scores")
    return labels[int(np.argmax(p))], {lab: float(v) for lab, v in zip(labels, p)}
