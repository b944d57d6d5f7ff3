"""S3 storage: objects are keys under a bucket prefix, through aiobotocore.

``root`` and ``config`` map to ``S3Settings`` (see ``s3client``); uploads are in ``s3upload``.
Within one endpoint and identity, copies are server-side (``copy_object``) when the source
carries the adler32 recorded by our own write: the server copies the bytes, and the recorded
checksum (compared with the expected one first) stands for them. A source without a recorded
checksum is streamed through this process so its checksum can be computed and verified.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import botocore.exceptions as bce

from inventory.storage.base import (
    Backend,
    Entry,
    ObjectInfo,
    Reader,
    WriteResult,
    check_expected,
)
from inventory.storage.checksum import normalize
from inventory.storage.errors import SizeMismatch, StorageError, tag
from inventory.storage.paths import check_prefix, join_key
from inventory.storage.s3client import ClientHolder, S3Settings, translate
from inventory.storage.s3upload import META_CHECKSUM, Upload, check_free, conditional

READ_CHUNK = 1 << 20
MAX_COPY_OBJECT = 5 << 30  # larger sources need UploadPartCopy; they are streamed instead


def _recorded(metadata: Mapping[str, str] | None) -> str | None:
    value = (metadata or {}).get(META_CHECKSUM)
    try:
        return normalize(value) if value else None
    except ValueError:
        return None


async def _tolerate_no_such_upload(pages: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Pages of ListMultipartUploads; some servers (rclone's gofakes3) answer NoSuchUpload
    instead of an empty list when a bucket never had an upload."""
    try:
        async for page in pages:
            yield page
    except bce.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise


class S3Backend(Backend):
    """Objects under ``s3://bucket/prefix`` at one endpoint."""

    kind = "s3"

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._clients = ClientHolder(settings)
        self._where = settings.where
        self._root_prefix = f"{settings.prefix}/" if settings.prefix else ""

    @classmethod
    def from_storage(cls, root: str, config: Mapping[str, Any] | None = None) -> S3Backend:
        return cls(S3Settings.parse(root, config))

    def __repr__(self) -> str:
        return f"S3Backend({self._where}/{self.settings.prefix})"

    def _key(self, path: str) -> str:
        return join_key(self.settings.prefix, path)

    async def _head(self, path: str) -> dict[str, Any]:
        key = self._key(path)
        client = await self._clients.get()
        with translate(path, self._where):
            return await client.head_object(Bucket=self.settings.bucket, Key=key)

    async def stat(self, path: str) -> ObjectInfo:
        head = await self._head(path)
        return ObjectInfo(head["ContentLength"], head["LastModified"].timestamp(),
                          _recorded(head.get("Metadata")))

    @asynccontextmanager
    async def open_read(self, path: str) -> AsyncIterator[Reader]:
        key = self._key(path)
        client = await self._clients.get()
        with translate(path, self._where):
            answer = await client.get_object(Bucket=self.settings.bucket, Key=key)
        body = answer["Body"]
        info = ObjectInfo(answer["ContentLength"], answer["LastModified"].timestamp(),
                          _recorded(answer.get("Metadata")))
        chunks = self._chunks(body, path)
        try:
            yield Reader(info, chunks)
        finally:
            await chunks.aclose()
            body.close()

    async def _chunks(self, body: Any, path: str) -> AsyncIterator[bytes]:
        # iter_chunks checks Content-Length at the end: a cut-off response is an error
        with translate(path, self._where):
            async for chunk in body.iter_chunks(READ_CHUNK):
                yield chunk

    async def write(self, path: str, chunks: AsyncIterable[bytes], size_hint: int | None = None,
                    *, expected_size: int | None = None,
                    expected_checksum: str | None = None,
                    exclusive: bool = False) -> WriteResult:
        key = self._key(path)
        upload = Upload(await self._clients.get(), self.settings, key, path, exclusive)
        with translate(path, self._where):
            return await upload.run(chunks, size_hint, expected_size, expected_checksum)

    async def copy_from(self, src: Backend, src_path: str, path: str, *,
                        expected_size: int | None,
                        expected_checksum: str | None,
                        exclusive: bool = False) -> WriteResult | None:
        if not isinstance(src, S3Backend) or not self.settings.same_endpoint(src.settings):
            return None
        try:
            head = await src._head(src_path)
        except StorageError as exc:  # the source's, not this (target) storage's
            raise tag(exc, "source") from None
        size, recorded = head["ContentLength"], _recorded(head.get("Metadata"))
        check_expected(size, recorded, expected_size=expected_size,
                       expected_checksum=expected_checksum, path=src_path)
        if recorded is None or size > MAX_COPY_OBJECT:
            return None
        client = await self._clients.get()
        with translate(path, self._where):
            if exclusive:
                await check_free(client, self.settings.bucket, self._key(path), path)
            await conditional(
                client.copy_object, path, exclusive,
                Bucket=self.settings.bucket, Key=self._key(path), MetadataDirective="COPY",
                CopySource={"Bucket": src.settings.bucket, "Key": src._key(src_path)},
                CopySourceIfMatch=head["ETag"])
        copied = await self.stat(path)
        if copied.size != size:
            await self.delete(path)
            raise SizeMismatch(f"server-side copy holds {copied.size} bytes, not {size}",
                               side="target", expected=size, actual=copied.size, path=path)
        return WriteResult(size, recorded)

    async def delete(self, path: str) -> None:
        key = self._key(path)
        client = await self._clients.get()
        with translate(path, self._where):
            await client.delete_object(Bucket=self.settings.bucket, Key=key)

    async def list(self, prefix: str = "") -> AsyncIterator[Entry]:
        check_prefix(prefix)
        client = await self._clients.get()
        strip = len(self._root_prefix)
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.bucket, Prefix=self._root_prefix + prefix,
            PaginationConfig={"PageSize": self.settings.list_page_size})
        with translate(prefix, self._where):
            async for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    if not key.endswith("/"):  # directory markers are not objects
                        yield Entry(key[strip:], obj["Size"], obj["LastModified"].timestamp())

    async def purge_partial(self, older_than: float) -> int:
        client = await self._clients.get()
        cutoff = time.time() - older_than
        removed = 0
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.settings.bucket, Prefix=self._root_prefix)
        with translate(None, self._where):
            async for page in _tolerate_no_such_upload(pages):
                for upload in page.get("Uploads", ()):
                    if (upload["Key"].startswith(self._root_prefix)
                            and upload["Initiated"].timestamp() < cutoff):
                        removed += await self._abort(client, upload["Key"], upload["UploadId"])
        return removed

    async def _abort(self, client: Any, key: str, upload_id: str) -> int:
        try:
            await client.abort_multipart_upload(Bucket=self.settings.bucket, Key=key,
                                                UploadId=upload_id)
        except bce.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return 0  # finished or aborted meanwhile
            raise
        return 1

    async def close(self) -> None:
        await self._clients.close()
