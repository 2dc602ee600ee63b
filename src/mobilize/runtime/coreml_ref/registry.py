"""The op registry: one small NumPy function per MIL op, registered by name.

An implementation takes the op's MIL parameters as keyword arguments (same names as the MIL spec; optional ones
get the spec's defaults) and returns one array, or a tuple for multi-output ops. Float16 inputs arrive as float32;
the interpreter rounds every output to the dtype the program declares (that is the fp16 emulation), so an
implementation never thinks about precision.

``@register`` refuses a duplicate name when the module is imported, so a clash fails at import, not in a user's run.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

SPEC_ROOT = "https://apple.github.io/coremltools/source/coremltools.converters.mil.mil.ops.defs.html"


@dataclasses.dataclass(frozen=True)
class OpImpl:
    name: str
    fn: Callable[..., Any]
    spec_url: str
    params: frozenset[str]  # the MIL parameter names the function accepts
    variadic: frozenset[str]  # parameters that always arrive as a list (e.g. concat's ``values``)
    blocks: tuple[str, ...] = ()  # parameters that receive the op's nested blocks, in order, as callables


OPS: dict[str, OpImpl] = {}


def register(name: str, spec: str, *, variadic: tuple[str, ...] = (),
             blocks: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Any]:
    """Register ``fn`` as the implementation of MIL op ``name``.

    Args:
        spec: the op's anchor in the MIL op reference, e.g. ``"iOS15.elementwise_binary.add"``.
        variadic: parameters that are lists of tensors.
        blocks: for control flow, the parameters that receive the op's nested blocks (in the order the file
            stores them), each as a callable ``values -> outputs`` that runs the block on its inputs.
    """
    url = f"{SPEC_ROOT}#coremltools.converters.mil.mil.ops.defs.{spec}"

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in OPS:
            raise ValueError(f"MIL op {name!r} is already registered (by {OPS[name].fn.__module__}."
                             f"{OPS[name].fn.__qualname__})")
        if not (fn.__doc__ or "").strip():
            raise ValueError(f"MIL op {name!r}: the implementation needs a docstring")
        fn.__doc__ = f"{fn.__doc__.rstrip()}\n\n    MIL spec: {url}\n"
        params = frozenset(p for p in inspect.signature(fn).parameters)
        OPS[name] = OpImpl(name, fn, url, params, frozenset(variadic), tuple(blocks))
        return fn

    return deco


def supported_ops() -> list[str]:
    """Every op name the interpreter implements, sorted."""
    from mobilize.runtime.coreml_ref import ops  # noqa: F401 - registers the implementations

    return sorted(OPS)
