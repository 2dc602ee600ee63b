"""Helpers for the reference-interpreter tests: build tiny MIL programs with coremltools' builder, save them as
``.mlpackage`` and run them through the interpreter."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_count = itertools.count()


def save_program(build: Callable[..., Any], inputs: list[np.ndarray], dest: Path, *, target: str = "iOS16",
                 passes: bool = False) -> Path:
    """``build(*vars)`` with MIL builder calls → a saved ``.mlpackage`` at ``dest``.

    The default pass pipeline is empty so the op under test is neither folded nor fused away.
    """
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    from mobilize._quiet import captured_output

    tgt = getattr(ct.target, target)
    specs = [mb.TensorSpec(shape=a.shape, dtype=types.numpy_type_to_builtin_type(a.dtype)) for a in inputs]
    with captured_output():
        prog = mb.program(input_specs=specs, opset_version=tgt)(build)
        model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=tgt,
                           pass_pipeline=None if passes else ct.PassPipeline.EMPTY,
                           compute_precision=ct.precision.FLOAT32)
        model.save(str(dest))
    return dest


@pytest.fixture
def run_mil(tmp_path: Path) -> Callable[..., Any]:
    """``run_mil(build, *inputs, op="conv")`` → the interpreter's outputs (a list, in program order).

    ``op`` (when given) must appear in the saved program, so a test never passes on a rewritten graph.
    """
    from mobilize.runtime.coreml_ref.program import Program

    def _run(build: Callable[..., Any], *inputs: np.ndarray, op: str | None = None, target: str = "iOS16",
             passes: bool = False) -> list[np.ndarray]:
        path = save_program(build, list(inputs), tmp_path / f"p{next(_count)}.mlpackage", target=target,
                            passes=passes)
        program = Program(path)
        if op is not None:
            assert op in program.op_types(), f"{op} not in the saved program: {program.op_types()}"
        names = program.input_names
        out = program.run(dict(zip(names, inputs)))
        return [out[n] for n in program.output_names]

    return _run
