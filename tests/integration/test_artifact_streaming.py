"""Proxied uploads stream into S3 (multipart above one part) and arrive whole, however fast or
slow the client sends; an upload cut off half-way leaves neither an object nor unfinished
multipart parts in the bucket. Proxied downloads stream back with the stored size as their
Content-Length; a directory or a missing path gets MLflow's error."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import requests

from mlflow_stack.server import multipart
from mlflow_stack.server.multipart import PART_SIZE, MultipartUpload
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


def paced(body: bytes, *, chunk: int, rate: float) -> Iterator[bytes]:
    """`body` in `chunk`-sized pieces at no more than `rate` bytes/s: a client slower than S3,
    so each part is stored before the next one fills (what numbered parts twice, issue 9)."""
    start = time.monotonic()
    for offset in range(0, len(body), chunk):
        ahead = start + offset / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        yield body[offset : offset + chunk]


def bursts(body: bytes, *, burst: int, chunk: int, pause: float) -> Iterator[bytes]:
    """`body` in bursts of `burst` bytes (sent in `chunk`-sized pieces) with a pause after
    each: bursts that straddle part boundaries, and parts that finish during the pauses."""
    for start in range(0, len(body), burst):
        piece = body[start : start + burst]
        for offset in range(0, len(piece), chunk):
            yield piece[offset : offset + chunk]
        time.sleep(pause)


def assert_stored_whole(stack: LiveStack, key: str, body: bytes) -> None:
    """Read back from the bucket and through the server: both must be the bytes sent."""
    size = len(body)
    stored = stack.s3().get_object(Bucket=stack.settings.s3_bucket, Key=key)
    assert stored["ContentLength"] == size
    assert hashlib.sha256(stored["Body"].read()).digest() == hashlib.sha256(body).digest()
    assert stored["ETag"].strip('"').endswith(f"-{-(-size // PART_SIZE)}"), stored["ETag"]
    served = requests.get(upload_url(stack, key), auth=stack.admin, timeout=120)
    assert served.status_code == 200, served.text
    assert hashlib.sha256(served.content).digest() == hashlib.sha256(body).digest()
    assert pending_uploads(stack, key) == []


def test_a_slow_client_upload_arrives_whole(stack: LiveStack) -> None:
    key = f"streaming/{uuid.uuid4().hex}/slow.bin"
    body = os.urandom(40 * 2**20 + 12_345)  # two full parts and a short last one

    started = time.monotonic()
    answer = requests.put(upload_url(stack, key), data=paced(body, chunk=64 * 1024, rate=4e6),
                          auth=stack.admin, timeout=120)  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - started > 8  # really slow: 42 MB at 4 MB/s

    assert_stored_whole(stack, key, body)


def test_an_upload_in_bursts_across_part_boundaries_arrives_whole(stack: LiveStack) -> None:
    key = f"streaming/{uuid.uuid4().hex}/bursts.bin"
    body = os.urandom(40 * 2**20 + 777)
    # 6 MiB + 1 per burst: the 16 and 32 MiB boundaries fall inside bursts, inside chunks.
    chunks = bursts(body, burst=6 * 2**20 + 1, chunk=2**20 + 3, pause=0.4)

    answer = requests.put(upload_url(stack, key), data=chunks, auth=stack.admin, timeout=120)
    assert answer.status_code == 200, answer.text

    assert_stored_whole(stack, key, body)


@pytest.mark.parametrize("checksums", ["when_supported", "when_required"])
def test_a_part_damaged_on_the_way_to_s3_is_refused(
    stack: LiveStack, checksums: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether botocore adds its CRC32 (its default) or not (the opt-out some S3 servers need),
    SeaweedFS must refuse a part that changed after it was checksummed, and nothing stays."""
    from botocore.exceptions import ClientError

    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", checksums)
    monkeypatch.setattr(multipart, "PART_SIZE", 5 * 2**20)  # S3's smallest, to keep it quick
    s3 = stack.s3()

    def damage_part_2(request: Any, **_: Any) -> None:  # a bit flipped between us and S3
        if "partNumber=2" in request.url:
            data = request.body.read()
            request.body = io.BytesIO(bytes([data[0] ^ 1]) + data[1:])

    s3.meta.events.register("before-send.s3.UploadPart", damage_part_2)
    prefix = f"streaming/{uuid.uuid4().hex}/"
    body = os.urandom(12 * 2**20)

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, len(body), 2**20):
            yield body[offset : offset + 2**20]

    upload = MultipartUpload(s3, stack.settings.s3_bucket, prefix + "damaged.bin", {}, {})
    with pytest.raises(ClientError, match="BadDigest"):
        asyncio.run(upload.run(chunks()))

    assert pending_uploads(stack, prefix) == []
    listed = s3.list_objects_v2(Bucket=stack.settings.s3_bucket, Prefix=prefix)
    assert listed.get("KeyCount", 0) == 0


def test_a_proxied_download_streams_the_stored_object_with_its_size(stack: LiveStack) -> None:
    key = f"streaming/{uuid.uuid4().hex}/weights.bin"
    body = os.urandom(5 * 2**20 + 3)
    stack.s3().put_object(Bucket=stack.settings.s3_bucket, Key=key, Body=body)

    with requests.get(upload_url(stack, key), auth=stack.admin, stream=True, timeout=120) as got:
        assert got.status_code == 200, got.text
        assert got.headers["Content-Length"] == str(len(body))
        assert "Transfer-Encoding" not in got.headers
        assert got.headers["Content-Disposition"] == "attachment; filename=weights.bin"
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        received = b"".join(got.iter_content(2**16))
    assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()


def test_a_download_of_a_directory_or_of_nothing_is_mlflows_error(stack: LiveStack) -> None:
    prefix = f"streaming/{uuid.uuid4().hex}"
    stack.s3().put_object(Bucket=stack.settings.s3_bucket, Key=f"{prefix}/model/MLmodel", Body=b"x")

    directory = requests.get(upload_url(stack, f"{prefix}/model"), auth=stack.admin, timeout=30)
    assert directory.status_code == 400
    assert directory.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert directory.json()["message"] == (
        f"Artifact path refers to a directory, not a file: '{prefix}/model'"
    )
    missing = requests.get(upload_url(stack, f"{prefix}/gone"), auth=stack.admin, timeout=30)
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_the_uis_downloads_stream_the_stored_object_behind_mlflows_login(
    stack: LiveStack, client: Any, experiment_id: str, tmp_path: Any
) -> None:
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    body = os.urandom(3 * 2**20 + 1)
    (tmp_path / "weights.bin").write_bytes(body)
    client.log_artifact(run_id, str(tmp_path / "weights.bin"), "model")
    model = f"ui-download-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(model)
    # The source as the client resolves it. (A bare runs:/ source is MLflow's 500 in this view,
    # stock and here alike: MLflow's server cannot resolve runs:/ to its own proxied root.)
    client.create_model_version(model, f"{run.info.artifact_uri}/model", run_id=run_id)
    key = f"{experiment_id}/{run_id}/artifacts/model/weights.bin"
    stored = stack.s3().head_object(Bucket=stack.settings.s3_bucket, Key=key)

    for route, params in (
        ("/get-artifact", {"run_id": run_id, "path": "model/weights.bin"}),
        ("/model-versions/get-artifact", {"name": model, "version": "1", "path": "weights.bin"}),
    ):
        url = stack.tracking_uri + route
        got = requests.get(url, params=params, auth=stack.admin, timeout=120)
        assert got.status_code == 200, (route, got.text)
        assert hashlib.sha256(got.content).digest() == hashlib.sha256(body).digest()
        assert got.headers["Content-Length"] == str(len(body))
        assert got.headers["ETag"] == stored["ETag"]  # the object's own: streamed, not copied
        assert got.headers["Content-Disposition"] == "attachment; filename=weights.bin"
        assert requests.get(url, params=params, timeout=30).status_code == 401
        ranged = requests.get(url, params=params, auth=stack.admin, timeout=120,
                              headers={"Range": "bytes=10-19"})  # fmt: skip
        assert (ranged.status_code, ranged.content) == (206, body[10:20])  # MLflow's answer
