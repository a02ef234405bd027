"""What single sign-on needs, taken from the validated settings once per process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow_stack.errors import ConfigError
from mlflow_stack.settings.contract import Settings

CALLBACK_PATH = "/auth/callback"
LOGIN_PATH = "/auth/login"
LOGOUT_PATH = "/auth/logout"


@dataclass(frozen=True)
class GroupGrant:
    """One group's permission on every experiment and every registered model (and prompt)."""

    group: str
    experiments: str
    models: str


@dataclass(frozen=True)
class SignOnConfig:
    issuer: str
    client_id: str
    client_secret: str
    public_url: str
    scopes: tuple[str, ...]
    username_claims: tuple[str, ...]  # the first a token carries names the user
    groups_claims: tuple[str, ...]  # their groups together
    admin_groups: frozenset[str]
    grants: tuple[GroupGrant, ...]
    audience: str
    session_ttl: int
    secret_key: str
    admin_username: str  # the break-glass basic-auth account: never taken by a sign-in

    @classmethod
    def from_settings(cls, settings: Settings) -> SignOnConfig:
        return cls(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            client_secret=client_secret(settings),
            public_url=settings.public_url,
            scopes=settings.oidc_scopes,
            username_claims=settings.oidc_username_claim,
            groups_claims=settings.oidc_groups_claim,
            admin_groups=frozenset(settings.oidc_admin_groups),
            grants=grants_of(settings),
            audience=settings.oidc_audience or settings.oidc_client_id,
            session_ttl=settings.oidc_session_ttl,
            secret_key=settings.flask_secret_key,
            admin_username=settings.admin_username,
        )

    @property
    def redirect_uri(self) -> str:
        return self.public_url + CALLBACK_PATH

    @property
    def secure_cookies(self) -> bool:
        """Cookies marked Secure: the browser sends them over TLS only."""
        return self.public_url.startswith("https://")

    @property
    def groups(self) -> frozenset[str]:
        """Groups whose members may use the server at all."""
        return self.admin_groups | {grant.group for grant in self.grants}


def grants_of(settings: Settings) -> tuple[GroupGrant, ...]:
    """MLFLOW_STACK_OIDC_GROUP_PERMISSIONS, one grant per group."""
    return tuple(GroupGrant(*entry) for entry in settings.oidc_group_permissions)


def client_secret(settings: Settings) -> str:
    """The client secret, from the setting or from its file (read once, at start)."""
    if settings.oidc_client_secret:
        return settings.oidc_client_secret
    path = Path(settings.oidc_client_secret_file)
    try:
        value = path.read_text().strip()
    except OSError as error:
        raise ConfigError(
            [f"MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE={str(path)!r} cannot be read: {error.strerror}"]
        ) from None
    if not value:
        raise ConfigError([f"MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE={str(path)!r} is empty"])
    return value
