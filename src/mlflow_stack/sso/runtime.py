"""Single sign-on in one worker: the configuration, the provider, the cookies and the users'
roles together, installed once per process by the app (:func:`install`) and found by the login
check (:func:`current`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from mlflow_stack.settings.contract import Settings
from mlflow_stack.sso import tokens
from mlflow_stack.sso.config import SignOnConfig
from mlflow_stack.sso.identity import Identity, identity_of
from mlflow_stack.sso.provider import Provider, ProviderUnavailableError
from mlflow_stack.sso.roles import Members
from mlflow_stack.sso.session import Cookies

log = logging.getLogger(__name__)


def _mlflow_auth_store() -> Any:
    from mlflow.server.auth import store

    return store


class SignOn:
    def __init__(
        self,
        config: SignOnConfig,
        provider: Provider | None = None,
        store_of: Callable[[], Any] = _mlflow_auth_store,
    ) -> None:
        self.config = config
        self.provider = provider or Provider(config.issuer)
        self.cookies = Cookies(config)
        self.members = Members(store_of)

    def warm_up(self) -> None:
        """Fetch the provider's metadata and keys in a thread, so that the first token is
        checked without waiting for them; a provider that is down is only logged here."""

        def fetch() -> None:
            try:
                self.provider.keys()
            except ProviderUnavailableError as error:
                log.warning(
                    "the identity provider %s cannot be reached yet (%s): sign-in and tokens "
                    "wait for it",
                    self.config.issuer,
                    error,
                )

        threading.Thread(target=fetch, name="mlflow-stack-oidc-keys", daemon=True).start()

    def from_access_token(self, token: str) -> Identity:
        """The user an access token names, made to match its groups. TokenRefusedError,
        NotAllowedError or ProviderUnavailableError say why not."""
        claims = tokens.verify(token, self.provider, audience=self.config.audience)
        identity = identity_of(claims, self.config)
        self.members.ensure(identity)
        return identity

    def from_cookie(self, cookie_header: str | None) -> Identity | None:
        """The user of a valid session cookie, made to match the groups of its sign-in."""
        identity = self.cookies.identity(cookie_header)
        if identity is not None:
            self.members.ensure(identity)
        return identity


_INSTALLED: dict[str, SignOn] = {}  # "current" -> this process's, when oidc mode is on


def install(settings: Settings) -> SignOn | None:
    """Single sign-on for this process when MLFLOW_STACK_AUTH_MODE=oidc; None otherwise."""
    _INSTALLED.clear()
    if settings.auth_mode != "oidc":
        return None
    signon = _INSTALLED["current"] = SignOn(SignOnConfig.from_settings(settings))
    return signon


def current() -> SignOn | None:
    return _INSTALLED.get("current")
