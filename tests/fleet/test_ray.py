"""Fleets end to end: three models through local job processes and through a local Ray cluster (two worker
processes) started here, with a worker killed mid-job and a job that keeps failing."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mobilize import fleet

pytestmark = pytest.mark.slow

MODELS = '''
import torch


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.c = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.c(x)).mean((2, 3)))


def mlp():
    return Mlp().eval(), (torch.randn(1, 8),)


def cnn():
    return Cnn().eval(), (torch.randn(1, 3, 8, 8),)
'''

CONFIG = '''
formats = ["onnx"]
precisions = ["fp32"]
[bench]
enabled = false
[executor]
retries = {retries}

[[models]]
name = "mlp"
source = "models.py:mlp"

[[models]]
name = "cnn"
source = "models.py:cnn"

[[models]]
name = "strict"
source = "models.py:mlp"
precisions = ["fp16"]
[models.parity.fp16]
atol = 1e-12
rtol = 0
'''

DOOMED = '''
[[models]]
name = "doomed"
source = "models.py:cnn"
'''


def _fleet(tmp_path: Path, name: str, retries: int = 2, extra: str = "") -> fleet.Fleet:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "models.py").write_text(MODELS)
    (folder / "mobilize.toml").write_text(CONFIG.format(retries=retries) + extra)
    return fleet.load(folder / "mobilize.toml")


def _verdicts(path: Path) -> dict[tuple[str, str], str]:
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        out[(case.get("classname"), case.get("name"))] = "fail" if case.find("failure") is not None else "pass"
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # Ray's workers inherit this environment when the cluster starts: the first attempt of cnn/onnx/fp32 kills its
    # worker process mid-job (it is retried); every attempt of doomed/onnx/fp32 does (it is reported failed)
    os.environ["MOBILIZE_FLEET_FAULT"] = "cnn/onnx/fp32@worker:1,doomed/onnx/fp32@worker:always"
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        del os.environ["MOBILIZE_FLEET_FAULT"]
    yield ray
    ray.shutdown()


def test_three_models_same_verdicts_locally_and_on_ray_with_a_worker_killed(tmp_path: Path, ray_cluster) -> None:
    local = fleet.run(_fleet(tmp_path, "local"), executor="local", jobs=2)
    verdicts = _verdicts(local.fleet.output / "junit.xml")
    assert {c for c, _ in verdicts} == {"mobilize.mlp.onnx.fp32", "mobilize.cnn.onnx.fp32",
                                        "mobilize.strict.onnx.fp16"}
    assert verdicts[("mobilize.strict.onnx.fp16", "parity")] == "fail"  # a failing verdict must match too
    assert verdicts[("mobilize.mlp.onnx.fp32", "parity")] == "pass"
    assert local.exit_code == 1
    assert all(j["status"] == "done" and j["attempts"] == 1 for j in local.jobs)

    # the same three models on Ray, cnn's first worker killed mid-job: the same verdicts
    fl = _fleet(tmp_path, "ray")
    remote = fleet.run(fl, executor="ray")
    jobs = {j["model"]: j for j in remote.jobs}
    assert jobs["cnn"]["status"] == "done" and jobs["cnn"]["attempts"] == 2  # its first worker was killed
    assert jobs["mlp"]["attempts"] == 1 and jobs["strict"]["attempts"] == 1
    got = _verdicts(remote.fleet.output / "junit.xml")
    assert got == verdicts
    assert remote.exit_code == 1

    # the same config again: every job is stored, nothing runs
    again = fleet.run(fl, executor="ray")
    assert [j["status"] for j in again.jobs] == ["stored", "stored", "stored"]
    assert _verdicts(again.fleet.output / "junit.xml") == got


def test_a_job_that_keeps_failing_is_reported(tmp_path: Path, ray_cluster) -> None:
    fl = _fleet(tmp_path, "failing", retries=1, extra=DOOMED)
    fl = type(fl)(**{**fl.__dict__, "models": tuple(m for m in fl.models if m[0] in ("doomed", "mlp"))})
    result = fleet.run(fl, executor="ray")
    jobs = {j["model"]: j for j in result.jobs}
    assert jobs["doomed"]["status"] == "failed" and jobs["doomed"]["attempts"] == 2
    assert jobs["mlp"]["status"] == "done"
    assert result.exit_code == 1
    root = ET.parse(result.fleet.output / "junit.xml").getroot()
    failure = [c for c in root.iter("testcase") if c.get("classname") == "mobilize.doomed.onnx.fp32"]
    assert [c.get("name") for c in failure] == ["export"]
    assert "2 attempt(s)" in failure[0].find("failure").get("message")
    assert "doomed/onnx/fp32" in (result.fleet.output / "summary.md").read_text()
