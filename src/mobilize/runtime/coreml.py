"""Core ML runner (native, macOS only) and reading a ``.mlpackage``'s declared I/O (any OS)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import RuntimeFailure, RuntimeUnavailable, one_line
from mobilize.runtime.base import IOTensor, Runner

_CT_TYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "DOUBLE": "float64", "INT32": "int32", "INT8": "int8",
             "UINT8": "uint8"}
UNAVAILABLE_REASON = "Core ML predictions need macOS (coremltools cannot run Core ML models on this OS)"


def read_io(path: Path) -> tuple[list[IOTensor], list[IOTensor]]:
    """The inputs and outputs a ``.mlpackage`` declares, read from its spec (no runtime needed)."""
    import coremltools as ct

    from mobilize.bundle.mlpackage import check_package

    check_package(path)  # coremltools opens whatever Manifest.json names: validated first
    try:
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except Exception as exc:  # noqa: BLE001
        raise RuntimeFailure(f"{path.name}: not a readable Core ML package: {one_line(exc, 300)}") \
            from exc
    return io_from_spec(spec)


def unlisted_members(path: Path) -> list[Path]:
    """Files and folders inside an ``.mlpackage`` that its own ``Manifest.json`` does not list (converter side files
    such as coremltools' ``executorch_debug_handle_mapping.json``); an app copies the whole package, so these ship
    for nothing. Empty when the manifest cannot be read (the package is then judged elsewhere)."""
    import json

    try:
        m = json.loads((path / "Manifest.json").read_text())
        listed = [Path("Data") / e["path"] for e in m["itemInfoEntries"].values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    keep = {Path("Manifest.json"), *listed}
    parents = {p for item in listed for p in item.parents}
    out = []
    for member in sorted(path.rglob("*")):
        rel = member.relative_to(path)
        if rel in keep or rel in parents or any(k in rel.parents for k in listed):
            continue
        if not any(o in rel.parents for o in out):
            out.append(rel)
    return [path / r for r in out]


def io_from_spec(spec) -> tuple[list[IOTensor], list[IOTensor]]:  # noqa: ANN001 - protobuf Model
    """The inputs and outputs a parsed Core ML ``Model`` spec declares (shared with the reference interpreter).

    An image input (``imageType``) is described as the float tensor its program takes — ``(1, C, H, W)`` pixels —
    with ``image`` set (colour space, and the normalisation mobilize wrote into the file's metadata); a classifier's
    label → score output as a vector in label order (``classes``), its top-label output as a ``string``."""
    import json

    meta = dict(spec.description.metadata.userDefined)
    try:
        norm = json.loads(meta["normalization"]) if "normalization" in meta else None
        labels = json.loads(meta["labels"]) if "labels" in meta else None
    except ValueError:
        norm = labels = None
    return ([_io(f, norm) for f in spec.description.input],
            [_io(f, norm, labels if isinstance(labels, list) else None) for f in spec.description.output])


def _io(feature, norm: Any = None, labels: list[str] | None = None) -> IOTensor:  # noqa: ANN001 - protobuf
    from coremltools.proto import FeatureTypes_pb2 as ft

    kind = feature.type.WhichOneof("Type")
    if kind == "imageType":
        img = feature.type.imageType
        space = ft.ImageFeatureType.ColorSpace.Name(img.colorSpace)
        channels = 1 if space == "GRAYSCALE" else 3
        h: int | None = int(img.height) or None
        w: int | None = int(img.width) or None
        if img.WhichOneof("SizeFlexibility") == "imageSizeRange":
            rng = img.imageSizeRange
            h = None if rng.heightRange.lowerBound != rng.heightRange.upperBound else h
            w = None if rng.widthRange.lowerBound != rng.widthRange.upperBound else w
        info: dict[str, Any] = {"color": space}
        if isinstance(norm, dict):
            info["normalization"] = norm
        return IOTensor(feature.name, (1, channels, h, w), "float32", image=info)
    if kind == "dictionaryType":
        return IOTensor(feature.name, (1, len(labels)) if labels else (1, None), "float32", classes=labels)
    if kind == "stringType":
        return IOTensor(feature.name, (), "string")
    arr = feature.type.multiArrayType
    dtype = _CT_TYPES.get(ft.ArrayFeatureType.ArrayDataType.Name(arr.dataType), "unknown")
    shape: list[int | None] = list(arr.shape)
    ranges = arr.shapeRange.sizeRanges
    if ranges:
        shape = [int(r.lowerBound) if r.lowerBound == r.upperBound else None for r in ranges]
    return IOTensor(feature.name, tuple(shape), dtype)


class CoreMLRunner(Runner):
    format = "coreml"
    runtime = "coreml"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if sys.platform != "darwin":
            return False, UNAVAILABLE_REASON
        try:
            import coremltools.libcoremlpython  # noqa: F401
        except ImportError:
            return False, "coremltools was installed without its native Core ML bridge (libcoremlpython)"
        return True, ""

    def _load(self) -> None:
        ok, why = self.available()
        if not ok:
            raise RuntimeUnavailable(why)
        import coremltools as ct

        self._inputs, self._outputs = read_io(self.path)
        try:
            self._model = ct.models.MLModel(str(self.path), compute_units=ct.ComputeUnit.CPU_ONLY)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: Core ML could not load the package: {exc}") from exc

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: _as_image(v) if t.image else v for k, v in feeds.items()
                 for t in self._inputs if t.name == k}
        try:
            out = self._model.predict(feeds)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: Core ML predict failed: {exc}") from exc
        return {o.name: as_array(out[o.name], o) for o in self._outputs}


def _as_image(pixels: np.ndarray) -> Any:
    """A (1, C, H, W) pixel array as the PIL image Core ML's predict takes for an image input (8-bit: values are
    rounded and clipped to 0…255, as a camera frame would be)."""
    from PIL import Image

    arr = np.clip(np.rint(np.asarray(pixels)[0]), 0, 255).astype(np.uint8)
    return Image.fromarray(arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1))


def as_array(value: Any, decl: IOTensor) -> Any:
    """A runtime's output as an array: a classifier's label → score dict becomes a vector in label order."""
    if isinstance(value, dict):
        keys = decl.classes or list(value)
        return np.asarray([[float(value[k]) for k in keys]], dtype=np.float32)
    if decl.dtype == "string":
        return np.asarray(value)
    return np.asarray(value)
