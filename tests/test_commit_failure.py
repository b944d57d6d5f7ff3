"""A writer whose database commit fails changes nothing in memory and gets a clear error, while
readers keep being served (issue 2, acceptance; DESIGN.md "Durability and safety contract").

- a constraint the in-memory checks cannot foresee (a row written behind the server's back):
  409 naming the constraint; the other writes of the same group commit still succeed;
- PostgreSQL stopped under a running server: 503, reads answered meanwhile, writes work again
  once it is back, and what was written then survives a restart;
- SQLite locked by another connection past the busy timeout: the same;
- a commit whose answer is lost (COMMIT reached PostgreSQL, the connection broke before the
  reply): whatever the server answers must be true, and its memory must equal the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from inventory import model
from inventory.client import Client
from inventory.store.claim import CLAIM_KEY
from tests.conftest import InProcessServer, wait_healthy
from tests.pgcluster import PgCluster, throwaway_cluster

# verify_ingest off: a storage this test server cannot reach (its root is not a real
# directory); what it tests is not ingest, which tests/test_ingest.py covers.
STORAGE = {"name": "disk1", "kind": "posix", "root": "/data/disk1", "capacity": "1 PB",
           "phase": "GAS", "config": {"verify_ingest": False}}


def item(name: str, **kw: Any) -> dict[str, Any]:
    return {"item_name": name, "storage": "disk1", "size": 100, "checksum": "00ff00ff",
            "metadata": {"name": name}, **kw}


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(url + "/v1/items", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


def assert_error(status: int, body: Any, expected_status: int, code: str) -> dict[str, Any]:
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    assert "field" in error
    return error


def same_memory(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("version", "items", "replicas", "storages", "items_by_state"):
        assert a[key] == b[key], (key, a[key], b[key])


async def names_in(url: str) -> dict[str, dict[str, Any]]:
    async with Client(url, token="") as client:
        return {i["item_name"]: i async for i in client.find_items("*", version="all",
                                                                   limit=10_000)}


async def reads_answer(session: aiohttp.ClientSession, url: str, oid: str,
                       expected_health: dict[str, Any]) -> None:
    """GET health, an item and a name search; each must answer 200 and see no change. (How fast
    is for benchmarks: that they answer at all while a write is stuck is what the tests count.)"""
    for path in ("/v1/health", f"/v1/items/{oid}", "/v1/items?name=*&limit=5"):
        async with session.get(url + path) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        if path == "/v1/health":
            same_memory(body, expected_health)


# ----------------------------------------------------------- constraint the checks cannot see


async def insert_behind_the_back(db_url: str, name: str, version: int) -> None:
    """A data_item row the running server does not know about."""
    oid = model.format_uuid(model.new_oid())
    row = (oid, name, version, "file", "INITIALISED", "SOLID", model.now())
    sql = ('INSERT INTO data_item (oid, item_name, item_version, item_type, item_state, '
           'target_phase, created) VALUES ({})')
    if db_url.startswith("sqlite:"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:"), timeout=30)
        try:
            with conn:
                conn.execute(sql.format(", ".join("?" * 7)), row)
        finally:
            conn.close()
    else:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(sql.format(", ".join(f"${i}" for i in range(1, 8))), *row)
        finally:
            await conn.close()


class WriteLock:
    """Holds the database's write lock from another connection, so the server's next commit
    waits (SQLite: ``BEGIN EXCLUSIVE``; PostgreSQL: a lock on the row every commit updates)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self._sqlite: sqlite3.Connection | None = None
        self._pg: asyncpg.Connection | None = None

    async def __aenter__(self) -> WriteLock:
        if self.db_url.startswith("sqlite:"):
            self._sqlite = sqlite3.connect(self.db_url.removeprefix("sqlite:"), timeout=30,
                                           isolation_level=None)
            self._sqlite.execute("BEGIN EXCLUSIVE")
        else:
            self._pg = await asyncpg.connect(self.db_url)
            await self._pg.execute("BEGIN")
            await self._pg.execute("LOCK TABLE inventory_state IN EXCLUSIVE MODE")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
        if self._pg is not None:
            try:  # the database may have been stopped meanwhile
                await self._pg.execute("ROLLBACK")
                await self._pg.close()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                self._pg.terminate()


async def test_constraint_violation_in_a_group_fails_only_its_write(server: InProcessServer):
    url, db_url = server.url, server.db_url
    await server.client.add_storage(**STORAGE)
    first = await server.client.add_item(**item("seed/0"))
    await insert_behind_the_back(db_url, "ghost", 1)  # memory thinks "ghost" version 1 is free
    before = await server.client.health()

    async with aiohttp.ClientSession() as session:
        # Hold the database's write lock so that the writer's next commit waits: every request
        # sent meanwhile queues behind it and goes into ONE group commit together.
        async with WriteLock(db_url):
            primer = asyncio.create_task(post(session, url, item("primer")))
            await asyncio.sleep(0.3)  # the writer took it and waits for the database
            bad = asyncio.create_task(post(session, url, [item("batch/a"), item("ghost"),
                                                          item("batch/c")]))
            good = [asyncio.create_task(post(session, url, item(f"good/{i}")))
                    for i in range(5)]
            good.append(asyncio.create_task(post(session, url, [item("good/list/1"),
                                                                item("good/list/2")])))
            await asyncio.sleep(0.5)
            # Readers are served while the writer waits for the database.
            await reads_answer(session, url, first["oid"], before)
            assert not primer.done() and not bad.done()
        assert (await primer)[0] == 201
        status, body = await bad
        error = assert_error(status, body, 409, "conflict")
        assert "item_name" in error["message"], f"the error does not name the constraint: {error}"
        for task in good:
            status, body = await task
            assert status == 201, body

    after = await server.client.health()
    found = await names_in(url)
    expected = {"seed/0", "primer", *(f"good/{i}" for i in range(5)), "good/list/1",
                "good/list/2"}
    assert set(found) == expected, "memory holds a part of the refused request"
    assert after["items"] == before["items"] + 8 and after["replicas"] == before["replicas"] + 8
    assert after["version"] > before["version"]
    # The database agrees with memory (plus the row written behind the server's back).
    await server.restart()
    reloaded = await names_in(server.url)
    assert set(reloaded) == expected | {"ghost"}
    assert {n: i for n, i in reloaded.items() if n != "ghost"} == found
    assert reloaded["ghost"]["state"] == "INITIALISED"
    assert (await server.client.health())["version"] == after["version"]


async def test_constraint_violation_of_a_lone_write_names_the_constraint(server: InProcessServer):
    await server.client.add_storage(**STORAGE)
    await insert_behind_the_back(server.db_url, "ghost", 1)
    before = await server.client.health()
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, server.url, item("ghost"))
    error = assert_error(status, body, 409, "conflict")
    same_memory(await server.client.health(), before)
    assert [i async for i in server.client.find_items("ghost")] == []
    # The message says which constraint refused it, as when the write was part of a group.
    assert "item_name" in error["message"], error


# ----------------------------------------------------------------- PostgreSQL stops


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of this test alone, removed at the end whatever happened."""
    yield from throwaway_cluster()


@pytest.mark.slow
@pytest.mark.postgres
async def test_postgresql_stopped_refuses_writes_and_keeps_serving_reads(pg_cluster,
                                                                         server_process):
    srv = server_process(pg_cluster.url).start()
    await wait_healthy(srv.url)
    async with Client(srv.url, token="") as client:
        await client.add_storage(**STORAGE)
        first = await client.add_item(**item("before/0"))
        await client.add_items(item(f"before/{i}") for i in range(1, 50))
        before = await client.health()
    before_items = await names_in(srv.url)

    timeout = aiohttp.ClientTimeout(total=120)
    refused = ["inflight/single", "inflight/list/1", "inflight/list/2", "down/single",
               "down/list/1", "down/list/2"]
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # 1. PostgreSQL dies in the middle of a commit: a lock held from another connection
        # keeps the writer's transaction open in the database until the crash.
        async with WriteLock(pg_cluster.url):
            writes = asyncio.gather(
                post(session, srv.url, item("inflight/single")),
                post(session, srv.url, [item("inflight/list/1"), item("inflight/list/2")]),
            )
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # the writer waits in the database meanwhile
                await reads_answer(session, srv.url, first["oid"], before)
                await asyncio.sleep(0.05)
            assert not writes.done(), await writes
            await asyncio.to_thread(pg_cluster.stop, "immediate")
        for status, body in await writes:
            error = assert_error(status, body, 503, "unavailable")
            assert "database" in error["message"]
        # 2. PostgreSQL is down: new writes fail too (the writer survived the failure) while
        # reads keep being answered.
        writes = asyncio.gather(
            post(session, srv.url, item("down/single")),
            post(session, srv.url, [item("down/list/1"), item("down/list/2")]),
        )
        while not writes.done():
            await reads_answer(session, srv.url, first["oid"], before)
        for status, body in await writes:
            error = assert_error(status, body, 503, "unavailable")
            assert "database" in error["message"]
        await reads_answer(session, srv.url, first["oid"], before)
    same_memory(await wait_healthy(srv.url), before)
    assert await names_in(srv.url) == before_items

    pg_cluster.start()
    async with Client(srv.url, token="") as client:
        back = await client.add_item(**item("back/single"))
        back_list = await client.add_items([item("back/list/1"), item("back/list/2")])
        after = await client.health()
    assert after["items"] == before["items"] + 3
    assert after["version"] > before["version"]
    expected = await names_in(srv.url)
    assert set(expected) == set(before_items) | {"back/single", "back/list/1", "back/list/2"}

    srv.kill()
    srv = server_process(pg_cluster.url).start()
    restarted = await wait_healthy(srv.url)
    same_memory(restarted, after)
    found = await names_in(srv.url)
    assert found == expected
    assert found["back/single"] == back
    assert [found[i["item_name"]]["oid"] for i in back_list] == [i["oid"] for i in back_list]
    assert not set(refused) & set(found)


# ----------------------------------------------------------------- SQLite locked


@pytest.mark.slow
async def test_sqlite_locked_past_busy_timeout_refuses_writes_and_keeps_serving_reads(
        sqlite_server: InProcessServer):
    server = sqlite_server
    url = server.url
    await server.client.add_storage(**STORAGE)
    first = await server.client.add_item(**item("before/0"))
    before = await server.client.health()
    before_items = await names_in(url)

    async with aiohttp.ClientSession() as session:
        # Another process holds the write lock longer than the server's busy timeout (5 s).
        async with WriteLock(server.db_url):
            started = time.monotonic()
            writes = asyncio.gather(
                post(session, url, item("locked/single")),
                post(session, url, [item("locked/list/1"), item("locked/list/2")]),
            )
            reads = 0
            while not writes.done():
                await reads_answer(session, url, first["oid"], before)
                reads += 1
                await asyncio.sleep(0.05)
            waited = time.monotonic() - started
            results = await writes
        for status, body in results:
            error = assert_error(status, body, 503, "unavailable")
            assert "locked" in error["message"], error
        # Reads blocked behind the stuck write would have made one round at most (answered
        # once the write gave up); several rounds while it waited show they were not. No
        # wall-clock bound: under load a round may take long, but it still ends before the write.
        assert reads >= 3, f"only {reads} read rounds answered in {waited:.1f} s of failing write"
    same_memory(await server.client.health(), before)
    assert await names_in(url) == before_items

    # The lock is gone: writes work again, and survive a restart; the refused ones never appear.
    back = await server.client.add_item(**item("back/single"))
    after = await server.client.health()
    assert after["items"] == before["items"] + 1
    await server.restart()
    same_memory(await server.client.health(), after)
    found = await names_in(server.url)
    assert found["back/single"] == back
    assert set(found) == set(before_items) | {"back/single"}


# ------------------------------------------------- a commit whose answer never comes back


class CommitCutter:
    """A TCP proxy in front of PostgreSQL that breaks one connection around a COMMIT.

    Once ``armed`` it forwards the next COMMIT and then, with ``where``:
    - ``"before-answer"``: waits for PostgreSQL to answer that it committed and cuts the
      connection instead of passing the answer on: the transaction is durable but its client
      cannot know (an "in-doubt" commit, what a network failure or a crash of PostgreSQL at the
      wrong moment produces);
    - ``"after-answer"``: passes the answer on, and cuts the connection at the client's next
      message on it (asyncpg's pool resets a connection it is given back: a crash a moment
      after the commit).
    """

    def __init__(self, host: str, port: int, where: str) -> None:
        assert where in ("before-answer", "after-answer")
        self.target = (host, port)
        self.where = where
        self.armed = False
        self.fired = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        committing = asyncio.Event()  # this connection sent the COMMIT to break around

        def cut() -> None:
            self.fired.set()
            client_w.transport.abort()
            server_w.close()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if committing.is_set() and self.where == "after-answer":
                    return cut()  # the first message after the committed transaction
                if self.armed and b"COMMIT" in data:
                    self.armed = False
                    committing.set()
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if committing.is_set() and self.where == "before-answer":
                    if b"COMMIT" in data:  # CommandComplete: the transaction is durable
                        return cut()
                    continue
                client_w.write(data)
                await client_w.drain()
            client_w.transport.abort()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)


async def claim_released(pg_url: str, timeout: float = 30) -> None:
    """Wait (serving this event loop, where the proxy runs) until no session holds the
    single-writer claim of the database at ``pg_url``."""
    conn = await asyncpg.connect(pg_url)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND "
                "database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                CLAIM_KEY):
            assert time.monotonic() < deadline, "the killed server's claim was never released"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("where", [
    "before-answer",
    "after-answer",
])
async def test_in_doubt_commit_leaves_memory_equal_to_the_database(pg_url, server_process,
                                                                   where):
    head, _, database = pg_url.rpartition("/")
    host_port = head.rpartition("@")[2]
    host, _, port = host_port.partition(":")
    cutter = CommitCutter(host, int(port or 5432), where)
    proxy_port = await cutter.start()
    try:
        db_url = f"{head.rpartition('@')[0]}@127.0.0.1:{proxy_port}/{database}"
        srv = server_process(db_url)
        await asyncio.to_thread(srv.start)  # the proxy runs on this event loop
        await wait_healthy(srv.url)
        async with Client(srv.url, token="") as client:
            await client.add_storage(**STORAGE)
            await client.add_item(**item("before"))
        async with aiohttp.ClientSession() as session:
            cutter.armed = True
            status, body = await post(session, srv.url, item("in-doubt"))
            # The database is reachable again at once: the next write goes through (after an
            # "after-answer" cut, its first message on the writer's connection meets the cut).
            later_status, _ = await post(session, srv.url, item("later"))
            assert cutter.fired.is_set(), "the proxy did not cut the connection"
            assert later_status == 201
        memory = await names_in(srv.url)
        memory_health = await wait_healthy(srv.url)
        srv.kill()
        await claim_released(pg_url)  # the proxy ends the killed server's session
        srv = server_process(pg_url).start()  # straight to PostgreSQL, no proxy
        database_view = await names_in(srv.url)
        database_health = await wait_healthy(srv.url)
    finally:
        await cutter.close()
    # Whatever the server answered, it must be true: 201 and the item is durable, or an error
    # and the item is not in the database.
    if status == 201:
        assert "in-doubt" in database_view
    else:
        assert "in-doubt" not in database_view, (
            f"answered {status} {body} for a write the database committed")
    # And the running server's memory must be what the database holds.
    assert memory == database_view
    same_memory(memory_health, database_health)
