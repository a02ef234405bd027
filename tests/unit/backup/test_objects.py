"""Copying the bucket to objects/<key> and back, against a real S3 (moto's server on a loopback
port): sizes and sha256 as streamed, parallel copies, refusals before anything is written,
objects deleted meanwhile, and the read-back after an upload."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.backup import objects
from mlflow_stack.backup.manifest import StoredObject
from mlflow_stack.backup.objects import _refuse_file_directory_clashes
from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.storage import s3_client
from tests.unit.backup.conftest import settings_for

CONTENTS = {
    "0/meta.yaml": b"name: Default\n",
    "1/run/artifacts/model/MLmodel": b"flavors: {}\n",
    "1/run/artifacts/big.bin": os.urandom((2 << 20) + 3),  # streamed in three chunks
    "1/run/artifacts/empty.txt": b"",
    "1/run/artifacts/with space & ümlaut.txt": "ümlaut".encode(),
}


def _fill(s3: Any, bucket: str, contents: dict[str, bytes]) -> None:
    for key, data in contents.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)


def _files(root: Path) -> dict[str, bytes]:
    base = root / "objects"
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def test_a_key_that_is_also_a_prefix_of_another_is_refused() -> None:
    _refuse_file_directory_clashes(["a/b", "a/c/d"])
    with pytest.raises(StackError, match="cannot both be stored"):
        _refuse_file_directory_clashes(["a/b/c", "a/b"])


def test_the_client_is_patient_and_retries() -> None:
    config = objects.client(settings_for("http://127.0.0.1:9")).meta.config
    # botocore counts the first try too: s3_client's attempts=5 are 5 retries, 6 tries
    assert config.retries["mode"] == "standard"
    assert config.retries["total_max_attempts"] >= 5
    assert (config.connect_timeout, config.read_timeout) == (10, 120)
    assert config.max_pool_connections == 32


def test_every_object_is_copied_with_its_size_and_sha256(
    settings: Settings, s3: Any, tmp_path: Path
) -> None:
    _fill(s3, settings.s3_bucket, CONTENTS)
    stored, vanished = objects.copy_bucket(settings, tmp_path, jobs=4)
    assert vanished == 0
    assert _files(tmp_path) == CONTENTS
    assert sorted(stored, key=lambda o: o.key) == sorted(
        (StoredObject(k, len(v), hashlib.sha256(v).hexdigest()) for k, v in CONTENTS.items()),
        key=lambda o: o.key,
    )


def test_an_empty_bucket_copies_nothing(settings: Settings, tmp_path: Path) -> None:
    assert objects.copy_bucket(settings, tmp_path, jobs=2) == ([], 0)
    assert list(tmp_path.iterdir()) == []


def test_copies_run_in_parallel_up_to_jobs(
    settings: Settings, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(s3, settings.s3_bucket, {f"1/r/artifacts/{i}": b"x" * i for i in range(12)})
    running, most, lock = [0], [0], threading.Lock()
    download = objects.download

    def slow_download(*args: Any) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)  # long enough for the others to start
        try:
            return download(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(objects, "download", slow_download)
    stored, _ = objects.copy_bucket(settings, tmp_path, jobs=3)
    assert len(stored) == 12
    assert most[0] == 3


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["1/r/artifacts/a", "1/r/folder/"], r"'1/r/folder/' cannot be stored as a file"),
        (["1/r/artifacts/a", "1/r/artifacts/a/b"], "cannot both be stored as files"),
    ],
    ids=["folder-marker", "file-and-directory"],
)
def test_keys_that_cannot_be_files_are_refused_before_anything_is_copied(
    settings: Settings, s3: Any, tmp_path: Path, keys: list[str], message: str
) -> None:
    _fill(s3, settings.s3_bucket, dict.fromkeys(keys, b"data"))
    with pytest.raises(StackError, match=message):
        objects.copy_bucket(settings, tmp_path, jobs=2)
    assert list(tmp_path.iterdir()) == []


def test_an_object_deleted_after_the_listing_is_counted_not_copied(
    settings: Settings, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(s3, settings.s3_bucket, {"1/r/artifacts/kept": b"k", "1/r/artifacts/gone": b"g"})
    listing = objects.listing

    def listing_then_delete(client: Any, bucket: str) -> Any:
        found = list(listing(client, bucket))
        s3.delete_object(Bucket=bucket, Key="1/r/artifacts/gone")  # as a gc would, meanwhile
        return iter(found)

    monkeypatch.setattr(objects, "listing", listing_then_delete)
    stored, vanished = objects.copy_bucket(settings, tmp_path, jobs=2)
    assert ([o.key for o in stored], vanished) == (["1/r/artifacts/kept"], 1)
    assert _files(tmp_path) == {"1/r/artifacts/kept": b"k"}


def test_a_read_refused_by_s3_is_one_line_naming_the_object(s3_url: str, tmp_path: Path) -> None:
    settings = settings_for(s3_url)  # its bucket was never created
    with pytest.raises(StackError) as refused:
        objects.download(s3_client(settings), settings.s3_bucket, tmp_path, "1/r/artifacts/x")
    assert str(refused.value) == (
        f"cannot read object '1/r/artifacts/x' from bucket {settings.s3_bucket!r}: NoSuchBucket"
    )


def test_is_empty_follows_the_bucket(settings: Settings, s3: Any) -> None:
    assert objects.is_empty(s3, settings.s3_bucket)
    s3.put_object(Bucket=settings.s3_bucket, Key="k", Body=b"")
    assert not objects.is_empty(s3, settings.s3_bucket)


def test_a_copy_uploads_back_into_a_new_bucket_byte_for_byte(
    settings: Settings, s3: Any, s3_url: str, tmp_path: Path
) -> None:
    _fill(s3, settings.s3_bucket, CONTENTS)
    stored, _ = objects.copy_bucket(settings, tmp_path, jobs=4)
    target = settings_for(s3_url)
    s3.create_bucket(Bucket=target.s3_bucket)
    objects.upload_all(target, tmp_path, stored, jobs=4)
    objects.check_uploaded(target, stored)
    for key, data in CONTENTS.items():
        assert s3.get_object(Bucket=target.s3_bucket, Key=key)["Body"].read() == data, key


def test_the_read_back_names_missing_resized_and_unexpected_objects(
    settings: Settings, s3: Any
) -> None:
    expected = [StoredObject("a", 1, ""), StoredObject("b", 2, ""), StoredObject("c", 3, "")]
    _fill(s3, settings.s3_bucket, {"a": b"x", "b": b"xyz", "d": b""})
    with pytest.raises(StackError) as refused:
        objects.check_uploaded(settings, expected)
    assert str(refused.value) == (
        f"bucket {settings.s3_bucket!r} differs from the backup after the upload: "
        "missing ['c'], wrong size ['b'], unexpected ['d']"
    )
    s3.delete_object(Bucket=settings.s3_bucket, Key="d")
    s3.put_object(Bucket=settings.s3_bucket, Key="b", Body=b"xy")
    s3.put_object(Bucket=settings.s3_bucket, Key="c", Body=b"xyz")
    objects.check_uploaded(settings, expected)


def test_an_upload_refused_by_s3_is_one_line_naming_the_object(s3_url: str, tmp_path: Path) -> None:
    (tmp_path / "objects").mkdir()
    (tmp_path / "objects" / "k").write_bytes(b"x")
    settings = settings_for(s3_url)  # its bucket was never created
    item = StoredObject("k", 1, hashlib.sha256(b"x").hexdigest())
    with pytest.raises(StackError, match=r"^cannot upload object 'k': NoSuchBucket$"):
        objects.upload_all(settings, tmp_path, [item], jobs=1)
