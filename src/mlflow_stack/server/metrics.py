"""Prometheus metrics: every request the server answers, counted per route and timed, summed over
all uvicorn workers, and served at ``GET /metrics`` to any logged-in user.

MLflow's ``--expose-prometheus`` instruments only its Flask app: it misses the FastAPI routes
and every answer the stack's own layers give (401, 429, 400, 403) before MLflow sees the
request. Here the outermost ASGI layer counts them all, the Host check's 403s included (a
client or proxy sending a name not allowed shows up here first).

``route`` is the template of the route that matched (``/api/2.0/mlflow-artifacts/artifacts/
<path:artifact_path>``), never the raw path, so run ids and artifact paths cannot grow the
number of series; paths no route serves are ``other``, unknown methods too.

Each worker writes its counts to memory-mapped files in PROMETHEUS_MULTIPROC_DIR, a private
directory ``mlflow-stack serve`` creates per start and removes at exit; a scrape, answered by
any worker, reads and sums them all. Files of a worker that died stay, so counters never go
back. Without that variable (a single process) the counts are the process's own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import version
from typing import Any

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from mlflow_stack.server import MULTIPROC_DIR_VARIABLE
from mlflow_stack.server.asgi import ASGIApp, Message, Receive, Scope, Send
from mlflow_stack.server.health import LIVE_PATH

METRICS_PATH = "/metrics"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
#: Seconds; artifact uploads and large searches take far longer than API calls.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: Route families MLflow serves with FastAPI alone (no Flask rule), labelled by prefix.
NATIVE_PREFIXES = (
    "/gateway/",
    "/ajax-api/3.0/mlflow/assistant/",
    "/api/3.0/mlflow/mcp-servers",
    "/ajax-api/3.0/mlflow/mcp-servers",
)

REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=BUCKETS,
)


class RouteLabels:
    """The bounded ``route`` label of a request: the template of the Flask rule MLflow would
    dispatch it to, a native FastAPI prefix, one of ``own_paths`` (answered by the stack's
    own layers), or ``other``."""

    def __init__(self, url_map: Any, own_paths: Iterable[str] = ()) -> None:
        from werkzeug.exceptions import HTTPException, MethodNotAllowed

        self.adapter = url_map.bind("localhost")
        self.own_paths = frozenset({LIVE_PATH, *own_paths})
        self.miss = HTTPException  # NotFound, RequestRedirect (a missing trailing slash), ...
        self.method_not_allowed = MethodNotAllowed

    def __call__(self, method: str, path: str) -> str:
        if path in self.own_paths:
            return path
        try:
            rule, _ = self.adapter.match(path, method, return_rule=True)
        except self.method_not_allowed as error:  # the route exists: a 405 is still its answer
            allowed = sorted(error.valid_methods or ())
            return self(allowed[0], path) if allowed else OTHER
        except self.miss:
            return self.native(path)
        return rule.rule

    @staticmethod
    def native(path: str) -> str:
        for prefix in NATIVE_PREFIXES:
            if path.startswith(prefix):
                return prefix.rstrip("/") + "/*"
        return OTHER


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request, whoever answers it."""

    def __init__(
        self,
        app: ASGIApp,
        route_of: Callable[[str, str], str],
        requests: Counter = REQUESTS,
        duration: Histogram = DURATION,
    ) -> None:
        self.app = app
        self.route_of = route_of
        self.requests = requests
        self.duration = duration

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what uvicorn answers when the app fails before responding

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in METHODS else OTHER
            route = self.route_of(method, scope["path"])
            self.requests.labels(method, route, str(status)).inc()
            self.duration.labels(method, route).observe(elapsed)


# --- what a scrape reports ---


def server_processes() -> list[psutil.Process]:
    """The server's master and all its workers: the parent when this worker was forked from
    it (same command line: ``mlflow-stack serve``'s arbiter), or MLflow's uvicorn supervisor
    when ``mlflow server`` spawned it; otherwise this process alone, which then is the server."""
    me = psutil.Process()
    root = me
    try:
        parent = me.parent()
        if parent is not None:
            command = parent.cmdline()
            if command == me.cmdline() or "uvicorn" in command:
                root = parent
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [me]


class ServerCollector(Collector):
    """Build information and the resources of the whole server, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        import mlflow

        info = GaugeMetricFamily(
            "mlflow_stack_build_info",
            "The versions this server runs; always 1.",
            labels=["version", "mlflow_version"],
        )
        info.add_metric([version("mlflow-stack"), mlflow.__version__], 1)
        yield info
        processes = memory = fds = 0
        cpu = 0.0
        for process in server_processes():
            try:
                with process.oneshot():
                    memory += process.memory_info().rss
                    times = process.cpu_times()
                    cpu += times.user + times.system
                    fds += process.num_fds()
            except psutil.Error:
                continue  # it exited while we looked
            processes += 1
        yield GaugeMetricFamily(
            "mlflow_stack_server_processes",
            "Processes of the server: its master and its workers.",
            value=processes,
        )
        yield GaugeMetricFamily(
            "mlflow_stack_server_resident_memory_bytes",
            "Resident memory of the server's processes, summed.",
            value=memory,
        )
        yield CounterMetricFamily(
            "mlflow_stack_server_cpu_seconds",
            "User and system CPU time of the server's live processes, summed.",
            value=cpu,
        )
        yield GaugeMetricFamily(
            "mlflow_stack_server_open_fds",
            "Open file descriptors of the server's processes, summed.",
            value=fds,
        )


def exposition() -> bytes:
    """The text a scrape gets: the request metrics of every worker, plus ServerCollector's."""
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_DefaultRegistry())
    registry.register(ServerCollector())
    return generate_latest(registry)


class _DefaultRegistry(Collector):
    """This process's own metrics, when it is the only one."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def install_endpoint(flask_app: Any) -> None:
    """Serve ``GET /metrics`` from MLflow's Flask app, behind its basic-auth login.

    Any logged-in user may scrape: a Prometheus scrape config then holds the password of an
    account of its own, not the admin's. The metrics hold route templates and counts only,
    nothing any user could not already read. MLflow's auth refuses, by default, a Flask route
    it knows no permission rule for to everyone but admins, so the rule is given here.
    """
    from flask import Response
    from mlflow.server.auth import BEFORE_REQUEST_VALIDATORS

    def metrics() -> Response:
        return Response(exposition(), content_type=CONTENT_TYPE_LATEST)

    if METRICS_PATH not in {rule.rule for rule in flask_app.url_map.iter_rules()}:
        flask_app.add_url_rule(METRICS_PATH, "mlflow_stack_metrics", metrics, methods=["GET"])
    for method in ("GET", "HEAD"):
        BEFORE_REQUEST_VALIDATORS[(METRICS_PATH, method)] = _any_logged_in_user


def _any_logged_in_user() -> bool:
    return True  # MLflow has authenticated the caller before it asks
