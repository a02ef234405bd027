"""Reading a service's supervision from its pid record and its supervisor's state file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from mlflow_stack.native import supervision
from mlflow_stack.native.processes import ProcessRecord, record_of, spawn, stop
from mlflow_stack.native.supervisor import Options, SupervisorState, command
from tests.unit.native.helpers import SLEEP, SLEEPER, Supervised, wait_until

PARENT_WITH_CHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
)


def test_a_dead_supervisor_leaves_its_service_running_and_status_says_so(
    supervised: Callable[..., Supervised],
) -> None:
    demo = supervised(SLEEPER)
    child = demo.running_child()
    wait_until("its output", lambda: "up\n" in demo.log())  # it writes nothing after this
    assert supervision.problem(demo.record, demo.options.state) is None
    os.kill(demo.record.pid, signal.SIGKILL)
    demo.proc.wait(5)
    assert child.is_running()  # the service is not taken down with it
    problem = supervision.problem(demo.record, demo.options.state)
    assert problem is not None and "supervisor" in problem and "is gone" in problem
    assert child.pid in {p.pid for p in demo.record.members()}


def test_a_stopped_supervisor_with_a_dead_server_is_reported(
    supervised: Callable[..., Supervised],
) -> None:
    demo = supervised(SLEEPER)
    child = demo.running_child()
    os.kill(demo.record.pid, signal.SIGSTOP)
    try:
        child.kill()
        wait_until("its death", lambda: child.status() == psutil.STATUS_ZOMBIE)  # not reaped
        problem = supervision.problem(demo.record, demo.options.state)
        assert problem is not None
        assert f"server process (pid {child.pid}) is gone" in problem
    finally:
        os.kill(demo.record.pid, signal.SIGCONT)
    demo.running_child(other_than=child.pid)
    assert supervision.problem(demo.record, demo.options.state) is None


# -- the same, from records and state files written here, for real processes -------------------


def supervisor_record(proc: subprocess.Popen[bytes], tmp_path: Path) -> ProcessRecord:
    """The record `up` writes for a supervisor, for a real process standing in for one."""
    options = Options(
        name="demo",
        argv=["sleep", "60"],
        cwd=tmp_path,
        log=tmp_path / "demo.log",
        state=tmp_path / "demo.state",
    )
    return replace(record_of(proc), argv=command(options))


def report(path: Path, **fields: object) -> Path:
    SupervisorState(**fields).save(path)  # type: ignore[arg-type]
    return path


def test_a_record_tells_a_supervisor_from_a_server_started_before_supervisors(
    sleepers: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    proc = sleepers()
    assert supervision.is_supervised(supervisor_record(proc, tmp_path))
    assert not supervision.is_supervised(record_of(proc))
    # such an old server, running, has nothing wrong with its (absent) supervision
    assert supervision.problem(record_of(proc), tmp_path / "absent.state") is None


def test_a_supervisor_that_has_not_reported_yet_is_a_problem(
    sleepers: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    record = supervisor_record(sleepers(), tmp_path)
    assert supervision.problem(record, tmp_path / "demo.state") == (
        "its supervisor has not reported yet"
    )
    (tmp_path / "demo.state").write_text("{half a state")
    assert supervision.problem(record, tmp_path / "demo.state") == (
        "its supervisor has not reported yet"
    )


@pytest.mark.parametrize(
    ("state", "said"),
    [
        ("starting", "its supervisor is starting it"),
        ("running", "its supervisor is starting it"),  # no child yet
        ("stopping", "its supervisor is stopping it"),
        ("stopped", "its supervisor has stopped it and is exiting"),
    ],
)
def test_a_server_between_states_is_a_problem_saying_which(
    sleepers: Callable[[], subprocess.Popen[bytes]], tmp_path: Path, state: str, said: str
) -> None:
    proc = sleepers()
    state_path = report(tmp_path / "demo.state", supervisor=proc.pid, state=state)
    assert supervision.problem(supervisor_record(proc, tmp_path), state_path) == said


def test_a_server_waiting_to_be_restarted_says_why_and_when(
    sleepers: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    proc = sleepers()
    record = supervisor_record(proc, tmp_path)
    how = "was killed by SIGKILL after 2 s"
    state_path = report(
        tmp_path / "demo.state",
        supervisor=proc.pid,
        state="backoff",
        restarts=3,
        last_exit=how,
        next_start=time.time() + 5,
    )
    problem = supervision.problem(record, state_path)
    assert problem is not None
    assert re.fullmatch(rf"its server {how}; restart 3 in [45]\.\d s", problem)
    assert supervision.restarts(state_path) == (3, how)
    assert supervision.server_pid(state_path) is None
    report(state_path, supervisor=proc.pid, state="backoff", restarts=3, last_exit=how,
           next_start=time.time() - 1)  # fmt: skip
    assert supervision.problem(record, state_path) == f"its server {how}; restart 3 in 0.0 s"


def test_a_running_server_is_sound_and_its_pid_is_the_childs(
    sleepers: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    leader, child = sleepers(), sleepers()
    state_path = report(
        tmp_path / "demo.state",
        supervisor=leader.pid,
        state="running",
        child=child.pid,
        child_started=psutil.Process(child.pid).create_time(),
        restarts=1,
        last_exit="exited with code 1 after 3 s",
    )
    assert supervision.problem(supervisor_record(leader, tmp_path), state_path) is None
    assert supervision.server_pid(state_path) == child.pid
    assert supervision.restarts(state_path) == (1, "exited with code 1 after 3 s")


def test_a_server_that_died_unnoticed_is_a_problem_naming_what_lingers(
    tmp_path: Path,
) -> None:
    leader = spawn(
        [sys.executable, "-c", PARENT_WITH_CHILD],
        env=dict(os.environ),
        cwd=tmp_path,
        log_path=tmp_path / "leader.log",
    )
    record = supervisor_record(leader, tmp_path)
    try:
        wait_until("its child", lambda: len(record.members()) == 2)
        dead = subprocess.Popen([SLEEP, "60"])
        started = psutil.Process(dead.pid).create_time()
        dead.kill()
        dead.wait(5)
        state_path = report(
            tmp_path / "demo.state",
            supervisor=leader.pid,
            state="running",
            child=dead.pid,
            child_started=started,
        )
        assert supervision.problem(record, state_path) == (
            f"its server process (pid {dead.pid}) is gone, but 1 of its processes linger, "
            f"and its supervisor (pid {leader.pid}) has not restarted it"
        )
        assert supervision.server_pid(state_path) is None
    finally:
        stop(record, sig=signal.SIGTERM, timeout=5)


def test_a_pid_now_used_by_another_process_is_not_the_server(
    sleepers: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    leader, other = sleepers(), sleepers()
    state_path = report(
        tmp_path / "demo.state",
        supervisor=leader.pid,
        state="running",
        child=other.pid,
        child_started=psutil.Process(other.pid).create_time() - 3600,  # the pid was recycled
    )
    problem = supervision.problem(supervisor_record(leader, tmp_path), state_path)
    assert problem is not None and f"server process (pid {other.pid}) is gone" in problem
    assert supervision.server_pid(state_path) is None


def test_without_a_state_file_there_were_no_restarts_and_there_is_no_server(
    tmp_path: Path,
) -> None:
    assert supervision.restarts(tmp_path / "absent.state") == (0, "")
    assert supervision.server_pid(tmp_path / "absent.state") is None
