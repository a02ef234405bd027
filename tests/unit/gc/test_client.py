"""The command line's side of gc: intervals, where the server is and as whom, the loop over
batches, every answer of a real HTTP server on a loopback port as one line, and the loop of
`gc --every`."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.gc import ENDPOINT
from mlflow_stack.gc import client as gc_client
from mlflow_stack.gc.client import Server, collect, parse_interval, run_forever
from mlflow_stack.gc.collector import Summary

# --- intervals ---


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800)]
)
def test_intervals(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "0h", "1w", "-1h", "1.5h"])
def test_bad_intervals(text: str) -> None:
    with pytest.raises(ValueError, match="is not an interval such as"):
        parse_interval(text)


def test_an_interval_may_have_spaces_around_it() -> None:
    assert parse_interval(" 12h ") == 43200


# --- where the server is, and as whom ---


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


def test_the_uri_given_wins_and_tls_follows_mlflows_variables() -> None:
    environ = {
        "MLFLOW_TRACKING_URI": "https://not-this.example.com",
        "MLFLOW_TRACKING_SERVER_CERT_PATH": "/etc/ssl/mlflow.pem",
    }
    server = Server.from_environment(environ, "https://mlflow.internal:8443/")
    assert (server.uri, server.verify) == ("https://mlflow.internal:8443", "/etc/ssl/mlflow.pem")
    insecure = {**environ, "MLFLOW_TRACKING_INSECURE_TLS": "TRUE"}
    assert Server.from_environment(insecure).verify is False


def test_an_ipv6_host_is_bracketed_and_a_wildcard_becomes_loopback() -> None:
    assert Server.from_environment({"MLFLOW_STACK_HOST": "::1"}).uri == "http://[::1]:5000"
    assert Server.from_environment({"MLFLOW_STACK_HOST": "::"}).uri == "http://127.0.0.1:5000"


def test_a_half_given_login_falls_back_to_the_admins_half() -> None:
    server = Server.from_environment(
        {
            "MLFLOW_TRACKING_URI": "http://h",
            "MLFLOW_TRACKING_USERNAME": "ops",
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password",
            "MLFLOW_TRACKING_PASSWORD": "",
        }
    )
    assert (server.username, server.password) == ("ops", "admin-password")


# --- the loop over batches ---


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


# --- a real HTTP server ---


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    hang: bool = False  # answer nothing until the test ends


@dataclass
class Loopback:
    """A gc endpoint on 127.0.0.1: answers in order, and the requests it got."""

    url: str
    answers: list[Answer] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    state = Loopback("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.requests.append(
                {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "json": json.loads(self.rfile.read(length) or b"null"),
                }
            )
            answer = state.answers.pop(0) if state.answers else Answer()
            if answer.hang:
                state.released.wait(10)
                return
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        state.released.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _summary(**fields: Any) -> Answer:
    return Answer(body=json.dumps(Summary(False, 7, 1, **fields).as_dict()).encode())


def test_batches_are_posted_as_json_with_the_login_until_no_token_is_left(
    loopback: Loopback,
) -> None:
    loopback.answers += [
        _summary(runs=["a"], objects=1, bytes=4, next_page_token="t1"),
        _summary(experiments=["3"], skipped=["s3://other/x (not in the bucket)"]),
    ]
    seen: list[Summary] = []
    total = collect(Server(loopback.url, "ops", "pw"), 7.5, dry_run=True, on_batch=seen.append)
    assert [r["path"] for r in loopback.requests] == [ENDPOINT, ENDPOINT]
    assert [r["json"] for r in loopback.requests] == [
        {"older_than_days": 7.5, "dry_run": True},
        {"older_than_days": 7.5, "dry_run": True, "page_token": "t1"},
    ]
    login = "Basic " + base64.b64encode(b"ops:pw").decode()
    assert {r["authorization"] for r in loopback.requests} == {login}
    assert len(seen) == 2 and seen[1].experiments == ["3"]
    assert (total.runs, total.experiments, total.objects) == (["a"], ["3"], 1)
    assert total.skipped == ["s3://other/x (not in the bucket)"]
    assert total.next_page_token is None


def test_each_batch_handed_to_on_batch_stays_as_it_was(loopback: Loopback) -> None:
    loopback.answers += [_summary(runs=["a"], next_page_token="t1"), _summary(runs=["b"])]
    seen: list[Summary] = []
    collect(Server(loopback.url, "ops", "pw"), 7, on_batch=seen.append)
    assert [(s.runs, s.next_page_token) for s in seen] == [(["a"], "t1"), (["b"], None)]


def test_the_modules_the_package_docstring_names_exist() -> None:
    import importlib.util

    import mlflow_stack.gc

    named = re.findall(r":mod:`([\w.]+)`", mlflow_stack.gc.__doc__ or "")
    assert ".client" in named and "mlflow_stack.server.gc_endpoint" in named
    missing = [m for m in named if importlib.util.find_spec(m, "mlflow_stack.gc") is None]
    assert missing == []


def test_without_a_whole_login_no_credentials_are_sent(loopback: Loopback) -> None:
    gc_client._post(Server(loopback.url, "ops", None), {})
    gc_client._post(Server(loopback.url, None, "pw"), {})
    assert [r["authorization"] for r in loopback.requests] == [None, None]


@pytest.mark.parametrize(
    ("answer", "server", "line"),
    [
        (Answer(401, b""), Server("", None, None), "{uri} requires a login: set "),
        (Answer(401, b""), Server("", "ops", "pw"), "{uri} refused the login of 'ops': wrong"),
        (
            Answer(403, b'{"error_code": "PERMISSION_DENIED", "message": "only an admin"}'),
            Server("", "ops", "pw"),
            "{uri} refused gc: only an admin$",
        ),
        (
            Answer(404, b"<!doctype html>\n<title>404 Not Found</title>", "text/html"),
            Server("", "ops", "pw"),
            "{uri} has no gc endpoint: is it an mlflow-stack server[?]$",
        ),
        (
            Answer(409, b'{"error_code": "RESOURCE_CONFLICT", "message": "another gc"}'),
            Server("", "ops", "pw"),
            "{uri} answered HTTP 409: another gc$",
        ),
        (
            Answer(502, b"Bad Gateway\nnginx", "text/plain"),
            Server("", "ops", "pw"),
            "{uri} answered HTTP 502: Bad Gateway$",
        ),
        (Answer(503, b"", "text/plain"), Server("", "ops", "pw"), "{uri} answered HTTP 503: no "),
        (
            Answer(200, b"<html>a login page</html>", "text/html"),
            Server("", "ops", "pw"),
            "{uri}/api/2.0/mlflow-stack/gc answered 200 with something that is not JSON$",
        ),
    ],
    ids=["no-login", "wrong-login", "403", "404", "409", "502", "503-empty", "200-html"],
)
def test_every_refusal_of_the_server_is_one_line(
    loopback: Loopback, answer: Answer, server: Server, line: str
) -> None:
    loopback.answers.append(answer)
    server = Server(loopback.url, server.username, server.password)
    with pytest.raises(StackError) as refused:
        gc_client._post(server, {"older_than_days": 1})
    message = str(refused.value)
    assert "\n" not in message
    assert re.match(line.format(uri=re.escape(loopback.url)), message), message


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


def test_a_server_that_does_not_answer_in_time_is_one_line(loopback: Loopback) -> None:
    loopback.answers.append(Answer(hang=True))
    server = Server(loopback.url, "a", "b", timeout=0.3)
    with pytest.raises(StackError, match=rf"^{loopback.url} did not answer within 0\.3 s$"):
        gc_client._post(server, {})


def test_https_to_a_plain_http_server_is_a_tls_failure_in_one_line(loopback: Loopback) -> None:
    uri = loopback.url.replace("http://", "https://")
    with pytest.raises(StackError) as refused:
        gc_client._post(Server(uri, "a", "b", timeout=5), {})
    message = str(refused.value)
    assert message.startswith(f"TLS to {uri} failed: ")
    assert "\n" not in message


# --- gc --every ---


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


def test_a_failure_is_logged_with_the_next_try(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def once() -> None:
        calls.append(1)
        raise StackError("cannot reach the MLflow server at http://h: Connection refused")

    def sleep(seconds: float) -> None:
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_forever(once, 3600, sleep=sleep)
    assert (
        caplog.messages
        == [
            "error: cannot reach the MLflow server at http://h: Connection refused "
            "(next try in 3600 s)"
        ]
        * 2
    )


def test_an_unexpected_error_ends_the_loop() -> None:
    def once() -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_forever(once, 60, sleep=lambda s: pytest.fail("slept after a bug"))
