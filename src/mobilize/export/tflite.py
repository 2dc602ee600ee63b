"""TFLite (LiteRT) exporter: litert-torch lowers the captured program to a ``.tflite`` flatbuffer (no TensorFlow).

litert-torch re-traces ``program.module()`` (the captured graph, not the user's eager module), so every format is
fed by the same capture. int64 tensors become int32 in the file; the manifest records the file's actual I/O. fp16
stores weights as float16 (ai-edge-quantizer's float-casting recipe); LiteRT dequantizes them at load time on CPU.
"""

from __future__ import annotations

from pathlib import Path

from mobilize.capture import Capture, dynamic_shapes_for
from mobilize.errors import ConversionError
from mobilize.export import ExportedFile, ExportOptions
from mobilize.spec import ModelSpec


def export(capture: Capture, spec: ModelSpec, precision: str, dest: Path, options: ExportOptions) -> ExportedFile:
    import litert_torch

    from mobilize._quiet import quiet_imports

    quiet_imports()
    if precision not in ("fp32", "fp16"):
        raise ConversionError(f"tflite exporter has no precision {precision!r}", format="tflite")
    notes: list[str] = []
    module = capture.program.module()
    attempts = [dynamic_shapes_for(spec)] if capture.dynamic else []
    attempts.append(None)
    edge_model = None
    last: Exception | None = None
    for dyn in attempts:
        try:
            args = capture.example_inputs or spec.example_inputs if dyn is not None else spec.example_inputs
            edge_model = litert_torch.convert(module, args, dynamic_shapes=dyn, strict_export=False)
            break
        except Exception as exc:  # noqa: BLE001 - a dynamic-shape failure falls back to static shapes
            last = exc
            if dyn is not None:
                notes.append("dynamic dims are fixed at the example shape in the TFLite file "
                             f"(litert-torch could not lower them: {type(exc).__name__})")
    if edge_model is None:
        assert last is not None
        raise ConversionError(str(last), format="tflite", ops=_unsupported_ops(str(last))) from last
    tmp = dest.with_suffix(".fp32.tflite") if precision == "fp16" else dest
    edge_model.export(str(tmp))
    if any(t.dtype.itemsize == 8 and not t.dtype.is_floating_point for t in spec.example_inputs):
        notes.append("int64 inputs are int32 in the TFLite file")
    if precision == "fp16":
        _to_fp16_weights(tmp, dest)
        tmp.unlink()
        notes.append("fp16: weights stored as float16 (ai-edge-quantizer float casting); compute stays float32 on CPU")
    return ExportedFile(dest, notes)


def _to_fp16_weights(src: Path, dest: Path) -> None:
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(src.read_bytes())
    q.add_weight_only_config(regex=".*", operation_name="*", num_bits=16, algorithm_key="float_casting")
    try:
        result = q.quantize(enable_progress_report=False, enable_progress_bar=False)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"ai-edge-quantizer fp16 weight casting failed: {exc}", format="tflite") from exc
    dest.write_bytes(bytes(result.quantized_model))


def _unsupported_ops(message: str) -> list[str]:
    import re

    ops = re.findall(r"failed to legalize operation '([^']+)'", message)
    ops += re.findall(r"target=(torch\.ops\.[\w.]+)", message)
    ops += re.findall(r"No lowering (?:found )?for ([\w.:]+)", message)
    return sorted(set(ops))


_TWO_GB = 2**31
#: the name of the TFLite metadata entry mobilize writes (a UTF-8 JSON object; see docs/metadata.md)
METADATA_NAME = "mobilize"


def finalize(path: Path, info) -> list[str]:  # noqa: ANN001 - mobilize.export.metadata.FileInfo
    """Signature I/O renamed to the model's names (litert-torch writes ``args_0`` / ``output_0``) and ``info`` as a
    JSON metadata entry named :data:`METADATA_NAME`. Files whose buffers live outside the flatbuffer (> 2 GB) are
    left as they are, with a note."""
    import json

    import flatbuffers
    import numpy as np

    from mobilize.runtime.base import natural_key
    from mobilize.runtime.tflite_flatbuffer import schema

    S = schema()
    data = path.read_bytes()
    if len(data) >= _TWO_GB:
        return ["no metadata written: files of 2 GB and more keep their buffers outside the flatbuffer"]
    model = S.ModelT.InitFromPackedBuf(data, 0)
    for b in model.buffers or []:  # buffers stored after the flatbuffer (offset/size): inline them again
        if getattr(b, "offset", 0) > 1:
            b.data = np.frombuffer(data, dtype=np.uint8, count=int(b.size), offset=int(b.offset))
            b.offset = b.size = 0
    notes: list[str] = []
    want_in = [t["name"] for t in info.inputs]
    for sig in model.signatureDefs or []:
        for attr, names in (("inputs", want_in), ("outputs", list(info.outputs))):
            maps = getattr(sig, attr) or []
            current = sorted(maps, key=lambda m: natural_key(m.name.decode() if isinstance(m.name, bytes) else m.name))
            if len(current) == len(names) and names:
                for m, name in zip(current, names):
                    m.name = name
                setattr(sig, attr, current)  # listed in argument order (args_0, args_1, …, args_10)
    entry = {k: (json.loads(v) if k in ("mobilize.inputs", "mobilize.outputs", "labels", "normalization") else v)
             for k, v in info.entries().items()}
    payload = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    model.metadata = [m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name)
                      != METADATA_NAME]
    buf = S.BufferT()
    buf.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buf)
    meta = S.MetadataT()
    meta.name = METADATA_NAME
    meta.buffer = len(model.buffers) - 1
    model.metadata.append(meta)
    builder = flatbuffers.Builder(max(1024, path.stat().st_size + len(payload) + 4096))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    files = {"mobilize.json": json.dumps(entry, indent=2, sort_keys=True).encode()}
    if info.labels is not None:
        files["labels.txt"] = ("\n".join(info.labels) + "\n").encode()
    path.write_bytes(bytes(builder.Output()) + _zip(files))
    return notes


def _zip(files: dict[str, bytes]) -> bytes:
    """A stored (uncompressed) zip of ``files`` with fixed timestamps, appended to the flatbuffer: the TFLite
    metadata convention for associated files (``MetadataExtractor.getAssociatedFile("labels.txt")`` on Android);
    LiteRT ignores bytes after the flatbuffer."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name in sorted(files):
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            z.writestr(zi, files[name])
    return buf.getvalue()
