"""What backup and restore ask PostgreSQL, where it is testable without one: an unreachable
server (a closed loopback port), the maintenance database's fallback, the refusal of databases
in use, what counts as a non-empty target, and the order of the staging swap (PostgreSQL's
answers and failures played by a stand-in connection)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mlflow_stack.backup import databases
from mlflow_stack.errors import StackError
from mlflow_stack.native.processes import free_port
from mlflow_stack.stores.database import DatabaseMissingError
from tests.conftest import make_settings
from tests.unit.backup.helpers import Connection


def test_the_two_databases_by_role() -> None:
    settings = make_settings(POSTGRES_DB="tracking_db", MLFLOW_STACK_AUTH_DB="users_db")
    assert databases.database_names(settings) == {"tracking": "tracking_db", "auth": "users_db"}
    assert databases.VERSION_TABLES == {
        "tracking": "alembic_version",
        "auth": "alembic_version_auth",
    }


@pytest.mark.parametrize(("version", "major"), [(150004, 15), (180001, 18), (90624, 9)])
def test_the_server_major_version(version: int, major: int) -> None:
    assert databases.server_major(SimpleNamespace(server_version=version)) == major


# --- the maintenance connection ---


def test_an_unreachable_server_is_one_line_naming_where() -> None:
    port = free_port()
    settings = make_settings(POSTGRES_PORT=str(port))
    with pytest.raises(StackError) as refused:
        databases.maintenance(settings)
    message = str(refused.value)
    assert message.startswith(f"cannot reach PostgreSQL at 127.0.0.1:{port}: ")
    assert "Connection refused" in message and "\n" not in message


def test_without_a_postgres_database_the_maintenance_connection_is_to_postgres_db(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    there = Connection()

    def connect(settings: Any, dbname: str, timeout: int) -> Connection:
        asked.append(dbname)
        if dbname == "postgres":
            raise DatabaseMissingError(dbname)
        return there

    monkeypatch.setattr(databases, "connect", connect)
    assert databases.maintenance(make_settings()) is there
    assert asked == ["postgres", "mlflow"]


def test_with_neither_database_the_refusal_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(settings: Any, dbname: str, timeout: int) -> Connection:
        raise DatabaseMissingError(dbname)

    monkeypatch.setattr(databases, "connect", connect)
    with pytest.raises(StackError) as refused:
        databases.maintenance(make_settings(POSTGRES_PORT="5433"))
    assert str(refused.value) == (
        "neither 'postgres' nor POSTGRES_DB='mlflow' exists on PostgreSQL at 127.0.0.1:5433"
    )


def test_a_refused_login_stays_the_stores_own_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(settings: Any, dbname: str, timeout: int) -> Connection:
        raise StackError("PostgreSQL at 127.0.0.1:5432 rejected POSTGRES_USER='mlflow'")

    monkeypatch.setattr(databases, "connect", connect)
    with pytest.raises(StackError, match=r"^PostgreSQL at 127\.0\.0\.1:5432 rejected"):
        databases.maintenance(make_settings())


# --- who is connected ---


def test_databases_in_use_are_refused_naming_who_and_how_to_stop_the_server() -> None:
    conn = Connection({"pg_stat_activity": [("mlflow", "a client", 1), ("mlflow", "gunicorn", 4)]})
    with pytest.raises(StackError) as refused:
        databases.refuse_connected(conn, make_settings())
    message = str(refused.value)
    assert message.startswith(
        "the databases are in use (1 from a client to mlflow, 4 from gunicorn to mlflow): "
        "stop the MLflow server first (native: `mlflow-stack down mlflow`;"
    )
    assert "\n" not in message
    ((query, parameters),) = conn.executed
    assert "pid <> pg_backend_pid()" in query  # the asking connection does not count
    assert parameters == (["mlflow", "mlflow_auth"],)


def test_nobody_connected_passes() -> None:
    databases.refuse_connected(Connection(), make_settings())


# --- what a non-empty target holds ---


def test_contents_are_the_non_zero_counts_of_existing_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracking = Connection(
        {"FROM experiments": [(2,)], "FROM runs": [(0,)]},
        tables=("experiments", "runs"),  # registered_models does not exist (yet)
    )
    auth = Connection({"FROM users": [(3,)]}, tables=("users",))
    connections = {"mlflow": tracking, "mlflow_auth": auth}
    monkeypatch.setattr(databases, "connect", lambda s, name, timeout: connections[name])
    assert databases.contents(make_settings(MLFLOW_AUTH_ADMIN_USERNAME="root.admin")) == [
        "2 experiments besides Default",
        "3 users besides the admin",
    ]
    assert "experiment_id <> 0" in tracking.executed[1][0]
    assert not any("registered_models" in q for q, _ in tracking.executed if "count" in q)
    assert auth.executed[-1][0].endswith("WHERE username <> 'root.admin'")
    assert tracking.closed and auth.closed


def test_a_missing_database_holds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(settings: Any, dbname: str, timeout: int) -> Connection:
        raise DatabaseMissingError(dbname)

    monkeypatch.setattr(databases, "connect", connect)
    assert databases.contents(make_settings()) == []


# --- the revision ---


def test_the_revision_is_none_before_the_first_migration(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = Connection()
    migrated = Connection({"SELECT version_num": [("1b5f0d9ad7c1",)]}, tables=("alembic_version",))
    connections = {"mlflow": migrated, "mlflow_auth": fresh}
    monkeypatch.setattr(databases, "connect", lambda s, name, timeout: connections[name])
    settings = make_settings()
    assert databases.alembic_revision(settings, "tracking") == "1b5f0d9ad7c1"
    assert databases.alembic_revision(settings, "auth") is None
    assert migrated.executed[1][0] == "SELECT version_num FROM alembic_version"
    assert fresh.closed and migrated.closed


# --- the swap ---


def test_a_restore_fills_a_staging_database_then_swaps_it_in() -> None:
    conn = Connection()
    filled: list[str] = []
    databases.replace(conn, "mlflow", filled.append)
    assert filled == ["mlflow_restoring"]
    assert [q for q, _ in conn.executed] == [
        'DROP DATABASE IF EXISTS "mlflow_restoring"',
        "CREATE DATABASE \"mlflow_restoring\" TEMPLATE template0 ENCODING 'UTF8'",
        'DROP DATABASE IF EXISTS "mlflow"',
        'ALTER DATABASE "mlflow_restoring" RENAME TO "mlflow"',
    ]


@pytest.mark.parametrize("failure", [StackError("pg_restore failed"), KeyboardInterrupt()])
def test_a_failed_fill_drops_the_staging_database_and_leaves_the_target(
    failure: BaseException,
) -> None:
    conn = Connection()

    def fill(staging: str) -> None:
        raise failure

    with pytest.raises(type(failure)):
        databases.replace(conn, "mlflow", fill)
    assert [q for q, _ in conn.executed] == [
        'DROP DATABASE IF EXISTS "mlflow_restoring"',
        "CREATE DATABASE \"mlflow_restoring\" TEMPLATE template0 ENCODING 'UTF8'",
        'DROP DATABASE IF EXISTS "mlflow_restoring"',
    ]


def test_the_staging_name_of_a_long_name_stays_within_postgresqls_63_characters() -> None:
    name = "d" * 63
    conn = Connection()
    staged: list[str] = []
    databases.replace(conn, name, staged.append)
    assert staged == ["d" * 50 + "_restoring"]
    assert len(staged[0]) <= 63
    assert conn.executed[-1][0] == f'ALTER DATABASE "{staged[0]}" RENAME TO "{name}"'
