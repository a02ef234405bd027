"""How the suite shares two cores: pytest-xdist workers, a scheduler that keeps together what
shares session state, and the Docker provisioning of the compose tests in the controller.

- **Scopes.** Every test module is one unit of work, so its module fixtures (a stack of its
  own, a Terraform plan) are set up once, on one worker. Tests that share session state are
  one unit (:data:`SHARED`): the compose tests with the Terraform emulator's (its deployments
  are applied in the background while the compose tests run, and destroyed after the last
  reader), and the example scripts' tests.
- **Order.** Units go out in the order of the collection (tests/conftest.py sorts it): the
  emulated unit first, since it is the longest chain (apply, read, roll, destroy: ~7 minutes,
  most of it provider waiters) and starts the applies before it waits for the Docker
  provisioning; then the other Terraform modules, the modules that start servers, and the
  fast folders, which fill the gaps at the end.
- **Docker.** The compose tests' engine and stack take minutes of apt, image builds and
  `docker compose up --wait`; the controller, which runs no test, does that in a thread from
  the start of the session and hands the stack to whichever worker runs the compose unit
  through a small JSON file (:class:`Handoff`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

REPO = Path(__file__).resolve().parent.parent
#: Paths whose tests share session state, and the unit of work each belongs to: the compose
#: tests share one compose stack, and the EC2-style boot among them reads the Terraform
#: emulator's deployments, as the emulator's own tests do (applied once, destroyed last); the
#: example scripts run once in the background for all of their tests.
SHARED = {
    "tests/compose/": "emulated",
    "tests/terraform/test_apply_moto.py": "emulated",
    "tests/examples/": "examples",
}
EMULATED = "emulated"
HANDOFF_KEY = "mlflow_stack_compose_handoff"


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its shared group, else its module."""
    path = nodeid.split("::", 1)[0]
    for prefix, scope in SHARED.items():
        if path.startswith(prefix):
            return scope
    return path


class PlannedScheduling(LoadScopeScheduling):
    """xdist's load-scope scheduling with the scopes above, in the collection's order."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        config.option.loadscopereorder = False  # the collection's order is the plan
        super().__init__(config, log)

    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid)

    def _assign_work_unit(self, node: Any) -> None:
        """As xdist's, but a worker still busy with the emulated unit gets the queue's last
        (lightest) unit: xdist hands out the next unit when two tests of the current one are
        left, and the emulated unit's last is the destroy (~100 s), so a server module queued
        behind it used to finish the session ~20 s after every other worker."""
        emulated = self.assigned_work.get(node, {}).get(EMULATED, {})
        if not all(emulated.values()) and len(self.workqueue) > 1:
            self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
        super()._assign_work_unit(node)


def is_controller(config: pytest.Config) -> bool:
    """True in the process that runs xdist's workers (and no test of its own)."""
    return config.pluginmanager.has_plugin("dsession") and not hasattr(config, "workerinput")


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def selects(config: pytest.Config, folder: Path) -> bool:
    """Whether the command line's paths include ``folder`` and --ignore leaves it (before
    -k/-m selection)."""
    base = Path(config.invocation_params.dir)
    for ignored in config.getoption("ignore") or []:
        path = Path(ignored) if Path(ignored).is_absolute() else base / ignored
        if path.resolve() == folder or path.resolve() in folder.parents:
            return False
    for arg in config.args:
        path = Path(str(arg).split("::", 1)[0])
        path = (path if path.is_absolute() else base / path).resolve()
        if path == folder or folder in path.parents or path in folder.parents:
            return True
    return False


@dataclass
class Handoff:
    """What the controller's provisioning left for the compose tests' worker."""

    state: str  # "running", "ready" or "failed"
    env_file: str = ""
    port: int = 0
    error: str = ""

    @staticmethod
    def new_path() -> Path:
        fd, name = tempfile.mkstemp(prefix="mlflow-stack-compose-", suffix=".json")
        os.close(fd)
        path = Path(name)
        Handoff("running").write(path)
        return path

    def write(self, path: Path) -> None:
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(self)))
        partial.replace(path)

    @classmethod
    def wait(cls, path: Path, timeout: float = 1800) -> Handoff:
        deadline = time.monotonic() + timeout
        while True:
            handoff = cls(**json.loads(path.read_text()))
            if handoff.state != "running":
                return handoff
            if time.monotonic() > deadline:
                pytest.fail(f"the Docker provisioning took over {timeout:g} s")
            time.sleep(0.5)


def handoff_path(config: pytest.Config) -> Path | None:
    """In a worker: the controller's handoff file, if the controller provisions Docker."""
    name = getattr(config, "workerinput", {}).get(HANDOFF_KEY)
    return Path(name) if name else None
