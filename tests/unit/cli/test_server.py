"""The server's commands: `healthcheck` against a tiny real server on a loopback port (200,
503, a connection closed without an answer, no answer at all, nothing listening), and the
environment `serve` gives the MLflow server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlflow_stack.native.processes import free_port
from mlflow_stack.serve import server_environment
from tests.conftest import make_settings
from tests.unit.cli.conftest import invoke


@dataclass
class Loopback:
    """Accepts on 127.0.0.1 and answers each connection as ``mode`` says."""

    port: int
    mode: str = "200"
    requests: list[bytes] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


ANSWERS = {
    "200": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
    "503": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "garbage": b"SSH-2.0-OpenSSH_9.2\r\n",
}


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)
    state = Loopback(listener.getsockname()[1])

    def serve() -> None:
        while not state.stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                state.requests.append(connection.recv(65536))
                if state.mode == "hang":
                    state.stop.wait(10)
                elif state.mode in ANSWERS:
                    connection.sendall(ANSWERS[state.mode])
                # "close": closed without a word

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        thread.join(5)
        listener.close()


def healthcheck(tmp_path: Path, port: int, *args: str) -> tuple[int, str]:
    result = invoke(tmp_path, "healthcheck", *args, env={"MLFLOW_STACK_PORT": str(port)})
    assert result.stdout == ""
    return result.exit_code, result.stderr


def test_a_healthy_server_exits_0_quietly(tmp_path: Path, loopback: Loopback) -> None:
    assert healthcheck(tmp_path, loopback.port) == (0, "")
    assert loopback.requests[0].startswith(b"GET /health HTTP/1.1\r\n")


def test_an_unhealthy_server_is_one_line_with_its_status(
    tmp_path: Path, loopback: Loopback
) -> None:
    loopback.mode = "503"
    assert healthcheck(tmp_path, loopback.port) == (
        1,
        f"error: http://127.0.0.1:{loopback.port}/health answered HTTP 503\n",
    )


def test_a_connection_closed_without_an_answer_is_no_answer(
    tmp_path: Path, loopback: Loopback
) -> None:
    loopback.mode = "close"
    code, line = healthcheck(tmp_path, loopback.port)
    assert code == 1
    assert line.startswith(f"error: no answer from http://127.0.0.1:{loopback.port}/health: ")
    assert line.count("\n") == 1


def test_a_server_that_does_not_answer_in_time_is_no_answer(
    tmp_path: Path, loopback: Loopback
) -> None:
    loopback.mode = "hang"
    assert healthcheck(tmp_path, loopback.port, "--timeout", "0.3") == (
        1,
        f"error: no answer from http://127.0.0.1:{loopback.port}/health: timed out\n",
    )


def test_nothing_listening_is_no_answer(tmp_path: Path) -> None:
    port = free_port()
    code, line = healthcheck(tmp_path, port)
    assert code == 1
    assert line.startswith(f"error: no answer from http://127.0.0.1:{port}/health: ")
    assert "Connection refused" in line and line.count("\n") == 1


def test_something_that_is_not_http_on_the_port_is_a_failed_check(
    tmp_path: Path, loopback: Loopback
) -> None:
    loopback.mode = "garbage"
    code, line = healthcheck(tmp_path, loopback.port)
    assert code == 1
    assert "unexpected" not in line
    url = f"http://127.0.0.1:{loopback.port}/health"
    assert line == f"error: no answer from {url}: SSH-2.0-OpenSSH_9.2\n"  # its line, no CRLF


def test_a_bad_port_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    result = invoke(tmp_path, "healthcheck", env={"MLFLOW_STACK_PORT": "http"})
    assert (result.exit_code, result.stderr) == (
        2,
        "error: MLFLOW_STACK_PORT='http' must be a TCP port number between 1 and 65535\n",
    )


# --- serve's environment ---


def test_the_server_sends_no_telemetry_by_default(tmp_path: Path) -> None:
    env = server_environment(make_settings(), tmp_path / "auth.ini", {"PATH": "/usr/bin"})
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DO_NOT_TRACK"] == "true"
    opted_in = {"MLFLOW_DISABLE_TELEMETRY": "false", "DO_NOT_TRACK": "false"}
    env = server_environment(make_settings(), tmp_path / "auth.ini", opted_in)
    assert (env["MLFLOW_DISABLE_TELEMETRY"], env["DO_NOT_TRACK"]) == ("false", "false")
