"""The Host check: private addresses only as literal IPs, names only when configured."""

from __future__ import annotations

import pytest

from mlflow_stack.server.hosts import HostCheck, HostPolicy, split_host
from tests.unit.server.asgi_harness import EchoApp, request

POLICY = HostPolicy(["mlflow", "mlflow.example.com", "*.internal.example", "proxy.example:8443"])


@pytest.mark.parametrize(
    "host",
    [
        "localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:5000", "[::1]:5000", "[::1]",
        "10.0.0.5", "10.0.0.5:5000", "172.16.3.4:80", "172.31.255.255", "192.168.1.20:5000",
        "[fd00::12]:5000", "0.0.0.0:5000", "mlflow", "mlflow:5000", "MLflow.Example.com",
        "team.internal.example:5000", "proxy.example:8443",
    ],
)  # fmt: skip
def test_accepted_hosts(host: str) -> None:
    assert POLICY.allows(host)


@pytest.mark.parametrize(
    "host",
    [
        "10.evil.example", "10.0.0.5.evil.example", "192.168.1.attacker.example",
        "192.168.attacker.example:5000", "172.16.attacker.example", "172.31.x.example",
        "fd00.evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "evil.example",
        "8.8.8.8", "172.32.0.1", "[2001:db8::1]:5000", "mlflow.evil.example", "proxy.example",
        "proxy.example:9443", "10.0.0.5:99999", "", ":5000", "[::1",
    ],
)  # fmt: skip
def test_refused_hosts(host: str) -> None:
    assert not POLICY.allows(host)


def test_a_star_allows_every_host() -> None:
    assert HostPolicy(["*"]).allows("anything.example")


def test_split_host() -> None:
    assert split_host("[fd00::1]:5000") == ("fd00::1", "5000")
    assert split_host("example.com:80") == ("example.com", "80")
    assert split_host("example.com") == ("example.com", "")


@pytest.mark.parametrize("path", ["/api/2.0/mlflow/experiments/search", "/", "/ajax-api/x"])
def test_middleware_refuses_a_lookalike_on_every_route(path: str) -> None:
    app = HostCheck(EchoApp(), POLICY)
    answer = request(app, path=path, headers={"Host": "10.evil.example"})
    assert answer.status == 403
    assert b"Invalid Host header" in answer.body
    assert not answer.reached_app
    assert request(app, path=path, headers={"Host": "10.1.2.3:5000"}).reached_app


def test_health_paths_answer_any_host() -> None:
    app = HostCheck(EchoApp(), POLICY)
    for path in ("/health", "/health/live", "/version"):
        assert request(app, path=path, headers={"Host": "evil.example"}).reached_app
