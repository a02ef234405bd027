"""The supervisor, with real (tiny) processes: restarts with backoff, leftovers, stopping, logs."""

from __future__ import annotations

import re
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from mlflow_stack.native.logfile import rotated
from mlflow_stack.native.processes import free_port, stop
from mlflow_stack.native.supervisor import Options, command
from tests.unit.native.helpers import SLEEPER, Supervised, wait_until


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

    def newest_text() -> str:
        try:
            return log.read_text()
        except FileNotFoundError:  # in the instant between a rotation's rename and the new file
            return ""

    wait_until("the last line", lambda: f"line {count - 1:06d}" in newest_text())
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
