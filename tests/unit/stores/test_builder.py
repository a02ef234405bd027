"""MLflow finds the stack's tracking store through its ``mlflow.tracking_store`` entry point
for every ``postgresql`` URI, and leaves workspaces to its own store."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest
from mlflow.tracking._tracking_service import utils

from mlflow_stack.stores import builder, tracking


class Recorder:
    def __init__(self, *args: Any) -> None:
        self.args = args


def test_mlflow_builds_the_stacks_store_for_every_postgresql_uri() -> None:
    (point,) = [p for p in entry_points(group="mlflow.tracking_store") if p.name == "postgresql"]
    assert point.load() is builder.build
    registry = utils._tracking_store_registry
    for uri in ("postgresql://u@h/db", "postgresql+psycopg2://u@h:5432/db"):
        assert registry.get_store_builder(uri) is builder.build
    assert registry.get_store_builder("sqlite:///x.db") is not builder.build


def test_the_store_gets_the_artifact_root_it_is_given_or_the_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracking, "TrackingStore", Recorder)
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES", raising=False)
    assert builder.build("postgresql://u@h/db", "s3://given").args == (
        "postgresql://u@h/db",
        "s3://given",
    )
    monkeypatch.setenv(utils._SERVER_ARTIFACT_ROOT_ENV_VAR, "s3://server")
    assert builder.build("postgresql://u@h/db").args == ("postgresql://u@h/db", "s3://server")


def test_with_workspaces_on_mlflows_own_store_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "TrackingStore", Recorder)
    monkeypatch.setattr(utils, "_get_sqlalchemy_store", lambda uri, root: ("mlflow's", uri, root))
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert builder.build("postgresql://u@h/db", "s3://x") == (
        "mlflow's",
        "postgresql://u@h/db",
        "s3://x",
    )
