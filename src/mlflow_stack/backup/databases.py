"""What backup and restore ask PostgreSQL directly: versions, revisions, who is connected,
whether the target is empty, and replacing a database with a restored copy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.database import DatabaseMissingError, connect

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection  # noqa: N812

log = logging.getLogger(__name__)

#: Alembic's version table in each database (the auth app keeps its own name).
VERSION_TABLES = {"tracking": "alembic_version", "auth": "alembic_version_auth"}


def database_names(settings: Settings) -> dict[str, str]:
    return {"tracking": settings.postgres_db, "auth": settings.auth_db}


def maintenance(settings: Settings) -> Connection:
    """A connection to the 'postgres' database (or POSTGRES_DB where there is none, as on
    some managed servers), from which the two databases can be dropped and created."""
    try:
        return connect(settings, "postgres", timeout=10)
    except DatabaseMissingError:
        try:
            return connect(settings, settings.postgres_db, timeout=10)
        except DatabaseMissingError:
            raise StackError(
                f"neither 'postgres' nor POSTGRES_DB={settings.postgres_db!r} exists on "
                f"PostgreSQL at {settings.postgres_host}:{settings.postgres_port}"
            ) from None
    except Exception as error:
        if isinstance(error, StackError):
            raise
        raise StackError(
            f"cannot reach PostgreSQL at {settings.postgres_host}:{settings.postgres_port}: {error}"
        ) from None


def server_major(conn: Connection) -> int:
    return int(conn.server_version) // 10000


def exists(conn: Connection, name: str) -> bool:
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cursor.fetchone() is not None


def alembic_revision(settings: Settings, role: str) -> str | None:
    conn = connect(settings, database_names(settings)[role], timeout=10)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", (VERSION_TABLES[role],))
            if cursor.fetchone()[0] is None:
                return None
            cursor.execute(f"SELECT version_num FROM {VERSION_TABLES[role]}")  # noqa: S608
            row = cursor.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def refuse_connected(conn: Connection, settings: Settings) -> None:
    """Nothing may be connected to the databases about to be replaced (the server least)."""
    names = list(database_names(settings).values())
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT datname, coalesce(nullif(application_name, ''), 'a client'), count(*)"
            " FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid()"
            " GROUP BY 1, 2 ORDER BY 1, 2",
            (names,),
        )
        rows = cursor.fetchall()
    if rows:
        who = ", ".join(f"{count} from {app} to {db}" for db, app, count in rows)
        raise StackError(
            f"the databases are in use ({who}): stop the MLflow server first "
            "(native: `mlflow-stack down mlflow`; compose: `docker compose stop mlflow`; "
            "EC2: `systemctl stop mlflow-stack`) and restore again"
        )


def _count(settings: Settings, dbname: str, queries: dict[str, str]) -> list[str]:
    """The non-zero counts of ``queries`` (name -> SQL), skipping tables that do not exist."""
    found = []
    try:
        conn = connect(settings, dbname, timeout=10)
    except DatabaseMissingError:
        return found
    try:
        with conn.cursor() as cursor:
            for what, query in queries.items():
                table = query.split(" FROM ", 1)[1].split()[0]
                cursor.execute("SELECT to_regclass(%s)", (table,))
                if cursor.fetchone()[0] is None:
                    continue
                cursor.execute(query)
                count = cursor.fetchone()[0]
                if count:
                    found.append(f"{count} {what}")
    finally:
        conn.close()
    return found


def contents(settings: Settings) -> list[str]:
    """What the target holds beyond a fresh stack's Default experiment and admin user."""
    tracking = _count(
        settings,
        settings.postgres_db,
        {
            "experiments besides Default": "SELECT count(*) FROM experiments"
            " WHERE experiment_id <> 0",
            "runs": "SELECT count(*) FROM runs",
            "registered models": "SELECT count(*) FROM registered_models",
        },
    )
    admin = settings.admin_username.replace("'", "''")
    auth = _count(
        settings,
        settings.auth_db,
        {"users besides the admin": f"SELECT count(*) FROM users WHERE username <> '{admin}'"},  # noqa: S608
    )
    return tracking + auth


def replace(conn: Connection, name: str, fill: Callable[[str], None]) -> None:
    """Fill a new database, then swap it in for ``name``.

    The dump goes into ``<name>_restoring`` first, so a restore that fails leaves the target
    database as it was; the swap (drop and rename) happens only once the copy is complete.
    """
    from psycopg2 import sql

    staging = f"{name[:50]}_restoring"
    with conn.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(staging)))
        cursor.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(staging)
            )
        )
    try:
        fill(staging)
    except BaseException:
        with conn.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(staging)))
        raise
    with conn.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        cursor.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(staging), sql.Identifier(name)
            )
        )
