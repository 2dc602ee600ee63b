"""The ``diff`` job of :mod:`mobilize._worker`: list a file's tensors and run it with every one exposed.

Job ``{"op": "diff", "format", "path", "samples": npz, "input_names", "values": npz to write, "graph"?: listing
from an earlier job, "fed"?: npz, "provenance"?: a sibling file whose metadata names the values}`` →
``{"graph", "used", "skipped", "sibling_scopes"?}`` (``used``: the samples that fit the file, in order). Arrays
travel as ``.npz`` files (``s{i}/{input}`` in, ``s{i}/t{index}`` out), read with ``allow_pickle=False``; the parent
never opens the artifact itself.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

MODULES = {"onnx": "mobilize.diff.onnx", "tflite": "mobilize.diff.tflite", "coreml": "mobilize.diff.coreml"}


def module(fmt: str) -> Any:
    from mobilize.errors import OptionError

    if fmt not in MODULES:
        from mobilize import formats

        plugin = formats.REGISTRY.get(fmt)
        if plugin is not None and plugin.converts_from:
            raise OptionError(f"mobilize diff compares {plugin.converts_from} files, not the {fmt!r} files converted "
                              f"from them: use --artifact {plugin.converts_from}/<precision>")
        raise OptionError(f"mobilize diff cannot expose the tensors of {fmt!r} files (it can: {', '.join(MODULES)})")
    return importlib.import_module(MODULES[fmt])


def handle(job: dict[str, Any]) -> dict[str, Any]:
    from mobilize._quiet import captured_output
    from mobilize.diff.graph import Graph

    try:
        mod = module(job["format"])
        path = Path(job["path"])
        with captured_output():
            graph = Graph.from_dict(job["graph"]) if job.get("graph") else mod.read(path)
            samples, used, skipped = _feeds(graph, Path(job["samples"]), list(job["input_names"]),
                                            _images(job["format"], path))
            if not samples:
                return {"error": "no input sample fits the file's input shapes: " + "; ".join(skipped[:2]),
                        "kind": "FeedError"}
            fed = _fed(Path(job["fed"]), len(samples)) if job.get("fed") else None
            values = mod.run(path, graph, samples, fed)
            out: dict[str, Any] = {"used": used, "skipped": skipped}
            if job.get("provenance") and hasattr(mod, "scopes_by_value"):
                try:
                    out["sibling_scopes"] = mod.scopes_by_value(Path(job["provenance"]))
                except Exception as exc:  # noqa: BLE001 - a sibling is only a provenance hint
                    graph.notes.append(f"could not read provenance from {Path(job['provenance']).name}: {exc}")
        arrays = {f"s{n}/t{i}": np.ascontiguousarray(v) for n, vals in enumerate(values) for i, v in vals.items()
                  if graph.tensors[i].op != "input" and isinstance(v, np.ndarray) and v.dtype.kind in "fiub"}
        np.savez(job["values"], **arrays)
        out["graph"] = graph.to_dict()
        return out
    except Exception as exc:  # noqa: BLE001 - the worker is the isolation boundary: every failure is one message
        from mobilize.errors import one_line

        return {"error": f"{type(exc).__name__}: {one_line(exc, 400)}", "kind": type(exc).__name__}


def _images(fmt: str, path: Path) -> dict[str, dict[str, Any]]:
    """The file's image inputs (a Core ML image input takes pixels and normalises inside the file), by name, as the
    format's own I/O reader declares them."""
    from mobilize import formats

    inputs, _ = formats.get(fmt).load("io_reader")(path)
    return {t.name: t.image for t in inputs if t.image}


def _feeds(graph: Any, path: Path, input_names: list[str], images: dict[str, dict[str, Any]] | None = None
           ) -> tuple[list[dict[int, np.ndarray]], list[int], list[str]]:
    """Model-named input samples → per usable sample {graph input index: array in the file's dtype, as pixels for an
    image input}, the indices of the samples used, and why the others were skipped."""
    from mobilize.runtime.base import IOTensor
    from mobilize.verify.parity import _fits, adapt_feed, io_map

    images = images or {}
    file_in = [IOTensor(t.io_name or t.name, tuple(s if s >= 0 else None for s in (t.shape or [])),
                        t.dtype or "float32", t.quant, image=images.get(t.io_name or t.name)) for t in graph.inputs]
    by_name = {f.name: (f, t) for f, t in zip(file_in, graph.inputs)}
    mapping = io_map(input_names, file_in)
    samples, used, skipped = [], [], []
    with np.load(path, allow_pickle=False) as z:
        count = int(z["__count__"])
        for n in range(count):
            arrays = {m: z[f"s{n}/{m}"] for m in input_names}
            if not all(_fits(arrays[m], by_name[f][0]) for m, f in mapping.items()):
                skipped.append(f"sample {n}: shapes {[list(a.shape) for a in arrays.values()]} do not fit the file")
                continue
            samples.append({by_name[f][1].index: adapt_feed(arrays[m], by_name[f][0]) for m, f in mapping.items()})
            used.append(n)
    return samples, used, skipped


def _fed(path: Path, count: int) -> dict[int, list[np.ndarray]]:
    fed: dict[int, list[np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            n, t = key.split("/")
            fed.setdefault(int(t[1:]), [None] * count)[int(n[1:])] = z[key]  # type: ignore[list-item]
    return fed
