"""The stack's own indexes on a real PostgreSQL: built by the migration step, left alone by an
MLflow schema upgrade, rebuilt when a build was interrupted, and used by the searches they are
for (the query plans of a page over 20,000 runs)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from mlflow_stack.stores.indexes import INDEXES, ensure_indexes, existing
from mlflow_stack.stores.search import page_of_ids
from tests.conftest import LiveStack
from tests.integration.test_upgrade import PREVIOUS_TRACKING_HEAD


def _url(stack: LiveStack, database: str) -> str:
    s = stack.settings
    return (
        f"postgresql+psycopg2://{quote(s.postgres_user, safe='')}:"
        f"{quote(s.postgres_password, safe='')}@{s.postgres_host}:{s.postgres_port}/{database}"
    )


@pytest.fixture
def database(stack: LiveStack) -> Iterator[sqlalchemy.Engine]:
    """A fresh, empty database of the session stack's PostgreSQL."""
    name = f"indexes_{uuid.uuid4().hex[:8]}"
    admin = stack.pg("postgres")
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    engine = sqlalchemy.create_engine(_url(stack, name), poolclass=sqlalchemy.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _revision(engine: sqlalchemy.Engine) -> str:
    with engine.connect() as connection:
        statement = sqlalchemy.text("SELECT version_num FROM alembic_version")
        return connection.execute(statement).scalar_one()


def _valid(engine: sqlalchemy.Engine) -> dict[str, bool]:
    with engine.connect() as connection:
        return existing(connection)


def test_the_stacks_tracking_database_has_every_index_valid(stack: LiveStack) -> None:
    engine = sqlalchemy.create_engine(_url(stack, stack.settings.postgres_db))
    try:
        assert _valid(engine) == dict.fromkeys(INDEXES, True)
        assert ensure_indexes(engine) == []  # nothing to do the second time
    finally:
        engine.dispose()


def test_an_mlflow_schema_upgrade_runs_over_the_indexes_and_keeps_them(
    database: sqlalchemy.Engine,
) -> None:
    from alembic import command
    from mlflow.store.db import utils as tracking_db
    from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    # The schema as the previous MLflow left it, with the stack's indexes built on it.
    InitialBase.metadata.create_all(database)
    with database.begin() as connection:
        config = _get_alembic_config(database.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.upgrade(config, PREVIOUS_TRACKING_HEAD)
    assert _revision(database) == PREVIOUS_TRACKING_HEAD
    assert sorted(ensure_indexes(database)) == sorted(INDEXES)

    tracking_db._upgrade_db(database)  # what `mlflow db upgrade` does

    assert _revision(database) == _get_latest_schema_revision()
    assert _valid(database) == dict.fromkeys(INDEXES, True)
    assert ensure_indexes(database) == []


def test_an_interrupted_build_is_dropped_and_built_again(database: sqlalchemy.Engine) -> None:
    from mlflow.store.db import utils as tracking_db

    tracking_db._initialize_tables(database)
    ensure_indexes(database)
    name = "mlflow_stack_latest_metrics_key_value"
    with database.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sqlalchemy.text(
            "DROP INDEX mlflow_stack_latest_metrics_key_value;"
            "INSERT INTO experiments (name, lifecycle_stage) VALUES ('e', 'active');"
            "INSERT INTO runs (run_uuid, experiment_id, lifecycle_stage, status, source_type)"
            " VALUES ('r1', 1, 'active', 'RUNNING', 'LOCAL'),"
            " ('r2', 1, 'active', 'RUNNING', 'LOCAL');"
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)"
            " VALUES ('m', 1, 0, 0, false, 'r1'), ('m', 1, 0, 0, false, 'r2')"
        ))  # fmt: skip
        # A concurrent build that fails (a unique index over duplicates) leaves an invalid one.
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            connection.execute(
                sqlalchemy.text(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON latest_metrics (key)")
            )
    assert _valid(database)[name] is False

    assert ensure_indexes(database) == [name]

    assert _valid(database) == dict.fromkeys(INDEXES, True)
    with database.connect() as connection:
        definition = connection.execute(
            sqlalchemy.text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
            {"name": name},
        ).scalar_one()
    assert definition.endswith("(key, is_nan, value, run_uuid)"), definition


# -- the plans: each page is a walk of an index that stops at the page's end -------------------


def _plan(engine: sqlalchemy.Engine, statement: Any) -> str:
    sql = statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text(f"EXPLAIN {sql}")).scalars().all()
    return "\n".join(rows)


def _parts(order_by: list[str] | None, filter_string: str = "") -> Any:
    page = page_of_ids(
        Session(),
        experiment_ids=["1"],
        filter_string=filter_string,
        stages={"active"},
        max_results=100,
        order_by=order_by,
        page_token=None,
        dialect="postgresql",
        filter_experiment_ids=lambda _, ids: ids,
    )
    assert page is not None
    return [part.limit(101) for part in page.parts]


def test_the_pages_of_the_common_orders_walk_the_indexes(
    database: sqlalchemy.Engine, stack: LiveStack
) -> None:
    from mlflow.store.db import utils as tracking_db

    from bench.seed import seed_runs

    tracking_db._initialize_tables(database)
    ensure_indexes(database)
    with database.begin() as connection:
        connection.execute(sqlalchemy.text(
            "INSERT INTO experiments (name, lifecycle_stage) VALUES ('seeded', 'active')"
        ))  # fmt: skip
    seed_runs(
        database.url.render_as_string(hide_password=False),
        None,
        experiment_id=1,
        artifact_root="s3://bucket/1",
        total=20_000,
    )

    (newest,) = _parts(None)
    assert "mlflow_stack_runs_experiment_start" in _plan(database, newest)
    for direction in ("ASC", "DESC"):
        present, nan, missing = _parts([f"metrics.rmse {direction}"])
        plan = _plan(database, present)
        assert "Index Only Scan" in plan and "mlflow_stack_latest_metrics_key_value" in plan, plan
        assert "mlflow_stack_latest_metrics_key_value" in _plan(database, nan)
        # Runs without the metric are read only when the others leave the page short: an
        # anti-join over the experiment's runs, as costly as MLflow's search, no index needed.
        assert "Anti Join" in _plan(database, missing)
