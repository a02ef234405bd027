"""The stack's own indexes on MLflow's tracking tables: its one migration step after MLflow's.

MLflow's schema has no index that serves a runs search: the runs of an experiment in their
default order (newest first, the UI's first page) are found by reading every run, and a search
ordered by a metric reads every latest value of that metric. Two indexes let PostgreSQL walk a
search's page in order and stop at its end (:mod:`mlflow_stack.stores.search`):

- runs by experiment in MLflow's default order (start time newest first, then run id);
- latest metrics by key, NaN flag and value (with the run id, so the walk reads only the
  index). Params and tags get none: their values may be up to 8,000 characters, longer than a
  B-tree entry may be, and such an index would refuse a long value MLflow accepts.

Each name starts with ``mlflow_stack_``, which MLflow's migrations never use, so an MLflow
schema upgrade neither trips over them nor drops them (tests/integration/test_indexes.py
upgrades a schema of the previous MLflow with them in place). They are built with ``CREATE
INDEX CONCURRENTLY``, so a large database keeps taking writes from running servers meanwhile;
a build that was interrupted leaves an invalid index, which the next start drops and builds
again. Run under the stack's migration lock (:func:`mlflow_stack.stores.database.migrate`).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy

log = logging.getLogger(__name__)

PREFIX = "mlflow_stack_"

#: Name -> what it indexes.
INDEXES = {
    f"{PREFIX}runs_experiment_start": "runs (experiment_id, start_time DESC, run_uuid)",
    f"{PREFIX}latest_metrics_key_value": "latest_metrics (key, is_nan, value, run_uuid)",
}


def ensure_indexes(engine: sqlalchemy.Engine) -> list[str]:
    """Build every index that is missing or invalid; return the names built."""
    built = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        present = existing(connection)
        for name, target in INDEXES.items():
            valid = present.get(name)
            if valid:
                continue
            if valid is not None:  # an interrupted concurrent build
                log.info("dropping the invalid index %s, to build it again", name)
                connection.execute(sqlalchemy.text(f"DROP INDEX CONCURRENTLY {name}"))
            log.info("building index %s on %s", name, target)
            connection.execute(sqlalchemy.text(f"CREATE INDEX CONCURRENTLY {name} ON {target}"))
            built.append(name)
    return built


def existing(connection: Any) -> dict[str, bool]:
    """The stack's indexes present, by name, and whether each is valid."""
    rows = connection.execute(
        sqlalchemy.text("""
            SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE starts_with(c.relname, :prefix) AND pg_table_is_visible(c.oid)
        """),
        {"prefix": PREFIX},
    )
    return dict(rows.all())
