"""GET /metrics: request counts and latency per route template, summed over every worker,
readable by any logged-in user and by nobody else."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveStack

GET_EXPERIMENT = "/api/2.0/mlflow/experiments/get"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(stack: LiveStack, auth: tuple[str, str] | None = None) -> Samples:
    answer = requests.get(stack.tracking_uri + "/metrics", auth=auth or stack.admin, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return parse(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_of(samples: Samples, route: str, status: str, method: str = "GET") -> float:
    return value(samples, "http_requests_total", method=method, route=route, status=status)


def server_process(stack: LiveStack) -> psutil.Process:
    """The stack's `mlflow-stack serve`: the master, its workers below it."""
    serve = stack.server("mlflow")
    assert serve is not None, "the mlflow service is not running"
    return serve


def metrics_directory(stack: LiveStack) -> Path:
    """Where the workers keep their counts: the directory of the files they hold open (the
    master sets PROMETHEUS_MULTIPROC_DIR in-process, so /proc does not show it)."""
    held = {
        Path(f.path).parent
        for worker in server_process(stack).children()
        for f in worker.open_files()
        if Path(f.path).name.startswith("counter_")
    }
    assert len(held) == 1, held
    directory = held.pop()
    assert directory.is_dir()
    return directory


def per_worker(directory: Path) -> Iterator[tuple[str, Samples]]:
    """What each worker counted by itself: its own files, read alone."""
    for counter_file in sorted(directory.glob("counter_*.db")):
        pid = counter_file.stem.removeprefix("counter_")
        alone = Path(tempfile.mkdtemp(prefix="metrics-one-worker-"))
        try:
            for own in directory.glob(f"*_{pid}.db"):
                shutil.copy(own, alone / own.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(alone))
            yield pid, parse(generate_latest(registry).decode())
        finally:
            shutil.rmtree(alone)


def served_by_worker(directory: Path) -> dict[str, float]:
    return {pid: requests_of(own, GET_EXPERIMENT, "200") for pid, own in per_worker(directory)}


def get(stack: LiveStack, path: str, **kwargs: Any) -> int:
    """One request on a new connection, so that the kernel may hand it to any worker."""
    return requests.get(stack.tracking_uri + path, timeout=30, **kwargs).status_code


def test_every_request_is_counted_once_per_route_and_status_summed_over_workers(
    stack: LiveStack, experiment_id: str
) -> None:
    calls = 40
    query = {"experiment_id": experiment_id}
    assert stack.settings.workers >= 2
    directory = metrics_directory(stack)
    served_before = served_by_worker(directory)
    before = scrape(stack)
    with ThreadPoolExecutor(8) as pool:  # concurrent connections reach both workers
        ok = list(pool.map(lambda _: get(stack, GET_EXPERIMENT, params=query, auth=stack.admin),
                           range(calls)))  # fmt: skip
    assert ok == [200] * calls
    assert get(stack, GET_EXPERIMENT, params=query) == 401  # no credentials: MLflow's answer
    assert get(stack, GET_EXPERIMENT, params=query, headers={"Authorization": "Bearer x"}) == 401
    assert get(stack, GET_EXPERIMENT, params=query, auth=("admin", "wrong-password-1")) == 401
    # A NUL in the query (the validator) and a foreign Host (the Host check): both 4xx before
    # MLflow sees them, both counted.
    assert get(stack, GET_EXPERIMENT + "?experiment_id=%00", auth=stack.admin) == 400
    assert get(stack, GET_EXPERIMENT, params=query, headers={"Host": "evil.example"}) == 403
    unknown = f"/no-such-page-{uuid.uuid4().hex}"
    assert [get(stack, f"{unknown}/{i}", auth=stack.admin) for i in range(3)] == [404] * 3
    after = scrape(stack)
    served_after = served_by_worker(directory)

    def delta(route: str, status: str) -> float:
        return requests_of(after, route, status) - requests_of(before, route, status)

    assert delta(GET_EXPERIMENT, "200") == calls
    assert delta(GET_EXPERIMENT, "401") == 3
    assert delta(GET_EXPERIMENT, "400") == 1
    assert delta(GET_EXPERIMENT, "403") == 1
    assert delta("other", "404") == 3
    # The previous scrape is counted too, under its own route.
    assert requests_of(after, "/metrics", "200") >= 1

    # Latency: a histogram per method and route, its +Inf bucket equal to the count.
    timed = {"method": "GET", "route": GET_EXPERIMENT}
    count = value(after, "http_request_duration_seconds_count", **timed)
    assert count - value(before, "http_request_duration_seconds_count", **timed) == calls + 5
    buckets = {
        labels["le"]: v
        for (name, frozen), v in after.items()
        if name == "http_request_duration_seconds_bucket"
        and (labels := dict(frozen))["route"] == GET_EXPERIMENT
        and labels["method"] == "GET"
    }
    assert {"0.005", "0.1", "1.0", "+Inf"} <= set(buckets)
    assert buckets["+Inf"] == count
    ordered = sorted(buckets.items(), key=lambda item: float(item[0]))
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(ordered))
    assert value(after, "http_request_duration_seconds_sum", **timed) > 0

    # Never a raw path in a label: not the page names, not the experiment id.
    for _, frozen in after:
        for _, label in frozen:
            assert unknown not in label
            assert label != experiment_id

    # The scrape is the sum of what each worker counted alone, and more than one worker
    # served the calls: a scrape answered by one worker sees the other's requests too.
    assert sum(served_after.values()) == requests_of(after, GET_EXPERIMENT, "200")
    served = {pid: n - served_before.get(pid, 0) for pid, n in served_after.items()}
    assert sum(served.values()) == calls
    assert len([n for n in served.values() if n > 0]) >= 2, served


def test_metrics_need_a_login_and_any_user_may_scrape(stack: LiveStack) -> None:
    from mlflow.server import get_app_client

    url = stack.tracking_uri + "/metrics"
    refused = requests.get(url, timeout=30)
    assert refused.status_code == 401
    assert "http_requests_total" not in refused.text
    assert requests.get(url, auth=("admin", "not-the-password"), timeout=30).status_code == 401
    name, password = f"scraper-{uuid.uuid4().hex[:6]}", "scraper-password-123"
    get_app_client("basic-auth", tracking_uri=stack.tracking_uri).create_user(name, password)
    samples = scrape(stack, auth=(name, password))

    import mlflow

    info = [labels for (metric, labels) in samples if metric == "mlflow_stack_build_info"]
    assert len(info) == 1
    assert dict(info[0])["mlflow_version"] == mlflow.__version__
    serve = server_process(stack)
    tree = [serve, *serve.children(recursive=True)]
    assert value(samples, "mlflow_stack_server_processes") == len(tree)
    assert len(tree) >= stack.settings.workers
    rss = sum(p.memory_info().rss for p in tree)
    reported = value(samples, "mlflow_stack_server_resident_memory_bytes")
    assert 0.8 * rss < reported < 1.2 * rss
    assert value(samples, "mlflow_stack_server_open_fds") > 10 * len(tree)
    assert value(samples, "mlflow_stack_server_cpu_seconds_total") > 1


@pytest.mark.timeout(300)
def test_the_counts_live_in_a_directory_of_this_start_only(stack: LiveStack) -> None:
    """Stopping the server removes its counts; the next start counts from zero."""
    old = metrics_directory(stack)
    assert any(old.glob("counter_*.db"))
    result = stack.cli("down", "mlflow")
    assert result.returncode == 0, result.stderr
    assert not old.exists()
    stack.up()
    new = metrics_directory(stack)
    assert new != old
    samples = scrape(stack)
    assert requests_of(samples, GET_EXPERIMENT, "200") == 0
