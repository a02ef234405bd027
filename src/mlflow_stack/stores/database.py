"""PostgreSQL for ``serve``: wait for the server, create the databases, run the migrations."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.password import current_password, open_with_password, source_for
from mlflow_stack.stores.password import install as install_password_hook
from mlflow_stack.waiting import NotReady, wait_for

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection  # noqa: N812

log = logging.getLogger(__name__)

# pg_advisory_lock key held while creating and migrating the databases, so that servers starting
# together take turns.
_MIGRATION_LOCK_KEY = 0x6D6C666C6F77  # "mlflow"

# Session defaults for the tracking database, set with ALTER DATABASE unless the operator has
# set the same parameter there. work_mem: MLflow's search_runs sorts DISTINCT wide rows; with
# PostgreSQL's 4 MB, ordering 100,000 runs by a metric spills ~19 MB to disk (EXPLAIN ANALYZE:
# 325 ms -> 281 ms in memory). It is a per-sort ceiling, not an allocation.
TRACKING_DATABASE_DEFAULTS = {"work_mem": "32MB"}


class DatabaseMissingError(Exception):
    pass


def libpq_options(settings: Settings) -> dict[str, Any]:
    """Connection options that stay out of URIs (and so out of `ps` and logs), with the
    password as the settings' source gives it now (mlflow_stack.stores.password)."""
    return {"password": current_password(settings), "sslmode": settings.postgres_sslmode}


def libpq_environment(settings: Settings) -> dict[str, str]:
    """The same options as libpq environment variables, for processes we start (pg_dump,
    psql): the password current when they start."""
    return {"PGPASSWORD": current_password(settings), "PGSSLMODE": settings.postgres_sslmode}


def _where(settings: Settings) -> str:
    return f"PostgreSQL at {settings.postgres_host}:{settings.postgres_port}"


def connect(settings: Settings, dbname: str, *, timeout: int = 5) -> Connection:
    """An autocommit connection; or StackError, NotReady or DatabaseMissingError saying why."""
    import psycopg2

    def open_(password: str) -> Connection:
        return psycopg2.connect(
            host=settings.postgres_host,
            port=settings.postgres_port,
            user=settings.postgres_user,
            dbname=dbname,
            connect_timeout=timeout,
            application_name="mlflow-stack",
            password=password,
            sslmode=settings.postgres_sslmode,
        )

    try:
        conn = open_with_password(source_for(settings), open_)
    except psycopg2.OperationalError as error:
        raise _classify(error, settings, dbname) from None
    conn.autocommit = True
    return conn


def _classify(error: Exception, settings: Settings, dbname: str) -> Exception:
    message = str(error).strip()
    first_line = message.splitlines()[0] if message else type(error).__name__
    lowered = message.lower()
    where = _where(settings)
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return StackError(
            f"{where} rejected POSTGRES_USER={settings.postgres_user!r} with the given "
            f"{source_for(settings).setting} (password authentication failed)"
        )
    if f'role "{settings.postgres_user}" does not exist' in message:
        return StackError(f"POSTGRES_USER={settings.postgres_user!r} does not exist on {where}")
    if f'database "{dbname}" does not exist' in message:
        return DatabaseMissingError(dbname)
    if "ssl" in lowered and ("does not support" in lowered or "required" in lowered):
        return StackError(f"POSTGRES_SSLMODE={settings.postgres_sslmode!r}: {first_line}")
    # Refused, timed out, still starting, name not resolvable yet: worth another try.
    return NotReady(first_line)


def wait_for_postgres(settings: Settings) -> Connection:
    """Wait until PostgreSQL accepts our credentials; connect to the maintenance database
    ``postgres``, or to POSTGRES_DB where there is none.

    The maintenance database first: asking for a POSTGRES_DB that is not created yet (every
    first start) makes PostgreSQL log ``FATAL: database ... does not exist``, which reads as a
    failure to whoever looks at its log.
    """

    def attempt() -> Connection:
        try:
            return connect(settings, "postgres")  # the maintenance database
        except DatabaseMissingError:
            try:
                return connect(settings, settings.postgres_db)
            except DatabaseMissingError:
                raise StackError(
                    f"neither POSTGRES_DB={settings.postgres_db!r} nor the maintenance database "
                    f"'postgres' exists on {_where(settings)}; create {settings.postgres_db!r}"
                ) from None

    return wait_for(
        _where(settings),
        attempt,
        timeout=settings.wait_timeout,
        hint="check POSTGRES_HOST and POSTGRES_PORT, or raise MLFLOW_STACK_WAIT_TIMEOUT",
    )


@contextmanager
def one_server_at_a_time(conn: Connection) -> Iterator[None]:
    """Hold the stack's advisory lock on ``conn`` (autocommit, on the maintenance database)
    for the duration: servers starting together create the databases, set their defaults,
    migrate and create the admin in turn. Two concurrent CREATE DATABASE of one name fail with
    UniqueViolation, as do two ALTER DATABASE ... SET of one setting."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
    try:
        yield
    finally:
        if not conn.closed:
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))


def ensure_databases(conn: Connection, settings: Settings) -> list[str]:
    """Create POSTGRES_DB and MLFLOW_STACK_AUTH_DB if missing; return the ones created."""
    from psycopg2 import errors, sql

    created = []
    for name in (settings.postgres_db, settings.auth_db):
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                continue
            try:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except errors.DuplicateDatabase:
                continue  # another server created it a moment ago
            except errors.InsufficientPrivilege:
                raise StackError(
                    f"database {name!r} is missing and POSTGRES_USER={settings.postgres_user!r} "
                    "may not create it: create it, or grant CREATEDB"
                ) from None
        log.info("created database %s", name)
        created.append(name)
    return created


def apply_database_defaults(conn: Connection, settings: Settings) -> dict[str, str]:
    """Set TRACKING_DATABASE_DEFAULTS on POSTGRES_DB where not set yet; return what was set.

    They apply to sessions opened afterwards, so to every server connection. Lacking the
    privilege (a database owned by another role) only costs speed: warn and go on.
    """
    from psycopg2 import errors, sql

    applied = {}
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d"
            " ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0",
            (settings.postgres_db,),
        )
        row = cursor.fetchone()
        present = {item.split("=", 1)[0] for item in (row[0] if row else [])}
        for name, value in TRACKING_DATABASE_DEFAULTS.items():
            if name in present:
                continue
            statement = sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                sql.Identifier(settings.postgres_db), sql.Identifier(name), sql.Literal(value)
            )
            try:
                cursor.execute(statement)
            except errors.InsufficientPrivilege:
                log.warning(
                    "POSTGRES_USER=%s may not ALTER DATABASE %s; %s stays at the server's value",
                    settings.postgres_user,
                    settings.postgres_db,
                    name,
                )
                continue
            applied[name] = value
    if applied:
        log.info("database %s defaults: %s", settings.postgres_db, applied)
    return applied


def migrate(settings: Settings, then: Callable[[], None] | None = None) -> list[str]:
    """Bring both schemas to the installed MLflow's head, one server at a time; return the
    names of the copies taken first (none unless a schema was behind). ``then`` runs while the
    lock is still held (the admin's creation, which MLflow does not guard against a twin).

    The tracking database gets what `mlflow db upgrade` does; the auth database what
    `python -m mlflow.server.auth db upgrade` does. Both are no-ops when up to date. A database
    whose schema is behind is first copied inside PostgreSQL (mlflow_stack.stores.upgrade).

    The lock is held by a session on the maintenance database, not on the databases it
    guards: PostgreSQL copies a database only while no other session is connected to it.
    Advisory locks are per database, so servers sharing POSTGRES_DB still take turns.
    """
    lock = wait_for_postgres(settings)  # "postgres", or POSTGRES_DB where there is none
    try:
        with one_server_at_a_time(lock):
            copies = _migrate_with_copies(settings, lock)
            if then is not None:
                then()
        return copies
    finally:
        lock.close()


def _migrate_with_copies(settings: Settings, lock: Connection) -> list[str]:
    from mlflow_stack.stores.upgrade import copy_before_upgrade

    if lock.info.dbname in (settings.postgres_db, settings.auth_db):
        copies = _copy_without_maintenance_database(settings)
    else:
        copies = copy_before_upgrade(settings, lock, lambda name: connect(settings, name))
    try:
        _migrate_schemas(settings)
    except StackError as error:
        if not copies:
            raise
        raise StackError(
            f"{error}; the databases as they were before are in {', '.join(copies)}"
        ) from None
    return copies


def _copy_without_maintenance_database(settings: Settings) -> list[str]:
    """Without the database ``postgres`` our lock session sits in POSTGRES_DB, which then
    cannot be copied: upgrade only what needs no copy, and say what to do otherwise."""
    from mlflow_stack.stores.upgrade import schemas, stored_revision

    for schema in schemas(settings):
        reader = connect(settings, schema.database)
        try:
            revision = stored_revision(reader, schema)
        finally:
            reader.close()
        if revision is not None:
            raise StackError(
                f"database {schema.database!r} needs a {schema.label} schema upgrade "
                f"({revision} -> {schema.head}) and a copy first, which needs the maintenance "
                f"database 'postgres' on {_where(settings)}: create it, then start again"
            )
    return []


def _migrate_schemas(settings: Settings) -> None:
    import sqlalchemy
    from mlflow.server.auth.db import utils as auth_db
    from mlflow.store.db import utils as tracking_db
    from sqlalchemy.pool import NullPool

    from mlflow_stack.stores.indexes import ensure_indexes

    # The auth migrations build their own engine from the URL: the hook gives it (and every
    # engine of this process) the password, as it does in the server.
    install_password_hook(settings)

    def engine(uri: str) -> sqlalchemy.Engine:
        return sqlalchemy.create_engine(uri, poolclass=NullPool)

    tracking, auth = engine(settings.backend_store_uri), engine(settings.auth_database_uri)
    try:
        if tracking_db._is_empty_database(tracking):
            log.info("creating the tracking schema in %s", settings.postgres_db)
            tracking_db._initialize_tables(tracking)
        else:
            tracking_db._upgrade_db(tracking)
        ensure_indexes(tracking)  # the stack's own step, after MLflow's
        auth_db.migrate(auth, "head")
    except sqlalchemy.exc.SQLAlchemyError as error:
        first_line = str(error.orig if hasattr(error, "orig") else error).strip().splitlines()
        reason = first_line[0] if first_line else type(error).__name__
        raise StackError(f"database migration failed: {reason}") from None
    finally:
        tracking.dispose()
        auth.dispose()
