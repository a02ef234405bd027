"""The app ``mlflow-stack serve`` runs: MLflow's basic-auth app, registered under the
``mlflow.app`` entry point as ``mlflow-stack``, inside the stack's own ASGI layers.

From the outside in, each answering the requests it is about itself (and all of them
inside :class:`~mlflow_stack.server.metrics.RequestMetrics`, which counts and times every request,
refused ones included, for ``GET /metrics``):

1. :class:`~mlflow_stack.server.hosts.HostCheck`: the Host check, stricter than MLflow's (which
   still runs behind it);
2. :class:`~mlflow_stack.server.health.HealthCheck`: ``/health`` follows the backend store,
   ``/health/live`` the process;
3. :class:`~mlflow_stack.server.validation.RequestValidator`: malformed API input gets a 4xx
   before MLflow or its auth layer reads it;
4. :class:`~mlflow_stack.server.credentials.CredentialGuard`: non-basic credentials get 401,
   repeated failed logins cost no more scrypt;
5. :class:`~mlflow_stack.server.gc_endpoint.GarbageCollectionEndpoint`: ``mlflow-stack gc``'s
   admin-only ``POST /api/2.0/mlflow-stack/gc``;
6. :class:`ProxiedArtifactsOnly` (below).

With single sign-on (MLFLOW_STACK_AUTH_MODE=oidc),
:class:`~mlflow_stack.server.signon.SignOnEndpoints` answers ``/auth/login``,
``/auth/callback`` and ``/auth/logout`` between 3 and 4, and the credential guard lets bearer
tokens through to the login check.

Inside, MLflow's FastAPI app gets one route of the stack's own in front of its own:
:mod:`~mlflow_stack.server.downloads` streams proxied downloads from S3; it swaps the views of
the UI's two download routes in MLflow's Flask app for streaming ones as well.

With artifacts proxied to S3, MLflow advertises presigned multipart uploads and downloads in
``/api/3.0/mlflow/server-info``, and its client then moves artifact bytes straight to and from
the S3 endpoint instead of through the server. The stack's clients often cannot reach that
endpoint (compose keeps MinIO on an internal network; the native S3 server listens on
loopback), so unless MLFLOW_STACK_ARTIFACT_PRESIGNED_URLS allows it, the advertisement says no
and every artifact byte goes through the server, as the stack promises.
"""

from __future__ import annotations

import gc
import json
import os
from typing import Any

from mlflow_stack import sso
from mlflow_stack.gc import ENDPOINT as GC_ENDPOINT
from mlflow_stack.server import authstore, downloads
from mlflow_stack.server.asgi import ASGIApp, Message, Receive, Scope, Send
from mlflow_stack.server.credentials import CredentialGuard
from mlflow_stack.server.gc_endpoint import GarbageCollectionEndpoint, server_collector
from mlflow_stack.server.health import HealthCheck, backend_store_probe
from mlflow_stack.server.hosts import HostCheck, HostPolicy
from mlflow_stack.server.metrics import RequestMetrics, RouteLabels, install_endpoint
from mlflow_stack.server.validation import RequestValidator, mlflow_routes
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores import password, phase

SERVER_INFO_PATHS = frozenset({"/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"})


class ProxiedArtifactsOnly:
    """ASGI middleware: advertise no presigned (direct-to-S3) artifact transfers."""

    def __init__(self, app: ASGIApp) -> None:
        from mlflow.utils.server_info import (
            SERVER_INFO_MULTIPART_DOWNLOADS_ENABLED,
            SERVER_INFO_MULTIPART_UPLOADS_ENABLED,
        )

        self.app = app
        self.flags = (
            SERVER_INFO_MULTIPART_UPLOADS_ENABLED,
            SERVER_INFO_MULTIPART_DOWNLOADS_ENABLED,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in SERVER_INFO_PATHS:
            await self.app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if start["status"] == 200:
                info = json.loads(body)
                info.update(dict.fromkeys(self.flags, False))
                body = json.dumps(info).encode()
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


def answer_mlflow_errors(flask_app: Any) -> None:
    """An MlflowException raised outside MLflow's handlers (in its before-request functions:
    the login check, the auth store) gets MLflow's JSON error and status, as one raised in a
    handler does, instead of Flask's HTML 500 page."""
    from flask import Response
    from mlflow.exceptions import MlflowException

    def answer(error: MlflowException) -> Response:
        return Response(
            error.serialize_as_json(),
            status=error.get_http_status_code(),
            mimetype="application/json",
        )

    flask_app.register_error_handler(MlflowException, answer)


def create_app() -> ASGIApp:
    """Build the app in a worker: :class:`~mlflow_stack.server.launcher.StackWorker` calls it
    after the fork, and ``mlflow server --app-name mlflow-stack`` (the job-runner set-up) in
    each worker it spawns."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as create_basic_auth_app
    from mlflow.server.auth import is_unprotected_route

    settings = Settings.from_env(os.environ)
    password.install(settings)  # inherited from the master after a fork; needed after a spawn
    authstore.install()  # MLflow's auth store, its per-request reads kept (bounded)
    signon = sso.install(settings)  # None unless MLFLOW_STACK_AUTH_MODE=oidc
    with phase.bracket(flask_app):  # the tracking store knows when MLflow authorizes
        app = create_basic_auth_app()
    if hasattr(app, "router"):  # MLflow's FastAPI app (under uvicorn, as always here)
        downloads.install(app)  # proxied downloads streamed from S3
    downloads.install_ui(flask_app)  # the UI's downloads streamed from S3 too
    install_endpoint(flask_app)
    answer_mlflow_errors(flask_app)
    mlflow_routes()  # build the route table now, not on the first request
    # MLflow's imports leave ~500 MB of long-lived objects in each worker; every full
    # collection used to walk them all, which showed as p95 spikes on large responses
    # (search_runs). Frozen objects are never scanned; request garbage still is.
    gc.collect()
    gc.freeze()
    if not settings.presigned_urls:
        app = ProxiedArtifactsOnly(app)
    app = GarbageCollectionEndpoint(app, lambda: server_collector(settings))  # admins only
    app = CredentialGuard(
        app,
        protected=lambda path: not is_unprotected_route(path),
        remember_success=settings.auth_cache_ttl,
        bearer_tokens=signon is not None,
    )
    own_paths = [GC_ENDPOINT]
    if signon is not None:
        from mlflow_stack.server.signon import PATHS, SignOnEndpoints

        app = SignOnEndpoints(app, signon)
        own_paths += PATHS
        signon.warm_up()  # the provider's keys, fetched in the background
    app = RequestValidator(app)
    app = HealthCheck(app, backend_store_probe(settings))
    app = HostCheck(app, HostPolicy(settings.host_names))
    return RequestMetrics(app, RouteLabels(flask_app.url_map, own_paths=own_paths))
