"""The tracking store's SQLAlchemy engine: MLflow's pool options, and a liveness check only for
a connection that has sat idle.

MLflow creates its engines with ``pool_pre_ping=True``: a ``SELECT 1`` round trip before every
checkout, and MLflow checks a connection out several times per request (one session per store
call), so under load about a tenth of a worker's CPU went to pings of connections that had
answered a few milliseconds before. Here a connection is pinged only when it comes back to use
after :data:`IDLE_BEFORE_PING` seconds in the pool, which is when a restart of PostgreSQL, a
failover or an idle timeout can have closed it; a failed ping invalidates the whole pool, as
SQLAlchemy's pre-ping does, and the checkout gets a fresh connection. A server restart takes
longer than that (PostgreSQL's own start-up alone), so any connection that outlived one is
pinged; one that is closed while in steady use fails its next statement, SQLAlchemy then
invalidates the pool, and only that request sees the error.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy
import sqlalchemy.pool
from sqlalchemy import event, exc

log = logging.getLogger(__name__)

IDLE_BEFORE_PING = 0.25  # seconds
_CHECKED_IN = "mlflow_stack_checked_in"  # key in a connection record's info


def mlflow_pool_options() -> dict[str, Any]:
    """The options MLflow's ``create_sqlalchemy_engine`` passes, from the same variables
    (``MLFLOW_SQLALCHEMYSTORE_*``), without the pre-ping; ``tests/unit/stores/test_engine.py``
    compares them with MLflow's own."""
    from mlflow.environment_variables import (
        MLFLOW_SQLALCHEMYSTORE_ECHO,
        MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW,
        MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE,
        MLFLOW_SQLALCHEMYSTORE_POOL_SIZE,
        MLFLOW_SQLALCHEMYSTORE_POOLCLASS,
    )

    options: dict[str, Any] = {}
    for name, variable in (
        ("pool_size", MLFLOW_SQLALCHEMYSTORE_POOL_SIZE),
        ("max_overflow", MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW),
        ("pool_recycle", MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE),
        ("echo", MLFLOW_SQLALCHEMYSTORE_ECHO),
    ):
        if value := variable.get():
            options[name] = value
    if poolclass := MLFLOW_SQLALCHEMYSTORE_POOLCLASS.get():
        pool = getattr(sqlalchemy.pool, poolclass, None)
        if not (isinstance(pool, type) and issubclass(pool, sqlalchemy.pool.Pool)):
            raise ValueError(f"Invalid poolclass parameter: {poolclass}")
        options["poolclass"] = pool
    return options


def create_engine(db_uri: str) -> sqlalchemy.Engine:
    """An engine for ``db_uri`` that pings only connections back from idleness.

    Its pool hands out the most recently returned connection first (LIFO; SQLAlchemy's
    default is FIFO): a few connections stay in steady use and are never pinged, the rest
    sit idle and are pinged, or recycled, when a burst needs them. In FIFO order every
    pooled connection would rest for pool-size times the request interval between uses."""
    options = mlflow_pool_options()
    if options.get("poolclass", sqlalchemy.pool.QueuePool) is sqlalchemy.pool.QueuePool:
        options["pool_use_lifo"] = True
    engine = sqlalchemy.create_engine(db_uri, **options)
    ping_when_idle(engine)
    return engine


def ping_when_idle(engine: sqlalchemy.Engine, idle: float = IDLE_BEFORE_PING) -> None:
    dialect = engine.dialect

    @event.listens_for(engine, "connect")
    def fresh(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def rested(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def alive(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get(_CHECKED_IN, 0.0) < idle:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            log.info("a pooled connection is closed (%s): reconnecting the pool", error)
            raise exc.InvalidatePoolError() from error
