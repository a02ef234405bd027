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
