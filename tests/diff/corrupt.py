"""Corrupt one layer's weight inside an exported file, as a third party would: find the stored weight by its shape
(independently of mobilize's matching code), change one value, and refresh the manifest's size and sha256."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _bump(arr: np.ndarray) -> np.ndarray:
    """One value of the weight, moved by three times the tensor's largest magnitude."""
    out = np.array(arr, copy=True)
    flat = out.reshape(-1)
    k = flat.size // 2
    flat[k] = flat[k] + 3.0 * float(np.abs(flat).max())
    return out


def onnx_weight(path: Path, shape: tuple[int, ...]) -> str:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    hits = [i for i in model.graph.initializer if tuple(i.dims) == shape]
    assert len(hits) == 1, f"{len(hits)} initializers of shape {shape}"
    init = hits[0]
    init.CopyFrom(numpy_helper.from_array(_bump(numpy_helper.to_array(init)), init.name))
    onnx.save(model, str(path))
    return init.name


def tflite_weight(path: Path, shape: tuple[int, ...]) -> str:
    """Conv weights are stored OHWI in TFLite: match any order of the PyTorch shape's dims."""
    from ai_edge_litert import schema_py_generated as S

    data = bytearray(path.read_bytes())
    model = S.Model.GetRootAs(bytes(data), 0)
    sg = model.Subgraphs(0)
    hits = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        tshape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        if t.Type() == S.TensorType.FLOAT32 and sorted(tshape) == sorted(shape) and len(tshape) == len(shape):
            buf = model.Buffers(t.Buffer())
            if buf.DataLength() > 0:
                hits.append((i, t, buf))
    assert len(hits) == 1, f"{len(hits)} float32 constants of shape {shape} (any order)"
    _, t, buf = hits[0]
    o = buf._tab.Offset(4)  # the data vector's position in the file
    start = buf._tab.Vector(o)
    n = buf.DataLength()
    arr = np.frombuffer(bytes(data[start:start + n]), dtype=np.float32)
    data[start:start + n] = _bump(arr).tobytes()
    path.write_bytes(bytes(data))
    return t.Name().decode()


def coreml_weight(package: Path, shape: tuple[int, ...]) -> str:
    """The const feeding a conv/linear ``weight`` with that shape, patched in ``weights/weight.bin``."""
    import struct

    from coremltools.proto import MIL_pb2, Model_pb2

    manifest = json.loads((package / "Manifest.json").read_text())
    entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    spec_path = package / "Data" / entry["path"]
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    consts = {op.outputs[0].name: op for op in block.operations if op.type == "const"}
    hits = []
    for op in block.operations:
        if op.type not in ("conv", "linear"):
            continue
        name = op.inputs["weight"].arguments[0].name
        const = consts.get(name)
        if const is None:
            continue
        val = const.attributes["val"]
        dims = tuple(d.constant.size for d in val.type.tensorType.dimensions)
        if dims == shape and val.WhichOneof("value") == "blobFileValue":
            hits.append((name, val))
    assert len(hits) == 1, f"{len(hits)} conv/linear weights of shape {shape}"
    name, val = hits[0]
    assert val.type.tensorType.dataType == MIL_pb2.DataType.FLOAT32
    blob = spec_path.parent / val.blobFileValue.fileName.replace("@model_path/", "")
    data = bytearray(blob.read_bytes())
    _sentinel, _code, nbytes, offset = struct.unpack_from("<IIQQ", data, int(val.blobFileValue.offset))
    arr = np.frombuffer(bytes(data[offset:offset + nbytes]), dtype=np.float32)
    data[offset:offset + nbytes] = _bump(arr).tobytes()
    blob.write_bytes(bytes(data))
    return name


def refresh_manifest(bundle: Path) -> None:
    """Record every file's new size and sha256, as someone shipping the altered bundle would."""
    from mobilize.bundle.hashing import sha256, size

    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    for art in manifest["artifacts"]:
        if art.get("path"):
            art["sha256"] = sha256(bundle / art["path"])
            art["bytes"] = size(bundle / art["path"])
    path.write_text(json.dumps(manifest, indent=2))


def corrupt(bundle: Path, shape: tuple[int, ...]) -> dict[str, str]:
    """Corrupt the fp32 file of every format in ``bundle``; returns format → the name of the changed weight."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    done = {}
    for art in manifest["artifacts"]:
        if art["precision"] != "fp32" or not art.get("path"):
            continue
        f = bundle / art["path"]
        done[art["format"]] = {"onnx": onnx_weight, "tflite": tflite_weight, "coreml": coreml_weight}[art["format"]](
            f, shape)
    refresh_manifest(bundle)
    return done
