"""The native stack: PostgreSQL, then S3, then MLflow, each healthy before the next starts.

Each service runs under a supervisor of its own (see supervisor.py), which restarts it when it
crashes and writes its log. State lives under one data directory: ``postgres/`` (the cluster,
or a link to it, see reach.py), ``s3/`` (objects and the S3 server's config),
``logs/<service>.log`` (rotated by size) and ``run/<service>.json`` (the supervisor's pid
record) with ``run/<service>.state`` (what the supervisor reports). A second ``up`` starts only
what is not running, and repairs a service whose supervisor died; ``down`` stops everything in
reverse order and keeps the data.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from mlflow_stack.errors import StackError
from mlflow_stack.native import supervision, supervisor
from mlflow_stack.native.logfile import DEFAULT_KEEP, DEFAULT_MAX_BYTES
from mlflow_stack.native.mlflow import MlflowService
from mlflow_stack.native.postgres import PostgresService
from mlflow_stack.native.processes import ProcessRecord, port_in_use, record_of, spawn, stop, tail
from mlflow_stack.native.s3 import S3_MEMORY_LIMIT, SeaweedFSService, s3_service_class
from mlflow_stack.native.service import STATUS_TIMEOUT, Layout, Service
from mlflow_stack.settings.contract import Settings
from mlflow_stack.waiting import NotReady, wait_for

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "localhost"})
NATIVE_S3_ENDPOINT = "http://127.0.0.1:9000"  # when MLFLOW_STACK_S3_ENDPOINT_URL is empty
# Stop order and how each service is stopped; needs no settings, so `down` always works.
STOP_ORDER: tuple[type[Service], ...] = (MlflowService, SeaweedFSService, PostgresService)
SERVICE_NAMES = tuple(cls.name for cls in reversed(STOP_ORDER))
#: `down` waits this much longer than a service's stop timeout: its supervisor kills it first.
SUPERVISOR_GRACE = 15.0
#: Starts of a service whose own port another program took before the service could bind it.
PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # healthy | unhealthy | stopped
    pid: int | None
    resident_bytes: int
    endpoint: str
    detail: str = ""
    restarts: int = 0  # how often its supervisor restarted it since `up`
    supervisor: int | None = None  # the supervisor's pid (pid is the server's)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_native_settings(settings: Settings) -> None:
    """The native runtime runs its own servers on loopback: the settings must point there."""
    problems = []
    if settings.postgres_host not in LOOPBACK:
        problems.append(
            f"POSTGRES_HOST={settings.postgres_host!r}: the native runtime runs its own "
            "PostgreSQL on 127.0.0.1 (for an external database use `mlflow-stack serve`)"
        )
    endpoint = urlsplit(settings.s3_endpoint_url)
    if endpoint.scheme != "http" or endpoint.hostname not in LOOPBACK or not endpoint.port:
        problems.append(
            f"MLFLOW_STACK_S3_ENDPOINT_URL={settings.s3_endpoint_url!r}: the native runtime "
            "runs its own S3 server and needs http://127.0.0.1:<port>"
        )
    if not settings.s3_access_key:
        problems.append("MLFLOW_STACK_S3_ACCESS_KEY is empty: the native S3 server needs keys")
    ports = [settings.postgres_port, settings.port, endpoint.port or 0]
    if len(set(ports)) != len(ports):
        problems.append(
            "POSTGRES_PORT, MLFLOW_STACK_PORT and the port of MLFLOW_STACK_S3_ENDPOINT_URL "
            "must all differ"
        )
    if problems:
        raise StackError("; ".join(problems))


@contextmanager
def _exclusive(layout: Layout) -> Iterator[None]:
    """One up/down at a time per data directory."""
    layout.create()
    with (layout.run / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _live_record(layout: Layout, name: str) -> ProcessRecord | None:
    """The service's record while anything of it lives (its supervisor, or what it left)."""
    record = ProcessRecord.load(layout.record(name))
    if record and (record.process() or record.members()):
        return record
    return None


class NativeStack:
    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str],
        data_dir: Path,
        *,
        s3_server: str = "auto",
        postgres_bin_dir: Path | None = None,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
        log_keep: int = DEFAULT_KEEP,
        s3_memory_limit: int = S3_MEMORY_LIMIT,
    ) -> None:
        if not settings.s3_endpoint_url:
            settings = replace(settings, s3_endpoint_url=NATIVE_S3_ENDPOINT)
        check_native_settings(settings)
        environ = {**environ, "MLFLOW_STACK_S3_ENDPOINT_URL": settings.s3_endpoint_url}
        self.settings = settings
        self.layout = Layout(data_dir.resolve())
        self.log_max_bytes = log_max_bytes
        self.log_keep = log_keep
        self.services: list[Service] = [
            PostgresService(settings, self.layout, postgres_bin_dir),
            s3_service_class(s3_server)(settings, self.layout, s3_memory_limit),
            MlflowService(settings, self.layout, environ),
        ]

    def up(self) -> bool:
        """Start what is not running, and wait for what runs but is not healthy (its supervisor
        restarting it): either way, every service is healthy on return. Returns False when
        everything already was."""
        with _exclusive(self.layout):
            pending = [s for s in self.services if self._needs_start(s)]
            if not pending:
                waited = [self._await_running(s) for s in self.services]  # each, in order
                return any(waited)
            self._check_ports(pending)
            started: list[Service] = []
            try:
                for service in self.services:
                    if service not in pending:
                        self._await_running(service)
                        continue
                    began = time.monotonic()
                    self._start(service, started)
                    log.info(
                        "%-8s healthy in %4.1f s  %s",
                        service.name,
                        time.monotonic() - began,
                        service.describe(),
                    )
            except BaseException:
                for service in reversed(started):
                    _stop_service(self.layout, service.name, type(service))
                raise
            return True

    def _start(self, service: Service, started: list[Service]) -> None:
        """Start ``service`` and wait until it is healthy. A port that another program took
        between the port check and the server's bind is not the user's to fix: when it is one
        the service picked for itself, it picks another and starts again."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            service.prepare()
            proc = self._supervise(service)
            started.append(service)
            try:
                self._await_healthy(service, proc)
                return
            except StackError as error:
                if attempt == PORT_ATTEMPTS or not service.release_port(str(error)):
                    raise
                log.warning("%s: %s; starting it again on another port", service.name, error)
                _stop_service(self.layout, service.name, type(service))
                started.remove(service)

    def _await_running(self, service: Service) -> bool:
        """Wait until a running service is healthy, as a start would; True when it was not.

        Its supervisor may be restarting it after a crash, or it may still be starting: `up`
        then must not say "already running" while clients still get errors."""
        record = _live_record(self.layout, service.name)
        state_path = self.layout.state(service.name)

        def healthy() -> None:
            problem = supervision.problem(record, state_path) if record else None
            if problem is not None:
                raise NotReady(problem)
            service.check()

        try:
            healthy()
        except NotReady as reason:
            log.info("%s is running but not healthy (%s): waiting for it", service.name, reason)
        else:
            log.info("%s is already running", service.name)
            return False
        began = time.monotonic()
        log_path = self.layout.log(service.name)
        wait_for(service.name, healthy, timeout=service.start_timeout, hint=f"log: {log_path}")
        log.info(
            "%-8s healthy in %4.1f s  %s",
            service.name,
            time.monotonic() - began,
            service.describe(),
        )
        return True

    def _needs_start(self, service: Service) -> bool:
        """True unless the service's supervisor runs; stops what a dead supervisor left."""
        record = ProcessRecord.load(self.layout.record(service.name))
        if record is None:
            return True
        if record.process() is not None:
            return False
        leftovers = record.members()
        if leftovers:
            log.warning(
                "%s: its supervisor (pid %s) is gone; stopping the %d process(es) it left "
                "and starting it again",
                service.name,
                record.pid,
                len(leftovers),
            )
            stop(record, sig=service.stop_signal, timeout=service.stop_timeout)
        self.layout.record(service.name).unlink(missing_ok=True)
        return True

    def _supervise(self, service: Service) -> subprocess.Popen[bytes]:
        """Start the service's supervisor, which starts the service; record the supervisor."""
        name = service.name
        options = supervisor.Options(
            name=name,
            argv=service.command(),
            cwd=service.workdir,
            log=self.layout.log(name),
            state=self.layout.state(name),
            user=service.user,
            stop_signal=service.stop_signal,
            stop_timeout=service.stop_timeout,
            log_max_bytes=self.log_max_bytes,
            log_keep=self.log_keep,
        )
        env = service.environment()
        if "PYTHONPATH" in os.environ:  # the supervisor is Python: let it import us as we did
            env.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
        self.layout.state(name).unlink(missing_ok=True)
        proc = spawn(
            supervisor.command(options),
            env=env,
            cwd=self.layout.root,
            log_path=self.layout.log(name),
            banner=f"mlflow-stack supervisor of {name}",
        )
        record_of(proc).save(self.layout.record(name))
        return proc

    def _check_ports(self, pending: list[Service]) -> None:
        for service in pending:
            for port, source in service.ports().items():
                if port_in_use(port):
                    raise StackError(
                        f"port {port} on 127.0.0.1 ({source}) is already in use by another "
                        "program: pick a free port"
                    )

    def _await_healthy(self, service: Service, proc: subprocess.Popen[bytes]) -> None:
        log_path = self.layout.log(service.name)
        state_path = self.layout.state(service.name)

        def healthy() -> None:
            code = proc.poll()
            if code is not None:
                last = tail(log_path, 1).strip() or "(no output)"
                raise StackError(
                    f"the supervisor of {service.name} exited with code {code} while starting: "
                    f"{last} (log: {log_path})"
                )
            state = supervisor.SupervisorState.load(state_path)
            if state is not None and state.restarts > 0:  # it exited before it was healthy
                last = state.last_line or "(no output)"
                raise StackError(
                    f"{service.name} {state.last_exit} while starting: {last} (log: {log_path})"
                )
            service.check()

        wait_for(service.name, healthy, timeout=service.start_timeout, hint=f"log: {log_path}")

    def status(self) -> list[ServiceStatus]:
        return [self._status(service) for service in self.services]

    def _status(self, service: Service) -> ServiceStatus:
        name = service.name
        record = _live_record(self.layout, name)
        if record is None:
            return ServiceStatus(name, "stopped", None, 0, service.endpoint())
        state_path = self.layout.state(name)
        restarts, last_exit = supervision.restarts(state_path)
        problem = supervision.problem(record, state_path)  # first: orphans may pass check()
        if problem is None:
            try:
                service.check(timeout=STATUS_TIMEOUT)
            except (NotReady, StackError) as reason:
                problem = str(reason)
        if problem is None:
            state = "healthy"
            detail = f"restarted {restarts}x, last because it {last_exit}" if restarts else ""
        else:
            state, detail = "unhealthy", problem
        supervised = supervision.is_supervised(record)
        return ServiceStatus(
            name,
            state,
            supervision.server_pid(state_path) if supervised else record.pid,
            record.resident_bytes(),
            service.endpoint(),
            detail,
            restarts,
            record.pid if supervised else None,
        )


def _stop_service(layout: Layout, name: str, cls: type[Service]) -> bool:
    record = _live_record(layout, name)
    if record is None:
        layout.record(name).unlink(missing_ok=True)
        layout.state(name).unlink(missing_ok=True)
        return False
    began = time.monotonic()
    graceful = stop(record, sig=cls.stop_signal, timeout=cls.stop_timeout + SUPERVISOR_GRACE)
    final = supervisor.SupervisorState.load(layout.state(name))
    if final is not None and final.graceful is False:  # its supervisor had to kill it
        graceful = False
    layout.record(name).unlink(missing_ok=True)
    layout.state(name).unlink(missing_ok=True)
    how = "stopped" if graceful else "killed (did not stop in time)"
    log.info("%-8s %s in %.1f s", name, how, time.monotonic() - began)
    return True


def down(data_dir: Path, services: Iterable[str] = SERVICE_NAMES) -> list[str]:
    """Stop the given running services in reverse start order; return the ones stopped."""
    layout = Layout(data_dir.resolve())
    if not layout.run.is_dir():
        return []
    wanted = set(services)
    with _exclusive(layout):
        return [
            cls.name
            for cls in STOP_ORDER
            if cls.name in wanted and _stop_service(layout, cls.name, cls)
        ]


def running(data_dir: Path) -> list[str]:
    """The services with a live process under ``data_dir`` (needs no settings)."""
    layout = Layout(data_dir.resolve())
    return [name for name in SERVICE_NAMES if _live_record(layout, name)]


def log_path(data_dir: Path, service: str) -> Path:
    return Layout(data_dir.resolve()).log(service)
