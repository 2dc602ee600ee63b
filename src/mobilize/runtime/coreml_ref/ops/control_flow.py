"""Control flow MIL ops: ``while_loop`` and ``cond``.

Their nested blocks arrive as callables (see :func:`~mobilize.runtime.coreml_ref.registry.register`): calling one
runs the block on the given input values in a scope of its own and returns the block's output values.
"""

from __future__ import annotations

from mobilize.runtime.coreml_ref.ops._util import as_bool
from mobilize.runtime.coreml_ref.registry import register

_C = "iOS15.control_flow."

#: a loop that runs longer than this is treated as a broken file (no recurrent model has a million time steps)
MAX_ITERATIONS = 1_000_000


@register("while_loop", _C + "while_loop", variadic=("loop_vars",), blocks=("_cond", "_body"))
def while_loop(loop_vars, _cond=None, _body=None, _existing_blocks=None):
    """Run the body block on the loop variables while the cond block returns True; the final loop variables are
    the outputs. ``_cond`` and ``_body`` are the op's two blocks (``_existing_blocks`` is builder-internal)."""
    values = list(loop_vars)
    for _ in range(MAX_ITERATIONS):
        if not as_bool(_cond(values)[0]):
            return tuple(values)
        values = _body(values)
    raise RuntimeError(f"the loop did not end after {MAX_ITERATIONS} iterations")


@register("cond", _C + "cond", blocks=("_true_fn", "_false_fn"))
def cond(pred, _true_fn=None, _false_fn=None, _existing_blocks=None):
    """The outputs of the first block if ``pred`` is True, else of the second (blocks without inputs)."""
    out = (_true_fn if as_bool(pred) else _false_fn)([])
    return tuple(out) if len(out) != 1 else out[0]
