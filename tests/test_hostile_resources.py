"""Hostile clients and resource limits (issue 16, Resources): no client can take the server from
the others. Snapshots and long polls are bounded per server (503 busy with Retry-After beyond),
a snapshot streams only as fast as its reader takes it and ends when the reader stalls, a plan's
decisions may not expand past what its decisions can hold, and slow clients (a byte a second)
neither keep a connection for ever nor lock others out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import sqlite3
import time
import zlib
from pathlib import Path

import aiohttp
import msgpack
import pytest

from detox.cycle import plan_header
from inventory.server.limits import ServerLimits
from policies import load_policy_text
from tests.conftest import InProcessServer, adler, wait_healthy

POLICY = """
partition "all" { }
detox {
    default protect "keep"
}
"""
ITEMS = 20_000  # enough snapshot (~8 MB) to outlast every socket buffer between the two sides


@pytest.fixture(scope="module")
def big_db(tmp_path_factory) -> Path:
    """A SQLite inventory of ITEMS items with 2 replicas each, made once for the module."""
    from benchmarks.generate import Spec, write_sqlite

    path = tmp_path_factory.mktemp("big") / "inventory.sqlite"
    write_sqlite(str(path), Spec(items=ITEMS))
    return path


@contextlib.asynccontextmanager
async def started(db: Path, tmp_path: Path, **limits: object):
    """An in-process server on a copy of ``db`` with these ``limits:`` settings."""
    copy = tmp_path / "inventory.sqlite"
    if db != copy:
        shutil.copy(db, copy)
    srv = InProcessServer(f"sqlite:{copy}", tmp_path, limits=ServerLimits(**limits))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def stalled_get(url: str, path: str) -> socket.socket:
    """A client that asks for ``path`` and then reads only the status line: a tiny receive
    buffer, so the server's stream backs up at once."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    sock.settimeout(30)
    assert sock.recv(12) == b"HTTP/1.1 200"
    return sock


async def answer(session: aiohttp.ClientSession, url: str) -> tuple[int, dict, dict | None]:
    async with session.get(url) as resp:
        body = await resp.read()
        data = None
        if resp.content_type == "application/json":
            data = await resp.json()
        return resp.status, dict(resp.headers), data if data is not None else {"bytes": len(body)}


async def eventually(check, seconds: float = 30.0) -> None:
    """Poll ``check`` (an async callable answering a bool) until true; fail after ``seconds``
    (a bound on a liveness wait, not a measured time)."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- snapshots

async def test_snapshots_past_the_bound_are_refused_and_a_leaving_client_frees_its_slot(
        big_db, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dlm.server")
    async with started(big_db, tmp_path, max_snapshots=2, snapshot_buffer=64 << 10) as srv:
        holders = [await asyncio.to_thread(stalled_get, srv.url, "/v1/snapshot")
                   for _ in range(2)]
        async with aiohttp.ClientSession() as http:
            for path in ("/v1/snapshot", "/v1/snapshot/columns?with=name"):
                status, headers, body = await answer(http, srv.url + path)
                assert status == 503
                assert headers["Retry-After"] == "5"
                assert body["error"]["code"] == "busy"
                assert "limits.max_snapshots" in body["error"]["message"]
            # everything else is answered meanwhile
            status, _, health = await answer(http, srv.url + "/v1/health")
            assert status == 200 and health["items"] == ITEMS
            status, _, _ = await answer(http, srv.url + "/v1/items?limit=5")
            assert status == 200

            holders.pop(0).close()  # a client leaves mid-stream: its slot is free again

            async def snapshot_served() -> bool:
                status, _, body = await answer(http, srv.url + "/v1/snapshot")
                return status == 200 and body["bytes"] > 1_000_000

            await eventually(snapshot_served)
        holders.pop().close()
    left = [r for r in caplog.records if "the client left" in r.getMessage()]
    assert left and all(r.levelno == logging.INFO and not r.exc_info for r in left)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_stream_whose_reader_stalls_is_ended_and_frees_its_slot(big_db, tmp_path,
                                                                        caplog):
    caplog.set_level(logging.INFO, logger="dlm.server")
    async with started(big_db, tmp_path, max_snapshots=1, snapshot_buffer=64 << 10,
                       stall_timeout=0.5) as srv:
        holder = await asyncio.to_thread(stalled_get, srv.url, "/v1/snapshot")
        async with aiohttp.ClientSession() as http:

            async def slot_free() -> bool:
                status, _, _ = await answer(http, srv.url + "/v1/snapshot/columns")
                return status == 200

            await eventually(slot_free)
        # the stalled stream was cut: reading what reached this side never gives its end
        received = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while chunk := await asyncio.to_thread(holder.recv, 1 << 20):
                received += chunk
        holder.close()
        assert not received.endswith(b"0\r\n\r\n")
    stalled = [r for r in caplog.records if "read nothing" in r.getMessage()]
    assert stalled and stalled[0].levelno == logging.INFO


async def test_snapshot_limits_are_checked_in_the_config(tmp_path):
    from inventory.cli import CLIError
    from inventory.serve_cli import server_limits

    assert server_limits({"snapshot_buffer": "1 MiB"}, "c").snapshot_buffer == 1 << 20
    for bad in ({"max_snapshots": 0}, {"stall_timeout": -1}, {"nope": 1},
                {"max_connections": "many"}, {"header_timeout": True}):
        with pytest.raises(CLIError, match="limits"):
            server_limits(bad, "c")
    with pytest.raises(CLIError, match="limits: expected a mapping"):
        server_limits([1], "c")


# --------------------------------------------------------------------------- long polls

async def test_long_polls_past_the_bound_are_refused(tmp_path):
    async with started(tmp_path / "inventory.sqlite", tmp_path, max_long_polls=2) as srv:
        c = srv.client
        version = (await c.request("GET", "/v1/health"))["version"]
        url = f"{srv.url}/v1/changes?since={version}"
        async with aiohttp.ClientSession() as http:
            # three polls for two places: one is refused at once, two wait
            polls = {asyncio.create_task(answer(http, url + "&wait=60")) for _ in range(3)}
            done, polls = await asyncio.wait(polls, timeout=30,
                                             return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1 and len(polls) == 2
            status, headers, body = done.pop().result()
            assert status == 503
            assert headers["Retry-After"] == "1"
            assert body["error"]["code"] == "busy"
            assert "limits.max_long_polls" in body["error"]["message"]
            # a poll that needs no waiting (changes exist past its version) is never refused
            (tmp_path / "disk1").mkdir()
            await c.add_storage(name="disk1", kind="posix", root=str(tmp_path / "disk1"),
                                capacity=10**9, phase="GAS")
            for poll in polls:  # the write woke the waiting polls
                status, _, body = await poll
                assert status == 200 and body["transactions"]
            status, _, body = await answer(http, url + "&wait=60")
            assert status == 200 and body["transactions"]


# --------------------------------------------------------------------------- plans

def _bomb(expanded: int) -> bytes:
    """zlib of ``expanded`` zero bytes, made a MiB at a time (about 1/1000 of that size)."""
    packer = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    out = bytearray()
    for _ in range(expanded >> 20):
        out += packer.compress(zeros)
    return bytes(out + packer.flush())


async def test_a_decompression_bomb_in_a_plan_is_refused(sqlite_server, tmp_path):
    c = sqlite_server.client
    (tmp_path / "disk1").mkdir()
    await c.add_storage(name="disk1", kind="posix", root=str(tmp_path / "disk1"),
                        capacity=10**9, phase="GAS", config={"verify_ingest": False})
    await c.add_item(item_name="a", storage="disk1", size=1, checksum=adler(b"a"))
    header = plan_header(load_policy_text(POLICY, "p.policy"), POLICY, 0, 1.7e9)
    plan = {**header, "expirations": [], "deletions": [], "summary": {}}
    bomb = _bomb(256 << 20)
    assert len(bomb) < 1 << 20
    async with aiohttp.ClientSession() as http:
        async def post(decisions: bytes) -> tuple[int, dict]:
            async with http.post(sqlite_server.url + "/v1/cycles/detox",
                                 data=msgpack.packb({**plan, "decisions": decisions}),
                                 headers={"Content-Type": "application/msgpack"}) as resp:
                return resp.status, await resp.json()

        status, body = await post(bomb)
        assert status == 413, body
        assert body["error"]["field"] == "decisions"
        assert "limits.max_decision_bytes" in body["error"]["message"]
        for junk in (b"not zlib", zlib.compress(b"x" * 1000)[:-6], zlib.compress(b"x") + b"more"):
            status, body = await post(junk)
            assert status == 400 and body["error"]["field"] == "decisions", body
        # nothing of the refused plans was recorded
        history = await c.request("GET", "/v1/history")
        assert history["cycles"] == []
        # a plan whose decisions fit is taken
        fine = zlib.compress(msgpack.packb({"columns": ["uid"], "rows": [["x"]]}))
        status, body = await post(fine)
        assert status == 201, body
        cycle = body["id"]
    # a plan stored before its POST was measured (here: written into the database) is not
    # expanded past the bound when read: it reads as no decisions
    rows = [[f"uid{i:08d}", 1, "keep", "keep", 3, i] for i in range(200_000)]
    big = zlib.compress(msgpack.packb({"columns": ["uid", "storage_id", "outcome", "rule",
                                                   "line", "size"], "rows": rows}))
    with sqlite3.connect(tmp_path / "inventory.sqlite") as db:
        db.execute("UPDATE cycle_report SET decisions = ? WHERE cycle_id = ?", (big, cycle))
    answer = await c.request("GET", f"/v1/history/{cycle}/decisions")
    assert answer["decisions"] == []


# --------------------------------------------------------------------------- slow clients

def _config(tmp_path: Path, **limits: object) -> Path:
    path = tmp_path / "dlm.yaml"
    path.write_text("limits:\n" + "".join(f"  {k}: {v}\n" for k, v in limits.items()))
    return path


def _trickle(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(data)
    return sock


def _closed_by_server(sock: socket.socket, seconds: float) -> bool:
    """True once the server closed the connection (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


async def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(server_process, tmp_path):
    server = server_process(None, "--config", str(_config(tmp_path, header_timeout=1)))
    server.start()
    await wait_healthy(server.url)
    sock = await asyncio.to_thread(_trickle, server.port, b"GET /v1/health HTTP/1.1\r\n")

    def drip() -> bool:
        """A header byte every 0.2 s; True when the server closed the connection."""
        with contextlib.suppress(OSError):
            for _ in range(150):
                sock.sendall(b"X")
                time.sleep(0.2)
            return False
        return True

    closed = await asyncio.to_thread(drip) or await asyncio.to_thread(_closed_by_server,
                                                                        sock, 1)
    sock.close()
    assert closed


async def test_a_body_that_does_not_arrive_is_answered_408(server_process, tmp_path):
    server = server_process(None, "--config", str(_config(tmp_path, body_timeout=1)))
    server.start()
    await wait_healthy(server.url)
    sock = await asyncio.to_thread(_trickle, server.port, (
        b"POST /v1/storages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{\"name\": "))
    sock.settimeout(30)
    head = await asyncio.to_thread(sock.recv, 65536)
    sock.close()
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    assert b'"field":"body"' in head.replace(b" ", b"")
    assert b"limits.body_timeout" in head


async def test_health_answers_while_hundreds_of_slow_connections_are_held(server_process,
                                                                          tmp_path):
    """300 connections each holding a half-sent request head (2,000 in the benchmark), more
    than max_connections allows: the idle ones make room and health still answers."""
    server = server_process(None, "--config", str(_config(tmp_path, max_connections=200)))
    server.start()
    await wait_healthy(server.url)
    socks = [await asyncio.to_thread(_trickle, server.port, b"GET /v1/health HTTP/1.1\r\n")
             for _ in range(300)]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for _ in range(5):
                status, _, health = await answer(http, server.url + "/v1/health")
                assert status == 200 and health["status"] == "ok"
        # the oldest slow connections were closed to make room for the newer ones
        assert await asyncio.to_thread(_closed_by_server, socks[0], 10)
    finally:
        for sock in socks:
            sock.close()
