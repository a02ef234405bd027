"""The supervisor of one native service: runs it, restarts it when it dies, writes its log.

``mlflow-stack up`` starts one supervisor per service, detached in a session of its own; the
service's pid record names it. It runs the server as its child, in a process group of its own
within that session, and:

- reads the child's stdout and stderr through a pipe and writes them to the service's log,
  rotated by size (see :mod:`mlflow_stack.native.logfile`);
- when the child exits unexpectedly, logs one line (exit code or signal, restart number,
  delay), kills whatever is left of it (orphaned server workers hold the listening socket,
  orphaned PostgreSQL backends hold its shared memory), waits until they are gone, then starts
  it again after a delay that doubles from 0.25 s up to 30 s and is reset once the child has
  stayed up for a minute;
- on SIGTERM, SIGINT or SIGHUP sends the service's own stop signal to the child, waits up to
  the stop timeout, kills what is left and exits;
- keeps a small state file (child pid, restarts, last exit, starting|running|backoff|stopping|
  stopped) for ``mlflow-stack status`` and ``up``.

It is a child subreaper, so processes orphaned by the child become its children: it can find,
kill and reap them. Secrets reach the child only through the environment it inherits, never
through its arguments or a file.

Run as ``python -m mlflow_stack.native.supervisor [options] -- COMMAND...``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import pwd
import selectors
import shlex
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psutil

from mlflow_stack.native.logfile import DEFAULT_KEEP, DEFAULT_MAX_BYTES, RotatingLog
from mlflow_stack.native.processes import living

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LEFTOVER_TIMEOUT = 10.0  # seconds to wait for killed leftovers to be gone
_PR_SET_CHILD_SUBREAPER = 36


def describe_exit(status: int) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL`` for a waitpid status."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"was killed by {name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


@dataclass(frozen=True)
class SupervisorState:
    """What the supervisor tells `status` and `up`, in ``run/<service>.state``."""

    supervisor: int
    state: str  # starting | running | backoff | stopping | stopped
    child: int | None = None
    child_started: float | None = None  # psutil create_time of the child
    restarts: int = 0
    last_exit: str = ""  # e.g. "was killed by SIGKILL after 12.0 s"
    last_line: str = ""  # the child's last line of output before it exited
    next_start: float | None = None  # epoch seconds, while in backoff
    graceful: bool | None = None  # once stopped: did the child stop without SIGKILL
    updated: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> SupervisorState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def child_process(self) -> psutil.Process | None:
        """The live child this state names, or None."""
        if self.child is None:
            return None
        try:
            proc = psutil.Process(self.child)
            if self.child_started is not None and abs(proc.create_time() - self.child_started) > 1:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


@dataclass(frozen=True)
class Options:
    name: str
    argv: list[str]
    cwd: Path
    log: Path
    state: Path
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30.0
    log_max_bytes: int = DEFAULT_MAX_BYTES
    log_keep: int = DEFAULT_KEEP
    backoff_initial: float = 0.25  # a first crash costs the server's start-up, little more
    backoff_max: float = 30.0
    backoff_reset: float = 60.0


def command(options: Options, python: str = sys.executable) -> list[str]:
    """The command line that runs a supervisor with these options (no secrets in it)."""
    argv = [
        python, "-m", "mlflow_stack.native.supervisor",
        "--name", options.name,
        "--cwd", str(options.cwd),
        "--log", str(options.log),
        "--state", str(options.state),
        "--stop-signal", signal.Signals(options.stop_signal).name,
        "--stop-timeout", f"{options.stop_timeout:g}",
        "--log-max-bytes", str(options.log_max_bytes),
        "--log-keep", str(options.log_keep),
        "--backoff", f"{options.backoff_initial:g},{options.backoff_max:g},"
        f"{options.backoff_reset:g}",
    ]  # fmt: skip
    if options.user:
        argv += ["--user", options.user]
    return [*argv, "--", *options.argv]


def parse_arguments(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m mlflow_stack.native.supervisor")
    parser.add_argument("--name", required=True)
    parser.add_argument("--cwd", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--user")
    parser.add_argument("--stop-signal", default="SIGTERM", type=lambda s: signal.Signals[s])
    parser.add_argument("--stop-timeout", type=float, default=30.0)
    parser.add_argument("--log-max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("--log-keep", type=int, default=DEFAULT_KEEP)
    parser.add_argument("--backoff", default="0.25,30,60", help="initial,max,reset seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    child = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not child:
        parser.error("no command to supervise")
    initial, most, reset = (float(x) for x in args.backoff.split(","))
    return Options(
        name=args.name,
        argv=child,
        cwd=args.cwd,
        log=args.log,
        state=args.state,
        user=args.user,
        stop_signal=args.stop_signal,
        stop_timeout=args.stop_timeout,
        log_max_bytes=args.log_max_bytes,
        log_keep=args.log_keep,
        backoff_initial=initial,
        backoff_max=most,
        backoff_reset=reset,
    )


def _become_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _redirect_own_output(fd: int) -> None:
    """Our own stray output (warnings, a crash) lands in the current log file too."""
    for target in (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(fd, target)


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    output: int  # read end of its stdout/stderr pipe
    began: float  # time.monotonic()
    started: float | None  # psutil create_time


class Supervisor:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.log = RotatingLog(
            options.log,
            max_bytes=options.log_max_bytes,
            keep=options.log_keep,
            on_open=_redirect_own_output,
        )
        self.selector = selectors.DefaultSelector()
        self.child: _Child | None = None
        self.exits: list[tuple[_Child, int]] = []  # reaped, not yet handled
        self.outputs: list[int] = []  # pipes still open (a dead child's until its leftovers go)
        self.state = SupervisorState(supervisor=os.getpid(), state="starting")
        self.failures = 0  # consecutive quick exits, for the backoff
        self.next_start = time.monotonic()
        self.stop_requested = False
        self.stop_deadline: float | None = None
        self.graceful = True
        self.last_line = b""
        account = pwd.getpwnam(options.user) if options.user else None
        self.account = account

    # -- bookkeeping -------------------------------------------------------------------------

    def note(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.log.line(f"{stamp} mlflow-stack supervisor[{os.getpid()}]: {text}")

    def publish(self, **changes: object) -> None:
        self.state = replace(self.state, updated=time.time(), **changes)  # type: ignore[arg-type]
        with contextlib.suppress(OSError):
            self.state.save(self.options.state)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        _become_subreaper()
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for number in STOP_SIGNALS:
            signal.signal(number, self._request_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through wake_w
        self.selector.register(wake_r, selectors.EVENT_READ)
        self.publish()
        while True:
            for key, _ in self.selector.select(self._timeout()):
                if key.fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                else:
                    self._read(key.fd)
            self._reap()
            self._handle_exits()
            if self.stop_requested:
                if self._advance_stop():
                    break
            elif self.child is None and time.monotonic() >= self.next_start:
                self._start()
        self.log.close()
        return 0

    def _timeout(self) -> float:
        if self.stop_requested:
            return 0.1
        if self.child is None:
            return max(0.0, min(1.0, self.next_start - time.monotonic()))
        return 1.0

    def _request_stop(self, _signum: int, _frame: object) -> None:
        self.stop_requested = True

    # -- the child's output ------------------------------------------------------------------

    def _read(self, fd: int, chunks: int = 16) -> None:
        """Copy what the pipe holds to the log (at most ``chunks`` reads: a chatty child must
        not keep the loop from reaping and stopping)."""
        for _ in range(chunks):
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_output(fd)
                return
            self.log.write(data)
            lines = data.rstrip(b"\n").rsplit(b"\n", 1)
            if lines[-1].strip():
                self.last_line = lines[-1]

    def _close_output(self, fd: int) -> None:
        if fd in self.outputs:
            self.outputs.remove(fd)
            self.selector.unregister(fd)
            os.close(fd)

    def _drain_outputs(self) -> None:
        for fd in list(self.outputs):
            self._read(fd, chunks=256)
        self.log.flush()

    # -- start, exit, restart ----------------------------------------------------------------

    def _start(self) -> None:
        read_end, write_end = os.pipe()
        account = self.account
        try:
            proc = subprocess.Popen(
                self.options.argv,
                cwd=self.options.cwd,
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=write_end,
                process_group=0,
                close_fds=True,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
            )
        except OSError as error:
            os.close(read_end)
            os.close(write_end)
            self._exited(None, f"could not be started ({error.strerror})", uptime=0.0)
            return
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.selector.register(read_end, selectors.EVENT_READ)
        self.outputs.append(read_end)
        try:
            started: float | None = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            started = None
        self.child = _Child(proc, read_end, time.monotonic(), started)
        self.last_line = b""
        self.note(f"started {self.options.name} (pid {proc.pid}): {shlex.join(self.options.argv)}")
        self.publish(state="running", child=proc.pid, child_started=started, next_start=None)

    def _reap(self) -> None:
        """Reap every exited child (orphans included: we are their subreaper)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.child
            if child is not None and pid == child.proc.pid:
                child.proc.returncode = os.waitstatus_to_exitcode(status)
                self.child = None
                self.exits.append((child, status))

    def _handle_exits(self) -> None:
        while self.exits:
            child, status = self.exits.pop(0)
            uptime = time.monotonic() - child.began
            self._exited(child.proc.pid, describe_exit(status), uptime=uptime)

    def _exited(self, pid: int | None, how: str, *, uptime: float) -> None:
        name = self.options.name
        self._drain_outputs()
        last_line = self.last_line.decode("utf-8", "replace").strip()
        if self.stop_requested:
            self.note(f"{name} (pid {pid}) {how} after {uptime:.1f} s")
            self.publish(state="stopping", child=None, last_exit=how, last_line=last_line)
            return
        if uptime >= self.options.backoff_reset:
            self.failures = 0
        self.failures += 1
        delay = min(
            self.options.backoff_initial * 2 ** (self.failures - 1), self.options.backoff_max
        )
        restarts = self.state.restarts + 1
        self.note(
            f"{name} (pid {pid}) {how} after {uptime:.1f} s; restart {restarts} in {delay:g} s"
        )
        self._kill_leftovers(f"{name} (pid {pid})")
        self.next_start = time.monotonic() + delay
        self.publish(
            state="backoff",
            child=None,
            child_started=None,
            restarts=restarts,
            last_exit=f"{how} after {uptime:.0f} s",
            last_line=last_line,
            next_start=time.time() + delay,
        )

    # -- leftovers and stopping --------------------------------------------------------------

    def _leftovers(self) -> list[psutil.Process]:
        """Every live process below us or in our session, ourselves excluded."""
        me = os.getpid()
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            for proc in psutil.Process(me).children(recursive=True):
                found[proc.pid] = proc
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if proc.pid != me and os.getsid(proc.pid) == me:
                    found.setdefault(proc.pid, proc)
        return living(found.values())

    def _signal_all(self, procs: list[psutil.Process], number: int) -> None:
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(number)

    def _wait_gone(self, timeout: float) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout
        while True:
            self._reap()
            left = self._leftovers()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    def _kill_leftovers(self, owner: str) -> None:
        left = self._leftovers()
        if not left:
            self._drain_outputs()
            return
        self._signal_all(left, signal.SIGKILL)
        remaining = self._wait_gone(LEFTOVER_TIMEOUT)
        self.note(
            f"killed {len(left)} leftover process(es) of {owner}: "
            + ", ".join(str(p.pid) for p in left)
            + (f"; still there after {LEFTOVER_TIMEOUT:g} s: {remaining}" if remaining else "")
        )
        self._drain_outputs()
        for fd in list(self.outputs):
            if self.child is None or fd != self.child.output:
                self._close_output(fd)

    def _advance_stop(self) -> bool:
        """One step of stopping; True once nothing is left."""
        now = time.monotonic()
        if self.stop_deadline is None:
            self.stop_deadline = now + self.options.stop_timeout
            signame = signal.Signals(self.options.stop_signal).name
            if self.child is not None:
                pid = self.child.proc.pid
                self.note(f"stopping {self.options.name} (pid {pid}) with {signame}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.child.proc.pid, self.options.stop_signal)
            self.publish(state="stopping", next_start=None)
        if self.child is not None:
            if now < self.stop_deadline:
                return False
            self.note(
                f"{self.options.name} did not stop within {self.options.stop_timeout:g} s: "
                "killing it"
            )
            self.graceful = False
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.proc.pid, signal.SIGKILL)
            self._signal_all(self._leftovers(), signal.SIGKILL)
            self._wait_child_exit()
        left = self._leftovers()
        if left:
            self._signal_all(left, signal.SIGTERM)
            left = self._wait_gone(min(5.0, max(0.5, self.stop_deadline - time.monotonic())))
            if left:
                self.graceful = False
                self._signal_all(left, signal.SIGKILL)
                self._wait_gone(LEFTOVER_TIMEOUT)
        self._drain_outputs()
        self.note(f"stopped {self.options.name}" + ("" if self.graceful else " (killed)"))
        self.publish(state="stopped", child=None, child_started=None, graceful=self.graceful)
        return True

    def _wait_child_exit(self) -> None:
        deadline = time.monotonic() + LEFTOVER_TIMEOUT
        while self.child is not None and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        self._handle_exits()


def main(argv: list[str] | None = None) -> int:
    options = parse_arguments(sys.argv[1:] if argv is None else argv)
    supervisor = Supervisor(options)
    try:
        return supervisor.run()
    except Exception:  # noqa: BLE001 - anything at all: log it, leave the service running
        # A bug here must not take the service down: the child keeps running, `status` reports
        # the supervisor gone, and `mlflow-stack up` replaces it.
        with contextlib.suppress(Exception):
            supervisor.note("crashed; the service runs on unsupervised:\n" + traceback.format_exc())
        return 70


if __name__ == "__main__":
    sys.exit(main())
