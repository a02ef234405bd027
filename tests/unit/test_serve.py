"""How `serve` builds the `mlflow server` invocation: arguments, environment, auth config."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from mlflow_stack.serve import (
    allowed_hosts,
    mlflow_environment,
    server_arguments,
    server_environment,
    uvicorn_options,
    write_auth_config,
)
from mlflow_stack.settings.contract import Settings
from tests.conftest import SSO, make_settings


def settings(**overrides: str) -> Settings:
    return make_settings(**{"MLFLOW_STACK_S3_ENDPOINT_URL": "http://minio:9000", **overrides})


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_server_arguments_proxy_artifacts_require_login_and_hide_passwords() -> None:
    args = server_arguments(settings(MLFLOW_STACK_WORKERS="3", MLFLOW_STACK_S3_BUCKET="team-a"))
    assert args[0] == "server"
    assert option(args, "--backend-store-uri").startswith("postgresql+psycopg2://mlflow@")
    assert "--serve-artifacts" in args
    assert option(args, "--artifacts-destination") == "s3://team-a"
    assert option(args, "--app-name") == "mlflow-stack"
    assert option(args, "--workers") == "3"
    joined = " ".join(args)
    for secret in ("pg-password-123456", "admin-password-123456", "s3-secret-key-123456"):
        assert secret not in joined


def test_allowed_hosts_keep_mlflow_defaults_and_add_configured_names_with_any_port() -> None:
    hosts = allowed_hosts(settings()).split(",")
    for expected in (
        "localhost",
        "localhost:*",
        "127.0.0.1:*",
        "10.*",
        "192.168.*",
        "mlflow",
        "mlflow:*",
    ):
        assert expected in hosts
    hosts = allowed_hosts(settings(MLFLOW_STACK_ALLOWED_HOSTS="mlflow.example.com,10.1.2.3:8080"))
    assert {"mlflow.example.com", "mlflow.example.com:*", "10.1.2.3:8080"} <= set(hosts.split(","))
    assert "10.1.2.3:8080:*" not in hosts
    assert allowed_hosts(settings(MLFLOW_STACK_ALLOWED_HOSTS="*")) == "*"


def test_uvicorn_believes_forwarded_addresses_only_from_configured_proxies() -> None:
    args = server_arguments(settings())
    assert option(args, "--uvicorn-opts") == "--no-proxy-headers"
    proxied = settings(MLFLOW_STACK_TRUSTED_PROXIES="10.0.0.0/16, 192.168.1.7")
    assert uvicorn_options(proxied) == (
        "--proxy-headers --forwarded-allow-ips 10.0.0.0/16,192.168.1.7"
    )


def test_server_environment_carries_credentials_outside_the_command_line(tmp_path: Path) -> None:
    env = server_environment(settings(), tmp_path / "auth.ini", {"PATH": "/usr/bin"})
    assert env["PGPASSWORD"] == "pg-password-123456"
    assert env["PGSSLMODE"] == "prefer"
    assert env["AWS_ACCESS_KEY_ID"] == "access-key-1"
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3-secret-key-123456"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] == "path"
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / "auth.ini")
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "admin-password-123456"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_STACK_ARTIFACT_PRESIGNED_URLS"] == "false"
    assert env["MLFLOW_TRUNCATE_LONG_VALUES"] == "false"  # long params and tags get a 400
    assert env["PATH"] == "/usr/bin"


@pytest.mark.parametrize(
    "source",
    [
        {"POSTGRES_PASSWORD_FILE": "/run/secrets/pg-password"},
        {"POSTGRES_PASSWORD_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x"},
    ],
)
def test_a_password_that_can_rotate_stays_out_of_the_environment(
    tmp_path: Path, source: dict[str, str]
) -> None:
    """The password hook gives each connection the current one; PGPASSWORD would go stale."""
    config = settings(POSTGRES_PASSWORD="", **source)
    stale = {"PATH": "/usr/bin", "PGPASSWORD": "an-old-one-123456"}
    env = server_environment(config, tmp_path / "auth.ini", stale)
    assert "PGPASSWORD" not in env
    assert env["PGSSLMODE"] == "prefer"
    assert env["PATH"] == "/usr/bin"


def test_with_the_job_runner_a_file_password_is_passed_as_of_the_start(tmp_path: Path) -> None:
    """MLflow's job runner starts processes of its own, which the hook does not reach."""
    path = tmp_path / "pg-password"
    path.write_text("from-the-file-123456\n")
    config = settings(
        POSTGRES_PASSWORD="",
        POSTGRES_PASSWORD_FILE=str(path),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="true",
    )
    env = server_environment(config, tmp_path / "auth.ini", {})
    assert env["PGPASSWORD"] == "from-the-file-123456"


def test_on_aws_the_instance_role_supplies_s3_credentials(tmp_path: Path) -> None:
    aws = settings(
        MLFLOW_STACK_S3_ACCESS_KEY="",
        MLFLOW_STACK_S3_SECRET_KEY="",
        MLFLOW_STACK_S3_ENDPOINT_URL="",
    )
    inherited = {"AWS_ACCESS_KEY_ID": "stale", "MLFLOW_S3_ENDPOINT_URL": "http://stale:9000"}
    env = server_environment(aws, tmp_path / "auth.ini", inherited)
    assert "AWS_ACCESS_KEY_ID" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "MLFLOW_S3_ENDPOINT_URL" not in env
    assert env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] == "auto"


def test_auth_config_points_the_user_store_at_postgres_without_a_secret(tmp_path: Path) -> None:
    import configparser

    path = write_auth_config(
        settings(MLFLOW_STACK_AUTH_DEFAULT_PERMISSION="NO_PERMISSIONS"), tmp_path
    )
    parser = configparser.ConfigParser()
    parser.read(path)
    section = parser["mlflow"]
    assert section["database_uri"] == "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow_auth"
    assert section["default_permission"] == "NO_PERMISSIONS"
    assert section["auth_cache_ttl_seconds"] == "60"
    assert "password" not in path.read_text().lower()


def test_server_arguments_bind_the_configured_address() -> None:
    args = server_arguments(settings(MLFLOW_STACK_HOST="0.0.0.0", MLFLOW_STACK_PORT="5050"))
    assert (option(args, "--host"), option(args, "--port")) == ("0.0.0.0", "5050")


def test_server_environment_turns_on_what_the_settings_turn_on(tmp_path: Path) -> None:
    env = server_environment(
        settings(
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="yes", MLFLOW_STACK_ARTIFACT_PRESIGNED_URLS="1"
        ),
        tmp_path / "auth.ini",
        {},
    )
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
    assert env["MLFLOW_STACK_ARTIFACT_PRESIGNED_URLS"] == "true"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "flask-secret-key-123456"
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == "admin"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_server_environment_overrides_stale_values_it_owns(tmp_path: Path) -> None:
    stale = {
        "PGPASSWORD": "old",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "old",
        "MLFLOW_S3_ENDPOINT_URL": "x",
    }
    env = server_environment(settings(), tmp_path / "auth.ini", stale)
    assert env["PGPASSWORD"] == "pg-password-123456"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "admin-password-123456"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_telemetry_is_off_unless_the_operator_opts_in(tmp_path: Path) -> None:
    env = server_environment(settings(), tmp_path / "auth.ini", {})
    assert (env["MLFLOW_DISABLE_TELEMETRY"], env["DO_NOT_TRACK"]) == ("true", "true")
    opted_in = {"MLFLOW_DISABLE_TELEMETRY": "false", "DO_NOT_TRACK": "false"}
    env = server_environment(settings(), tmp_path / "auth.ini", opted_in)
    assert (env["MLFLOW_DISABLE_TELEMETRY"], env["DO_NOT_TRACK"]) == ("false", "false")


def test_auth_config_names_the_admin_and_mlflows_basic_auth(tmp_path: Path) -> None:
    import configparser

    path = write_auth_config(
        settings(MLFLOW_AUTH_ADMIN_USERNAME="root.user", MLFLOW_STACK_AUTH_CACHE_TTL="0"), tmp_path
    )
    assert path == tmp_path / "basic_auth.ini"
    parser = configparser.ConfigParser()
    parser.read(path)
    section = parser["mlflow"]
    assert section["admin_username"] == "root.user"
    assert section["auth_cache_ttl_seconds"] == "0"
    assert section["default_permission"] == "READ"
    assert section["authorization_function"] == "mlflow_stack.server.login:authenticate_request"
    # the name MLflow imports it by resolves
    from mlflow.server.auth import get_auth_func

    from mlflow_stack.server.login import authenticate_request

    assert get_auth_func(section["authorization_function"]) is authenticate_request


def test_allowed_hosts_list_each_pattern_once() -> None:
    hosts = allowed_hosts(settings(MLFLOW_STACK_ALLOWED_HOSTS="localhost,mlflow,mlflow")).split(",")
    assert len(hosts) == len(set(hosts))
    assert hosts.count("mlflow:*") == 1


def environment_of_mlflow_server(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict:
    """What MLflow's own `mlflow server`, given `server_arguments`, puts in its workers'
    environment: its CLI run for real, only the start of the uvicorn process (and the store
    check, which needs a database) replaced by recorders."""
    import mlflow.server
    from click.testing import CliRunner
    from mlflow.cli import cli

    started: dict[str, Any] = {}

    class Started:
        pid = 0

        def wait(self) -> int:
            return 0

        def poll(self) -> int:
            return 0

    def exec_cmd(command: list[str], extra_env: dict[str, str], **_: object) -> Started:
        started.update(command=command, env=dict(extra_env), environ=dict(os.environ))
        return Started()

    monkeypatch.setattr(mlflow.server, "_exec_cmd", exec_cmd)
    monkeypatch.setattr(
        "mlflow.server.handlers.initialize_backend_stores", lambda *args, **kwargs: None
    )
    monkeypatch.setattr(
        "mlflow.tracing.trace_rollup_service.validate_sql_trace_rollup_startup", lambda uri: None
    )
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    base = server_environment(settings, Path("auth.ini"), {"PATH": os.environ["PATH"]})
    with mock.patch.dict(os.environ, base, clear=True):
        result = CliRunner().invoke(cli, server_arguments(settings), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert started, result.output
    set_by_cli = {k: v for k, v in started["environ"].items() if base.get(k) != v}
    return {**set_by_cli, **started["env"]}


def test_the_forked_workers_get_the_environment_mlflow_server_gives_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """serve forks the workers itself instead of running `mlflow server`; what MLflow would
    have set for them must be set all the same, and nothing else (a new MLflow that sets a
    new variable fails here)."""
    for overrides in ({}, {"MLFLOW_STACK_ALLOWED_HOSTS": "mlflow.example.com"}):
        config = settings(**overrides)
        theirs = environment_of_mlflow_server(config, monkeypatch)
        ours = mlflow_environment(config, {})
        boot = "_MLFLOW_SERVER_BOOT_ID"
        assert re.fullmatch("[0-9a-f]{32}", ours.pop(boot)) and theirs.pop(boot)
        # server_environment sets it already, for both ways to start
        assert theirs.pop("MLFLOW_FLASK_SERVER_SECRET_KEY") == config.flask_secret_key
        assert ours == theirs


def test_each_start_gets_its_own_boot_id() -> None:
    config = settings()
    first, second = mlflow_environment(config, {}), mlflow_environment(config, {})
    assert first["_MLFLOW_SERVER_BOOT_ID"] != second["_MLFLOW_SERVER_BOOT_ID"]


def test_an_operators_frame_options_are_kept_as_mlflow_server_keeps_them() -> None:
    environ = {"MLFLOW_SERVER_X_FRAME_OPTIONS": "DENY"}
    assert mlflow_environment(settings(), environ)["MLFLOW_SERVER_X_FRAME_OPTIONS"] == "DENY"
    assert mlflow_environment(settings(), {})["MLFLOW_SERVER_X_FRAME_OPTIONS"] == "SAMEORIGIN"


def test_the_stores_keep_their_connections_within_the_old_ceiling(tmp_path: Path) -> None:
    env = server_environment(settings(), tmp_path / "auth.ini", {})
    size = int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"])
    overflow = int(env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"])
    assert size > 5 and overflow > 0  # MLflow passes no max_overflow of 0: it would be 10
    assert size + overflow == 5 + 10  # SQLAlchemy's default pool plus overflow: same ceiling
    stores, workers = 3, settings().workers
    assert stores * workers * (size + overflow) < 100  # PostgreSQL's default max_connections
    mine = server_environment(
        settings(), tmp_path / "auth.ini", {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "4"}
    )
    assert mine["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] == "4"  # an operator's value wins


def test_with_single_sign_on_the_groups_are_the_only_default(tmp_path: Path) -> None:
    import configparser

    parser = configparser.ConfigParser()
    parser.read(write_auth_config(settings(**SSO), tmp_path))
    assert parser["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert parser["mlflow"]["authorization_function"] == (
        "mlflow_stack.server.login:authenticate_request"
    )
