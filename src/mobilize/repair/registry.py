"""The repair registry: each repair is one small, tested rewrite of the captured program that turns an op a
converter rejects (or handles badly) into an equivalent it accepts.

A repair is either

- a **decomposition**: ``{OpOverload: fn}`` entries applied with ``ExportedProgram.run_decompositions`` (torch
  re-traces the program and calls ``fn`` instead of the op; ``fn`` returns ``NotImplemented`` to keep a node it does
  not handle), or
- a **graph pass**: a function that rewrites the functional (decomposed) graph in place and returns the nodes it
  changed.

Both record where they fired (the PyTorch module of each rewritten node), so the manifest can say what changed.
``@register`` refuses a duplicate name and a repair without a docstring at import time.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

#: formats a repair may serve
FORMATS = ("onnx", "coreml", "tflite")


@dataclasses.dataclass(frozen=True)
class Repair:
    """One registered rewrite.

    Args:
        name: a short stable id (``fmod-remainder``), recorded in manifests.
        formats: the formats whose converter it serves.
        pattern / equivalent: what it matches and what it writes, one line each (docs/repairs.md, manifests).
        ops: the ATen overloads (``aten.fmod.Scalar``) whose nodes it may rewrite.
        symptoms: other op names a failing converter may name when this repair is the cure (e.g. torch's default
            decomposition of ``roll`` brings the ``fmod`` Core ML rejects).
        messages: regular expressions over the converter's message that implicate it.
        always: the formats (a subset of ``formats``) where it is applied before the first conversion, not only after
            a failure: the converter's own file is worse there (bigger, slower, or one its runtime cannot run).
        decompositions: builds the ``{OpOverload: fn}`` table (lazily: it imports torch).
        graph_pass: rewrites a functional program's graph in place; returns the rewritten nodes.
        applies: narrows the pattern beyond the op (``aten.gelu`` only with ``approximate="tanh"``): decides whether
            an ``always`` repair has anything to do in a program.
    """

    name: str
    formats: tuple[str, ...]
    pattern: str
    equivalent: str
    ops: tuple[str, ...]
    doc: str
    symptoms: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    always: tuple[str, ...] = ()
    decompositions: Callable[[], dict[Any, Callable[..., Any]]] | None = None
    graph_pass: Callable[[Any], list[Any]] | None = None
    applies: Callable[[Any], bool] | None = None

    def serves(self, fmt: str) -> bool:
        return fmt in self.formats

    def always_for(self, fmt: str) -> bool:
        return fmt in self.always

    def op_names(self) -> set[str]:
        """Base names of the ops it rewrites and of its symptoms (``fmod`` for ``aten.fmod.Scalar``)."""
        return {base_name(o) for o in self.ops + self.symptoms}

    def implicated_by(self, ops: Iterable[str], message: str) -> str | None:
        """Why this repair is a candidate cure for a failure naming ``ops`` with ``message`` (None if it is not)."""
        for rx in self.messages:
            m = re.search(rx, message)
            if m:
                return f"the converter said {m.group(0)!r}"
        named = sorted(self.op_names() & {base_name(o) for o in ops})
        if named:
            return f"the converter rejected {', '.join(named)}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "formats": list(self.formats), "pattern": self.pattern,
                "equivalent": self.equivalent}


REPAIRS: dict[str, Repair] = {}


def base_name(op: str) -> str:
    """``aten.fmod.Scalar`` / ``torch.ops.aten.fmod.Scalar`` / ``aten::fmod`` / ``fmod`` → ``fmod``."""
    s = str(op).replace("torch.ops.", "").replace("::", ".")
    parts = [p for p in s.split(".") if p]
    if len(parts) >= 2 and parts[0] in ("aten", "prims", "quantized", "torchvision"):
        return parts[1]
    return parts[0] if parts else s


def register(name: str, *, formats: tuple[str, ...], pattern: str, equivalent: str, ops: tuple[str, ...],
             symptoms: tuple[str, ...] = (), messages: tuple[str, ...] = (), always: tuple[str, ...] = (),
             kind: str = "decomposition",
             applies: Callable[[Any], bool] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as repair ``name``.

    ``kind="decomposition"``: the function returns the ``{OpOverload: fn}`` table. ``kind="graph"``: the function
    rewrites a functional program's graph in place and returns the nodes it rewrote.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"repair {name!r}: unknown formats {sorted(unknown)}; use {FORMATS}")
    if set(always) - set(formats):
        raise ValueError(f"repair {name!r}: always={always} must be a subset of formats={formats}")
    if kind not in ("decomposition", "graph"):
        raise ValueError(f"repair {name!r}: kind must be 'decomposition' or 'graph', not {kind!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in REPAIRS:
            raise ValueError(f"repair {name!r} is already registered (by {REPAIRS[name].doc.splitlines()[0]!r})")
        doc = (fn.__doc__ or "").strip()
        if not doc:
            raise ValueError(f"repair {name!r}: the function needs a docstring with the graph before and after")
        REPAIRS[name] = Repair(name, tuple(formats), pattern, equivalent, tuple(ops), doc, tuple(symptoms),
                               tuple(messages), tuple(always),
                               decompositions=fn if kind == "decomposition" else None,
                               graph_pass=fn if kind == "graph" else None, applies=applies)
        return fn

    return deco


def for_format(fmt: str) -> list[Repair]:
    """Every registered repair serving ``fmt``, in registration order."""
    from mobilize.repair import passes  # noqa: F401 - registers the repairs

    return [r for r in REPAIRS.values() if r.serves(fmt)]


def get(name: str) -> Repair:
    from mobilize.repair import passes  # noqa: F401 - registers the repairs

    return REPAIRS[name]


# --- where a repair fired -----------------------------------------------------------------------------------------

_HITS: contextvars.ContextVar[dict[str, list[str]] | None] = contextvars.ContextVar("mobilize_repair_hits",
                                                                                   default=None)


def current_module() -> str:
    """``path (Class)`` of the module whose node torch is decomposing right now, ``(root)`` when unknown."""
    try:
        from torch.fx.traceback import get_current_meta

        stack = (get_current_meta() or {}).get("nn_module_stack") or {}
    except Exception:  # noqa: BLE001 - only a label
        stack = {}
    if not stack:
        return "(root)"
    path, cls = list(stack.values())[-1]
    cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
    return f"{path or '(root)'} ({cls_name.rsplit('.', 1)[-1]})"


def record_hit(name: str, where: str) -> None:
    hits = _HITS.get()
    if hits is not None:
        hits.setdefault(name, []).append(where)


def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a decomposition) that records each call that rewrote something (did not return NotImplemented)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if out is not NotImplemented:
            record_hit(name, current_module())
        return out

    wrapped.__name__ = getattr(fn, "__name__", name)
    return wrapped


class collecting:  # noqa: N801 - used as a context manager
    """Collects :func:`record_hit` calls: ``with collecting() as hits: ...`` → ``{repair: [module, ...]}``."""

    def __enter__(self) -> dict[str, list[str]]:
        self._hits: dict[str, list[str]] = {}
        self._token = _HITS.set(self._hits)
        return self._hits

    def __exit__(self, *exc: object) -> None:
        _HITS.reset(self._token)
