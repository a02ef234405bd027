"""The single sign-on configuration, taken from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_stack.errors import ConfigError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.sso.config import GroupGrant, SignOnConfig
from tests.conftest import REQUIRED
from tests.conftest import SSO as SSO_REQUIRED

SSO = {
    **SSO_REQUIRED,
    "MLFLOW_STACK_OIDC_ADMIN_GROUPS": "ml-admins",
    "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS": "ml-team=EDIT,analysts=READ:NO_PERMISSIONS",
}


def test_the_configuration_follows_the_settings() -> None:
    config = SignOnConfig.from_settings(Settings.from_env({**REQUIRED, **SSO}))
    assert config.redirect_uri == "https://mlflow.example.com/auth/callback"
    assert config.secure_cookies
    assert config.audience == "mlflow"  # the client id, unless set
    assert config.grants == (
        GroupGrant("ml-team", "EDIT", "EDIT"),
        GroupGrant("analysts", "READ", "NO_PERMISSIONS"),
    )
    assert config.groups == {"ml-admins", "ml-team", "analysts"}


def test_plain_http_cookies_are_not_secure_and_the_audience_may_be_set() -> None:
    environ = {
        **REQUIRED,
        **SSO,
        "MLFLOW_STACK_PUBLIC_URL": "http://127.0.0.1:5000",
        "MLFLOW_STACK_OIDC_AUDIENCE": "api://mlflow",
    }
    config = SignOnConfig.from_settings(Settings.from_env(environ))
    assert not config.secure_cookies
    assert config.audience == "api://mlflow"


def test_the_secret_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "oidc-client-secret"
    secret.write_text("from-a-file\n")
    environ = {
        **REQUIRED,
        **SSO,
        "MLFLOW_STACK_OIDC_CLIENT_SECRET": "",
        "MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE": str(secret),
    }
    assert SignOnConfig.from_settings(Settings.from_env(environ)).client_secret == "from-a-file"
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        SignOnConfig.from_settings(Settings.from_env(environ))
    secret.unlink()
    with pytest.raises(ConfigError, match="cannot be read: No such file or directory"):
        SignOnConfig.from_settings(Settings.from_env(environ))
