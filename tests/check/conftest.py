"""A tiny project for ``mobilize check`` (a small CNN whose weights live in a safetensors checkpoint, so "retraining"
is writing new weights), quick bench settings, and helpers to run the CLI in-process.

Real exports are expensive (~3 s each): the session fixtures export once and tests copy the project folder
(``copy_project``) before changing anything; checks of an existing bundle (``--bundle``) only re-verify and bench.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

MODEL = '''
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def build():
    torch.manual_seed(0)
    return SmallCNN().eval(), (torch.randn(1, 1, 28, 28),)
'''

#: fast bench settings (tests check structure and verdicts, not speed); latency growth is generous because these
#: ~20 µs timings on a shared CI machine are noisy
QUICK = """
[bench]
threads = [1]
min_runs = 10
min_seconds = 0.05
warmup_seconds = 0.02

[regression]
max_latency_growth_pct = 300
"""

BASE_CONFIG = """
source = "model.py:build"
weights = "weights.safetensors"
formats = ["onnx"]
precisions = ["fp32", "fp16"]
"""


def write_weights(path: Path, *, scale: float = 1.0, noise: float = 0.0, seed: int = 0,
                  edit: Callable[[dict[str, Any]], None] | None = None) -> None:
    """The SmallCNN's seeded weights, optionally "retrained": scaled, with relative noise, or edited."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    namespace: dict[str, Any] = {}
    exec(MODEL, namespace)  # noqa: S102 - the test's own model code
    state = {k: v.clone() for k, v in namespace["SmallCNN"]().state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    for k, v in state.items():
        state[k] = v * scale + noise * v.abs().mean() * torch.randn(v.shape, generator=g)
    if edit is not None:
        edit(state)
    save_file(state, str(path))


def write_config(folder: Path, extra: str = "", *, base: str = BASE_CONFIG, quick: bool = True,
                 name: str = "mobilize.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(base) + textwrap.dedent(extra) + (QUICK if quick else ""))
    return path


def copy_project(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    """``mobilize ARGS`` in-process (the exit-code mapping included); returns click's Result, with ``.log``: what the
    CLI printed on its stderr console (progress lines, errors) — as in a CI log, stderr not being a terminal."""
    import io

    from rich.console import Console

    from mobilize import cli

    log = io.StringIO()
    saved = cli._STATE.get("err")
    cli._STATE["err"] = Console(file=log, stderr=True, highlight=False, soft_wrap=True, width=160)
    try:
        result = CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)
    finally:
        if saved is None:
            cli._STATE.pop("err", None)
        else:
            cli._STATE["err"] = saved
    result.log = log.getvalue()
    return result


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.py + weights.safetensors + mobilize.toml (onnx × fp32, fp16), nothing run yet."""
    root = tmp_path_factory.mktemp("check-template") / "project"
    root.mkdir()
    (root / "model.py").write_text(MODEL)
    write_weights(root / "weights.safetensors")
    write_config(root)
    return root


@pytest.fixture(scope="session")
def first_check(template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The project after its first ``mobilize check`` (no baseline yet): (folder, click result)."""
    root = copy_project(template, tmp_path_factory.mktemp("check-first") / "project")
    result = invoke("check", "--config", str(root / "mobilize.toml"))
    return root, result


@pytest.fixture(scope="session")
def baselined(first_check: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A copy of the first check's project after ``mobilize baseline update``: (folder, click result)."""
    root = copy_project(first_check[0], tmp_path_factory.mktemp("check-baselined") / "project")
    result = invoke("baseline", "update", "--config", str(root / "mobilize.toml"))
    return root, result
