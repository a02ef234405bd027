"""Copying every object of the bucket to ``objects/<key>`` and back."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_stack.backup.manifest import StoredObject, object_file
from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.storage import s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def client(settings: Settings) -> S3Client:
    """Retries and a patient read timeout: a backup of thousands of objects should not fail
    on one dropped connection."""
    return s3_client(settings, timeout=10, read_timeout=120, attempts=5, connections=32)


def listing(s3: S3Client, bucket: str) -> Iterator[tuple[str, int]]:
    """(key, size) of every object in the bucket."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        for item in page.get("Contents", []):
            yield item["Key"], item["Size"]


def is_empty(s3: S3Client, bucket: str) -> bool:
    return not s3.list_objects_v2(Bucket=bucket, MaxKeys=1).get("Contents")


def _client_error(error: Any, what: str) -> StackError:
    """``what: <S3's error code>``, from a ClientError or from the one boto3's
    S3UploadFailedError was raised while handling (its ``__context__``)."""
    if not hasattr(error, "response") and hasattr(error.__context__, "response"):
        error = error.__context__
    code = getattr(error, "response", {}).get("Error", {}).get("Code", "") or str(error)
    return StackError(f"{what}: {code}")


def download(s3: S3Client, bucket: str, root: Path, key: str) -> StoredObject | None:
    """Stream one object to its file, hashing as it goes; None if it vanished meanwhile."""
    from botocore.exceptions import ClientError

    target = object_file(root, key)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with target.open("xb") as handle:
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
                handle.write(chunk)
                size += len(chunk)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NoSuchKey":
            target.unlink(missing_ok=True)
            return None
        raise _client_error(error, f"cannot read object {key!r} from bucket {bucket!r}") from None
    return StoredObject(key=key, size=size, sha256=digest.hexdigest())


def copy_bucket(settings: Settings, root: Path, jobs: int) -> tuple[list[StoredObject], int]:
    """Every object of the bucket below ``root/objects``; returns them and how many vanished
    between the listing and the read (deleted meanwhile)."""
    s3 = client(settings)
    bucket = settings.s3_bucket
    keys = [key for key, _ in listing(s3, bucket)]
    for key in keys:
        object_file(root, key)  # refuse an unsafe key before copying anything
    _refuse_file_directory_clashes(keys)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda key: download(s3, bucket, root, key), keys))
    stored = [r for r in results if r is not None]
    return stored, len(results) - len(stored)


def _refuse_file_directory_clashes(keys: list[str]) -> None:
    """``a/b`` and ``a/b/c`` cannot both be files."""
    names = set(keys)
    for key in keys:
        parts = key.split("/")
        for end in range(1, len(parts)):
            prefix = "/".join(parts[:end])
            if prefix in names:
                raise StackError(
                    f"object keys {prefix!r} and {key!r} cannot both be stored as files"
                )


def upload_all(settings: Settings, root: Path, objects: list[StoredObject], jobs: int) -> None:
    """Upload every object; boto3 sends a checksum with each part, which S3 verifies."""
    from boto3.exceptions import S3UploadFailedError
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import ClientError

    s3 = client(settings)
    bucket = settings.s3_bucket
    transfer = TransferConfig(multipart_chunksize=16 << 20, max_concurrency=4)

    def upload(item: StoredObject) -> None:
        try:
            s3.upload_file(str(object_file(root, item.key)), bucket, item.key, Config=transfer)
        except (ClientError, S3UploadFailedError) as error:
            raise _client_error(error, f"cannot upload object {item.key!r}") from None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(upload, objects))


def check_uploaded(settings: Settings, objects: list[StoredObject]) -> None:
    """Read the bucket back: exactly the manifest's keys, each of its size."""
    stored = dict(listing(client(settings), settings.s3_bucket))
    expected = {item.key: item.size for item in objects}
    if stored != expected:
        missing = sorted(set(expected) - set(stored))
        wrong = sorted(k for k in expected if k in stored and stored[k] != expected[k])
        extra = sorted(set(stored) - set(expected))
        raise StackError(
            f"bucket {settings.s3_bucket!r} differs from the backup after the upload: "
            f"missing {missing[:3]}, wrong size {wrong[:3]}, unexpected {extra[:3]}"
        )
