"""The browser's sign-in endpoints, against a provider on a real socket (tests/unit/sso's
issuer, whose token endpoint answers what a test sets). The whole flow with a real OpenID
provider and browser is tests/sso."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from mlflow_stack.server.signon import SignOnEndpoints, safe_next
from mlflow_stack.sso.runtime import SignOn
from mlflow_stack.sso.session import SESSION_COOKIE, SIGNIN_COOKIE
from tests.unit.server.asgi_harness import Answer, EchoApp, request
from tests.unit.sso.issuer import Issuer, config


class Members:
    def __init__(self) -> None:
        self.ensured: list = []

    def ensure(self, identity: object) -> None:
        self.ensured.append(identity)


@pytest.fixture
def signon(issuer: Issuer) -> SignOn:
    signon = SignOn(config(issuer.url))
    signon.members = Members()  # type: ignore[assignment] - the auth store: tests/unit/sso/test_roles.py
    return signon


def cookies_of(answer: Answer) -> list[str]:
    return [v.decode() for k, v in answer.raw_headers if k == b"set-cookie"]


def login(signon: SignOn, next_page: str = "/#/experiments") -> tuple[Answer, dict[str, str]]:
    app = SignOnEndpoints(EchoApp(), signon)
    answer = request(app, path="/auth/login", query=f"next={next_page}".encode())
    query = {
        k: v[0] for k, v in parse_qs(urlsplit(answer.headers[b"location"].decode()).query).items()
    }
    return answer, query


def test_sign_in_goes_to_the_provider_with_pkce_state_and_nonce(
    signon: SignOn, issuer: Issuer
) -> None:
    answer, query = login(signon)
    assert answer.status == 302
    assert answer.headers[b"location"].decode().startswith(issuer.url + "/auth?")
    assert query["response_type"] == "code"
    assert query["client_id"] == "mlflow"
    assert query["redirect_uri"] == "https://mlflow.example.com/auth/callback"
    assert query["scope"] == "openid profile email"
    assert query["code_challenge_method"] == "S256"
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    (cookie,) = cookies_of(answer)
    assert cookie.startswith(SIGNIN_COOKIE) and "Path=/auth/callback" in cookie
    flow = signon.cookies.flow(cookie.split(";", 1)[0])
    assert flow is not None and flow.state == query["state"] and flow.nonce == query["nonce"]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(flow.verifier.encode()).digest())
    assert query["code_challenge"] == challenge.rstrip(b"=").decode()
    assert flow.next == "/#/experiments"


def callback(signon: SignOn, query: str, cookie: str = "") -> Answer:
    headers = {"cookie": cookie} if cookie else {}
    return request(
        SignOnEndpoints(EchoApp(), signon),
        path="/auth/callback",
        query=query.encode(),
        headers=headers,
    )


def test_the_callback_signs_in_and_returns_to_the_page(signon: SignOn, issuer: Issuer) -> None:
    answer, query = login(signon)
    flow_cookie = cookies_of(answer)[0].split(";", 1)[0]
    id_token = issuer.token({"nonce": query["nonce"], "groups": ["ml-team", "other"]})
    issuer.token_answer = (
        200,
        {"access_token": "at", "token_type": "Bearer", "id_token": id_token},
    )
    done = callback(signon, f"code=the-code&state={query['state']}", flow_cookie)
    assert done.status == 302, done.body
    assert done.headers[b"location"] == b"/#/experiments"
    session = next(c for c in cookies_of(done) if c.startswith(SESSION_COOKIE))
    identity = signon.cookies.identity(session.split(";", 1)[0])
    assert identity is not None and identity.username == "alice"
    assert identity.groups == {"ml-team"}
    assert signon.members.ensured == [identity]  # type: ignore[attr-defined]
    form = issuer.token_forms[-1]
    assert form["grant_type"] == ["authorization_code"]
    assert form["code"] == ["the-code"]
    assert form["redirect_uri"] == ["https://mlflow.example.com/auth/callback"]
    assert signon.cookies.flow(flow_cookie).verifier == form["code_verifier"][0]  # type: ignore[union-attr]
    assert issuer.token_auth[-1].startswith("Basic ")  # client_secret_basic


def test_an_id_token_for_another_sign_in_is_refused(signon: SignOn, issuer: Issuer) -> None:
    answer, query = login(signon)
    flow_cookie = cookies_of(answer)[0].split(";", 1)[0]
    issuer.token_answer = (
        200,
        {
            "access_token": "at",
            "token_type": "Bearer",
            "id_token": issuer.token({"nonce": "replayed"}),
        },
    )
    done = callback(signon, f"code=c&state={query['state']}", flow_cookie)
    assert done.status == 502
    assert b"nonce" in done.body
    assert not any(c.startswith(SESSION_COOKIE) for c in cookies_of(done))


def test_someone_in_no_group_is_told_so(signon: SignOn, issuer: Issuer) -> None:
    answer, query = login(signon)
    flow_cookie = cookies_of(answer)[0].split(";", 1)[0]
    token = issuer.token(
        {"nonce": query["nonce"], "preferred_username": "eve", "groups": ["sales"]}
    )
    issuer.token_answer = (200, {"access_token": "at", "token_type": "Bearer", "id_token": token})
    done = callback(signon, f"code=c&state={query['state']}", flow_cookie)
    assert done.status == 403
    assert b"You may not use this MLflow server" in done.body
    assert b"Eve is in none of the groups" in done.body


def test_a_refused_code_is_a_page_naming_the_client_settings(
    signon: SignOn, issuer: Issuer
) -> None:
    answer, query = login(signon)
    flow_cookie = cookies_of(answer)[0].split(";", 1)[0]
    issuer.token_answer = (401, {"error": "invalid_client", "error_description": "bad secret"})
    done = callback(signon, f"code=c&state={query['state']}", flow_cookie)
    assert done.status == 502
    assert b"MLFLOW_STACK_OIDC_CLIENT_SECRET" in done.body
    assert b"invalid_client" in done.body


@pytest.mark.parametrize(
    ("query", "with_cookie", "status", "title"),
    [
        ("code=c&state=s", False, 400, b"This sign-in has expired"),
        ("code=c&state=wrong", True, 400, b"This sign-in does not match"),
        ("error=access_denied&error_description=no&state=STATE", True, 403, b"refused the sign-in"),
    ],
)
def test_a_callback_that_does_not_fit_is_a_page(
    signon: SignOn, query: str, with_cookie: bool, status: int, title: bytes
) -> None:
    answer, login_query = login(signon)
    cookie = cookies_of(answer)[0].split(";", 1)[0] if with_cookie else ""
    done = callback(signon, query.replace("STATE", login_query["state"]), cookie)
    assert done.status == status
    assert done.headers[b"content-type"].startswith(b"text/html")
    assert title in done.body
    assert b"<script" not in done.body


def test_the_provider_down_at_sign_in_is_a_clear_page(signon: SignOn, issuer: Issuer) -> None:
    issuer.down = True
    answer = request(SignOnEndpoints(EchoApp(), signon), path="/auth/login")
    assert answer.status == 502
    assert b"The sign-in service cannot be reached" in answer.body
    assert issuer.url.encode() in answer.body
    assert b"Scripts with an access token keep working until their tokens expire" in answer.body


def test_sign_out_clears_the_session_and_ends_it_at_the_provider(
    signon: SignOn, issuer: Issuer
) -> None:
    answer = request(SignOnEndpoints(EchoApp(), signon), path="/auth/logout")
    assert answer.status == 302
    location = urlsplit(answer.headers[b"location"].decode())
    assert f"{location.scheme}://{location.netloc}{location.path}" == issuer.url + "/session/end"
    assert parse_qs(location.query) == {
        "client_id": ["mlflow"],
        "post_logout_redirect_uri": ["https://mlflow.example.com/"],
    }
    (cookie,) = cookies_of(answer)
    assert cookie.startswith(SESSION_COOKIE) and "Max-Age=0" in cookie


def test_sign_out_with_the_provider_down_still_signs_out(signon: SignOn, issuer: Issuer) -> None:
    issuer.down = True
    answer = request(SignOnEndpoints(EchoApp(), signon), path="/auth/logout")
    assert answer.status == 200
    assert b"You are signed out of MLflow" in answer.body
    assert "Max-Age=0" in cookies_of(answer)[0]


def test_other_paths_go_to_the_app(signon: SignOn) -> None:
    assert request(SignOnEndpoints(EchoApp(), signon), path="/auth/other").reached_app


@pytest.mark.parametrize(
    ("value", "page"),
    [
        ("/#/x", "/#/x"),
        ("//evil.example.com", "/"),
        ("https://evil", "/"),
        ("", "/"),
        ("/\\\\evil", "/"),
    ],
)
def test_only_pages_of_this_server_are_returned_to(value: str, page: str) -> None:
    assert safe_next(value) == page
