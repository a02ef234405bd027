"""What every native service is given and provides: its data dir layout, a minimal
environment, and defaults a service overrides only when it needs to."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from mlflow_stack.native.service import (
    CHECK_TIMEOUT,
    Layout,
    Service,
    base_environment,
)
from tests.conftest import make_settings as settings


def test_layout_creates_a_private_root_but_leaves_an_existing_one_alone(tmp_path: Path) -> None:
    fresh = Layout(tmp_path / "new" / "data")
    fresh.create()
    expected = 0o711 if os.geteuid() == 0 else 0o700
    assert stat.S_IMODE(fresh.root.stat().st_mode) == expected
    assert stat.S_IMODE(fresh.logs.stat().st_mode) == 0o700
    existing = tmp_path / "home"
    existing.mkdir(mode=0o755)
    Layout(existing).create()
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755


def test_the_layout_puts_logs_records_and_states_below_its_root(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.log("mlflow") == tmp_path / "logs" / "mlflow.log"
    assert layout.record("mlflow") == tmp_path / "run" / "mlflow.json"
    assert layout.state("mlflow") == tmp_path / "run" / "mlflow.state"


def test_creating_a_layout_again_keeps_what_is_there(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.create()
    layout.log("s3").write_text("kept\n")
    layout.create()
    assert layout.log("s3").read_text() == "kept\n"
    assert sorted(p.name for p in layout.root.iterdir()) == ["logs", "run"]
    assert stat.S_IMODE(layout.run.stat().st_mode) == 0o700


def test_third_party_servers_get_a_minimal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/opt/bin:/usr/bin")
    monkeypatch.setenv("TZ", "Europe/Paris")
    monkeypatch.setenv("TMPDIR", "/var/tmp")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    monkeypatch.setenv("POSTGRES_PASSWORD", "pg-password-that-must-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-that-must-not-leak")
    assert base_environment() == {
        "PATH": "/opt/bin:/usr/bin",
        "TZ": "Europe/Paris",
        "TMPDIR": "/var/tmp",
        "LC_ALL": "C",  # messages the runtime reads back are in English
    }
    for name in ("PATH", "TZ", "TMPDIR"):
        monkeypatch.delenv(name)
    assert base_environment() == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}


class Minimal(Service):
    name = "minimal"

    def command(self) -> list[str]:
        return ["true"]

    def check(self, timeout: float = CHECK_TIMEOUT) -> None:
        return None

    def endpoint(self) -> str:
        return "nowhere"


def test_a_service_runs_as_the_invoking_user_in_the_data_dir_by_default(
    tmp_path: Path,
) -> None:
    service = Minimal(settings(), Layout(tmp_path))
    assert service.user is None
    assert service.workdir == tmp_path
    assert service.ports() == {}
    assert service.environment() == base_environment()
    assert service.describe() == "minimal"
    assert service.stop_signal == signal.SIGTERM
    assert (service.start_timeout, service.stop_timeout) == (60.0, 30.0)
    service.prepare()  # nothing to prepare
    assert list(tmp_path.iterdir()) == []


def test_a_service_must_say_how_it_starts_is_checked_and_is_reached() -> None:
    class Incomplete(Service):
        name = "incomplete"

        def command(self) -> list[str]:
            return ["true"]

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(settings(), Layout(Path(os.devnull)))  # type: ignore[abstract]
