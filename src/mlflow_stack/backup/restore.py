"""``mlflow-stack restore SRC``: a backup into an empty stack whose server is stopped.

Checks come first and change nothing, except that a missing bucket is created: the backup
(manifest, every dump's and object's size and sha256), then the target (PostgreSQL new enough,
nothing connected to the databases, no runs, experiments besides Default, registered models or
users besides the admin, an empty bucket).
Each database is then restored into a staging database and swapped in only once complete, and
the objects are uploaded and read back by listing.
"""

from __future__ import annotations

import logging
import time
from importlib.metadata import version
from pathlib import Path

from packaging.version import InvalidVersion, Version

from mlflow_stack.backup import databases, objects, pgtools
from mlflow_stack.backup.manifest import MANIFEST, Manifest
from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.storage import ensure_bucket

log = logging.getLogger(__name__)


def check_backup(src: Path) -> Manifest:
    manifest = Manifest.read(src)
    installed = version("mlflow")
    try:
        made_with = Version(manifest.mlflow_version)
    except (InvalidVersion, TypeError):
        raise StackError(
            f"{src / MANIFEST} has mlflow_version {manifest.mlflow_version!r:.100}, which is "
            "not a version"
        ) from None
    if made_with > Version(installed):
        raise StackError(
            f"the backup was made with MLflow {manifest.mlflow_version}, newer than the "
            f"installed {installed}: its schema would not start here; restore with MLflow "
            f"{manifest.mlflow_version} or newer"
        )
    began = time.monotonic()
    manifest.verify(src)
    log.info(
        "verified the backup of %s: 2 dumps and %s objects (%s bytes) in %.1f s",
        manifest.created,
        f"{len(manifest.objects):,}",
        f"{manifest.object_bytes:,}",
        time.monotonic() - began,
    )
    return manifest


def check_target(settings: Settings, manifest: Manifest) -> pgtools.Tool:
    """Refuse unless the target can take the backup; return pg_restore.

    It changes nothing else, but creates the bucket if it is missing (as the server does on
    start): an empty bucket is what the target needs."""
    conn = databases.maintenance(settings)
    try:
        major = databases.server_major(conn)
        if major < manifest.postgres_server_version:
            raise StackError(
                f"the backup comes from PostgreSQL {manifest.postgres_server_version}, the "
                f"target server is PostgreSQL {major}: restore into PostgreSQL "
                f"{manifest.postgres_server_version} or newer"
            )
        databases.refuse_connected(conn, settings)
    finally:
        conn.close()
    held = databases.contents(settings)
    ensure_bucket(settings)
    if not objects.is_empty(objects.client(settings), settings.s3_bucket):
        held.append(f"objects in bucket {settings.s3_bucket!r}")
    if held:
        raise StackError(
            f"the target stack is not empty ({', '.join(held)}): restore needs a new stack "
            "(fresh data dir, compose volumes or RDS instance and bucket)"
        )
    return pgtools.choose("pg_restore", at_least=manifest.pg_dump_version, prefer=major)


def restore(settings: Settings, src: Path, *, jobs: int = 8) -> Manifest:
    manifest = check_backup(src)
    pg_restore = check_target(settings, manifest)
    conn = databases.maintenance(settings)
    try:
        databases.refuse_connected(conn, settings)  # again: the checks above took a while
        for role, name in databases.database_names(settings).items():
            began = time.monotonic()
            dump = src / manifest.databases[role].file
            databases.replace(
                conn,
                name,
                lambda staging, dump=dump: pgtools.restore(pg_restore, settings, staging, dump),
            )
            revision = databases.alembic_revision(settings, role)
            if revision != manifest.databases[role].alembic_revision:
                raise StackError(
                    f"database {name} reads back at revision {revision!r}, the backup says "
                    f"{manifest.databases[role].alembic_revision!r}"
                )
            log.info("restored database %s in %.1f s", name, time.monotonic() - began)
    finally:
        conn.close()
    began = time.monotonic()
    objects.upload_all(settings, src, manifest.objects, jobs)
    objects.check_uploaded(settings, manifest.objects)
    log.info(
        "uploaded %s objects (%s bytes) to bucket %s in %.1f s",
        f"{len(manifest.objects):,}",
        f"{manifest.object_bytes:,}",
        settings.s3_bucket,
        time.monotonic() - began,
    )
    return manifest
