"""onnxruntime runner (CPU execution provider)."""

from __future__ import annotations

import numpy as np

from mobilize.errors import RuntimeFailure
from mobilize.runtime.base import IOTensor, Runner

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


class OnnxRunner(Runner):
    format = "onnx"
    runtime = "onnxruntime"

    def _load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(self.path.read_bytes(), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: onnxruntime could not load the file: {_short(exc)}") from exc
        self._inputs = [_io(x) for x in self._session.get_inputs()]
        self._outputs = [_io(x) for x in self._session.get_outputs()]

    def _unload(self) -> None:
        self._session = None

    @property
    def inputs(self) -> list[IOTensor]:
        return self._inputs

    @property
    def outputs(self) -> list[IOTensor]:
        return self._outputs

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: onnxruntime failed: {_short(exc)}") from exc
        return {o.name: np.asarray(v) for o, v in zip(self._outputs, values)}


def _io(arg) -> IOTensor:  # noqa: ANN001 - onnxruntime NodeArg
    shape = tuple(d if isinstance(d, int) else (d or None) for d in (arg.shape or []))
    return IOTensor(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def read_io(path) -> tuple[list[IOTensor], list[IOTensor]]:  # noqa: ANN001
    """The inputs and outputs the ``.onnx`` file declares (loads an onnxruntime session)."""
    with OnnxRunner(path) as r:
        return r.inputs, r.outputs
