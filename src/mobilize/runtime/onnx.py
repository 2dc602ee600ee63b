"""onnxruntime runner (CPU execution provider)."""

from __future__ import annotations

import numpy as np

from mobilize.errors import RuntimeFailure, one_line
from mobilize.runtime.base import IOTensor, Runner

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


class OnnxRunner(Runner):
    format = "onnx"
    runtime = "onnxruntime"
    preload_modules = ("onnxruntime",)

    def session_options(self) -> object:
        """Quiet CPU session options honouring ``threads`` (intra-op; one inter-op thread)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        return opts

    def _load(self) -> None:
        import onnxruntime as ort

        opts = self.session_options()
        data = self.path.read_bytes()
        refuse_external_data(data, self.path.name)
        self.session_config = session_config(data)
        for key, value in self.session_config.items():
            opts.add_session_config_entry(key, value)
        try:
            self._session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: onnxruntime could not load the file: {one_line(exc)}") from exc
        self._inputs = [_io(x) for x in self._session.get_inputs()]
        self._outputs = [_io(x) for x in self._session.get_outputs()]

    def _unload(self) -> None:
        self._session = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: onnxruntime failed: {one_line(exc)}") from exc
        return {o.name: np.asarray(v) for o, v in zip(self._outputs, values)}


#: metadata key under which a file asks for onnxruntime session settings (a JSON object), and the settings mobilize
#: honours: ``session.disable_quant_qdq`` makes onnxruntime fold the DequantizeLinear of a weight-only int8 file
#: into float weights at load (without it the dequantize runs on every inference, 1.5–2× slower on small CNNs).
SESSION_CONFIG_KEY = "onnxruntime.session_config"
SAFE_SESSION_CONFIG = ("session.disable_quant_qdq",)


def session_config(data: bytes) -> dict[str, str]:
    """The whitelisted onnxruntime session settings the file asks for in its metadata (apps apply the same)."""
    import json

    import onnx

    if SESSION_CONFIG_KEY.encode() not in data:
        return {}
    try:
        model = onnx.ModelProto.FromString(data)
        raw = next((p.value for p in model.metadata_props if p.key == SESSION_CONFIG_KEY), "{}")
        asked = json.loads(raw)
    except Exception:  # noqa: BLE001 - unreadable settings are ignored (the file still loads with the defaults)
        return {}
    if not isinstance(asked, dict):
        return {}
    return {k: str(v) for k, v in asked.items() if k in SAFE_SESSION_CONFIG and isinstance(v, str | int)}


def refuse_external_data(data: bytes, name: str) -> None:
    """mobilize's ONNX files are single-file. A file that points at external data could make the runtime read any
    path (``../``, absolute, symlinks, or a file in the current folder), so it is refused before onnxruntime sees it.

    Every ``TensorProto`` anywhere in the model is checked — initializers, sparse initializers' values and indices,
    tensor and sparse-tensor attributes (``Constant`` nodes), subgraphs (``If``/``Loop``/``Scan`` bodies), functions
    and training graphs — by walking the protobuf generically, so no kind of tensor is missed."""
    import onnx

    try:
        model = onnx.ModelProto.FromString(data)  # parse only: never resolves external data
    except Exception as exc:  # noqa: BLE001 - a protobuf that does not parse is not an ONNX model
        raise RuntimeFailure(f"{name}: not a readable ONNX model ({one_line(exc)})") from exc
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise RuntimeFailure(f"{name}: tensor {tensor.name!r} lives in an external file {where!r}; mobilize "
                                 "only runs self-contained ONNX files (external data could point outside the bundle)")


def _all_tensors(message) -> list:  # noqa: ANN001 - any protobuf message
    """Every ``onnx.TensorProto`` reachable from ``message`` (iterative walk over all set message fields)."""
    import onnx
    from google.protobuf.message import Message

    found = []
    stack = [message]
    while stack:
        msg = stack.pop()
        if isinstance(msg, onnx.TensorProto):
            found.append(msg)
        for field, value in msg.ListFields():
            if field.message_type is None:
                continue
            if isinstance(value, Message):
                stack.append(value)
            else:  # a repeated message field
                stack.extend(value)
    return found


def _io(arg) -> IOTensor:  # noqa: ANN001 - onnxruntime NodeArg
    shape = tuple(d if isinstance(d, int) else (d or None) for d in (arg.shape or []))
    return IOTensor(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))



def read_io(path) -> tuple[list[IOTensor], list[IOTensor]]:  # noqa: ANN001
    """The inputs and outputs the ``.onnx`` file declares (loads an onnxruntime session)."""
    with OnnxRunner(path) as r:
        return r.inputs, r.outputs
