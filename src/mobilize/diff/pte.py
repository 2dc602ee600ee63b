"""ExecuTorch: a ``.pte``'s inputs and outputs, run with ``executorch.runtime`` — outputs only.

Per-layer comparison needs the file's intermediate tensors and their provenance. ExecuTorch has neither here: the
ops XNNPACK takes are one opaque delegate call whose intermediate values stay inside XNNPACK (ETDump's debug
buffer logs the outputs of delegate calls and portable kernels, not what happens inside a delegate), and a ``.pte``
keeps no PyTorch module names (debug handles map back to modules only through an ETRecord written at export time,
which a bundle does not ship). :data:`OUTPUTS_ONLY` says so in every report; the outputs are compared with PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mobilize.diff.graph import Graph, Tensor

#: why ``mobilize diff`` compares only the outputs of ``.pte`` files (shown in the report)
OUTPUTS_ONLY = ("per-layer comparison is not available for ExecuTorch files: the ops XNNPACK runs are one opaque "
                "delegate call that keeps its intermediate tensors to itself, and a .pte keeps no PyTorch module names "
                "to match tensors by; the file's outputs are compared with PyTorch's")


def read(path: Path) -> Graph:
    from mobilize.runtime.pte import PteRunner

    with PteRunner(path, threads=1) as r:
        ins, outs = r.inputs, r.outputs
    tensors: list[Tensor] = []
    for k, t in enumerate(ins):
        tensors.append(Tensor(len(tensors), t.name, "input", t.name, -1,
                              [s if isinstance(s, int) else -1 for s in t.shape], t.dtype, input=k, io_name=t.name))
    for k, t in enumerate(outs):
        tensors.append(Tensor(len(tensors), t.name, "method output", t.name, k,
                              [s if isinstance(s, int) else -1 for s in t.shape], t.dtype,
                              inputs=list(range(len(ins))), output=k, io_name=t.name))
    return Graph("pte", tensors, "executorch", [OUTPUTS_ONLY])


def run(path: Path, graph: Graph, samples: Sequence[dict[int, np.ndarray]],
        fed: dict[int, list[np.ndarray]] | None = None, threads: int = 1) -> list[dict[int, np.ndarray]]:
    from mobilize.runtime.pte import PteRunner

    if fed:
        graph.notes.append("tensors cannot be fed inside an ExecuTorch program; ran it as it is")
    names = {t.index: t.io_name or t.name for t in graph.tensors}
    results = []
    with PteRunner(path, threads=threads) as r:
        for sample in samples:
            got = r.infer({names[i]: v for i, v in sample.items()})
            out: dict[int, np.ndarray] = {i: np.asarray(v) for i, v in sample.items()}
            for t in graph.tensors:
                if t.output is not None:
                    out[t.index] = got[names[t.index]]
            results.append(out)
    return results
