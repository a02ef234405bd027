"""Single sign-on end to end: a real OpenID provider (oidc-provider, tests/sso/idp.py) and a
native stack in oidc mode on loopback, a headless Chromium signing in to the UI, and the stock
MLflow client with access tokens. Every answer is read back from the server or its database."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import LiveStack
from tests.sso.browser import SignInRefused, sign_in, sign_out
from tests.sso.idp import Provider, Service, User
from tests.unit.native.helpers import wait_until
from tests.unit.sso.issuer import b64, claims_of

SESSION_TTL = 8  # seconds: the bound on a group change in the UI, short for the test
PASSWORD = "correct horse battery"
GROUPS = "ml-team=EDIT,analysts=READ:NO_PERMISSIONS,visitors=NO_PERMISSIONS"


@dataclass
class SignOnStack:
    live: LiveStack
    idp: Provider

    @property
    def url(self) -> str:
        return self.live.tracking_uri

    def token(self, client_id: str, audience: str = "mlflow") -> str:
        return self.idp.client_credentials_token(client_id, audience=audience)

    def call(self, token: str, method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(
            method,
            self.url + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def admin(self) -> Any:
        from mlflow import MlflowClient

        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            self.live.admin
        )
        return MlflowClient(self.url)

    def auth_rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = self.live.pg(self.live.settings.auth_db)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            conn.close()

    def roles_of(self, username: str) -> set[str]:
        """The group roles the user holds (MLflow's per-user role of their own grants aside)."""
        rows = self.auth_rows(
            "SELECT r.name FROM roles r JOIN user_role_assignments a ON a.role_id = r.id "
            "JOIN users u ON u.id = a.user_id WHERE u.username = %s",
            username,
        )
        return {name for (name,) in rows if name.startswith("sso:")}  # not MLflow's own per-user


@pytest.fixture(scope="module")
def sso() -> Iterator[SignOnStack]:
    root = Path(tempfile.mkdtemp(prefix="mlflow-stack-sso-"))
    root.chmod(0o755)
    live = LiveStack.on_free_ports(root)
    public = f"http://127.0.0.1:{live.env['MLFLOW_STACK_PORT']}"
    idp = Provider(
        root / "idp",
        users=[
            User("alice", PASSWORD, ["ml-team"], email="alice@example.com", name="Alice"),
            User("carol", PASSWORD, ["ml-admins"], email="carol@example.com", name="Carol"),
            User("eve", PASSWORD, ["sales"], email="eve@example.com", name="Eve"),
            User("gina", PASSWORD, ["ml-team"], email="gina@example.com", name="Gina"),
        ],
        services=[
            Service("ci-bot", "ci-bot-secret-123", ["ml-team"]),
            Service("guest-bot", "guest-bot-secret-123", ["visitors"]),
            Service("reader-bot", "reader-bot-secret-123", ["analysts"]),
            Service("short-bot", "short-bot-secret-123", ["ml-team"], ttl=3),
            Service("leaver-bot", "leaver-bot-secret-123", ["ml-team"], ttl=6),
        ],
        redirect_uris=[public + "/auth/callback"],
        post_logout_redirect_uris=[public + "/"],
    )
    idp.start()
    live.env.update(
        MLFLOW_STACK_AUTH_MODE="oidc",
        MLFLOW_STACK_PUBLIC_URL=public,
        MLFLOW_STACK_OIDC_ISSUER=idp.issuer,
        MLFLOW_STACK_OIDC_CLIENT_ID=idp.client_id,
        MLFLOW_STACK_OIDC_CLIENT_SECRET=idp.client_secret,
        MLFLOW_STACK_OIDC_ADMIN_GROUPS="ml-admins",
        MLFLOW_STACK_OIDC_GROUP_PERMISSIONS=GROUPS,
        MLFLOW_STACK_OIDC_SESSION_TTL=str(SESSION_TTL),
    )
    try:
        live.up()
        live.load_settings()
        yield SignOnStack(live, idp)
    finally:
        live.cli("down")
        idp.stop()
        shutil.rmtree(root, ignore_errors=True)


def page_text(driver: Any) -> str:
    return driver.find_element("tag name", "body").text


def fetch_json(driver: Any, path: str) -> dict[str, Any]:
    """A request of the UI's own kind, from the signed-in page (its cookie, its origin)."""
    script = (
        "const done = arguments[arguments.length - 1];"
        f"fetch({json.dumps(path)}, {{credentials: 'same-origin'}})"
        ".then(r => r.text().then(t => done({status: r.status, body: t})))"
        ".catch(e => done({status: -1, body: String(e)}));"
    )
    return driver.execute_async_script(script)


# --- the UI ---


def test_a_browser_signs_in_with_the_provider_and_uses_the_ui(
    sso: SignOnStack, browser: Any
) -> None:
    browser.get(sso.url + "/")
    assert browser.current_url.startswith(sso.idp.issuer), "not sent to the provider"
    sign_in(browser, sso.url + "/", "alice", PASSWORD)
    assert browser.current_url.startswith(sso.url)
    wait_until("the MLflow UI", lambda: "MLflow" in browser.title)
    session = next(c for c in browser.get_cookies() if c["name"] == "mlflow_stack_session")
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert session["secure"] is False  # plain http on loopback; Secure with an https:// URL
    answer = fetch_json(browser, "/ajax-api/2.0/mlflow/experiments/search?max_results=5")
    assert answer["status"] == 200, answer
    # the user now exists, with the role of her group and no admin flag
    assert sso.auth_rows("SELECT is_admin FROM users WHERE username = 'alice'") == [(False,)]
    assert sso.roles_of("alice") == {"sso:ml-team"}


def test_the_admin_group_makes_an_admin(sso: SignOnStack, browser: Any) -> None:
    experiment_id = sso.admin().create_experiment(f"admins-{uuid.uuid4().hex[:8]}")
    sign_in(browser, sso.url + "/", "carol", PASSWORD)
    assert sso.auth_rows("SELECT is_admin FROM users WHERE username = 'carol'") == [(True,)]
    # ml-admins grants no permission of its own: reading another's experiment is the admin's
    answer = fetch_json(
        browser, f"/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    )
    assert answer["status"] == 200, answer


def test_a_wrong_password_stays_at_the_provider(sso: SignOnStack, browser: Any) -> None:
    browser.get(sso.url + "/")
    with pytest.raises(SignInRefused, match="the provider refused gina"):
        sign_in(browser, sso.url + "/", "gina", "not her password", timeout=10)
    assert browser.current_url.startswith(sso.idp.issuer)
    assert not any(c["name"] == "mlflow_stack_session" for c in browser.get_cookies())


def test_someone_in_no_configured_group_is_refused_at_sign_in(
    sso: SignOnStack, browser: Any
) -> None:
    browser.get(sso.url + "/")
    with pytest.raises(SignInRefused):  # the server answers its callback with a page
        sign_in(browser, sso.url + "/", "eve", PASSWORD, timeout=10)
    wait_until("the page", lambda: "You may not use this MLflow server" in page_text(browser))
    assert "Eve is in none of the groups" in page_text(browser)
    assert not any(c["name"] == "mlflow_stack_session" for c in browser.get_cookies())
    assert sso.auth_rows("SELECT username FROM users WHERE username = 'eve'") == []


def test_sign_out_ends_the_session(sso: SignOnStack, browser: Any) -> None:
    sign_in(browser, sso.url + "/", "gina", PASSWORD)
    assert (
        fetch_json(browser, "/ajax-api/2.0/mlflow/experiments/search?max_results=1")["status"]
        == 200
    )
    sign_out(browser, sso.url + "/auth/logout")
    wait_until(
        "the cookie cleared",
        lambda: not any(c["name"] == "mlflow_stack_session" for c in browser.get_cookies()),
    )
    browser.get(sso.url + "/")
    wait_until("sent to sign in again", lambda: browser.current_url.startswith(sso.idp.issuer))


def test_the_provider_unreachable_at_sign_in_gives_a_clear_page(
    sso: SignOnStack, browser: Any
) -> None:
    token = sso.token("ci-bot")  # issued before the outage
    sso.idp.stop()
    try:
        browser.delete_all_cookies()
        browser.get(sso.url + "/auth/login")
        text = page_text(browser)
        assert "The sign-in service cannot be reached" in text
        assert sso.idp.issuer in text
        # as documented: an issued token keeps working (the server kept the provider's keys)
        answer = sso.call(token, "POST", "/api/2.0/mlflow/experiments/search", {"max_results": 1})
        assert answer.status_code == 200, answer.text
    finally:
        sso.idp.start()
    browser.get(sso.url + "/")
    wait_until("sign-in works again", lambda: browser.current_url.startswith(sso.idp.issuer))


# --- scripts and CI: access tokens ---

LOG_A_RUN = """
import mlflow
mlflow.set_experiment({name!r})
with mlflow.start_run() as run:
    mlflow.log_param("lr", 0.1)
    mlflow.log_metric("loss", 0.25)
    mlflow.log_text("hello", "notes.txt")
print(run.info.run_id)
"""


def stock_client(sso: SignOnStack, token: str, code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(
        MLFLOW_TRACKING_URI=sso.url,
        MLFLOW_TRACKING_TOKEN=token,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_stock_client_logs_a_run_with_an_access_token(sso: SignOnStack) -> None:
    name = f"ci-{uuid.uuid4().hex[:8]}"
    done = stock_client(sso, sso.token("ci-bot"), LOG_A_RUN.format(name=name))
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = done.stdout.strip().splitlines()[-1]
    run = sso.admin().get_run(run_id)
    assert run.data.params == {"lr": "0.1"}
    assert run.data.metrics == {"loss": 0.25}
    assert [a.path for a in sso.admin().list_artifacts(run_id)] == ["notes.txt"]
    assert sso.roles_of("ci-bot") == {"sso:ml-team"}
    owner = sso.auth_rows(
        "SELECT count(*) FROM users WHERE username = 'ci-bot' AND is_admin = false"
    )
    assert owner == [(1,)]


def test_a_token_is_refused_on_an_experiment_its_group_may_not_read(sso: SignOnStack) -> None:
    experiment_id = sso.admin().create_experiment(f"private-{uuid.uuid4().hex[:8]}")
    path = f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    refused = sso.call(sso.token("guest-bot"), "GET", path)
    assert refused.status_code == 403, refused.text
    assert sso.call(sso.token("reader-bot"), "GET", path).status_code == 200  # READ may
    create = {"experiment_id": experiment_id}
    assert (
        sso.call(sso.token("reader-bot"), "POST", "/api/2.0/mlflow/runs/create", create).status_code
        == 403
    )
    read = stock_client(
        sso,
        sso.token("guest-bot"),
        f"import mlflow; mlflow.MlflowClient().get_experiment({experiment_id!r})",
    )
    assert read.returncode != 0
    assert "403" in read.stderr and "Permission denied" in read.stderr, read.stderr[-2000:]
    assert sso.admin().get_experiment(experiment_id).lifecycle_stage == "active"


@pytest.mark.parametrize("case", ["expired", "forged", "wrong-audience", "alg-none", "garbage"])
def test_bad_tokens_are_answered_401(sso: SignOnStack, case: str) -> None:
    if case == "expired":
        token = sso.token("short-bot")
        claims = claims_of(token)
        assert claims["exp"] - claims["iat"] == 3
        time.sleep(max(0.0, claims["exp"] + 5 + 1.5 - time.time()))  # past the 5 s of leeway
        reason = "the token has expired"
    elif case == "forged":  # the same claims, signed with another key under the provider's kid
        good = sso.token("ci-bot")
        header = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
        token = jwt.encode(
            {"alg": "RS256", "kid": header["kid"]}, claims_of(good), RSAKey.generate_key(2048)
        )
        reason = "the token's signature does not verify"
    elif case == "wrong-audience":
        token = sso.token("ci-bot", audience="https://another-api.example.com")
        reason = "audience is not this server's"
    elif case == "alg-none":
        token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_of(sso.token('ci-bot')))}."
        reason = "the token's algorithm 'none' is not accepted"
    else:
        token = "not-a-token"
        reason = "the token is not a signed JWT"
    answer = sso.call(token, "POST", "/api/2.0/mlflow/experiments/search", {"max_results": 1})
    assert answer.status_code == 401, answer.text
    assert reason in answer.text
    assert answer.headers["WWW-Authenticate"].startswith(
        'Bearer realm="mlflow", error="invalid_token"'
    )


# --- a group removal, within the bound ---


def test_a_group_removal_reaches_tokens_when_they_expire(sso: SignOnStack) -> None:
    experiment_id = sso.admin().create_experiment(f"team-{uuid.uuid4().hex[:8]}")
    create = {"experiment_id": experiment_id}
    old = sso.token("leaver-bot")
    assert sso.call(old, "POST", "/api/2.0/mlflow/runs/create", create).status_code == 200
    sso.idp.set_groups("leaver-bot", ["visitors"])
    new = sso.token("leaver-bot")
    assert sso.call(new, "POST", "/api/2.0/mlflow/runs/create", create).status_code == 403
    assert sso.roles_of("leaver-bot") == {"sso:visitors"}
    exp = claims_of(old)["exp"]
    time.sleep(max(0.0, exp + 5 + 1.5 - time.time()))
    expired = sso.call(old, "POST", "/api/2.0/mlflow/runs/create", create)
    assert expired.status_code == 401, expired.text


def test_a_group_removal_reaches_the_ui_within_the_session_ttl(
    sso: SignOnStack, browser: Any
) -> None:
    experiment_id = sso.admin().create_experiment(f"ui-{uuid.uuid4().hex[:8]}")
    path = f"/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    sso.idp.set_groups("gina", ["ml-team"])
    sign_in(browser, sso.url + "/", "gina", PASSWORD)
    signed_in_at = time.monotonic()
    assert fetch_json(browser, path)["status"] == 200
    sso.idp.set_groups("gina", ["visitors"])
    time.sleep(max(0.0, SESSION_TTL + 1 - (time.monotonic() - signed_in_at)))
    assert fetch_json(browser, path)["status"] == 401  # the session ended
    browser.get(sso.url + "/")
    wait_until(
        "back from the provider or at its form",
        lambda: (
            (
                browser.current_url.startswith(sso.url)
                and "mlflow_stack_session" in {c["name"] for c in browser.get_cookies()}
            )
            or browser.current_url.startswith(sso.idp.issuer)
        ),
    )
    if browser.current_url.startswith(sso.idp.issuer):
        sign_in(browser, sso.url + "/", "gina", PASSWORD)
    assert fetch_json(browser, path)["status"] == 403  # the groups of this sign-in: visitors
    assert sso.roles_of("gina") == {"sso:visitors"}


# --- the auth database down: answers stay MLflow's JSON ---


def test_tokens_during_a_postgres_outage_get_mlflows_json_errors(sso: SignOnStack) -> None:
    """kill -9 of PostgreSQL while token clients call, among them one whose groups change
    (its user's roles must be written): every error answer is MLflow's JSON, not HTML."""
    import contextlib
    import threading

    experiment_id = sso.admin().create_experiment(f"outage-{uuid.uuid4().hex[:8]}")
    tokens = {name: sso.token(name) for name in ("ci-bot", "reader-bot")}
    answers: list[requests.Response] = []
    stop = threading.Event()

    def client(name: str) -> None:
        body = {"experiment_ids": [experiment_id], "max_results": 5}
        while not stop.is_set():
            with contextlib.suppress(requests.ConnectionError):  # no answer at all
                answers.append(sso.call(tokens[name], "POST", "/api/2.0/mlflow/runs/search", body))
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(name,)) for name in tokens for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        postmaster = sso.live.server("postgres")
        postmaster.kill()
        sso.idp.set_groups("reader-bot", ["ml-team"])  # a new token: its roles change
        tokens["reader-bot"] = sso.token("reader-bot")
        wait_until(
            "PostgreSQL back and the server healthy",
            lambda: (
                (server := sso.live.server("postgres")) is not None
                and server.pid != postmaster.pid
                and requests.get(sso.url + "/health", timeout=5).status_code == 200
            ),
            timeout=60,
        )
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        sso.idp.set_groups("reader-bot", ["analysts"])
    errors = [a for a in answers if a.status_code != 200]
    assert len(answers) > 50
    assert errors, "no request met the outage"  # here: 109 of 307 answers were 503s
    not_json = [
        (a.status_code, a.text[:200])
        for a in errors
        if "json" not in a.headers.get("content-type", "")
    ]
    assert not not_json
    assert all("error_code" in a.json() for a in errors)
    assert {a.status_code for a in errors} <= {503}, [
        (a.status_code, a.text[:300]) for a in errors if a.status_code != 503
    ]
    assert sso.roles_of("reader-bot") == {"sso:ml-team"}  # written once the database was back
