"""Drive one ASGI app with one HTTP request, as uvicorn would, and record what happened."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    reached_app: bool  # did the request get past the middleware to the app behind it?
    app_received: bytes = b""
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # repeats kept

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class EchoApp:
    """Stands for MLflow: records what it received and answers ``status``."""

    status: int = 200
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls.append({"path": scope["path"], "body": body})
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"from the app"})


def request(
    app: Any,
    method: str = "GET",
    path: str = "/",
    *,
    query: bytes = b"",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    client: str = "127.0.0.1",
    chunk: int = 0,
) -> Answer:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()],
        "client": (client, 40000),
    }
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else []
    pieces = pieces or [body]
    messages = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]
    sent: list[dict[str, Any]] = []
    inner = app
    while hasattr(inner, "app"):
        inner = inner.app
    calls_before = len(getattr(inner, "calls", []))

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    calls = getattr(inner, "calls", [])
    reached = len(calls) > calls_before
    return Answer(
        status=start["status"],
        headers=dict(start.get("headers", [])),
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        reached_app=reached,
        app_received=calls[-1]["body"] if reached else b"",
        raw_headers=list(start.get("headers", [])),
    )
