"""Fixtures of the native runtime's unit tests; each cleans up what it started or created."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlflow_stack.native import reach
from mlflow_stack.native.processes import stop
from tests.unit.native.helpers import SLEEP, LoopbackHTTP, Supervised


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    """Start real supervisors of real children; stop them and what they left at the end."""
    started: list[Supervised] = []

    def start(argv: list[str], **overrides: object) -> Supervised:
        started.append(Supervised(tmp_path, argv, **overrides))
        return started[-1]

    yield start
    for one in started:
        stop(one.record, sig=signal.SIGTERM, timeout=10)


@pytest.fixture
def sleepers() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start `sleep 60` processes on demand; all are killed and reaped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen([SLEEP, "60"]))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A world-traversable (0755) directory outside pytest's basetemp, which is 0700: what the
    ``postgres`` account can reach when we are root."""
    path = Path(tempfile.mkdtemp(prefix="mlflow-stack-unit-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shared_root(open_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """reach.SHARED_ROOT (/var/lib/mlflow-stack) redirected to a fresh directory (not created
    yet), so that tests neither see nor touch the machine's own."""
    root = open_dir / "var-lib-mlflow-stack"
    monkeypatch.setattr(reach, "SHARED_ROOT", root)
    return root


@pytest.fixture
def postgres_account() -> pwd.struct_passwd:
    """The account PostgreSQL runs as when we are root. These tests need root and that
    account, as this machine and CI have: they fail, rather than skip, without them."""
    if os.geteuid() != 0:
        pytest.fail("this test runs as root (as on the development machine and in CI)")
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("this test needs the `postgres` account (as on the development machine)")


@pytest.fixture
def http_server() -> Iterator[LoopbackHTTP]:
    server = LoopbackHTTP().start()
    yield server
    server.close()
