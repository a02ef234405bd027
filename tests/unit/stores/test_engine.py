"""The tracking store's engine: MLflow's pool options, and pings only after idleness
(a real PostgreSQL connection closed while idle: tests/integration/test_tracking_store.py)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from mlflow_stack.stores import engine as engines
from mlflow_stack.stores.engine import mlflow_pool_options, ping_when_idle

POOL_VARIABLES = {
    "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "7",
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "3",
    "MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE": "120",
    "MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "QueuePool",
}


def mlflows_options(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What MLflow's own create_sqlalchemy_engine passes to SQLAlchemy."""
    from mlflow.store.db import utils

    passed: dict[str, Any] = {}

    def record(uri: str, **options: Any) -> Any:
        passed.update(options)
        return sqlalchemy.create_engine.__wrapped__(uri)  # type: ignore[attr-defined]

    record.__wrapped__ = sqlalchemy.create_engine  # type: ignore[attr-defined]
    monkeypatch.setattr(utils.sqlalchemy, "create_engine", record)
    utils.create_sqlalchemy_engine("postgresql+psycopg2://u@127.0.0.1:1/db")
    return passed


@pytest.mark.parametrize("variables", [{}, POOL_VARIABLES])
def test_the_pool_options_are_mlflows_without_the_pre_ping(
    variables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in POOL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    ours = mlflow_pool_options()
    theirs = mlflows_options(monkeypatch)
    assert theirs.pop("pool_pre_ping") is True
    assert ours == theirs


def test_an_unknown_pool_class_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NoSuchPool")
    with pytest.raises(ValueError, match="Invalid poolclass parameter: NoSuchPool"):
        mlflow_pool_options()


class Pings:
    """Counts the dialect's pings; fails the next ``fail`` of them as a closed socket would."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self.count = 0
        self.fail = 0
        real = engine.dialect.do_ping

        def ping(dbapi_connection: Any) -> bool:
            self.count += 1
            if self.fail:
                self.fail -= 1
                raise sqlite3.OperationalError("the server closed the connection")
            return real(dbapi_connection)

        engine.dialect.do_ping = ping  # type: ignore[method-assign]


def engine_on(tmp_path: Path, idle: float) -> tuple[sqlalchemy.Engine, Pings]:
    engine = sqlalchemy.create_engine(
        f"sqlite:///{tmp_path / 'db.sqlite'}", poolclass=sqlalchemy.pool.QueuePool
    )
    ping_when_idle(engine, idle=idle)
    return engine, Pings(engine)


def raw(connection: sqlalchemy.Connection) -> Any:
    return connection.connection.dbapi_connection


def test_a_connection_in_steady_use_is_not_pinged_one_back_from_idleness_is(
    tmp_path: Path,
) -> None:
    engine, pings = engine_on(tmp_path, idle=0.2)
    with engine.connect() as connection:  # fresh
        first = raw(connection)
    with engine.connect() as connection:  # back at once
        assert raw(connection) is first
    assert pings.count == 0
    time.sleep(0.3)
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("select 1")).scalar_one() == 1
        assert raw(connection) is first  # it answered the ping: kept
    assert pings.count == 1


def test_a_failed_ping_invalidates_the_pool_and_the_checkout_gets_a_fresh_connection(
    tmp_path: Path,
) -> None:
    engine, pings = engine_on(tmp_path, idle=0.05)
    with engine.connect() as a, engine.connect() as b:
        old = [raw(a), raw(b)]  # kept alive here, so no new object can take their place
    time.sleep(0.1)
    pings.fail = 1
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("select 1")).scalar_one() == 1
        assert all(raw(connection) is not o for o in old)
    # the other pooled connection predates the invalidation: replaced too, not reused
    with engine.connect() as first, engine.connect() as second:
        assert all(raw(c) is not o for c in (first, second) for o in old)


def test_the_store_engine_is_created_with_the_idle_ping(tmp_path: Path) -> None:
    engine = engines.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    pings = Pings(engine)
    for _ in range(3):
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
    assert pings.count == 0  # no pre-ping on every checkout
    time.sleep(engines.IDLE_BEFORE_PING + 0.05)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("select 1"))
    assert pings.count == 1


def test_the_pool_returns_the_connection_used_last_first(tmp_path: Path) -> None:
    """LIFO: the connection in steady use stays the one in use (and is never pinged)."""
    engine = engines.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.connect() as a, engine.connect() as b:
        last = raw(b)
        first = raw(a)
    assert first is not last
    for _ in range(3):
        with engine.connect() as connection:
            assert raw(connection) is first  # returned last (the with closed a after b)
