"""Bad input stops start-up with one line naming the variable, never a traceback."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REQUIRED, LiveStack, distinct_free_ports, run_cli

VALID = REQUIRED


def serve(tmp_path: Path, **env: str):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "POSTGRES_"))}
    return run_cli(
        "--env-file",
        str(tmp_path / "absent.env"),
        "serve",
        env={**clean, **env},
        cwd=tmp_path,
        timeout=120,
    )


def one_error_line(result, *names: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def test_serve_without_the_admin_password_names_it(tmp_path: Path) -> None:
    env = {k: v for k, v in VALID.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    result = serve(tmp_path, **env)
    assert result.returncode == 2
    line = one_error_line(result, "MLFLOW_AUTH_ADMIN_PASSWORD")
    assert "required" in line


def test_serve_with_a_malformed_database_setting_names_it(tmp_path: Path) -> None:
    result = serve(tmp_path, **VALID, POSTGRES_HOST="postgresql://db:5432/mlflow")
    assert result.returncode == 2
    one_error_line(result, "POSTGRES_HOST", "host name or IP address")
    result = serve(tmp_path, **VALID, POSTGRES_PORT="5432/mlflow")
    one_error_line(result, "POSTGRES_PORT")


def test_serve_reports_every_invalid_setting_one_per_line(tmp_path: Path) -> None:
    result = serve(tmp_path, POSTGRES_PORT="x", MLFLOW_STACK_S3_BUCKET="Bad_Bucket")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 5  # three missing secrets, two malformed values
    assert "Traceback" not in result.stderr


def test_serve_gives_up_on_an_unreachable_database_with_a_clear_line(tmp_path: Path) -> None:
    (port,) = distinct_free_ports(1)
    result = serve(tmp_path, **VALID, POSTGRES_PORT=str(port), MLFLOW_STACK_WAIT_TIMEOUT="2")
    assert result.returncode == 1
    line = one_error_line(result, "did not become ready within 2 s", "POSTGRES_PORT")
    assert "Connection refused" in line


def test_serve_names_a_wrong_database_password(stack: LiveStack, tmp_path: Path) -> None:
    result = serve(
        tmp_path,
        **{
            **VALID,
            "POSTGRES_PORT": str(stack.settings.postgres_port),
            "POSTGRES_PASSWORD": "definitely-wrong-password",
            "MLFLOW_STACK_WAIT_TIMEOUT": "10",
        },
    )
    assert result.returncode == 1
    one_error_line(result, "POSTGRES_PASSWORD", "password authentication failed")


def test_serve_names_wrong_s3_keys(stack: LiveStack, tmp_path: Path) -> None:
    s = stack.settings
    result = serve(
        tmp_path,
        POSTGRES_PASSWORD=s.postgres_password,
        POSTGRES_PORT=str(s.postgres_port),
        MLFLOW_AUTH_ADMIN_PASSWORD=s.admin_password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=s.flask_secret_key,
        MLFLOW_STACK_S3_ENDPOINT_URL=s.s3_endpoint_url,
        MLFLOW_STACK_S3_ACCESS_KEY=s.s3_access_key,
        MLFLOW_STACK_S3_SECRET_KEY="wrong-secret-key-123456",
        MLFLOW_STACK_WAIT_TIMEOUT="10",
    )
    assert result.returncode == 1
    one_error_line(result, "MLFLOW_STACK_S3_ACCESS_KEY", "refused")


def test_up_refuses_a_port_in_use_and_starts_nothing(tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="mlflow-stack-busy-"))
    pg_port, s3_port, mlflow_port = distinct_free_ports(3)
    env = {
        **os.environ,
        "POSTGRES_PORT": str(pg_port),
        "MLFLOW_STACK_PORT": str(mlflow_port),
        "MLFLOW_STACK_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
    }
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", pg_port))
        squatter.listen()
        result = run_cli(
            "--env-file", str(root / ".env"), "up", "--data-dir", str(root / "data"),
            env=env, cwd=root, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1
    one_error_line(result, f"port {pg_port}", "POSTGRES_PORT", "already in use")
    assert not list((root / "data" / "run").glob("*.json"))


@pytest.mark.parametrize(
    ("name", "value"),
    [("POSTGRES_HOST", "db.example.com"), ("MLFLOW_STACK_S3_ENDPOINT_URL", "http://minio:9000")],
)
def test_up_refuses_settings_that_point_away_from_its_own_servers(
    tmp_path: Path, name: str, value: str
) -> None:
    env = {**os.environ, name: value}
    result = run_cli(
        "--env-file", str(tmp_path / ".env"), "up", "--data-dir", str(tmp_path / "data"),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    one_error_line(result, name, "native runtime")
