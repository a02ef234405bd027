"""The `mlflow-stack` group: its commands, help, version, and the logging it sets up."""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_stack.cli.main import cli
from tests.unit.cli.conftest import invoke

COMMANDS = {
    "serve",
    "up",
    "down",
    "status",
    "logs",
    "healthcheck",
    "config",
    "backup",
    "restore",
    "gc",
}


def test_every_command_group_is_gathered() -> None:
    assert set(cli.commands) == COMMANDS
    assert set(cli.commands["config"].commands) == {"check", "example", "init", "reference"}


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_the_help_names_every_command(flag: str) -> None:
    result = CliRunner().invoke(cli, [flag], prog_name="mlflow-stack")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: mlflow-stack [OPTIONS] COMMAND [ARGS]...")
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line}
    assert listed == COMMANDS
    assert "mlflow-stack config check | example | init | reference" in result.stdout


def test_the_version_is_the_packages() -> None:
    result = CliRunner().invoke(cli, ["--version"], prog_name="mlflow-stack")
    assert result.stdout == f"mlflow-stack, version {version('mlflow-stack')}\n"


def test_an_unknown_command_is_clicks_usage_error(tmp_path: Path) -> None:
    result = invoke(tmp_path, "bakup")
    assert result.exit_code == 2
    assert "No such command 'bakup'" in result.stderr


@pytest.mark.parametrize(("flags", "level"), [([], logging.WARNING), (["--debug"], logging.DEBUG)])
def test_the_libraries_logs_are_quiet_unless_debug(
    tmp_path: Path, flags: list[str], level: int
) -> None:
    result = CliRunner().invoke(
        cli, ["--env-file", str(tmp_path / ".env"), *flags, "config", "example"]
    )
    assert result.exit_code == 0
    assert {logging.getLogger(n).level for n in ("botocore", "urllib3", "boto3", "alembic")} == {
        level
    }


def test_the_installed_program_runs_as_mlflow_stack(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_stack", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: mlflow-stack [OPTIONS] COMMAND")
