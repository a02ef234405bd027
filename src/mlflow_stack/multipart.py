"""Write one S3 object from an async byte stream while it arrives.

Above one part it is a multipart upload with a few parts in flight, so memory stays bounded
by them; below, a single PUT. Any failure (the client went away, S3 refused a part) aborts the
multipart upload, leaving neither an object nor unfinished parts behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable
from typing import Any

log = logging.getLogger(__name__)

#: Part size: S3 needs >= 5 MiB (but the last) and allows 10,000 parts (156 GiB).
PART_SIZE = 16 * 1024 * 1024
#: Parts uploading while the next one fills: at most (PARTS_IN_FLIGHT + 1) x PART_SIZE held.
PARTS_IN_FLIGHT = 2


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
        self.parts: list[dict[str, Any]] = []
        self.in_flight: set[asyncio.Task[None]] = set()

    async def run(self, chunks: AsyncIterable[bytes]) -> None:
        buffer = bytearray()
        try:
            async for chunk in chunks:
                buffer += chunk
                while len(buffer) >= PART_SIZE:
                    part = bytes(buffer[:PART_SIZE])
                    del buffer[:PART_SIZE]
                    await self._send_part(part)
            if self.upload_id is None:  # smaller than one part: a plain PUT
                await asyncio.to_thread(
                    self.client.put_object, Body=bytes(buffer), **self.target, **self.object_args
                )
                return
            if buffer:
                await self._send_part(bytes(buffer))
            await self._drain(everything=True)
            self.parts.sort(key=lambda part: part["PartNumber"])
            await asyncio.to_thread(
                self.client.complete_multipart_upload,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
                **self.target,
                **self.owner_args,
            )
        except BaseException:
            await self._abort()
            raise

    async def _send_part(self, body: bytes) -> None:
        if self.upload_id is None:
            created = await asyncio.to_thread(
                self.client.create_multipart_upload, **self.target, **self.object_args
            )
            self.upload_id = created["UploadId"]
        await self._drain(everything=False)
        number = len(self.parts) + len(self.in_flight) + 1
        self.in_flight.add(asyncio.create_task(self._upload_part(number, body)))

    async def _upload_part(self, number: int, body: bytes) -> None:
        answer = await asyncio.to_thread(
            self.client.upload_part,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=body,
            **self.target,
            **self.owner_args,
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def _drain(self, *, everything: bool) -> None:
        """Wait until a slot is free (or all parts are done); re-raise a part's failure."""
        while self.in_flight and (everything or len(self.in_flight) >= PARTS_IN_FLIGHT):
            done, self.in_flight = await asyncio.wait(
                self.in_flight, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                task.result()

    async def _abort(self) -> None:
        for task in self.in_flight:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self.in_flight, return_exceptions=True)
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
