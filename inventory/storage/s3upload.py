"""Streaming upload of one object to S3: one PUT when it is small, else a multipart upload with
a bounded number of parts in flight.

Nothing is visible under the key until the upload completes: a PUT is atomic, and a multipart
upload exists only as an upload id until ``complete_multipart_upload``. The size and adler32 are
checked against the expected values just before that call, and any failure (a part refused, a
mismatch, the endpoint gone, cancellation) aborts the upload. If the endpoint is gone the abort
cannot reach it; the parts stay invisible and ``S3Backend.purge_partial`` removes them later.

Memory is bounded by ``(max_concurrency + 1) * part_size``. Each part carries Content-MD5, so the
server refuses a part damaged on the way (reported as ``ChecksumMismatch`` on the target side).
The checksum is stored as ``x-amz-meta-adler32`` so ``stat`` and server-side copies can use it;
a multipart upload learns its metadata before the first byte, so there it is stored only when
the caller gave the expected checksum (which is then verified before completion).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import suppress
from typing import Any

from inventory.storage.base import WriteResult, check_expected
from inventory.storage.checksum import Adler32
from inventory.storage.errors import StorageError
from inventory.storage.s3client import MAX_PARTS, MiB, S3Settings

META_CHECKSUM = "adler32"


def part_size_for(settings: S3Settings, size_hint: int | None) -> int:
    """The configured part size, grown in whole MiB when the object would need too many."""
    size = settings.part_size
    if size_hint and size_hint > size * (MAX_PARTS - 100):
        size = -(-size_hint // ((MAX_PARTS - 100) * MiB)) * MiB
    return size


async def _parts(chunks: AsyncIterable[bytes], part_size: int) -> AsyncIterator[list[bytes]]:
    """Regroup the stream into parts of at least ``part_size`` bytes (the last may be less),
    each a list of chunks that ``_prepare`` joins in a worker thread.

    Parts are made of whole chunks rather than cut at exactly ``part_size``, so each byte is
    copied once; S3 only asks for a 5 MiB minimum, not equal parts.
    """
    pending: list[bytes] = []
    held = 0
    async for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= part_size:
            yield pending
            pending, held = [], 0
    if held:
        yield pending


def _prepare(chunks: list[bytes], summer: Adler32, md5: bool) -> tuple[bytes, str | None]:
    """Join a part, update the running adler32 and compute the part's Content-MD5: the
    byte-crunching of an upload, done in a worker thread so the event loop never waits on it."""
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    summer.update(data)
    return data, (base64.b64encode(hashlib.md5(data).digest()).decode() if md5 else None)


class Upload:
    """One object upload; ``run`` does it all and returns what was stored."""

    def __init__(self, client: Any, settings: S3Settings, key: str, path: str) -> None:
        self.client = client
        self.settings = settings
        self.key = key
        self.path = path
        self.summer = Adler32()

    async def run(self, chunks: AsyncIterable[bytes], size_hint: int | None,
                  expected_size: int | None, expected_checksum: str | None) -> WriteResult:
        parts = _parts(chunks, part_size_for(self.settings, size_hint))
        try:
            first = await anext(parts, [])
            second = await anext(parts, None)
            if second is None:
                return await self._put(first, expected_size, expected_checksum)
            return await self._multipart(first, second, parts, expected_size, expected_checksum)
        finally:
            await parts.aclose()

    def _md5_arg(self, md5: str | None) -> dict[str, str]:
        return {"ContentMD5": md5} if md5 else {}

    async def _put(self, chunks: list[bytes], expected_size: int | None,
                   expected_checksum: str | None) -> WriteResult:
        data, md5 = await asyncio.to_thread(_prepare, chunks, self.summer,
                                            self.settings.content_md5)
        result = WriteResult(len(data), self.summer.hexdigest())
        check_expected(result.size, result.checksum, expected_size=expected_size,
                       expected_checksum=expected_checksum, path=self.path)
        await self.client.put_object(Bucket=self.settings.bucket, Key=self.key, Body=data,
                                     Metadata={META_CHECKSUM: result.checksum},
                                     **self._md5_arg(md5))
        return result

    async def _multipart(self, first: list[bytes], second: list[bytes],
                         rest: AsyncIterator[list[bytes]],
                         expected_size: int | None,
                         expected_checksum: str | None) -> WriteResult:
        bucket = self.settings.bucket
        metadata = {META_CHECKSUM: expected_checksum} if expected_checksum else {}
        created = await self.client.create_multipart_upload(Bucket=bucket, Key=self.key,
                                                            Metadata=metadata)
        upload_id = created["UploadId"]
        slots = asyncio.Semaphore(self.settings.max_concurrency)
        etags: dict[int, str] = {}
        tasks: list[asyncio.Task[None]] = []

        async def send(number: int, data: bytes, md5: str | None) -> None:
            try:
                answer = await self.client.upload_part(
                    Bucket=bucket, Key=self.key, UploadId=upload_id, PartNumber=number,
                    Body=data, **self._md5_arg(md5))
                etags[number] = answer["ETag"]
            finally:
                slots.release()

        async def all_parts() -> AsyncIterator[list[bytes]]:
            yield first
            yield second
            async for part in rest:
                yield part

        try:
            size = 0
            async for chunks in all_parts():
                await slots.acquire()
                for task in tasks:  # fail fast: a refused part ends the upload now
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if len(tasks) >= MAX_PARTS:
                    raise StorageError(f"more than {MAX_PARTS} parts; raise part_size",
                                       path=self.path)
                data, md5 = await asyncio.to_thread(_prepare, chunks, self.summer,
                                                    self.settings.content_md5)
                size += len(data)
                tasks.append(asyncio.create_task(send(len(tasks) + 1, data, md5)))
                del data, chunks
            await asyncio.gather(*tasks)
            result = WriteResult(size, self.summer.hexdigest())
            check_expected(size, result.checksum, expected_size=expected_size,
                           expected_checksum=expected_checksum, path=self.path)
            await self.client.complete_multipart_upload(
                Bucket=bucket, Key=self.key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"ETag": etags[n], "PartNumber": n}
                                           for n in sorted(etags)]})
            return result
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with suppress(Exception):  # unreachable: purge_partial removes the parts later
                await asyncio.shield(self.client.abort_multipart_upload(
                    Bucket=bucket, Key=self.key, UploadId=upload_id))
            raise
