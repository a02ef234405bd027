"""The native stack: PostgreSQL, then S3, then MLflow, each healthy before the next starts.

State lives under one data directory: ``postgres/`` (the cluster), ``s3/`` (objects and the
S3 server's config), ``logs/<service>.log`` and ``run/<service>.json`` (pid records). A second
``up`` starts only what is not running; ``down`` stops everything in reverse order and keeps
the data.
"""

from __future__ import annotations

import fcntl
import logging
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from mlflow_stack.errors import StackError
from mlflow_stack.native.mlflow import MlflowService
from mlflow_stack.native.postgres import PostgresService
from mlflow_stack.native.processes import ProcessRecord, port_in_use, record_of, spawn, stop, tail
from mlflow_stack.native.s3 import SeaweedFSService, s3_service_class
from mlflow_stack.native.service import Layout, Service
from mlflow_stack.settings import Settings
from mlflow_stack.waiting import NotReady, wait_for

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "localhost"})
NATIVE_S3_ENDPOINT = "http://127.0.0.1:9000"  # when MLFLOW_STACK_S3_ENDPOINT_URL is empty
# Stop order and how each service is stopped; needs no settings, so `down` always works.
STOP_ORDER: tuple[type[Service], ...] = (MlflowService, SeaweedFSService, PostgresService)
SERVICE_NAMES = tuple(cls.name for cls in reversed(STOP_ORDER))


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # healthy | unhealthy | stopped
    pid: int | None
    resident_bytes: int
    endpoint: str
    detail: str = ""

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
    record = ProcessRecord.load(layout.record(name))
    if record and (record.process() or record.group()):
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
    ) -> None:
        if not settings.s3_endpoint_url:
            settings = replace(settings, s3_endpoint_url=NATIVE_S3_ENDPOINT)
        check_native_settings(settings)
        environ = {**environ, "MLFLOW_STACK_S3_ENDPOINT_URL": settings.s3_endpoint_url}
        self.settings = settings
        self.layout = Layout(data_dir.resolve())
        self.services: list[Service] = [
            PostgresService(settings, self.layout, postgres_bin_dir),
            s3_service_class(s3_server)(settings, self.layout),
            MlflowService(settings, self.layout, environ),
        ]

    def up(self) -> bool:
        """Start what is not running. Returns False when everything already was."""
        with _exclusive(self.layout):
            pending = [s for s in self.services if not _live_record(self.layout, s.name)]
            if not pending:
                return False
            self._check_ports(pending)
            started: list[Service] = []
            try:
                for service in self.services:
                    if service not in pending:
                        log.info("%s is already running", service.name)
                        continue
                    began = time.monotonic()
                    service.prepare()
                    proc = spawn(
                        service.command(),
                        env=service.environment(),
                        cwd=service.workdir,
                        log_path=self.layout.log(service.name),
                        user=service.user,
                    )
                    record_of(proc).save(self.layout.record(service.name))
                    started.append(service)
                    self._await_healthy(service, proc)
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

        def healthy() -> None:
            code = proc.poll()
            if code is not None:
                last = tail(log_path, 1).strip() or "(no output)"
                raise StackError(
                    f"{service.name} exited with code {code} while starting: {last} "
                    f"(log: {log_path})"
                )
            service.check()

        wait_for(service.name, healthy, timeout=service.start_timeout, hint=f"log: {log_path}")

    def status(self) -> list[ServiceStatus]:
        result = []
        for service in self.services:
            record = _live_record(self.layout, service.name)
            if record is None:
                result.append(ServiceStatus(service.name, "stopped", None, 0, service.endpoint()))
                continue
            state, detail = "healthy", ""
            try:
                service.check()
            except (NotReady, StackError) as reason:
                state, detail = "unhealthy", str(reason)
            result.append(
                ServiceStatus(
                    service.name,
                    state,
                    record.pid,
                    record.resident_bytes(),
                    service.endpoint(),
                    detail,
                )
            )
        return result


def _stop_service(layout: Layout, name: str, cls: type[Service]) -> bool:
    record = _live_record(layout, name)
    if record is None:
        layout.record(name).unlink(missing_ok=True)
        return False
    began = time.monotonic()
    graceful = stop(record, sig=cls.stop_signal, timeout=cls.stop_timeout)
    layout.record(name).unlink(missing_ok=True)
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
