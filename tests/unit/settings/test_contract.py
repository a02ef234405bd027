"""The settings contract: defaults, checks, one clear problem per bad value, no echoed secrets."""

from __future__ import annotations

import pytest

from mlflow_stack.errors import ConfigError
from mlflow_stack.settings.contract import (
    SETTING_NAMES,
    SETTINGS,
    Settings,
    new_env_values,
    unknown_names,
)
from mlflow_stack.settings.render import render_env_file
from tests.conftest import REQUIRED

SECRETS = REQUIRED


def problems(**overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**SECRETS, **overrides})
    return caught.value.problems


def test_only_the_secrets_are_required_and_defaults_fill_the_rest() -> None:
    settings = Settings.from_env(SECRETS)
    assert settings.postgres_port == 5432
    assert settings.port == 5000
    assert settings.workers == 2
    assert settings.job_execution is False
    assert settings.s3_endpoint_url == ""  # AWS S3
    assert settings.allowed_hosts == ("mlflow",)
    required = {s.name for s in SETTINGS if s.required}
    assert required == set(SECRETS)


def test_each_missing_secret_is_named_on_its_own_line() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({})
    assert len(caught.value.problems) == len(SECRETS)
    for name, problem in zip(sorted(SECRETS), sorted(caught.value.problems), strict=True):
        assert problem.startswith(name)
        assert "required" in problem


def test_an_empty_value_counts_as_unset() -> None:
    assert Settings.from_env({**SECRETS, "POSTGRES_PORT": ""}).postgres_port == 5432
    assert problems(POSTGRES_PASSWORD="") == [
        "POSTGRES_PASSWORD is not set: it is required and has no default"
    ]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("POSTGRES_PORT", "54x32", "between 1 and 65535"),
        ("POSTGRES_PORT", "70000", "between 1 and 65535"),
        ("POSTGRES_HOST", "db.example.com:5432", "host name or IP address"),
        ("POSTGRES_HOST", "postgresql://db", "host name or IP address"),
        ("POSTGRES_USER", "mlflow-user", "letters, digits and _"),
        ("POSTGRES_SSLMODE", "on", "one of disable, allow, prefer"),
        ("MLFLOW_STACK_S3_BUCKET", "My_Bucket", "valid S3 bucket name"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "minio:9000", "http:// or https:// URL"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "http://minio:9000/mlflow", "must not have a path"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "http://minio:90000", "invalid port"),
        ("MLFLOW_STACK_WORKERS", "0", "between 1 and 64"),
        ("MLFLOW_STACK_ALLOWED_HOSTS", "good.example.com, bad/host", "'bad/host'"),
        ("MLFLOW_STACK_TRUSTED_PROXIES", "10.0.0.0/16, *", "'*' is not an IP address or CIDR"),
        ("MLFLOW_STACK_TRUSTED_PROXIES", "alb.example.com", "not an IP address or CIDR range"),
        ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "maybe", "true or false"),
        ("MLFLOW_STACK_AUTH_DEFAULT_PERMISSION", "WRITE", "one of READ, EDIT"),
    ],
)
def test_an_invalid_value_is_named_with_what_is_wrong(name: str, value: str, expected: str) -> None:
    (problem,) = problems(**{name: value})
    assert problem.startswith(f"{name}={value!r}")
    assert expected in problem


@pytest.mark.parametrize(
    ("value", "expected"),
    [("short", "at least 12 characters"), ("has$dollar-sign-1234", "must not contain")],
)
def test_a_bad_secret_is_named_but_never_echoed(value: str, expected: str) -> None:
    (problem,) = problems(MLFLOW_AUTH_ADMIN_PASSWORD=value)
    assert problem.startswith("MLFLOW_AUTH_ADMIN_PASSWORD ")
    assert expected in problem
    assert value not in problem


def test_every_problem_is_reported_at_once() -> None:
    found = problems(POSTGRES_PORT="x", MLFLOW_STACK_PORT="y", POSTGRES_SSLMODE="z")
    assert [p.split("=")[0] for p in found] == [
        "POSTGRES_PORT",
        "POSTGRES_SSLMODE",
        "MLFLOW_STACK_PORT",
    ]


def test_cross_checks_name_both_variables() -> None:
    (problem,) = problems(MLFLOW_STACK_AUTH_DB="mlflow")
    assert "MLFLOW_STACK_AUTH_DB" in problem and "POSTGRES_DB" in problem
    (problem,) = problems(MLFLOW_STACK_S3_ACCESS_KEY="AKIAEXAMPLE")
    assert "MLFLOW_STACK_S3_SECRET_KEY" in problem


def test_database_uris_select_psycopg2_and_carry_no_password() -> None:
    settings = Settings.from_env(
        {**SECRETS, "POSTGRES_HOST": "db.internal", "POSTGRES_PORT": "6543"}
    )
    assert settings.backend_store_uri == "postgresql+psycopg2://mlflow@db.internal:6543/mlflow"
    assert settings.auth_database_uri.endswith("/mlflow_auth")
    assert SECRETS["POSTGRES_PASSWORD"] not in settings.backend_store_uri


def test_tracking_uri_never_points_at_a_wildcard_address() -> None:
    settings = Settings.from_env({**SECRETS, "MLFLOW_STACK_HOST": "0.0.0.0"})
    assert settings.tracking_uri == "http://127.0.0.1:5000"


def test_generated_values_satisfy_every_check() -> None:
    values = new_env_values()
    assert set(values) == {s.name for s in SETTINGS if s.generate}
    settings = Settings.from_env(values)
    assert settings.s3_access_key and settings.s3_secret_key
    assert new_env_values() != values  # fresh every time


def test_rendered_env_file_lists_every_setting_once_with_its_doc() -> None:
    text = render_env_file()
    assigned = [line.split("=")[0] for line in text.splitlines() if line and line[0] != "#"]
    assert sorted(assigned) == sorted(SETTING_NAMES)
    for setting in SETTINGS:
        assert f"{setting.name}={setting.default or ''}\n" in text
        assert setting.doc.split()[0] in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_rendered_env_file_with_values_round_trips(tmp_path) -> None:
    from mlflow_stack.settings.envfile import read_env_file

    values = new_env_values()
    path = tmp_path / ".env"
    path.write_text(render_env_file(values))
    read = read_env_file(path)
    assert {k: read[k] for k in values} == values
    Settings.from_env(read)


def test_typos_of_setting_names_get_a_suggestion() -> None:
    warnings = unknown_names(
        ["MLFLOW_STACK_WORKER", "POSTGRES_PASWORD", "HOME", "MLFLOW_STACK_PORT"]
    )
    assert warnings == [
        "MLFLOW_STACK_WORKER is not a setting of mlflow-stack (did you mean MLFLOW_STACK_WORKERS?)",
        "POSTGRES_PASWORD is not a setting of mlflow-stack (did you mean POSTGRES_PASSWORD?)",
    ]
