"""Fixtures of the SSO tests: the test OpenID provider (tests/sso/idp.py) and a headless
Chromium (tests/sso/browser.py).

- ``rp_port`` / ``rp_origin`` (module): a free loopback port for the relying party of the
  module (the MLflow server, or the tests' own tiny one), known before the provider starts,
  since the provider registers its redirect URIs.
- ``make_idp`` (session): starts a :class:`Provider` with any users, services and URIs; every
  provider it made is stopped at the end of the session.
- ``module_idp`` (module): a provider with :data:`USERS` and :data:`SERVICES`, redirect URI
  ``<rp_origin>/auth/callback`` and post-logout redirect URI ``<rp_origin>/``.
- ``idp`` (function): ``module_idp``, running, with the default groups back (a test may have
  stopped it or changed groups).
- ``browser`` (function): a fresh headless Chromium, so no provider session carries over.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from mlflow_stack.native.processes import quiet_port
from tests.sso.browser import chromium
from tests.sso.idp import Provider, Service, User

CALLBACK_PATH = "/auth/callback"
POST_LOGOUT_PATH = "/"
USERS = (
    User("alice", "alice-password-1", ["mlflow-admins"], name="Alice Admin"),
    User("bob", "bob-password-1", ["ml-team"], name="Bob Builder"),
    User("carol", "carol-password-1", ["analysts"], name="Carol Reader"),
)
SERVICES = (
    Service("ci-bot", "ci-bot-secret-1", ["ml-team"]),
    Service("guest-bot", "guest-bot-secret-1", ["guests"]),
    Service("short-bot", "short-bot-secret-1", ["ml-team"], ttl=3),
)

MakeIdp = Callable[..., Provider]


@pytest.fixture(scope="module")
def rp_port() -> int:
    return quiet_port()


@pytest.fixture(scope="module")
def rp_origin(rp_port: int) -> str:
    return f"http://127.0.0.1:{rp_port}"


@pytest.fixture(scope="session")
def make_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeIdp]:
    made: list[Provider] = []

    def make(
        *,
        redirect_uris: list[str],
        post_logout_redirect_uris: list[str],
        users: list[User] | None = None,
        services: list[Service] | None = None,
        **options: Any,
    ) -> Provider:
        """A started provider (defaults: copies of USERS and SERVICES); ``options`` are
        Provider's keywords (client_id, client_secret, port, access_token_ttl)."""
        provider = Provider(
            tmp_path_factory.mktemp("idp"),
            users=copy.deepcopy(list(USERS if users is None else users)),
            services=copy.deepcopy(list(SERVICES if services is None else services)),
            redirect_uris=redirect_uris,
            post_logout_redirect_uris=post_logout_redirect_uris,
            **options,
        )
        made.append(provider)
        provider.start()
        return provider

    yield make
    for provider in made:
        provider.stop()


@pytest.fixture(scope="module")
def module_idp(make_idp: MakeIdp, rp_origin: str) -> Provider:
    return make_idp(
        redirect_uris=[f"{rp_origin}{CALLBACK_PATH}"],
        post_logout_redirect_uris=[f"{rp_origin}{POST_LOGOUT_PATH}"],
    )


@pytest.fixture
def idp(module_idp: Provider) -> Provider:
    module_idp.start()  # no-op while it runs
    for default in (*USERS, *SERVICES):
        key = default.login if isinstance(default, User) else default.client_id
        current = module_idp.users.get(key) or module_idp.services.get(key)
        if current is not None and current.groups != default.groups:
            module_idp.set_groups(key, default.groups)
    return module_idp


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    with chromium(log_dir=tmp_path) as driver:
        yield driver
