"""Shared tiny models and helpers for the unit tests.

Everything here is cheap: tiny ``nn.Module``s (a few parameters), no converter calls. The models are exposed as
fixtures (pytest discourages importing ``conftest``); the ``.pt2`` builders live in ``tests/fixtures/make_fixtures.py``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mobilize.spec import ModelSpec

# --- tiny models ------------------------------------------------------------------------------------------------


class TinyLinear(torch.nn.Module):
    """(N, 4) float → (N, 3) float; deterministic (fixed seed)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc = torch.nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(3, 4, generator=g))
            self.fc.bias.copy_(torch.randn(3, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class TwoInOut(torch.nn.Module):
    """(float features, int64 ids) → (sum, ids*2): two inputs of different dtypes, two outputs."""

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.sum(dim=-1), ids * 2


class DictOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": x * 2, "probs": torch.softmax(x, dim=-1)}


class AlwaysDropout(torch.nn.Module):
    """Non-deterministic even in eval mode: calls dropout with training=True explicitly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, 0.5, training=True)


class DropoutParent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = TinyLinear()
        self.drop = AlwaysDropout()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc(x))


class DataDependent(torch.nn.Module):
    """Python control flow on a tensor value: no torch.export strategy can capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


class NumpyInside(torch.nn.Module):
    """Round-trips through numpy: non-strict export fails (``.numpy()`` on a fake tensor), strict (Dynamo) succeeds."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np

        return torch.from_numpy(np.sin(x.numpy())) + 1


class FixedBatch(torch.nn.Module):
    """Reshapes to a hard-coded batch of 2: exporting with a dynamic batch fails, a static export works."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(2, -1) * 3


@pytest.fixture
def models() -> Any:
    """The tiny model classes, as attributes (``models.TinyLinear()``)."""
    import types

    return types.SimpleNamespace(TinyLinear=TinyLinear, TwoInOut=TwoInOut, DictOut=DictOut,
                                 AlwaysDropout=AlwaysDropout, DropoutParent=DropoutParent,
                                 DataDependent=DataDependent, NumpyInside=NumpyInside, FixedBatch=FixedBatch)


@pytest.fixture
def linear_spec() -> ModelSpec:
    """TinyLinear on a (2, 4) input named ``x``, one output ``y``."""
    return ModelSpec(module=TinyLinear().eval(), example_inputs=(torch.randn(2, 4),), input_names=["x"],
                     output_names=["y"], name="tiny_linear")


@pytest.fixture
def write_py(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write_py("name.py", code)`` writes dedented code into tmp_path and returns the path."""

    def _write(name: str, code: str) -> Path:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(code))
        return p

    return _write


@pytest.fixture
def worker_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The key (a format) of every isolated worker process started while the test runs, in order (the real workers
    start; this only records them)."""
    from mobilize import isolate

    started: list[str] = []
    real = isolate._Lane._start

    def recording(lane: isolate._Lane) -> None:
        started.append(lane.key)
        real(lane)

    monkeypatch.setattr(isolate._Lane, "_start", recording)
    return started


@pytest.fixture(scope="session")
def tiny_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine ``torch.export.save`` archive of a tiny Linear model whose input is named ``features``."""
    from fixtures.make_fixtures import save_tiny_pt2

    return save_tiny_pt2(tmp_path_factory.mktemp("pt2") / "tiny.pt2")


# --- parallel runs (pytest-xdist) -------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The order ``make test`` hands the modules to its workers (``-n 2 --dist loadscope --no-loadscope-reorder``:
    each module runs whole on one worker, so its module-scoped fixtures run once; the end-to-end export pool is
    shared by the workers, see tests/e2e/conftest.py).

    Modules go in the order of their ``slow`` tests, most first, so the longest work starts first and no worker is
    left with a long module at the end (longest-first scheduling); within a module the order is the file's. Without
    xdist only the order changes.
    """
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    weight = {name: sum(1 for it in group if it.get_closest_marker("slow")) for name, group in modules.items()}
    items[:] = [it for name in sorted(modules, key=lambda n: -weight[n]) for it in modules[name]]
