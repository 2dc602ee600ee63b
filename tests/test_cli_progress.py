"""Progress output and the global flags: -v / -vv / --quiet anywhere on the command line, timestamped step lines
when stderr is not a terminal, a live status line when it is."""

from __future__ import annotations

import io
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from mobilize import cli
from mobilize.progress import Done, Nested, Plan, Reporter, Step, as_details, clock


@pytest.fixture(autouse=True)
def _reset_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_STATE", {"verbose": 0, "quiet": False})


@pytest.mark.parametrize("args", [["-v", "export", "--help"], ["export", "--help", "-v"],
                                  ["export", "--verbose", "--help"], ["export", "--help", "-vv"],
                                  ["export", "--help", "--quiet"], ["-q", "export", "--help"]])
def test_global_flags_are_accepted_anywhere(args: list[str]) -> None:
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert "Usage: main export" in result.output
    assert cli._STATE["verbose"] == (2 if "-vv" in args else 1 if {"-v", "--verbose"} & set(args) else 0)
    assert cli._STATE["quiet"] is bool({"-q", "--quiet"} & set(args))


def test_verbose_and_quiet_together_are_a_usage_error() -> None:
    result = CliRunner().invoke(cli.main, ["export", "--help", "-v", "--quiet"])
    assert result.exit_code == 2 and "contradict" in result.output


def test_flags_after_double_dash_are_left_alone() -> None:
    group = cli.main
    ctx = group.make_context("mobilize", ["zoo", "-v"], resilient_parsing=True)
    assert ctx.params["verbose"] == 1
    ctx = group.make_context("mobilize", ["zoo", "--", "-v"], resilient_parsing=True)
    assert ctx.params["verbose"] == 0


def _console(tty: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=tty, width=200, highlight=False), buf


def test_not_a_terminal_prints_one_timestamped_line_per_step() -> None:
    console, buf = _console(False)
    with Reporter(console, live=False) as report:
        report("exporting onnx fp32")
        report(Done("onnx fp32 exported 3.10 MB, parity pass (1/2)"))
        report("exporting [onnx] fp16")  # markup in a message is printed as text
    lines = buf.getvalue().splitlines()
    assert lines == ["[00:00] exporting onnx fp32", "[00:00] onnx fp32 exported 3.10 MB, parity pass (1/2)",
                     "[00:00] exporting [onnx] fp16"]
    assert report.steps == 2  # finished work is not a step


def test_quiet_prints_nothing() -> None:
    console, buf = _console(False)
    with Reporter(console, live=False, quiet=True) as report:
        report("exporting onnx fp32")
        report(Done("onnx fp32 exported"))
    assert buf.getvalue() == ""


def test_terminal_keeps_finished_work_and_shows_the_step_count() -> None:
    console, buf = _console(True)
    with Reporter(console, live=True) as report:
        report("exporting onnx fp32")
        report("verifying onnx fp32")
        assert re.fullmatch(r"\[00:00\] step 2 · verifying onnx fp32…", report._line())
        report(Done("onnx fp32 exported 3.10 MB, parity pass (1/1)"))
    assert "onnx fp32 exported 3.10 MB, parity pass (1/1)" in buf.getvalue()


def test_numbered_steps_show_k_of_n_live_and_in_logs() -> None:
    console, buf = _console(True)
    with Reporter(console, live=True) as report:
        plan = Plan(report, 9)
        plan("loading model")
        plan("capturing")
        plan("converting coreml fp16")
        assert re.fullmatch(r"\[00:00\] step 3/9 · converting coreml fp16…", report._line())
        report("verifying coreml fp16")  # what runs now inside step 3: the count stays
        assert re.fullmatch(r"\[00:00\] step 3/9 · verifying coreml fp16…", report._line())
    console, buf = _console(False)
    with Reporter(console, live=False) as report:
        plan = Plan(report, 2)
        plan("exporting onnx fp32")
        report("verifying onnx fp32")
        report(Done("onnx fp32 exported 63.6 KB, parity pass (1/1)"))
        plan("judging fitness")
    assert buf.getvalue().splitlines() == ["[00:00] step 1/2 · exporting onnx fp32", "[00:00] verifying onnx fp32",
                                           "[00:00] onnx fp32 exported 63.6 KB, parity pass (1/1)",
                                           "[00:00] step 2/2 · judging fitness"]


def test_no_total_is_shown_until_it_is_known() -> None:
    console, buf = _console(True)
    with Reporter(console, live=True) as report:
        plan = Plan(report)
        plan("reading the bundle")
        assert re.fullmatch(r"\[00:00\] step 1 · reading the bundle…", report._line())
        plan.total = 3
        plan("timing")
        assert re.fullmatch(r"\[00:00\] step 2/3 · timing…", report._line())
    console, buf = _console(False)
    with Reporter(console, live=False) as report:
        Plan(report)("reading the bundle")
    assert buf.getvalue() == "[00:00] reading the bundle\n"


def test_a_sub_commands_steps_lead_a_longer_plan() -> None:
    got: list[str] = []
    numbered = Nested(got.append, after=2)
    inner = Plan(numbered, 3)
    for text in ("loading", "exporting onnx fp32", "fitness"):
        inner(text)
    numbered("verifying onnx fp32")
    numbered.then("benchmarking")
    bench = Plan(as_details(got.append), 2)  # a whole sub-command as one step: its steps are details
    bench("reading the bundle")
    numbered.then("judging")
    assert [(m.k, m.n) if isinstance(m, Step) else None for m in got] == [(1, 5), (2, 5), (3, 5), None, (4, 5), None,
                                                                         (5, 5)]
    assert got[-2] == "reading the bundle (1/2)" and not isinstance(got[-2], Step)


def test_a_step_keeps_its_numbers_across_processes() -> None:
    import pickle

    step = pickle.loads(pickle.dumps(Step("exporting onnx fp16", 5, 9)))
    assert isinstance(step, Step) and (str(step), step.k, step.n) == ("exporting onnx fp16", 5, 9)
    assert step.count("n") == 3  # still a str in every way


def test_clock() -> None:
    assert [clock(s) for s in (0, 59.9, 61, 3599, 3600, 3725)] == ["[00:00]", "[00:59]", "[01:01]", "[59:59]",
                                                                 "[1:00:00]", "[1:02:05]"]


def test_write_output_dash_is_stdout(capfdbinary: pytest.CaptureFixture[bytes], tmp_path, monkeypatch) -> None:
    from mobilize.guard import check_outputs, write_output

    monkeypatch.chdir(tmp_path)
    check_outputs(("--json", "-"))  # not a file: nothing to refuse
    write_output("-", '{"schema": "x/1"}\n', "--json")
    assert capfdbinary.readouterr().out == b'{"schema": "x/1"}\n'
    assert not (tmp_path / "-").exists()
    cli.json_target("-")
    assert cli._STATE["json_stdout"] is True
    cli.json_target(tmp_path / "v.json")
    assert cli._STATE["json_stdout"] is False


def test_a_nul_byte_in_a_path_is_a_one_line_input_error(capfd: pytest.CaptureFixture[str]) -> None:
    result = CliRunner().invoke(cli.main, ["export", "zoo:digits", "--weights", "a\0b"])
    assert result.exit_code == 2
    err = capfd.readouterr().err
    assert "NUL byte" in err and "internal error" not in err
