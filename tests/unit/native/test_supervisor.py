"""The supervisor, with real (tiny) processes: restarts with backoff, leftovers, stopping, logs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from mlflow_stack.native import supervision
from mlflow_stack.native.logfile import RotatingLog, follow, parse_size, rotated
from mlflow_stack.native.processes import ProcessRecord, free_port, record_of, spawn, stop
from mlflow_stack.native.supervisor import Options, SupervisorState, command

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]


def wait_until(what: str, predicate: Callable[[], object], timeout: float = 15) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


class Supervised:
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


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    started: list[Supervised] = []

    def start(argv: list[str], **overrides: object) -> Supervised:
        started.append(Supervised(tmp_path, argv, **overrides))
        return started[-1]

    yield start
    for one in started:
        stop(one.record, sig=signal.SIGTERM, timeout=10)


def test_a_killed_child_is_restarted_after_a_doubling_delay_and_the_log_says_why(
    supervised: Callable[..., Supervised],
) -> None:
    demo = supervised(SLEEPER)
    first = demo.running_child()
    wait_until("its output", lambda: demo.log().count("up\n") == 1)
    first.kill()
    time.sleep(0.15)
    assert demo.state().state == "backoff"  # not restarted before its delay of 0.25 s
    second = demo.running_child(other_than=first.pid)
    wait_until("its output", lambda: demo.log().count("up\n") == 2)
    second.kill()
    time.sleep(0.35)
    assert demo.state().state == "backoff"  # the delay doubled to 0.5 s
    demo.running_child(other_than=second.pid)
    wait_until("its output", lambda: demo.log().count("up\n") == 3)
    assert demo.state().restarts == 2
    log = demo.log()
    assert re.search(
        r"demo \(pid \d+\) was killed by SIGKILL after [\d.]+ s; restart 1 in 0.25 s", log
    )
    assert re.search(r"restart 2 in 0.5 s", log)
    assert log.count("started demo (pid") == 3  # and each child's output came through it


def test_a_child_that_keeps_failing_backs_off_up_to_the_maximum(
    supervised: Callable[..., Supervised],
) -> None:
    demo = supervised(
        [sys.executable, "-c", "import sys; print('broken config'); sys.exit(3)"],
        backoff_initial=0.1,
        backoff_max=0.4,
    )
    wait_until("five restarts", lambda: demo.state().restarts >= 5)
    delays = [float(d) for d in re.findall(r"restart \d+ in ([\d.]+) s", demo.log())]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
    state = demo.state()
    assert "exited with code 3" in state.last_exit
    assert state.last_line == "broken config"


LISTENER = textwrap.dedent(
    """
    import os, socket, subprocess, sys, time
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen()
    print("bound by", os.getpid(), flush=True)
    # like a uvicorn worker: a child holding the listening socket, deaf to SIGTERM
    helper = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
        pass_fds=[sock.fileno()],
    )
    print("helper", helper.pid, flush=True)
    time.sleep(600)
    """
)


def test_leftovers_of_a_dead_child_are_killed_before_it_starts_again(
    supervised: Callable[..., Supervised], tmp_path: Path
) -> None:
    script = tmp_path / "listener.py"
    script.write_text(LISTENER)
    port = free_port()
    demo = supervised([sys.executable, str(script), str(port)], stop_timeout=1)
    first = demo.running_child()
    helper_pid = int(wait_until("the helper", lambda: re.search(r"helper (\d+)", demo.log()))[1])
    helper = psutil.Process(helper_pid)
    first.kill()
    second = demo.running_child(other_than=first.pid)
    # the new child could bind the port: the orphan holding it was gone first
    wait_until("the second bind", lambda: f"bound by {second.pid}" in demo.log())
    assert not helper.is_running()
    assert f"killed 1 leftover process(es) of demo (pid {first.pid}): {helper_pid}" in demo.log()
    assert "Address already in use" not in demo.log()


def test_stop_forwards_the_services_own_signal_and_waits_for_it(
    supervised: Callable[..., Supervised],
) -> None:
    graceful = textwrap.dedent(
        """
        import signal, sys, time
        def bye(number, frame):
            print("got", signal.Signals(number).name, flush=True)
            time.sleep(0.3)
            sys.exit(0)
        signal.signal(signal.SIGINT, bye)
        print("handler", "installed", flush=True)
        time.sleep(600)
        """
    )
    demo = supervised([sys.executable, "-c", graceful], stop_signal=signal.SIGINT)
    demo.running_child()
    wait_until("the child's signal handler", lambda: "handler installed" in demo.log())
    assert stop(demo.record, sig=signal.SIGTERM, timeout=10) is True
    assert demo.proc.wait(5) == 0
    assert "got SIGINT" in demo.log()
    state = demo.state()
    assert state.state == "stopped" and state.graceful is True and state.restarts == 0


def test_a_child_that_ignores_the_stop_signal_is_killed_after_the_timeout(
    supervised: Callable[..., Supervised],
) -> None:
    deaf = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('deaf', 'now', flush=True); time.sleep(600)"
    )
    demo = supervised([sys.executable, "-c", deaf], stop_timeout=1)
    child = demo.running_child()
    wait_until("it to ignore SIGTERM", lambda: "deaf now" in demo.log())
    began = time.monotonic()
    assert stop(demo.record, sig=signal.SIGTERM, timeout=10) is True  # the supervisor did it
    assert time.monotonic() - began < 8
    assert not child.is_running()
    assert demo.state().graceful is False
    assert "did not stop within 1 s: killing it" in demo.log()


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


def test_rotation_keeps_n_files_of_bounded_size_and_loses_no_line(
    supervised: Callable[..., Supervised],
) -> None:
    count = 3000
    printer = (
        "import sys, time\n"
        f"for i in range({count}):\n"
        "    sys.stdout.write(f'line {i:06d} ' + 'x' * (i % 50) + '\\n')\n"
        "    sys.stdout.flush() if i % 7 == 0 else None\n"
        "sys.stdout.flush(); time.sleep(600)\n"
    )
    demo = supervised([sys.executable, "-c", printer], log_max_bytes=8192, log_keep=3)
    demo.running_child()
    log = demo.options.log
    wait_until("the last line", lambda: f"line {count - 1:06d}" in log.read_text())
    files = [rotated(log, i) for i in range(5)]
    assert [f.exists() for f in files] == [True, True, True, True, False]
    assert all(f.stat().st_size <= 8192 for f in files[:4])
    numbers = []
    for path in reversed(files[:4]):
        for line in path.read_text().splitlines():
            if line.startswith("line "):
                number = int(line.split()[1])
                assert line == f"line {number:06d} " + "x" * (number % 50)  # never split
                numbers.append(number)
    assert numbers == list(range(numbers[0], count))  # a contiguous run up to the newest


def test_rotating_log_keeps_partial_lines_whole_and_gives_a_long_line_its_own_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "svc.log"
    opened: list[int] = []
    writer = RotatingLog(path, max_bytes=100, keep=2, on_open=opened.append)
    writer.write(b"first half")
    assert path.read_bytes() == b""  # an unfinished line waits for its end
    writer.write(b" and its end\n")
    assert path.read_bytes() == b"first half and its end\n"
    writer.write(b"a" * 80 + b"\n")  # would pass 100 bytes: rotate first
    assert rotated(path, 1).read_bytes() == b"first half and its end\n"
    writer.write(b"L" * 300 + b"\n")  # longer than a file: a file of its own, whole
    writer.line("supervisor note")
    writer.write(b"unfinished")
    writer.close()  # ends and writes the unfinished line
    assert path.read_bytes() == b"supervisor note\nunfinished\n"
    assert rotated(path, 1).read_bytes() == b"L" * 300 + b"\n"
    assert rotated(path, 2).read_bytes() == b"a" * 80 + b"\n"
    assert not rotated(path, 3).exists()  # keep=2: the first file is gone
    assert len(opened) == 4  # the supervisor re-points its own output at each new file


def test_parse_size_accepts_binary_units() -> None:
    assert parse_size("10M") == 10 * 2**20
    assert parse_size("512K") == 512 * 1024
    assert parse_size("1GiB") == 2**30
    assert parse_size("4096") == 4096
    for bad in ("ten", "12"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_follow_keeps_following_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    path.write_text("old line\n")
    seen: list[str] = []
    lines = follow(path, interval=0.02)

    def consume() -> None:
        for line in lines:
            seen.append(line)
            if line.startswith("line 0199"):
                return

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    time.sleep(0.3)  # the follower is at the end of the file now
    writer = RotatingLog(path, max_bytes=300, keep=2)
    for i in range(200):
        writer.write(f"line {i:04d}\n".encode())
        if i % 20 == 0:
            time.sleep(0.03)
    writer.close()
    reader.join(10)
    assert [line.strip() for line in seen] == [f"line {i:04d}" for i in range(200)]


def test_logs_follow_on_the_command_line_survives_a_rotation(tmp_path: Path) -> None:
    logs = tmp_path / "data" / "logs"
    logs.mkdir(parents=True)
    path = logs / "mlflow.log"
    path.write_text("before\n")
    follower = subprocess.Popen(
        [sys.executable, "-m", "mlflow_stack", "logs", "mlflow", "-f", "-n", "1",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "before\n"
        time.sleep(1.5)  # it follows from the end now
        with path.open("a") as handle:
            handle.write("in the old file\n")
        path.rename(rotated(path, 1))
        path.write_text("in the new file\n")
        assert follower.stdout.readline() == "in the old file\n"
        assert follower.stdout.readline() == "in the new file\n"
    finally:
        follower.kill()
        follower.wait(5)


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


def test_the_supervisor_command_line_parses_back_to_its_options(tmp_path: Path) -> None:
    options = Options(
        name="mlflow",
        argv=[sys.executable, "-m", "mlflow_stack", "serve"],
        cwd=tmp_path,
        log=tmp_path / "mlflow.log",
        state=tmp_path / "mlflow.state",
        stop_signal=signal.SIGINT,
    )
    argv = command(options)
    assert argv[-5:] == ["--", sys.executable, "-m", "mlflow_stack", "serve"]
    assert "SIGINT" in argv
    from mlflow_stack.native.supervisor import parse_arguments

    assert parse_arguments(argv[3:]) == options
