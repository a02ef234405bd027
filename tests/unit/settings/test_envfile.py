"""The .env file: created once with fresh secrets and mode 0600; the environment overrides it."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from mlflow_stack.errors import ConfigError, StackError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.settings.envfile import (
    create_env_file,
    merged_environment,
    new_file_values,
    parse_assignments,
    read_env_file,
    setting_overrides,
)


def test_created_env_file_is_private_complete_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    assert create_env_file(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    Settings.from_env(read_env_file(path))
    assert create_env_file(path) is False
    assert path.read_text() == first


def test_process_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("POSTGRES_PORT=5432\nMLFLOW_STACK_PORT=5000\n")
    merged = merged_environment(path, {"POSTGRES_PORT": "6543"})
    assert merged["POSTGRES_PORT"] == "6543"
    assert merged["MLFLOW_STACK_PORT"] == "5000"


def test_a_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_env_file(tmp_path / "absent.env") == {}


def test_a_file_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"POSTGRES_PASSWORD=\xff\xfe\n")
    with pytest.raises(StackError, match=rf"^cannot read {re.escape(str(path))}: "):
        read_env_file(path)


def test_names_without_a_value_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# a comment\nMLFLOW_STACK_PORT\nPOSTGRES_PORT=\nPOSTGRES_DB='runs' # db\n")
    assert read_env_file(path) == {"POSTGRES_PORT": "", "POSTGRES_DB": "runs"}


def test_without_a_file_the_environment_is_all(tmp_path: Path) -> None:
    assert merged_environment(None, {"A": "1"}) == {"A": "1"}


def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / ".env"
    path.write_text("POSTGRES_PORT=5432\n")
    monkeypatch.setenv("POSTGRES_PORT", "6543")
    assert merged_environment(path)["POSTGRES_PORT"] == "6543"


def test_setting_overrides_keep_only_non_empty_settings() -> None:
    environ = {"MLFLOW_STACK_PORT": "5050", "POSTGRES_DB": "", "HOME": "/root", "PATH": "/bin"}
    assert setting_overrides(environ) == {"MLFLOW_STACK_PORT": "5050"}


def test_assignments_become_values_keeping_equals_signs_in_the_value() -> None:
    assert parse_assignments(["MLFLOW_STACK_PORT=5050", "POSTGRES_DB=a=b", "POSTGRES_HOST="]) == {
        "MLFLOW_STACK_PORT": "5050",
        "POSTGRES_DB": "a=b",
        "POSTGRES_HOST": "",
    }


def test_every_bad_assignment_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_assignments(["MLFLOW_STACK_PORT", "=5050", "MLFLOW_STACK_WORKER=2", "HOME=/root"])
    assert caught.value.problems == [
        "'MLFLOW_STACK_PORT' is not NAME=VALUE",
        "'=5050' is not NAME=VALUE",
        "MLFLOW_STACK_WORKER is not a setting of mlflow-stack (did you mean MLFLOW_STACK_WORKERS?)",
        "HOME is not a setting of mlflow-stack",
    ]


def test_new_file_values_are_fresh_secrets_under_the_overrides() -> None:
    values = new_file_values({"MLFLOW_STACK_PORT": "5050", "POSTGRES_PASSWORD": "chosen-pw-1234"})
    assert values["MLFLOW_STACK_PORT"] == "5050"
    assert values["POSTGRES_PASSWORD"] == "chosen-pw-1234"
    assert values["MLFLOW_AUTH_ADMIN_PASSWORD"] != new_file_values()["MLFLOW_AUTH_ADMIN_PASSWORD"]
    Settings.from_env(values)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTGRES_PASSWORD_FILE", "/run/secrets/pg-password"),
        ("POSTGRES_PASSWORD_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x"),
    ],
)
def test_no_database_password_is_generated_when_another_source_is_given(
    name: str, value: str, tmp_path: Path
) -> None:
    values = new_file_values({name: value})
    assert "POSTGRES_PASSWORD" not in values
    assert values[name] == value
    path = tmp_path / ".env"
    assert create_env_file(path, {name: value})
    written = read_env_file(path)
    assert written["POSTGRES_PASSWORD"] == ""
    assert written[name] == value
    settings = Settings.from_env(written)
    assert (settings.postgres_password, getattr(settings, name.lower())) == ("", value)


def test_new_file_values_refuse_what_an_env_file_cannot_hold_unquoted() -> None:
    with pytest.raises(ConfigError) as caught:
        new_file_values({"POSTGRES_DB": "my db", "MLFLOW_STACK_HOST": "a#b"})
    assert sorted(caught.value.problems) == [
        "MLFLOW_STACK_HOST: the value must not contain whitespace, quotes, $, #, ` or \\",
        "POSTGRES_DB: the value must not contain whitespace, quotes, $, #, ` or \\",
    ]


def test_new_file_values_refuse_an_invalid_configuration() -> None:
    with pytest.raises(ConfigError, match="MLFLOW_STACK_PORT='http' must be a TCP port"):
        new_file_values({"MLFLOW_STACK_PORT": "http"})


def test_an_invalid_override_writes_no_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    with pytest.raises(ConfigError):
        create_env_file(path, {"MLFLOW_STACK_WORKERS": "0"})
    assert not path.exists()


def test_the_overrides_are_in_the_created_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    assert create_env_file(path, {"MLFLOW_STACK_PORT": "5050"})
    assert read_env_file(path)["MLFLOW_STACK_PORT"] == "5050"


def test_a_file_that_cannot_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "missing-directory" / ".env"
    with pytest.raises(StackError, match=r"^cannot create .*: No such file or directory$"):
        create_env_file(path)
