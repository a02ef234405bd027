"""The signed cookies: what they carry, how long, and with which attributes."""

from __future__ import annotations

import base64
import time

import pytest

from mlflow_stack.sso.identity import Identity
from mlflow_stack.sso.session import SESSION_COOKIE, SIGNIN_COOKIE, Cookies, SignIn
from tests.unit.sso.issuer import config

ALICE = Identity("alice", frozenset({"ml-team"}), admin=False)


def value_of(set_cookie: str) -> str:
    return set_cookie.split(";", maxsplit=1)[0]


def test_a_session_cookie_gives_back_its_identity() -> None:
    cookies = Cookies(config("https://idp"))
    header = f'other=1; {value_of(cookies.session(ALICE))}; x="quoted"'
    assert cookies.identity(header) == ALICE


def test_the_session_cookie_is_httponly_samesite_and_secure_behind_tls() -> None:
    attributes = Cookies(config("https://idp")).session(ALICE)
    assert attributes.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in attributes
    assert "SameSite=Lax" in attributes
    assert "Secure" in attributes
    assert "Max-Age=3600" in attributes
    assert "Path=/" in attributes
    plain = Cookies(config("https://idp", public_url="http://127.0.0.1:5000")).session(ALICE)
    assert "Secure" not in plain


def test_a_forged_or_other_keys_cookie_is_no_session() -> None:
    cookies = Cookies(config("https://idp"))
    other = Cookies(config("https://idp", secret_key="another-key-entirely"))
    assert other.identity(value_of(cookies.session(ALICE))) is None
    name, _, signed = value_of(cookies.session(ALICE)).partition("=")
    payload, rest = signed.split(".", 1)
    carol = base64.urlsafe_b64encode(b'{"u":"carol","g":["ml-admins"],"a":true}').rstrip(b"=")
    assert cookies.identity(f"{name}={carol.decode()}.{rest}") is None
    assert payload  # the original payload was replaced, the signature kept
    assert cookies.identity(None) is None
    assert cookies.identity(f"{SESSION_COOKIE}=") is None


def test_a_session_ends_after_its_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    cookies = Cookies(config("https://idp", session_ttl=60))
    header = value_of(cookies.session(ALICE))
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert cookies.identity(header) is None


def test_sign_out_clears_the_cookie() -> None:
    ended = Cookies(config("https://idp")).end_session()
    assert ended.startswith(f'{SESSION_COOKIE}=""') or ended.startswith(f"{SESSION_COOKIE}=;")
    assert "Max-Age=0" in ended


def test_the_sign_in_cookie_goes_to_the_callback_only() -> None:
    cookies = Cookies(config("https://idp"))
    flow = SignIn("state", "nonce", "verifier", "/#/experiments/1")
    attributes = cookies.signin(flow)
    assert attributes.startswith(f"{SIGNIN_COOKIE}=")
    assert "Path=/auth/callback" in attributes
    assert "Max-Age=600" in attributes
    assert cookies.flow(value_of(attributes)) == flow
    assert cookies.identity(value_of(attributes).replace(SIGNIN_COOKIE, SESSION_COOKIE)) is None
