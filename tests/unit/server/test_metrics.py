"""The metrics layer: bounded route labels, one count and one timing per request whoever
answers it, and a scrape that sums every process writing to the multiprocess directory."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from mlflow_stack.server.metrics import (
    BUCKETS,
    MULTIPROC_DIR_VARIABLE,
    RequestMetrics,
    RouteLabels,
    exposition,
    server_processes,
)
from tests.unit.server.asgi_harness import EchoApp, request

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"
LOGGED_MODEL = "/api/2.0/mlflow/logged-models/<model_id>"


@pytest.fixture(scope="module")
def route_of() -> RouteLabels:
    from mlflow.server import app

    return RouteLabels(app.url_map)


@pytest.mark.parametrize(
    ("method", "path", "label"),
    [
        ("GET", "/api/2.0/mlflow/experiments/get", "/api/2.0/mlflow/experiments/get"),
        ("POST", "/api/2.0/mlflow/runs/log-batch", "/api/2.0/mlflow/runs/log-batch"),
        ("GET", "/ajax-api/2.0/mlflow/runs/get", "/ajax-api/2.0/mlflow/runs/get"),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.pkl", ARTIFACTS),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/7/x.txt", ARTIFACTS),
        ("GET", "/api/2.0/mlflow/logged-models/m-0123abc", LOGGED_MODEL),
        ("GET", "/static-files/static/js/main.abc123.js", "/static-files/<path:path>"),
        ("DELETE", "/api/2.0/mlflow/experiments/get", "/api/2.0/mlflow/experiments/get"),  # a 405
        ("HEAD", "/health", "/health"),
        ("GET", "/health/live", "/health/live"),
        ("POST", "/gateway/chat/mlflow/invocations", "/gateway/*"),
        ("GET", "/api/3.0/mlflow/mcp-servers/a/b/versions", "/api/3.0/mlflow/mcp-servers/*"),
        ("GET", "/wp-login.php", "other"),
        ("GET", "/api/2.0/mlflow/experiments/get/", "other"),
        ("GET", "/api/2.0/mlflow/no-such-call", "other"),
    ],
)  # fmt: skip
def test_the_route_label_is_the_template_of_the_route_that_serves_the_path(
    route_of: RouteLabels, method: str, path: str, label: str
) -> None:
    assert route_of(method, path) == label


def test_paths_the_stacks_own_layers_answer_are_their_own_routes() -> None:
    from mlflow.server import app

    route_of = RouteLabels(app.url_map, own_paths=["/api/2.0/mlflow-stack/gc"])
    assert route_of("POST", "/api/2.0/mlflow-stack/gc") == "/api/2.0/mlflow-stack/gc"
    assert route_of("GET", "/health/live") == "/health/live"
    assert route_of("POST", "/api/2.0/mlflow-stack/other") == "other"


def test_ids_and_artifact_paths_cannot_grow_the_number_of_labels(route_of: RouteLabels) -> None:
    labels = set()
    for _ in range(500):
        token = uuid.uuid4().hex
        labels.add(route_of("GET", f"/api/2.0/mlflow-artifacts/artifacts/1/{token}/a/b.bin"))
        labels.add(route_of("GET", f"/api/2.0/mlflow/logged-models/m-{token}"))
        labels.add(route_of("GET", f"/{token}"))
        labels.add(route_of("POST", f"/gateway/{token}/mlflow/invocations"))
    assert labels == {ARTIFACTS, LOGGED_MODEL, "other", "/gateway/*"}


class Recorded:
    """RequestMetrics with metrics of its own registry, and what they hold."""

    def __init__(self, app: Any) -> None:
        self.registry = CollectorRegistry()
        requests = Counter("t_requests", "", ["method", "route", "status"], registry=self.registry)
        duration = Histogram("t_seconds", "", ["method", "route"], registry=self.registry)
        self.layer = RequestMetrics(
            app, lambda method, path: f"{method} {path}", requests, duration
        )

    def count(self, method: str, route: str, status: str) -> float | None:
        labels = {"method": method, "route": route, "status": status}
        return self.registry.get_sample_value("t_requests_total", labels)

    def timings(self, method: str, route: str) -> float | None:
        labels = {"method": method, "route": route}
        return self.registry.get_sample_value("t_seconds_count", labels)


class SlowApp(EchoApp):
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.05)
        await super().__call__(scope, receive, send)


def test_each_request_is_counted_once_with_its_status_and_timed() -> None:
    recorded = Recorded(SlowApp(status=404))
    for _ in range(3):
        assert request(recorded.layer, "GET", "/x").status == 404
    assert recorded.count("GET", "GET /x", "404") == 3
    assert recorded.timings("GET", "GET /x") == 3
    total = recorded.registry.get_sample_value(
        "t_seconds_sum", {"method": "GET", "route": "GET /x"}
    )
    assert total is not None
    assert total >= 3 * 0.05


def test_a_method_outside_http_is_counted_as_other_not_as_itself() -> None:
    recorded = Recorded(EchoApp())
    request(recorded.layer, "BREW", "/pot")
    assert recorded.count("other", "other /pot", "200") == 1
    assert recorded.count("BREW", "BREW /pot", "200") is None


def test_an_app_that_fails_before_answering_counts_as_500_and_the_error_goes_on() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    recorded = Recorded(failing)
    scope = {"type": "http", "method": "POST", "path": "/y", "headers": []}
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(recorded.layer(scope, None, None))  # type: ignore[arg-type]
    assert recorded.count("POST", "POST /y", "500") == 1


def test_lifespan_events_are_not_requests() -> None:
    seen = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    recorded = Recorded(app)
    asyncio.run(recorded.layer({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]
    assert not [s for m in recorded.registry.collect() for s in m.samples if s.value]


WORKER = """
import asyncio, sys
from mlflow_stack.server.metrics import RequestMetrics

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b""})

async def send(message):
    pass

layer = RequestMetrics(app, lambda method, path: "/api/2.0/mlflow/runs/create")
for _ in range(int(sys.argv[1])):
    asyncio.run(layer({"type": "http", "method": "POST", "path": "/p"}, None, send))
"""


def samples_of(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_a_scrape_sums_every_process_of_the_multiprocess_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, MULTIPROC_DIR_VARIABLE: str(tmp_path)}
    for calls in (3, 5):  # two "workers", each with its own pid and files
        subprocess.run([sys.executable, "-c", WORKER, str(calls)], env=env, check=True)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    monkeypatch.setenv(MULTIPROC_DIR_VARIABLE, str(tmp_path))
    samples = samples_of(exposition())
    route = {"method": "POST", "route": "/api/2.0/mlflow/runs/create"}
    key = frozenset({**route, "status": "201"}.items())
    assert samples[("http_requests_total", key)] == 8
    assert samples[("http_request_duration_seconds_count", frozenset(route.items()))] == 8
    buckets = {
        dict(labels)["le"]
        for name, labels in samples
        if name == "http_request_duration_seconds_bucket"
    }
    assert buckets == {str(float(b)) for b in BUCKETS} | {"+Inf"}


def test_a_scrape_reports_the_versions_and_the_server_resources() -> None:
    import mlflow

    samples = samples_of(exposition())
    info = [dict(labels) for name, labels in samples if name == "mlflow_stack_build_info"]
    assert info == [{"version": version("mlflow-stack"), "mlflow_version": mlflow.__version__}]
    assert samples[("mlflow_stack_server_processes", frozenset())] >= 1
    assert samples[("mlflow_stack_server_resident_memory_bytes", frozenset())] > 10 * 2**20
    assert samples[("mlflow_stack_server_open_fds", frozenset())] > 0
    assert samples[("mlflow_stack_server_cpu_seconds_total", frozenset())] > 0


def test_a_forked_worker_reports_its_master_and_every_sibling() -> None:
    """Forked from `serve` (same command line), a worker counts the master and all of its
    children; the master alone counts itself and its children."""
    me = os.getpid()
    assert server_processes()[0].pid == me  # pytest's parent is a shell or xdist, not a twin
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the "worker"
        try:
            pids = [p.pid for p in server_processes()]
            os.write(writer, json.dumps(pids).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as answer:
        pids = json.loads(answer.read())
    os.waitpid(child, 0)
    assert pids[0] == me
    assert child in pids
