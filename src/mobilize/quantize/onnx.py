"""ONNX quantizer: onnxruntime.quantization on the fp32 file the exporter wrote.

- ``dynamic`` (int8-weights): ``quantize_dynamic``, per-channel int8 weights, activations quantized per run.
- ``qdq-per-channel`` / ``qoperator-per-channel`` (int8): ``quantize_static`` on real calibration data, per-channel
  symmetric int8 weights, int8 activations; the float graph is first run through ``quant_pre_process`` (shape
  inference + onnxruntime's graph optimisations) as onnxruntime recommends.
- ``matmul-nbits`` (int4-weights): ``MatMulNBitsQuantizer`` — 4-bit blockwise MatMul weights (onnxruntime's
  MatMulNBits kernel); convolutions stay float (onnxruntime has no 4-bit convolution).

Layers kept in float (sensitivity fallback) are passed as ``nodes_to_exclude``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import ConversionError, one_line
from mobilize.quantize.recipes import Recipe

QUANTIZABLE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_METHODS = ("minmax", "percentile")


def layers(fp32: Path) -> list[dict[str, str]]:
    """Quantizable nodes of the float file: ``{"name", "op", "module"}`` (module = PyTorch path when known)."""
    import onnx

    model = onnx.load(str(fp32), load_external_data=False)
    out = []
    for n in model.graph.node:
        if n.op_type in QUANTIZABLE:
            out.append({"name": n.name, "op": n.op_type, "module": _module_of(n)})
    return out


def _module_of(node: Any) -> str:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in json.loads(p.value.replace("'", '"')) if s]
            except ValueError:
                return ""
            return scopes[-2] if len(scopes) >= 2 else (scopes[0] if scopes else "")
    return ""


class _Reader:
    """onnxruntime CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.feeds = self.feeds[start_index:end_index]
        self.i = 0


def preprocess(fp32: Path, work: Path) -> Path:
    """``quant_pre_process`` once per float file (cached in ``work``)."""
    from onnxruntime.quantization import quant_pre_process

    out = work / "onnx_preprocessed.onnx"
    if not out.exists():
        try:
            quant_pre_process(str(fp32), str(out), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs; onnx shape inference
            quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    return out


def quantize(fp32: Path, dest: Path, recipe: Recipe, calib: list[dict[str, np.ndarray]] | None,
             exclude: Sequence[str], work: Path, method: str = "minmax") -> list[str]:
    """Write ``dest`` from the float file ``fp32`` with ``recipe``; returns notes for the manifest."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    work.mkdir(parents=True, exist_ok=True)
    try:
        if recipe.name == "dynamic":
            quantize_dynamic(str(fp32), str(dest), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=list(QUANTIZABLE), nodes_to_exclude=list(exclude),
                             extra_options={"EnableSubgraph": False})
            return ["weights int8 per-channel; activations are quantized to int8 at run time (dynamic range)"]
        if recipe.name in ("qdq-per-channel", "qoperator-per-channel"):
            if not calib:
                raise ConversionError("static int8 needs calibration data", format="onnx")
            src = preprocess(fp32, work)
            cal = CalibrationMethod.Percentile if method == "percentile" else CalibrationMethod.MinMax
            extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False}
            if method == "percentile":
                extra["CalibPercentile"] = 99.999
            quantize_static(str(src), str(dest), _Reader(calib),
                            quant_format=QuantFormat.QDQ if recipe.name.startswith("qdq") else QuantFormat.QOperator,
                            per_channel=True, activation_type=QuantType.QUInt8 if recipe.name.startswith("qop")
                            else QuantType.QInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=None, nodes_to_exclude=list(exclude), calibrate_method=cal,
                            extra_options=extra, calibration_cache_path=str(work / f"onnx_ranges_{method}.json"))
            notes = [f"weights int8 per-channel symmetric; activations int8, ranges from {len(calib)} calibration "
                     f"samples ({method})"]
            if exclude:
                n = weight_only_int8(dest, set(exclude))
                notes.append(f"{len(exclude)} layer(s) kept float (float activations and compute; {n} of their "
                             "weights stored int8 and dequantized by DequantizeLinear)")
            return notes
        if recipe.name == "matmul-nbits":
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            model = onnx.load(str(fp32))
            q = MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=list(exclude))
            q.process()
            q.model.save_model_to_file(str(dest), use_external_data_format=False)
            n = sum(1 for node in onnx.load(str(dest)).graph.node if node.op_type == "MatMulNBits")
            return [f"{n} MatMul weights as int4 blocks of 32 (MatMulNBits); other layers (convolutions, Gemm) stay "
                    "float32 — onnxruntime has no 4-bit convolution"]
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantizer's failure is this artifact's failure
        raise ConversionError(f"onnxruntime.quantization ({recipe.name}) failed: {type(exc).__name__}: "
                              f"{one_line(exc, 400)}", format="onnx") from exc
    raise ConversionError(f"onnx has no recipe {recipe.name!r}", format="onnx")


def weight_only_int8(path: Path, nodes: set[str]) -> int:
    """Store the constant weights of ``nodes`` (left float by the static quantizer) as int8 per output channel
    behind a ``DequantizeLinear``: those layers compute in float on float activations, but the file stays small.

    Before: ``W(float) → Conv``. After: ``W_q(int8), W_scale, W_zp → DequantizeLinear(axis) → Conv``.
    Returns how many weights were converted.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    users: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    done = 0
    new_nodes = []
    for node in model.graph.node:
        if node.name in nodes and node.op_type in QUANTIZABLE and len(node.input) > 1:
            w_name = node.input[1]
            init = inits.get(w_name)
            if init is not None and users.get(w_name) == 1 and init.data_type == onnx.TensorProto.FLOAT:
                w = numpy_helper.to_array(init)
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                axis = 0 if node.op_type in ("Conv", "ConvTranspose") or (node.op_type == "Gemm" and trans_b) else 1
                axis = axis if w.ndim > 1 else 0
                red = tuple(a for a in range(w.ndim) if a != axis)
                scale = (np.abs(w).max(axis=red) / 127.0).astype(np.float32)
                scale[scale == 0] = 1.0
                shape = [1] * w.ndim
                shape[axis] = -1
                q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
                model.graph.initializer.remove(init)
                model.graph.initializer.extend([
                    numpy_helper.from_array(q, f"{w_name}_int8"), numpy_helper.from_array(scale, f"{w_name}_scale"),
                    numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{w_name}_zp")])
                new_nodes.append(helper.make_node("DequantizeLinear", [f"{w_name}_int8", f"{w_name}_scale",
                                                                       f"{w_name}_zp"], [w_name],
                                                  name=f"{w_name}_DequantizeLinear", axis=axis))
                done += 1
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    path.write_bytes(model.SerializeToString())
    return done


def methods(recipe: Recipe) -> tuple[str, ...]:
    """Range estimators worth trying for ``recipe`` (static recipes only)."""
    return _METHODS if recipe.calibrated else ("",)
