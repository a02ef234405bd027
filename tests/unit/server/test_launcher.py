"""The arbiter's settings and the worker it forks: gunicorn's and uvicorn's own objects, built
as `serve` builds them (the running master is tested against a live stack in
tests/integration/test_runtime.py and test_faults.py)."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from gunicorn.glogging import Logger

from mlflow_stack.server import launcher
from mlflow_stack.server.launcher import (
    GRACEFUL_TIMEOUT,
    KEEP_ALIVE,
    StackServer,
    StackWorker,
    bind_address,
    gunicorn_options,
)
from mlflow_stack.settings.contract import Settings
from tests.conftest import make_settings


@pytest.fixture(autouse=True)
def _uvicorn_logger_restored() -> Iterator[None]:
    """StackWorker turns propagation off for the process; give it back to the other tests."""
    logger = logging.getLogger("uvicorn")
    before = logger.propagate
    yield
    logger.propagate = before


def server(**overrides: str) -> StackServer:
    return StackServer(make_settings(**overrides), load=lambda: None)


def worker(app: StackServer) -> StackWorker:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    try:
        return StackWorker(0, 1, [listener], app, 15.0, app.cfg, Logger(app.cfg))
    finally:
        listener.close()


def test_the_master_preloads_and_forks_workers_with_the_stacks_settings() -> None:
    app = server(MLFLOW_STACK_WORKERS="3", MLFLOW_STACK_PORT="5111")
    cfg = app.cfg
    assert cfg.bind == ["127.0.0.1:5111"]
    assert cfg.workers == 3
    assert cfg.worker_class is StackWorker
    assert cfg.preload_app is True
    assert cfg.keepalive == KEEP_ALIVE
    assert cfg.graceful_timeout == GRACEFUL_TIMEOUT
    assert cfg.control_socket_disable is True  # no socket in $HOME/.gunicorn
    assert cfg.accesslog is None  # uvicorn's access log, not a second one
    assert cfg.proc_name == "mlflow-stack"


def test_gunicorn_reads_no_command_line_or_environment_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--workers 9 --bind 0.0.0.0:1")
    monkeypatch.setattr("sys.argv", ["mlflow-stack", "serve", "--workers", "7"])
    cfg = server().cfg
    assert cfg.workers == 2
    assert cfg.bind == ["127.0.0.1:5000"]


def test_the_app_is_built_in_each_worker_after_the_preload() -> None:
    calls: list[str] = []
    app = StackServer(make_settings(), load=lambda: calls.append("preload"))
    loaded = app.wsgi()  # what the arbiter calls once, in the master, with preload_app
    assert calls == ["preload"]
    assert app.wsgi() is loaded and calls == ["preload"]  # once only
    with pytest.raises(RuntimeError, match="builds the app in each worker"):
        import asyncio

        asyncio.run(loaded({}, None, None))


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", "127.0.0.1:5000"), ("0.0.0.0", "0.0.0.0:5000"), ("::", "[::]:5000")],
)
def test_bind_address_brackets_ipv6(host: str, expected: str) -> None:
    assert bind_address(make_settings(MLFLOW_STACK_HOST=host)) == expected


def test_workers_run_uvloop_httptools_and_mlflows_log_format() -> None:
    from mlflow.server import _UVICORN_LOG_CONFIG

    config = worker(server()).config
    assert config.loop == "uvloop"  # TCP_NODELAY on every connection (uvicorn #3149)
    assert config.http == "httptools"
    assert config.log_config == str(_UVICORN_LOG_CONFIG)
    assert config.timeout_keep_alive == KEEP_ALIVE
    # MLflow's log config gives uvicorn its own handler; the master's root handler would
    # print every line twice
    assert logging.getLogger("uvicorn").propagate is False


def test_workers_believe_forwarded_addresses_only_from_configured_proxies() -> None:
    plain = worker(server()).config
    assert plain.proxy_headers is False
    proxied = worker(server(MLFLOW_STACK_TRUSTED_PROXIES="10.0.0.0/16, 192.168.1.7")).config
    assert proxied.proxy_headers is True
    assert proxied.forwarded_allow_ips == ["10.0.0.0/16", "192.168.1.7"]


def test_gunicorn_options_name_only_settings_gunicorn_knows() -> None:
    from gunicorn.config import Config

    known = Config().settings
    settings: Settings = make_settings()
    assert set(gunicorn_options(settings)) <= set(known)


def test_release_connections_closes_the_auth_stores_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.server import auth

    engine = sqlalchemy.create_engine("sqlite://", poolclass=sqlalchemy.pool.QueuePool)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("select 1"))
    assert engine.pool.checkedin() == 1  # a pooled connection a fork would share
    monkeypatch.setattr(auth.store, "engine", engine, raising=False)
    launcher.release_connections()
    assert engine.pool.checkedin() == 0


def test_release_connections_without_an_engine_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.server import auth

    monkeypatch.delattr(auth.store, "engine", raising=False)
    launcher.release_connections()  # no error


def test_idle_connections_outlive_the_load_balancers_idle_timeout() -> None:
    """The balancer must close an idle connection first: if the server does, a request the
    balancer sends on it meanwhile is answered 502 (AWS's advice for ALB targets)."""
    main = Path(__file__).parents[3] / "terraform" / "modules" / "server" / "main.tf"
    (balancer,) = re.findall(r"^\s*idle_timeout\s*=\s*(\d+)", main.read_text(), re.MULTILINE)
    assert int(balancer) < KEEP_ALIVE
