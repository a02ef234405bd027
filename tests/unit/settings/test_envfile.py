"""The .env file: created once with fresh secrets and mode 0600; the environment overrides it."""

from __future__ import annotations

import stat
from pathlib import Path

from mlflow_stack.settings.contract import Settings
from mlflow_stack.settings.envfile import create_env_file, merged_environment, read_env_file


def test_created_env_file_is_private_complete_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    assert create_env_file(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    Settings.from_env(read_env_file(path))
    assert create_env_file(path) is False
    assert path.read_text() == first


def test_process_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("POSTGRES_PORT=5432\nMLFLOW_STACK_PORT=5000\n")
    merged = merged_environment(path, {"POSTGRES_PORT": "6543"})
    assert merged["POSTGRES_PORT"] == "6543"
    assert merged["MLFLOW_STACK_PORT"] == "5000"


def test_a_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_env_file(tmp_path / "absent.env") == {}
