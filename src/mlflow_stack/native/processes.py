"""Detached service processes: start, recognise after a restart of the CLI, stop, measure.

Each service runs in its own session (so its whole process tree shares one process group),
writes stdout and stderr to its log file, and is remembered by a small JSON record holding
its pid and start time, so that a recycled pid is never mistaken for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
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
        """Every live process of the service's process group (the leader's pid is the pgid)."""
        members = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == self.pid and proc.status() != "zombie":
                    members.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return members

    def resident_bytes(self) -> int:
        total = 0
        for proc in self.group():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached in a new session, appending its output to ``log_path``."""
    account = pwd.getpwnam(user) if user else None
    with log_path.open("ab") as log_file:
        log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {argv[0]}\n".encode())
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


def stop(record: ProcessRecord, *, sig: int, timeout: float) -> bool:
    """Stop the service's whole process tree; True when it ended without SIGKILL.

    ``sig`` goes to the leader first, so that it can shut its children down in order; once
    the leader is gone, whatever is left of its process group gets ``sig`` too. After
    ``timeout`` seconds, the rest is killed.
    """
    deadline = time.monotonic() + timeout
    leader = record.process()
    if leader is not None:
        with contextlib.suppress(psutil.Error):
            leader.send_signal(sig)
        with contextlib.suppress(psutil.Error):
            leader.wait(timeout=max(0.0, deadline - time.monotonic()))
    orphans = record.group()
    for proc in orphans:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    _, alive = psutil.wait_procs(orphans, timeout=max(0.5, deadline - time.monotonic()))
    for proc in alive:
        log.warning("killing pid %s after %.0f s", proc.pid, timeout)
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
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


def tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
