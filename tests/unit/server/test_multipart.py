"""MultipartUpload against an in-memory S3 that really assembles the object from the parts it is
sent, so a part number repeated or skipped shows up as wrong bytes, as it did in issue 9.

The fake S3 can be faster or slower than the body stream, finish parts out of order, refuse a
part or the completion, damage a part on the way, and misreport the stored size. Each test reads
back what the fake stored: the exact bytes, or nothing at all and no unfinished upload.
"""

# ruff: noqa: N803 - the fake takes boto3's parameter names (Bucket, Key, PartNumber, ...)

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mlflow_stack.server import multipart
from mlflow_stack.server.multipart import PARTS_IN_FLIGHT, MultipartUpload, UploadIntegrityError

PART = 64 * 1024  # PART_SIZE for these tests, to keep them fast
KEY = "run/artifacts/model.bin"


class S3Error(Exception):
    """What the fake raises where S3 would answer with an error."""


def md5(body: bytes) -> bytes:
    return hashlib.md5(body, usedforsecurity=False).digest()


class FakeS3:
    """An S3 bucket in memory, used from several threads as boto3's client would be.

    Completion is lenient, like SeaweedFS 4.48: it joins the listed parts in the order given and
    checks no ETag, so repeated or missing part numbers store wrong bytes rather than fail (how
    issue 9 stored 40 of 72 MiB). Content-MD5 is checked as S3 does. A part that lands after
    its upload was aborted is recorded as dangling: S3 may keep it, billed, with no upload left
    to complete it.
    """

    def __init__(
        self,
        *,
        delays: dict[int, float] | None = None,
        finish_after: dict[int, int] | None = None,
        fail_part: int | None = None,
        fail_complete: bool = False,
        damage_part: int | None = None,
        size_error: int = 0,
    ) -> None:
        self.delays = delays or {}  # part number -> seconds it takes to store
        self.finish_after = finish_after or {}  # part number -> part it is held back for
        self.fail_part = fail_part
        self.fail_complete = fail_complete
        self.damage_part = damage_part  # 0: the single PUT
        self.size_error = size_error  # added to the size head_object reports
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}  # unfinished uploads and their parts
        self.sent: list[int] = []  # part numbers as upload_part was called
        self.completed: list[int] = []  # part numbers as the completion listed them
        self.dangling: list[int] = []
        self.active = self.most_active = 0  # upload_part calls running at once
        self.stored = defaultdict(threading.Event)  # part number -> set once stored
        self.ids = itertools.count(1)
        self.lock = threading.Lock()

    def _arrived(self, number: int, body: bytes, content_md5: str | None) -> bytes:
        if number == self.damage_part:
            body = bytes([body[0] ^ 1]) + body[1:]  # one bit flipped on the way
        if content_md5 is not None and base64.b64decode(content_md5) != md5(body):
            raise S3Error("BadDigest")
        return body

    def create_multipart_upload(self, *, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        upload_id = f"upload-{next(self.ids)}"
        with self.lock:
            self.uploads[upload_id] = {}
        return {"UploadId": upload_id}

    def upload_part(
        self,
        *,
        Bucket: str,
        Key: str,
        UploadId: str,
        PartNumber: int,
        Body: bytes,
        ContentMD5: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        with self.lock:
            self.sent.append(PartNumber)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            time.sleep(self.delays.get(PartNumber, 0))
            if PartNumber in self.finish_after:
                self.stored[self.finish_after[PartNumber]].wait(timeout=5)
            if PartNumber == self.fail_part:
                raise S3Error("InternalError")
            body = self._arrived(PartNumber, Body, ContentMD5)
            with self.lock:
                if UploadId in self.uploads:
                    self.uploads[UploadId][PartNumber] = body
                else:
                    self.dangling.append(PartNumber)
            self.stored[PartNumber].set()
            return {"ETag": f'"{md5(body).hex()}"'}
        finally:
            with self.lock:
                self.active -= 1

    def complete_multipart_upload(
        self, *, Bucket: str, Key: str, UploadId: str, MultipartUpload: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        if self.fail_complete:
            raise S3Error("InternalError")
        with self.lock:
            parts = self.uploads.pop(UploadId)
            listed = MultipartUpload["Parts"]
            self.completed = [part["PartNumber"] for part in listed]
            if any(len(parts[number]) < PART for number in self.completed[:-1]):
                raise S3Error("EntityTooSmall")
            self.objects[Key] = b"".join(parts[number] for number in self.completed)
        return {"ETag": f'"multipart-{len(listed)}"'}

    def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str, **_: Any) -> None:
        with self.lock:
            self.uploads.pop(UploadId)

    def put_object(
        self, *, Bucket: str, Key: str, Body: bytes, ContentMD5: str | None = None, **_: Any
    ) -> dict[str, Any]:
        body = self._arrived(0, Body, ContentMD5)
        with self.lock:
            self.objects[Key] = body
        return {"ETag": f'"{md5(body).hex()}"'}

    def head_object(self, *, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        with self.lock:
            if Key not in self.objects:
                raise S3Error("404")
            return {"ContentLength": len(self.objects[Key]) + self.size_error}

    def delete_object(self, *, Bucket: str, Key: str, **_: Any) -> None:
        with self.lock:
            self.objects.pop(Key, None)


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "PART_SIZE", PART)


def parts_of(size: int) -> int:
    """How many parts an upload of `size` bytes takes (0: a single PUT)."""
    return -(-size // PART) if size >= PART else 0


def pattern(size: int) -> bytes:
    """Bytes in which every 4-byte word says where it is: a misplaced part cannot match."""
    words = b"".join(i.to_bytes(4, "big") for i in range(size // 4 + 1))
    return words[:size]


async def stream(body: bytes, chunk: int, pause: float = 0.0) -> AsyncIterator[bytes]:
    """The request body as the server gets it: `chunk`-sized pieces, `pause` s apart."""
    for offset in range(0, len(body), chunk):
        yield body[offset : offset + chunk]
        await asyncio.sleep(pause)


def upload(s3: FakeS3, chunks: AsyncIterator[bytes]) -> None:
    asyncio.run(MultipartUpload(s3, "bucket", KEY, {}, {}).run(chunks))


def assert_nothing_left(s3: FakeS3) -> None:
    time.sleep(0.3)  # let any part still in a thread land, as it would on S3
    assert s3.objects == {}
    assert s3.uploads == {}  # aborted: no unfinished upload
    assert s3.dangling == []  # and no part stored after the abort


SIZES = {
    "empty": 0,
    "one byte": 1,
    "a byte short of a part": PART - 1,
    "one part": PART,
    "a part and a byte": PART + 1,
    "four parts, the last short": 3 * PART + 17,
    "five parts": 5 * PART,
}
CHUNKS = {"4 KiB + 3": 4099, "one part": PART, "100 kB + 3": 100_003, "all at once": 6 * PART}
TIMINGS = ("S3 faster than the client", "S3 slower than the client", "parts finish out of order")


def fake_for(timing: str, size: int) -> tuple[FakeS3, float]:
    """The fake S3 for `timing`, and the client's pause between chunks."""
    parts = parts_of(size)
    if timing == "S3 faster than the client":  # each part stored before the next one fills
        return FakeS3(), 0.001
    if timing == "S3 slower than the client":  # parts queue up behind the ones in flight
        return FakeS3(delays=dict.fromkeys(range(1, parts + 1), 0.02)), 0.0
    # Each odd part is stored only after the even part following it (when there is one).
    return FakeS3(finish_after={n: n + 1 for n in range(1, parts, 2)}), 0.0


@pytest.mark.parametrize("timing", TIMINGS)
@pytest.mark.parametrize("chunk", CHUNKS.values(), ids=CHUNKS.keys())
@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_the_stored_object_is_exactly_the_bytes_sent(size: int, chunk: int, timing: str) -> None:
    s3, pause = fake_for(timing, size)
    body = pattern(size)

    upload(s3, stream(body, chunk, pause))

    stored = s3.objects[KEY]
    assert (len(stored), md5(stored)) == (size, md5(body))
    parts = parts_of(size)
    assert sorted(s3.sent) == s3.completed == list(range(1, parts + 1))  # 1..N, each once
    assert s3.most_active <= PARTS_IN_FLIGHT  # memory stays bounded
    assert s3.uploads == {}


def test_a_refused_part_aborts_after_the_parts_in_flight_land() -> None:
    # Part 1 is still uploading when part 2 fails: aborting before part 1 lands would let S3
    # keep part 1 after the abort.
    s3 = FakeS3(delays={1: 0.2}, fail_part=2)

    with pytest.raises(S3Error, match="InternalError"):
        upload(s3, stream(pattern(5 * PART), 4099))

    assert_nothing_left(s3)


def test_a_refused_completion_aborts() -> None:
    s3 = FakeS3(fail_complete=True)

    with pytest.raises(S3Error, match="InternalError"):
        upload(s3, stream(pattern(3 * PART), 4099))

    assert_nothing_left(s3)


@pytest.mark.parametrize("damaged", [0, 2], ids=["single PUT", "part 2"])
def test_bytes_damaged_on_the_way_are_refused_by_s3(damaged: int) -> None:
    s3 = FakeS3(damage_part=damaged)
    size = 3 * PART if damaged else 100

    with pytest.raises(S3Error, match="BadDigest"):
        upload(s3, stream(pattern(size), 4099))

    assert_nothing_left(s3)


@pytest.mark.parametrize("size", [100, 3 * PART + 17], ids=["single PUT", "multipart"])
@pytest.mark.parametrize("error", [-1, +1], ids=["shorter", "longer"])
def test_a_stored_size_that_differs_deletes_the_object(
    size: int, error: int, caplog: pytest.LogCaptureFixture
) -> None:
    s3 = FakeS3(size_error=error)

    with (
        caplog.at_level(logging.ERROR, logger=multipart.__name__),
        pytest.raises(UploadIntegrityError, match=f"holds {size + error} bytes, but {size}"),
    ):
        upload(s3, stream(pattern(size), 4099))

    assert_nothing_left(s3)
    assert f"deleting s3://bucket/{KEY}, not verified" in caplog.text


def test_a_client_that_goes_away_leaves_nothing() -> None:
    async def cut_off() -> AsyncIterator[bytes]:  # two and a half parts, then a disconnect
        received = 0
        async for chunk in stream(pattern(5 * PART), 4099, pause=0.0005):
            yield chunk
            received += len(chunk)
            if received > 2.5 * PART:
                raise OSError("the client went away")

    s3 = FakeS3(delays=dict.fromkeys(range(1, 6), 0.2))  # parts still uploading at the cut

    with pytest.raises(OSError, match="went away"):
        upload(s3, cut_off())

    assert_nothing_left(s3)


def test_a_cancelled_upload_leaves_nothing() -> None:
    s3 = FakeS3(delays=dict.fromkeys(range(1, 6), 0.1))

    async def cancel_midway() -> None:
        task = asyncio.create_task(
            MultipartUpload(s3, "bucket", KEY, {}, {}).run(stream(pattern(5 * PART), 4099))
        )
        while len(s3.sent) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancel_midway())

    assert_nothing_left(s3)
