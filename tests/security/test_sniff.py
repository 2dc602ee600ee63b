"""Format detection by content: real files are recognised, arbitrary bytes never raise anything but our errors."""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mobilize.errors import MobilizeInputError
from mobilize.sniff import KINDS, expect, sniff, sniff_bytes


def test_real_files_are_recognised(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    m = torch.nn.Linear(2, 2)
    torch.save(m.state_dict(), tmp_path / "ckpt.bin")  # extension says nothing
    save_file(m.state_dict(), str(tmp_path / "w.dat"))
    np.savez(tmp_path / "a.npz", x=np.zeros(3))
    ep = torch.export.export(m.eval(), (torch.randn(1, 2),))
    torch.export.save(ep, str(tmp_path / "prog.zip"))
    (tmp_path / "pkg.mlpackage").mkdir()
    (tmp_path / "pkg.mlpackage" / "Manifest.json").write_text("{}")
    (tmp_path / "x.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "m.bin")
    assert sniff(tmp_path / "ckpt.bin") == "torch-zip"
    assert sniff(tmp_path / "w.dat") == "safetensors"
    assert sniff(tmp_path / "a.npz") == "npz"
    assert sniff(tmp_path / "prog.zip") == "pt2"
    assert sniff(tmp_path / "pkg.mlpackage") == "mlpackage"
    assert sniff(tmp_path / "x.tflite") == "tflite"
    assert sniff(tmp_path / "m.bin") == "onnx"


def test_truncated_and_mislabelled_files(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "text.tflite").write_text("hello world, not a model")
    assert sniff(tmp_path / "empty.onnx") == "unknown"
    with pytest.raises(MobilizeInputError, match="expected a TFLite file"):
        expect(tmp_path / "text.tflite", "tflite", "a TFLite file")
    with pytest.raises(MobilizeInputError, match="cannot read"):
        sniff(tmp_path / "missing.onnx")
    bad_zip = tmp_path / "bad.pt2"
    bad_zip.write_bytes(b"PK\x03\x04" + b"\xff" * 50)
    assert sniff(bad_zip) == "unknown"


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_never_crash_the_sniffer(tmp_path: Path, data: bytes) -> None:
    assert sniff_bytes(data) in KINDS
    p = tmp_path / "blob"
    p.write_bytes(data)
    assert sniff(p) in KINDS


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.text(min_size=1, max_size=20), max_size=4, unique=True), payload=st.binary(max_size=64))
def test_arbitrary_zip_archives_never_crash_the_sniffer(tmp_path: Path, names: list[str], payload: bytes) -> None:
    p = tmp_path / "z.zip"
    with zipfile.ZipFile(p, "w") as z:
        for n in names:
            with contextlib.suppress(ValueError, UnicodeEncodeError, IndexError):  # names zipfile cannot write
                z.writestr(n, payload)
    assert sniff(p) in KINDS
