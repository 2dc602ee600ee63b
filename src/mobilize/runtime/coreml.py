"""Core ML runner (native, macOS only) and reading a ``.mlpackage``'s declared I/O (any OS)."""

from __future__ import annotations

import sys
from pathlib import Path

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


def io_from_spec(spec) -> tuple[list[IOTensor], list[IOTensor]]:  # noqa: ANN001 - protobuf Model
    """The inputs and outputs a parsed Core ML ``Model`` spec declares (shared with the reference interpreter)."""
    return [_io(f) for f in spec.description.input], [_io(f) for f in spec.description.output]


def _io(feature) -> IOTensor:  # noqa: ANN001 - protobuf FeatureDescription
    from coremltools.proto import FeatureTypes_pb2 as ft

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
        try:
            out = self._model.predict(feeds)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: Core ML predict failed: {exc}") from exc
        return {o.name: np.asarray(out[o.name]) for o in self._outputs}
