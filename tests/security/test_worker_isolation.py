"""Every interpreter mobilize starts (verification workers, bench's memory probes) imports nothing from the current
folder — a bundle may hold ``onnxruntime.py`` — yet still imports mobilize from wherever it is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import mobilize
from mobilize import isolate
from mobilize.verify.inputs import InputSet
from mobilize.verify.parity import Reference

HOSTILE = "import pathlib\npathlib.Path({marker!r}).touch()\nraise SystemExit('hostile module imported')\n"


def _tiny_onnx(folder: Path) -> tuple[Path, Path]:
    """A MatMul model written with onnx.helper (no converter) and its reference."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.ones((1, 4), np.float32)
    ref = folder / "reference.npz"
    Reference([InputSet("example", {"x": x})], [{"y": x @ w}], ["y"]).save(ref)
    return path, ref


@pytest.fixture
def hostile_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The current folder holds modules named like the runtimes (as a bundle could); returns (folder, marker)."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    marker = tmp_path / "PWNED"
    for name in ("onnxruntime", "numpy", "mobilize_worker_probe"):
        (folder / f"{name}.py").write_text(HOSTILE.format(marker=str(marker)))
    monkeypatch.chdir(folder)
    # a parent started as `python -m mobilize` from that folder has it first on sys.path
    monkeypatch.setattr(sys, "path", ["", str(folder), *sys.path])
    return folder, marker


def test_worker_never_imports_from_the_current_folder(tmp_path: Path, hostile_cwd: tuple[Path, Path]) -> None:
    folder, marker = hostile_cwd
    path, ref = _tiny_onnx(folder)
    result = isolate.run({"op": "verify", "format": "onnx", "path": path.name, "precision": "fp32",
                          "reference": ref.name, "input_names": ["x"]})
    assert not marker.exists(), "the worker imported a module from the current folder"
    assert result["parity"]["status"] == "pass", result


def test_memory_probe_never_imports_from_the_current_folder(hostile_cwd: tuple[Path, Path]) -> None:
    from mobilize.bench import memory

    folder, marker = hostile_cwd
    path, ref = _tiny_onnx(folder)
    result = memory.measure({"kind": "runner", "format": "onnx", "path": path.name, "threads": 1,
                             "reference": ref.name, "input_names": ["x"], "runs": 1})
    assert not marker.exists(), "the memory probe imported a module from the current folder"
    assert "peak_rss_mb" in result, result


def _where(env: dict[str, str], cwd: Path) -> dict[str, object]:
    """Run ``python -m mobilize.isolate`` the way mobilize starts its children, from a parent with ``env``."""
    code = ("import json, subprocess, mobilize, mobilize.isolate as i; "
            "r = subprocess.run(i.python_command('mobilize.isolate'), cwd=i.tempfile.gettempdir(), "
            "capture_output=True, text=True, check=True); "
            "print(json.dumps({'parent': mobilize.__file__, 'child': json.loads(r.stdout)}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(extra)
    return env


def test_child_imports_mobilize_from_the_editable_install(tmp_path: Path) -> None:
    """This test environment installs mobilize in editable mode (a .pth entry for src/): -I keeps site-packages."""
    got = _where(_env(), tmp_path)
    assert got["child"]["mobilize"] == got["parent"] == mobilize.__file__
    assert str(tmp_path) not in got["child"]["sys_path"] and "" not in got["child"]["sys_path"]


def test_child_imports_mobilize_from_pythonpath(tmp_path: Path) -> None:
    """A copy of mobilize reachable only through PYTHONPATH (which ``-I`` ignores) is still the one children use."""
    site = tmp_path / "site"
    shutil.copytree(Path(mobilize.__file__).parent, site / "mobilize",
                    ignore=shutil.ignore_patterns("__pycache__"))
    got = _where(_env(PYTHONPATH=str(site)), tmp_path)
    assert got["parent"] == str(site / "mobilize" / "__init__.py")
    assert got["child"]["mobilize"] == got["parent"]


def test_relative_paths_in_a_job_resolve_against_the_callers_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path, ref = _tiny_onnx(tmp_path)
    monkeypatch.chdir(tmp_path)
    found = isolate.run({"op": "inspect", "format": "onnx", "path": "m.onnx"})
    assert found["inputs"] == [{"name": "x", "shape": [1, 4], "dtype": "float32"}]


def test_workers_get_one_blas_thread_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilize.isolate import _worker_env

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert _worker_env()["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")
    assert _worker_env()["OPENBLAS_NUM_THREADS"] == "8"
