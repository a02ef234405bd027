"""The backup's pieces that need no stack: key checks, the manifest, choosing pg_dump."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlflow_stack.backup import pgtools
from mlflow_stack.backup.create import _prepare_destination
from mlflow_stack.backup.manifest import Database, Manifest, StoredObject, check_key
from mlflow_stack.backup.objects import _refuse_file_directory_clashes
from mlflow_stack.errors import StackError


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "a/../../b", "/abs/key", "a//b", "a/./b", "dir/", "", "a\\b", "a\0b"]
)
def test_keys_that_could_escape_or_not_mirror_as_files_are_refused(key: str) -> None:
    with pytest.raises(StackError, match="cannot be stored as a file"):
        check_key(key)


def test_ordinary_artifact_keys_pass() -> None:
    key = "1/3f2a/artifacts/model/MLmodel"
    assert str(check_key(key)) == key
    assert str(check_key("1/models/m-1/artifacts/with space & ümlaut.txt")).endswith("ümlaut.txt")


def test_a_key_that_is_also_a_prefix_of_another_is_refused() -> None:
    _refuse_file_directory_clashes(["a/b", "a/c/d"])
    with pytest.raises(StackError, match="cannot both be stored"):
        _refuse_file_directory_clashes(["a/b/c", "a/b"])


def _backup(root: Path) -> Manifest:
    items = []
    for key, data in {"1/r/artifacts/x.txt": b"hello", "2/r/artifacts/y.bin": b"\0" * 10}.items():
        path = root / "objects" / key
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        items.append(StoredObject(key, len(data), hashlib.sha256(data).hexdigest()))
    manifest = Manifest("2026-12-01T00:00:00+00:00", "3.17.2", 15, 15, "mlflow", objects=items)
    for role, content in {"tracking": b"PGDMP1", "auth": b"PGDMP2"}.items():
        (root / f"{role}.dump").write_bytes(content)
        digest = hashlib.sha256(content).hexdigest()
        manifest.databases[role] = Database(role, f"{role}.dump", "abc", len(content), digest)
    manifest.write(root)
    return manifest


def test_a_manifest_reads_back_and_verifies(tmp_path: Path) -> None:
    written = _backup(tmp_path)
    read = Manifest.read(tmp_path)
    assert read == written
    read.verify(tmp_path)
    assert not (tmp_path / "manifest.json.tmp").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "objects/1/r/artifacts/x.txt").write_bytes(b"hellO"), "x.txt does not"),
        (lambda r: (r / "objects/2/r/artifacts/y.bin").unlink(), "y.bin is missing"),
        (lambda r: (r / "auth.dump").write_bytes(b"PGDMP22"), "auth.dump has 7 bytes"),
    ],
    ids=["changed", "missing", "resized"],
)
def test_damage_is_found_and_named(tmp_path: Path, damage, message: str) -> None:
    _backup(tmp_path)
    damage(tmp_path)
    with pytest.raises(StackError, match=message):
        Manifest.read(tmp_path).verify(tmp_path)


def test_a_manifest_naming_an_escaping_key_is_refused_before_any_file_is_read(
    tmp_path: Path,
) -> None:
    _backup(tmp_path)
    text = (tmp_path / "manifest.json").read_text().replace("1/r/artifacts/x.txt", "../x.txt")
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(StackError, match=r"'\.\./x\.txt' cannot be stored"):
        Manifest.read(tmp_path)


def test_a_directory_without_manifest_is_not_a_backup(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"no manifest\.json: it is not a complete backup"):
        Manifest.read(tmp_path)


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


def _fake_tool(directory: Path, name: str, major: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / name
    script.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {major}.3'\n")
    script.chmod(0o755)


def test_pg_dump_older_than_the_server_is_skipped_and_the_same_major_preferred(
    tmp_path: Path,
) -> None:
    _fake_tool(tmp_path / "old", "pg_dump", 11)
    old = pgtools.choose("pg_dump", at_least=11, prefer=11, path=str(tmp_path / "old"))
    assert old == pgtools.Tool(tmp_path / "old" / "pg_dump", 11)
    chosen = pgtools.choose("pg_dump", at_least=15, prefer=15, path=str(tmp_path / "old"))
    assert chosen.major == 15  # the system's PostgreSQL 15 beside the server binaries
    assert chosen.path.name == "pg_dump"


def test_no_pg_dump_new_enough_is_one_line_naming_what_was_found(tmp_path: Path) -> None:
    _fake_tool(tmp_path, "pg_dump", 11)
    with pytest.raises(StackError) as refused:
        pgtools.choose("pg_dump", at_least=99, prefer=99, path=str(tmp_path))
    message = str(refused.value)
    assert "\n" not in message
    assert f"{tmp_path / 'pg_dump'} (11)" in message
    assert "postgresql-client-99" in message


def test_the_password_reaches_the_tools_through_the_environment_only() -> None:
    from tests.conftest import make_settings

    settings = make_settings()
    env = pgtools.child_environment(settings)
    assert env["PGPASSWORD"] == settings.postgres_password
    arguments = pgtools._connection_arguments(settings, "mlflow")
    assert settings.postgres_password not in " ".join(arguments)
    assert "--no-password" in arguments
