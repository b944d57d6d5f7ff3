"""Verified copies between every pair of backend kinds, and the faults a copy must survive:
a wrong or damaged source, a target that refuses or fills up, and an S3 server killed in the
middle. In every failing case nothing may be left visible at the target, and the error must say
what happened (and, for a mismatch, which side is wrong)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from inventory.storage import (
    Backend,
    ChecksumMismatch,
    NotFound,
    PathConflict,
    PermissionDenied,
    PosixBackend,
    S3Backend,
    SizeMismatch,
    Unreachable,
    adler32_of,
    backend_for,
    copy,
)
from tests.s3server import (  # noqa: F401  (fixtures)
    BUCKET,
    PART,
    RcloneS3,
    own_s3_server,
    s3_server,
)

REPO = Path(__file__).resolve().parent.parent
NAME = "run 1/ünï côdé ファイル.dat"
SIZES = {"empty": 0, "small": 1000, "single-put": PART + 4321, "multipart": 2 * PART + 12345}
PAIRS = [("posix", "posix"), ("posix", "s3"), ("s3", "posix"), ("s3", "s3")]
DATA = os.urandom(max(SIZES.values()))

Make = Callable[[str], Backend]


@pytest.fixture
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Make]:
    """``make(kind)``: a new empty storage of that kind, closed after the test."""
    made: list[Backend] = []

    def factory(kind: str, server: RcloneS3 | None = None, **config: object) -> Backend:
        if kind == "posix":
            root = tmp_path / f"posix{len(made)}"
            root.mkdir()
            backend = backend_for("posix", str(root), config)
        else:
            server = server or request.getfixturevalue("s3_server")
            backend = backend_for("s3", f"{BUCKET}/{uuid.uuid4().hex}", server.config(**config))
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.close()


async def stream(data: bytes, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]


async def read_all(backend: Backend, path: str) -> bytes:
    async with backend.open_read(path) as reader:
        return b"".join([chunk async for chunk in reader])


async def assert_nothing_at(backend: Backend, path: str) -> None:
    with pytest.raises(NotFound):
        await backend.stat(path)
    assert [e async for e in backend.list()] == []
    if isinstance(backend, PosixBackend):
        assert [n for _d, _s, files in os.walk(backend.root) for n in files] == []
    else:
        assert await backend.purge_partial(0) == 0


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize(("src_kind", "dst_kind"), PAIRS, ids=["-".join(p) for p in PAIRS])
async def test_copy_matrix(make: Make, src_kind: str, dst_kind: str, size: int) -> None:
    data = DATA[:size]
    src, dst = make(src_kind), make(dst_kind)
    await src.write(NAME, stream(data))
    result = await copy(src, NAME, dst, NAME, expected_size=size,
                        expected_checksum=adler32_of(data).upper())
    assert (result.size, result.checksum) == (size, adler32_of(data))
    assert result.seconds >= 0
    info = await dst.stat(NAME)
    assert (info.size, info.checksum) == (size, adler32_of(data))
    assert await read_all(dst, NAME) == data
    assert [e.path async for e in dst.list()] == [NAME]


async def test_s3_copy_between_endpoints_streams(make: Make,
                                                 own_s3_server: RcloneS3) -> None:  # noqa: F811
    data = DATA[:SIZES["multipart"]]
    src = make("s3", own_s3_server)
    dst = make("s3")
    assert not dst.settings.same_endpoint(src.settings)
    await src.write(NAME, stream(data))
    assert await dst.copy_from(src, NAME, NAME, expected_size=None,
                               expected_checksum=None) is None  # no server-side copy
    result = await copy(src, NAME, dst, NAME, expected_checksum=adler32_of(data))
    assert result.checksum == adler32_of(data)
    assert await read_all(dst, NAME) == data


async def test_s3_source_without_recorded_checksum_is_streamed_and_verified(
        make: Make) -> None:
    data = DATA[:SIZES["multipart"]]
    src, dst = make("s3"), make("s3")
    assert isinstance(src, S3Backend)
    client = await src._clients.get()  # a foreign writer: no adler32 in the metadata
    await client.put_object(Bucket=BUCKET, Key=src._key("foreign"), Body=data)
    assert (await src.stat("foreign")).checksum is None
    with pytest.raises(ChecksumMismatch) as caught:
        await copy(src, "foreign", dst, "copy", expected_checksum="0badc0de")
    assert caught.value.side == "source" and caught.value.actual == adler32_of(data)
    await assert_nothing_at(dst, "copy")
    result = await copy(src, "foreign", dst, "copy", expected_checksum=adler32_of(data))
    assert result.checksum == adler32_of(data)


@pytest.mark.parametrize(("src_kind", "dst_kind"), PAIRS, ids=["-".join(p) for p in PAIRS])
async def test_wrong_expected_checksum_or_size_leaves_nothing(make: Make, src_kind: str,
                                                              dst_kind: str) -> None:
    data = DATA[:SIZES["multipart"]]
    src, dst = make(src_kind), make(dst_kind)
    await src.write(NAME, stream(data))
    with pytest.raises(ChecksumMismatch) as caught:
        await copy(src, NAME, dst, NAME, expected_size=len(data), expected_checksum="12345678")
    assert (caught.value.side, caught.value.expected, caught.value.actual) == (
        "source", "12345678", adler32_of(data))
    with pytest.raises(SizeMismatch) as sized:
        await copy(src, NAME, dst, NAME, expected_size=len(data) - 1)
    assert sized.value.side == "source"
    await assert_nothing_at(dst, NAME)


@pytest.mark.parametrize("dst_kind", ["posix", "s3"])
async def test_truncated_or_altered_posix_source_is_detected(make: Make,
                                                             dst_kind: str) -> None:
    data = DATA[:SIZES["multipart"]]
    src, dst = make("posix"), make(dst_kind)
    assert isinstance(src, PosixBackend)
    for name in ("truncated", "altered"):
        await src.write(name, stream(data))
    full = Path(src.root)
    os.truncate(full / "truncated", len(data) - 100)
    before = os.stat(full / "altered")
    with open(full / "altered", "r+b") as f:  # flip one byte, keep size and mtime:
        f.seek(len(data) // 2)                 # the recorded checksum still looks valid
        f.write(bytes([data[len(data) // 2] ^ 0xFF]))
    os.utime(full / "altered", ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(SizeMismatch) as sized:
        await copy(src, "truncated", dst, "t", expected_size=len(data),
                   expected_checksum=adler32_of(data))
    assert sized.value.side == "source" and sized.value.actual == len(data) - 100
    with pytest.raises(ChecksumMismatch) as summed:
        await copy(src, "altered", dst, "a", expected_size=len(data),
                   expected_checksum=adler32_of(data))
    assert summed.value.side == "source"
    await assert_nothing_at(dst, "t")


async def test_damaged_s3_source_is_detected(make: Make, s3_server: RcloneS3) -> None:  # noqa: F811
    """Damage done behind S3's back (straight into rclone's directory): the copy to POSIX
    and the same-endpoint S3 copy (which would be server-side) both catch it."""
    data = DATA[:SIZES["multipart"]]
    src = make("s3")
    assert isinstance(src, S3Backend)
    for name in ("truncated", "altered"):
        await src.write(name, stream(data), expected_checksum=adler32_of(data))
    files = s3_server.directory / BUCKET / src.settings.prefix
    os.truncate(files / "truncated", len(data) - 100)
    with open(files / "altered", "r+b") as f:
        f.write(bytes([data[0] ^ 0xFF]))
    time.sleep(1.1)  # rclone's --dir-cache-time
    for dst in (make("posix"), make("s3")):
        with pytest.raises(SizeMismatch) as sized:
            await copy(src, "truncated", dst, "t", expected_size=len(data),
                       expected_checksum=adler32_of(data))
        assert sized.value.side == "source"
        with pytest.raises(ChecksumMismatch) as summed:
            await copy(src, "altered", dst, "a", expected_size=len(data),
                       expected_checksum=adler32_of(data))
        assert summed.value.side == "source"
        await assert_nothing_at(dst, "a")


async def test_s3_server_killed_mid_upload(make: Make,
                                           own_s3_server: RcloneS3) -> None:  # noqa: F811
    dst = make("s3", own_s3_server, max_concurrency=2, connect_timeout=1.0)

    async def dies_after_two_parts() -> AsyncIterator[bytes]:
        for i in range(8):
            if i == 2:
                await asyncio.sleep(0.1)  # let the first parts go out
                own_s3_server.kill()
            yield DATA[:PART]

    # A hang guard, not a speed bound: the write must give up (few attempts, short connect
    # timeout) instead of retrying for ever; how fast it gives up is not this test's business.
    with pytest.raises(Unreachable) as caught:
        async with asyncio.timeout(300):
            await dst.write("big", dies_after_two_parts(), 8 * PART)
    assert "127.0.0.1" in str(caught.value) and caught.value.retryable
    own_s3_server.start()
    with pytest.raises(NotFound):
        await dst.stat("big")
    assert [e async for e in dst.list()] == []
    # rclone keeps the dead upload's parts in a hidden temporary directory, as S3 keeps
    # parts until an abort: never under the object's name
    assert not (own_s3_server.directory / BUCKET / dst.settings.prefix / "big").exists()


async def test_s3_server_killed_mid_download(make: Make,
                                             own_s3_server: RcloneS3) -> None:  # noqa: F811
    data = os.urandom(48 << 20)
    src, dst = make("s3", own_s3_server, connect_timeout=1.0), make("posix")
    await src.write("big", stream(data, 8 << 20))
    with pytest.raises(Unreachable):
        async with src.open_read("big") as reader:

            async def killing() -> AsyncIterator[bytes]:
                async for i, chunk in _enumerate(reader):
                    if i == 1:
                        own_s3_server.kill()
                    yield chunk

            await dst.write("big", killing(), reader.info.size, expected_size=reader.info.size)
    await assert_nothing_at(dst, "big")


async def _enumerate(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    i = 0
    async for chunk in chunks:
        yield i, chunk
        i += 1


async def test_s3_server_down_or_credentials_wrong(make: Make, tmp_path: Path,
                                                  own_s3_server: RcloneS3) -> None:  # noqa: F811
    src = make("posix")
    await src.write("f", stream(b"payload"))
    wrong = make("s3", own_s3_server, secret_key="not-the-secret")
    with pytest.raises(PermissionDenied):
        await copy(src, "f", wrong, "f")
    down = make("s3", own_s3_server, connect_timeout=1.0)
    own_s3_server.kill()
    with pytest.raises(Unreachable):
        await copy(src, "f", down, "f")
    with pytest.raises(Unreachable):
        await copy(down, "f", src, "g")
    await assert_nothing_at(make("posix"), "g")


async def test_target_parent_is_a_file(make: Make) -> None:
    for src_kind in ("posix", "s3"):
        src, dst = make(src_kind), make("posix")
        await src.write("f", stream(b"payload"))
        await dst.write("blocker", stream(b"a file, not a directory"))
        with pytest.raises(PathConflict) as caught:
            await copy(src, "f", dst, "blocker/f")
        assert "blocker" in str(caught.value)
        assert [e.path async for e in dst.list()] == ["blocker"]


async def test_target_read_only(make: Make) -> None:
    src, dst = make("posix"), make("posix")
    s3src = make("s3")
    await src.write("f", stream(b"payload"))
    await s3src.write("f", stream(b"payload"))
    assert isinstance(dst, PosixBackend)
    os.mkdir(os.path.join(dst.root, "ro"))
    immutable = subprocess.run(["chattr", "+i", os.path.join(dst.root, "ro")],
                               capture_output=True)
    if immutable.returncode != 0:  # not ext4/xfs or no CAP_LINUX_IMMUTABLE
        pytest.skip(f"chattr +i not possible here: {immutable.stderr.decode().strip()}")
    try:
        for source in (src, s3src):
            with pytest.raises(PermissionDenied) as caught:
                await copy(source, "f", dst, "ro/f")
            assert not caught.value.retryable
        assert os.listdir(os.path.join(dst.root, "ro")) == []
    finally:
        subprocess.run(["chattr", "-i", os.path.join(dst.root, "ro")], check=True)


def test_target_full(tmp_path: Path) -> None:
    """A file-size limit (RLIMIT_FSIZE, in a child process) makes every write fail with EFBIG
    part-way, as a full disk or quota would: each copy path must say StorageFull and leave
    nothing behind."""
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "src" / "big").write_bytes(os.urandom(3 << 20))
    script = textwrap.dedent(f"""
        import asyncio, resource
        from inventory.storage import PosixBackend, StorageFull, copy
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

        async def chunks():
            for _ in range(3):
                yield bytes(1 << 20)

        async def main():
            src = PosixBackend({str(tmp_path / "src")!r})
            for method in ("kernel", "read"):
                dst = PosixBackend({str(tmp_path / "dst")!r}, copy_method=method,
                                   chunk_size=1 << 19)
                try:
                    await copy(src, "big", dst, "big")
                except StorageFull as exc:
                    print("StorageFull", method, exc.retryable)
                try:
                    await dst.write("streamed", chunks())
                except StorageFull:
                    print("StorageFull write")
                await dst.close()
            await src.close()

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["StorageFull kernel True", "StorageFull write",
                                           "StorageFull read True", "StorageFull write"]
    assert os.listdir(tmp_path / "dst") == []
