"""What every native service provides to the runtime that starts, checks and stops it."""

from __future__ import annotations

import os
import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mlflow_stack.settings.contract import Settings

#: Seconds a health check waits for each answer while a service starts (it is retried).
CHECK_TIMEOUT = 3.0
#: ... and for `status`, which asks once: a server busy serving clients answers slowly, and
#: slow is not unhealthy. A service that is down refuses at once, whatever the timeout.
STATUS_TIMEOUT = 15.0


@dataclass(frozen=True)
class Layout:
    """Where one native stack keeps its state: everything lives under ``root``."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def record(self, service: str) -> Path:
        """The pid record of the service's supervisor (the leader of its session)."""
        return self.run / f"{service}.json"

    def state(self, service: str) -> Path:
        """What the supervisor reports: child pid, restarts, last exit (see supervisor.py)."""
        return self.run / f"{service}.state"

    def create(self) -> None:
        # A new root is private; when PostgreSQL runs under its own account (we are root),
        # that account must traverse it. An existing directory keeps the mode its owner chose.
        if not self.root.exists():
            self.root.parent.mkdir(parents=True, exist_ok=True)
            self.root.mkdir(mode=0o711 if os.geteuid() == 0 else 0o700)
        for directory in (self.logs, self.run):
            directory.mkdir(mode=0o700, exist_ok=True)


def base_environment() -> dict[str, str]:
    """A minimal environment for third-party servers: no secrets of ours leak into them."""
    keep = ("PATH", "TZ", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["LC_ALL"] = "C"
    return env


class Service(ABC):
    """One process of the native stack."""

    name: ClassVar[str]
    stop_signal: ClassVar[int] = signal.SIGTERM
    start_timeout: ClassVar[float] = 60.0
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self, settings: Settings, layout: Layout) -> None:
        self.settings = settings
        self.layout = layout

    @property
    def user(self) -> str | None:
        """Account to run as (None: the invoking user)."""
        return None

    @property
    def workdir(self) -> Path:
        return self.layout.root

    def ports(self) -> dict[int, str]:
        """Loopback ports the service will listen on, with what sets each (for clear errors)."""
        return {}

    def prepare(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Create or refresh on-disk state before each start (idempotent)."""

    def environment(self) -> dict[str, str]:
        return base_environment()

    @abstractmethod
    def command(self) -> list[str]: ...

    @abstractmethod
    def check(self, timeout: float = CHECK_TIMEOUT) -> None:
        """Return when the service answers as it should within ``timeout`` seconds per request;
        raise NotReady otherwise."""

    @abstractmethod
    def endpoint(self) -> str: ...

    def describe(self) -> str:
        return self.name

    def release_port(self, problem: str) -> bool:
        """Given why a start failed, forget the internal port it names as taken, so that the
        next start picks another. True when there was one to forget: worth another start."""
        return False
