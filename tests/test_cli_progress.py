"""Progress output and the global flags: -v / -vv / --quiet anywhere on the command line, timestamped step lines
when stderr is not a terminal, a live status line when it is."""

from __future__ import annotations

import io
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from mobilize import cli
from mobilize.progress import Done, Reporter, clock


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
