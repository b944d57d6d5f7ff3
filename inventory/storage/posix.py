"""POSIX directory storage: objects are regular files under a root directory.

Every system call runs in the backend's own thread pool, so a slow disk or a hung NFS mount
never blocks the event loop, and blocking ``fsync`` calls cannot starve other users of the
default executor.

A write goes to ``.dlm-<random>.part`` in the target's directory, is fsynced, renamed over the
target (atomic on POSIX; an exclusive write, every copy of a new replica, uses
``renameat2(RENAME_NOREPLACE)`` or ``link`` instead, so an existing file is never replaced) and
the directory is fsynced: a reader sees the old object or the whole
new one, and after a crash either the rename is durable or only a temporary file remains, which
``list`` hides and ``purge_partial`` removes. The adler32 computed while writing is kept in the
``user.dlm.adler32`` xattr together with the size and mtime it belongs to, so ``stat`` can give
the checksum cheaply and ignores it once the file was changed behind our back.

POSIX to POSIX copies take the kernel path: per chunk, ``pread`` into a reused buffer feeds
adler32 (the page it reads is the one the copy needs, so the disk is read once) and
``copy_file_range`` moves the same range inside the kernel, falling back to ``sendfile`` and then
to writing the buffer. ``benchmarks/bench_copy.py`` measures this against a read+write loop
(``copy_method="read"``); see docs/copy-benchmark.md for why "kernel" is the default.

With fsync on, every write (copy or stream) starts the writeback of each ``writeback`` bytes as
soon as they are written (``sync_file_range(SYNC_FILE_RANGE_WRITE)`` on Linux: it queues the
writes and does not wait for them): the disk writes while the copy goes on instead of after it,
and the fsync before the rename only waits for the tail. The fsync still covers every page and
reports any write error.

A replica's file is a regular file reached WITHOUT any symlink below the root (the root itself
may be a symlink or sit under one). Two names reaching one file would make one replica's
deletion or copy act on another item's file, and the inventory's one-file-per-replica check
compares names (issue 15). So stats, reads, checksums, copies (both sides) and deletions refuse
a path whose file or any directory under the root is a symlink (``ThroughSymlink``, an
``InvalidPath``): deletions and reads walk the directories with ``openat(O_NOFOLLOW)``, so a
symlink planted after registration cannot redirect them; bulk stats ``lstat`` each directory of
a batch once.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import secrets
import stat as stat_mod
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from itertools import islice
from typing import Any, Literal, TypeVar

from inventory.storage.base import (
    Backend,
    Entry,
    ObjectInfo,
    Reader,
    Space,
    WriteResult,
    check_expected,
    exists_error,
)
from inventory.storage.checksum import Adler32
from inventory.storage.errors import (
    InvalidPath,
    NotFound,
    PathConflict,
    PermissionDenied,
    SizeMismatch,
    StorageError,
    StorageFull,
    ThroughSymlink,
    Unreachable,
    tag,
)
from inventory.storage.paths import RESERVED_PREFIX, check_name, check_prefix

T = TypeVar("T")
CopyMethod = Literal["kernel", "read"]

XATTR = "user.dlm.adler32"
TEMP_SUFFIX = ".part"
DEFAULT_CHUNK = 8 << 20
# The kernel copy's unit: the buffer pread fills for adler32 stays in the CPU cache, which
# measured 20-40% faster than 8 MiB chunks (docs/copy-benchmark.md).
COPY_CHUNK = 512 << 10
# With fsync on, writeback of what was written is started every this many bytes
# (sync_file_range), so the disk works during the copy and the final fsync waits for little:
# 20 x 100 MB went from 0.54x to 0.88x of plain cp's time; 2 MiB measured a little better than
# 1, 4 or 8 MiB (docs/copy-benchmark.md).
WRITEBACK_EVERY = 2 << 20
_SYNC_FILE_RANGE_WRITE = 2
_LIST_BATCH = 1000
# Directories below the root are opened one component at a time and never through a symlink.
_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
SYMLINK_REFUSAL = "reaches the file through a symlink"
STAT_BATCH = 2048  # paths per thread-pool call of stat_many


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_sync_file_range = _load_sync_file_range()


def _load_renameat2() -> Callable[..., int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a libc before glibc 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_renameat2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (``FileExistsError`` then), atomically:
    ``renameat2(RENAME_NOREPLACE)``, or where the file system lacks it, ``link`` (which never
    replaces) and ``unlink`` of the temporary name."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                      _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), dst)
    os.link(src, dst)
    with suppress(OSError):  # a leftover temporary file: purge_partial removes it
        os.unlink(src)


def _start_writeback(fd: int, offset: int, count: int) -> None:
    """Start writing ``count`` bytes at ``offset`` to disk without waiting for them (ctypes
    releases the GIL). Only a head start for the fsync that follows, which still waits for
    every page and reports any write error, so a failure here is ignored."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, count, _SYNC_FILE_RANGE_WRITE)

_ERRNO_CLASS: dict[int, type[StorageError]] = {
    errno.ENOENT: NotFound,
    errno.ENOSPC: StorageFull, errno.EDQUOT: StorageFull, errno.EFBIG: StorageFull,
    errno.EACCES: PermissionDenied, errno.EPERM: PermissionDenied,
    errno.EROFS: PermissionDenied,
    errno.ENOTDIR: PathConflict, errno.EEXIST: PathConflict, errno.EISDIR: PathConflict,
    errno.ENOTEMPTY: PathConflict, errno.ELOOP: ThroughSymlink,
    errno.ESTALE: Unreachable, errno.ETIMEDOUT: Unreachable, errno.ENOTCONN: Unreachable,
    errno.EHOSTDOWN: Unreachable, errno.ENODEV: Unreachable,
}


def make_root(root: str) -> list[str]:
    """Create a storage root and its missing parents (``dlm storage add --create-root``: the
    only place a root is ever created); returns the directories made, outermost first."""
    missing: list[str] = []
    current = os.path.abspath(root)
    while not os.path.isdir(current):
        if os.path.lexists(current):
            raise FileExistsError(errno.EEXIST, "in the way: not a directory", current)
        missing.append(current)
        current = os.path.dirname(current)
    made: list[str] = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except BaseException:
            unmake_root(made)
            raise
        made.append(directory)
    return made


def unmake_root(made: list[str]) -> None:
    """Undo ``make_root`` (the storage was not registered after all): remove the directories
    it made, innermost first, if they are still empty."""
    for directory in reversed(made):
        with suppress(OSError):
            os.rmdir(directory)


class _Stopped(Exception):
    """The awaiting task was cancelled; the copying thread stops at the next chunk."""


class _Temp:
    """A temporary file being written: closed and unlinked by ``discard`` unless committed."""

    __slots__ = ("fd", "flushed", "path", "written")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path: str | None = path
        self.written = 0  # bytes appended so far
        self.flushed = 0  # bytes whose writeback was started

    def discard(self) -> None:
        if self.fd >= 0:
            with suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self.path is not None:
            with suppress(OSError):
                os.unlink(self.path)
            self.path = None


def _is_temp(name: str) -> bool:
    return name.startswith(RESERVED_PREFIX) and name.endswith(TEMP_SUFFIX)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _recorded_checksum(fd: int, st: os.stat_result) -> str | None:
    """The checksum our write recorded, if the file still has that size and mtime."""
    try:
        value = os.getxattr(fd, XATTR).decode()
    except OSError:
        return None
    parts = value.split()
    if len(parts) == 3 and parts[1] == str(st.st_size) and parts[2] == str(st.st_mtime_ns):
        return parts[0]
    return None


class PosixBackend(Backend):
    """Objects as files under ``root``.

    ``fsync=False`` skips fsync (only for scratch storages whose contents may be lost in a
    crash); ``threads`` bounds concurrent system calls; ``chunk_size`` is the unit of reads,
    checksum updates and kernel copies; ``writeback`` is how many bytes are written between two
    starts of early writeback (0: none, the fsync at the end does it all).
    """

    kind = "posix"

    def __init__(self, root: str | os.PathLike[str], *, chunk_size: int = DEFAULT_CHUNK,
                 fsync: bool = True, threads: int = 8,
                 copy_method: CopyMethod = "kernel",
                 writeback: int = WRITEBACK_EVERY) -> None:
        if copy_method not in ("kernel", "read"):
            raise ValueError(f"copy_method must be 'kernel' or 'read', not {copy_method!r}")
        self.root = os.path.abspath(os.fspath(root))
        self._real_root = os.path.realpath(self.root)
        self.chunk_size = chunk_size
        self.fsync = fsync
        self.copy_method: CopyMethod = copy_method
        self.writeback = writeback if fsync and writeback > 0 else 0
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="dlm-posix")
        # Whole-file reads for checksums (verified ingest) hold a thread for as long as the
        # file takes: at most half the threads do that, so stats and copies keep the rest.
        self._checksum_gate = asyncio.Semaphore(max(1, threads // 2))
        self._closing = threading.Event()  # set by close: running checksum reads stop

    def __repr__(self) -> str:
        return f"PosixBackend({self.root!r})"

    # --- paths and errors -----------------------------------------------------------------

    def _full(self, path: str) -> str:
        return f"{self.root}/{check_name(path)}"

    def _check_inside(self, full: str, path: str) -> None:
        """Refuse a path that a symlink inside the root redirects outside it."""
        real = os.path.realpath(full)
        if real != self._real_root and not real.startswith(self._real_root + "/"):
            raise InvalidPath(f"path resolves outside the storage root ({real})", path=path)

    def _root_missing(self, path: str | None = None) -> StorageError:
        return Unreachable(f"storage root {self.root} is missing (not mounted?)", path=path)

    def _translate(self, exc: OSError, path: str | None) -> StorageError:
        cls = _ERRNO_CLASS.get(exc.errno or 0, StorageError)
        if cls is NotFound and not os.path.isdir(self.root):
            return self._root_missing(path)
        where = f" ({path})" if path else ""
        return cls(f"{exc.strerror or exc}{where} on {self.root}", path=path)

    async def _run(self, path: str | None, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except OSError as exc:
            raise self._translate(exc, path) from exc

    # --- reading --------------------------------------------------------------------------

    def _through_symlink(self, path: str, link: str) -> StorageError:
        where = "" if link == path else f" ({link} is a symlink)"
        return ThroughSymlink(f"{path} {SYMLINK_REFUSAL}{where} on {self.root}: a replica's "
                              "file must be a regular file reached without one", path=path)

    def _open_parent(self, path: str) -> tuple[int, str]:
        """The directory holding ``path``'s file, opened from the root one component at a time
        with ``O_NOFOLLOW`` (a symlinked directory is ``ThroughSymlink``), and the file's name.
        The caller closes the descriptor."""
        parts = check_name(path).split("/")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    child = os.open(part, _DIR_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        with suppress(OSError):
                            if stat_mod.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode):
                                raise self._through_symlink(
                                    path, "/".join(parts[:i + 1])) from None
                    raise
                os.close(fd)
                fd = child
            return fd, parts[-1]
        except BaseException:
            os.close(fd)
            raise

    def _open_source(self, path: str) -> tuple[int, ObjectInfo]:
        directory, name = self._open_parent(path)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=directory)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._through_symlink(path, path) from None
            raise
        finally:
            os.close(directory)
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise NotFound(f"{path} is not a regular file", path=path)
            return fd, ObjectInfo(st.st_size, st.st_mtime, _recorded_checksum(fd, st))
        except BaseException:
            os.close(fd)
            raise

    def _stat(self, path: str) -> ObjectInfo:
        fd, info = self._open_source(path)
        os.close(fd)
        return info

    async def stat(self, path: str) -> ObjectInfo:
        return await self._run(path, self._stat, path)

    def _stat_batch(self, paths: Sequence[str]) -> list[ObjectInfo | StorageError]:
        """Stats of many paths in one thread-pool call, as strict as ``_stat`` and cheaper: an
        ``lstat`` per file and one per directory the batch meets (``_symlink_dir``), no
        ``open``: a file or directory below the root that is a symlink is refused."""
        known: dict[str, str | None] = {"": None}
        out: list[ObjectInfo | StorageError] = []
        for path in paths:
            try:
                full = self._full(path)
                link = self._symlink_dir(path.rpartition("/")[0], known)
                if link is not None:
                    raise self._through_symlink(path, link)
                st = os.lstat(full)
                if stat_mod.S_ISLNK(st.st_mode):
                    raise self._through_symlink(path, path)
                if not stat_mod.S_ISREG(st.st_mode):
                    raise NotFound(f"{path} is not a regular file", path=path)
                out.append(ObjectInfo(st.st_size, st.st_mtime))
            except StorageError as exc:
                out.append(exc)
            except OSError as exc:
                out.append(self._translate(exc, path))
        return out

    def _symlink_dir(self, directory: str, known: dict[str, str | None]) -> str | None:
        """The first directory of ``directory`` (relative to the root) that is a symlink, or
        None. ``known`` remembers each directory of the batch; a missing one is no symlink
        (the file's ``lstat`` then reports it missing)."""
        if directory in known:
            return known[directory]
        link = self._symlink_dir(directory.rpartition("/")[0], known)
        if link is None:
            try:
                if stat_mod.S_ISLNK(os.lstat(f"{self.root}/{directory}").st_mode):
                    link = directory
            except OSError:
                pass
        known[directory] = link
        return link

    async def stat_many(self, paths: Sequence[str]) -> list[ObjectInfo | StorageError]:
        """Batches of ``STAT_BATCH`` paths, one thread-pool call each, the batches in parallel
        on the pool's threads (a slow NFS server answers several lookups at once)."""
        loop = asyncio.get_running_loop()
        parts = await asyncio.gather(*(
            loop.run_in_executor(self._pool, self._stat_batch, paths[i:i + STAT_BATCH])
            for i in range(0, len(paths), STAT_BATCH)))
        return [info for part in parts for info in part]

    @staticmethod
    async def stat_groups(groups: Sequence[tuple[PosixBackend, Sequence[str]]]
                          ) -> list[list[ObjectInfo | StorageError]]:
        """``stat_many`` of several POSIX storages' paths (one group per storage), in
        thread-pool calls of up to ``STAT_BATCH`` paths whatever their storage, on the first
        storage's pool: a bulk ingest spread over many storages then costs one thread
        hand-off per request of up to ``STAT_BATCH`` items instead of one per storage, and its
        stats no longer contend with each other for the GIL; a larger request still has
        several calls in flight (a slow NFS server answers several lookups at once)."""
        calls: list[list[tuple[int, PosixBackend, Sequence[str]]]] = [[]]
        room = STAT_BATCH
        for index, (backend, paths) in enumerate(groups):
            start = 0
            while start < len(paths):
                if room == 0:
                    calls.append([])
                    room = STAT_BATCH
                part = paths[start:start + room]
                calls[-1].append((index, backend, part))
                start += len(part)
                room -= len(part)
        out: list[list[ObjectInfo | StorageError]] = [[] for _ in groups]
        if not groups or not calls[0]:
            return out

        def run(call: list[tuple[int, PosixBackend, Sequence[str]]]
                ) -> list[list[ObjectInfo | StorageError]]:
            return [backend._stat_batch(part) for _, backend, part in call]

        loop = asyncio.get_running_loop()
        pool = groups[0][0]._pool
        answers = await asyncio.gather(*(loop.run_in_executor(pool, run, call)
                                         for call in calls))
        for call, parts in zip(calls, answers, strict=True):
            for (index, _, _), part in zip(call, parts, strict=True):
                out[index].extend(part)
        return out

    def _checksum_file(self, path: str, stop: threading.Event) -> WriteResult:
        fd, _info = self._open_source(path)
        try:
            summer, size = Adler32(), 0
            buffer = bytearray(min(self.chunk_size, COPY_CHUNK))
            view = memoryview(buffer)
            while count := os.readv(fd, [buffer]):
                if stop.is_set() or self._closing.is_set():
                    raise _Stopped
                summer.update(view[:count])
                size += count
            return WriteResult(size, summer.hexdigest())
        finally:
            os.close(fd)

    async def checksum(self, path: str) -> WriteResult:
        """The whole read and sum in one thread-pool call, through one reused buffer. A
        cancelled caller (a request that went away) or a closing backend (a server stopping)
        ends the read at the next chunk, instead of a 200 GB file holding a thread and the
        server's shutdown for minutes."""
        async with self._checksum_gate:
            stop = threading.Event()
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(self._pool, self._checksum_file, path, stop)
            try:
                return await asyncio.shield(job)
            except asyncio.CancelledError:
                stop.set()
                with suppress(BaseException):
                    await asyncio.wait([job])
                    job.exception()
                raise
            except _Stopped:
                raise Unreachable(f"{path}: the checksum read stopped: storage {self.root} is "
                                  "closing", path=path) from None
            except OSError as exc:
                raise self._translate(exc, path) from exc

    @asynccontextmanager
    async def open_read(self, path: str) -> AsyncIterator[Reader]:
        fd, info = await self._run(path, self._open_source, path)
        chunks = self._read_chunks(fd, path)
        try:
            yield Reader(info, chunks)
        finally:
            await chunks.aclose()
            await self._run(path, os.close, fd)

    async def _read_chunks(self, fd: int, path: str) -> AsyncIterator[bytes]:
        """Chunks from ``fd`` with one read always in flight, so the disk works while the
        consumer sends or writes the previous chunk."""
        loop = asyncio.get_running_loop()
        offset = 0
        pending = loop.run_in_executor(self._pool, os.pread, fd, self.chunk_size, offset)
        try:
            while True:
                try:
                    data = await pending
                except OSError as exc:
                    raise self._translate(exc, path) from exc
                if not data:
                    return
                offset += len(data)
                pending = loop.run_in_executor(self._pool, os.pread, fd, self.chunk_size, offset)
                yield data
        finally:
            # the fd is closed after this generator: the read in flight must be over by then
            with suppress(BaseException):
                await asyncio.wait([pending])
                pending.exception()

    # --- writing --------------------------------------------------------------------------

    def _make_parents(self, directory: str, path: str) -> None:
        """Create missing directories down to ``directory``, fsyncing each new entry.

        Only directories below the root: a missing root is an unmounted (or not yet made)
        volume, and creating it would fill the file system underneath instead (issue 15).
        """
        missing: list[str] = []
        current = directory
        while not os.path.isdir(current):
            if current == self.root or len(current) <= len(self.root):
                raise self._root_missing(path)
            if os.path.lexists(current):
                raise PathConflict(f"{current} is in the way: not a directory", path=path)
            missing.append(current)
            current = os.path.dirname(current)
        for created in reversed(missing):
            try:
                os.mkdir(created)
            except FileExistsError:
                if not os.path.isdir(created):
                    raise
                continue
            if self.fsync:
                self._fsync_dir(os.path.dirname(created))

    @staticmethod
    def _fsync_dir(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _refuse_symlinks(self, path: str) -> None:
        """Refuse a target whose file or an existing directory on its way below the root is a
        symlink (checked before any directory is made, so none is made through one)."""
        current = self.root
        parts = check_name(path).split("/")
        for i, part in enumerate(parts):
            current = f"{current}/{part}"
            try:
                st = os.lstat(current)
            except (FileNotFoundError, NotADirectoryError):
                return
            if stat_mod.S_ISLNK(st.st_mode):
                raise self._through_symlink(path, "/".join(parts[:i + 1]))

    def _create_temp(self, path: str) -> tuple[_Temp, str]:
        full = self._full(path)
        directory = os.path.dirname(full)
        self._refuse_symlinks(path)
        self._make_parents(directory, path)
        if os.path.isdir(full):
            raise PathConflict(f"{path} is a directory", path=path)
        tmp = f"{directory}/{RESERVED_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        return _Temp(fd, tmp), full

    def _append(self, temp: _Temp, batch: list[bytes], summer: Adler32) -> None:
        for chunk in batch:
            summer.update(chunk)
            _write_all(temp.fd, chunk)
            temp.written += len(chunk)
        if self.writeback and temp.written - temp.flushed >= self.writeback:
            _start_writeback(temp.fd, temp.flushed, temp.written - temp.flushed)
            temp.flushed = temp.written

    def _commit(self, temp: _Temp, full: str, result: WriteResult, path: str,
                exclusive: bool = False) -> None:
        """Check what the file system holds, record the checksum, make it durable, rename
        (with ``exclusive``, never over an existing file)."""
        st = os.fstat(temp.fd)
        if st.st_size != result.size:
            raise SizeMismatch(f"target holds {st.st_size} bytes, {result.size} were written",
                               side="target", expected=result.size, actual=st.st_size,
                               path=path)
        with suppress(OSError):  # no user xattrs on this file system: stat has no checksum
            os.setxattr(temp.fd, XATTR,
                        f"{result.checksum} {st.st_size} {st.st_mtime_ns}".encode())
        if self.fsync:
            os.fsync(temp.fd)
        os.close(temp.fd)
        temp.fd = -1
        assert temp.path is not None
        if exclusive:
            try:
                rename_noreplace(temp.path, full)
            except FileExistsError:
                raise exists_error(path, " (it appeared while copying)") from None
        else:
            os.rename(temp.path, full)
        temp.path = None
        if self.fsync:
            self._fsync_dir(os.path.dirname(full))

    async def _discard(self, temp: _Temp) -> None:
        """Remove the temporary file even if the task is being cancelled."""
        loop = asyncio.get_running_loop()
        with suppress(BaseException):
            await asyncio.shield(loop.run_in_executor(self._pool, temp.discard))

    async def write(self, path: str, chunks: AsyncIterable[bytes], size_hint: int | None = None,
                    *, expected_size: int | None = None,
                    expected_checksum: str | None = None,
                    exclusive: bool = False) -> WriteResult:
        temp, full = await self._run(path, self._create_temp, path)
        try:
            summer = Adler32()
            size = 0
            batch: list[bytes] = []
            batched = 0
            async for chunk in chunks:
                batch.append(chunk)
                batched += len(chunk)
                if batched >= self.chunk_size:
                    await self._run(path, self._append, temp, batch, summer)
                    size, batch, batched = size + batched, [], 0
            if batch:
                await self._run(path, self._append, temp, batch, summer)
                size += batched
            result = WriteResult(size, summer.hexdigest())
            check_expected(size, result.checksum, expected_size=expected_size,
                           expected_checksum=expected_checksum, path=path)
            await self._run(path, self._commit, temp, full, result, path, exclusive)
            return result
        except BaseException:
            await self._discard(temp)
            raise

    # --- the kernel fast path ----------------------------------------------------------------

    async def copy_from(self, src: Backend, src_path: str, path: str, *,
                        expected_size: int | None,
                        expected_checksum: str | None,
                        exclusive: bool = False) -> WriteResult | None:
        if not isinstance(src, PosixBackend):
            return None
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._pool, self._copy_file, src, src_path, path,
                                   expected_size, expected_checksum, stop, exclusive)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            stop.set()  # the thread cleans up its temporary file and ends
            with suppress(BaseException):
                await asyncio.wait([job])
                job.exception()
            raise

    def _copy_file(self, src: PosixBackend, src_path: str, path: str,
                   expected_size: int | None, expected_checksum: str | None,
                   stop: threading.Event, exclusive: bool = False) -> WriteResult:
        try:
            fi, info = src._open_source(src_path)
        except OSError as exc:
            raise tag(src._translate(exc, src_path), "source") from exc
        except StorageError as exc:  # a symlink on the way: the source's, not this storage's
            raise tag(exc, "source") from None
        try:
            # fail before creating anything when the source is already known to be wrong
            check_expected(info.size, info.checksum, expected_size=expected_size,
                           expected_checksum=expected_checksum, path=src_path)
            try:
                temp, full = self._create_temp(path)
            except OSError as exc:
                raise self._translate(exc, path) from exc
            try:
                result = self._copy_fd(fi, temp.fd, src_path, stop)
                check_expected(result.size, result.checksum,
                               expected_size=info.size if expected_size is None
                               else expected_size,
                               expected_checksum=expected_checksum, path=src_path)
                self._commit(temp, full, result, path, exclusive)
                return result
            except OSError as exc:
                raise self._translate(exc, path) from exc
            finally:
                temp.discard()
        finally:
            os.close(fi)

    def _copy_fd(self, fi: int, fo: int, src_path: str, stop: threading.Event) -> WriteResult:
        """Copy ``fi`` to ``fo`` chunk by chunk, checksumming each chunk as it is copied."""
        summer = Adler32()
        buf = bytearray(min(self.chunk_size, COPY_CHUNK))
        view = memoryview(buf)
        kernel = self.copy_method == "kernel"
        offset = flushed = 0
        while True:
            if stop.is_set():
                raise _Stopped
            got = os.preadv(fi, [view], offset)
            if got == 0:
                break
            summer.update(view[:got])
            if kernel:
                kernel = self._kernel_copy(fi, fo, offset, got, src_path)
            if not kernel:
                _write_all(fo, view[:got])
            offset += got
            if self.writeback and offset - flushed >= self.writeback:
                _start_writeback(fo, flushed, offset - flushed)
                flushed = offset
        return WriteResult(offset, summer.hexdigest())

    @staticmethod
    def _kernel_copy(fi: int, fo: int, offset: int, count: int, src_path: str) -> bool:
        """Copy ``count`` bytes at ``offset`` in the kernel; False if the file systems do not
        support it (nothing copied then, the caller writes the buffer)."""
        done = 0
        while done < count:
            try:
                n = os.copy_file_range(fi, fo, count - done, offset + done)
            except OSError as exc:
                if done or exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP,
                                             errno.EINVAL):
                    raise
                return False
            if n == 0:
                raise SizeMismatch("source shrank while being copied", side="source",
                                   expected=offset + count, actual=offset + done,
                                   path=src_path)
            done += n
        return True

    # --- deleting, listing, space ---------------------------------------------------------------

    def _delete(self, path: str) -> bool:
        """Unlink the file relative to its directory, opened without following any symlink:
        a symlink on the way or as the file is refused (nothing removed), so a path that names
        another item's file through a link never removes it."""
        try:
            directory, name = self._open_parent(path)
        except FileNotFoundError:
            if not os.path.isdir(self.root):
                raise
            return False
        try:
            try:
                st = os.lstat(name, dir_fd=directory)
            except FileNotFoundError:
                return False
            if stat_mod.S_ISLNK(st.st_mode):
                raise self._through_symlink(path, path)
            if stat_mod.S_ISDIR(st.st_mode):
                raise PathConflict(f"{path} is a directory", path=path)
            os.unlink(name, dir_fd=directory)
            if self.fsync:
                os.fsync(directory)
        finally:
            os.close(directory)
        return True

    async def delete(self, path: str) -> None:
        await self._run(path, self._delete, path)

    def _walk(self, directory: str, rel: str, prefix: str) -> Iterator[Entry]:
        """Regular files under ``directory`` in S3 key order: a directory sorts as its name
        plus '/', so 'a/b' comes after 'a-c' as it does in a bucket. Symlinks and temporary
        files are skipped."""
        try:
            with os.scandir(directory) as it:
                entries = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e)
                           for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort(key=lambda pair: pair[0])
        for key, entry in entries:
            name = rel + key
            if key.endswith("/"):
                if name.startswith(prefix) or prefix.startswith(name):
                    yield from self._walk(entry.path, name, prefix)
            elif (name.startswith(prefix) and not _is_temp(entry.name)
                  and entry.is_file(follow_symlinks=False)):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while listing
                yield Entry(name, st.st_size, st.st_mtime)

    def _start_walk(self, prefix: str) -> Iterator[Entry]:
        if not os.path.isdir(self.root):
            raise self._root_missing()
        base = prefix.rpartition("/")[0]
        start = f"{self.root}/{base}" if base else self.root
        self._check_inside(start, prefix)
        return self._walk(start, f"{base}/" if base else "", prefix)

    async def list(self, prefix: str = "") -> AsyncIterator[Entry]:
        check_prefix(prefix)
        walk = await self._run(prefix, self._start_walk, prefix)
        while batch := await self._run(prefix, lambda: list(islice(walk, _LIST_BATCH))):
            for entry in batch:
                yield entry

    async def space(self) -> Space:
        st = await self._run(None, os.statvfs, self.root)
        return Space((st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize)

    def _purge(self, older_than: float) -> int:
        cutoff = time.time() - older_than
        removed = 0
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                if _is_temp(name):
                    full = os.path.join(directory, name)
                    with suppress(FileNotFoundError):
                        if os.lstat(full).st_mtime < cutoff:
                            os.unlink(full)
                            removed += 1
        return removed

    async def purge_partial(self, older_than: float) -> int:
        return await self._run(None, self._purge, older_than)

    def stop_long_reads(self) -> None:
        self._closing.set()

    async def close(self) -> None:
        self._closing.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
