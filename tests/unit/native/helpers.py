"""Shared pieces of the native runtime's unit tests: stand-in binaries, real supervised
processes, a tiny HTTP server on loopback, waiting for something to happen."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from mlflow_stack.native.processes import record_of, spawn
from mlflow_stack.native.supervisor import Options, SupervisorState, command

SLEEP = shutil.which("sleep") or "/bin/sleep"
SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]


def wait_until(what: str, predicate: Callable[[], object], timeout: float = 15) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def executable(path: Path, script: str = "#!/bin/sh\nexit 0\n") -> Path:
    """A script every account may run (PostgreSQL runs as `postgres` when we are root)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | 0o444)
    return path


def fake_server(directory: Path) -> Path:
    executable(directory / "postgres")
    executable(directory / "initdb")
    return directory


class Supervised:
    """A real supervisor (``python -m mlflow_stack.native.supervisor``) of a real child."""

    def __init__(self, tmp_path: Path, argv: list[str], **overrides: object) -> None:
        options = Options(
            name="demo",
            argv=argv,
            cwd=tmp_path,
            log=tmp_path / "demo.log",
            state=tmp_path / "demo.state",
            stop_timeout=5,
            backoff_initial=0.25,
            backoff_max=1.0,
        )
        self.options = replace(options, **overrides)  # type: ignore[arg-type]
        self.proc = spawn(
            command(self.options), env=dict(os.environ), cwd=tmp_path, log_path=self.options.log
        )
        self.record = record_of(self.proc)

    def state(self) -> SupervisorState:
        state = wait_until("its state file", lambda: SupervisorState.load(self.options.state))
        return state  # type: ignore[return-value]

    def running_child(self, other_than: int | None = None) -> psutil.Process:
        def ready() -> psutil.Process | None:
            state = SupervisorState.load(self.options.state)
            if state is None or state.state != "running" or state.child == other_than:
                return None
            return state.child_process()

        return wait_until("a running child", ready)  # type: ignore[return-value]

    def log(self) -> str:
        return self.options.log.read_text()


@dataclass
class Route:
    status: int = 200
    #: (user, password) the route demands; others get 401.
    auth: tuple[str, str] | None = None
    body: bytes = b"{}"


@dataclass
class LoopbackHTTP:
    """A tiny real HTTP server on 127.0.0.1 answering GETs from a table of routes."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization)
    server: ThreadingHTTPServer | None = None

    def start(self) -> LoopbackHTTP:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                header = self.headers.get("Authorization")
                owner.requests.append((self.path, header))
                route = owner.routes.get(self.path, Route(404))
                status = route.status
                if route.auth is not None:
                    token = base64.b64encode(":".join(route.auth).encode()).decode()
                    if header != f"Basic {token}":
                        status = 401
                body = route.body
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
