"""``mlflow-stack backup DEST``: both databases, then every object of the bucket.

Order matters for consistency: the databases are dumped first, then the objects are copied.
MLflow writes a run's artifacts before anything in the database can point at them from a
later state, so every artifact the dumped runs and model versions reference was already in the
bucket when the copy started; objects written after the dump are copied too and are harmless
(nothing restored refers to them).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from mlflow_stack.backup import databases, objects, pgtools
from mlflow_stack.backup.manifest import DUMPS, Database, Manifest, sha256_of
from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings

log = logging.getLogger(__name__)


def _prepare_destination(dest: Path) -> tuple[Path, bool]:
    """Where to write, and whether that is a ``.partial`` sibling renamed at the end.

    A new DEST is written as DEST.partial and renamed when complete. An existing empty
    directory (a mounted volume cannot be renamed) is written in place, manifest last.
    """
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise StackError(f"{dest} exists and is not a directory: name a new directory")
        if any(dest.iterdir()):
            raise StackError(f"{dest} exists and is not empty: name a new directory")
        dest.chmod(0o700)
        return dest, False
    if not dest.parent.is_dir():
        raise StackError(f"{dest.parent} does not exist: create it first")
    partial = dest.with_name(dest.name + ".partial")
    if partial.exists():
        raise StackError(f"{partial} exists (left by an interrupted backup?): remove it first")
    partial.mkdir(mode=0o700)  # the dumps hold password hashes
    return partial, True


def _clean(work: Path, renamed: bool) -> None:
    if renamed:
        shutil.rmtree(work, ignore_errors=True)
        return
    for child in work.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def backup(settings: Settings, dest: Path, *, jobs: int = 8) -> Manifest:
    from importlib.metadata import version

    conn = databases.maintenance(settings)
    try:
        major = databases.server_major(conn)
        missing = [
            n for n in databases.database_names(settings).values() if not databases.exists(conn, n)
        ]
    finally:
        conn.close()
    if missing:
        raise StackError(
            f"database {missing[0]!r} does not exist on PostgreSQL at {settings.postgres_host}:"
            f"{settings.postgres_port}: nothing to back up (check POSTGRES_DB and "
            "MLFLOW_STACK_AUTH_DB)"
        )
    pg_dump = pgtools.choose("pg_dump", at_least=major, prefer=major)
    log.info("backing up with %s (PostgreSQL %d server)", pg_dump.path, major)
    work, renamed = _prepare_destination(dest)
    try:
        manifest = Manifest(
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            mlflow_version=version("mlflow"),
            postgres_server_version=major,
            pg_dump_version=pg_dump.major,
            bucket=settings.s3_bucket,
        )
        for role, name in databases.database_names(settings).items():
            began = time.monotonic()
            revision = databases.alembic_revision(settings, role)
            target = work / DUMPS[role]
            pgtools.dump(pg_dump, settings, name, target)
            manifest.databases[role] = Database(
                name=name,
                file=DUMPS[role],
                alembic_revision=revision,
                bytes=target.stat().st_size,
                sha256=sha256_of(target),
            )
            log.info(
                "dumped database %s (%s bytes) in %.1f s",
                name,
                f"{target.stat().st_size:,}",
                time.monotonic() - began,
            )
        began = time.monotonic()
        manifest.objects, vanished = _copy_objects(settings, work, jobs)
        log.info(
            "copied %s objects (%s bytes) from bucket %s in %.1f s",
            f"{len(manifest.objects):,}",
            f"{manifest.object_bytes:,}",
            settings.s3_bucket,
            time.monotonic() - began,
        )
        if vanished:
            log.warning("%d objects were deleted while the backup ran and are not in it", vanished)
        os.sync()  # the dumps and objects reach the disk before the manifest says complete
        manifest.write(work)
        if renamed:
            work.rename(dest)
            _fsync_directory(dest.parent)
    except BaseException:
        _clean(work, renamed)
        raise
    return manifest


def _copy_objects(settings: Settings, work: Path, jobs: int) -> tuple[list, int]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return objects.copy_bucket(settings, work, jobs)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "") or str(error)
        raise StackError(f"cannot list bucket {settings.s3_bucket!r}: {code}") from None
    except BotoCoreError as error:
        raise StackError(
            f"cannot reach S3 at {settings.s3_endpoint_url or 'AWS'}: {error}"
        ) from None


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
