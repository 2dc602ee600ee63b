"""Capture once: turn a ModelSpec into one ``torch.export.ExportedProgram`` that feeds every converter.

Strategies are tried in order; each returns a :class:`Attempt` instead of raising, so the manifest can say which
one won and why the others failed (the torch.onnx exporter's pattern)::

    non-strict  →  strict  →  non-strict on a deep copy with dynamic dims dropped (static shapes)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mobilize.errors import CaptureError, describe
from mobilize.spec import ModelSpec


@dataclasses.dataclass
class Attempt:
    strategy: str
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "ok": self.ok, "error": self.error}


@dataclasses.dataclass
class Capture:
    """The winning program plus the record of every attempt."""

    program: Any  # torch.export.ExportedProgram
    strategy: str
    attempts: list[Attempt]
    dynamic: bool  # whether the program kept the spec's dynamic dims

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "dynamic": self.dynamic, "attempts": [a.to_dict() for a in self.attempts]}


def dynamic_shapes_for(spec: ModelSpec) -> tuple[Any, ...] | None:
    """``spec.dynamic_dims`` as torch.export ``dynamic_shapes`` (one ``torch.export.Dim`` per distinct name)."""
    if not spec.dynamic_dims:
        return None
    import torch

    dims: dict[str, Any] = {}
    out = []
    for name, t in zip(spec.input_names, spec.example_inputs):
        axes = spec.dynamic_dims.get(name, {})
        entry = {}
        for ax, dname in axes.items():
            if dname not in dims:
                dims[dname] = torch.export.Dim(_dim_ident(dname), min=1, max=65536)
            entry[ax % t.dim()] = dims[dname]
        out.append(entry or None)
    return tuple(out)


def _dim_ident(name: str) -> str:
    ident = "".join(c if c.isalnum() else "_" for c in str(name))
    return ident if ident and not ident[0].isdigit() else f"d_{ident}"


def capture(spec: ModelSpec) -> Capture:
    """Run the strategy chain; raise :class:`CaptureError` listing every strategy's reason if all fail."""
    import torch

    if spec.exported_program is not None:
        return Capture(spec.exported_program, "torch.export.load (.pt2)", [Attempt("torch.export.load (.pt2)", True)],
                       False)
    spec.module.eval()
    dyn = dynamic_shapes_for(spec)
    strategies: list[tuple[str, dict[str, Any], bool]] = [
        ("torch.export(strict=False)", {"strict": False, "dynamic_shapes": dyn}, dyn is not None),
        ("torch.export(strict=True)", {"strict": True, "dynamic_shapes": dyn}, dyn is not None),
    ]
    if dyn is not None:
        strategies.append(("torch.export(strict=False, static shapes)", {"strict": False, "dynamic_shapes": None},
                           False))
    attempts: list[Attempt] = []
    for name, kwargs, is_dynamic in strategies:
        try:
            with torch.no_grad():
                program = torch.export.export(spec.module, spec.example_inputs, **kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure (sys.exit() in forward too) is recorded
            attempts.append(Attempt(name, False, describe(exc)))
            continue
        attempts.append(Attempt(name, True))
        return Capture(program, name, attempts, is_dynamic)
    reasons = "; ".join(f"{a.strategy}: {a.error}" for a in attempts)
    raise CaptureError(f"could not capture the model with torch.export ({reasons})")
