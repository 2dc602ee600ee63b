"""Fuzz the CLI's parsers — flags, budgets, thread lists, config files, MOBILIZE_* settings — through click in this
process: whatever the values, the run ends with exit 2 and the error that reached the CLI's exit-code mapping is one
of mobilize's own input errors (a one-line ``error:``), never an ``internal error:``. Every case stops before any
model is loaded or converted (the source or bundle named does not exist), so it stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mobilize import cli
from mobilize.errors import MobilizeInputError

_SETTINGS = settings(max_examples=120, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# text a user (or a CI template gone wrong) might put in a flag: digits of other scripts, signs, exponents, NaN
_nasty = st.sampled_from(["0", "-1", "1e999", "nan", "inf", "-inf", "１５", "²", "١", "٣", "1_000", "0x10", " 3 ",
                          "1,2", "all", "99999999999999999999999", "100000", "1e-400", "", "=", ",", "threads=2",
                          "\u00a0", "Ⅻ", "𝟗"])
_weird = st.one_of(
    _nasty,
    st.text(max_size=24),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """Every exception handed to the CLI's exit-code mapping (``cli._fail``)."""
    got: list[BaseException] = []
    original = cli._fail

    def spy(exc: BaseException) -> None:
        got.append(exc)
        original(exc)

    monkeypatch.setattr(cli, "_fail", spy)
    return got


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.main, args, env=env, catch_exceptions=True)


def _assert_input_error(result: Any, seen: list[BaseException]) -> None:
    assert result.exit_code == 2, (result.exit_code, result.exception, result.output)
    if isinstance(result.exception, SystemExit) or result.exception is None:
        assert all(isinstance(e, MobilizeInputError) for e in seen), [repr(e) for e in seen]
    else:
        raise AssertionError(f"an exception escaped the CLI: {result.exception!r}")
    seen.clear()


_token = st.one_of(_nasty, _weird, st.sampled_from(["1", "2", "all", "max"]))
_threads = st.lists(_token, min_size=1, max_size=3).map(",".join)
_budget_key = st.sampled_from(["latency_p50_ms", "latency_p90_ms", "size_mb", "zipped_mb", "peak_rss_mb", "threads",
                               "load_ms", "nope", ""])
_budget = st.lists(st.tuples(_budget_key, st.one_of(_nasty, _weird)).map("=".join), min_size=1,
                   max_size=3).map(",".join)


_BENCH_FLAGS = ["--threads", "--budget", "--formats", "--precisions", "--min-runs", "--min-seconds",
                "--warmup-seconds", "--source"]


@_SETTINGS
@given(flag=st.sampled_from(_BENCH_FLAGS), value=st.one_of(_threads, _budget, _weird))
@example(flag="--threads", value="²")  # cases an independent attack found; the rest is exploration
@example(flag="--threads", value="100000")
@example(flag="--budget", value="size_mb=1,threads=²")
@example(flag="--budget", value="latency_p90_ms=１５")
@example(flag="--min-seconds", value="nan")
def test_bench_flags(tmp_path: Path, seen: list[BaseException], flag: str, value: str) -> None:
    """One flag at a time (the first bad flag stops the run, so together they would hide each other)."""
    result = _invoke(["bench", str(tmp_path / "no-bundle"), "--no-memory", flag, value])
    if result.exit_code == 2 and not seen:  # click refused the value itself (a usage error, no traceback)
        assert isinstance(result.exception, SystemExit | None), result.exception
        return
    _assert_input_error(result, seen)


@pytest.mark.slow
@_SETTINGS
@given(threads=_threads, budget=_budget)
def test_bench_threads_with_budgets(tmp_path: Path, seen: list[BaseException], threads: str, budget: str) -> None:
    result = _invoke(["bench", str(tmp_path / "no-bundle"), "--no-memory", "--threads", threads, "--budget", budget])
    _assert_input_error(result, seen)


_EXPORT_FLAGS = ["--formats", "--precisions", "--onnx-opset", "--coreml-target", "--min-snr", "--min-top1",
                 "--holdout", "--max-size-ratio", "--snr-headroom", "--calibration", "--weights"]


@pytest.mark.slow
@_SETTINGS
@given(flag=st.sampled_from(_EXPORT_FLAGS), value=_weird, precisions=st.sampled_from(["fp32", "int8-weights"]))
@example(flag="--min-snr", value="nan", precisions="int8-weights")
@example(flag="--holdout", value="inf", precisions="int8-weights")
@example(flag="--onnx-opset", value="99999999999999999999999", precisions="fp32")
def test_export_flags(tmp_path: Path, seen: list[BaseException], flag: str, value: str, precisions: str) -> None:
    args = ["export", str(tmp_path / "missing.py") + ":build", "--out", str(tmp_path / "out"), "--precisions",
            precisions, flag, value]
    result = _invoke(args)
    if result.exit_code == 2 and not seen:  # click refused a malformed number itself (a usage error)
        assert isinstance(result.exception, SystemExit | None), result.exception
        return
    _assert_input_error(result, seen)
    assert not (tmp_path / "out").exists()


@_SETTINGS
@given(name=st.sampled_from(["MOBILIZE_WORKER_TIMEOUT", "MOBILIZE_WORKER_MEMORY_MB", "MOBILIZE_CONVERT_TIMEOUT"]),
       value=_weird)
@example(name="MOBILIZE_WORKER_TIMEOUT", value="inf")
@example(name="MOBILIZE_WORKER_TIMEOUT", value="")
def test_settings_from_the_environment(tmp_path: Path, seen: list[BaseException], name: str, value: str) -> None:
    if "\0" in value:
        return  # not representable in an environment
    result = _invoke(["verify", str(tmp_path / "no-bundle")], env={name: value})
    _assert_input_error(result, seen)


_toml_value = st.one_of(
    st.booleans(), st.integers(min_value=-10**40, max_value=10**40), st.floats(allow_nan=True),
    st.text(max_size=12), st.lists(st.integers(min_value=-10**20, max_value=10**20), max_size=4),
    st.lists(st.text(max_size=6), max_size=3),
)
_KEYS = ["formats", "precisions", "calibration", "strict", "output", "baseline", "weights", "trust_pickle", "nope"]
_SECTIONS = {"bench": ["threads", "min_runs", "min_seconds", "warmup_seconds", "memory", "enabled"],
             "budget": ["threads", "size_mb", "latency_p90_ms", "zipped_mb", "peak_rss_mb"],
             "parity": ["fp32", "fp16"], "accuracy": ["min_snr_db", "min_top1", "holdout"],
             "regression": ["latency", "size"], "export": ["onnx_opset", "coreml_target", "fp16_io"]}


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


@_SETTINGS
@given(top=st.dictionaries(st.sampled_from(_KEYS), _toml_value, max_size=4),
       sections=st.dictionaries(st.sampled_from(sorted(_SECTIONS)),
                                st.dictionaries(st.sampled_from(sorted({k for v in _SECTIONS.values() for k in v})),
                                                _toml_value, max_size=3), max_size=3))
def test_config_files(tmp_path: Path, seen: list[BaseException], top: dict[str, Any],
                      sections: dict[str, dict[str, Any]]) -> None:
    lines = ['source = "missing.py:build"'] + [f"{k} = {_toml(v)}" for k, v in top.items()]
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    cfg = tmp_path / "mobilize.toml"
    cfg.write_text("\n".join(lines) + "\n")
    result = _invoke(["check", "--config", str(cfg)])
    _assert_input_error(result, seen)


def _path_parameters() -> list[tuple[list[str], Any]]:
    import click

    found: list[tuple[list[str], Any]] = []

    def walk(cmd: click.Command, words: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                walk(sub, [*words, name])
            return
        found.extend((words, p) for p in cmd.params if isinstance(p.type, click.Path))

    walk(cli.main, [])
    return found


_PATH_PARAMETERS = _path_parameters()


@pytest.mark.parametrize(("words", "param"), _PATH_PARAMETERS,
                         ids=[" ".join([*w, p.opts[0]]) for w, p in _PATH_PARAMETERS])
def test_a_nul_byte_in_any_path_is_one_line_naming_the_parameter(seen: list[BaseException], words: list[str],
                                                                 param: Any) -> None:
    """Every path a command takes (an option or an argument, of every subcommand): a NUL byte, which ``os.stat``
    refuses with a bare ValueError, is mobilize's input error naming the parameter — found by the flag fuzzer as
    ``--weights``, fixed for the class (the type :class:`mobilize._clitypes.PathArg`)."""
    from mobilize._clitypes import PathArg

    assert isinstance(param.type, PathArg), f"{' '.join(words)} {param.opts[0]}: use PathArg, not click.Path"
    value = "bundle\0x"
    args = [*words, value] if param.param_type_name == "argument" else [*words, param.opts[0], value]
    result = _invoke(args)
    assert result.exit_code == 2, result.output
    assert len(seen) == 1 and isinstance(seen[0], MobilizeInputError), [repr(e) for e in seen]
    message = str(seen[0])
    assert "NUL byte" in message and "\n" not in message, message
    name = param.opts[0] if param.param_type_name == "option" else param.human_readable_name
    assert name in message, message


@pytest.mark.parametrize("what", ["out", "weights", "calibration"])
def test_the_api_refuses_a_nul_byte_in_a_path_before_any_work(tmp_path: Path, what: str) -> None:
    import mobilize

    kwargs: dict[str, Any] = {"out": tmp_path / "b", what: f"{tmp_path}/x\0y"}
    with pytest.raises(MobilizeInputError, match=f"{what} .*NUL byte"):
        mobilize.export(str(tmp_path / "missing.py") + ":build", formats="onnx", precisions="int8-weights", **kwargs)
    assert not (tmp_path / "b").exists()
