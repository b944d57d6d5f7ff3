"""How an upload to S3 is sent, by size, against a real ``rclone serve s3``: a buffered PUT with
Content-MD5 up to ``part_size``, one streaming PUT up to ``multipart_threshold``, multipart
above. Each way must verify size and adler32 before the object can appear, catch a body damaged
on the way (a proxy that flips one byte), and leave nothing when the server dies mid-request."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from inventory.storage import (
    Backend,
    ChecksumMismatch,
    ConfigError,
    NotFound,
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
    THRESHOLD,
    RcloneS3,
    own_s3_server,
    s3_server,
)

DATA = os.urandom(THRESHOLD + PART)
# size -> how an upload of that size goes
WAYS = {
    0: "put",
    1000: "put",
    PART: "put",                # one part's worth: buffered, Content-MD5
    PART + 1: "put",            # streaming PUT
    THRESHOLD: "put",           # exactly at the threshold: still one PUT
    THRESHOLD + 1: "multipart",
}


async def stream(data: bytes, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]


async def operations(backend: S3Backend) -> list[str]:
    """A list that fills with the name of every S3 operation the backend's client calls."""
    seen: list[str] = []

    def record(model: Any, **_: Any) -> None:
        seen.append(model.name)

    client = await backend._clients.get()
    client.meta.events.register("before-call.s3", record)
    return seen


@pytest.fixture
async def s3(s3_server: RcloneS3) -> AsyncIterator[Callable[..., S3Backend]]:  # noqa: F811
    made: list[Backend] = []

    def factory(server: RcloneS3 = s3_server, **config: object) -> S3Backend:
        backend = backend_for("s3", f"{BUCKET}/{uuid.uuid4().hex}", server.config(**config))
        assert isinstance(backend, S3Backend)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.close()


async def assert_nothing(backend: S3Backend, server: RcloneS3, path: str) -> None:
    with pytest.raises(NotFound):
        await backend.stat(path)
    assert [e async for e in backend.list()] == []
    assert await backend.purge_partial(0) == 0
    assert not (server.directory / BUCKET / backend.settings.prefix / path).exists()


@pytest.mark.parametrize("size", WAYS, ids=[f"{s}B" for s in WAYS])
async def test_upload_way_by_size(s3: Callable[..., S3Backend], tmp_path: Path,
                                  s3_server: RcloneS3, size: int) -> None:  # noqa: F811
    data = DATA[:size]
    src = backend_for("posix", str(tmp_path), {})
    await src.write("f", stream(data))
    dst = s3()
    seen = await operations(dst)
    result = await copy(src, "f", dst, "f", expected_size=size,
                        expected_checksum=adler32_of(data))
    await src.close()
    assert (result.size, result.checksum) == (size, adler32_of(data))
    # a copy never overwrites: HEAD of the target first (is it free, or this copy's own?), and
    # HEAD again just before the request that makes the object visible
    if WAYS[size] == "put":
        assert seen == ["HeadObject", "HeadObject", "PutObject"]
    else:
        assert seen[:2] == ["HeadObject", "CreateMultipartUpload"]
        assert seen[-2:] == ["HeadObject", "CompleteMultipartUpload"]
        assert set(seen[2:-2]) == {"UploadPart"} and len(seen) >= 6
    info = await dst.stat("f")
    assert (info.size, info.checksum) == (size, adler32_of(data))  # adler32 recorded
    assert (s3_server.directory / BUCKET / dst.settings.prefix / "f").read_bytes() == data


async def test_streaming_put_without_expected_checksum(s3: Callable[..., S3Backend]) -> None:
    """The metadata leaves before the bytes: without an expected checksum none is recorded,
    but the result still carries the adler32 computed on the way."""
    data = DATA[:PART + 1]
    dst = s3()
    result = await dst.write("f", stream(data), len(data))
    assert result.checksum == adler32_of(data)
    assert (await dst.stat("f")).checksum is None


@pytest.mark.parametrize("size", [PART + 1, THRESHOLD])
async def test_streaming_put_checks_source_before_the_last_byte(
        s3: Callable[..., S3Backend], s3_server: RcloneS3, size: int) -> None:  # noqa: F811
    data = DATA[:size]
    dst = s3()
    with pytest.raises(ChecksumMismatch) as summed:
        await dst.write("f", stream(data), size, expected_checksum="0badc0de")
    assert (summed.value.side, summed.value.actual) == ("source", adler32_of(data))
    with pytest.raises(SizeMismatch) as short:  # the source shrank since its size was taken
        await dst.write("f", stream(data[:-7]), size, expected_size=size)
    assert (short.value.side, short.value.actual) == ("source", size - 7)
    with pytest.raises(SizeMismatch) as long:  # or grew
        await dst.write("f", stream(data + b"more"), size)
    assert long.value.side == "source"

    async def failing() -> AsyncIterator[bytes]:
        yield data[:PART]
        raise Unreachable("source storage went away")

    with pytest.raises(Unreachable, match="source storage went away"):
        await dst.write("f", failing(), size)
    await asyncio.sleep(1.1)  # rclone's --dir-cache-time
    await assert_nothing(dst, s3_server, "f")


async def test_server_killed_mid_streaming_put(s3: Callable[..., S3Backend],
                                               own_s3_server: RcloneS3) -> None:  # noqa: F811
    dst = s3(own_s3_server, connect_timeout=1.0)
    chunk, count = DATA[:PART // 4], THRESHOLD // PART * 4

    async def dies_midway() -> AsyncIterator[bytes]:
        for i in range(count):
            if i == 2:
                await asyncio.sleep(0.1)  # let the first chunks go out
                own_s3_server.kill()
            yield chunk

    with pytest.raises(Unreachable) as caught:  # a good source: only the server failed
        await dst.write("big", dies_midway(), THRESHOLD,
                        expected_checksum=adler32_of(chunk * count))
    assert "127.0.0.1" in str(caught.value) and caught.value.retryable
    own_s3_server.start()
    await assert_nothing(dst, own_s3_server, "big")


@pytest.mark.parametrize("config", [{"content_md5": False}, {"sign_payload": True}])
async def test_signed_payload_never_streams(s3: Callable[..., S3Backend],
                                            config: dict[str, bool]) -> None:
    """SigV4 with a signed payload needs the body's SHA-256 first: over part_size, multipart."""
    data = DATA[:PART + 1]
    dst = s3(**config)
    seen = await operations(dst)
    result = await dst.write("f", stream(data), len(data), expected_checksum=adler32_of(data))
    assert result.checksum == adler32_of(data)
    assert seen[0] == "CreateMultipartUpload" and seen[-1] == "CompleteMultipartUpload"
    assert (await dst.stat("f")).size == len(data)


# size -> the parts sent with multipart_threshold 0, from a POSIX source reading 8 MiB chunks
MiB = 1 << 20
PARTS_FROM_8MIB_CHUNKS = {
    PART: None,                                   # one part's worth: one buffered PUT
    PART + 1: [PART, 1],                          # just over part_size: multipart
    7 * MiB: [PART, 2 * MiB],                     # under one 8 MiB chunk: multipart too
    21 * MiB: [PART, PART, PART, PART, MiB],      # parts of part_size, not of whole chunks
}


@pytest.mark.parametrize("size", PARTS_FROM_8MIB_CHUNKS,
                         ids=[f"{s}B" for s in PARTS_FROM_8MIB_CHUNKS])
async def test_threshold_zero_sends_parts_of_part_size(s3: Callable[..., S3Backend],
                                                       tmp_path: Path, size: int) -> None:
    """docs/storage.md: `multipart_threshold: 0` sends everything above `part_size`
    multipart, each part `part_size` bytes (the last smaller), whatever the source's read
    chunk (issue 25: parts were whole 8 MiB chunks, so 5-8 MiB objects went in one PUT)."""
    data = os.urandom(size)
    src = backend_for("posix", str(tmp_path), {"chunk_size": 8 * MiB})
    await src.write("f", stream(data))
    dst = s3(multipart_threshold=0)
    sent: list[tuple[str, int]] = []

    def record(model: Any, params: Any, **_: Any) -> None:
        body = params.get("body") or b""
        sent.append((model.name, body.getbuffer().nbytes if hasattr(body, "getbuffer")
                     else len(body)))

    (await dst._clients.get()).meta.events.register("before-call.s3", record)
    result = await copy(src, "f", dst, "f", expected_size=size,
                        expected_checksum=adler32_of(data))
    await src.close()
    assert result.size == size
    parts = [n for name, n in sent if name == "UploadPart"]
    if PARTS_FROM_8MIB_CHUNKS[size] is None:
        assert "PutObject" in [name for name, _ in sent] and not parts
    else:
        assert parts == PARTS_FROM_8MIB_CHUNKS[size], parts
    assert (await dst.stat("f")).size == size


async def test_multipart_threshold_config() -> None:
    assert S3Backend.from_storage("b", {"endpoint_url": "http://x"}).settings \
        .multipart_threshold == 200 << 20
    for bad in (-1, (5 << 30) + 1):
        with pytest.raises(ConfigError, match="multipart_threshold"):
            backend_for("s3", "b", {"multipart_threshold": bad})


class FlippingProxy:
    """A TCP proxy to the S3 server that flips one byte of the body of the next PUT (a
    PutObject or an UploadPart) at ``offset``: a body damaged on the way."""

    def __init__(self, port: int, offset: int) -> None:
        self.port, self.offset = port, offset
        self.armed = True
        self.flipped = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        back = asyncio.create_task(self._pipe(up_reader, writer, damage=False))
        try:
            await self._pipe(reader, up_writer, damage=True)
            await back
        except asyncio.CancelledError:
            back.cancel()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    damage: bool) -> None:
        head = b""
        body_at: int | None = None  # bytes of the current PUT body seen so far
        try:
            while data := await reader.read(1 << 16):
                if damage and self.armed:
                    if body_at is None:
                        head += data
                        end = head.find(b"\r\n\r\n")
                        if end >= 0 and head.startswith(b"PUT "):
                            body_at = len(head) - end - 4
                            start = len(data) - body_at
                            data = data[:start] + self._damage(data[start:], 0)
                            body_at = len(data) - start
                        elif end >= 0:
                            head = b""
                    else:
                        data = self._damage(data, body_at)
                        body_at += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _damage(self, data: bytes, at: int) -> bytes:
        index = self.offset - at
        if self.armed and 0 <= index < len(data):
            self.armed = False
            self.flipped += 1
            return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]
        return data


@pytest.mark.parametrize("size", [1000, PART + 1, THRESHOLD + 1],
                         ids=["buffered-put", "streaming-put", "multipart"])
async def test_body_damaged_on_the_way_is_caught(s3: Callable[..., S3Backend],
                                                 s3_server: RcloneS3,  # noqa: F811
                                                 size: int) -> None:
    proxy = FlippingProxy(s3_server.port, offset=500)
    endpoint = await proxy.start()
    try:
        dst = s3(endpoint_url=endpoint, max_attempts=1)
        data = DATA[:size]
        with pytest.raises(ChecksumMismatch) as caught:
            await dst.write("f", stream(data), size, expected_checksum=adler32_of(data))
        assert proxy.flipped == 1 and caught.value.side == "target"
        await asyncio.sleep(1.1)  # rclone's --dir-cache-time
        await assert_nothing(dst, s3_server, "f")
        # the next attempt goes through untouched
        assert (await dst.write("f", stream(data), size)).checksum == adler32_of(data)
        assert (s3_server.directory / BUCKET / dst.settings.prefix / "f").read_bytes() == data
    finally:
        await proxy.close()
