"""Fleet configs: [[models]] tables over top-level defaults, [executor], names, shards (no exports here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobilize import fleet
from mobilize.check import config as single
from mobilize.errors import ConfigError, OptionError


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mobilize.toml"
    p.write_text(text)
    return p


def test_models_inherit_top_level_keys_and_override_them(tmp_path: Path) -> None:
    p = _write(tmp_path, '''
formats = ["onnx", "tflite"]
precisions = ["fp32"]
[budget]
size_mb = 5
[[models]]
name = "a"
source = "zoo:digits"
[[models]]
source = "zoo:gru_classifier"
precisions = ["fp32", "fp16"]
[models.budget]
size_mb = 1
''')
    fl = fleet.load(p)
    assert fl.names() == ["a", "gru_classifier"]
    a, g = dict(fl.models)["a"], dict(fl.models)["gru_classifier"]
    assert a.formats == g.formats == ("onnx", "tflite")
    assert a.precisions == ("fp32",) and g.precisions == ("fp32", "fp16")
    assert a.budgets.default["size_mb"] == 5 and g.budgets.default["size_mb"] == 1
    assert a.output == tmp_path / "mobilize-check" / "a"
    assert g.baseline == tmp_path / "mobilize-baseline-gru_classifier.json"
    assert fl.executor.kind == "local" and fl.executor.retries == 2


def test_every_problem_of_every_model_at_once(tmp_path: Path) -> None:
    p = _write(tmp_path, '''
[executor]
kind = "slurm"
[[models]]
name = "a"
source = "zoo:digits"
formats = ["onx"]
[[models]]
name = "a"
source = "zoo:digits"
[[models]]
name = "b c"
source = "zoo:digits"
''')
    with pytest.raises(ConfigError) as e:
        fleet.load(p)
    text = "\n".join(e.value.problems)
    assert "executor.kind: unknown executor 'slurm'" in text
    assert "models.a.formats: unknown value 'onx' (did you mean 'onnx'?)" in text
    assert "'a' is used by another model" in text
    assert "models[2].name" in text


def test_single_model_loader_refuses_a_fleet(tmp_path: Path) -> None:
    p = _write(tmp_path, '[[models]]\nsource = "zoo:digits"\n')
    assert fleet.is_fleet(p)
    with pytest.raises(ConfigError, match="fleet"):
        single.load(p)
    assert not fleet.is_fleet(_write(tmp_path, 'source = "zoo:digits"\n'))


def test_jobs_are_planned_in_a_fixed_order_and_sharded(tmp_path: Path) -> None:
    p = _write(tmp_path, '''
formats = ["tflite", "onnx"]
precisions = ["fp32", "fp16"]
[[models]]
source = "zoo:digits"
[[models]]
source = "zoo:gru_classifier"
''')
    fl = fleet.load(p)
    jobs = fleet.plan(fl)
    assert [j.label for j in jobs][:4] == ["digits/tflite/fp32", "digits/tflite/fp16", "digits/onnx/fp32",
                                           "digits/onnx/fp16"]
    assert len({j.key for j in jobs}) == 8  # keyed by model, format and precision
    assert fleet.plan(fl) == jobs  # same config, same keys
    shards = [fleet.plan(fl, (i, 3)) for i in (1, 2, 3)]
    assert sorted(j.label for s in shards for j in s) == sorted(j.label for j in jobs)
    assert not set(j.key for j in shards[0]) & set(j.key for j in shards[1])


def test_job_key_follows_the_model_file(tmp_path: Path) -> None:
    model = tmp_path / "m.py"
    model.write_text("def build():\n    raise SystemExit\n")
    p = _write(tmp_path, '[[models]]\nsource = "m.py:build"\n')
    before = fleet.plan(fleet.load(p))[0].key
    model.write_text("def build():\n    raise SystemExit(1)\n")
    assert fleet.plan(fleet.load(p))[0].key != before


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard(text: str) -> None:
    with pytest.raises(OptionError, match="--shard"):
        fleet.parse_shard(text)
    assert fleet.parse_shard("2/4") == (2, 4)
