"""Proxied uploads stream into S3 (multipart above one part) and arrive whole; an upload cut
off half-way leaves neither an object nor unfinished multipart parts in the bucket."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from mlflow_stack.multipart import PART_SIZE
from tests.conftest import LiveStack

SIZES = {
    "empty": 0,
    "one byte": 1,
    "exactly one part": PART_SIZE,
    "two parts and a byte": 2 * PART_SIZE + 1,
}


def upload_url(stack: LiveStack, key: str) -> str:
    return f"{stack.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{key}"


def pending_uploads(stack: LiveStack, prefix: str) -> list[str]:
    answer = stack.s3().list_multipart_uploads(Bucket=stack.settings.s3_bucket, Prefix=prefix)
    return [upload["Key"] for upload in answer.get("Uploads", [])]


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_a_proxied_upload_of_any_size_arrives_whole(stack: LiveStack, size: int) -> None:
    prefix = f"streaming/{uuid.uuid4().hex}/"
    body = os.urandom(size)

    def chunks() -> Iterator[bytes]:  # chunked transfer, in odd-sized pieces
        for start in range(0, size, 3_000_001):
            yield body[start : start + 3_000_001]

    answer = requests.put(upload_url(stack, prefix + "data.json"), data=chunks(),
                          auth=stack.admin, timeout=120)  # fmt: skip
    assert answer.status_code == 200, answer.text

    stored = stack.s3().get_object(Bucket=stack.settings.s3_bucket, Key=prefix + "data.json")
    assert hashlib.sha256(stored["Body"].read()).digest() == hashlib.sha256(body).digest()
    assert stored["ContentLength"] == size
    assert stored["ContentType"] == "application/json"  # as MLflow's own upload sets it
    # Streamed in PART_SIZE parts (a multipart ETag ends in -<parts>), or one PUT if smaller.
    parts = -(-size // PART_SIZE) if size >= PART_SIZE else 0
    etag = stored["ETag"].strip('"')
    assert etag.endswith(f"-{parts}") if parts else "-" not in etag, etag
    assert pending_uploads(stack, prefix) == []


def test_an_interrupted_upload_leaves_nothing_behind(stack: LiveStack) -> None:
    prefix = f"streaming/{uuid.uuid4().hex}/"
    sent = 0

    def cut_off() -> Iterator[bytes]:  # three parts' worth, then the client dies
        nonlocal sent
        while sent < 3 * PART_SIZE:
            sent += 2**20
            yield os.urandom(2**20)
        raise ConnectionAbortedError("the training job was killed")

    with pytest.raises((ConnectionAbortedError, requests.exceptions.ConnectionError)):
        requests.put(upload_url(stack, prefix + "half.bin"), data=cut_off(),
                     auth=stack.admin, timeout=120)  # fmt: skip
    assert sent == 3 * PART_SIZE

    s3 = stack.s3()
    deadline = time.monotonic() + 15
    while pending_uploads(stack, prefix) and time.monotonic() < deadline:
        time.sleep(0.5)  # the server aborts the multipart upload once it sees the disconnect
    assert pending_uploads(stack, prefix) == []
    listed = s3.list_objects_v2(Bucket=stack.settings.s3_bucket, Prefix=prefix)
    assert listed.get("KeyCount", 0) == 0
