"""``POST /api/2.0/mlflow-stack/gc``: request checks, the admin-only login (a stand-in for
MLflow's basic-auth check), the answers in MLflow's error JSON, and the collector it drives (a
stand-in recording its calls; the real one is tested in tests/unit/gc/test_collector.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from mlflow_stack.gc import ENDPOINT
from mlflow_stack.gc.collector import GCBusyError, Summary
from mlflow_stack.server.gc_endpoint import MAX_BODY, GarbageCollectionEndpoint, Request, log
from tests.unit.server.asgi_harness import EchoApp, request

# --- the request ---


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{", "the request body is not JSON"),
        (b"[]", "the request body must be a JSON object"),
        (b"{}", "older_than_days is required"),
        (b'{"older_than_days": "30"}', "older_than_days is required"),
        (b'{"older_than_days": true}', "older_than_days is required"),
        (b'{"older_than_days": -1}', "older_than_days must be between 0 and 36500"),
        (b'{"older_than_days": 1, "dry_run": "yes"}', "dry_run must be true or false"),
        (b'{"older_than_days": 1, "page_token": 5}', "page_token must be a string"),
        (b'{"older_than_days": 1, "max_items": 0}', "max_items must be a whole number"),
        (b'{"older_than_days": 1, "max_items": 501}', "max_items must be a whole number"),
        (b'{"older_than_days": 1, "older_than": 2}', "unknown field 'older_than'"),
    ],
)
def test_bad_requests_are_named(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Request.parse(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"older_than_days": 36501}',
        b'{"older_than_days": NaN}',
        b'{"older_than_days": 1, "max_items": 2.0}',
        b'{"older_than_days": 1, "max_items": true}',
        b'{"older_than_days": 1, "dry_run": 1}',
        b"\xff",
    ],
    ids=["too-old", "nan", "float-items", "bool-items", "int-dry-run", "not-utf8"],
)
def test_values_outside_the_contract_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"older_than_days|max_items|dry_run|not JSON"):
        Request.parse(body)


def test_a_good_request_is_parsed() -> None:
    parsed = Request.parse(b'{"older_than_days": 7, "dry_run": true, "page_token": "t"}')
    assert (parsed.older_than_days, parsed.dry_run, parsed.page_token) == (7.0, True, "t")
    assert parsed.max_items == 500


def test_the_limits_themselves_are_accepted_and_an_empty_token_is_none() -> None:
    parsed = Request.parse(b'{"older_than_days": 0, "page_token": "", "max_items": 1}')
    assert (parsed.older_than_days, parsed.dry_run, parsed.page_token, parsed.max_items) == (
        0.0,
        False,
        None,
        1,
    )
    assert Request.parse(b'{"older_than_days": 36500, "max_items": 500}').max_items == 500
    assert Request.parse(b'{"older_than_days": 0.25}').older_than_days == 0.25


# --- the endpoint ---


class FakeCollector:
    def __init__(self, error: Exception | None = None, token: str | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error
        self.token = token

    def collect(self, older_than_days: float, **options: Any) -> Summary:
        self.calls.append({"older_than_days": older_than_days, **options})
        if self.error:
            raise self.error
        return Summary(
            options["dry_run"],
            older_than_days,
            1,
            runs=["r1"],
            objects=2,
            bytes=30,
            next_page_token=self.token,
        )


USERS = {
    ("admin", "admin-password"): SimpleNamespace(is_admin=True),
    ("analyst", "analyst-password"): SimpleNamespace(is_admin=False),
}


def endpoint(collector: FakeCollector) -> GarbageCollectionEndpoint:
    return GarbageCollectionEndpoint(
        EchoApp(), lambda: collector, authenticate=lambda u, p: USERS.get((u, p))
    )


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = basic("admin", "admin-password")


def test_other_paths_pass_through_untouched() -> None:
    answer = request(endpoint(FakeCollector()), "POST", "/api/2.0/mlflow/runs/search", body=b"{}")
    assert answer.reached_app and answer.body == b"from the app"


def test_a_neighbouring_path_is_not_the_endpoint() -> None:
    answer = request(endpoint(FakeCollector()), "POST", ENDPOINT + "/", headers=ADMIN, body=b"{}")
    assert answer.reached_app


def test_an_admin_gets_the_summary_of_a_batch() -> None:
    collector = FakeCollector()
    body = json.dumps({"older_than_days": 7, "dry_run": True}).encode()
    answer = request(endpoint(collector), "POST", ENDPOINT, headers=ADMIN, body=body)
    assert answer.status == 200 and not answer.reached_app
    assert answer.json()["runs"] == ["r1"] and answer.json()["bytes"] == 30
    assert collector.calls == [
        {"older_than_days": 7.0, "dry_run": True, "page_token": None, "max_items": 500}
    ]


def test_the_whole_summary_is_the_answer_with_the_token_and_options_passed_on() -> None:
    collector = FakeCollector(token="next")
    body = b'{"older_than_days": 30, "page_token": "t", "max_items": 3}'
    answer = request(endpoint(collector), "POST", ENDPOINT, headers=ADMIN, body=body, chunk=7)
    assert answer.headers[b"content-type"] == b"application/json"
    assert answer.json() == Summary(False, 30.0, 1, ["r1"], [], 2, 30, [], [], "next").as_dict()
    assert collector.calls == [
        {"older_than_days": 30.0, "dry_run": False, "page_token": "t", "max_items": 3}
    ]


def test_each_batch_is_logged_with_who_asked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=log.name):
        request(
            endpoint(FakeCollector(token="next")),
            "POST",
            ENDPOINT,
            headers=ADMIN,
            body=b'{"older_than_days": 7}',
        )
    assert caplog.messages == [
        "gc deleted 1 run and 0 experiments deleted more than 7 days ago, with 2 objects "
        "(30 bytes) (by admin); more in the next batch"
    ]


def test_the_collector_is_made_on_the_first_admin_request_and_kept() -> None:
    made: list[FakeCollector] = []

    def make() -> FakeCollector:
        made.append(FakeCollector())
        return made[-1]

    app = GarbageCollectionEndpoint(EchoApp(), make, authenticate=lambda u, p: USERS.get((u, p)))
    request(app, "POST", ENDPOINT, headers=basic("admin", "wrong"), body=b'{"older_than_days": 1}')
    request(app, "POST", ENDPOINT, headers=ADMIN, body=b'{"older_than_days": -1}')
    assert made == []  # refused requests never reach the storage
    for _ in range(2):
        answer = request(app, "POST", ENDPOINT, headers=ADMIN, body=b'{"older_than_days": 1}')
        assert answer.status == 200
    assert len(made) == 1 and len(made[0].calls) == 2


@pytest.mark.parametrize(
    ("method", "headers", "body", "status", "code"),
    [
        ("GET", basic("admin", "admin-password"), b"", 405, "BAD_REQUEST"),
        ("POST", {}, b'{"older_than_days": 1}', 401, None),
        ("POST", {"Authorization": "Bearer x"}, b'{"older_than_days": 1}', 401, None),
        ("POST", basic("admin", "wrong"), b'{"older_than_days": 1}', 401, None),
        ("POST", basic("analyst", "analyst-password"), b'{"older_than_days": 1}', 403, None),
        ("POST", basic("admin", "admin-password"), b'{"older_than_days": -3}', 400, None),
    ],
)
def test_refusals(
    method: str, headers: dict[str, str], body: bytes, status: int, code: Any
) -> None:
    collector = FakeCollector()
    answer = request(endpoint(collector), method, ENDPOINT, headers=headers, body=body)
    assert answer.status == status
    assert collector.calls == []
    if status == 401:
        assert answer.headers[b"www-authenticate"] == b'Basic realm="mlflow"'
    elif status == 403:
        assert answer.json() == {
            "error_code": "PERMISSION_DENIED",
            "message": "only an admin may run gc ('analyst' is not)",
        }
    else:
        assert answer.json()["error_code"] == (code or "INVALID_PARAMETER_VALUE")


def test_a_get_is_told_to_post() -> None:
    answer = request(endpoint(FakeCollector()), "GET", ENDPOINT, headers=ADMIN)
    assert answer.headers[b"allow"] == b"POST"
    assert answer.json()["message"] == f"{ENDPOINT} takes POST"


def test_a_body_past_the_limit_is_refused_unread() -> None:
    collector = FakeCollector()
    body = b'{"older_than_days": 1, "page_token": "' + b"x" * MAX_BODY + b'"}'
    answer = request(endpoint(collector), "POST", ENDPOINT, headers=ADMIN, body=body, chunk=4096)
    assert (answer.status, answer.json()) == (
        413,
        {"error_code": "INVALID_PARAMETER_VALUE", "message": "the request body is too large"},
    )
    assert collector.calls == []


def test_a_client_gone_before_its_body_arrived_gets_no_answer() -> None:
    collector = FakeCollector()
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": ENDPOINT,
        "headers": [(b"authorization", ADMIN["Authorization"].encode())],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(endpoint(collector)(scope, receive, send))
    assert sent == [] and collector.calls == []


def test_other_kinds_of_connection_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    gc = GarbageCollectionEndpoint(app, FakeCollector, authenticate=lambda u, p: None)
    asyncio.run(gc({"type": "lifespan"}, None, None))
    asyncio.run(gc({"type": "websocket", "path": ENDPOINT}, None, None))
    assert seen == ["lifespan", "websocket"]


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (GCBusyError("another gc is running"), 409, "RESOURCE_CONFLICT"),
        (
            ValueError("page_token is not a token this server returned"),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
    ],
)
def test_collector_refusals_become_mlflow_errors(error: Exception, status: int, code: str) -> None:
    answer = request(
        endpoint(FakeCollector(error)),
        "POST",
        ENDPOINT,
        headers=basic("admin", "admin-password"),
        body=b'{"older_than_days": 1}',
    )
    assert (answer.status, answer.json()) == (status, {"error_code": code, "message": str(error)})
