"""The native runtime's commands where no stack has to run: what `up` prints and keeps from the
environment, its refusals before anything is written, and `down`, `status` and `logs` on a data
dir where nothing runs. Starting the stack is tests/integration's."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from mlflow_stack.cli.native import S3_MEMORY_LIMIT, _command_prefix, _warn_overridden, memory_size
from mlflow_stack.errors import StackError
from mlflow_stack.native import s3
from mlflow_stack.native.stack import log_path
from mlflow_stack.settings.envfile import create_env_file, setting_overrides
from tests.unit.cli.conftest import invoke

VENV = Path(sys.executable).parent.parent


# --- what `up` prints and keeps ---


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


def test_run_as_a_module_the_commands_are_named_mlflow_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAKELEVEL", raising=False)
    monkeypatch.setattr(sys, "argv", ["/somewhere/mlflow_stack/__main__.py", "up"])
    assert _command_prefix() == "mlflow-stack"


def test_only_settings_given_in_the_environment_are_kept() -> None:
    environ = {"MLFLOW_STACK_PORT": "5050", "POSTGRES_PORT": "", "PATH": "/usr/bin", "HOME": "/"}
    assert setting_overrides(environ) == {"MLFLOW_STACK_PORT": "5050"}


def test_an_address_that_differs_from_the_file_is_refused(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    create_env_file(env_file, {"MLFLOW_STACK_PORT": "5050"})
    with pytest.raises(StackError) as refused:
        _warn_overridden(env_file, {"MLFLOW_STACK_PORT": "6060"})
    assert str(refused.value) == (
        f"MLFLOW_STACK_PORT=6060 differs from MLFLOW_STACK_PORT=5050 in {env_file}: set it "
        "there (status, logs and clients read the file), then run up again"
    )
    _warn_overridden(env_file, {"MLFLOW_STACK_PORT": "5050"})  # the same: fine


def test_other_overrides_are_a_warning_and_secrets_are_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env_file = tmp_path / ".env"
    create_env_file(env_file, {"MLFLOW_STACK_GC_RETENTION_DAYS": "30"})
    with caplog.at_level(logging.WARNING, logger="mlflow_stack"):
        _warn_overridden(
            env_file,
            {"MLFLOW_STACK_GC_RETENTION_DAYS": "7", "POSTGRES_PASSWORD": "another-password-1"},
        )
    assert caplog.messages == [
        f"warning: MLFLOW_STACK_GC_RETENTION_DAYS=7 from the environment overrides "
        f"MLFLOW_STACK_GC_RETENTION_DAYS=30 in {env_file} for this command only: set it in "
        f"{env_file} to keep it"
    ]


def test_a_bad_log_size_is_refused_before_a_settings_file_is_written(tmp_path: Path) -> None:
    result = invoke(tmp_path, "up", "--data-dir", str(tmp_path / "data"), "--log-max-size", "big")
    assert result.exit_code == 2
    assert "Invalid value for --log-max-size" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("given", ["big", "1M", "-5", ""])
def test_a_bad_s3_memory_limit_is_refused_in_one_line_before_a_settings_file_is_written(
    tmp_path: Path, given: str
) -> None:
    data = str(tmp_path / "data")
    result = invoke(tmp_path, "up", "--data-dir", data, "--s3-memory-limit", given)
    assert result.exit_code == 2
    assert "Invalid value for --s3-memory-limit" in result.stderr
    assert "not 0 or a size of at least 64M" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_s3_memory_limit_is_0_for_none_or_a_size_and_defaults_to_the_runtimes() -> None:
    assert memory_size(S3_MEMORY_LIMIT) == s3.S3_MEMORY_LIMIT
    assert memory_size("0") == 0
    assert memory_size("64M") == 64 * 2**20
    assert memory_size("1.5G") == 3 * 2**29


# --- down, status and logs where nothing runs ---


def test_down_where_nothing_runs_says_so(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    result = invoke(tmp_path, "down", "--data-dir", data)
    assert (result.exit_code, result.stderr) == (0, "mlflow-stack was not running.\n")
    result = invoke(tmp_path, "down", "--data-dir", data, "mlflow")
    assert (result.exit_code, result.stderr) == (0, "stopped: nothing was running\n")
    assert not (tmp_path / "data").exists()


def test_status_where_nothing_runs_exits_1_naming_the_data_dir(tmp_path: Path) -> None:
    result = invoke(tmp_path, "status", "--data-dir", str(tmp_path / "data"))
    assert (result.exit_code, result.stderr) == (
        1,
        f"mlflow-stack is not running (data dir: {tmp_path / 'data'}).\n",
    )


def test_logs_show_the_end_of_each_service_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = log_path(data, "mlflow")
    path.parent.mkdir(parents=True)
    path.write_text("one\ntwo\nthree\n")
    result = invoke(tmp_path, "logs", "--data-dir", str(data), "-n", "2", "mlflow")
    assert (result.exit_code, result.stdout) == (0, "two\nthree\n")
    every = invoke(tmp_path, "logs", "--data-dir", str(data), "-n", "1")
    assert every.exit_code == 0
    assert f"==> {path} <==\nthree\n" in every.stdout
    assert every.stdout.count("==> ") == 3


def test_follow_needs_one_service(tmp_path: Path) -> None:
    result = invoke(tmp_path, "logs", "--data-dir", str(tmp_path / "data"), "--follow")
    assert result.exit_code == 2
    assert "--follow needs a SERVICE" in result.stderr


def test_up_says_how_to_log_in_with_a_password_in_basic_mode(tmp_path: Path) -> None:
    from mlflow_stack.cli.native import how_to_connect
    from tests.conftest import make_settings

    text = how_to_connect(make_settings(), tmp_path / ".env", tmp_path / "data", "make")
    assert "log in as 'admin' with MLFLOW_AUTH_ADMIN_PASSWORD" in text
    assert "export MLFLOW_TRACKING_USERNAME=admin" in text
    assert "MLFLOW_TRACKING_TOKEN" not in text


def test_up_says_how_to_sign_in_and_use_a_token_with_single_sign_on(tmp_path: Path) -> None:
    from mlflow_stack.cli.native import how_to_connect
    from tests.conftest import SSO, make_settings

    settings = make_settings(**SSO)
    text = how_to_connect(settings, tmp_path / ".env", tmp_path / "data", "make")
    assert "open https://mlflow.example.com and sign in at https://idp.example.com" in text
    assert "export MLFLOW_TRACKING_TOKEN=<an access token of the provider for 'mlflow'>" in text
    assert "MLFLOW_TRACKING_PASSWORD" not in text
