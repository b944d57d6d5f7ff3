"""Copy one object between any two backends, verified before the target becomes visible.

``copy`` is what the file-operations engine calls for every replica copy. It first lets the
target try a fast path for this pair (``Backend.copy_from``: the kernel's copy_file_range between
POSIX directories, a server-side copy within one S3 endpoint); otherwise it streams the source
into ``target.write``. Either way the checksum is computed from the bytes as they pass (never a
second read of the source), and size and checksum are compared with the expected values before
the target is renamed into place or the upload completed: on a mismatch nothing is left at the
target and the error's ``side`` says which copy is wrong.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from inventory.storage.base import Backend, check_expected
from inventory.storage.checksum import normalize


class CopyResult(NamedTuple):
    """What the target now holds, verified, and how long the copy took."""

    size: int
    checksum: str
    seconds: float


async def copy(src: Backend, src_path: str, dst: Backend, dst_path: str, *,
               expected_size: int | None = None,
               expected_checksum: str | None = None) -> CopyResult:
    """Copy ``src_path`` on ``src`` to ``dst_path`` on ``dst``, verified.

    ``expected_size``/``expected_checksum`` are the item's (from the inventory); without them
    the copy is checked only against the source's own size. Raises ``StorageError`` subclasses:
    ``NotFound`` (source missing), ``SizeMismatch``/``ChecksumMismatch`` with ``side``,
    ``Unreachable``, ``StorageFull``, ``PermissionDenied``, ``PathConflict``, ``InvalidPath``.
    """
    started = time.monotonic()
    if expected_checksum is not None:
        expected_checksum = normalize(expected_checksum)
    result = await dst.copy_from(src, src_path, dst_path, expected_size=expected_size,
                                 expected_checksum=expected_checksum)
    if result is None:
        async with src.open_read(src_path) as reader:
            info = reader.info
            # a recorded checksum or the size already says the source is wrong: do not copy
            check_expected(info.size, info.checksum, expected_size=expected_size,
                           expected_checksum=expected_checksum, path=src_path)
            result = await dst.write(
                dst_path, reader, size_hint=info.size,
                expected_size=info.size if expected_size is None else expected_size,
                expected_checksum=expected_checksum)
    return CopyResult(result.size, result.checksum, time.monotonic() - started)
