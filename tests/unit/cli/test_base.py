"""What every command shares: expected failures as one line `error: ...` and their exit code,
unexpected ones as one line unless --debug, Ctrl-C as 130 (also for a real process), and the
context that reads the settings."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from mlflow_stack.cli.base import Context, StackGroup
from mlflow_stack.errors import ConfigError, StackError
from mlflow_stack.native.processes import free_port
from tests.conftest import REPO, WITH_S3


class RetryLaterError(StackError):
    exit_code = 75


FAILURES: dict[str, BaseException] = {
    "config": ConfigError(["POSTGRES_PASSWORD is required", "MLFLOW_STACK_PORT='x' is bad"]),
    "stack": StackError("cannot reach PostgreSQL at db:5432: Connection refused"),
    "own-code": RetryLaterError("try again later"),
    "interrupt": KeyboardInterrupt(),
    "bug": RuntimeError("something broke"),
    "multiline-bug": RuntimeError("first line\nsecond line"),
    "usage": click.UsageError("no such thing"),
    "abort": click.Abort(),
    "exit": click.exceptions.Exit(4),
}


@click.group(cls=StackGroup)
@click.option("--debug", is_flag=True)
@click.pass_context
def group(ctx: click.Context, debug: bool) -> None:
    ctx.obj = Context(env_file=Path(".env"), debug=debug)


@group.command()
@click.argument("failure", type=click.Choice(sorted(FAILURES)))
def fail(failure: str) -> None:
    raise FAILURES[failure]


@group.command()
def succeed() -> None:
    click.echo("done")


@click.group(cls=StackGroup)
def without_context() -> None:
    pass


@without_context.command("fail")
def fail_without_context() -> None:
    raise ValueError("no context here")


def run(*args: str) -> Result:
    return CliRunner().invoke(group, list(args))


def test_success_is_untouched() -> None:
    result = run("succeed")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "done\n", "")


@pytest.mark.parametrize(
    ("failure", "code", "lines"),
    [
        (
            "config",
            2,
            ["error: POSTGRES_PASSWORD is required", "error: MLFLOW_STACK_PORT='x' is bad"],
        ),
        ("stack", 1, ["error: cannot reach PostgreSQL at db:5432: Connection refused"]),
        ("own-code", 75, ["error: try again later"]),
        ("interrupt", 130, ["interrupted"]),
        (
            "bug",
            1,
            [
                "error: unexpected RuntimeError: something broke (rerun with "
                "`mlflow-stack --debug ...` for the traceback)"
            ],
        ),
    ],
)
def test_failures_are_lines_on_stderr_with_their_exit_code(
    failure: str, code: int, lines: list[str]
) -> None:
    result = run("fail", failure)
    assert (result.exit_code, result.stderr.splitlines(), result.stdout) == (code, lines, "")
    assert "Traceback" not in result.output


def test_with_debug_an_unexpected_error_is_raised_for_its_traceback() -> None:
    result = run("--debug", "fail", "bug")
    assert isinstance(result.exception, RuntimeError)
    assert "error: unexpected" not in result.stderr
    expected = run("--debug", "fail", "stack")  # expected failures stay one line
    assert (expected.exit_code, expected.stderr) == (1, f"error: {FAILURES['stack']}\n")


def test_clicks_own_errors_keep_clicks_messages_and_codes() -> None:
    usage = run("fail", "usage")
    assert usage.exit_code == 2 and "Error: no such thing" in usage.stderr
    assert run("fail", "abort").exit_code == 1
    assert run("fail", "exit").exit_code == 4
    unknown = run("fail", "nonesuch")
    assert unknown.exit_code == 2 and "Invalid value for '{" in unknown.stderr


def test_an_unexpected_error_before_any_context_is_one_line_too() -> None:
    result = CliRunner().invoke(without_context, ["fail"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unexpected ValueError: no context here (rerun")


def test_an_unexpected_error_with_a_multi_line_message_is_still_one_line() -> None:
    result = run("fail", "multiline-bug")
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: unexpected RuntimeError: first line (rerun with")


# --- the context ---


def test_the_settings_are_the_file_overlaid_by_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in WITH_S3.items()) + "MLFLOW_STACK_PORT=5050\n"
        "POSTGRES_PORT=5433\n"
    )
    monkeypatch.setenv("POSTGRES_PORT", "6543")
    context = Context(env_file=env_file, debug=False)
    settings = context.settings()
    assert (settings.port, settings.postgres_port) == (5050, 6543)
    assert context.environment()["POSTGRES_PORT"] == "6543"


def test_a_misspelt_setting_is_a_warning_naming_the_right_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    context = Context(env_file=tmp_path / "missing.env", debug=False)
    with caplog.at_level(logging.WARNING, logger="mlflow_stack"):
        context.settings({**WITH_S3, "MLFLOW_STACK_PROT": "5050"})
    assert caplog.messages == [
        "warning: MLFLOW_STACK_PROT is not a setting of mlflow-stack "
        "(did you mean MLFLOW_STACK_PORT?)"
    ]


def test_missing_settings_are_one_config_error_naming_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        Context(env_file=tmp_path / "missing.env", debug=False).settings({})
    assert len(refused.value.problems) >= 3
    assert any("POSTGRES_PASSWORD" in p for p in refused.value.problems)


# --- a real process ---


@contextlib.contextmanager
def sigint_as_a_terminal_leaves_it() -> Iterator[None]:
    """A suite started in the background of a script (``make test &``, a CI step's ``( … &)``)
    runs with SIGINT ignored, and children inherit an ignored signal across exec: the command
    would never see the Ctrl-C. Start it as from a terminal, with SIGINT at its default."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        if previous is signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_a_real_command_with_130_and_one_line(tmp_path: Path) -> None:
    """`gc --every` waits an hour after its first (failed) try; SIGINT ends the wait."""
    with sigint_as_a_terminal_leaves_it():
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow_stack", "gc", "--every", "1h"],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"),
                 "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    try:
        first = process.stderr.readline()  # the first try's error: now it sleeps
        assert first.startswith("error: cannot reach the MLflow server at http://127.0.0.1:")
        assert first.rstrip().endswith("(next try in 3600 s)")
        time.sleep(0.1)
        status = Path(f"/proc/{process.pid}/status").read_text()
        masks = [line for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn"))]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130, masks  # 0.3 s here
        assert process.stderr.read() == "interrupted\n"
    finally:
        process.kill()
        process.wait()
        process.stderr.close()
