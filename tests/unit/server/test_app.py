"""The stack's app wrapper: server-info advertises no direct-to-S3 transfers; nothing else
changes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mlflow_stack.server.app import ProxiedArtifactsOnly

INFO = {
    "store_type": "SqlStore",
    "multipart_uploads_enabled": True,
    "multipart_downloads_enabled": True,
    "workspaces_enabled": False,
}


async def mlflow_like_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = json.dumps(INFO).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body[:10], "more_body": True})
    await send({"type": "http.response.body", "body": body[10:]})


def call(path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    app = ProxiedArtifactsOnly(mlflow_like_app)
    asyncio.run(app({"type": "http", "path": path, "method": "GET"}, receive, send))
    return sent


def test_server_info_advertises_proxied_transfers_only() -> None:
    for path in ("/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"):
        start, body = call(path)
        info = json.loads(body["body"])
        assert info == {**INFO, "multipart_uploads_enabled": False,
                        "multipart_downloads_enabled": False}  # fmt: skip
        headers = dict(start["headers"])
        assert headers[b"content-length"] == str(len(body["body"])).encode()
        assert headers[b"content-type"] == b"application/json"


def test_other_paths_pass_through_untouched() -> None:
    messages = call("/api/2.0/mlflow/experiments/search")
    assert len(messages) == 3
    assert json.loads(messages[1]["body"] + messages[2]["body"]) == INFO


def test_create_app_freezes_the_startup_heap_and_wraps_mlflow_in_the_stacks_layers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    import mlflow.server.auth

    from mlflow_stack.server import app as stack_app
    from mlflow_stack.server.credentials import CredentialGuard
    from mlflow_stack.server.gc_endpoint import GarbageCollectionEndpoint
    from mlflow_stack.server.health import HealthCheck
    from mlflow_stack.server.hosts import HostCheck
    from mlflow_stack.server.metrics import RequestMetrics
    from mlflow_stack.server.validation import RequestValidator
    from tests.conftest import WITH_S3

    monkeypatch.setattr(mlflow.server.auth, "create_app", lambda: mlflow_like_app)
    for name, value in {**WITH_S3, "MLFLOW_STACK_ARTIFACT_PRESIGNED_URLS": "true"}.items():
        monkeypatch.setenv(name, value)
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        app = stack_app.create_app()
        assert gc.get_freeze_count() > 0  # MLflow's modules are out of the collector's way
    finally:
        gc.unfreeze()
    layers = []
    while hasattr(app, "app"):
        layers.append(type(app))
        app = app.app
    assert layers == [
        RequestMetrics,
        HostCheck,
        HealthCheck,
        RequestValidator,
        CredentialGuard,
        GarbageCollectionEndpoint,
    ]
    assert app is mlflow_like_app  # presigned URLs allowed: server-info left alone


def test_an_mlflow_error_before_the_handler_is_mlflows_json_not_flasks_html() -> None:
    from flask import Flask
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    from mlflow_stack.server.app import answer_mlflow_errors

    app = Flask(__name__)

    @app.before_request
    def database_down() -> None:
        raise MlflowException("could not connect", error_code=TEMPORARILY_UNAVAILABLE)

    @app.route("/api/2.0/mlflow/runs/get")
    def never() -> str:
        return "unreachable"

    answer_mlflow_errors(app)
    answer = app.test_client().get("/api/2.0/mlflow/runs/get")
    assert answer.status_code == 503
    assert answer.mimetype == "application/json"
    assert answer.get_json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert answer.get_json()["message"] == "could not connect"
