"""manifest.json: object keys as files, sha256, the round trip to JSON, and the refusal of a
manifest or a backup that was tampered with or is incomplete."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.backup.manifest import (
    FORMAT,
    MANIFEST,
    Database,
    Manifest,
    check_key,
    object_file,
    sha256_of,
)
from mlflow_stack.errors import StackError
from tests.unit.backup.helpers import write_backup

# --- object keys as files ---


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


def test_an_object_file_lies_below_objects_of_the_backup(tmp_path: Path) -> None:
    assert object_file(tmp_path, "1/r/artifacts/x.txt") == tmp_path / "objects/1/r/artifacts/x.txt"
    with pytest.raises(StackError, match=r"'\.\./x' cannot be stored as a file below objects/"):
        object_file(tmp_path, "../x")


# --- sha256 ---


def test_sha256_of_a_file_is_hashlibs_for_empty_small_and_multi_chunk_files(
    tmp_path: Path,
) -> None:
    for name, data in {
        "empty": b"",
        "small": b"hello",
        "large": os.urandom((3 << 20) + 7),  # four 1 MiB reads, the last short
    }.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert sha256_of(path) == hashlib.sha256(data).hexdigest(), name


# --- the round trip ---


def test_a_manifest_reads_back_and_verifies(tmp_path: Path) -> None:
    written = write_backup(tmp_path)
    read = Manifest.read(tmp_path)
    assert read == written
    read.verify(tmp_path)
    assert not (tmp_path / "manifest.json.tmp").exists()


def test_the_json_lists_the_objects_with_their_count_and_total_size(tmp_path: Path) -> None:
    written = write_backup(tmp_path)
    document = json.loads((tmp_path / MANIFEST).read_text(encoding="utf-8"))
    assert document["format"] == FORMAT == 1
    assert document["objects"]["count"] == 2
    assert document["objects"]["bytes"] == written.object_bytes == 15
    assert document["objects"]["items"][0] == {
        "key": "1/r/artifacts/x.txt",
        "size": 5,
        "sha256": hashlib.sha256(b"hello").hexdigest(),
    }
    assert document["databases"]["auth"] == {
        "name": "auth",
        "file": "auth.dump",
        "alembic_revision": "abc",
        "bytes": 6,
        "sha256": hashlib.sha256(b"PGDMP2").hexdigest(),
    }
    assert document == written.to_json()
    assert {k: document[k] for k in ("created", "mlflow_version", "bucket")} == {
        "created": "2026-12-01T00:00:00+00:00",
        "mlflow_version": "3.17.2",
        "bucket": "mlflow",
    }


def test_an_empty_backup_and_a_null_revision_round_trip(tmp_path: Path) -> None:
    manifest = Manifest("2026-12-01T00:00:00+00:00", "3.17.2", 16, 17, "b")
    for role in ("tracking", "auth"):
        (tmp_path / f"{role}.dump").write_bytes(b"")
        empty = hashlib.sha256(b"").hexdigest()
        manifest.databases[role] = Database(role, f"{role}.dump", None, 0, empty)
    manifest.write(tmp_path)
    read = Manifest.read(tmp_path)
    assert read == manifest
    assert (read.objects, read.object_bytes) == ([], 0)
    assert read.databases["auth"].alembic_revision is None
    assert (read.postgres_server_version, read.pg_dump_version) == (16, 17)
    read.verify(tmp_path)


def test_writing_again_replaces_the_manifest_whole(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path)
    manifest.objects = manifest.objects[:1]
    manifest.write(tmp_path)
    assert [o.key for o in Manifest.read(tmp_path).objects] == ["1/r/artifacts/x.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "auth.dump",
        "manifest.json",
        "objects",
        "tracking.dump",
    ]


# --- a damaged backup ---


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "objects/1/r/artifacts/x.txt").write_bytes(b"hellO"), "x.txt does not"),
        (lambda r: (r / "objects/2/r/artifacts/y.bin").unlink(), "y.bin is missing"),
        (lambda r: (r / "auth.dump").write_bytes(b"PGDMP22"), "auth.dump has 7 bytes"),
    ],
    ids=["changed", "missing", "resized"],
)
def test_damage_is_found_and_named(
    tmp_path: Path, damage: Callable[[Path], Any], message: str
) -> None:
    write_backup(tmp_path)
    damage(tmp_path)
    with pytest.raises(StackError, match=message):
        Manifest.read(tmp_path).verify(tmp_path)


def _replace_with_symlink(root: Path) -> None:
    target = root / "objects/1/r/artifacts/x.txt"
    (root / "elsewhere.txt").write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(root / "elsewhere.txt")


def _replace_with_directory(root: Path) -> None:
    target = root / "objects/1/r/artifacts/x.txt"
    target.unlink()
    target.mkdir()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_replace_with_symlink, r"object 1/r/artifacts/x\.txt is missing"),
        (_replace_with_directory, r"object 1/r/artifacts/x\.txt is missing"),
        (lambda r: (r / "tracking.dump").unlink(), r"tracking\.dump is missing"),
        (lambda r: (r / "tracking.dump").write_bytes(b"PGDMP9"), r"tracking\.dump does not"),
    ],
    ids=["symlink", "directory", "dump-missing", "dump-changed"],
)
def test_an_object_or_dump_that_is_not_the_file_written_is_refused(
    tmp_path: Path, damage: Callable[[Path], Any], message: str
) -> None:
    write_backup(tmp_path)
    damage(tmp_path)
    with pytest.raises(StackError, match=rf"^the backup is damaged: {message}"):
        Manifest.read(tmp_path).verify(tmp_path)


# --- a tampered or incomplete manifest ---


def _edit(root: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    path = root / MANIFEST
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document), encoding="utf-8")


def test_a_manifest_naming_an_escaping_key_is_refused_before_any_file_is_read(
    tmp_path: Path,
) -> None:
    write_backup(tmp_path)
    text = (tmp_path / "manifest.json").read_text().replace("1/r/artifacts/x.txt", "../x.txt")
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(StackError, match=r"'\.\./x\.txt' cannot be stored"):
        Manifest.read(tmp_path)


def test_a_directory_without_manifest_is_not_a_backup(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"no manifest\.json: it is not a complete backup"):
        Manifest.read(tmp_path)


def test_an_interrupted_write_leaves_no_backup(tmp_path: Path) -> None:
    write_backup(tmp_path)
    (tmp_path / MANIFEST).rename(tmp_path / (MANIFEST + ".tmp"))
    with pytest.raises(StackError, match="it is not a complete backup"):
        Manifest.read(tmp_path)


def test_a_path_that_is_not_a_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "missing"):
        with pytest.raises(StackError, match=rf"^{path} is not a directory$"):
            Manifest.read(path)


def test_another_format_is_refused_naming_both(tmp_path: Path) -> None:
    write_backup(tmp_path)
    _edit(tmp_path, lambda d: d.update(format=2))
    with pytest.raises(StackError, match=r"has format 2; this version reads 1$"):
        Manifest.read(tmp_path)
    _edit(tmp_path, lambda d: d.pop("format"))
    with pytest.raises(StackError, match=r"has format None; this version reads 1$"):
        Manifest.read(tmp_path)


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (lambda d: d.pop("bucket"), "KeyError('bucket')"),
        (lambda d: d["databases"].pop("auth"), "KeyError('auth')"),
        (lambda d: d["objects"].pop("items"), "KeyError('items')"),
        (lambda d: d["objects"]["items"][0].pop("sha256"), "sha256"),
        (lambda d: d["objects"]["items"][0].update(mode=0o777), "mode"),
        (lambda d: d.update(postgres_server_version="fifteen"), "fifteen"),
        (lambda d: d.update(objects=None), "TypeError"),
    ],
    ids=["no-bucket", "no-auth-dump", "no-items", "no-sha", "extra-field", "bad-int", "null"],
)
def test_an_incomplete_or_mistyped_manifest_is_not_valid(
    tmp_path: Path, change: Callable[[dict[str, Any]], Any], detail: str
) -> None:
    write_backup(tmp_path)
    _edit(tmp_path, change)
    with pytest.raises(StackError) as refused:
        Manifest.read(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / MANIFEST} is not a valid manifest: "), message
    assert detail in message and "\n" not in message


def test_a_manifest_that_is_not_json_is_not_valid(tmp_path: Path) -> None:
    write_backup(tmp_path)
    for content in (b'{"format": 1', b"\xff\xfe not text"):
        (tmp_path / MANIFEST).write_bytes(content)
        with pytest.raises(StackError, match="is not a valid manifest"):
            Manifest.read(tmp_path)


def test_a_manifest_whose_count_disagrees_with_its_items_is_refused(tmp_path: Path) -> None:
    write_backup(tmp_path)
    _edit(tmp_path, lambda d: d["objects"]["items"].pop())
    with pytest.raises(StackError, match="lists 1 objects but says"):
        Manifest.read(tmp_path)


def test_a_manifest_naming_another_dump_file_is_refused_before_reading_it(
    tmp_path: Path,
) -> None:
    write_backup(tmp_path)
    _edit(tmp_path, lambda d: d["databases"]["tracking"].update(file="../../etc/shadow"))
    manifest = Manifest.read(tmp_path)
    with pytest.raises(StackError, match=r"names '\.\./\.\./etc/shadow' for the tracking dump"):
        manifest.verify(tmp_path)


def test_a_changed_sha256_in_the_manifest_is_found(tmp_path: Path) -> None:
    write_backup(tmp_path)
    _edit(tmp_path, lambda d: d["objects"]["items"][1].update(sha256="0" * 64))
    with pytest.raises(StackError, match=r"object 2/r/artifacts/y\.bin does not match its sha256"):
        Manifest.read(tmp_path).verify(tmp_path)


@pytest.mark.parametrize(
    ("content", "kind"), [("[]", "list"), ('"a string"', "str"), ("null", "NoneType"), ("3", "int")]
)
def test_a_manifest_that_is_not_a_json_object_is_not_valid(
    tmp_path: Path, content: str, kind: str
) -> None:
    write_backup(tmp_path)
    (tmp_path / MANIFEST).write_text(content)
    with pytest.raises(StackError) as refused:
        Manifest.read(tmp_path)
    assert str(refused.value) == (
        f"{tmp_path / MANIFEST} is not a valid manifest: its JSON is a {kind}, not an object"
    )


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (lambda d: d["objects"].pop("count"), "KeyError('count')"),
        (lambda d: d["objects"].update(count="two"), "'two'"),
        (lambda d: d["objects"]["items"][0].update(key=7), "TypeError"),
    ],
    ids=["no-count", "bad-count", "key-not-a-string"],
)
def test_a_bad_object_count_or_key_is_not_valid_in_one_line(
    tmp_path: Path, change: Callable[[dict[str, Any]], Any], detail: str
) -> None:
    write_backup(tmp_path)
    _edit(tmp_path, change)
    with pytest.raises(StackError) as refused:
        Manifest.read(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / MANIFEST} is not a valid manifest: "), message
    assert detail in message and "\n" not in message


def test_a_long_bad_value_is_cut_short(tmp_path: Path) -> None:
    write_backup(tmp_path)
    _edit(tmp_path, lambda d: d.update(pg_dump_version="x" * 100_000))
    with pytest.raises(StackError, match="is not a valid manifest") as refused:
        Manifest.read(tmp_path)
    assert len(str(refused.value)) < len(str(tmp_path / MANIFEST)) + 250


def test_the_count_refusal_names_the_count_not_every_item(tmp_path: Path) -> None:
    write_backup(tmp_path)
    _edit(tmp_path, lambda d: d["objects"]["items"].pop())
    with pytest.raises(StackError) as refused:
        Manifest.read(tmp_path)
    assert str(refused.value) == f"{tmp_path / MANIFEST} lists 1 objects but says 2"
