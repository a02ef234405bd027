"""The MLflow server of the native runtime: how it is started, and its health check, against
a tiny real HTTP server on loopback standing in for it."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflow_stack.native.mlflow import QUIET_WARNINGS, MlflowService, http_status
from mlflow_stack.native.processes import free_port
from mlflow_stack.native.service import Layout
from mlflow_stack.waiting import NotReady
from tests.conftest import make_settings as settings
from tests.unit.native.helpers import LoopbackHTTP, Route

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
ADMIN = ("admin", "admin-password-123456")  # tests.conftest.REQUIRED


def service_on(port: int, tmp_path: Path, environ: dict[str, str] | None = None) -> MlflowService:
    return MlflowService(settings(MLFLOW_STACK_PORT=str(port)), Layout(tmp_path), environ or {})


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel does) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def garbage_port() -> Iterator[int]:
    """A port where something that does not speak HTTP answers."""
    sock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    thread.join(5)


def test_it_runs_this_pythons_mlflow_stack_serve(tmp_path: Path) -> None:
    service = service_on(5000, tmp_path)
    assert service.command() == [sys.executable, "-m", "mlflow_stack", "serve"]
    assert importlib.util.find_spec("mlflow_stack.__main__") is not None
    assert service.name == "mlflow"
    assert service.ports() == {5000: "MLFLOW_STACK_PORT"}
    assert service.endpoint() == "http://127.0.0.1:5000"
    assert service.describe() == "MLflow server (mlflow-stack serve)"
    assert service.start_timeout >= 120  # the first start creates both schemas
    assert service.workdir == tmp_path


def test_it_gets_the_environment_it_was_given_with_starlettes_warning_silenced(
    tmp_path: Path,
) -> None:
    given = {"MLFLOW_AUTH_ADMIN_PASSWORD": "secret", "PYTHONWARNINGS": "error::DeprecationWarning"}
    env = service_on(5000, tmp_path, given).environment()
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "secret"  # serve reads its settings from it
    assert env["PYTHONWARNINGS"] == f"error::DeprecationWarning,{QUIET_WARNINGS}"
    assert given["PYTHONWARNINGS"] == "error::DeprecationWarning"  # not changed in place
    assert service_on(5000, tmp_path, {}).environment() == {"PYTHONWARNINGS": QUIET_WARNINGS}
    empty = service_on(5000, tmp_path, {"PYTHONWARNINGS": ""}).environment()
    assert empty["PYTHONWARNINGS"] == QUIET_WARNINGS


def test_the_silenced_warning_is_starlettes_and_only_that(tmp_path: Path) -> None:
    """The filter, as the service passes it, silences the warning the real import prints, even
    after an inherited filter that turns every UserWarning into an error."""
    strict = {"PYTHONWARNINGS": "error::UserWarning"}
    env = service_on(5000, tmp_path, strict).environment()
    run = [sys.executable, "-c", "import starlette.middleware.wsgi"]
    loud = subprocess.run(run, env=strict, capture_output=True, text=True, check=False)
    assert loud.returncode != 0 and "starlette.middleware.wsgi is deprecated" in loud.stderr
    quiet = subprocess.run(run, env=env, capture_output=True, text=True, check=False)
    assert quiet.returncode == 0, quiet.stderr
    other = [sys.executable, "-c", "import warnings; warnings.warn('another', UserWarning)"]
    assert subprocess.run(other, env=env, capture_output=True, check=False).returncode != 0


def test_http_status_reports_the_status_of_any_answer(http_server: LoopbackHTTP) -> None:
    http_server.routes["/ok"] = Route(200)
    http_server.routes["/broken"] = Route(503)
    assert http_status(f"{http_server.url}/ok") == 200
    assert http_status(f"{http_server.url}/broken") == 503
    assert http_status(f"{http_server.url}/missing") == 404
    assert http_server.requests[0] == ("/ok", None)  # no credentials unless given


def test_http_status_logs_in_with_basic_auth(http_server: LoopbackHTTP) -> None:
    http_server.routes["/private"] = Route(200, auth=("alice", "pa:ss wörd"))
    assert http_status(f"{http_server.url}/private") == 401
    assert http_status(f"{http_server.url}/private", auth=("alice", "wrong")) == 401
    assert http_status(f"{http_server.url}/private", auth=("alice", "pa:ss wörd")) == 200


def test_healthy_means_health_answers_and_a_logged_in_api_call_works(
    http_server: LoopbackHTTP, tmp_path: Path
) -> None:
    http_server.routes["/health"] = Route(200)
    http_server.routes[SEARCH] = Route(200, auth=ADMIN)
    service_on(http_server.port, tmp_path).check(timeout=2)
    assert [path for path, _ in http_server.requests] == ["/health", SEARCH]


def test_an_unhealthy_health_endpoint_is_not_ready(
    http_server: LoopbackHTTP, tmp_path: Path
) -> None:
    http_server.routes["/health"] = Route(503)
    with pytest.raises(NotReady, match="/health answered HTTP 503"):
        service_on(http_server.port, tmp_path).check(timeout=2)


def test_an_unhealthy_health_endpoint_gives_the_servers_reason(
    http_server: LoopbackHTTP, tmp_path: Path
) -> None:
    reason = b"unhealthy: the backend store did not answer within 3 s"
    http_server.routes["/health"] = Route(503, body=reason + b"\nsecond line")
    with pytest.raises(NotReady) as raised:
        service_on(http_server.port, tmp_path).check(timeout=2)
    assert str(raised.value) == f"/health answered HTTP 503: {reason.decode()}"


@pytest.mark.parametrize("status", [401, 403, 500])
def test_a_failing_authenticated_call_is_not_ready(
    http_server: LoopbackHTTP, tmp_path: Path, status: int
) -> None:
    http_server.routes["/health"] = Route(200)  # /health skips the Host check and auth
    http_server.routes[SEARCH] = Route(status)
    with pytest.raises(NotReady, match=f"an authenticated API call answered HTTP {status}"):
        service_on(http_server.port, tmp_path).check(timeout=2)


def test_a_closed_port_means_still_starting(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(NotReady, match=f"still starting, port {port} not open yet"):
        service_on(port, tmp_path).check(timeout=2)


def test_a_server_that_never_answers_is_not_ready_after_the_timeout(
    silent_port: int, tmp_path: Path
) -> None:
    began = time.monotonic()
    with pytest.raises(NotReady, match="timed out"):
        service_on(silent_port, tmp_path).check(timeout=0.3)
    assert time.monotonic() - began < 2


def test_something_else_than_http_on_the_port_is_not_ready(
    garbage_port: int, tmp_path: Path
) -> None:
    with pytest.raises(NotReady):
        service_on(garbage_port, tmp_path).check(timeout=2)
