"""The ASGI helpers: answers as exactly two messages with a right content-length, MLflow's error
shape, header look-up, and a request body read once (bounded) and replayed to the app behind."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from mlflow.exceptions import RestException

from mlflow_stack.server.asgi import (
    BodyTooLargeError,
    ClientGoneError,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    replay,
    respond,
    respond_error,
)
from tests.unit.server.asgi_harness import EchoApp, request


def sent_by(answer: Any) -> list[dict[str, Any]]:
    """The messages a coroutine function ``answer(send)`` sends, on a real event loop."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(answer(send))
    return sent


def receiving(*messages: dict[str, Any]) -> tuple[Receive, list[dict[str, Any]]]:
    """A receive callable handing out ``messages`` in turn, then a disconnect; and what is left."""
    left = list(messages)

    async def receive() -> dict[str, Any]:
        return left.pop(0) if left else {"type": "http.disconnect"}

    return receive, left


def chunk(body: bytes, *, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


# --- respond, respond_error ---


def test_respond_sends_one_start_and_one_final_body() -> None:
    start, body = sent_by(lambda send: respond(send, 404, b"no such thing"))
    assert start == {
        "type": "http.response.start",
        "status": 404,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"13"),
        ],
    }
    assert body == {"type": "http.response.body", "body": b"no such thing"}
    assert not body.get("more_body", False)  # the response ends here


def test_respond_counts_bytes_not_characters_and_appends_extra_headers() -> None:
    text = "überfüllt".encode()  # 9 characters, 11 bytes
    start, body = sent_by(
        lambda send: respond(
            send, 429, text, b"text/html", headers=[(b"retry-after", b"30"), (b"x-a", b"1")]
        )
    )
    assert start["status"] == 429
    assert start["headers"] == [
        (b"content-type", b"text/html"),
        (b"content-length", b"11"),
        (b"retry-after", b"30"),
        (b"x-a", b"1"),
    ]
    assert body["body"] == text


def test_respond_with_an_empty_body_says_so() -> None:
    start, body = sent_by(lambda send: respond(send, 204, b""))
    assert dict(start["headers"])[b"content-length"] == b"0"
    assert body["body"] == b""


def test_respond_error_is_mlflows_json_error_which_its_client_understands() -> None:
    message = 'run "abc" is gone; see\nthe log'
    start, body = sent_by(
        lambda send: respond_error(
            send, 404, "RESOURCE_DOES_NOT_EXIST", message, headers=[(b"x-request-id", b"7")]
        )
    )
    headers = dict(start["headers"])
    assert start["status"] == 404
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body["body"])).encode()
    assert headers[b"x-request-id"] == b"7"
    parsed = json.loads(body["body"])
    assert parsed == {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": message}
    raised = RestException(parsed)  # what MLflow's client raises from such an answer
    assert raised.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert raised.get_http_status_code() == 404
    assert message in raised.message


# --- header ---


SCOPE: Scope = {
    "type": "http",
    "headers": [
        (b"host", b"mlflow:5000"),
        (b"Authorization", b"Basic first"),
        (b"authorization", b"Basic second"),
        (b"x-empty", b""),
    ],
}


def test_header_finds_the_first_of_a_name_in_any_case() -> None:
    assert header(SCOPE, b"host") == b"mlflow:5000"
    assert header(SCOPE, b"authorization") == b"Basic first"


def test_header_tells_an_empty_value_from_an_absent_one() -> None:
    assert header(SCOPE, b"x-empty") == b""
    assert header(SCOPE, b"cookie") is None
    assert header({"type": "http"}, b"host") is None  # a scope without headers


# --- read_body, replay ---


def test_read_body_joins_the_chunks_and_reads_no_further() -> None:
    after = {"type": "http.request", "body": b"next request?"}
    receive, left = receiving(
        chunk(b"ab", more=True),
        {"type": "http.request", "more_body": True},
        chunk(b"c", more=False),
        after,
    )
    assert asyncio.run(read_body(receive, limit=3)) == b"abc"  # a message without body is b""
    assert left == [after]  # the message after the last chunk is not consumed


def test_a_single_message_without_more_body_is_the_whole_body() -> None:
    receive, _ = receiving({"type": "http.request", "body": b"{}"})
    assert asyncio.run(read_body(receive, limit=10)) == b"{}"


def test_read_body_refuses_one_byte_past_the_limit() -> None:
    receive, left = receiving(
        chunk(b"abc", more=True), chunk(b"d", more=True), chunk(b"", more=False)
    )
    with pytest.raises(BodyTooLargeError):
        asyncio.run(read_body(receive, limit=3))
    assert len(left) == 1  # it stopped at the chunk that crossed the limit


def test_read_body_raises_when_the_client_goes_away() -> None:
    receive, _ = receiving(chunk(b"half of it", more=True))  # then http.disconnect
    with pytest.raises(ClientGoneError):
        asyncio.run(read_body(receive, limit=1000))


def test_replay_gives_the_body_once_then_defers_to_the_real_receive() -> None:
    receive, _ = receiving({"type": "http.disconnect"})

    async def twice() -> list[dict[str, Any]]:
        replayed = replay(b"the body", receive)
        return [await replayed(), await replayed()]

    first, second = asyncio.run(twice())
    assert first == {"type": "http.request", "body": b"the body", "more_body": False}
    assert second == {"type": "http.disconnect"}


class Peek:
    """A middleware built from the helpers, as validation.py and credentials.py use them:
    read the body (at most ``limit`` bytes), then hand it on to the app behind unchanged."""

    def __init__(self, app: EchoApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.seen: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(receive, self.limit)
        except BodyTooLargeError:
            await respond_error(send, 413, "INVALID_PARAMETER_VALUE", "request body too large")
            return
        self.seen.append(body)
        await self.app(scope, replay(body, receive), send)


@pytest.mark.parametrize("size", [1, 4096])
def test_the_app_behind_reads_the_body_the_middleware_read(size: int) -> None:
    body = bytes(range(256)) * 40
    app = Peek(EchoApp(), limit=len(body))
    answer = request(app, "POST", "/api/2.0/mlflow/runs/log-batch", body=body, chunk=size)
    assert answer.status == 200
    assert answer.reached_app
    assert app.seen == [body]
    assert answer.app_received == body


def test_a_body_over_the_limit_never_reaches_the_app() -> None:
    app = Peek(EchoApp(), limit=100)
    answer = request(app, "POST", "/api/2.0/mlflow/runs/log-batch", body=b"x" * 101, chunk=50)
    assert answer.status == 413
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert not answer.reached_app
