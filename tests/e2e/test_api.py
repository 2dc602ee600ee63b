"""The Python API in-process on a ModelSpec object (task 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _spec():
    import torch

    from mobilize import ModelSpec

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 3)).eval()
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(3))
    return ModelSpec(
        module=module,
        example_inputs=(x,),
        input_names=["features"],
        output_names=["scores"],
        labels=["a", "b", "c"],
        name="api_mlp",
    )


def test_api_export_and_verify(tmp_path: Path) -> None:
    import mobilize
    from mobilize.bundle import manifest as mf

    out = tmp_path / "api_bundle"
    result = mobilize.export(_spec(), out, formats="onnx,coreml,tflite", precisions="fp32")
    assert result.exit_code == 0, json.dumps(result.manifest["artifacts"], indent=1)[:3000]
    assert Path(result.out) == out
    m = result.manifest
    mf.validate(m)
    assert m["model"]["source"] == "ModelSpec:api_mlp"
    assert m["model"]["labels"] == ["a", "b", "c"]
    assert {a["format"]: a["status"] for a in m["artifacts"]} == {"onnx": "ok", "coreml": "ok", "tflite": "ok"}
    for a in m["artifacts"]:
        if a["format"] in ("onnx", "tflite"):
            assert a["parity"]["status"] == "pass", a["parity"]
    assert mobilize.load_bundle(out) == json.loads(json.dumps(m))

    again = mobilize.verify(out)
    assert again.exit_code == 0
    assert [a["parity"]["status"] for a in again.artifacts] == [a["parity"]["status"] for a in m["artifacts"]]


def test_api_bad_input_raises_and_writes_nothing(tmp_path: Path) -> None:
    import mobilize

    with pytest.raises(mobilize.MobilizeInputError, match="foo"):
        mobilize.export(_spec(), tmp_path / "nope", formats="onnx,foo")
    assert list(tmp_path.iterdir()) == []


_SIDE_EFFECTS_SCRIPT = r"""
import json, logging, os, sys, warnings
import torch
import mobilize

env_before = dict(os.environ)
root_before = logging.getLogger().level
filters_before = len(warnings.filters)
spec = mobilize.ModelSpec(module=torch.nn.Linear(4, 2).eval(), example_inputs=(torch.randn(1, 4),), name="lin")
result = mobilize.export(spec, sys.argv[1], formats="coreml", precisions="fp32")
# TF_CPP_MIN_LOG_LEVEL is left out: coremltools' TensorFlow frontend sets it when it is imported
keys = ("TQDM_DISABLE", "TORCH_LOGS", "GLOG_minloglevel", "TF_ENABLE_ONEDNN_OPTS")
print(json.dumps({
    "exit_code": result.exit_code,
    "env_changed": {k: os.environ.get(k) for k in keys if os.environ.get(k) != env_before.get(k)},
    "root_level": [root_before, logging.getLogger().level],
    "ignore_filters_from_mobilize": sum(1 for f in warnings.filters[: len(warnings.filters) - filters_before]
                                        if f[0] == "ignore" and f[2] in (FutureWarning, DeprecationWarning, UserWarning)
                                        and f[1] is None and f[3] is None),
}))
"""


def test_api_export_does_not_change_host_process_state(tmp_path: Path) -> None:
    import subprocess
    import sys

    from ._util import cli_env

    proc = subprocess.run(
        [sys.executable, "-c", _SIDE_EFFECTS_SCRIPT, str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["exit_code"] == 0
    assert report["env_changed"] == {}, report
    assert report["root_level"][0] == report["root_level"][1], report
    # third-party imports (torch.onnx, coremltools, jax) add warning filters of their own; mobilize's quiet mode adds
    # its "ignore" filters only in the CLI and in worker processes, so none of those may appear here
    assert report["ignore_filters_from_mobilize"] == 0, report
