"""The login check in turns: threads of one worker with the same credentials go through
MLflow's check one at a time, as a Flask app runs them (a real request context, MLflow's
check replaced by a recorder that takes as long as scrypt)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask

from mlflow_stack.server import login


class SlowCheck:
    """Stands for MLflow's check: ``seconds`` per call; records how many ran at once, per
    credential and in all."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.most_overall = 0
        self.calls = 0

    def __call__(self) -> str:
        from flask import request

        name = request.authorization.username if request.authorization else "-"
        with self.lock:
            self.calls += 1
            self.running[name] = self.running.get(name, 0) + 1
            self.most[name] = max(self.most.get(name, 0), self.running[name])
            self.most_overall = max(self.most_overall, sum(self.running.values()))
        time.sleep(self.seconds)
        with self.lock:
            self.running[name] -= 1
        return f"authorized {name}"


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch) -> SlowCheck:
    import mlflow.server.auth

    slow = SlowCheck()
    monkeypatch.setattr(mlflow.server.auth, "authenticate_request_basic_auth", slow)
    return slow


def in_request(app: Flask, headers: dict[str, str]) -> Callable[[Any], str]:
    def call(_: Any) -> str:
        with app.test_request_context("/api/2.0/mlflow/experiments/search", headers=headers):
            return login.authenticate_request()

    return call


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_requests_with_the_same_credentials_take_turns(check: SlowCheck) -> None:
    app = Flask(__name__)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(in_request(app, basic("ada", "pw-1")), range(16)))
    assert answers == ["authorized ada"] * 16  # MLflow's answer, returned as is
    assert check.calls == 16 and check.most["ada"] == 1


def test_other_credentials_do_not_wait_for_them(check: SlowCheck) -> None:
    app = Flask(__name__)
    users = [f"user-{i}" for i in range(64)]
    stripes = {login.stripe(u, "pw") for u in users}
    assert len(stripes) > 16  # spread over the stripes
    distinct = [u for u in users if sum(login.stripe(v, "pw") == login.stripe(u, "pw")
                                        for v in users) == 1][:4]  # fmt: skip
    assert len(distinct) >= 2

    def one(user: str) -> str:
        return in_request(app, basic(user, "pw"))(None)

    with ThreadPoolExecutor(len(distinct)) as pool:
        list(pool.map(one, distinct))
    assert check.most_overall >= 2  # different credentials checked at the same time


def test_requests_without_basic_credentials_go_straight_to_mlflow(check: SlowCheck) -> None:
    app = Flask(__name__)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(in_request(app, {}), range(8)))
    assert answers == ["authorized -"] * 8
    assert check.most["-"] > 1  # no lock: MLflow answers 401 at once, without scrypt


def test_the_stripe_of_a_credential_depends_on_both_parts() -> None:
    assert login.stripe("ada", "a") == login.stripe("ada", "a")
    seen = {login.stripe("ada", f"password-{i}") for i in range(200)}
    assert len(seen) > 32


def test_within_one_request_the_credentials_are_checked_once(check: SlowCheck) -> None:
    app = Flask(__name__)
    with app.test_request_context("/api/2.0/mlflow/runs/get", headers=basic("ada", "pw-1")):
        answers = [login.authenticate_request() for _ in range(4)]  # as MLflow asks, per request
    assert answers == ["authorized ada"] * 4 and check.calls == 1
    with app.test_request_context("/api/2.0/mlflow/runs/get", headers=basic("ada", "pw-1")):
        assert login.authenticate_request() == "authorized ada"
    assert check.calls == 2  # the next request checks again


@pytest.fixture
def stack_store(monkeypatch: pytest.MonkeyPatch) -> Any:
    """MLflow's check with its credential cache, on the stack's auth store (no database: the
    password check passes and the user read is set by each test)."""
    import mlflow.server.auth
    from cachetools import TTLCache

    from mlflow_stack.server.authstore import StackAuthStore

    store = StackAuthStore()
    monkeypatch.setattr(store, "authenticate_user", lambda *args, **kwargs: True)
    monkeypatch.setattr(mlflow.server.auth, "store", store)
    monkeypatch.setattr(mlflow.server.auth, "_USER_AUTH_CACHE", TTLCache(maxsize=10, ttl=60))
    return store


def reading_the_user_fails(monkeypatch: pytest.MonkeyPatch, error_code: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    code = databricks_pb2.ErrorCode.Value(error_code)

    def fails(self: Any, username: str) -> Any:
        raise MlflowException(f"reading {username} failed", error_code=code)

    monkeypatch.setattr(SqlAlchemyStore, "get_user", fails)


def test_the_database_failing_as_the_user_is_read_is_mlflows_503_not_a_401(
    stack_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    reading_the_user_fails(monkeypatch, "TEMPORARILY_UNAVAILABLE")
    app = Flask(__name__)
    with (
        app.test_request_context("/api/2.0/mlflow/runs/get", headers=basic("ada", "pw")),
        pytest.raises(MlflowException) as raised,
    ):
        login.authenticate_request()
    assert raised.value.error_code == "TEMPORARILY_UNAVAILABLE"
    assert raised.value.get_http_status_code() == 503


def test_a_user_deleted_as_it_is_read_is_still_mlflows_401(
    stack_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reading_the_user_fails(monkeypatch, "RESOURCE_DOES_NOT_EXIST")
    app = Flask(__name__)
    with app.test_request_context("/api/2.0/mlflow/runs/get", headers=basic("ada", "pw")):
        answer = login.authenticate_request()
    assert answer.status_code == 401


def test_a_cached_password_with_the_user_unreadable_is_mlflows_503_not_a_401(
    stack_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's credential cache answers the check without the database; its bridge for the
    FastAPI routes then reads the user and answers 401 to any failure. The check reads the user
    itself, so an outage of the auth database is MLflow's 503 there too."""
    import mlflow.server.auth
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.entities import User

    ada = User(id_=7, username="ada", password_hash="-", is_admin=False)
    monkeypatch.setattr(
        type(stack_store).__mro__[1], "get_user", lambda self, username: ada, raising=True
    )
    app = Flask(__name__)
    with app.test_request_context("/api/2.0/mlflow/runs/get", headers=basic("ada", "pw")):
        assert login.authenticate_request().username == "ada"  # MLflow caches the password
    assert len(mlflow.server.auth._USER_AUTH_CACHE) == 1
    assert stack_store.users.peek("ada") == (True, ada)  # the bridge's read finds it kept

    stack_store.forget()  # the kept user expired, and then the database went away
    reading_the_user_fails(monkeypatch, "TEMPORARILY_UNAVAILABLE")
    with (
        app.test_request_context("/api/2.0/mlflow/runs/get", headers=basic("ada", "pw")),
        pytest.raises(MlflowException) as raised,
    ):
        login.authenticate_request()
    assert raised.value.get_http_status_code() == 503


def test_a_cached_password_of_a_user_deleted_meanwhile_is_left_to_mlflow(
    stack_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.auth.entities import User

    ada = User(id_=7, username="ada", password_hash="-", is_admin=False)
    monkeypatch.setattr(type(stack_store).__mro__[1], "get_user", lambda self, username: ada)
    app = Flask(__name__)
    with app.test_request_context("/api/2.0/mlflow/runs/get", headers=basic("ada", "pw")):
        login.authenticate_request()
    stack_store.forget()
    reading_the_user_fails(monkeypatch, "RESOURCE_DOES_NOT_EXIST")
    with app.test_request_context("/api/2.0/mlflow/runs/get", headers=basic("ada", "pw")):
        answer = login.authenticate_request()
    assert answer.username == "ada"  # MLflow's cache answered; its own reads decide the rest


# --- single sign-on: bearer tokens and the session cookie (tests/unit/sso's issuer) ---


class NoStore:
    """The members' check, recorded (the auth store's side: tests/unit/sso/test_roles.py)."""

    def __init__(self) -> None:
        self.ensured: list[Any] = []

    def ensure(self, identity: Any) -> None:
        self.ensured.append(identity)


@pytest.fixture
def signon(issuer: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow_stack.sso import runtime
    from mlflow_stack.sso.runtime import SignOn
    from tests.unit.sso.issuer import config

    signon = SignOn(config(issuer.url))
    signon.members = NoStore()  # type: ignore[assignment]
    monkeypatch.setitem(runtime._INSTALLED, "current", signon)
    return signon


def ask(headers: dict[str, str], path: str = "/api/2.0/mlflow/experiments/search") -> Any:
    with Flask(__name__).test_request_context(path, headers=headers):
        return login.authenticate_request()


def test_a_good_access_token_is_its_user(signon: Any, issuer: Any) -> None:
    answer = ask({"Authorization": f"Bearer {issuer.token()}"})
    assert answer.type == "bearer" and answer.username == "alice"
    assert [i.username for i in signon.members.ensured] == ["alice"]


def test_a_refused_token_is_mlflows_401_with_a_bearer_challenge(signon: Any, issuer: Any) -> None:
    answer = ask({"Authorization": f"Bearer {issuer.token({'aud': 'other'})}"})
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith(
        'Bearer realm="mlflow", error="invalid_token"'
    )
    assert answer.get_data(as_text=True).startswith(
        "You are not authenticated: the token's audience is not this server's"
    )
    assert signon.members.ensured == []


def test_a_token_of_someone_in_no_group_is_403(signon: Any, issuer: Any) -> None:
    answer = ask({"Authorization": f"Bearer {issuer.token({'groups': ['sales']})}"})
    assert answer.status_code == 403
    assert "alice is in none of the groups" in answer.get_data(as_text=True)


def test_a_browser_without_a_session_is_sent_to_sign_in(signon: Any) -> None:
    answer = ask({"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}, path="/")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/auth/login?next=%2F"


def test_api_calls_without_credentials_get_401_without_a_basic_prompt(signon: Any) -> None:
    answer = ask({"Accept": "application/json"}, path="/ajax-api/2.0/mlflow/experiments/search")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="mlflow"'
    assert "You are not authenticated." in answer.get_data(as_text=True)


def test_a_session_cookie_is_its_user(signon: Any) -> None:
    from mlflow_stack.sso.identity import Identity

    carol = Identity("carol", frozenset({"ml-admins"}), admin=True)
    cookie = signon.cookies.session(carol).split(";", 1)[0]
    answer = ask({"Cookie": cookie})
    assert answer.username == "carol"
    assert signon.members.ensured == [carol]


def test_no_keys_and_no_provider_is_mlflows_503(signon: Any, issuer: Any) -> None:
    from mlflow.exceptions import MlflowException

    issuer.down = True
    with pytest.raises(MlflowException) as raised:
        ask({"Authorization": f"Bearer {issuer.token()}"})
    assert raised.value.error_code == "TEMPORARILY_UNAVAILABLE"
    assert raised.value.get_http_status_code() == 503


def test_basic_credentials_still_go_to_mlflows_check(signon: Any, check: SlowCheck) -> None:
    credentials = base64.b64encode(b"admin:the-password").decode()
    assert ask({"Authorization": f"Basic {credentials}"}) == "authorized admin"
    assert check.calls == 1
