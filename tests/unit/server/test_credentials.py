"""Login hygiene: non-basic credentials, remembered failures, a failure budget per client,
and no delay for credentials that recently succeeded."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest

from mlflow_stack.server.asgi import ASGIApp, Receive, Scope, Send
from mlflow_stack.server.credentials import (
    BURST,
    FAILED_LOGIN_TTL,
    LEAK_PER_SECOND,
    CredentialGuard,
    parse_basic,
)
from tests.unit.server.asgi_harness import Answer, request

GOOD = ("ada", "right-password")


@dataclass
class FakeMlflow:
    """Answers 401 unless the credentials are GOOD; counts password checks."""

    checks: int = 0
    calls: list[dict[str, object]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        self.calls.append({"path": scope["path"], "body": b""})
        raw = dict(scope["headers"]).get(b"authorization")
        self.checks += 1
        ok = raw == basic(*GOOD).encode()
        await send({"type": "http.response.start", "status": 200 if ok else 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def guard(ttl: float = 60.0) -> tuple[CredentialGuard, FakeMlflow, Clock]:
    mlflow, clock = FakeMlflow(), Clock()
    app = CredentialGuard(
        mlflow,
        protected=lambda path: not path.startswith("/health"),
        remember_success=ttl,
        clock=clock,
    )
    return app, mlflow, clock


def login(app: ASGIApp, credentials: tuple[str, str], client: str = "10.0.0.1") -> Answer:
    return request(app, path="/api/2.0/mlflow/experiments/search",
                   headers={"Authorization": basic(*credentials)}, client=client)  # fmt: skip


@pytest.mark.parametrize(
    "value",
    ["Bearer abc.def.ghi", "Digest username=x", "Basic !!!", "Basic ", "Basic Og==", "Token x",
     "Basic " + base64.b64encode(b"no-colon").decode(),
     "Basic " + base64.b64encode(b"\xff:x").decode()],
)  # fmt: skip
def test_anything_but_well_formed_basic_gets_401_without_reaching_mlflow(value: str) -> None:
    app, mlflow, _ = guard()
    answer = request(app, path="/api/2.0/mlflow/runs/get", headers={"Authorization": value})
    assert answer.status == 401
    assert answer.headers[b"www-authenticate"] == b'Basic realm="mlflow"'
    assert b"basic" in answer.body.lower()
    assert mlflow.checks == 0


def test_parse_basic() -> None:
    assert parse_basic(basic("ada", "p:w").encode()) == ("ada", "p:w")
    assert parse_basic(b"basic " + base64.b64encode(b"u:")) == ("u", "")


def test_unprotected_routes_and_requests_without_credentials_pass_through() -> None:
    app, mlflow, _ = guard()
    assert request(app, path="/health", headers={"Authorization": "Bearer x"}).reached_app
    assert request(app, path="/api/2.0/mlflow/runs/get").status == 401  # MLflow's own answer
    assert mlflow.checks == 2


def test_a_repeated_wrong_password_is_checked_once_per_ttl() -> None:
    app, mlflow, clock = guard()
    for _ in range(5):
        assert login(app, ("ada", "wrong")).status == 401
    assert mlflow.checks == 1
    clock.now += FAILED_LOGIN_TTL + 1
    assert login(app, ("ada", "wrong")).status == 401
    assert mlflow.checks == 2


def test_a_client_guessing_passwords_is_slowed_to_the_leak_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, mlflow, clock = guard()
    answers = [login(app, ("ada", f"guess-{i}")).status for i in range(BURST + 5)]
    assert answers == [401] * BURST + [429] * 5
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"10.0.0.1 failed to log in {BURST} times (last as 'ada'): answering 429 to credentials "
        "not seen to succeed until its failures drain"
    ]
    assert mlflow.checks == BURST
    limited = login(app, ("ada", "another-guess"))
    assert limited.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert int(limited.headers[b"retry-after"]) >= 1
    clock.now += 1 / LEAK_PER_SECOND
    assert login(app, ("ada", "guess-after-a-while")).status == 401
    assert mlflow.checks == BURST + 1
    # another client is not affected
    assert login(app, GOOD, client="10.0.0.2").status == 200


def test_credentials_that_succeeded_are_never_limited() -> None:
    app, _, _ = guard()
    assert login(app, GOOD).status == 200
    for i in range(BURST + 5):
        login(app, ("mallory", f"guess-{i}"))  # same address as ada
    assert login(app, GOOD).status == 200


def test_without_a_success_cache_good_credentials_still_pass_but_are_limited_with_the_rest() -> (
    None
):
    app, _, _ = guard(ttl=0)
    assert login(app, GOOD).status == 200
    for i in range(BURST):
        login(app, ("mallory", f"guess-{i}"))
    assert login(app, GOOD).status == 429


def test_only_2xx_teaches_that_credentials_are_good() -> None:
    app, mlflow, _ = guard()

    async def forbidden(scope: Scope, receive: Receive, send: Send) -> None:  # a CORS 403
        await send({"type": "http.response.start", "status": 403, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app.app = forbidden
    for i in range(BURST + 3):
        login(app, ("mallory", f"guess-{i}"))
    app.app = mlflow
    answers = [login(app, ("mallory", f"guess-{i}")).status for i in range(BURST + 3)]
    assert answers.count(429) == 3  # none of the 403'd guesses was taken as a good password
