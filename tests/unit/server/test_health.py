"""/health follows the backend store (with a short memory), /health/live only the process."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mlflow_stack.server.health import PROBE_TIMEOUT, REUSE_SECONDS, HealthCheck
from tests.unit.server.asgi_harness import EchoApp, request


class Probe:
    def __init__(self) -> None:
        self.calls = 0
        self.failure: Exception | None = None
        self.delay = 0.0

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(self.delay)
        if self.failure:
            raise self.failure


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_health_follows_the_backend_store_and_live_does_not() -> None:
    probe, clock = Probe(), Clock()
    app = HealthCheck(EchoApp(), probe, clock)
    assert request(app, path="/health").status == 200
    probe.failure = ConnectionRefusedError('connection to server at "127.0.0.1" failed\nmore')
    clock.now += REUSE_SECONDS
    down = request(app, path="/health")
    assert down.status == 503
    assert down.body == (
        b'unhealthy: the backend store is unreachable: connection to server at "127.0.0.1" failed'
    )
    assert request(app, path="/health/live").status == 200
    assert not request(app, path="/health/live").reached_app
    probe.failure = None
    clock.now += REUSE_SECONDS
    assert request(app, path="/health").status == 200


def test_a_healthy_verdict_is_reused_briefly_and_a_failure_is_probed_again() -> None:
    probe, clock = Probe(), Clock()
    app = HealthCheck(EchoApp(), probe, clock)
    for _ in range(5):
        request(app, path="/health")
    assert probe.calls == 1
    clock.now += REUSE_SECONDS
    probe.failure = ConnectionRefusedError("refused")
    assert request(app, path="/health").status == 503
    probe.failure = None
    assert request(app, path="/health").status == 200  # the recovery is seen at once
    assert probe.calls == 3


def test_a_hanging_store_is_unhealthy_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_stack.server import health

    monkeypatch.setattr(health, "PROBE_TIMEOUT", 0.2)
    probe = Probe()
    probe.delay = 1.0
    began = time.monotonic()
    answer = request(HealthCheck(EchoApp(), probe), path="/health")
    assert answer.status == 503
    assert b"did not answer within 0.2 s" in answer.body
    assert time.monotonic() - began < PROBE_TIMEOUT


def test_other_paths_go_to_the_app() -> None:
    assert request(HealthCheck(EchoApp(), Probe()), path="/api/2.0/mlflow/x").reached_app


def test_a_hanging_probe_is_waited_on_not_started_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_stack.server import health

    monkeypatch.setattr(health, "PROBE_TIMEOUT", 0.2)
    answered = threading.Event()
    calls = []

    def probe() -> None:
        calls.append(time.monotonic())
        answered.wait(10)

    check = HealthCheck(EchoApp(), probe)

    async def checks() -> list[str | None]:
        verdicts = [await check.problem(), await check.problem()]
        assert len(calls) == 1  # the second check waited on the hung probe
        answered.set()
        await asyncio.sleep(0.05)
        verdicts.append(await check.problem())
        return verdicts

    hung = "the backend store did not answer within 0.2 s"
    assert asyncio.run(checks()) == [hung, hung, None]
    assert len(calls) == 2


def test_the_probe_is_not_queued_behind_a_busy_default_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Uploads run in asyncio's default executor; a burst of them must not fail /health."""
    from mlflow_stack.server import health

    monkeypatch.setattr(health, "PROBE_TIMEOUT", 0.5)
    check = HealthCheck(EchoApp(), Probe())

    async def during_a_burst() -> str | None:
        loop = asyncio.get_running_loop()
        release = threading.Event()
        busy = [loop.run_in_executor(None, release.wait, 10) for _ in range(64)]
        try:
            return await check.problem()
        finally:
            release.set()
            await asyncio.gather(*busy)

    assert asyncio.run(during_a_burst()) is None
