"""The built-in model zoo (``mobilize.models``): registry, shapes, determinism, trained digits accuracy.

No converters here; conversion of every zoo model is exercised by the export tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilize import models
from mobilize.errors import SourceError
from mobilize.spec import ModelSpec

EXPECTED_SHAPES = {
    "digits": {"image": (1, 1, 8, 8)},
    "mobilenet_v2": {"image": (1, 3, 96, 96)},
    "text_encoder": {"input_ids": (1, 16), "attention_mask": (1, 16)},
    "gru_classifier": {"sequence": (1, 20, 16)},
}
EXPECTED_OUTPUTS = {
    "digits": {"logits": (1, 10)},
    "mobilenet_v2": {"logits": (1, 10)},
    "text_encoder": {"last_hidden_state": (1, 16, 64), "pooled": (1, 64)},
    "gru_classifier": {"logits": (1, 4)},
}


def _run(spec: ModelSpec) -> list[torch.Tensor]:
    with torch.no_grad():
        out = spec.module(*spec.example_inputs)
    return [out] if isinstance(out, torch.Tensor) else list(out)


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return {name: models.get(name) for name in models.names()}


def test_registry_shape() -> None:
    assert models.names() == list(models.ZOO)
    assert models.DEFAULT in models.ZOO
    assert set(models.names()) == set(EXPECTED_SHAPES)
    for name, entry in models.ZOO.items():
        assert isinstance(entry, models.ZooEntry)
        assert entry.name == name
        assert entry.summary and "\n" not in entry.summary
        assert entry.weights in ("trained on scikit-learn digits", "seeded random init (architecture test model)")
    assert models.ZOO["digits"].weights == "trained on scikit-learn digits"


def test_import_is_cheap() -> None:
    code = ("import sys, mobilize.models as m; m.names(); "
            "bad = [k for k in ('torch', 'numpy', 'sklearn', 'safetensors') if k in sys.modules]; "
            "print(','.join(bad))")
    src = str(Path(models.__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": src})
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", list(EXPECTED_SHAPES))
def test_spec_runs_with_declared_io(specs: dict[str, ModelSpec], name: str) -> None:
    spec = specs[name]
    assert isinstance(spec, ModelSpec)
    assert spec.name == name
    assert not spec.module.training
    assert not spec.dynamic_dims
    assert list(spec.input_names) == list(EXPECTED_SHAPES[name])
    for nm, t in zip(spec.input_names, spec.example_inputs, strict=True):
        assert tuple(t.shape) == EXPECTED_SHAPES[name][nm]
    outs = _run(spec)
    assert spec.output_names is not None and len(outs) == len(spec.output_names)
    assert list(spec.output_names) == list(EXPECTED_OUTPUTS[name])
    for nm, o in zip(spec.output_names, outs, strict=True):
        assert tuple(o.shape) == EXPECTED_OUTPUTS[name][nm]
        assert o.dtype == torch.float32
        assert torch.isfinite(o).all()
    if spec.labels is not None:
        assert len(spec.labels) == outs[0].shape[-1]


@pytest.mark.parametrize("name", list(EXPECTED_SHAPES))
def test_outputs_deterministic(specs: dict[str, ModelSpec], name: str) -> None:
    a, b = _run(specs[name]), _run(specs[name])
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    # a fresh build gives the same weights and example inputs
    if name != "digits":
        fresh = models.ZOO[name].build()
        for x, y in zip(a, _run(fresh), strict=True):
            assert torch.equal(x, y)


def test_seeded_builds_do_not_touch_global_rng() -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    for name in models.names():
        models.get(name)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_name() -> None:
    with pytest.raises(SourceError, match=r"unknown zoo model 'nope'; available: digits, mobilenet_v2"):
        models.get("nope")
    with pytest.raises(SourceError, match=r"did you mean 'mobilenet_v2'"):
        models.get("mobilenetv2")


def test_digits_spec_metadata(specs: dict[str, ModelSpec]) -> None:
    from mobilize.models import digits

    spec = specs["digits"]
    assert spec.labels == [str(i) for i in range(10)]
    norm = spec.normalization
    assert norm is not None
    assert norm.scale == 16.0 and norm.layout == "NCHW" and norm.color == "GRAY"
    assert norm.mean == (digits.MEAN,) and norm.std == (digits.STD,)
    assert spec.example_inputs[0].dtype == torch.float32
    mobilenet = specs["mobilenet_v2"].normalization
    assert mobilenet is not None and mobilenet.mean == (0.485, 0.456, 0.406) and mobilenet.scale == 255.0


def test_text_encoder_inputs(specs: dict[str, ModelSpec]) -> None:
    spec = specs["text_encoder"]
    ids, mask = spec.example_inputs
    assert ids.dtype == torch.int64 and mask.dtype == torch.int64
    assert mask.tolist() == [[1] * 12 + [0] * 4]
    assert spec.input_ranges == {"input_ids": (0, 999), "attention_mask": (0, 1)}
    _hidden, pooled = _run(spec)
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(1), atol=1e-5)
    # padded positions do not change the pooled embedding
    ids2 = ids.clone()
    ids2[0, 12:] = 500
    with torch.no_grad():
        _, pooled2 = spec.module(ids2, mask)
    assert torch.allclose(pooled, pooled2, atol=1e-6)


def test_mobilenet_bn_stats_are_non_trivial(specs: dict[str, ModelSpec]) -> None:
    module = specs["mobilenet_v2"].module
    bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    for bn in bns:
        assert (bn.running_var > 0).all()
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert sum(p.numel() for p in module.parameters()) < 1_000_000


def test_digits_weights_and_accuracy() -> None:
    from safetensors.torch import load_file

    from mobilize.models import digits

    assert digits.WEIGHTS_PATH.is_file()
    assert digits.WEIGHTS_PATH.stat().st_size < 200_000
    state = load_file(str(digits.WEIGHTS_PATH))
    assert any(k.endswith("running_var") for k in state)  # BatchNorm is there
    model = digits.load_model()
    x, y = digits.digits_test_set()
    assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8)
    assert y.dtype == np.int64 and len(x) == len(y) == 450
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    assert float((pred == y).mean()) >= 0.95


def test_digits_example_input_is_the_first_test_digit() -> None:
    """The example input is stored in the package (no dataset needed to load the model) and is the split's own."""
    import numpy as np

    from mobilize.models import digits

    x, _ = digits.digits_test_set()
    assert np.array_equal(digits.example_input().numpy(), x[:1])
