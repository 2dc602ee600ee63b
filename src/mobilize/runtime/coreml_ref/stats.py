"""Activation statistics from the reference interpreter, for calibrating Core ML activation quantization on Linux
(coremltools' own calibration calls ``predict``, which only exists on macOS)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np


def collect_activation_stats(mlpackage: Path | str, samples: Iterable[Mapping[str, np.ndarray]]
                             ) -> dict[str, tuple[float, float]]:
    """Run every sample (feeds keyed by the program's input names) and return each float op output's
    ``(min, max)`` over all samples, keyed by tensor name; the program's inputs are included.

    Non-finite values are ignored; a tensor that is never finite is left out.
    """
    from mobilize.runtime.coreml_ref.program import Program

    program = Program(mlpackage)
    program.check_supported()
    stats: dict[str, tuple[float, float]] = {}

    def observe(_op_type: str, name: str, value: np.ndarray) -> None:
        arr = np.asarray(value)
        if arr.dtype.kind != "f" or arr.size == 0:
            return
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            return
        lo, hi = float(finite.min()), float(finite.max())
        if name in stats:
            lo, hi = min(lo, stats[name][0]), max(hi, stats[name][1])
        stats[name] = (lo, hi)

    count = 0
    for feeds in samples:
        for name in program.input_names:
            if name in feeds:
                observe("input", name, np.asarray(feeds[name]))
        program.run(feeds, observe=observe)
        count += 1
    if count == 0:
        raise ValueError("collect_activation_stats needs at least one sample")
    return stats
