"""ai-edge-litert runner: the LiteRT Interpreter with its default XNNPACK delegate.

Files are read as bytes and handed to ``model_content=``: that loader verifies the flatbuffer, the path loader does
not. I/O is the file's serving signature; int8/uint8 tensors carry their scale/zero-point in ``quantization``.
"""

from __future__ import annotations

import numpy as np

from mobilize.errors import RuntimeFailure, one_line
from mobilize.runtime.base import IOTensor, Runner, natural_key


class TFLiteRunner(Runner):
    format = "tflite"
    runtime = "ai-edge-litert"
    preload_modules = ("ai_edge_litert.interpreter",)

    #: set when XNNPACK refused the graph and the builtin kernels ran instead (recorded in the parity record)
    fallback: str | None = None

    def _load(self, use_xnnpack: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            data = self.path.read_bytes()
            self._interp = Interpreter(model_content=data, num_threads=self.threads,
                                       experimental_op_resolver_type=resolver)
            sigs = self._interp.get_signature_list()
            self._sig = "serving_default" if "serving_default" in sigs else next(iter(sigs), None)
            if self._sig is None:
                raise ValueError("the file has no signature")
            self._runner = self._interp.get_signature_runner(self._sig)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: LiteRT could not load the file: {one_line(exc)}") from exc
        ins = self._runner.get_input_details()
        outs = self._runner.get_output_details()
        order_in, order_out = signature_order(data, self._sig)
        self._inputs = [_io(n, ins[n]) for n in _ordered(ins, order_in)]
        self._outputs = [_io(n, outs[n]) for n in _ordered(outs, order_out)]

    def _unload(self) -> None:
        self._runner = None
        self._interp = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self._runner(**feeds)
        except Exception as exc:  # noqa: BLE001
            if self.fallback is not None or "XNNPack" not in str(exc):
                raise RuntimeFailure(f"{self.path.name}: LiteRT failed: {one_line(exc)}") from exc
            # XNNPACK could not prepare this graph: rerun with LiteRT's builtin kernels so parity is still judged,
            # and say so (an app using the default delegate would hit the same failure).
            self.fallback = f"XNNPACK delegate failed ({one_line(exc)[:160]}); builtin kernels used"
            self._load(use_xnnpack=False)
            try:
                out = self._runner(**feeds)
            except Exception as exc2:  # noqa: BLE001
                raise RuntimeFailure(f"{self.path.name}: LiteRT failed with and without XNNPACK: {one_line(exc2)}") \
                    from exc2
        return {o.name: np.array(out[o.name]) for o in self._outputs}


def signature_order(data: bytes, key: str) -> tuple[list[str], list[str]]:
    """The input and output names of signature ``key`` in the order the file lists them (positional: the model's
    argument order; LiteRT's Python API hands them out as dicts)."""
    from mobilize.runtime.tflite_flatbuffer import schema

    try:
        model = schema().Model.GetRootAs(data, 0)
        for i in range(model.SignatureDefsLength()):
            sig = model.SignatureDefs(i)
            if (sig.SignatureKey() or b"").decode(errors="replace") != key:
                continue
            ins = [sig.Inputs(j).Name().decode(errors="replace") for j in range(sig.InputsLength())]
            outs = [sig.Outputs(j).Name().decode(errors="replace") for j in range(sig.OutputsLength())]
            return ins, outs
    except Exception:  # noqa: BLE001 - a file the interpreter accepted but this reader cannot: fall back to names
        pass
    return [], []


def _ordered(details: dict, order: list[str]) -> list[str]:
    """``details``' names in the file's order (names it does not list: after, in natural order)."""
    known = [n for n in order if n in details]
    return known + sorted((n for n in details if n not in known), key=natural_key)


def _io(name: str, d: dict) -> IOTensor:
    sig = d.get("shape_signature", d["shape"])
    shape = tuple(int(s) if s >= 0 else None for s in sig)
    q = d.get("quantization_parameters") or {}
    quant = None
    scales = np.asarray(q.get("scales", []))
    if scales.size:
        quant = {"scale": [float(s) for s in scales], "zero_point": [int(z) for z in q.get("zero_points", [])],
                 "axis": int(q.get("quantized_dimension", 0))}
    return IOTensor(name, shape, np.dtype(d["dtype"]).name, quant)



def read_io(path) -> tuple[list[IOTensor], list[IOTensor]]:  # noqa: ANN001
    """The inputs and outputs of the ``.tflite`` file's serving signature."""
    with TFLiteRunner(path) as r:
        return r.inputs, r.outputs
