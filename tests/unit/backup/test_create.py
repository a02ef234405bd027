"""`mlflow-stack backup` without a live stack: the destination (new as DEST.partial, an empty
directory in place), refusals before anything is written, the order (dumps, then objects, then
the manifest), and the clean-up of a backup that fails or is interrupted.

The bucket is a real S3 (moto's server) and pg_dump a real process (a stand-in script that
writes a small dump); PostgreSQL's answers (version, databases, revisions) are played by
replacing the three functions that ask for them."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.backup import create, databases, objects
from mlflow_stack.backup.create import _clean, _prepare_destination, backup
from mlflow_stack.backup.manifest import Manifest
from mlflow_stack.errors import StackError
from mlflow_stack.native.processes import free_port
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.storage import s3_client
from tests.unit.backup.conftest import settings_for
from tests.unit.backup.helpers import fake_pg_tool

# --- the destination ---


def test_destination_new_is_written_as_partial_existing_empty_in_place(tmp_path: Path) -> None:
    work, renamed = _prepare_destination(tmp_path / "new")
    assert (work, renamed) == (tmp_path / "new.partial", True)
    assert work.is_dir() and oct(work.stat().st_mode & 0o777) == "0o700"
    with pytest.raises(StackError, match="left by an interrupted backup"):
        _prepare_destination(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    assert _prepare_destination(tmp_path / "empty") == (tmp_path / "empty", False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(StackError, match="is not empty"):
        _prepare_destination(tmp_path / "full")
    with pytest.raises(StackError, match="does not exist: create it first"):
        _prepare_destination(tmp_path / "missing" / "dest")


def test_a_destination_that_is_a_file_or_a_dangling_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    for name in ("file", "link"):
        with pytest.raises(StackError, match=f"{name} exists and is not a directory"):
            _prepare_destination(tmp_path / name)
    assert not (tmp_path / "nowhere").exists()


def test_an_existing_empty_directory_is_made_private(tmp_path: Path) -> None:
    (tmp_path / "volume").mkdir(mode=0o755)
    _prepare_destination(tmp_path / "volume")
    assert stat.S_IMODE((tmp_path / "volume").stat().st_mode) == 0o700


def test_cleaning_removes_a_partial_directory_but_only_empties_one_in_place(
    tmp_path: Path,
) -> None:
    for name in ("partial", "in-place"):
        (tmp_path / name / "objects" / "1").mkdir(parents=True)
        (tmp_path / name / "tracking.dump").write_bytes(b"x")
        (tmp_path / name / "link").symlink_to(tmp_path / "kept")
    (tmp_path / "kept").mkdir()
    _clean(tmp_path / "partial", renamed=True)
    _clean(tmp_path / "in-place", renamed=False)
    assert not (tmp_path / "partial").exists()
    assert list((tmp_path / "in-place").iterdir()) == []
    assert (tmp_path / "kept").is_dir()  # a link is removed, not followed


# --- a whole backup ---


@dataclass
class StandIn:
    """PostgreSQL's answers, and where the stand-in pg_dump logs its calls."""

    log: Path
    major: int = 15
    missing: set[str] = field(default_factory=set)
    revisions: dict[str, str | None] = field(
        default_factory=lambda: {"tracking": "1b5f0d9ad7c1", "auth": None}
    )

    def calls(self) -> list[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line for line in lines if not line.startswith("PGPASSWORD=")]


class Closable:
    def __init__(self, major: int) -> None:
        self.server_version = major * 10000 + 4
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    bin_dir = tmp_path / "bin"
    fake_pg_tool(bin_dir, "pg_dump", 15, fail_on="fail_here")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    stand_in = StandIn(bin_dir / "calls.log")
    connections: list[Closable] = []

    def maintenance(s: Settings) -> Closable:
        connections.append(Closable(stand_in.major))
        return connections[-1]

    monkeypatch.setattr(databases, "maintenance", maintenance)
    monkeypatch.setattr(databases, "exists", lambda conn, name: name not in stand_in.missing)
    monkeypatch.setattr(databases, "alembic_revision", lambda s, role: stand_in.revisions[role])
    yield stand_in
    assert all(c.closed for c in connections)


def _copy_recorded(stand_in: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = objects.copy_bucket

    def recorded(settings: Settings, root: Path, jobs: int) -> Any:
        assert not (root / "manifest.json").exists()
        with stand_in.log.open("a") as log:
            log.write(f"copy objects into {root.name}\n")
        return copy(settings, root, jobs)

    monkeypatch.setattr(objects, "copy_bucket", recorded)


def test_a_backup_dumps_both_databases_then_copies_the_objects_then_writes_the_manifest(
    postgres: StandIn, settings: Settings, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=settings.s3_bucket, Key="1/r/artifacts/a.txt", Body=b"artifact")
    _copy_recorded(postgres, monkeypatch)
    dest = tmp_path / "backup"
    manifest = backup(settings, dest, jobs=2)
    calls = postgres.calls()
    assert len(calls) == 3
    assert "--dbname mlflow " in calls[0] and "--dbname mlflow_auth " in calls[1]
    assert calls[2] == "copy objects into backup.partial"
    assert sorted(p.name for p in dest.iterdir()) == [
        "auth.dump",
        "manifest.json",
        "objects",
        "tracking.dump",
    ]
    assert not (tmp_path / "backup.partial").exists()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    read = Manifest.read(dest)
    assert read == manifest
    read.verify(dest)
    assert (read.bucket, read.postgres_server_version, read.pg_dump_version) == (
        settings.s3_bucket,
        15,
        15,
    )
    assert read.mlflow_version == version("mlflow")
    assert {role: (d.name, d.alembic_revision) for role, d in read.databases.items()} == {
        "tracking": ("mlflow", "1b5f0d9ad7c1"),
        "auth": ("mlflow_auth", None),
    }
    assert (dest / "tracking.dump").read_bytes() == b"PGDMP mlflow"
    assert [(o.key, o.size) for o in read.objects] == [("1/r/artifacts/a.txt", 8)]


def test_a_backup_into_an_empty_directory_is_written_in_place(
    postgres: StandIn, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "volume").mkdir()
    backup(settings, tmp_path / "volume", jobs=1)
    Manifest.read(tmp_path / "volume").verify(tmp_path / "volume")
    assert not (tmp_path / "volume.partial").exists()


@pytest.mark.parametrize("in_place", [False, True], ids=["new", "in-place"])
def test_a_failed_dump_leaves_no_backup(
    postgres: StandIn, s3_url: str, s3: Any, tmp_path: Path, in_place: bool
) -> None:
    settings = settings_for(s3_url, MLFLOW_STACK_AUTH_DB="fail_here")
    s3.create_bucket(Bucket=settings.s3_bucket)
    dest = tmp_path / "backup"
    if in_place:
        dest.mkdir()
    with pytest.raises(StackError) as failed:
        backup(settings, dest, jobs=1)
    assert str(failed.value) == (
        "pg_dump of database 'fail_here' failed: pg_dump: error: connection to server failed: boom"
    )
    assert not (tmp_path / "backup.partial").exists()
    if in_place:
        assert list(dest.iterdir()) == []
    else:
        assert not dest.exists()


def test_an_interrupted_copy_leaves_no_backup(
    postgres: StandIn, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(objects, "copy_bucket", interrupted)
    with pytest.raises(KeyboardInterrupt):
        backup(settings, tmp_path / "backup", jobs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_a_missing_database_is_refused_before_anything_is_written(
    postgres: StandIn, settings: Settings, tmp_path: Path
) -> None:
    postgres.missing.add("mlflow_auth")
    with pytest.raises(StackError) as refused:
        backup(settings, tmp_path / "backup", jobs=1)
    assert str(refused.value) == (
        "database 'mlflow_auth' does not exist on PostgreSQL at 127.0.0.1:5432: nothing to back "
        "up (check POSTGRES_DB and MLFLOW_STACK_AUTH_DB)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]
    assert postgres.calls() == []


def test_a_server_newer_than_every_pg_dump_is_refused_before_anything_is_written(
    postgres: StandIn, settings: Settings, tmp_path: Path
) -> None:
    postgres.major = 99
    with pytest.raises(StackError, match="pg_dump of PostgreSQL 99 or newer is needed"):
        backup(settings, tmp_path / "backup", jobs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_objects_deleted_during_the_backup_are_reported(
    postgres: StandIn,
    settings: Settings,
    s3: Any,
    tmp_path: Path,
    *,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for key in ("1/r/artifacts/a", "1/r/artifacts/b"):
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"x")
    listing = objects.listing

    def listing_then_delete(client: Any, bucket: str) -> Any:
        found = list(listing(client, bucket))
        s3.delete_object(Bucket=bucket, Key="1/r/artifacts/b")
        return iter(found)

    monkeypatch.setattr(objects, "listing", listing_then_delete)
    with caplog.at_level(logging.WARNING, logger=create.log.name):
        manifest = backup(settings, tmp_path / "backup", jobs=2)
    assert [o.key for o in manifest.objects] == ["1/r/artifacts/a"]
    assert "1 objects were deleted while the backup ran and are not in it" in caplog.text


# --- without PostgreSQL or S3 ---


def test_an_unreachable_postgresql_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = settings_for("http://127.0.0.1:9", POSTGRES_PORT=str(port))
    with pytest.raises(StackError, match=rf"^cannot reach PostgreSQL at 127\.0\.0\.1:{port}: "):
        backup(settings, tmp_path / "backup")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_bucket_is_one_line(s3_url: str, tmp_path: Path) -> None:
    settings = settings_for(s3_url)
    with pytest.raises(StackError) as refused:
        create._copy_objects(settings, tmp_path, 1)
    assert str(refused.value) == f"cannot list bucket {settings.s3_bucket!r}: NoSuchBucket"


def test_an_unreachable_s3_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(endpoint)
    # the retries of a real backup take seconds; one try shows the same message
    monkeypatch.setattr(objects, "client", lambda s: s3_client(s, timeout=2))
    with pytest.raises(StackError) as refused:
        create._copy_objects(settings, tmp_path, 1)
    message = str(refused.value)
    assert message.startswith(f"cannot reach S3 at {endpoint}: ")
    assert "\n" not in message
