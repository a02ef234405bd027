"""Detached processes: started in their own session, recognised, stopped, killed if stuck."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlflow_stack.native import processes
from mlflow_stack.native.processes import (
    QUIET_FLOOR,
    ProcessRecord,
    ephemeral_ports,
    free_port,
    port_in_use,
    quiet_port,
    record_of,
    spawn,
    stop,
    tail,
)
from tests.unit.native.helpers import wait_until

SLEEPER = "import time; time.sleep(60)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
PARENT_WITH_CHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
)


def start(code: str, tmp_path: Path) -> ProcessRecord:
    proc = spawn(
        [sys.executable, "-c", code],
        env=dict(os.environ),
        cwd=tmp_path,
        log_path=tmp_path / "x.log",
    )
    time.sleep(0.3)
    return record_of(proc)


def test_spawned_process_leads_its_own_group_and_logs_to_its_file(tmp_path: Path) -> None:
    proc = spawn(
        [sys.executable, "-c", "print('hello from the child', flush=True)"],
        env=dict(os.environ),
        cwd=tmp_path,
        log_path=tmp_path / "child.log",
    )
    assert proc.wait(10) == 0
    assert "hello from the child" in tail(tmp_path / "child.log")
    record = start(SLEEPER, tmp_path)
    try:
        assert os.getpgid(record.pid) == record.pid
        assert os.getsid(record.pid) == record.pid
    finally:
        stop(record, sig=signal.SIGTERM, timeout=5)


def test_stop_ends_the_whole_process_tree(tmp_path: Path) -> None:
    record = start(PARENT_WITH_CHILD, tmp_path)
    members = record.group()
    assert len(members) == 2
    assert record.resident_bytes() > 0
    assert stop(record, sig=signal.SIGTERM, timeout=5) is True
    assert not record.group()
    assert not any(p.is_running() and p.status() != "zombie" for p in members)


def test_a_process_that_ignores_the_signal_is_killed_after_the_timeout(tmp_path: Path) -> None:
    record = start(STUBBORN, tmp_path)
    began = time.monotonic()
    assert stop(record, sig=signal.SIGTERM, timeout=1) is False
    assert 1 <= time.monotonic() - began < 10
    assert record.process() is None


def test_a_record_does_not_match_a_recycled_pid(tmp_path: Path) -> None:
    record = start(SLEEPER, tmp_path)
    try:
        assert record.process() is not None
        impostor = ProcessRecord(pid=record.pid, started=record.started - 3600, argv=record.argv)
        assert impostor.process() is None
        path = tmp_path / "rec.json"
        record.save(path)
        assert ProcessRecord.load(path) == record
        assert ProcessRecord.load(tmp_path / "absent.json") is None
    finally:
        stop(record, sig=signal.SIGTERM, timeout=5)


def test_port_probe_sees_a_listener(tmp_path: Path) -> None:
    import socket

    port = free_port()
    assert not port_in_use(port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert port_in_use(port)
    assert psutil.pid_exists(os.getpid())


def test_the_ephemeral_range_is_read_from_the_kernel_or_taken_as_linux_default(
    tmp_path: Path,
) -> None:
    kernel = ephemeral_ports()
    assert free_port() in kernel  # what bind(0) hands out
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("40000\t50000\n")
    assert ephemeral_ports(ranges) == range(40000, 50001)
    ranges.write_text("garbage")
    assert ephemeral_ports(ranges) == range(32768, 61000)
    assert ephemeral_ports(tmp_path / "missing") == range(32768, 61000)


def test_a_quiet_port_is_free_and_below_the_range_others_are_handed_at_random() -> None:
    import socket

    kernel = ephemeral_ports()
    drawn = {quiet_port() for _ in range(20)}
    assert all(QUIET_FLOOR <= port < kernel.start for port in drawn)
    assert len(drawn) > 1  # drawn at random, not the first free one
    port = drawn.pop()
    assert not port_in_use(port)
    with socket.socket() as listener:  # the server that picked it can bind it
        listener.bind(("127.0.0.1", port))


def test_a_quiet_port_is_never_one_in_use_and_any_free_one_when_the_range_starts_low(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = iter([True, True, False])
    monkeypatch.setattr(processes, "port_in_use", lambda port, host: next(busy))
    draws = iter(range(QUIET_FLOOR + 1, QUIET_FLOOR + 10))
    monkeypatch.setattr(processes.random, "randrange", lambda low, high: next(draws))
    assert quiet_port() == QUIET_FLOOR + 3  # the third draw, the first free one
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("1024 65535")
    monkeypatch.setattr(processes, "EPHEMERAL_RANGE_FILE", ranges)
    monkeypatch.setattr(processes, "free_port", lambda host: 4242)
    assert quiet_port() == 4242  # nothing below the range to draw from


def test_tail_reaches_into_the_previous_log_just_after_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    (tmp_path / "svc.log.1").write_text("".join(f"old {i}\n" for i in range(10)))
    log.write_text("new 0\nnew 1\n")
    assert tail(log, 4) == "old 8\nold 9\nnew 0\nnew 1"
    assert tail(log, 2) == "new 0\nnew 1"
    assert tail(tmp_path / "absent.log", 3) == ""


SETSID_CHILD = (
    "import os, subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
    " start_new_session=True)\n"
    "time.sleep(60)\n"
)


def test_members_include_descendants_in_sessions_of_their_own(tmp_path: Path) -> None:
    """PostgreSQL backends call setsid: the service's members must still include them."""
    proc = spawn(
        [sys.executable, "-c", SETSID_CHILD],
        env=dict(os.environ),
        cwd=tmp_path,
        log_path=tmp_path / "x.log",
    )
    record = record_of(proc)
    try:
        wait_until("the grandchild", lambda: len(record.members()) == 2)
        assert [p.pid for p in record.group()] == [proc.pid]
    finally:
        members = record.members()
        assert stop(record, sig=signal.SIGTERM, timeout=5)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in members)
    assert ProcessRecord.load(tmp_path / "absent.json") is None
