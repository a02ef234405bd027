"""`mlflow-stack config`: check, example, reference, and init (which writes a new settings file
with the given settings, checked first, and never overwrites one)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlflow_stack.errors import ConfigError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.settings.envfile import create_env_file, read_env_file
from mlflow_stack.settings.render import render_env_file, render_reference
from tests.conftest import run_cli
from tests.unit.cli.conftest import invoke


def _invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = invoke(tmp_path, *args)
    return result.exit_code, result.output


# --- check ---


def test_a_new_settings_file_checks_ok(tmp_path: Path) -> None:
    assert invoke(tmp_path, "config", "init").exit_code == 0
    result = invoke(tmp_path, "config", "check")
    assert (result.exit_code, result.stderr, result.stdout) == (0, "configuration OK\n", "")


def test_without_settings_each_missing_one_is_a_line_and_the_exit_code_is_2(
    tmp_path: Path,
) -> None:
    result = invoke(tmp_path, "config", "check")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) >= 3 and all(line.startswith("error: ") for line in lines)
    for name in (
        "POSTGRES_PASSWORD",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    ):
        assert any(name in line for line in lines), name


def test_the_process_environment_overrides_the_file_and_is_checked_too(tmp_path: Path) -> None:
    invoke(tmp_path, "config", "init")
    result = invoke(tmp_path, "config", "check", env={"MLFLOW_STACK_PORT": "http"})
    assert (result.exit_code, result.stderr) == (
        2,
        "error: MLFLOW_STACK_PORT='http' must be a TCP port number between 1 and 65535\n",
    )


def test_a_misspelt_setting_in_the_file_is_a_warning_on_stderr(tmp_path: Path) -> None:
    invoke(tmp_path, "config", "init")
    with (tmp_path / ".env").open("a") as env_file:
        env_file.write("MLFLOW_STACK_PROT=5050\n")
    environ = {"PATH": os.environ["PATH"]}  # the log reaches stderr in a process of its own
    result = run_cli("config", "check", env=environ, cwd=tmp_path, timeout=60)
    assert (result.returncode, result.stderr.splitlines()) == (
        0,
        [
            "warning: MLFLOW_STACK_PROT is not a setting of mlflow-stack "
            "(did you mean MLFLOW_STACK_PORT?)",
            "configuration OK",
        ],
    )


# --- example and reference ---


def test_example_prints_the_rendered_env_file(tmp_path: Path) -> None:
    result = invoke(tmp_path, "config", "example")
    assert (result.exit_code, result.stdout, result.stderr) == (0, render_env_file(), "")
    assert not (tmp_path / ".env").exists()


def test_reference_prints_the_rendered_reference(tmp_path: Path) -> None:
    result = invoke(tmp_path, "config", "reference")
    assert (result.exit_code, result.stdout, result.stderr) == (0, render_reference(), "")


# --- what `config init` writes ---


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


# --- config init ---


def test_config_init_sets_what_it_is_given(tmp_path: Path) -> None:
    code, output = _invoke(tmp_path, "config", "init", "--set", "MLFLOW_STACK_PORT=5050")
    assert code == 0, output
    assert read_env_file(tmp_path / ".env")["MLFLOW_STACK_PORT"] == "5050"
    code, output = _invoke(tmp_path, "config", "init", "--set", "MLFLOW_STACK_PORT=6060")
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
    code, output = _invoke(tmp_path, "config", "init", "--set", assignment)
    assert (code, output.strip()) == (2, line)
    assert not (tmp_path / ".env").exists()


def test_config_init_writes_a_private_file_with_fresh_secrets(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        result = invoke(tmp_path / name, "config", "init")
        assert result.exit_code == 0
        assert result.stderr == (
            f"Wrote {tmp_path / name / '.env'} with fresh random secrets (mode 0600).\n"
        )
        assert stat.S_IMODE((tmp_path / name / ".env").stat().st_mode) == 0o600
    first, second = (read_env_file(tmp_path / n / ".env") for n in ("a", "b"))
    assert first.keys() == second.keys()
    for secret in ("POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert first[secret] != second[secret]


def test_config_init_names_every_bad_setting_at_once(tmp_path: Path) -> None:
    result = invoke(
        tmp_path, "config", "init", "--set", "NOPE=1", "--set", "=2", "--set", "POSTGRES_DB"
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: NOPE is not a setting of mlflow-stack",
        "error: '=2' is not NAME=VALUE",
        "error: 'POSTGRES_DB' is not NAME=VALUE",
    ]


def test_config_init_refuses_a_value_env_files_cannot_hold(tmp_path: Path) -> None:
    result = invoke(tmp_path, "config", "init", "--set", "MLFLOW_STACK_S3_BUCKET=my bucket")
    assert result.exit_code == 2
    assert "MLFLOW_STACK_S3_BUCKET: the value must not contain whitespace" in result.stderr
    assert not (tmp_path / ".env").exists()


def test_config_init_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = invoke(tmp_path / "missing", "config", "init")
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: cannot create {tmp_path / 'missing' / '.env'}: No such file or directory\n",
    )


def test_check_reports_a_bad_minio_root_setting_with_the_others(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mlflow_stack.cli.main import cli
    from mlflow_stack.settings.envfile import create_env_file, read_env_file

    env_file = tmp_path / ".env"
    assert create_env_file(env_file)
    values = read_env_file(env_file)
    text = (
        env_file.read_text()
        .replace(
            f"MINIO_ROOT_PASSWORD={values['MINIO_ROOT_PASSWORD']}", "MINIO_ROOT_PASSWORD=short"
        )
        .replace(f"MINIO_ROOT_USER={values['MINIO_ROOT_USER']}", "MINIO_ROOT_USER=x")
    )
    env_file.write_text(text)
    result = CliRunner().invoke(cli, ["--env-file", str(env_file), "config", "check"], env={})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert "error: MINIO_ROOT_USER='x' must be at least 3 characters" in lines[0]
    assert lines[1] == "error: MINIO_ROOT_PASSWORD must be at least 12 characters long"
    assert "short" not in result.output


def test_check_refuses_a_minio_root_user_that_is_the_servers_key(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mlflow_stack.cli.main import cli
    from mlflow_stack.settings.envfile import create_env_file

    env_file = tmp_path / ".env"
    assert create_env_file(env_file, {"MLFLOW_STACK_S3_ACCESS_KEY": "same-key"})
    text = env_file.read_text()
    text = "\n".join(
        "MINIO_ROOT_USER=same-key" if line.startswith("MINIO_ROOT_USER=") else line
        for line in text.splitlines()
    )
    env_file.write_text(text + "\n")
    result = CliRunner().invoke(cli, ["--env-file", str(env_file), "config", "check"], env={})
    assert result.exit_code == 2
    assert "MINIO_ROOT_USER must differ from MLFLOW_STACK_S3_ACCESS_KEY" in result.output
