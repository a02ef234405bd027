"""Reading a service's supervision: is its supervisor there, and is its server running?

`status` calls :func:`problem` before the service's own health check: a server that answers
HTTP is still unhealthy when nothing supervises it any more, or when its main process died and
only orphans of it (uvicorn workers holding the port) answer.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow_stack.native.processes import ProcessRecord
from mlflow_stack.native.supervisor import SupervisorState

SUPERVISOR_MODULE = "mlflow_stack.native.supervisor"


def is_supervised(record: ProcessRecord) -> bool:
    """False for records written before services had supervisors."""
    return SUPERVISOR_MODULE in record.argv


def problem(record: ProcessRecord, state_path: Path) -> str | None:
    """One line saying why the service cannot be healthy, or None when supervision is sound."""
    if record.process() is None:
        left = len(record.members())
        return (
            f"its supervisor (pid {record.pid}) is gone and {left} process(es) of it are "
            "unsupervised: `mlflow-stack up` restarts it"
        )
    if not is_supervised(record):
        return None
    state = SupervisorState.load(state_path)
    if state is None:
        return "its supervisor has not reported yet"
    if state.state != "running" or state.child is None:
        return _transition(state)
    if state.child_process() is None:
        lingering = [p.pid for p in record.members() if p.pid != record.pid]
        linger = f", but {len(lingering)} of its processes linger" if lingering else ""
        return (
            f"its server process (pid {state.child}) is gone{linger}, and its supervisor "
            f"(pid {record.pid}) has not restarted it"
        )
    return None


def _transition(state: SupervisorState) -> str:
    if state.state == "backoff":
        wait = max(0.0, (state.next_start or 0.0) - time.time())
        return f"its server {state.last_exit}; restart {state.restarts} in {wait:.1f} s"
    return {
        "stopping": "its supervisor is stopping it",
        "stopped": "its supervisor has stopped it and is exiting",
    }.get(state.state, "its supervisor is starting it")


def restarts(state_path: Path) -> tuple[int, str]:
    """How often the supervisor restarted the server, and why it last did."""
    state = SupervisorState.load(state_path)
    return (state.restarts, state.last_exit) if state else (0, "")


def server_pid(state_path: Path) -> int | None:
    """The pid of the running server process (the supervisor's child), if any."""
    state = SupervisorState.load(state_path)
    child = state.child_process() if state else None
    return child.pid if child else None
