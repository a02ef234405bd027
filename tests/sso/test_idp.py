"""The SSO harness itself: the test OpenID provider on real sockets, its tokens checked with
joserfc against the JWKS it serves, and a person's sign-in in headless Chromium through a
tiny relying party started here."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.sso.browser import (
    PASSWORD_FIELD,
    SUBMIT_BUTTON,
    USERNAME_FIELD,
    SignInRefused,
    sign_in,
    sign_out,
)
from tests.sso.conftest import CALLBACK_PATH, POST_LOGOUT_PATH
from tests.sso.idp import Provider


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def verified_claims(token: str, idp: Provider, audience: str) -> dict[str, Any]:
    """The claims of an RS256 JWT that verifies against the provider's served JWKS."""
    keys = KeySet.import_key_set(idp.jwks())
    decoded = jwt.decode(token, keys, algorithms=["RS256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": idp.issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(decoded.claims)
    return decoded.claims


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# --- discovery, PKCE, client credentials ---


def test_discovery_lists_the_endpoints_s256_and_rs256(idp: Provider) -> None:
    found = idp.discovery()
    assert found["issuer"] == idp.issuer
    for name in ("authorization_endpoint", "token_endpoint", "end_session_endpoint", "jwks_uri"):
        assert found[name].startswith(f"{idp.issuer}/"), name
    assert found["token_endpoint"] == idp.token_endpoint
    assert "S256" in found["code_challenge_methods_supported"]
    assert "RS256" in found["id_token_signing_alg_values_supported"]
    assert "client_credentials" in found["grant_types_supported"]
    assert "client_secret_basic" in found["token_endpoint_auth_methods_supported"]
    assert "groups" in found["claims_supported"]
    assert http().get(found["jwks_uri"], timeout=10).json() == idp.jwks()
    assert [key["alg"] for key in idp.jwks()["keys"]] == ["RS256"]
    assert all("d" not in key for key in idp.jwks()["keys"])


def test_an_authorization_request_without_pkce_is_refused(idp: Provider, rp_origin: str) -> None:
    answer = http().get(
        idp.discovery()["authorization_endpoint"],
        params={
            "client_id": idp.client_id,
            "response_type": "code",
            "scope": "openid profile email",
            "redirect_uri": f"{rp_origin}{CALLBACK_PATH}",
            "state": "s-1",
            "nonce": "n-1",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code in {302, 303}
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{rp_origin}{CALLBACK_PATH}"
    query = parse_qs(location.query)
    assert query["error"] == ["invalid_request"]
    assert "PKCE" in query["error_description"][0]
    assert query["state"] == ["s-1"]


def test_client_credentials_tokens_verify_with_the_configured_claims(idp: Provider) -> None:
    token = idp.client_credentials_token("ci-bot")
    claims = verified_claims(token, idp, "mlflow")
    assert claims["client_id"] == claims["sub"] == "ci-bot"
    assert claims["preferred_username"] == "ci-bot"
    assert claims["groups"] == ["ml-team"]
    assert claims["exp"] - claims["iat"] == 300
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": idp.jwks()["keys"][0]["kid"]}

    other = verified_claims(
        idp.client_credentials_token("guest-bot", audience="other-api"), idp, "other-api"
    )
    assert other["aud"] == "other-api"
    assert other["groups"] == ["guests"]
    # an audience that is a URI is the resource itself
    url = "https://another-api.example.com"
    assert verified_claims(idp.client_credentials_token("ci-bot", audience=url), idp, url)

    # what a script would do: no `resource` at all gives the web client's id as the audience
    plain = http().post(
        idp.token_endpoint,
        data={"grant_type": "client_credentials"},
        auth=("ci-bot", idp.services["ci-bot"].secret),
        timeout=10,
    )
    assert plain.status_code == 200, plain.text
    assert verified_claims(plain.json()["access_token"], idp, idp.client_id)["sub"] == "ci-bot"


def test_a_wrong_client_secret_gets_no_token(idp: Provider) -> None:
    answer = http().post(
        idp.token_endpoint,
        data={"grant_type": "client_credentials"},
        auth=("ci-bot", "not-the-secret"),
        timeout=10,
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


def test_set_groups_reaches_the_next_token(idp: Provider) -> None:
    before = verified_claims(idp.client_credentials_token("ci-bot"), idp, "mlflow")
    idp.set_groups("ci-bot", ["analysts", "release-managers"])
    after = verified_claims(idp.client_credentials_token("ci-bot"), idp, "mlflow")
    assert before["groups"] == ["ml-team"]
    assert after["groups"] == ["analysts", "release-managers"]


def test_the_admin_endpoint_wants_the_secret(idp: Provider) -> None:
    answer = http().put(
        f"{idp.issuer}/test/groups/ci-bot",
        json=["mlflow-admins"],
        headers={"Authorization": "Bearer guessed"},
        timeout=10,
    )
    assert answer.status_code == 401
    assert verified_claims(idp.client_credentials_token("ci-bot"), idp, "mlflow")["groups"] == [
        "ml-team"
    ]


def test_a_short_lived_token_lives_its_clients_ttl(idp: Provider) -> None:
    claims = verified_claims(idp.client_credentials_token("short-bot"), idp, "mlflow")
    assert claims["exp"] - claims["iat"] == idp.services["short-bot"].ttl == 3


def test_stop_refuses_connections_and_start_keeps_port_and_keys(idp: Provider) -> None:
    token = idp.client_credentials_token("ci-bot")
    keys = idp.jwks()
    port = idp.port
    idp.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass
    idp.start()
    assert idp.port == port
    assert idp.jwks() == keys
    assert verified_claims(token, idp, "mlflow")["client_id"] == "ci-bot"


def code_by_form(idp: Provider, callback: str, params: dict[str, str], password: str) -> str:
    """The code of a sign-in done with plain HTTP (the form posted by requests, no browser)."""
    session = http()
    form = session.get(idp.discovery()["authorization_endpoint"], params=params, timeout=10)
    assert form.status_code == 200 and 'id="login-form"' in form.text, form.text[:2000]
    answer = session.post(
        f"{form.url}/login",
        data={"username": params["login_hint"], "password": password},
        allow_redirects=False,
        timeout=10,
    )
    for _ in range(10):
        assert answer.status_code in {302, 303}, answer.text[:2000]
        location = urljoin(answer.url, answer.headers["location"])
        if location.startswith(callback):
            return parse_qs(urlsplit(location).query)["code"][0]
        answer = session.get(location, allow_redirects=False, timeout=10)
    raise AssertionError(f"never sent back to {callback}")


def test_groups_and_the_nonce_come_with_openid_alone(idp: Provider, rp_origin: str) -> None:
    callback = f"{rp_origin}{CALLBACK_PATH}"
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    params = {
        "client_id": idp.client_id,
        "response_type": "code",
        "scope": "openid",
        "redirect_uri": callback,
        "state": "s-2",
        "nonce": nonce,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "login_hint": "alice",
    }
    code = code_by_form(idp, callback, params, "alice-password-1")
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback}
    wrong = http().post(
        idp.token_endpoint,
        data={**exchange, "code_verifier": secrets.token_urlsafe(48)},
        auth=(idp.client_id, idp.client_secret),
        timeout=10,
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    code = code_by_form(idp, callback, params, "alice-password-1")
    answer = http().post(
        idp.token_endpoint,
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": callback,
              "code_verifier": verifier},
        auth=(idp.client_id, idp.client_secret),
        timeout=10,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    claims = verified_claims(answer.json()["id_token"], idp, idp.client_id)
    assert claims["sub"] == "alice"
    assert claims["groups"] == ["mlflow-admins"]
    assert claims["nonce"] == nonce
    assert "email" not in claims and "preferred_username" not in claims  # their scopes' claims


# --- a person's sign-in, through a tiny relying party ---


#: The relying party refuses people in this group, as a server refuses one it has no role for.
REFUSED_GROUP = "analysts"


@dataclass
class RelyingParty:
    """A code-flow client of the provider with PKCE, as a web server is: ``/`` sends the
    browser to sign in; ``/auth/callback`` exchanges the code, verifies the ID token and
    redirects to ``/claims/<n>`` (which shows its claims in ``#claims``), or refuses someone in
    :data:`REFUSED_GROUP` with a 403 page there; ``/logout`` sends the browser to the
    provider's end-session endpoint."""

    idp: Provider
    origin: str
    pending: dict[str, tuple[str, str]] = field(default_factory=dict)  # state -> nonce, verifier
    id_tokens: list[str] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)

    @property
    def callback(self) -> str:
        return f"{self.origin}{CALLBACK_PATH}"

    def sign_in_location(self) -> str:
        state, nonce, verifier = (secrets.token_urlsafe(48) for _ in range(3))
        self.pending[state] = (nonce, verifier)
        query = urlencode({
            "client_id": self.idp.client_id,
            "response_type": "code",
            "scope": "openid profile email",
            "redirect_uri": self.callback,
            "state": state,
            "nonce": nonce,
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        })  # fmt: skip
        return f"{self.idp.discovery()['authorization_endpoint']}?{query}"

    def take_callback(self, query: dict[str, list[str]]) -> tuple[int, str]:
        """(303, where to) for a sign-in taken, else (status, page)."""
        if "error" in query:
            return 400, f"<p id='rp-error'>{html.escape(query['error'][0])}</p>"
        nonce, verifier = self.pending.pop(query["state"][0])
        answer = http().post(
            self.idp.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": self.callback,
                "code_verifier": verifier,
            },
            auth=(self.idp.client_id, self.idp.client_secret),
            timeout=10,
        )
        if answer.status_code != 200:
            return 502, f"<p id='rp-error'>{html.escape(answer.text)}</p>"
        id_token = answer.json()["id_token"]
        claims = verified_claims(id_token, self.idp, self.idp.client_id)
        claims["nonce_matches"] = claims.get("nonce") == nonce
        if REFUSED_GROUP in claims["groups"]:
            return 403, f"<p id='rp-error'>{html.escape(claims['sub'])} may not come in</p>"
        self.id_tokens.append(id_token)
        self.claims.append(claims)
        return 303, f"/claims/{len(self.claims) - 1}"

    def logout_location(self) -> str:
        query = urlencode({
            "id_token_hint": self.id_tokens[-1],
            "post_logout_redirect_uri": f"{self.origin}{POST_LOGOUT_PATH}",
        })  # fmt: skip
        return f"{self.idp.discovery()['end_session_endpoint']}?{query}"


@contextlib.contextmanager
def relying_party(idp: Provider, port: int) -> Iterator[RelyingParty]:
    party = RelyingParty(idp, f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status: int, body: str) -> None:
            if status == 303:
                self.send_response(303)
                self.send_header("Location", body)
                self.end_headers()
                return
            encoded = f"<!DOCTYPE html><html><body>{body}</body></html>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            shown = re.fullmatch(r"/claims/(\d+)", url.path)
            if url.path == "/":
                self.answer(303, party.sign_in_location())
            elif url.path == "/logout":
                self.answer(303, party.logout_location())
            elif url.path == CALLBACK_PATH:
                self.answer(*party.take_callback(parse_qs(url.query)))
            elif shown and int(shown[1]) < len(party.claims):
                claims = json.dumps(party.claims[int(shown[1])])
                self.answer(200, f"<pre id='claims'>{html.escape(claims)}</pre>")
            else:
                self.send_error(404)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="relying-party", daemon=True)
    thread.start()
    try:
        yield party
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def rp(idp: Provider, rp_port: int) -> Iterator[RelyingParty]:
    with relying_party(idp, rp_port) as party:
        yield party


def shown_claims(driver: WebDriver) -> dict[str, Any]:
    found = driver.find_elements(By.ID, "claims")
    assert found, f"no claims on {driver.current_url}:\n{driver.page_source[:2000]}"
    return json.loads(found[0].text)


def test_a_browser_sign_in_ends_with_the_claims_and_the_nonce(
    idp: Provider, rp: RelyingParty, browser: WebDriver
) -> None:
    sign_in(browser, f"{rp.origin}/", "bob", "bob-password-1")
    assert browser.current_url == f"{rp.origin}/claims/0"
    claims = shown_claims(browser)
    assert claims["sub"] == "bob"
    assert claims["preferred_username"] == "bob"
    assert claims["name"] == "Bob Builder"
    assert claims["email"] == "bob@example.test"
    assert claims["groups"] == ["ml-team"]
    assert claims["aud"] == idp.client_id
    assert claims["nonce_matches"] is True

    # The provider's session lets the next sign-in through without the form; the groups are
    # read anew for each ID token.
    idp.set_groups("bob", ["ml-team", "release-managers"])
    sign_in(browser, f"{rp.origin}/", "bob", "unused: no form is shown")
    assert shown_claims(browser)["groups"] == ["ml-team", "release-managers"]


def test_a_wrong_password_stays_on_the_providers_form(
    idp: Provider, rp: RelyingParty, browser: WebDriver
) -> None:
    with pytest.raises(SignInRefused, match="Invalid username or password"):
        sign_in(browser, f"{rp.origin}/", "bob", "not-his-password")
    assert browser.current_url.startswith(f"{idp.issuer}/interaction/")
    assert "Invalid username or password." in browser.page_source
    for element_id in (USERNAME_FIELD, PASSWORD_FIELD, SUBMIT_BUTTON):
        assert browser.find_elements(By.ID, element_id), element_id
    assert not rp.id_tokens

    # the same form then takes the right password
    browser.find_element(By.ID, USERNAME_FIELD).send_keys("bob")
    browser.find_element(By.ID, PASSWORD_FIELD).send_keys("bob-password-1")
    browser.find_element(By.ID, SUBMIT_BUTTON).click()
    WebDriverWait(browser, 20).until(lambda driver: driver.find_elements(By.ID, "claims"))
    assert shown_claims(browser)["sub"] == "bob"


def test_a_relying_party_that_stays_on_its_callback_refused_the_sign_in(
    idp: Provider, rp: RelyingParty, browser: WebDriver
) -> None:
    with pytest.raises(SignInRefused, match="carol may not come in"):
        sign_in(browser, f"{rp.origin}/", "carol", "carol-password-1")
    assert browser.current_url.startswith(f"{rp.callback}?code=")
    assert not rp.id_tokens


def test_sign_out_ends_the_providers_session(
    idp: Provider, rp: RelyingParty, browser: WebDriver
) -> None:
    sign_in(browser, f"{rp.origin}/", "alice", "alice-password-1")
    assert shown_claims(browser)["groups"] == ["mlflow-admins"]
    sign_out(browser, f"{rp.origin}/logout")
    # back on the relying party's "/", which sends the browser to sign in again: the form
    assert browser.current_url.startswith(f"{idp.issuer}/interaction/")
    assert browser.find_elements(By.ID, USERNAME_FIELD)
    assert re.search(r"Sign in", browser.page_source)
