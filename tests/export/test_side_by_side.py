"""Plain (fp32/fp16) conversions run side by side in forked children (``--jobs``, default the usable cores): the
bundle is the same as one conversion after another, and a converter that crashes costs its own file only.

Each export runs in a fresh ``mobilize`` process, as a user runs it: a test process that has already started JAX
(an in-process LiteRT conversion elsewhere in the suite) converts in-process, without children to run side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MODEL = '''
import torch
from mobilize.spec import ModelSpec


def spec():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    return ModelSpec(module=net, example_inputs=(torch.randn(1, 8),), input_names=["x"], output_names=["y"],
                     name="mlp")
'''


def _export(root: Path, out: str, jobs: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    (root / "mlp.py").write_text(MODEL)
    proc = subprocess.run([sys.executable, "-m", "mobilize", "export", "mlp.py:spec", "--formats", "onnx,tflite",
                           "--precisions", "fp32,fp16", "--jobs", str(jobs), "--out", out, "--json", f"{out}.json"],
                          cwd=root, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, **(env or {})})
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return {(a["format"], a["precision"]): a for a in json.loads((root / f"{out}.json").read_text())["artifacts"]}


@pytest.mark.slow
def test_side_by_side_gives_the_same_bundle_as_one_after_another(tmp_path: Path) -> None:
    one, two = _export(tmp_path, "one", 1), _export(tmp_path, "two", 2)
    assert {k: (a["status"], a["sha256"], a["parity"]["status"]) for k, a in one.items()} == \
        {k: (a["status"], a["sha256"], a["parity"]["status"]) for k, a in two.items()}
    assert {a["status"] for a in two.values()} == {"ok"} and {a["parity"]["status"] for a in two.values()} == {"pass"}
    for name in ("mlp_fp32.onnx", "mlp_fp16.onnx", "mlp_fp32.tflite", "mlp_fp16.tflite"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


@pytest.mark.slow
def test_a_crash_beside_other_converters_fails_its_file_only(tmp_path: Path) -> None:
    arts = _export(tmp_path, "b", 2, env={"MOBILIZE_CONVERTER_FAULT": "tflite fp32:SIGABRT"})
    bad = arts[("tflite", "fp32")]
    assert bad["status"] == "failed" and "crashed (SIGABRT)" in bad["error"]["message"]
    # what that child printed comes back with its failure (each side-by-side child captures its own output)
    assert any("LLVM ERROR" in ln for ln in bad["error"]["converter_log_tail"])
    others = [a for k, a in arts.items() if k != ("tflite", "fp32")]
    assert len(others) == 3 and all(a["status"] == "ok" and a["parity"]["status"] == "pass" for a in others)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".b.")]  # no staging folder left behind
