"""Exporters: one module per format, each turning the captured program into one file (or package) on disk.

Every exporter has the same signature (see :data:`mobilize.formats.Exporter`)::

    export(capture, spec, precision, dest, options) -> ExportedFile
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Options that reach the exporters. Frozen and validated on construction."""

    onnx_opset: int = 20  # torch.onnx's own default; opset 18 lacks Gelu (see benchmarks/results.md)
    coreml_target: str = "iOS16"
    fp16_io: bool = False  # fp16 artifacts keep fp32 inputs/outputs unless this is set

    def __post_init__(self) -> None:
        from mobilize.errors import OptionError

        if not 18 <= self.onnx_opset <= 23:
            raise OptionError(f"--onnx-opset {self.onnx_opset} is unsupported; use 18..23")
        if self.coreml_target not in COREML_TARGETS:
            raise OptionError(f"--coreml-target {self.coreml_target!r} is unknown; use one of "
                              f"{', '.join(COREML_TARGETS)}")


# ML Program needs iOS15/macOS12 or newer.
COREML_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")


@dataclasses.dataclass
class ExportedFile:
    """What an exporter produced: the path plus notes worth recording in the manifest."""

    path: Any  # pathlib.Path
    notes: list[str] = dataclasses.field(default_factory=list)
    repairs: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # set by mobilize.repair.convert
