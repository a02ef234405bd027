"""Single sign-on installed per process, and its two ways of naming a user."""

from __future__ import annotations

import time

import pytest

from mlflow_stack.sso import runtime
from mlflow_stack.sso.identity import Identity, NotAllowedError
from mlflow_stack.sso.runtime import SignOn
from mlflow_stack.sso.tokens import TokenRefusedError
from tests.conftest import REQUIRED, SSO
from tests.unit.sso.issuer import Issuer, config


class Recorded:
    def __init__(self) -> None:
        self.ensured: list[Identity] = []

    def ensure(self, identity: Identity) -> None:
        self.ensured.append(identity)


def signon_for(issuer: Issuer) -> SignOn:
    signon = SignOn(config(issuer.url))
    signon.members = Recorded()  # type: ignore[assignment]
    return signon


def test_an_access_token_names_a_member_and_makes_them_match(issuer: Issuer) -> None:
    signon = signon_for(issuer)
    identity = signon.from_access_token(issuer.token({"groups": ["ml-team", "ml-admins"]}))
    assert identity == Identity("alice", frozenset({"ml-team", "ml-admins"}), admin=True)
    assert signon.members.ensured == [identity]  # type: ignore[attr-defined]


def test_a_bad_token_or_an_outsider_makes_no_user(issuer: Issuer) -> None:
    signon = signon_for(issuer)
    with pytest.raises(TokenRefusedError):
        signon.from_access_token(issuer.token({"exp": int(time.time()) - 60}))
    with pytest.raises(NotAllowedError):
        signon.from_access_token(issuer.token({"groups": []}))
    assert signon.members.ensured == []  # type: ignore[attr-defined]


def test_a_cookie_names_its_user(issuer: Issuer) -> None:
    signon = signon_for(issuer)
    bob = Identity("bob", frozenset({"analysts"}), admin=False)
    assert signon.from_cookie(signon.cookies.session(bob).split(";", 1)[0]) == bob
    assert signon.from_cookie("") is None


def test_warm_up_fetches_the_keys_in_the_background(issuer: Issuer) -> None:
    signon = signon_for(issuer)
    signon.warm_up()
    deadline = time.monotonic() + 5
    while "/jwks" not in issuer.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "/jwks" in issuer.requests


def test_installed_in_oidc_mode_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_stack.settings.contract import Settings

    monkeypatch.setattr(runtime, "_INSTALLED", {})
    assert runtime.install(Settings.from_env(REQUIRED)) is None
    assert runtime.current() is None
    installed = runtime.install(Settings.from_env({**REQUIRED, **SSO}))
    assert installed is not None and runtime.current() is installed
    assert installed.config.issuer == "https://idp.example.com"
