"""`mlflow-stack restore` without a live stack: the backup is checked before the target is
touched, the target's refusals come before any change, and the databases are swapped in one
after the other before the objects are uploaded and read back.

The bucket is a real S3 (moto's server) and pg_restore a real process (a stand-in script);
PostgreSQL's answers are played by a stand-in connection and by replacing the two functions
that open their own (contents, revision)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.backup import databases
from mlflow_stack.backup.restore import check_backup, check_target, log, restore
from mlflow_stack.errors import StackError
from mlflow_stack.native.processes import free_port
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.storage import s3_client
from tests.unit.backup.conftest import settings_for
from tests.unit.backup.helpers import OBJECTS, PG15, Connection, fake_pg_tool, write_backup

# --- the backup ---


def test_a_complete_backup_passes_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = write_backup(tmp_path)
    with caplog.at_level(logging.INFO, logger=log.name):
        assert check_backup(tmp_path) == written
    assert "verified the backup of 2026-12-01T00:00:00+00:00: 2 dumps and 2 objects (15 bytes)" in (
        caplog.text
    )


def test_a_backup_from_a_newer_mlflow_is_refused_naming_both_versions(tmp_path: Path) -> None:
    write_backup(tmp_path, mlflow_version="99.0.0")
    installed = version("mlflow")
    with pytest.raises(StackError) as refused:
        check_backup(tmp_path)
    assert str(refused.value) == (
        f"the backup was made with MLflow 99.0.0, newer than the installed {installed}: its "
        "schema would not start here; restore with MLflow 99.0.0 or newer"
    )


def test_a_backup_from_an_older_mlflow_passes(tmp_path: Path) -> None:
    write_backup(tmp_path, mlflow_version="3.16.1")
    assert check_backup(tmp_path).mlflow_version == "3.16.1"


def test_a_manifest_whose_mlflow_version_is_not_a_version_is_refused(tmp_path: Path) -> None:
    write_backup(tmp_path, mlflow_version="banana")
    with pytest.raises(StackError) as refused:
        check_backup(tmp_path)
    assert str(refused.value) == (
        f"{tmp_path / 'manifest.json'} has mlflow_version 'banana', which is not a version"
    )


def test_a_damaged_backup_is_refused_before_postgresql_is_asked(tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    backup.mkdir()
    write_backup(backup)
    (backup / "objects" / "1/r/artifacts/x.txt").write_bytes(b"HELLO")
    settings = settings_for("http://127.0.0.1:9", POSTGRES_PORT=str(free_port()))
    # with PostgreSQL asked first this would be `cannot reach PostgreSQL ...`
    with pytest.raises(StackError, match=r"^the backup is damaged: object 1/r/artifacts/x\.txt"):
        restore(settings, backup)


# --- the target ---


@dataclass
class Target:
    """PostgreSQL of the target as the stand-ins answer: its version, who is connected, what
    it holds, the revisions it reads back; and what was asked, in order."""

    major: int = 15
    connected: list[tuple[str, str, int]] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    revisions: dict[str, str | None] = field(default_factory=lambda: {"tracking": "abc"})
    events: list[str] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)

    def connection(self) -> Connection:
        conn = Connection({"pg_stat_activity": self.connected})
        conn.server_version = self.major * 10000 + 2
        self.connections.append(conn)
        return conn


@pytest.fixture
def target(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Target]:
    target = Target()
    bin_dir = tmp_path / "bin"
    fake_pg_tool(bin_dir, "pg_restore", 15)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def maintenance(settings: Settings) -> Connection:
        target.events.append("connect")
        return target.connection()

    def contents(settings: Settings) -> list[str]:
        target.events.append("contents")
        return list(target.held)

    def alembic_revision(settings: Settings, role: str) -> str | None:
        target.events.append(f"revision of {role}")
        return target.revisions.get(role, "abc")

    refuse = databases.refuse_connected

    def refuse_connected(conn: Connection, settings: Settings) -> None:
        target.events.append("who is connected")
        refuse(conn, settings)

    replace = databases.replace

    def replace_recorded(conn: Connection, name: str, fill: Any) -> None:
        target.events.append(f"replace {name}")
        replace(conn, name, fill)

    monkeypatch.setattr(databases, "maintenance", maintenance)
    monkeypatch.setattr(databases, "contents", contents)
    monkeypatch.setattr(databases, "alembic_revision", alembic_revision)
    monkeypatch.setattr(databases, "refuse_connected", refuse_connected)
    monkeypatch.setattr(databases, "replace", replace_recorded)
    yield target
    assert all(conn.closed for conn in target.connections)


def _backup(tmp_path: Path, postgres: int = 15) -> tuple[Path, Any]:
    root = tmp_path / "backup"
    root.mkdir()
    return root, write_backup(root, postgres=postgres)


def test_a_target_older_than_the_backups_postgresql_is_refused_first(
    target: Target, s3_url: str, tmp_path: Path
) -> None:
    target.major = 14
    _, manifest = _backup(tmp_path)
    settings = settings_for(s3_url)
    with pytest.raises(StackError) as refused:
        check_target(settings, manifest)
    assert str(refused.value) == (
        "the backup comes from PostgreSQL 15, the target server is PostgreSQL 14: restore into "
        "PostgreSQL 15 or newer"
    )
    assert target.events == ["connect"]
    buckets = s3_client(settings).list_buckets().get("Buckets", [])
    assert settings.s3_bucket not in {b["Name"] for b in buckets}  # not even created


def test_a_target_in_use_is_refused_before_its_contents_are_counted(
    target: Target, settings: Settings, tmp_path: Path
) -> None:
    target.connected.append(("mlflow", "gunicorn", 2))
    _, manifest = _backup(tmp_path)
    in_use = r"^the databases are in use \(2 from gunicorn to mlflow\)"
    with pytest.raises(StackError, match=in_use):
        check_target(settings, manifest)
    assert target.events == ["connect", "who is connected"]


def test_a_target_that_is_not_empty_is_refused_naming_everything_it_holds(
    target: Target, settings: Settings, s3: Any, tmp_path: Path
) -> None:
    target.held += ["3 runs", "1 users besides the admin"]
    s3.put_object(Bucket=settings.s3_bucket, Key="0/x", Body=b"x")
    _, manifest = _backup(tmp_path)
    with pytest.raises(StackError) as refused:
        check_target(settings, manifest)
    assert str(refused.value) == (
        f"the target stack is not empty (3 runs, 1 users besides the admin, objects in bucket "
        f"{settings.s3_bucket!r}): restore needs a new stack (fresh data dir, compose volumes "
        "or RDS instance and bucket)"
    )


def test_an_empty_target_gets_a_pg_restore_that_reads_the_dumps(
    target: Target, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(s3_url)  # its bucket is created by the check
    _, manifest = _backup(tmp_path)
    tool = check_target(settings, manifest)
    assert (tool.path, tool.major) == (tmp_path / "bin" / "pg_restore", 15)
    assert objects_in(settings) == {}
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-on-path"))
    target.major = 17  # no pg_restore 17 here: the oldest that reads a dump of 15
    assert check_target(settings, manifest).path == PG15 / "pg_restore"


def test_the_target_check_creates_a_missing_bucket_as_its_docstring_says(
    target: Target, s3_url: str, tmp_path: Path
) -> None:
    settings = settings_for(s3_url)
    s3 = s3_client(settings)
    assert settings.s3_bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    _, manifest = _backup(tmp_path)
    check_target(settings, manifest)
    assert settings.s3_bucket in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    assert "creates the bucket if it is missing" in " ".join((check_target.__doc__ or "").split())


def objects_in(settings: Settings) -> dict[str, bytes]:
    s3 = s3_client(settings)
    listed = s3.list_objects_v2(Bucket=settings.s3_bucket).get("Contents", [])
    return {
        o["Key"]: s3.get_object(Bucket=settings.s3_bucket, Key=o["Key"])["Body"].read()
        for o in listed
    }


# --- a whole restore ---


def test_a_restore_swaps_in_each_database_then_uploads_the_objects(
    target: Target, settings: Settings, tmp_path: Path
) -> None:
    target.revisions = {"tracking": "abc", "auth": "abc"}
    root, manifest = _backup(tmp_path)
    assert restore(settings, root, jobs=2) == manifest
    assert target.events == [
        "connect",
        "who is connected",
        "contents",
        "connect",
        "who is connected",  # again: the checks took a while
        "replace mlflow",
        "revision of tracking",
        "replace mlflow_auth",
        "revision of auth",
    ]
    restores = (tmp_path / "bin" / "calls.log").read_text().splitlines()[::2]
    assert [line.split("--dbname ")[1].split()[0] for line in restores] == [
        "mlflow_restoring",
        "mlflow_auth_restoring",
    ]
    assert restores[0].endswith(str(root / "tracking.dump"))
    swapped = [q for q, _ in target.connections[-1].executed if "RENAME" in q]
    assert swapped == [
        'ALTER DATABASE "mlflow_restoring" RENAME TO "mlflow"',
        'ALTER DATABASE "mlflow_auth_restoring" RENAME TO "mlflow_auth"',
    ]
    assert objects_in(settings) == OBJECTS


def test_a_database_that_reads_back_at_another_revision_stops_the_restore(
    target: Target, settings: Settings, tmp_path: Path
) -> None:
    target.revisions = {"tracking": "abc", "auth": "0000"}
    root, _ = _backup(tmp_path)
    with pytest.raises(StackError) as refused:
        restore(settings, root, jobs=2)
    assert str(refused.value) == (
        "database mlflow_auth reads back at revision '0000', the backup says 'abc'"
    )
    assert objects_in(settings) == {}  # nothing uploaded
    # ...but the tracking database stays swapped in: the target is no longer empty
    executed = [q for q, _ in target.connections[-1].executed]
    assert 'ALTER DATABASE "mlflow_restoring" RENAME TO "mlflow"' in executed
