"""Each backend, POSIX and S3 (a real ``rclone serve s3``), honours the ``Backend`` contract:
round trips, stat/list/delete semantics, atomic writes that leave nothing behind on failure,
cheap recorded checksums that are dropped when a file changes, and leftover clean-up."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inventory.storage import (
    Backend,
    ChecksumMismatch,
    ConfigError,
    NotFound,
    PathConflict,
    PosixBackend,
    S3Backend,
    SizeMismatch,
    Unreachable,
    adler32_of,
    backend_for,
)
from tests.s3server import BUCKET, RcloneS3, s3_server  # noqa: F401  (fixture)

NAMES = ["plain", "with space/file name.dat", "ünïcødé/データ.h5", "a-c", "a/b", "a/c/d"]


async def stream(data: bytes, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]


@pytest.fixture(params=["posix", "s3"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """An empty storage of each kind (a fresh S3 prefix on the shared server)."""
    if request.param == "posix":
        made: Backend = backend_for("posix", str(tmp_path / "store"), {})
        (tmp_path / "store").mkdir()
    else:
        server: RcloneS3 = request.getfixturevalue("s3_server")
        made = backend_for("s3", f"{BUCKET}/{uuid.uuid4().hex}", server.config())
    yield made
    await made.close()


def leftovers(backend: Backend, tmp_path: Path) -> list[str]:
    """Temporary files a POSIX write could have left."""
    if not isinstance(backend, PosixBackend):
        return []
    return [name for _d, _s, files in os.walk(tmp_path / "store") for name in files
            if name.startswith(".dlm-")]


async def test_round_trip_stat_and_recorded_checksum(backend: Backend) -> None:
    data = os.urandom(300_000)
    for name in NAMES:
        result = await backend.write(name, stream(data, 65536))
        assert result == (len(data), adler32_of(data))
        info = await backend.stat(name)
        assert (info.size, info.checksum) == (len(data), adler32_of(data))
        assert abs(info.mtime - time.time()) < 60
        async with backend.open_read(name) as reader:
            assert reader.info.size == len(data)
            assert b"".join([chunk async for chunk in reader]) == data


async def test_empty_object(backend: Backend) -> None:
    assert await backend.write("empty", stream(b"")) == (0, "00000001")
    assert (await backend.stat("empty")).size == 0
    async with backend.open_read("empty") as reader:
        assert [chunk async for chunk in reader] == []


async def test_missing_object_and_idempotent_delete(backend: Backend) -> None:
    with pytest.raises(NotFound):
        await backend.stat("nothing/here")
    with pytest.raises(NotFound):
        async with backend.open_read("nothing/here"):
            pass
    await backend.write("x/y", stream(b"data"))
    await backend.delete("x/y")
    await backend.delete("x/y")  # again: not an error
    await backend.delete("never/was")
    with pytest.raises(NotFound):
        await backend.stat("x/y")
    assert [e async for e in backend.list()] == []


async def test_list_is_sorted_like_s3_and_filters_prefix(backend: Backend,
                                                         tmp_path: Path) -> None:
    for name in NAMES:
        await backend.write(name, stream(name.encode()))
    listed = [e async for e in backend.list()]
    assert [e.path for e in listed] == sorted(NAMES)  # 'a-c' before 'a/b', as S3 lists
    assert all(e.size == len(e.path.encode()) for e in listed)
    assert [e.path async for e in backend.list("a/")] == ["a/b", "a/c/d"]
    assert [e.path async for e in backend.list("a")] == ["a-c", "a/b", "a/c/d"]
    assert [e.path async for e in backend.list("a/c")] == ["a/c/d"]
    assert [e.path async for e in backend.list("with space/f")] == ["with space/file name.dat"]
    assert [e.path async for e in backend.list("zzz/")] == []
    if isinstance(backend, PosixBackend):  # a write in progress is not an object
        (tmp_path / "store" / "a" / ".dlm-0011223344556677.part").write_bytes(b"partial")
        assert len([e async for e in backend.list()]) == len(NAMES)


async def test_s3_listing_paginates(s3_server: RcloneS3) -> None:  # noqa: F811
    backend = backend_for("s3", f"{BUCKET}/{uuid.uuid4().hex}", s3_server.config(list_page_size=2))
    try:
        names = [f"f{i:02d}" for i in range(7)]
        await asyncio.gather(*(backend.write(n, stream(b"x")) for n in names))
        assert [e.path async for e in backend.list()] == names
    finally:
        await backend.close()


async def test_overwrite_replaces_whole_object(backend: Backend) -> None:
    await backend.write("obj", stream(b"old content"))
    await backend.write("obj", stream(b"new"))
    async with backend.open_read("obj") as reader:
        assert b"".join([c async for c in reader]) == b"new"


@pytest.mark.parametrize("size", [1000, 12 << 20])
async def test_write_mismatch_leaves_nothing(backend: Backend, tmp_path: Path,
                                             size: int) -> None:
    data = os.urandom(size)
    with pytest.raises(ChecksumMismatch) as caught:
        await backend.write("m/bad", stream(data), size, expected_checksum="00000000")
    assert caught.value.side == "source" and caught.value.actual == adler32_of(data)
    with pytest.raises(SizeMismatch):
        await backend.write("m/bad", stream(data), size, expected_size=size + 1)
    with pytest.raises(NotFound):
        await backend.stat("m/bad")
    assert [e async for e in backend.list()] == []
    assert leftovers(backend, tmp_path) == []
    assert await backend.purge_partial(0) == 0  # no multipart upload left open either


async def test_cancelled_write_leaves_nothing(backend: Backend, tmp_path: Path) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield os.urandom(6 << 20)
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(backend.write("c/obj", slow()))
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(NotFound):
        await backend.stat("c/obj")
    assert leftovers(backend, tmp_path) == []
    assert await backend.purge_partial(0) == 0


async def test_posix_recorded_checksum_dropped_when_file_changes(tmp_path: Path) -> None:
    async with PosixBackend(tmp_path) as backend:
        await backend.write("f", stream(b"hello world"))
        assert (await backend.stat("f")).checksum == adler32_of(b"hello world")
        with open(tmp_path / "f", "r+b") as f:
            f.write(b"J")
        assert (await backend.stat("f")).checksum is None


async def test_posix_parent_is_a_file(tmp_path: Path) -> None:
    async with PosixBackend(tmp_path) as backend:
        await backend.write("file", stream(b"x"))
        with pytest.raises(PathConflict):
            await backend.write("file/child", stream(b"y"))
        await backend.write("dir/inner", stream(b"z"))
        with pytest.raises(PathConflict):
            await backend.write("dir", stream(b"y"))
        with pytest.raises(PathConflict):
            await backend.delete("dir")


async def test_space_and_purge_partial(backend: Backend, tmp_path: Path) -> None:
    space = await backend.space()
    if isinstance(backend, PosixBackend):
        assert space is not None and space.free > 0 and space.used > 0
        stale = tmp_path / "store" / "d" / ".dlm-00112233aabbccdd.part"
        stale.parent.mkdir()
        stale.write_bytes(b"partial")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        fresh = stale.with_name(".dlm-fresh0000fresh.part")
        fresh.write_bytes(b"in progress")
        assert await backend.purge_partial(3600) == 1
        assert not stale.exists() and fresh.exists()
    else:
        assert space is None
        assert isinstance(backend, S3Backend)
        client = await backend._clients.get()
        await client.create_multipart_upload(Bucket=BUCKET, Key=backend._key("dead"))
        assert await backend.purge_partial(3600) == 0  # too recent
        assert await backend.purge_partial(0) == 1
        assert await backend.purge_partial(0) == 0


@pytest.mark.parametrize("writeback", [0, 4096, 2 << 20])
async def test_posix_early_writeback_setting(tmp_path: Path, writeback: int) -> None:
    """Early writeback (sync_file_range every ``writeback`` bytes) changes only when the disk
    writes: copies and streamed writes hold the same bytes and checksum, with every size of
    step, and it is off without fsync."""
    data = os.urandom((3 << 20) + 12345)
    (tmp_path / "src").mkdir()
    src = backend_for("posix", str(tmp_path / "src"), {})
    dst = backend_for("posix", str(tmp_path / "dst"), {"writeback": writeback})
    assert isinstance(dst, PosixBackend) and dst.writeback == writeback
    (tmp_path / "dst").mkdir()
    await src.write("f", stream(data, 100_000))
    await dst.write("streamed", stream(data, 100_000), expected_checksum=adler32_of(data))
    result = await dst.copy_from(src, "f", "copied", expected_size=len(data),
                                 expected_checksum=adler32_of(data))
    assert result is not None and result.checksum == adler32_of(data)
    for name in ("streamed", "copied"):
        assert (tmp_path / "dst" / name).read_bytes() == data
    await src.close()
    await dst.close()
    assert PosixBackend(tmp_path, fsync=False).writeback == 0
    with pytest.raises(ConfigError):
        backend_for("posix", str(tmp_path), {"writeback": "2M"})


async def test_posix_stat_groups_answers_each_storage_in_order(tmp_path: Path,
                                                               monkeypatch) -> None:
    """Several POSIX storages' stats in shared thread-pool calls (a bulk ingest's): each
    path is looked up under its own storage's root, the answers come back per storage in the
    paths' order, also when a call's batch ends in the middle of a storage's paths, and a
    path through a symlinked directory is still refused."""
    from inventory.storage import posix

    monkeypatch.setattr(posix, "STAT_BATCH", 3)
    roots = [tmp_path / "a", tmp_path / "b"]
    for n, root in enumerate(roots):
        (root / "d").mkdir(parents=True)
        for i in range(5):
            (root / "d" / f"f{i}").write_bytes(b"x" * (10 * n + i))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f0").write_bytes(b"secret")
    (roots[1] / "link").symlink_to(tmp_path / "out")
    a, b = (posix.PosixBackend(root) for root in roots)
    try:
        found = await posix.PosixBackend.stat_groups([
            (a, ["d/f0", "d/f4", "d/none"]),
            (b, ["d/f3", "d/f2", "link/f0", "d/f1", "d/f0"]),
            (a, [])])
        sizes = [[getattr(info, "size", type(info).__name__) for info in group]
                 for group in found]
        assert sizes == [[0, 4, "NotFound"], [13, 12, "ThroughSymlink", 11, 10], []]
        assert await posix.PosixBackend.stat_groups([]) == []
    finally:
        await a.close()
        await b.close()


def _huge_sparse(tmp_path: Path) -> Path:
    """A file whose checksum takes tens of seconds to read (holes read as zeros)."""
    root = tmp_path / "r"
    root.mkdir(exist_ok=True)
    path = root / f"huge-{uuid.uuid4().hex[:8]}"
    with open(path, "wb") as f:
        f.truncate(200 * 10**9)
    return path


async def test_posix_checksum_reads_end_when_cancelled_or_stopped(tmp_path: Path) -> None:
    """A checksum of a 200 GB file (verified ingest) holds a thread for as long as it reads: a
    caller that goes away, or a server that stops, ends it at the next chunk; and at most half
    the threads read whole files, so a stat of the storage is answered meanwhile."""
    huge = [_huge_sparse(tmp_path).name for _ in range(2)]
    backend = PosixBackend(tmp_path / "r", threads=2)
    (tmp_path / "r" / "small").write_bytes(b"x")
    try:
        reads = [asyncio.create_task(backend.checksum(name)) for name in huge]
        await asyncio.sleep(0.2)
        # threads=2: one whole-file read at a time, the other thread free for a stat
        assert (await asyncio.wait_for(backend.stat("small"), 20)).size == 1
        assert not any(read.done() for read in reads)
        reads[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(reads[0], 20)
        await asyncio.sleep(0.2)  # the second read holds the gate now
        backend.stop_long_reads()
        with pytest.raises(Unreachable, match="stopped"):
            await asyncio.wait_for(reads[1], 20)
    finally:
        await backend.close()
