"""What every exported file carries inside it, from the same ModelSpec fields as the manifest: an app that only has
the file (no manifest.json) still finds the labels, the normalisation, the tensor names and where the file came from.

Each format's finalizer (``finalize(path, info) -> notes``, registered as the format plug-in's ``finalizer``) writes
:meth:`FileInfo.entries` into the file's own metadata slot — ONNX ``metadata_props``, Core ML
``user_defined_metadata``, a TFLite ``metadata`` entry, an ExecuTorch constant method — and makes the bytes
reproducible (no dates, no random ids, sorted maps). The keys are documented in docs/metadata.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

#: the metadata keys, in the order they are written
KEYS = ("mobilize.version", "mobilize.model", "mobilize.precision", "mobilize.source", "mobilize.weights_sha256",
        "mobilize.inputs", "mobilize.outputs", "labels", "normalization", "input_layout")


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """The facts a file carries about itself."""

    model: str
    precision: str
    source: str
    weights_sha256: str
    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[str, ...]
    labels: tuple[str, ...] | None = None
    normalization: dict[str, Any] | None = None
    description: str = ""

    def entries(self) -> dict[str, str]:
        """Flat ``key → string`` pairs (JSON for lists and objects), every value reproducible."""
        from mobilize import __version__

        out = {"mobilize.version": __version__, "mobilize.model": self.model, "mobilize.precision": self.precision,
               "mobilize.source": self.source, "mobilize.weights_sha256": self.weights_sha256,
               "mobilize.inputs": _json(list(self.inputs)), "mobilize.outputs": _json(list(self.outputs))}
        if self.labels is not None:
            out["labels"] = _json(list(self.labels))
        if self.normalization is not None:
            out["normalization"] = _json(self.normalization)
            out["input_layout"] = str(self.normalization.get("layout", "NCHW"))
        return out

    def with_precision(self, precision: str) -> FileInfo:
        return dataclasses.replace(self, precision=precision)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def portable_source(source: str) -> str:
    """The source string without the folder it was exported from (``/home/a/model.py:build`` → ``model.py:build``),
    so two checkouts of the same code write the same bytes."""
    target, sep, fn = source.rpartition(":")
    if sep and (target.endswith(".py") or "/" in target):
        return f"{Path(target).name}:{fn}"
    if source.endswith(".pt2"):
        return Path(source).name
    return source


def weights_digest(module: Any) -> str:
    """sha256 over the module's state dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    state = module.state_dict() if hasattr(module, "state_dict") else {}
    for name in sorted(state):
        t = state[name]
        if not hasattr(t, "detach"):
            continue
        import torch

        arr = t.detach().cpu().contiguous()
        h.update(f"{name}\0{arr.dtype}\0{tuple(arr.shape)}\0".encode())
        if arr.numel():
            h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_info(spec: Any, source: str, precision: str) -> FileInfo:
    """The :class:`FileInfo` of one artifact of ``spec`` exported from ``source``."""
    inputs = tuple({"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in spec.input_specs())
    return FileInfo(model=spec.name, precision=precision, source=portable_source(source),
                    weights_sha256=weights_digest(spec.module), inputs=inputs,
                    outputs=tuple(spec.output_names or ()),
                    labels=tuple(spec.labels) if spec.labels is not None else None,
                    normalization=spec.normalization.to_dict() if spec.normalization is not None else None,
                    description=re.sub(r"\s+", " ", spec.description or "").strip())
