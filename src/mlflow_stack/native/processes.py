"""Detached service processes: start, recognise after a restart of the CLI, stop, measure.

Each service runs in its own session, led by its supervisor, and is remembered by a small JSON
record holding the leader's pid and start time, so that a recycled pid is never mistaken for
it. The service's processes are the members of that session and their descendants (PostgreSQL
backends start sessions of their own).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import random
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from mlflow_stack.errors import StackError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    started: float  # psutil create_time of the pid, to tell it from a recycled pid
    argv: list[str]

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def process(self) -> psutil.Process | None:
        """The live process this record describes, or None."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.started) > 1 or proc.status() == "zombie":
                return None
            return proc
        except psutil.Error:
            return None

    def group(self) -> list[psutil.Process]:
        """Every live process of the service's session (the leader's pid is the session id).

        Linux does not reuse a pid while it names a live session, so members of a dead
        leader's session are its orphans, unless another process now has that pid (and with
        it, perhaps, a session of its own): then nothing is ours.
        """
        with contextlib.suppress(psutil.NoSuchProcess):
            if abs(psutil.Process(self.pid).create_time() - self.started) > 1:
                return []  # the pid was recycled
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if (
                    os.getsid(proc.pid) == self.pid
                    and proc.create_time() >= self.started - 1
                    and proc.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(proc)
        return found

    def members(self) -> list[psutil.Process]:
        """The session's processes and all their descendants: everything to stop.

        PostgreSQL backends start sessions of their own, so the session alone misses them.
        """
        found = {proc.pid: proc for proc in self.group()}
        for root in list(found.values()):
            with contextlib.suppress(psutil.Error):
                for child in root.children(recursive=True):
                    found.setdefault(child.pid, child)
        return living(found.values())

    def resident_bytes(self) -> int:
        """Resident memory of the session's processes (as before supervision, PostgreSQL's
        backends are not counted: their RSS is mostly the shared buffers, counted again each)."""
        total = 0
        for proc in self.group():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total


def living(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """The processes that still run (a zombie counts as gone: nobody may ever reap it)."""
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    user: str | None = None,
    banner: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached in a new session, appending its output to ``log_path``."""
    account = pwd.getpwnam(user) if user else None
    with log_path.open("ab") as log_file:
        title = banner or argv[0]
        log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {title}\n".encode())
        log_file.flush()
        try:
            return subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
            )
        except OSError as error:
            raise StackError(f"cannot start {argv[0]}: {error.strerror}") from None


def record_of(proc: subprocess.Popen[bytes]) -> ProcessRecord:
    try:
        started = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        started = 0.0
    return ProcessRecord(pid=proc.pid, started=started, argv=[str(a) for a in proc.args])


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none of ``procs`` runs; return those still running after ``timeout``.

    A zombie counts as gone: an orphan's new parent may never reap it (a container's init).
    """
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:  # reap the ones that are our own children
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(proc.pid, os.WNOHANG)
        alive = [proc for proc in procs if _alive(proc)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def stop(record: ProcessRecord, *, sig: int, timeout: float) -> bool:
    """Stop the service's whole process tree; True when it ended without SIGKILL.

    ``sig`` goes to the leader first, so that it can shut its children down in order; once
    the leader is gone, whatever is left of the service gets ``sig`` too. After ``timeout``
    seconds, the rest is killed.
    """
    deadline = time.monotonic() + timeout
    before = record.members()  # descendants in sessions of their own are found through it
    leader = record.process()
    if leader is not None:
        with contextlib.suppress(psutil.Error):
            leader.send_signal(sig)
        _wait_gone([leader], max(0.0, deadline - time.monotonic()))
    left = {p.pid: p for p in before if _alive(p)}
    left.update((p.pid, p) for p in record.members())
    orphans = list(left.values())
    for proc in orphans:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    alive = _wait_gone(orphans, max(0.5, deadline - time.monotonic()))
    for proc in alive:
        log.warning("killing pid %s after %.0f s", proc.pid, timeout)
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone(alive, 5)
    return not alive


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: The lowest port :func:`quiet_port` hands out: below it sit the well-known services.
QUIET_FLOOR = 10000


def ephemeral_ports(path: Path | None = None) -> range:
    """The ports the kernel hands to outgoing connections and to ``bind(("", 0))``."""
    try:
        low, high = (int(word) for word in (path or EPHEMERAL_RANGE_FILE).read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default
    return range(low, high + 1)


def quiet_port(host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A free port below the kernel's ephemeral range, for a listener the stack keeps for itself.

    A port from :func:`free_port` lies in that range, so until the server binds it, any
    outgoing connection on the machine or any other program's ``bind(0)`` may be given it (a
    parallel test run does both by the hundred). A port below the range is taken only by a
    program that names it. Falls back to :func:`free_port` where the range starts too low.
    """
    ephemeral = ephemeral_ports()
    if ephemeral.start <= QUIET_FLOOR + 1000:
        return free_port(host)
    for _ in range(attempts):
        port = random.randrange(QUIET_FLOOR, ephemeral.start)  # noqa: S311 - not a secret
        if not port_in_use(port, host):
            return port
    return free_port(host)


def _last_lines(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, reaching into ``<log>.1`` just after a rotation."""
    found = _last_lines(path, lines)
    if len(found) < lines:
        found = _last_lines(path.with_name(f"{path.name}.1"), lines - len(found)) + found
    return "\n".join(found)
