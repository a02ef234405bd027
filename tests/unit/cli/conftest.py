"""The command line as a user runs it, with none of this process's settings in its way."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlflow_stack.cli.main import cli
from mlflow_stack.settings.contract import SETTING_NAMES

#: The loggers `mlflow-stack` quiets (or, with --debug, opens up) for the whole process.
TUNED_LOGGERS = ("", "botocore", "urllib3", "boto3", "alembic")


@pytest.fixture(autouse=True)
def no_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No stack setting or MLflow client variable of the test run reaches the commands, and
    the log levels the group sets are put back."""
    for name in list(os.environ):
        if name in SETTING_NAMES or name.startswith("MLFLOW_TRACKING_"):
            monkeypatch.delenv(name)
    levels = {name: logging.getLogger(name).level for name in TUNED_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def invoke(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """`mlflow-stack --env-file TMP/.env ARGS` in this process; stdout and stderr apart."""
    return CliRunner(env=env).invoke(cli, ["--env-file", str(tmp_path / ".env"), *args])
