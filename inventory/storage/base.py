"""The one interface every storage backend implements, and the values it returns.

The file-operations engine talks only to ``Backend``: it never needs to know whether a path is a
file or an S3 key. Paths are item paths relative to the storage root (``inventory.storage.paths``
checks them). All methods are coroutines and never block the event loop: POSIX backends run
system calls in their own thread pool, S3 backends use aiobotocore.

Contract for ``write``: bytes become visible at ``path`` all at once, and only after the whole
stream arrived, matched ``expected_size``/``expected_checksum`` when given, and is durable; on any
failure (including cancellation) nothing new is visible at ``path`` and no temporary object is
left behind when the storage is still reachable. With ``exclusive=True`` (every copy the engine
makes of a new replica) the bytes never replace an existing object: if one is at ``path`` when
the write would make its bytes visible, ``PathConflict`` is raised ("exists and is not this
copy's") and nothing changes at ``path``.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import NamedTuple

from inventory.storage.checksum import Adler32
from inventory.storage.errors import (
    ChecksumMismatch,
    PathConflict,
    Side,
    SizeMismatch,
    StorageError,
)

STAT_CONCURRENCY = 64  # stats in flight at once in the default ``stat_many`` (S3: HEADs)


class ObjectInfo(NamedTuple):
    """What ``stat`` tells about a stored object; ``checksum`` only when it is cheap to know
    (recorded by our own write in an xattr or S3 metadata, and still valid)."""

    size: int
    mtime: float
    checksum: str | None = None


class WriteResult(NamedTuple):
    """Size and adler32 of what was written, computed from the bytes as they streamed."""

    size: int
    checksum: str


class Entry(NamedTuple):
    """One listed object: item path relative to the root, size in bytes, mtime (epoch s)."""

    path: str
    size: int
    mtime: float


class Space(NamedTuple):
    """Bytes used and free on the storage's file system."""

    used: int
    free: int


@dataclass(slots=True)
class Reader:
    """An object opened for reading: its metadata as of opening, and its bytes as chunks.

    Iterating yields non-empty ``bytes`` chunks in order. Use through ``Backend.open_read``,
    which closes the underlying file or HTTP response however the iteration ends.
    """

    info: ObjectInfo
    chunks: AsyncIterator[bytes]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks


class Backend(abc.ABC):
    """A storage: a POSIX directory or an S3 bucket/prefix."""

    kind: str = ""

    @abc.abstractmethod
    async def stat(self, path: str) -> ObjectInfo:
        """Size, mtime and (when cheap) checksum; raises ``NotFound`` if there is no object."""

    async def stat_many(self, paths: Sequence[str]) -> list[ObjectInfo | StorageError]:
        """``stat`` of each path, in order, a failure in the place of its answer: for ingest,
        which checks thousands of payloads per request. This default runs up to
        ``STAT_CONCURRENCY`` stats at once (S3 HEADs); POSIX does a batch per thread-pool call."""
        gate = asyncio.Semaphore(STAT_CONCURRENCY)

        async def one(path: str) -> ObjectInfo | StorageError:
            async with gate:
                try:
                    return await self.stat(path)
                except StorageError as exc:
                    return exc

        return list(await asyncio.gather(*(one(p) for p in paths)))

    async def checksum(self, path: str) -> WriteResult:
        """Size and adler32 of the object, computed from its bytes as they stream (never the
        whole object in memory); raises ``NotFound`` if there is none."""
        summer, size = Adler32(), 0
        async with self.open_read(path) as reader:
            async for chunk in reader:
                summer.update(chunk)
                size += len(chunk)
        return WriteResult(size, summer.hexdigest())

    @abc.abstractmethod
    def open_read(self, path: str) -> AbstractAsyncContextManager[Reader]:
        """``async with backend.open_read(p) as reader:`` then ``async for chunk in reader``.

        Raises ``NotFound`` on entering if there is no object.
        """

    @abc.abstractmethod
    async def write(self, path: str, chunks: AsyncIterable[bytes], size_hint: int | None = None,
                    *, expected_size: int | None = None,
                    expected_checksum: str | None = None,
                    exclusive: bool = False) -> WriteResult:
        """Store the streamed bytes at ``path`` atomically (see the module docstring); with
        ``exclusive``, never over an existing object.

        ``size_hint`` only tunes the transfer (single PUT or multipart, part size). With
        ``expected_size``/``expected_checksum``, a stream that does not match raises
        ``SizeMismatch``/``ChecksumMismatch`` (side ``"source"``) and nothing becomes visible.
        """

    @abc.abstractmethod
    async def delete(self, path: str) -> None:
        """Remove the object. Deleting a missing object is not an error (S3 cannot tell the
        difference without another request, and a retried deletion must succeed)."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[Entry]:
        """Every object whose path starts with ``prefix``, streamed in code point order of the
        path (S3's order), so a listing can be merge-diffed against a sorted inventory.
        Temporary objects of writes in progress are not listed."""

    async def space(self) -> Space | None:
        """Used and free bytes where the backend can tell, else None."""
        return None

    async def purge_partial(self, older_than: float) -> int:
        """Remove leftovers of writes that died (a killed server): temporary files or
        unfinished multipart uploads started more than ``older_than`` seconds ago. Returns how
        many were removed. Call it at start-up and now and then."""
        return 0

    async def copy_from(self, src: Backend, src_path: str, path: str, *,
                        expected_size: int | None,
                        expected_checksum: str | None,
                        exclusive: bool = False) -> WriteResult | None:
        """A fast path for copying from ``src`` (kernel copy, server-side copy), with the same
        guarantees as ``write``; None when there is none for this pair and a stream copy must
        be used."""
        return None

    def stop_long_reads(self) -> None:
        """The server is stopping: whole-file reads in threads (checksums) end at their next
        chunk instead of holding the shutdown. Async streams need nothing: they are cancelled."""
        return None

    async def close(self) -> None:
        """Release connections and threads; the backend is unusable afterwards."""
        return None

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def check_expected(size: int, checksum: str | None, *, expected_size: int | None,
                   expected_checksum: str | None, path: str, side: Side = "source") -> None:
    """Raise ``SizeMismatch`` or ``ChecksumMismatch`` if what was seen differs from what was
    expected. Size first: a truncated file has the wrong checksum too, and "it is short" is the
    more useful message."""
    if expected_size is not None and size != expected_size:
        raise SizeMismatch(f"{side} has {size} bytes, expected {expected_size}", side=side,
                           expected=expected_size, actual=size, path=path)
    if expected_checksum is not None and checksum is not None and checksum != expected_checksum:
        raise ChecksumMismatch(f"{side} adler32 is {checksum}, expected {expected_checksum}",
                               side=side, expected=expected_checksum, actual=checksum,
                               path=path)


def exists_error(path: str, detail: str = "") -> PathConflict:
    """The error of an exclusive write that found an object at its path: a copy never writes
    over a file that is not its own (another replica's, or one nobody registered)."""
    return PathConflict(f"{path} exists and is not this copy's{detail}: not overwritten",
                        path=path)
