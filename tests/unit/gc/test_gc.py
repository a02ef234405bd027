"""The pieces of `mlflow-stack gc` that need no server: locations, page tokens, request checks,
the endpoint's answers (with a stand-in login check and collector), the client's loop and its
one-line errors, the interval loop."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.gc import ENDPOINT
from mlflow_stack.gc import client as gc_client
from mlflow_stack.gc.client import Server, collect, parse_interval, run_forever
from mlflow_stack.gc.collector import GCBusyError, Position, Summary
from mlflow_stack.gc.locations import Destination, overlaps
from mlflow_stack.server.gc_endpoint import GarbageCollectionEndpoint, Request
from tests.unit.server.asgi_harness import EchoApp, request

BUCKET = Destination("mlflow")


@pytest.mark.parametrize(
    ("uri", "prefix"),
    [
        ("mlflow-artifacts:/3/abc/artifacts", "3/abc/artifacts/"),
        ("mlflow-artifacts:/3", "3/"),
        ("mlflow-artifacts://mlflow:5000/3/abc/artifacts", "3/abc/artifacts/"),
        ("mlflow-artifacts:/3/../../etc", "etc/"),  # '..' cannot climb out of the bucket
        ("s3://mlflow/7/run/artifacts", "7/run/artifacts/"),
        ("s3://other-bucket/7/run/artifacts", None),
        ("file:///tmp/mlruns/7", None),
        ("/tmp/mlruns/7", None),
        ("mlflow-artifacts:/", None),  # the whole bucket: never
        ("mlflow-artifacts:/..", None),
        ("s3://mlflow", None),
        ("", None),
        (None, None),
    ],
)
def test_artifact_uris_resolve_to_a_prefix_in_the_bucket_or_to_none(
    uri: str | None, prefix: str | None
) -> None:
    assert BUCKET.prefix_of(uri) == prefix


def test_a_destination_with_a_path_keeps_proxied_uris_under_it() -> None:
    destination = Destination.parse("s3://mlflow/artifacts")
    assert destination == Destination("mlflow", "artifacts/")
    assert destination.prefix_of("mlflow-artifacts:/3/r/artifacts") == "artifacts/3/r/artifacts/"
    assert destination.prefix_of("s3://mlflow/elsewhere/3") is None
    assert destination.prefix_of("mlflow-artifacts:/") is None
    with pytest.raises(ValueError, match="not an s3://bucket"):
        Destination.parse("file:///tmp")


def test_prefixes_overlap_only_along_directories() -> None:
    assert overlaps("3/", "3/run/artifacts/")
    assert overlaps("shared/", "shared/")
    assert not overlaps("3/", "30/")
    assert not overlaps("3/", "3-sibling/")


def test_page_tokens_round_trip_and_strangers_are_refused() -> None:
    position = Position(1_700_000_000_000, "experiments", (1_699_000_000_000, "12"))
    assert Position.from_token(position.token()) == position
    assert Position.from_token(Position(5).token()) == Position(5, "runs", None)
    forged = base64.urlsafe_b64encode(b'{"cutoff_ms": 1, "phase": "models", "after": null}')
    for token in ("not-base64!", base64.urlsafe_b64encode(b"[]").decode(), forged.decode()):
        with pytest.raises(ValueError, match="page_token is not a token this server returned"):
            Position.from_token(token)


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


def test_a_good_request_is_parsed() -> None:
    parsed = Request.parse(b'{"older_than_days": 7, "dry_run": true, "page_token": "t"}')
    assert (parsed.older_than_days, parsed.dry_run, parsed.page_token) == (7.0, True, "t")
    assert parsed.max_items == 500


class FakeCollector:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error

    def collect(self, older_than_days: float, **options: Any) -> Summary:
        self.calls.append({"older_than_days": older_than_days, **options})
        if self.error:
            raise self.error
        return Summary(options["dry_run"], older_than_days, 1, runs=["r1"], objects=2, bytes=30)


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


def test_other_paths_pass_through_untouched() -> None:
    answer = request(endpoint(FakeCollector()), "POST", "/api/2.0/mlflow/runs/search", body=b"{}")
    assert answer.reached_app and answer.body == b"from the app"


def test_an_admin_gets_the_summary_of_a_batch() -> None:
    collector = FakeCollector()
    body = json.dumps({"older_than_days": 7, "dry_run": True}).encode()
    answer = request(
        endpoint(collector), "POST", ENDPOINT, headers=basic("admin", "admin-password"), body=body
    )
    assert answer.status == 200 and not answer.reached_app
    assert answer.json()["runs"] == ["r1"] and answer.json()["bytes"] == 30
    assert collector.calls == [
        {"older_than_days": 7.0, "dry_run": True, "page_token": None, "max_items": 500}
    ]


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


def test_the_client_follows_page_tokens_and_sums_the_batches(monkeypatch: Any) -> None:
    pages = [
        Summary(False, 7, 1, runs=["a"], objects=2, bytes=10, next_page_token="t1").as_dict(),
        Summary(False, 7, 1, experiments=["3"], runs=["b"], objects=1, bytes=5).as_dict(),
    ]
    sent: list[dict[str, Any]] = []

    def post(server: Server, document: dict[str, Any]) -> dict[str, Any]:
        sent.append(document)
        return pages.pop(0)

    monkeypatch.setattr(gc_client, "_post", post)
    total = collect(Server("http://h", "admin", "pw"), 7)
    assert sent == [
        {"older_than_days": 7, "dry_run": False},
        {"older_than_days": 7, "dry_run": False, "page_token": "t1"},
    ]
    assert (total.runs, total.experiments, total.objects, total.bytes) == (["a", "b"], ["3"], 3, 15)
    assert total.next_page_token is None
    assert total.describe() == (
        "gc deleted 2 runs and 1 experiment deleted more than 7 days ago, with 3 objects (15 bytes)"
    )


def test_the_client_takes_mlflows_variables_else_the_local_server_and_admin() -> None:
    client_side = Server.from_environment(
        {
            "MLFLOW_TRACKING_URI": "https://mlflow.example.com/",
            "MLFLOW_TRACKING_USERNAME": "ops",
            "MLFLOW_TRACKING_PASSWORD": "pw",
            "MLFLOW_AUTH_ADMIN_PASSWORD": "not-this-one",
        }
    )
    assert client_side == Server("https://mlflow.example.com", "ops", "pw")
    on_host = Server.from_environment(
        {
            "MLFLOW_STACK_PORT": "5123",
            "MLFLOW_AUTH_ADMIN_USERNAME": "root-admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": "secret",
            "MLFLOW_TRACKING_INSECURE_TLS": "true",
        }
    )
    assert on_host == Server("http://127.0.0.1:5123", "root-admin", "secret", verify=False)
    assert Server.from_environment({}, "http://h:1").username is None
    with pytest.raises(StackError, match="not an http:// or https:// server URL"):
        Server.from_environment({"MLFLOW_TRACKING_URI": "databricks"})
    in_container = Server.from_environment({"MLFLOW_STACK_HOST": "0.0.0.0"})
    assert in_container.uri == "http://127.0.0.1:5000"
    assert Server.from_environment({"MLFLOW_STACK_HOST": "10.0.0.5"}).uri == "http://10.0.0.5:5000"
    with pytest.raises(StackError, match="MLFLOW_STACK_PORT='99999' must be a TCP port"):
        Server.from_environment({"MLFLOW_STACK_PORT": "99999"})


@pytest.mark.parametrize(
    ("server", "status", "message", "line"),
    [
        (Server("http://h", None, None), 401, "", "http://h requires a login: set"),
        (Server("http://h", "ops", "pw"), 401, "", "http://h refused the login of 'ops'"),
        (Server("http://h", "ops", "pw"), 403, "only an admin", "http://h refused gc: only an"),
        (Server("http://h", "ops", "pw"), 404, "", "http://h has no gc endpoint"),
        (Server("http://h", "ops", "pw"), 409, "busy", "http://h answered HTTP 409: busy"),
    ],
)
def test_refusals_read_as_one_line(server: Server, status: int, message: str, line: str) -> None:
    text = gc_client._refusal(server, status, message)
    assert text.startswith(line) and "\n" not in text


def test_an_unreachable_server_is_one_line() -> None:
    with pytest.raises(
        StackError,
        match=r"^cannot reach the MLflow server at http://127\.0\.0\.1:9: Connection refused$",
    ):
        gc_client._post(Server("http://127.0.0.1:9", "a", "b", timeout=5), {})


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800)]
)
def test_intervals(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "0h", "1w", "-1h", "1.5h"])
def test_bad_intervals(text: str) -> None:
    with pytest.raises(ValueError, match="is not an interval such as"):
        parse_interval(text)


def test_the_loop_goes_on_after_a_failure_and_the_health_file_follows_the_last_result(
    tmp_path: Path,
) -> None:
    health = tmp_path / "gc-ok"
    results = [None, StackError("down"), None]
    seen: list[bool] = []

    def once() -> None:
        result = results.pop(0)
        if result:
            raise result

    def sleep(seconds: float) -> None:
        assert seconds == 60
        seen.append(health.exists())
        if not results:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_forever(once, 60, health, sleep=sleep)
    assert seen == [True, False, True]
