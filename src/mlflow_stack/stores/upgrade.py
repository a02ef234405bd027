"""Schema upgrades: which databases the installed MLflow would migrate, and a copy of each one,
taken inside PostgreSQL before it is migrated.

A copy is ``CREATE DATABASE "<db>_before_<revision>_<utc time>" TEMPLATE "<db>"``: it works
wherever PostgreSQL does (native, compose, RDS), needs no client tools and no extra volume, and
it is taken only when the stored schema revision is behind the installed MLflow's head, so a
normal restart copies nothing. PostgreSQL refuses to copy a database while another session is
connected to it, which is what an upgrade needs anyway: no older server still writing to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection  # noqa: N812

log = logging.getLogger(__name__)

#: PostgreSQL's longest identifier, in bytes (NAMEDATALEN - 1); longer names are cut silently.
MAX_NAME_BYTES = 63

#: The revision shown for a schema that has tables but no alembic version (auth before 3.6).
UNVERSIONED = "unversioned"


@dataclass(frozen=True)
class Schema:
    """One MLflow schema in one database, and what the installed MLflow knows of it."""

    label: str  # "tracking" or "auth", for messages
    database: str
    version_table: str  # alembic's bookkeeping table
    marker_table: str  # a table that exists once the schema holds anything
    revisions: frozenset[str]
    head: str


def _script_directory(config_factory: Callable[[str], object]) -> tuple[frozenset[str], str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(config_factory("postgresql://"))
    heads = script.get_heads()
    if len(heads) != 1:
        raise StackError(f"the installed MLflow has {len(heads)} schema heads: {heads}")
    return frozenset(r.revision for r in script.walk_revisions()), heads[0]


def schemas(settings: Settings) -> list[Schema]:
    """The tracking schema in POSTGRES_DB and the auth schema in MLFLOW_STACK_AUTH_DB."""
    from mlflow.server.auth.db import utils as auth_db
    from mlflow.store.db import utils as tracking_db

    tracking_revisions, tracking_head = _script_directory(tracking_db._get_alembic_config)
    auth_revisions, auth_head = _script_directory(auth_db._get_alembic_config)
    return [
        Schema(
            "tracking",
            settings.postgres_db,
            "alembic_version",
            "experiments",
            tracking_revisions,
            tracking_head,
        ),
        Schema(
            "auth", settings.auth_db, "alembic_version_auth", "users", auth_revisions, auth_head
        ),
    ]


def stored_revision(conn: Connection, schema: Schema) -> str | None:
    """The schema revision stored in the database when it is behind the head; None when the
    database is up to date or holds no MLflow tables yet (nothing to keep).

    A revision this MLflow does not know was written by a newer one: migrating would fail, and
    running older code on a newer schema is not safe, so stop and say so.
    """
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (schema.marker_table, schema.version_table),
        )
        has_tables, has_version = cursor.fetchone()
        if not has_tables:
            return None
        revision = None
        if has_version:
            cursor.execute(f'SELECT version_num FROM "{schema.version_table}"')  # noqa: S608
            row = cursor.fetchone()
            revision = row[0] if row else None
    if revision == schema.head:
        return None
    if revision is not None and revision not in schema.revisions:
        raise StackError(
            f"database {schema.database!r} holds {schema.label} schema revision {revision}, "
            f"which the installed MLflow does not know (its head is {schema.head}): a newer "
            "MLflow upgraded it; run that version, or restore a copy taken before the upgrade"
        )
    return revision or UNVERSIONED


def copy_name(database: str, revision: str, at: datetime) -> str:
    """``<db>_before_<revision>_<YYYYmmddHHMMSS>`` (UTC), the database name cut to fit."""
    suffix = f"_before_{revision[:12]}_{at.astimezone(UTC):%Y%m%d%H%M%S}"
    room = MAX_NAME_BYTES - len(suffix.encode())
    return database.encode()[:room].decode(errors="ignore") + suffix


def _quoted(name: str) -> str:
    """The name as SQL would need it typed (for the rollback hint in the log)."""
    if name.isidentifier() and name.islower() and name.isascii():
        return name
    return '"' + name.replace('"', '""') + '"'


def rollback_hint(database: str, copy: str) -> str:
    return (
        f"ALTER DATABASE {_quoted(database)} RENAME TO {_quoted(database + '_failed')}; "
        f"ALTER DATABASE {_quoted(copy)} RENAME TO {_quoted(database)}"
    )


def _other_sessions(conn: Connection, database: str) -> str:
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(nullif(application_name, ''), 'unnamed') || coalesce("
            " ' from ' || host(client_addr), ''), count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() GROUP BY 1 ORDER BY 1",
            (database,),
        )
        rows = cursor.fetchall()
    return ", ".join(f"{count} {name}" for name, count in rows) or "they have left since"


def copy_database(conn: Connection, schema: Schema, revision: str, target: str) -> None:
    """CREATE DATABASE target TEMPLATE schema.database, or a StackError saying why not.

    PostgreSQL creates the copy whole or not at all: a failed copy leaves no database behind.
    """
    import psycopg2
    from psycopg2 import errors, sql

    source = schema.database
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(target), sql.Identifier(source)
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    except errors.ObjectInUse:
        raise StackError(
            f"database {source!r} needs a {schema.label} schema upgrade ({revision} -> "
            f"{schema.head}) and a copy first, but other sessions are connected to it "
            f"({_other_sessions(conn, source)}): stop every other server using it, then start "
            "this one again"
        ) from None
    except errors.InsufficientPrivilege:
        raise StackError(
            f"database {source!r} needs a {schema.label} schema upgrade ({revision} -> "
            f"{schema.head}), but this PostgreSQL user may not copy it first: grant it CREATEDB "
            "and ownership of the database, or back it up and run `mlflow db upgrade` yourself"
        ) from None
    except psycopg2.Error as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise StackError(
            f"copying database {source!r} to {target!r} before its schema upgrade failed "
            f"({reason}); nothing was upgraded"
        ) from None


def _drop(conn: Connection, name: str) -> None:
    from psycopg2 import sql

    try:
        with conn.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    except Exception:  # noqa: BLE001 - the error being reported matters more
        log.warning("could not drop %s, a copy of a database that was not upgraded", name)


def copy_before_upgrade(
    settings: Settings,
    conn: Connection,
    connect: Callable[[str], Connection],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[str]:
    """Copy every database whose schema is behind the installed MLflow's head; return the
    copies' names. ``conn`` (autocommit, connected to another database) runs the copies;
    ``connect(dbname)`` opens a connection to read a database's revision.

    The caller holds the migration lock, so servers starting together copy once. When one copy
    fails, the copies taken before it in this call are dropped again: nothing was migrated, so
    they would only be duplicates.
    """
    behind: list[tuple[Schema, str]] = []
    for schema in schemas(settings):
        reader = connect(schema.database)
        try:
            revision = stored_revision(reader, schema)
        finally:
            reader.close()
        if revision is not None:
            behind.append((schema, revision))
    made: list[str] = []
    for schema, revision in behind:
        target = copy_name(schema.database, revision, now())
        log.info(
            "copying database %s (%s schema %s, behind %s) to %s before upgrading it",
            schema.database,
            schema.label,
            revision,
            schema.head,
            target,
        )
        try:
            copy_database(conn, schema, revision, target)
        except StackError:
            for name in made:
                _drop(conn, name)
            raise
        made.append(target)
        log.info(
            "copied database %s to %s; to roll back after the upgrade, stop the servers, pin "
            "the older MLflow and run: %s",
            schema.database,
            target,
            rollback_hint(schema.database, target),
        )
    return made
