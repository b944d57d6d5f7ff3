"""Listing a storage for the consistency check: every object with its size and mtime, streamed.

POSIX storages are walked here rather than through ``PosixBackend.list``: the backend's list
sorts each directory (S3 key order, for merges) and checks every path against the root, which a
consistency run needs neither of (the diff is a hash join); this walk is one ``os.scandir`` and
one ``lstat`` per file and keeps up with ``find -printf '%s %T@ %p'`` of the same tree
(docs/consistency-benchmark.md). S3 storages are listed through the backend (ListObjectsV2,
paginated). Both skip what the backends never show as objects: symlinks, directories,
temporary files of writes in progress (``.dlm-*``) and S3 directory markers.

A symlink is never an object (the POSIX backend refuses to reach a replica's file through one,
issue 15), so it is never an orphan either: ``walk_posix`` hands each one, with the file or
directory it reaches under the root, to the caller (``symlinks``), which keeps what they reach
from being deleted as an orphan and leaves replicas whose path goes through one unjudged.

Batches are yielded, so a caller can start on them while the walk goes on, and the walk itself
runs in a worker thread: the event loop (a snapshot download, say) keeps running.
"""

from __future__ import annotations

import asyncio
import os
import stat as stat_mod
from collections.abc import AsyncIterator, Callable, Iterator

from inventory.storage.base import Backend, Entry
from inventory.storage.errors import PermissionDenied, Unreachable
from inventory.storage.paths import RESERVED_PREFIX

BATCH = 10_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_new_entry = tuple.__new__  # Entry(...) through NamedTuple.__new__ costs a Python call per file


def walk_posix(root: str, symlinks: dict[str, str | None] | None = None
               ) -> Iterator[list[Entry]]:
    """Regular files under ``root`` as ``Entry(relative path, size, mtime)``, one list per
    directory, in no set order.

    Each directory is opened once and its files are ``lstat``-ed relative to it (``dir_fd``), so
    the kernel resolves one path component per file rather than the whole path: a third faster
    than ``os.scandir(path)`` plus ``entry.stat()``. A missing root is ``Unreachable`` (an
    unmounted file system must never look like a storage whose every file is missing); an
    unreadable directory is ``PermissionDenied`` for the same reason: a partial listing would
    make its files look missing. Whatever is removed while the walk runs is simply not listed.
    ``symlinks`` gets each symlink's relative path and what it resolves to relative to the
    real root (None: outside the root, or dangling).
    """
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise Unreachable(f"storage root {root} is missing (not mounted?)", path=root)
    real_root = os.path.realpath(root)
    is_link = stat_mod.S_ISLNK
    lstat = os.stat
    is_reg = stat_mod.S_ISREG
    reserved = RESERVED_PREFIX
    pending: list[tuple[str, str]] = [(root, "")]
    while pending:
        directory, rel = pending.pop()
        try:
            fd = os.open(directory, _DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed (or replaced by a file) while listing
        except OSError as exc:
            cls = PermissionDenied if isinstance(exc, PermissionError) else Unreachable
            raise cls(f"cannot list {directory}: {exc.strerror or exc}", path=rel or "/") \
                from None
        out: list[Entry] = []
        try:
            with os.scandir(fd) as it:
                found = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            for name, is_dir in found:
                if is_dir:
                    pending.append((f"{directory}/{name}", f"{rel}{name}/"))
                elif not name.startswith(reserved):
                    try:
                        st = lstat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if is_reg(st.st_mode):  # not a symlink, socket, fifo...
                        out.append(_new_entry(Entry, (rel + name, st.st_size, st.st_mtime)))
                    elif symlinks is not None and is_link(st.st_mode):
                        symlinks[rel + name] = _target(f"{directory}/{name}", real_root)
        finally:
            os.close(fd)
        if out:
            yield out


def _target(link: str, real_root: str) -> str | None:
    """What ``link`` resolves to, relative to the real root; None outside it or dangling."""
    real = os.path.realpath(link)
    if not real.startswith(real_root.rstrip("/") + "/") or not os.path.lexists(real):
        return None
    return real[len(real_root.rstrip("/")) + 1:]


async def list_posix(root: str, batch: int = BATCH,
                     symlinks: dict[str, str | None] | None = None
                     ) -> AsyncIterator[list[Entry]]:
    """``walk_posix`` in a worker thread, ``batch`` entries at a time."""
    walk = walk_posix(root, symlinks)

    def more() -> list[Entry]:
        chunk: list[Entry] = []
        for files in walk:
            chunk.extend(files)
            if len(chunk) >= batch:
                break
        return chunk

    while chunk := await asyncio.to_thread(more):
        yield chunk


async def list_backend(backend: Backend, batch: int = BATCH) -> AsyncIterator[list[Entry]]:
    """Any backend's own listing (S3: ListObjectsV2 pages), ``batch`` entries at a time."""
    chunk: list[Entry] = []
    async for entry in backend.list(""):
        chunk.append(entry)
        if len(chunk) >= batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def list_storage(kind: str, root: str, backend: Backend, batch: int = BATCH,
                 symlinks: dict[str, str | None] | None = None
                 ) -> AsyncIterator[list[Entry]]:
    """The listing of a storage in batches: the fast walk for POSIX, the backend otherwise."""
    if kind == "posix":
        return list_posix(root, batch, symlinks)
    return list_backend(backend, batch)


async def collect(kind: str, root: str, backend: Backend,
                  progress: Callable[[int], None] | None = None,
                  symlinks: dict[str, str | None] | None = None) -> list[Entry]:
    """The whole listing as one list (what the diff takes); ``progress`` gets each batch's
    size, for a progress bar; ``symlinks`` the POSIX symlinks met (``walk_posix``)."""
    out: list[Entry] = []
    async for chunk in list_storage(kind, root, backend, symlinks=symlinks):
        out.extend(chunk)
        if progress is not None:
            progress(len(chunk))
    return out
