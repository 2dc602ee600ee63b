"""Config validation: every problem is one line naming the file, the key and the fix; all are reported together."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mobilize.check.config import find, load
from mobilize.errors import ConfigError, MobilizeInputError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ci.md"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ci"


def _write(folder: Path, text: str, name: str = "mobilize.toml") -> Path:
    (folder / "model.py").write_text("def build(): ...\n")
    path = folder / name
    path.write_text(text)
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    assert isinstance(info.value, MobilizeInputError)  # → CLI exit 2
    assert all("\n" not in p for p in info.value.problems)
    return info.value.problems


def test_minimal_config_has_documented_defaults(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, 'source = "model.py:build"\n'))
    assert cfg.source == f"{tmp_path / 'model.py'}:build" and cfg.source_text == "model.py:build"
    assert cfg.formats == ("onnx", "coreml", "tflite") and cfg.precisions == ("fp32", "fp16")
    assert cfg.baseline == tmp_path / "mobilize-baseline.json" and cfg.output == tmp_path / "mobilize-check"
    assert cfg.bundle == tmp_path / "mobilize-check" / "bundle"
    assert cfg.regression.max_size_growth_pct == 10 and cfg.regression.max_latency_growth_pct == 25
    assert cfg.budgets.default == {} and cfg.tolerances == {} and not cfg.strict
    assert cfg.bench.threads == (1,) and cfg.bench.enabled
    assert cfg.repair
    assert cfg.accuracy.time_budget_s == 300.0


def test_export_repair_switch(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, 'source = "model.py:build"\n[export]\nrepair = false\n'))
    assert cfg.repair is False and cfg.to_dict()["repair"] is False
    assert any("export.repair" in p for p in _problems(_write(tmp_path, 'source = "model.py:build"\n[export]\n'
                                                                         'repair = "no"\n')))


def test_accuracy_time_budget(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, 'source = "model.py:build"\n[accuracy]\ntime_budget = 45\n'))
    assert cfg.accuracy.time_budget_s == 45.0
    problems = _problems(_write(tmp_path, 'source = "model.py:build"\n[accuracy]\ntime_budget = 0\n'))
    assert len(problems) == 1 and "accuracy.time_budget: 0 is out of range" in problems[0]


def test_accuracy_jobs(tmp_path: Path) -> None:
    assert load(_write(tmp_path, 'source = "model.py:build"\n')).accuracy.jobs is None  # default: usable cores
    cfg = load(_write(tmp_path, 'source = "model.py:build"\n[accuracy]\njobs = 2\n'))
    assert cfg.accuracy.jobs == 2
    for bad, why in (("0", "0 is out of range"), ("1.5", "1.5 is a number; give an integer")):
        problems = _problems(_write(tmp_path, f'source = "model.py:build"\n[accuracy]\njobs = {bad}\n'))
        assert len(problems) == 1 and f"accuracy.jobs: {why}" in problems[0], problems


def test_unknown_keys_suggest_the_right_one(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, """
        source = "model.py:build"
        precision = ["fp32"]
        [budget]
        size_mbb = 3
        [budgets]
        size_mb = 1
        [parity.fp16]
        atoll = 0.1
        [regression]
        max_size_growth = 5
    """.replace("\n        ", "\n")))
    path = tmp_path / "mobilize.toml"
    assert f"{path}: precision: unknown key (did you mean 'precisions'?)" in problems
    assert f"{path}: budget.size_mbb: unknown key (did you mean 'size_mb'?)" in problems
    assert f"{path}: budgets: unknown key (did you mean 'budget'?)" in problems
    assert f"{path}: parity.fp16.atoll: unknown key (did you mean 'atol'?)" in problems
    assert f"{path}: regression.max_size_growth: unknown key (did you mean 'max_size_growth_pct'?)" in problems
    assert len(problems) == 5


def test_wrong_types_name_the_key_and_an_example(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, """
source = "model.py:build"
formats = "onnx,tflight"
strict = "yes"
[budget]
latency_p90_ms = "fast"
threads = 0
[bench]
min_runs = 2.5
threads = [0]
[accuracy]
min_top1 = 2
[regression]
max_parity_worsening = 0.5
"""))
    text = "\n".join(problems)
    assert "formats: unknown value 'tflight' (did you mean 'tflite'?)" in text
    assert 'strict: "yes" is a string; give true or false' in text
    assert 'budget.latency_p90_ms: "fast" is a string; give a number, e.g. latency_p90_ms = 10' in text
    assert "budget.threads: 0 is out of range; give an integer ≥ 1" in text
    assert "bench.min_runs: 2.5 is a number; give an integer, e.g. min_runs = 50" in text
    assert "bench.threads: [0] is not a list of positive integers" in text
    assert "accuracy.min_top1: 2 is out of range" in text
    assert "regression.max_parity_worsening: 0.5 is out of range; give a number ≥ 1" in text
    assert len(problems) == 8


def test_missing_source_and_missing_files(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, 'formats = ["onnx"]\n'))
    assert problems == [f'{tmp_path / "mobilize.toml"}: source: missing; add e.g. source = "model.py:build" '
                        "(file.py:fn, package.module:fn, zoo:NAME or model.pt2)"]
    problems = _problems(_write(tmp_path, 'source = "modle.py:build"\nweights = "w.safetensors"\n'
                                          'precisions = ["int8"]\nformats = ["onnx"]\n'))
    assert any("source: file modle.py does not exist" in p and "relative to the config file" in p for p in problems)
    assert any("weights: w.safetensors does not exist" in p for p in problems)
    assert any("calibration: missing, but precisions has int8" in p for p in problems)
    assert _problems(_write(tmp_path, 'source = "zoo:digit"\n')) == [
        f"{tmp_path / 'mobilize.toml'}: source: unknown zoo model 'zoo:digit' (did you mean 'zoo:digits'?)"]


def test_unsupported_pairs_and_tables_for_absent_precisions(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, 'source = "zoo:digits"\nformats = ["coreml"]\nprecisions = ["fp32"]\n'
                                          "[parity.fp16]\natol = 0.1\n[budget.int8]\nsize_mb = 1\n"))
    assert any("parity.fp16: fp16 is not among precisions (fp32)" in p for p in problems)
    assert any("budget.int8: int8 is not among precisions (fp32)" in p for p in problems)


def test_paths_resolve_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = tmp_path / "repo" / "ml"
    (proj / "ckpt").mkdir(parents=True)
    (proj / "ckpt" / "w.safetensors").write_bytes(b"x")
    (proj / "calib.npz").write_bytes(b"x")
    cfg_path = _write(proj, 'source = "model.py:build"\nweights = "ckpt/w.safetensors"\ncalibration = "calib.npz"\n'
                            'output = "../out"\nbaseline = "base/line.json"\n')
    monkeypatch.chdir(tmp_path)  # somewhere else entirely
    cfg = load(Path("repo/ml/mobilize.toml"))
    root = proj.resolve()
    assert cfg.source == f"{root / 'model.py'}:build"
    assert cfg.weights == root / "ckpt" / "w.safetensors" and cfg.calibration == str(root / "calib.npz")
    assert cfg.output == root / "../out" and cfg.baseline == root / "base" / "line.json"
    assert cfg_path.is_file()


def test_pyproject_tool_mobilize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, '[project]\nname = "x"\n\n[tool.mobilize]\nsource = "model.py:build"\nformats = ["onnx"]\n\n'
                     "[tool.mobilize.budget]\nsize_mb = 2\nsize_mbb = 1\n", name="pyproject.toml")
    monkeypatch.chdir(tmp_path)
    assert find() == Path("pyproject.toml")
    problems = _problems(Path("pyproject.toml"))
    assert problems == ["pyproject.toml: tool.mobilize.budget.size_mbb: unknown key (did you mean 'size_mb'?)"]
    text = Path("pyproject.toml").read_text().replace("size_mbb = 1\n", "")
    Path("pyproject.toml").write_text(text)
    cfg = load(None)
    assert cfg.formats == ("onnx",) and cfg.budgets.default == {"size_mb": 2.0}
    # mobilize.toml wins over pyproject.toml
    _write(tmp_path, 'source = "zoo:digits"\n')
    assert find() == Path("mobilize.toml") and load(None).source == "zoo:digits"


def test_no_config_says_how_to_create_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no [tool.mobilize]
    with pytest.raises(ConfigError, match=r"no mobilize.toml and no \[tool.mobilize\] in pyproject.toml in the "
                                          r'current folder; create mobilize.toml with at least `source = "model'):
        load(None)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(_write(tmp_path, "source = \n"))
    with pytest.raises(ConfigError, match="nope.toml: no such file"):
        load(tmp_path / "nope.toml")


def test_parity_overrides_and_budgets_per_precision(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, 'source = "model.py:build"\nformats = ["onnx"]\nprecisions = ["fp32", "fp16"]\n'
                                "[parity.fp16]\natol = 0.05\nmin_snr_db = 20\n"
                                "[budget]\nsize_mb = 2\nlatency_p90_ms = 5\nthreads = 2\n"
                                "[budget.fp16]\nsize_mb = 1\n"))
    assert cfg.tolerances == {"fp16": {"atol": 0.05, "min_snr_db": 20.0}}
    assert cfg.budgets.limits("fp32") == {"size_mb": 2.0, "latency_p90_ms": 5.0}
    assert cfg.budgets.limits("fp16") == {"size_mb": 1.0, "latency_p90_ms": 5.0}
    assert cfg.budgets.bench_budget("fp16").threads == 2
    assert cfg.bench.threads == (1, 2)  # the budget's thread count is always measured
    from mobilize.verify.tolerance import for_artifact

    tol = for_artifact("onnx", "fp16", cfg.tolerances)
    assert (tol.atol, tol.min_snr_db, tol.rtol) == (0.05, 20.0, for_artifact("onnx", "fp16").rtol)
    problems = _problems(_write(tmp_path, 'source = "model.py:build"\n[parity.fp32]\nmin_cosine = 2\n'))
    assert problems[0].endswith("parity.fp32.min_cosine: 2 must be at most 1, e.g. min_cosine = 0.01")


def test_documented_example_and_the_ci_example_are_valid(tmp_path: Path) -> None:
    block = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert block is not None
    for rel in ("model.py", "checkpoints/latest.safetensors", "data/calib.npz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "mobilize.toml").write_text(block.group(1))
    cfg = load(tmp_path / "mobilize.toml")
    assert cfg.precisions == ("fp32", "fp16", "int8") and cfg.budgets.limits("int8")["size_mb"] == 3
    example = load(EXAMPLE / "mobilize.toml")
    assert example.source == f"{EXAMPLE.resolve() / 'model.py'}:build"
    assert (EXAMPLE / ".github" / "workflows" / "mobilize.yml").is_file()


def test_example_workflow_pins_actions_and_installs_with_constraints() -> None:
    import re

    text = (EXAMPLE / ".github" / "workflows" / "mobilize.yml").read_text()
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)", text, flags=re.M)
    assert len(uses) == 4
    assert all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses  # full SHAs, never a tag
    assert "persist-credentials: false" in text and "cache: pip" in text
    installs = [line for line in text.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs and all("-c constraints.txt" in line for line in installs)
    assert "checks: write" in text  # what the JUnit report step needs
    pins = dict(line.split("==") for line in (EXAMPLE / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert pins["torch"] == "2.13.0"
    root_pins = dict(line.split("==") for line in (EXAMPLE.parents[1] / "constraints.txt").read_text().splitlines()
                     if "==" in line and not line.startswith("#"))
    assert {k: root_pins[k] for k in pins} == pins  # the versions mobilize itself is tested with


def test_tolerance_overrides_are_checked_by_the_api() -> None:
    from mobilize.errors import OptionError
    from mobilize.verify.tolerance import check_overrides

    with pytest.raises(OptionError, match="unknown field 'atoll'"):
        check_overrides({"fp16": {"atoll": 1}}, ("fp32", "fp16"))
    with pytest.raises(OptionError, match="unknown precision 'fp8'"):
        check_overrides({"fp8": {"atol": 1}}, ("fp32", "fp16"))


def test_check_run_stays_the_function() -> None:
    """``mobilize.check.run`` is the API function, whatever submodules were imported (no ``run`` submodule)."""
    import mobilize.check.cli  # noqa: F401
    import mobilize.check.pipeline
    from mobilize import check

    assert check.run is mobilize.check.pipeline.run and check.load_config is mobilize.check.config.load
