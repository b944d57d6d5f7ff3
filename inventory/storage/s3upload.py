"""Streaming upload of one object to S3: one PUT up to ``multipart_threshold`` bytes, else a
multipart upload with a bounded number of parts in flight.

Nothing is visible under the key until the upload completes: a PUT is atomic, and a multipart
upload exists only as an upload id until ``complete_multipart_upload``. The size and adler32 are
checked against the expected values just before the PUT's last bytes leave or before that call,
and any failure (a part refused, a mismatch, the endpoint gone, cancellation) aborts the upload.
If the endpoint is gone the abort cannot reach it; the parts stay invisible and
``S3Backend.purge_partial`` removes them later.

Three ways, by size (``size_hint``, the source's size):

- up to ``part_size``: the object is joined in memory and sent in one PUT with Content-MD5, so
  the server refuses a body damaged on the way (``ChecksumMismatch`` on the target side);
- up to ``multipart_threshold`` (default 200 MiB, as rclone's upload cutoff): one *streaming*
  PUT. The chunks go out as they are read, with no join and no buffering beyond one chunk
  (Content-MD5 cannot be sent, it would need the whole body first). adler32 and MD5 are computed
  in a worker thread while the previous chunk is being sent; the last chunk is held back until
  the size and adler32 matched, so a wrong source ends the request short and the server stores
  nothing. The server's ETag (the MD5 of what it stored, for a plain PUT) is compared with the
  MD5 of what was sent: a mismatch deletes the object and raises ``ChecksumMismatch`` on the
  target side. (A damaged body is thus visible for the moment between the PUT and the delete,
  and is never reported as a good copy.)
  A signed payload (``sign_payload``, or ``content_md5`` off) needs the SHA-256 of the whole
  body before the request, so then these objects go multipart.
- larger, or of unknown size: multipart, parts of exactly ``part_size`` (at least ``MIN_PART``;
  the last may be smaller), each with Content-MD5. Memory is bounded by
  ``(max_concurrency + 1) * part_size`` plus the source chunk being cut.

The checksum is stored as ``x-amz-meta-adler32`` so ``stat`` and server-side copies can use it;
streaming PUTs and multipart uploads send their metadata before the first byte, so there it is
stored only when the caller gave the expected checksum (which is then verified before the object
can appear).

An exclusive upload (``exclusive=True``: a copy never replaces a file that is not its own) asks
HEAD before the request that makes the object visible (the PUT, or the multipart completion)
and sends ``If-None-Match: *`` with it, so a server that implements conditional writes refuses
the race HEAD cannot see (rclone's ``serve s3`` ignores the header: there HEAD is the check).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import suppress
from typing import Any

import botocore.exceptions as bce

from inventory.storage.base import WriteResult, check_expected, exists_error
from inventory.storage.checksum import Adler32
from inventory.storage.errors import (
    ChecksumMismatch,
    PathConflict,
    SizeMismatch,
    StorageError,
    Unreachable,
)
from inventory.storage.s3client import MAX_PARTS, MiB, S3Settings

META_CHECKSUM = "adler32"


def part_size_for(settings: S3Settings, size_hint: int | None) -> int:
    """The configured part size, grown in whole MiB when the object would need too many."""
    size = settings.part_size
    if size_hint and size_hint > size * (MAX_PARTS - 100):
        size = -(-size_hint // ((MAX_PARTS - 100) * MiB)) * MiB
    return size


async def _parts(chunks: AsyncIterable[bytes],
                 part_size: int) -> AsyncIterator[list[bytes | memoryview]]:
    """Regroup the stream into parts of exactly ``part_size`` bytes (the last may be less),
    each a list of pieces that ``_prepare`` joins in a worker thread.

    A chunk larger than what the part still needs (a POSIX source reads 8 MiB at a time, the
    minimum part is 5 MiB) is cut with memoryview slices, not copied: an object just over
    ``part_size`` goes multipart as configured, and a part in memory is ``part_size``, not a
    whole number of chunks (issue 25).
    """
    pending: list[bytes | memoryview] = []
    held = 0
    async for chunk in chunks:
        start, size = 0, len(chunk)
        while start < size:
            take = min(size - start, part_size - held)
            pending.append(chunk if take == size else memoryview(chunk)[start:start + take])
            held += take
            start += take
            if held == part_size:
                yield pending
                pending, held = [], 0
    if held:
        yield pending


def _prepare(chunks: list[bytes | memoryview], summer: Adler32,
             md5: bool) -> tuple[bytes, str | None]:
    """Join a part, update the running adler32 and compute the part's Content-MD5: the
    byte-crunching of an upload, done in a worker thread so the event loop never waits on it."""
    whole = len(chunks) == 1 and isinstance(chunks[0], bytes)
    data = chunks[0] if whole else b"".join(chunks)
    summer.update(data)
    return data, (base64.b64encode(hashlib.md5(data).digest()).decode() if md5 else None)


def _code(exc: BaseException) -> str | None:
    return exc.response.get("Error", {}).get("Code") if isinstance(exc, bce.ClientError) else None


_TAKEN = ("PreconditionFailed", "412", "ConditionalRequestConflict")
_ABSENT = ("404", "NoSuchKey", "NotFound")


async def check_free(client: Any, bucket: str, key: str, path: str) -> None:
    """HEAD ``key``: ``PathConflict`` (exists and is not this copy's) if an object is there."""
    try:
        await client.head_object(Bucket=bucket, Key=key)
    except bce.ClientError as exc:
        if _code(exc) in _ABSENT:
            return
        raise
    raise exists_error(path)


async def conditional(call: Any, path: str, exclusive: bool, **kwargs: Any) -> Any:
    """``call(**kwargs)``, with ``IfNoneMatch="*"`` when ``exclusive``: a server that refuses
    it because the key exists raises ``PathConflict``."""
    if not exclusive:
        return await call(**kwargs)
    try:
        return await call(IfNoneMatch="*", **kwargs)
    except bce.ClientError as exc:
        if _code(exc) in _TAKEN:
            raise exists_error(path, " (it appeared while copying)") from None
        raise


def _cause(exc: BaseException, tasks: list[asyncio.Task[None]]) -> BaseException:
    """The error to report for a failed multipart upload. When the server refuses one part
    (BadDigest) and drops the upload, parts in flight get NoSuchUpload, possibly first: that is
    a consequence, the refused part is the cause."""
    if _code(exc) != "NoSuchUpload":
        return exc
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is not None and _code(error) not in (None, "NoSuchUpload"):
                return error
    return exc


class _StreamBody:
    """The body of a streaming PUT: the source's chunks, sent as they come and checked on the way.

    aiohttp sends it as an async iterable, with the Content-Length given to ``put_object``.
    ``read`` exists only because botocore recognises a streaming body by it; ``seek`` lets
    botocore retry a request that failed before the first chunk was taken, and refuses once
    the stream was consumed (it cannot be replayed: the PUT then fails and the engine retries
    the whole copy). A failure of the source or of the checks is kept in ``failure``: the
    request only sees a body cut short, the caller re-raises the real cause.
    """

    def __init__(self, chunks: AsyncIterable[bytes], length: int, summer: Adler32, md5: bool,
                 expected_checksum: str | None, path: str) -> None:
        self._chunks = chunks
        self.length = length
        self.summer = summer
        self.md5 = hashlib.md5() if md5 else None
        self.expected_checksum = expected_checksum
        self.path = path
        self.size = 0
        self.started = False
        self.failure: Exception | None = None

    def read(self, amt: int = -1) -> bytes:
        raise io.UnsupportedOperation("a streaming PUT body is sent by aiohttp, not read")

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset or whence or self.started:
            raise io.UnsupportedOperation("a streaming PUT cannot be replayed")
        return 0

    def _digest(self, chunk: bytes) -> None:
        self.summer.update(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Each chunk is hashed in a worker thread while the previous one is being sent; the
        last is held back until size and adler32 matched, so a wrong source never completes
        the request."""
        self.started = True
        hashing: asyncio.Future[None] | None = None
        held: bytes | None = None
        try:
            async for chunk in self._chunks:
                self.size += len(chunk)
                if self.size > self.length:
                    raise SizeMismatch(f"source has more than the {self.length} bytes announced",
                                       side="source", expected=self.length, actual=self.size,
                                       path=self.path)
                if hashing is not None:
                    await hashing
                hashing = asyncio.ensure_future(asyncio.to_thread(self._digest, chunk))
                if held is not None:
                    yield held
                held = chunk
            if hashing is not None:
                await hashing
            check_expected(self.size, self.summer.hexdigest(), expected_size=self.length,
                           expected_checksum=self.expected_checksum, path=self.path)
        except Exception as exc:
            self.failure = exc
            raise
        finally:
            if hashing is not None and not hashing.done():
                hashing.cancel()  # the thread finishes its chunk; nothing waits for it
        if held is not None:
            yield held


class Upload:
    """One object upload; ``run`` does it all and returns what was stored."""

    def __init__(self, client: Any, settings: S3Settings, key: str, path: str,
                 exclusive: bool = False) -> None:
        self.client = client
        self.settings = settings
        self.key = key
        self.path = path
        self.exclusive = exclusive
        self.summer = Adler32()

    async def _check_free(self) -> None:
        if self.exclusive:
            await check_free(self.client, self.settings.bucket, self.key, self.path)

    async def run(self, chunks: AsyncIterable[bytes], size_hint: int | None,
                  expected_size: int | None, expected_checksum: str | None) -> WriteResult:
        settings = self.settings
        if (size_hint is not None and settings.part_size < size_hint
                and size_hint <= settings.multipart_threshold
                and expected_size in (None, size_hint) and not settings.signs_payload):
            return await self._stream_put(chunks, size_hint, expected_checksum)
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

    async def _put(self, chunks: list[bytes | memoryview], expected_size: int | None,
                   expected_checksum: str | None) -> WriteResult:
        data, md5 = await asyncio.to_thread(_prepare, chunks, self.summer,
                                            self.settings.content_md5)
        result = WriteResult(len(data), self.summer.hexdigest())
        check_expected(result.size, result.checksum, expected_size=expected_size,
                       expected_checksum=expected_checksum, path=self.path)
        await self._check_free()
        await conditional(self.client.put_object, self.path, self.exclusive,
                          Bucket=self.settings.bucket, Key=self.key, Body=data,
                          Metadata={META_CHECKSUM: result.checksum}, **self._md5_arg(md5))
        return result

    async def _stream_put(self, chunks: AsyncIterable[bytes], size: int,
                          expected_checksum: str | None) -> WriteResult:
        body = _StreamBody(chunks, size, self.summer, self.settings.content_md5,
                           expected_checksum, self.path)
        metadata = {META_CHECKSUM: expected_checksum} if expected_checksum else {}
        await self._check_free()
        try:
            answer = await conditional(self.client.put_object, self.path, self.exclusive,
                                       Bucket=self.settings.bucket, Key=self.key, Body=body,
                                       ContentLength=size, Metadata=metadata)
        except PathConflict:
            raise
        except Exception as exc:
            if body.failure is not None:  # the source or the checks cut the body short
                raise body.failure from None
            if isinstance(exc, bce.UnseekableStreamError):  # botocore wanted to retry
                raise Unreachable(
                    f"S3 endpoint failed during a streaming PUT, which cannot be replayed "
                    f"({self.settings.where})",
                    path=self.path) from None
            raise
        # the last chunk left only after the checks passed: the server has exactly those bytes
        result = WriteResult(body.size, self.summer.hexdigest())
        if body.md5 is not None:
            sent = body.md5.hexdigest()
            stored = str(answer.get("ETag", "")).strip('"').lower()
            if stored != sent:
                with suppress(Exception):
                    await asyncio.shield(self.client.delete_object(
                        Bucket=self.settings.bucket, Key=self.key))
                raise ChecksumMismatch(
                    f"the server stored a body with MD5 (ETag) {stored or 'missing'}, "
                    f"not the {sent} sent; object deleted", side="target", expected=sent,
                    actual=stored, path=self.path)
        return result

    async def _multipart(self, first: list[bytes | memoryview], second: list[bytes | memoryview],
                         rest: AsyncIterator[list[bytes | memoryview]],
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

        async def all_parts() -> AsyncIterator[list[bytes | memoryview]]:
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
            await self._check_free()
            await conditional(
                self.client.complete_multipart_upload, self.path, self.exclusive,
                Bucket=bucket, Key=self.key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"ETag": etags[n], "PartNumber": n}
                                           for n in sorted(etags)]})
            return result
        except BaseException as exc:
            if _code(exc) == "NoSuchUpload":  # see _cause: let the other parts tell why
                await asyncio.wait(tasks, timeout=self.settings.connect_timeout)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with suppress(Exception):  # unreachable: purge_partial removes the parts later
                await asyncio.shield(self.client.abort_multipart_upload(
                    Bucket=bucket, Key=self.key, UploadId=upload_id))
            cause = _cause(exc, tasks)
            if cause is exc:
                raise
            raise cause from None
