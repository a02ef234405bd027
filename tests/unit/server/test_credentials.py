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


# -- one login check at a time per credential --------------------------------------------------


@dataclass
class SlowMlflow:
    """Checks a password in ``seconds`` (as scrypt does), remembering good ones as MLflow's
    cache does; records how many checks ran at once."""

    seconds: float = 0.05
    status: int = 200
    checks: int = 0
    running: int = 0
    most_at_once: int = 0
    remembered: bool = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import asyncio

        await receive()
        if not self.remembered:
            self.checks += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            await asyncio.sleep(self.seconds)
            self.running -= 1
            self.remembered = self.status != 401
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def together(app: ASGIApp, count: int) -> list[int]:
    """``count`` requests with the same new credentials at once, in one event loop."""
    import asyncio

    async def one() -> int:
        sent: list[dict[str, object]] = []
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, object]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/api/2.0/mlflow/experiments/search",
                 "query_string": b"", "client": ("10.0.0.9", 1),
                 "headers": [(b"authorization", basic(*GOOD).encode())]}  # fmt: skip
        await app(scope, receive, send)
        return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))

    async def all_of_them() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(count))))

    return asyncio.run(all_of_them())


def test_clients_starting_together_cost_one_password_check() -> None:
    mlflow = SlowMlflow()
    app = CredentialGuard(mlflow, protected=lambda path: True, remember_success=60.0)
    assert together(app, 64) == [200] * 64  # every one answered by MLflow itself
    assert mlflow.checks == 1 and mlflow.most_at_once == 1


def test_a_refused_first_login_answers_the_waiting_ones_without_more_checks() -> None:
    mlflow = SlowMlflow(status=401)
    app = CredentialGuard(mlflow, protected=lambda path: True, remember_success=60.0)
    assert together(app, 8) == [401] * 8
    assert mlflow.checks == 1


def test_a_first_request_that_takes_long_holds_the_others_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow_stack.server import credentials

    monkeypatch.setattr(credentials, "SINGLE_FLIGHT_WAIT", 0.05)
    mlflow = SlowMlflow(seconds=0.5)  # an upload: its answer starts when the body is stored
    app = CredentialGuard(mlflow, protected=lambda path: True, remember_success=60.0)
    import time

    began = time.monotonic()
    assert together(app, 3) == [200] * 3
    assert time.monotonic() - began < 1.4  # not 3 x 0.5 s in a row
    assert mlflow.most_at_once >= 2  # after the wait they went on


def test_with_single_sign_on_bearer_tokens_go_on_to_the_login_check() -> None:
    mlflow = FakeMlflow()
    app = CredentialGuard(
        mlflow, protected=lambda path: True, remember_success=60.0, bearer_tokens=True
    )
    answer = request(
        app, path="/api/2.0/mlflow/runs/get", headers={"Authorization": "Bearer a.b.c"}
    )
    assert answer.reached_app  # MLflow's 401 here: the fake knows basic only
    for _ in range(3 * BURST):  # refused tokens are not failed logins: no 429
        assert request(app, path="/x", headers={"Authorization": "Bearer bad"}).status == 401
    assert mlflow.checks == 1 + 3 * BURST
    other = request(app, path="/x", headers={"Authorization": "Digest username=x"})
    assert other.status == 401 and not other.reached_app
