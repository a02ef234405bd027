"""Write one S3 object from an async byte stream while it arrives, and prove it arrived whole.

Above one part it is a multipart upload with a few parts in flight, so memory stays bounded
by them; below, a single PUT. Any failure (the client went away, S3 refused a part) aborts the
multipart upload, leaving neither an object nor unfinished parts behind.

The server answers 200 as soon as this returns, so a wrong object must never get that far.
Parts once took their numbers from a count that saw a finished part twice; a client slower than
S3 then had parts skip numbers or overwrite each other, and 72 MiB were acknowledged as 40 MiB
(issue 9). So: parts are numbered by a counter, the part list must be exactly 1..N before the
upload is completed, and the stored object's size must equal the bytes received, else the
object is deleted and the upload fails (a 5xx, which MLflow's client retries). Every part and
single PUT also carries a checksum that S3 verifies, so it refuses bytes damaged on the way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterable
from typing import Any

log = logging.getLogger(__name__)

#: Part size: S3 needs >= 5 MiB (but the last) and allows 10,000 parts (156 GiB).
PART_SIZE = 16 * 1024 * 1024
#: Parts uploading while the next one fills: at most (PARTS_IN_FLIGHT + 1) x PART_SIZE held.
PARTS_IN_FLIGHT = 2


class UploadIntegrityError(RuntimeError):
    """S3 holds something other than the bytes received; nothing was left under the key."""


def sends_checksums(client: Any) -> bool:
    """Whether botocore adds a checksum of its own to every part and PUT.

    botocore >= 1.36 sends a CRC32 (which AWS S3 and SeaweedFS verify) unless told
    "when_required" (``AWS_REQUEST_CHECKSUM_CALCULATION``, often set for S3 servers that reject
    it); older botocore sends none. SeaweedFS does not check the signed payload hash, so
    without one a damaged part would be stored as it arrived.
    """
    config = getattr(getattr(client, "meta", None), "config", None)
    return getattr(config, "request_checksum_calculation", None) == "when_supported"


def content_md5(body: bytes) -> str:
    """The Content-MD5 header: S3 answers BadDigest, and stores nothing, if the bytes differ."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


class MultipartUpload:
    """One object written from an async byte stream; a single PUT if it is small."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        object_args: dict[str, Any],
        owner_args: dict[str, str],
    ) -> None:
        self.client = client
        self.target = {"Bucket": bucket, "Key": key}
        self.object_args = object_args
        self.owner_args = owner_args
        self.upload_id: str | None = None
        self.received = 0  # bytes taken from the stream
        self.last_number = 0  # the part number handed out last
        self.parts: dict[int, tuple[str, int]] = {}  # number -> (ETag, size), once stored
        self.in_flight: set[asyncio.Task[None]] = set()
        # An MD5 only where botocore sends no CRC32: every part checked once, not twice (an
        # MD5 costs ~23 ms of CPU per 16 MiB part, 10-20% of a proxied upload's throughput).
        self.md5 = not sends_checksums(client)

    def _checksum(self, body: bytes) -> dict[str, str]:
        return {"ContentMD5": content_md5(body)} if self.md5 else {}

    async def run(self, chunks: AsyncIterable[bytes]) -> None:
        """Store the stream under the key, or raise and leave nothing there."""
        try:
            written = await self._write(chunks)
        except BaseException:
            await self._abort()
            raise
        await self._verify(written)

    async def _write(self, chunks: AsyncIterable[bytes]) -> dict[str, Any]:
        """Upload everything; S3's answer to the PUT or to the completion."""
        buffer = bytearray()
        async for chunk in chunks:
            self.received += len(chunk)
            buffer += chunk
            while len(buffer) >= PART_SIZE:
                part = bytes(buffer[:PART_SIZE])
                del buffer[:PART_SIZE]
                await self._send_part(part)
        if self.upload_id is None:  # smaller than one part: a plain PUT
            body = bytes(buffer)

            def put() -> dict[str, Any]:
                return self.client.put_object(
                    Body=body, **self._checksum(body), **self.target, **self.object_args
                )

            return await asyncio.to_thread(put)
        if buffer:
            await self._send_part(bytes(buffer))
        await self._drain(everything=True)
        return await asyncio.to_thread(
            self.client.complete_multipart_upload,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self._completed_parts()},
            **self.target,
            **self.owner_args,
        )

    async def _send_part(self, body: bytes) -> None:
        if self.upload_id is None:
            created = await asyncio.to_thread(
                self.client.create_multipart_upload, **self.target, **self.object_args
            )
            self.upload_id = created["UploadId"]
        await self._drain(everything=False)
        self.last_number += 1
        self.in_flight.add(asyncio.create_task(self._upload_part(self.last_number, body)))

    async def _upload_part(self, number: int, body: bytes) -> None:
        def upload() -> dict[str, Any]:  # hashing too, off the event loop
            return self.client.upload_part(
                UploadId=self.upload_id,
                PartNumber=number,
                Body=body,
                **self._checksum(body),
                **self.target,
                **self.owner_args,
            )

        answer = await asyncio.to_thread(upload)
        self.parts[number] = (answer["ETag"], len(body))

    def _completed_parts(self) -> list[dict[str, Any]]:
        """The part list for the completion, checked: parts 1..N, each once, all the bytes."""
        numbers = sorted(self.parts)
        stored = sum(size for _, size in self.parts.values())
        if numbers != list(range(1, self.last_number + 1)) or stored != self.received:
            problem = (
                f"parts {numbers} of {self.last_number} hold {stored} of {self.received} bytes"
            )
            log.error("not completing the upload of %s: %s", self.target, problem)
            raise UploadIntegrityError(problem)
        return [{"PartNumber": number, "ETag": self.parts[number][0]} for number in numbers]

    async def _drain(self, *, everything: bool) -> None:
        """Wait until a slot is free (or all parts are done); re-raise a part's failure."""
        while self.in_flight and (everything or len(self.in_flight) >= PARTS_IN_FLIGHT):
            done, self.in_flight = await asyncio.wait(
                self.in_flight, return_when=asyncio.FIRST_COMPLETED
            )
            failures = [task.exception() for task in done]  # each one retrieved, none lost
            for failure in failures:
                if failure is not None:
                    raise failure

    async def _verify(self, written: dict[str, Any]) -> None:
        """Compare the stored object's size with the bytes received; delete it if they differ.

        Any failure here (a wrong size, S3 not answering, the request cancelled) deletes too:
        an object that was not verified is neither acknowledged nor left behind.
        """
        version = {"VersionId": written["VersionId"]} if written.get("VersionId") else {}
        where = f"s3://{self.target['Bucket']}/{self.target['Key']}"
        try:
            head = await asyncio.to_thread(
                self.client.head_object, **self.target, **version, **self.owner_args
            )
            if head["ContentLength"] != self.received:
                raise UploadIntegrityError(
                    f"{where} holds {head['ContentLength']} bytes, "
                    f"but {self.received} were received"
                )
        except BaseException as error:
            log.error("deleting %s, not verified as stored whole: %r", where, error)
            try:
                await asyncio.to_thread(
                    self.client.delete_object, **self.target, **version, **self.owner_args
                )
            except Exception as failure:  # noqa: BLE001 - the original failure matters more
                log.error("could not delete %s: %s", where, failure)
            raise

    async def _abort(self) -> None:
        """Abort the multipart upload once no part is uploading any more.

        A part's thread cannot be cancelled, and S3 may keep a part that lands after the
        abort (a dangling part, billed until the next abort), so wait for them first.
        """
        if self.in_flight:
            with contextlib.suppress(BaseException):  # their failures are not the news
                await asyncio.wait(self.in_flight)
            for task in self.in_flight:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: no "never retrieved" noise
        self.in_flight.clear()
        if self.upload_id is None:
            return
        try:
            await asyncio.to_thread(
                self.client.abort_multipart_upload,
                UploadId=self.upload_id,
                **self.target,
                **self.owner_args,
            )
        except Exception as error:  # noqa: BLE001 - the original failure matters more
            log.warning("could not abort the multipart upload of %s: %s", self.target, error)
