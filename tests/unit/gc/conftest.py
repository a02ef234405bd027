"""Real parts for the collector: an S3 (moto's threaded server on a loopback port, the
session's from tests/unit/conftest.py, a fresh bucket per test) and MLflow's own SQLAlchemy
tracking store on SQLite (migrated once, copied for each test)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.stores.storage import s3_client
from tests.conftest import make_settings


@pytest.fixture
def bucket(s3_url: str) -> tuple[Any, str]:
    """An S3 client and the name of a new, empty bucket."""
    name = f"b-{uuid.uuid4().hex[:16]}"
    client = s3_client(make_settings(MLFLOW_STACK_S3_ENDPOINT_URL=s3_url))
    client.create_bucket(Bucket=name)
    return client, name


def _open_store(path: Path) -> Any:
    """MLflow's store on SQLite without waiting for the disk (a test's database is thrown
    away): its engine is made here, before the store, so that every connection has the
    pragmas, the migrations' too."""
    from mlflow.store.db.utils import create_sqlalchemy_engine_with_retry
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy import event

    uri = f"sqlite:///{path}"
    engine = create_sqlalchemy_engine_with_retry(uri)

    @event.listens_for(engine, "connect")
    def fast(connection: Any, record: Any) -> None:
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA journal_mode = MEMORY")

    engine.dispose()
    SqlAlchemyStore._engine_map[uri] = engine
    return SqlAlchemyStore(uri, "mlflow-artifacts:/")


def _close_store(store: Any) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store.engine.dispose()
    SqlAlchemyStore._engine_map.pop(store.db_uri, None)


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tracking database at MLflow's current schema (its migrations take a few seconds)."""
    path = tmp_path_factory.mktemp("tracking") / "template.db"
    _close_store(_open_store(path))
    return path


@pytest.fixture
def store(migrated_database: Path, tmp_path: Path) -> Iterator[Any]:
    """MLflow's tracking store on a fresh copy of the migrated database."""
    path = tmp_path / "mlflow.db"
    shutil.copy(migrated_database, path)
    opened = _open_store(path)
    try:
        yield opened
    finally:
        _close_store(opened)
