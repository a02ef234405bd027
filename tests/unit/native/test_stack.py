"""The native stack's wiring, without starting its services: settings it refuses, the order of
its services, where their logs go, and `running`, `status`, `down` and `up`'s port check on
real records of real processes (tests/integration starts the real servers)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.native import supervisor
from mlflow_stack.native.processes import ProcessRecord, record_of, spawn, stop
from mlflow_stack.native.s3 import SeaweedFSService
from mlflow_stack.native.service import Layout
from mlflow_stack.native.stack import (
    NATIVE_S3_ENDPOINT,
    PORT_ATTEMPTS,
    SERVICE_NAMES,
    STOP_ORDER,
    NativeStack,
    check_native_settings,
    down,
    log_path,
    running,
)
from mlflow_stack.settings.contract import Settings
from mlflow_stack.waiting import NotReady
from tests.conftest import distinct_free_ports
from tests.conftest import make_settings as settings
from tests.unit.native.helpers import SLEEP, fake_server


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"POSTGRES_HOST": "db.example.com"}, "POSTGRES_HOST"),
        (
            {"MLFLOW_STACK_S3_ENDPOINT_URL": "https://127.0.0.1:9000"},
            "MLFLOW_STACK_S3_ENDPOINT_URL",
        ),
        ({"MLFLOW_STACK_S3_ENDPOINT_URL": "http://minio:9000"}, "MLFLOW_STACK_S3_ENDPOINT_URL"),
        ({"MLFLOW_STACK_PORT": "5432"}, "MLFLOW_STACK_PORT"),
        ({"MLFLOW_STACK_S3_ACCESS_KEY": "", "MLFLOW_STACK_S3_SECRET_KEY": ""}, "ACCESS_KEY"),
    ],
)
def test_native_runtime_refuses_settings_it_cannot_honour(
    overrides: dict[str, str], named: str
) -> None:
    with pytest.raises(StackError, match=named):
        check_native_settings(settings(**overrides))
    check_native_settings(settings())


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def free_settings() -> Settings:
    """Settings whose three ports are free on loopback."""
    pg, s3, mlflow = distinct_free_ports(3)
    return settings(
        POSTGRES_PORT=str(pg),
        MLFLOW_STACK_PORT=str(mlflow),
        MLFLOW_STACK_S3_ENDPOINT_URL=f"http://127.0.0.1:{s3}",
    )


@pytest.fixture
def make_stack(tmp_path: Path, free_settings: Settings) -> Callable[..., NativeStack]:
    """A NativeStack on free ports, with stand-in PostgreSQL binaries (never started here)."""
    bin_dir = fake_server(tmp_path / "pg-bin")

    def make(
        data_dir: Path | None = None,
        config: Settings | None = None,
        environ: dict[str, str] | None = None,
    ) -> NativeStack:
        return NativeStack(
            config or free_settings,
            environ or {},
            data_dir or tmp_path / "data",
            s3_server="seaweedfs",
            postgres_bin_dir=bin_dir,
        )

    return make


def supervisor_argv(layout: Layout, name: str) -> list[str]:
    """The command line `up` records for a service's supervisor."""
    options = supervisor.Options(
        name=name,
        argv=[SLEEP, "60"],
        cwd=layout.root,
        log=layout.log(name),
        state=layout.state(name),
    )
    return supervisor.command(options)


@pytest.fixture
def orphaned(tmp_path: Path) -> Iterator[Callable[[Layout, str], psutil.Process]]:
    """Leave a service's record whose supervisor is gone but one of whose processes lives on,
    as after `kill -9` of the supervisor; whatever is left is stopped at the end."""
    records: list[ProcessRecord] = []

    def leave(layout: Layout, name: str) -> psutil.Process:
        layout.create()
        leader = spawn(
            [sys.executable, "-c", f"import subprocess; subprocess.Popen([{SLEEP!r}, '60'])"],
            env=dict(os.environ),
            cwd=tmp_path,
            log_path=tmp_path / f"{name}-leader.log",
        )
        record = replace(record_of(leader), argv=supervisor_argv(layout, name))
        assert leader.wait(10) == 0  # it left its child behind, in its session
        record.save(layout.record(name))
        records.append(record)
        (orphan,) = record.members()
        return orphan

    yield leave
    for record in records:
        stop(record, sig=signal.SIGKILL, timeout=5)


def alive(proc: psutil.Process) -> bool:
    """A zombie is gone: its new parent (init) reaps it when it gets to it."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def dead_record(layout: Layout, name: str) -> ProcessRecord:
    """A record of a process that has exited, with the state its supervisor left."""
    layout.create()
    proc = subprocess.Popen([SLEEP, "0"])
    record = replace(record_of(proc), argv=supervisor_argv(layout, name))
    proc.wait(5)
    record.save(layout.record(name))
    supervisor.SupervisorState(supervisor=proc.pid, state="running", child=proc.pid).save(
        layout.state(name)
    )
    return record


# -- wiring -----------------------------------------------------------------------------------


def test_services_start_postgres_s3_mlflow_and_stop_in_reverse(
    make_stack: Callable[..., NativeStack],
) -> None:
    stack = make_stack()
    assert [s.name for s in stack.services] == ["postgres", "s3", "mlflow"]
    assert list(SERVICE_NAMES) == ["postgres", "s3", "mlflow"]
    assert [cls.name for cls in STOP_ORDER] == ["mlflow", "s3", "postgres"]
    assert isinstance(stack.services[1], SeaweedFSService)
    for service, cls in zip(stack.services, reversed(STOP_ORDER), strict=True):
        assert service.stop_signal == cls.stop_signal  # `down` stops them as `up` would


def test_every_service_logs_below_the_resolved_data_dir(
    make_stack: Callable[..., NativeStack], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stack = make_stack(Path("data"))
    assert stack.layout.root == tmp_path / "data"
    for name in SERVICE_NAMES:
        assert log_path(Path("data"), name) == tmp_path / "data" / "logs" / f"{name}.log"
        assert stack.layout.log(name) == log_path(tmp_path / "data", name)
    assert not (tmp_path / "data").exists()  # making a stack creates nothing yet


def test_an_empty_s3_endpoint_is_the_native_one_and_mlflow_is_told(
    make_stack: Callable[..., NativeStack],
) -> None:
    given = {"MLFLOW_STACK_S3_ENDPOINT_URL": "", "SOMETHING": "kept"}
    stack = make_stack(config=settings(MLFLOW_STACK_S3_ENDPOINT_URL=""), environ=given)
    assert stack.settings.s3_endpoint_url == NATIVE_S3_ENDPOINT == "http://127.0.0.1:9000"
    mlflow = stack.services[2].environment()
    assert mlflow["MLFLOW_STACK_S3_ENDPOINT_URL"] == NATIVE_S3_ENDPOINT
    assert mlflow["SOMETHING"] == "kept"
    assert given["MLFLOW_STACK_S3_ENDPOINT_URL"] == ""  # the caller's mapping is left alone
    assert 9000 in stack.services[1].ports()


# -- running, status and down without anything started ----------------------------------------


def test_nothing_runs_in_an_empty_or_a_missing_data_dir(tmp_path: Path) -> None:
    assert running(tmp_path / "missing") == []
    assert not (tmp_path / "missing").exists()
    Layout(tmp_path / "empty").create()
    assert running(tmp_path / "empty") == []


def test_down_with_nothing_running_stops_nothing_and_creates_nothing(tmp_path: Path) -> None:
    assert down(tmp_path / "missing") == []
    assert not (tmp_path / "missing").exists()
    layout = Layout(tmp_path / "data")
    layout.create()
    assert down(layout.root) == []


def test_records_of_dead_processes_count_as_stopped_and_are_cleared_by_down(
    make_stack: Callable[..., NativeStack], tmp_path: Path
) -> None:
    stack = make_stack()
    for name in SERVICE_NAMES:
        dead_record(stack.layout, name)
    assert running(stack.layout.root) == []
    statuses = stack.status()
    assert [(s.name, s.state, s.pid, s.supervisor) for s in statuses] == [
        (name, "stopped", None, None) for name in SERVICE_NAMES
    ]
    assert down(stack.layout.root) == []
    assert sorted(p.name for p in stack.layout.run.iterdir()) == ["lock"]  # records are gone


def test_status_of_a_stack_that_never_ran(make_stack: Callable[..., NativeStack]) -> None:
    stack = make_stack()
    statuses = stack.status()
    assert [s.as_dict() for s in statuses] == [
        {
            "name": service.name,
            "state": "stopped",
            "pid": None,
            "resident_bytes": 0,
            "endpoint": service.endpoint(),
            "detail": "",
            "restarts": 0,
            "supervisor": None,
        }
        for service in stack.services
    ]
    assert statuses[2].endpoint == stack.settings.tracking_uri


def test_what_a_dead_supervisor_left_is_unhealthy_running_and_stopped_by_down(
    make_stack: Callable[..., NativeStack],
    orphaned: Callable[[Layout, str], psutil.Process],
) -> None:
    stack = make_stack()
    orphan = orphaned(stack.layout, "mlflow")
    record = ProcessRecord.load(stack.layout.record("mlflow"))
    assert record is not None
    assert running(stack.layout.root) == ["mlflow"]

    postgres, s3, mlflow = stack.status()
    assert (postgres.state, s3.state) == ("stopped", "stopped")
    assert mlflow.state == "unhealthy"
    assert mlflow.detail == (
        f"its supervisor (pid {record.pid}) is gone and 1 process(es) of it are unsupervised: "
        "`mlflow-stack up` restarts it"
    )
    assert (mlflow.supervisor, mlflow.pid) == (record.pid, None)  # no server process it knows

    assert down(stack.layout.root, ["postgres", "s3"]) == []  # only the services asked for
    assert alive(orphan)
    assert down(stack.layout.root) == ["mlflow"]
    assert not alive(orphan)
    assert not stack.layout.record("mlflow").exists()
    assert running(stack.layout.root) == []


# -- up, as far as it goes without starting a service -----------------------------------------


@pytest.mark.parametrize(
    ("service", "source"),
    [
        ("postgres", "POSTGRES_PORT"),
        ("s3", "MLFLOW_STACK_S3_ENDPOINT_URL"),
        ("mlflow", "MLFLOW_STACK_PORT"),
    ],
)
def test_up_refuses_a_port_another_program_listens_on_and_starts_nothing(
    make_stack: Callable[..., NativeStack], free_settings: Settings, service: str, source: str
) -> None:
    stack = make_stack()
    port = {
        "postgres": free_settings.postgres_port,
        "s3": int(free_settings.s3_endpoint_url.rsplit(":", 1)[1]),
        "mlflow": free_settings.port,
    }[service]
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", port))
        other_program.listen()
        expected = rf"port {port} on 127\.0\.0\.1 \({re.escape(source)}\) is already in use"
        with pytest.raises(StackError, match=expected):
            stack.up()
    assert sorted(p.name for p in stack.layout.run.iterdir()) == ["lock"]  # no supervisor
    assert list(stack.layout.logs.iterdir()) == []
    assert not (stack.layout.root / "postgres").exists()  # nothing was prepared either


def supervised(
    stack: NativeStack, sleepers: Callable[[], subprocess.Popen[bytes]], **state: object
) -> dict[str, ProcessRecord]:
    """Every service's supervisor "running" (stand-in processes), reporting ``state``."""
    stack.layout.create()
    records = {}
    for name in SERVICE_NAMES:
        records[name] = replace(record_of(sleepers()), argv=supervisor_argv(stack.layout, name))
        records[name].save(stack.layout.record(name))
        report: dict[str, Any] = {"state": "running", "child": sleepers().pid, **state}
        supervisor.SupervisorState(supervisor=records[name].pid, **report).save(
            stack.layout.state(name)
        )
    return records


def checks(stack: NativeStack, outcomes: dict[str, list[str]]) -> dict[str, int]:
    """Each service's health check answers from its list ("ok", or a NotReady reason), then
    "ok" for good; returns how often each was asked."""
    asked = dict.fromkeys(SERVICE_NAMES, 0)
    for service in stack.services:

        def check(timeout: float = 1.0, name: str = service.name) -> None:
            asked[name] += 1
            queue = outcomes.get(name, [])
            answer = queue.pop(0) if queue else "ok"
            if answer != "ok":
                raise NotReady(answer)

        service.check = check  # type: ignore[method-assign]
    return asked


def test_up_starts_nothing_when_every_supervisor_runs(
    make_stack: Callable[..., NativeStack], sleepers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    stack = make_stack()
    records = supervised(stack, sleepers)
    asked = checks(stack, {})
    assert stack.up() is False
    assert asked == dict.fromkeys(SERVICE_NAMES, 1)  # each one healthy, asked once
    assert {name: ProcessRecord.load(stack.layout.record(name)) for name in records} == records
    assert list(stack.layout.logs.iterdir()) == []
    assert running(stack.layout.root) == list(SERVICE_NAMES)


def test_up_waits_for_a_running_service_that_is_not_healthy_yet(
    make_stack: Callable[..., NativeStack],
    sleepers: Callable[[], subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As after a kill -9 of the MLflow server: its supervisor has started it again, and it
    is still importing. `up` must not say "already running" while clients get errors."""
    stack = make_stack()
    supervised(stack, sleepers)
    asked = checks(stack, {"mlflow": ["still starting, port 5000 not open yet"] * 2})
    with caplog.at_level("INFO", logger="mlflow_stack.native.stack"):
        assert stack.up() is True
    assert asked["mlflow"] == 3 and asked["postgres"] == asked["s3"] == 1
    assert "mlflow is running but not healthy (still starting" in caplog.text
    assert re.search(r"mlflow +healthy in +[\d.]+ s", caplog.text)
    assert "postgres is already running" in caplog.text


def test_up_waits_while_a_supervisor_restarts_its_server(
    make_stack: Callable[..., NativeStack], sleepers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    stack = make_stack()
    supervised(stack, sleepers)
    asked = checks(stack, {})
    state = stack.layout.state("mlflow")
    running_state = supervisor.SupervisorState.load(state)
    assert running_state is not None
    backoff = replace(running_state, state="backoff", last_exit="was killed by SIGKILL", restarts=1)
    backoff.save(state)

    def restarted_later() -> None:
        time.sleep(1.0)
        running_state.save(state)

    thread = threading.Thread(target=restarted_later)
    thread.start()
    try:
        assert stack.up() is True  # waited for the restart, then for the check
    finally:
        thread.join()
    assert asked["mlflow"] == 1  # not asked while its supervisor said backoff


def test_up_gives_up_on_a_running_service_that_never_gets_healthy(
    make_stack: Callable[..., NativeStack], sleepers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    stack = make_stack()
    supervised(stack, sleepers)
    checks(stack, {"mlflow": ["/health answered HTTP 503"] * 1000})
    mlflow = stack.services[-1]
    mlflow.start_timeout = 1.5  # type: ignore[misc]
    with pytest.raises(StackError, match=r"mlflow did not become ready within 1.5 s: /health"):
        stack.up()


def test_a_service_is_started_again_only_once_what_its_dead_supervisor_left_is_gone(
    make_stack: Callable[..., NativeStack],
    orphaned: Callable[[Layout, str], psutil.Process],
    sleepers: Callable[[], subprocess.Popen[bytes]],
) -> None:
    stack = make_stack()
    postgres, s3, mlflow = stack.services
    orphan = orphaned(stack.layout, "mlflow")
    dead_record(stack.layout, "s3")
    live = replace(record_of(sleepers()), argv=supervisor_argv(stack.layout, "postgres"))
    live.save(stack.layout.record("postgres"))

    assert stack._needs_start(mlflow) is True
    assert not alive(orphan)  # stopped first: it may hold the port or the data
    assert not stack.layout.record("mlflow").exists()
    assert stack._needs_start(s3) is True
    assert not stack.layout.record("s3").exists()
    assert stack._needs_start(postgres) is False  # its supervisor runs: left alone
    assert ProcessRecord.load(stack.layout.record("postgres")) == live


# -- a port another program takes between the port check and the server's bind ---------------

BIND_OR_SAY_TAKEN = """
import socket, sys, time
from pathlib import Path
port, ready = int(sys.argv[1]), Path(sys.argv[2])
sock = socket.socket()
try:
    sock.bind(("127.0.0.1", port))
except OSError:
    print(f"Port allocation failed: port {port} for Filer (specified by flag filer.port)",
          flush=True)
    sys.exit(1)
sock.listen()
ready.write_text(str(port))
time.sleep(600)
"""


class PortPicker(SeaweedFSService):
    """A service that binds one port it picked itself, reports readiness through a file, and
    picks the next port of ``offers`` each time a start says its port was taken."""

    start_timeout = 20.0

    def __init__(self, stack: NativeStack, offers: list[int]) -> None:
        super().__init__(stack.settings, stack.layout)
        self.offers = offers
        self.port = offers.pop(0)
        self.problems: list[str] = []

    def prepare(self) -> None:
        self.ready.unlink(missing_ok=True)

    @property
    def ready(self) -> Path:
        return self.layout.root / "picker.ready"

    def command(self) -> list[str]:
        return [sys.executable, "-c", BIND_OR_SAY_TAKEN, str(self.port), str(self.ready)]

    def check(self, timeout: float = 1.0) -> None:
        if not self.ready.exists():
            raise NotReady("not listening yet")

    def release_port(self, problem: str) -> bool:
        self.problems.append(problem)
        if not self.offers:
            return False
        self.port = self.offers.pop(0)
        return True


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", 0))
        other_program.listen()
        yield other_program.getsockname()[1]


def test_a_service_whose_own_port_was_taken_as_it_started_starts_again_on_another(
    make_stack: Callable[..., NativeStack], taken_port: int
) -> None:
    stack = make_stack()
    (free,) = distinct_free_ports(1)
    picker = PortPicker(stack, [taken_port, free])
    stack.services = [picker]
    try:
        assert stack.up() is True
        assert picker.ready.read_text() == str(free)
        (problem,) = picker.problems
        assert f"Port allocation failed: port {taken_port}" in problem
        assert running(stack.layout.root) == ["s3"]
        log = stack.layout.log("s3").read_text()
        assert log.count("=== ") >= 2  # the supervisor's banner: started twice
    finally:
        down(stack.layout.root)
    assert running(stack.layout.root) == []


def test_a_port_taken_on_every_attempt_or_not_the_services_own_stops_up_with_the_reason(
    make_stack: Callable[..., NativeStack], taken_port: int
) -> None:
    stack = make_stack()
    picker = PortPicker(stack, [taken_port] * (PORT_ATTEMPTS + 5))
    stack.services = [picker]
    with pytest.raises(StackError, match=rf"Port allocation failed: port {taken_port}"):
        stack.up()
    assert len(picker.problems) == PORT_ATTEMPTS - 1  # the last failure is not retried
    assert running(stack.layout.root) == []
    stack = make_stack()
    picker = PortPicker(stack, [taken_port])  # nothing left to offer: not its port to move
    stack.services = [picker]
    with pytest.raises(StackError, match=rf"Port allocation failed: port {taken_port}"):
        stack.up()
    assert len(picker.problems) == 1
    assert running(stack.layout.root) == []
