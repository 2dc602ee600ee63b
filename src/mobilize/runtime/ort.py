"""onnxruntime runner for ORT-format files (``.ort``): the same CPU session as :mod:`mobilize.runtime.onnx`, told to
read the ORT flatbuffer format (what reduced, ``--minimal_build`` onnxruntime packages load)."""

from __future__ import annotations

from mobilize.errors import RuntimeFailure, one_line
from mobilize.runtime.base import IOTensor
from mobilize.runtime.onnx import OnnxRunner, _io


class OrtRunner(OnnxRunner):
    format = "ort"
    runtime = "onnxruntime"

    def _load(self) -> None:
        import onnxruntime as ort

        from mobilize.analysis.ort import IDENTIFIER

        data = self.path.read_bytes()
        if data[4:8] != IDENTIFIER:
            raise RuntimeFailure(f"{self.path.name}: not an ORT-format file (no {IDENTIFIER.decode()} identifier)")
        opts = self.session_options()
        opts.add_session_config_entry("session.load_model_format", "ORT")
        self.session_config = {}
        try:
            self._session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: onnxruntime could not load the file: {one_line(exc)}") from exc
        self._inputs = [_io(x) for x in self._session.get_inputs()]
        self._outputs = [_io(x) for x in self._session.get_outputs()]


def read_io(path) -> tuple[list[IOTensor], list[IOTensor]]:  # noqa: ANN001
    """The inputs and outputs the ``.ort`` file declares (loads an onnxruntime session)."""
    with OrtRunner(path) as r:
        return r.inputs, r.outputs
