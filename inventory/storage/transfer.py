"""Copy one object between any two backends, verified before the target becomes visible.

``copy`` is what the file-operations engine calls for every replica copy. It first lets the
target try a fast path for this pair (``Backend.copy_from``: the kernel's copy_file_range between
POSIX directories, a server-side copy within one S3 endpoint); otherwise it streams the source
into ``target.write``. Either way the checksum is computed from the bytes as they pass (never a
second read of the source), and size and checksum are compared with the expected values before
the target is renamed into place or the upload completed: on a mismatch nothing is left at the
target and the error's ``side`` says which copy is wrong.

A copy never writes over a file that is not its own: unless told to ``replace`` (a consistency
re-copy of a replica's own missing or damaged file), the target must be free, and the backend
writes exclusively (``Backend.write``). One exception: a file already at the target with exactly
the expected size and checksum is what an earlier attempt of this same copy completed before its
server died (nothing else may name that path: the inventory gives each file one replica), so it
is accepted, verified, instead of failing a copy that is in fact done.

Every error leaving ``copy`` says which storage raised it (``StorageError.side``): reading the
source (opening, stat, its chunks as they stream) is the source's, anything else the target
backend raised while writing is the target's. The engine charges that side only: a target
bucket that does not exist is never a "source not found".
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import NamedTuple

from inventory.storage.base import Backend, ObjectInfo, Reader, check_expected, exists_error
from inventory.storage.checksum import Adler32, normalize
from inventory.storage.errors import NotFound, Side, StorageError, tag


class CopyResult(NamedTuple):
    """What the target now holds, verified, and how long the copy took."""

    size: int
    checksum: str
    seconds: float


async def copy(src: Backend, src_path: str, dst: Backend, dst_path: str, *,
               expected_size: int | None = None,
               expected_checksum: str | None = None, replace: bool = False) -> CopyResult:
    """Copy ``src_path`` on ``src`` to ``dst_path`` on ``dst``, verified.

    ``expected_size``/``expected_checksum`` are the item's (from the inventory); without them
    the copy is checked only against the source's own size. Raises ``StorageError`` subclasses:
    ``NotFound`` (source missing), ``SizeMismatch``/``ChecksumMismatch`` with ``side``,
    ``Unreachable``, ``StorageFull``, ``PermissionDenied``, ``PathConflict`` (also: the target
    exists and is not this copy's), ``InvalidPath``.
    """
    started = time.monotonic()
    if expected_checksum is not None:
        expected_checksum = normalize(expected_checksum)
    if not replace:
        with _raised_by("target"):
            existing = await _stat_or_none(dst, dst_path)
        if existing is not None:
            size, checksum = await _adopt(src, src_path, dst, dst_path, existing,
                                          expected_size, expected_checksum)
            return CopyResult(size, checksum, time.monotonic() - started)
    exclusive = not replace
    with _raised_by("target"):  # a fast path tags what it read from the source itself
        result = await dst.copy_from(src, src_path, dst_path, expected_size=expected_size,
                                     expected_checksum=expected_checksum, exclusive=exclusive)
    if result is None:
        async with _read_source(src, src_path) as reader:
            info = reader.info
            # a recorded checksum or the size already says the source is wrong: do not copy
            check_expected(info.size, info.checksum, expected_size=expected_size,
                           expected_checksum=expected_checksum, path=src_path)
            async with aclosing(_source_chunks(reader)) as chunks:
                with _raised_by("target"):
                    result = await dst.write(
                        dst_path, chunks, size_hint=info.size,
                        expected_size=info.size if expected_size is None else expected_size,
                        expected_checksum=expected_checksum, exclusive=exclusive)
    return CopyResult(result.size, result.checksum, time.monotonic() - started)


@contextmanager
def _raised_by(side: Side) -> Iterator[None]:
    """A storage error raised in the block is ``side``'s, unless it already names one."""
    try:
        yield
    except StorageError as exc:
        tag(exc, side)
        raise


async def _source_chunks(reader: Reader) -> AsyncIterator[bytes]:
    """The source's chunks, an error reading them marked as the source's before the target's
    ``write`` sees it (a source cut off mid-read is not the target's failure)."""
    with _raised_by("source"):
        async for chunk in reader:
            yield chunk


@asynccontextmanager
async def _read_source(src: Backend, path: str) -> AsyncIterator[Reader]:
    """``src.open_read``, an error opening it marked as the source's (``tag``)."""
    entered = False
    try:
        async with src.open_read(path) as reader:
            entered = True
            yield reader
    except StorageError as exc:
        if not entered:
            raise tag(exc, "source") from None
        raise


async def _stat_or_none(backend: Backend, path: str) -> ObjectInfo | None:
    try:
        return await backend.stat(path)
    except NotFound:
        return None


async def _checksum_of(backend: Backend, path: str, info: ObjectInfo) -> str:
    """The object's adler32: recorded by our own write when still valid, else read in full."""
    if info.checksum is not None:
        return info.checksum
    summer = Adler32()
    async with backend.open_read(path) as reader:
        async for chunk in reader:
            summer.update(chunk)
    return summer.hexdigest()


async def _adopt(src: Backend, src_path: str, dst: Backend, dst_path: str,
                 existing: ObjectInfo, expected_size: int | None,
                 expected_checksum: str | None) -> tuple[int, str]:
    """Accept the file at the target as this copy's if it has exactly the expected size and
    checksum (the source's, when the item records none); else ``PathConflict``."""
    if expected_size is None or expected_checksum is None:
        with _raised_by("source"):
            source = await src.stat(src_path)
            if expected_size is None:
                expected_size = source.size
            if expected_checksum is None and existing.size == expected_size:
                expected_checksum = await _checksum_of(src, src_path, source)
    if existing.size != expected_size:
        raise exists_error(dst_path, f" (it has {existing.size} bytes, this copy "
                                     f"{expected_size})")
    with _raised_by("target"):
        checksum = await _checksum_of(dst, dst_path, existing)
    if checksum != expected_checksum:
        raise exists_error(dst_path, f" (its adler32 is {checksum}, this copy's "
                                     f"{expected_checksum})")
    return existing.size, checksum
