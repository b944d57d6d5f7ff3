"""One writer per database (issue 15, item 1): a second ``dlm serve`` on the same database is
refused naming the holder; a killed server frees the claim; a server whose PostgreSQL session
is terminated refuses writes (503) until it holds the claim again, and stops for good if
another server wrote meanwhile. Real processes throughout (``server_process``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from inventory.client import Client
from inventory.store import ClaimRefused, ClaimStale, open_store
from inventory.store.claim import CLAIM_KEY, LOCK_SUFFIX
from tests.conftest import REPO, ServerProcess, free_port, wait_healthy

# verify_ingest off: the storage's root is not a real directory (no payload is checked)
STORAGE = {"name": "disk1", "kind": "posix", "root": "/data/disk1", "capacity": "1 PB",
           "phase": "GAS", "config": {"verify_ingest": False}}
WAIT = 60  # seconds any single step may take before the test gives up (not a timing assert)


def item(name: str) -> dict[str, Any]:
    return {"item_name": name, "storage": "disk1", "size": 100, "checksum": "00ff00ff"}


def serve(port: int, data_dir: str, db_url: str | None) -> subprocess.CompletedProcess:
    """``dlm serve`` to completion: a refused one exits at once."""
    args = [sys.executable, "-m", "inventory.cli", "serve", "--port", str(port),
            "--data-dir", data_dir, *(["--db", db_url] if db_url else [])]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=WAIT)


def assert_refused(result: subprocess.CompletedProcess, holder: ServerProcess, port: int) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("dlm: error: another dlm server writes"), line
    assert f"host={socket.gethostname()}" in line and f"pid={holder.proc.pid}" in line, line
    assert "since=" in line, line
    with pytest.raises(OSError):  # it never listened
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def names_in(url: str) -> set[str]:
    async with Client(url, token="") as client:
        return {i["item_name"] async for i in client.find_items("*", limit=10_000)}


# ------------------------------------------------------------------ second start, kill -9


async def test_a_second_server_on_the_same_database_is_refused(db_url, server_process, tmp_path):
    first = server_process(db_url).start()
    await wait_healthy(first.url)
    async with Client(first.url, token="") as client:
        await client.add_storage(**STORAGE)
        await client.add_item(**item("before"))
        before = await client.health()
    port = free_port()
    # another data directory, the same database
    result = await asyncio.to_thread(serve, port, str(tmp_path / "other"), db_url)
    assert_refused(result, first, port)
    async with Client(first.url, token="") as client:
        assert (await client.health())["version"] == before["version"]  # nothing written
        await client.add_item(**item("after"))  # the holder writes on
    assert await names_in(first.url) == {"before", "after"}


async def test_sqlite_the_lock_is_next_to_the_database_file(server_process, tmp_path):
    """The default database of a data directory, reached through the same --data-dir, through
    --db with another data directory, and through a symbolic link: one claim."""
    first = server_process(None).start()  # --data-dir tmp_path/data
    await wait_healthy(first.url)
    database = tmp_path / "data" / "inventory.sqlite"
    lock = tmp_path / "data" / ("inventory.sqlite" + LOCK_SUFFIX)
    assert lock.read_text().startswith(f"host={socket.gethostname()} pid={first.proc.pid} ")
    (tmp_path / "link.sqlite").symlink_to(database)
    for data_dir, db in ((tmp_path / "data", None), (tmp_path / "x", f"sqlite:{database}"),
                         (tmp_path / "y", f"sqlite:{tmp_path / 'link.sqlite'}")):
        port = free_port()
        assert_refused(await asyncio.to_thread(serve, port, str(data_dir), db), first, port)


async def test_sqlite_a_removed_lock_file_does_not_let_a_second_server_in(server_process,
                                                                          tmp_path):
    """Someone deletes the lock file under a running server: the claim is the lock on the
    database file itself, so a second server is still refused; the first writes on and puts
    its holder line back."""
    a = server_process(None).start()
    await wait_healthy(a.url)
    async with Client(a.url, token="") as client:
        await client.add_storage(**STORAGE)
        await client.add_item(**item("by-a"))
    lock = tmp_path / "data" / ("inventory.sqlite" + LOCK_SUFFIX)
    lock.unlink()
    port = free_port()
    result = await asyncio.to_thread(serve, port, str(tmp_path / "data"), None)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "holds the database file itself" in line, line
    async with Client(a.url, token="") as client:
        await client.add_item(**item("a-again"))
        assert (await client.health())["claim_lost"] is None
    assert lock.read_text().startswith(f"host={socket.gethostname()} pid={a.proc.pid} ")
    assert await names_in(a.url) == {"by-a", "a-again"}


async def test_sqlite_a_hard_link_to_the_database_is_the_same_claim(server_process, tmp_path):
    """``ln inventory.sqlite /x/hard.sqlite; dlm serve --db sqlite:/x/hard.sqlite``: another
    lock file, the same database file: refused."""
    a = server_process(None).start()
    await wait_healthy(a.url)
    async with Client(a.url, token="") as client:
        await client.add_storage(**STORAGE)
    (tmp_path / "x").mkdir()
    hard = tmp_path / "x" / "hard.sqlite"
    os.link(tmp_path / "data" / "inventory.sqlite", hard)
    port = free_port()
    result = await asyncio.to_thread(serve, port, str(tmp_path / "x"), f"sqlite:{hard}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("dlm: error: another dlm server writes"), line
    assert "holds the database file itself" in line and "hard link" in line, line
    async with Client(a.url, token="") as client:  # the holder writes on
        await client.add_item(**item("after"))


async def test_sqlite_the_file_lock_survives_sqlite_closing_its_descriptors(tmp_path):
    """The claim's ``flock`` on the database file is not SQLite's ``fcntl`` lock: a
    connection of this process opened and closed on the same file (which drops every ``fcntl``
    lock this process holds on it) leaves the claim held, and a store reaching the file by a
    hard link is refused."""
    import sqlite3

    database = tmp_path / "inventory.sqlite"
    first = open_store(f"sqlite:{database}", str(tmp_path))
    (tmp_path / "x").mkdir()
    try:
        await first.claim()
        await first.open()
        await first.commit([], 1)
        os.link(database, tmp_path / "x" / "hard.sqlite")
        for _ in range(3):
            with contextlib.closing(sqlite3.connect(database)) as conn:
                conn.execute("SELECT count(*) FROM data_item").fetchone()
        second = open_store(f"sqlite:{tmp_path / 'x' / 'hard.sqlite'}", str(tmp_path / "x"))
        with pytest.raises(ClaimRefused, match="holds the database file itself"):
            await second.claim()
        await second.close()
        assert first.holds_claim()
        await first.commit([], 2)
    finally:
        await first.close()


async def test_sqlite_a_replaced_database_file_is_a_lost_claim_at_once(server_process,
                                                                      tmp_path):
    """The database file is replaced under a running server: /v1/health says so at once (the
    inode check commits do), writes are refused, and a server on the new file may start."""
    a = server_process(None).start()
    await wait_healthy(a.url)
    async with Client(a.url, token="") as client:
        await client.add_storage(**STORAGE)
        await client.add_item(**item("by-a"))
    replace_database(tmp_path / "data" / "inventory.sqlite")
    health = await wait_healthy(a.url)
    assert "replaced" in health["claim_lost"], health
    async with aiohttp.ClientSession() as session:
        status, body, _headers = await post(session, a.url, "refused")
        assert status == 503 and "replaced" in body["error"]["message"], body
    b = await start_when_free(server_process)
    async with Client(b.url, token="") as client:
        await client.add_item(**item("by-b"))
    assert "replaced" in (await wait_healthy(a.url))["claim_lost"]


def replace_database(path) -> None:
    """A copy of the database file renamed over it (another inode, the same content)."""
    import sqlite3

    copy = path.with_name("copy.sqlite")
    with contextlib.closing(sqlite3.connect(path)) as src, \
            contextlib.closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    os.replace(copy, path)


async def start_when_free(server_process, *extra: str) -> ServerProcess:
    """A server on the data directory, once the one there has let go of its claim."""
    deadline = time.monotonic() + WAIT
    while True:
        srv = server_process(None, *extra)
        try:
            srv.start()
        except RuntimeError:
            assert time.monotonic() < deadline, "the claim was never let go"
            await asyncio.sleep(0.2)
            continue
        await wait_healthy(srv.url)
        return srv


async def test_after_kill_9_a_new_server_starts_and_has_every_acknowledged_write(
        db_url, server_process):
    first = server_process(db_url).start()
    await wait_healthy(first.url)
    async with Client(first.url, token="") as client:
        await client.add_storage(**STORAGE)
        acked = {(await client.add_item(**item(f"k/{i}")))["item_name"] for i in range(20)}
        version = (await client.health())["version"]
    first.kill()
    second = server_process(db_url).start()
    health = await wait_healthy(second.url)
    assert health["version"] == version
    assert await names_in(second.url) == acked
    async with Client(second.url, token="") as client:
        await client.add_item(**item("by-the-second"))


async def test_read_workers_start_beside_the_writer_without_the_claim(db_url, server_process):
    srv = server_process(db_url, "--workers", "2").start()
    deadline = time.monotonic() + WAIT
    while not all(w["serving"] for w in (await wait_healthy(srv.url))["read_workers"]):
        assert time.monotonic() < deadline, "the read worker never served"
        await asyncio.sleep(0.1)
    async with Client(srv.url, token="") as client:
        await client.add_storage(**STORAGE)
        await client.add_item(**item("through-the-primary"))


# ------------------------------------------------------------------ the store classes


async def test_store_claim_is_exclusive_and_commit_takes_it(db_url, tmp_path):
    first = open_store(db_url, str(tmp_path))
    second = open_store(db_url, str(tmp_path))
    try:
        await first.claim()
        await first.open()
        assert first.holds_claim()
        with pytest.raises(ClaimRefused) as refused:
            await second.claim()
        assert f"pid={os.getpid()}" in refused.value.holder
        assert not second.holds_claim()
        await second.open()  # a reader (a read worker) opens without the claim
        with pytest.raises(ClaimRefused):
            await second.commit([], 1)  # and cannot write
        await first.close()
        # released: a commit takes the claim, checking the database is where memory is
        with pytest.raises(ClaimStale):
            await second.commit([], 5)
        assert second.holds_claim()
        await second.commit([], 1)
        assert await second.committed_version() == 1
    finally:
        await first.close()
        await second.close()


# ------------------------------------------------------------------ PostgreSQL sessions


async def terminate(conn: asyncpg.Connection, pid: int) -> int:
    """pg_terminate_backend on every session of the dlm server process ``pid``."""
    return await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE $1", f"% pid={pid}")


async def claim_from_test(conn: asyncpg.Connection, srv: ServerProcess) -> None:
    """Kill the server's claim session and take the claim on ``conn`` before it takes it back."""
    deadline = time.monotonic() + WAIT
    while True:
        await terminate(conn, srv.proc.pid)
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", CLAIM_KEY):
            return
        assert time.monotonic() < deadline, "could not take the claim from the server"
        await asyncio.sleep(0.01)


async def post(session: aiohttp.ClientSession, url: str, name: str) -> tuple[int, Any, Any]:
    async with session.post(url + "/v1/items", json=item(name)) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def assert_claim_503(status: int, body: Any, headers: Any, holder: str) -> None:
    assert status == 503, body
    assert headers.get("Retry-After") == "1"
    assert set(body) == {"error"} and body["error"]["code"] == "unavailable", body
    assert "field" in body["error"]
    assert holder in body["error"]["message"], body


@pytest.mark.postgres
async def test_terminated_session_refuses_writes_until_the_claim_is_back(pg_url,
                                                                        server_process):
    srv = server_process(pg_url).start()
    await wait_healthy(srv.url)
    async with Client(srv.url, token="") as client:
        await client.add_storage(**STORAGE)
        first = await client.add_item(**item("before"))
    other = await asyncpg.connect(pg_url, server_settings={
        "application_name": "dlm-serve host=elsewhere pid=4242"})
    try:
        await claim_from_test(other, srv)
        async with aiohttp.ClientSession() as session:
            for name in ("while-held/1", "while-held/2"):
                assert_claim_503(*await post(session, srv.url, name), "host=elsewhere pid=4242")
            async with session.get(f"{srv.url}/v1/items/{first['oid']}") as resp:
                assert resp.status == 200  # reads go on from memory
            assert "host=elsewhere pid=4242" in (await wait_healthy(srv.url))["claim_lost"]
    finally:
        await other.close()  # the other holder goes away without writing
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + WAIT
        while (answer := await post(session, srv.url, "after"))[0] != 201:
            assert answer[0] == 503, answer[1]
            assert time.monotonic() < deadline, "the server never took its claim back"
            await asyncio.sleep(0.05)
    health = await wait_healthy(srv.url)
    assert health["claim_lost"] is None
    srv.kill()
    again = server_process(pg_url).start()
    assert (await wait_healthy(again.url))["version"] == health["version"]
    assert await names_in(again.url) == {"before", "after"}


@pytest.mark.postgres
async def test_sessions_terminated_under_writes_lose_nothing_and_memory_stays_the_database(
        pg_url, server_process):
    """Nobody else takes the claim: the server takes it back each time and writes on; every
    answer is 201 or 503, every 201 is durable, and memory is what the database holds."""
    srv = server_process(pg_url).start()
    await wait_healthy(srv.url)
    async with Client(srv.url, token="") as client:
        await client.add_storage(**STORAGE)
    answers: list[tuple[str, int, Any]] = []
    done = asyncio.Event()

    async def writer(k: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
            for n in itertools.count():
                if done.is_set():
                    return
                status, body, _headers = await post(session, srv.url, f"t{k}/{n}")
                answers.append((f"t{k}/{n}", status, body))

    writers = [asyncio.create_task(writer(k)) for k in range(4)]
    admin = await asyncpg.connect(pg_url)
    try:
        for _ in range(10):
            await asyncio.sleep(0.1)
            # The server reconnects after each termination; on a loaded machine that may take
            # longer than the pause above: wait for a session to terminate (WAIT is a hang
            # guard, not a timing assert).
            deadline = time.monotonic() + WAIT
            while not await terminate(admin, srv.proc.pid):
                assert time.monotonic() < deadline, "the server never connected again"
                await asyncio.sleep(0.02)
    finally:
        done.set()
        await asyncio.gather(*writers)
        await admin.close()
    assert {status for _, status, _ in answers} <= {201, 503}, \
        [body for _, status, body in answers if status not in (201, 503)][:3]
    refusals = {body["error"]["message"] for _, status, body in answers if status == 503}
    internals = ("another operation", "cannot switch to state", "asyncpg", "Error:")
    assert not [m for m in refusals if any(word in m for word in internals)], refusals
    acked = {name for name, status, _ in answers if status == 201}
    assert acked, "nothing was acknowledged"
    print(f"10 terminations under writes: "
          f"{collections.Counter(status for _, status, _ in answers)}")
    async with aiohttp.ClientSession() as session:  # the claim is back: writes go through
        deadline = time.monotonic() + WAIT
        while (answer := await post(session, srv.url, "last"))[0] != 201:
            assert time.monotonic() < deadline, answer[1]
            await asyncio.sleep(0.05)
    memory = await names_in(srv.url)
    health = await wait_healthy(srv.url)
    log = srv.log_path.read_text()
    assert "was never retrieved" not in log and "Traceback" not in log, \
        [line for line in log.splitlines() if "never retrieved" in line or "Traceback" in line]
    srv.kill()
    again = server_process(pg_url).start()
    assert await names_in(again.url) == memory >= acked | {"last"}
    assert (await wait_healthy(again.url))["version"] == health["version"]


@pytest.mark.postgres
async def test_a_server_whose_claim_was_taken_and_written_under_exits(pg_url, server_process):
    srv = server_process(pg_url).start()
    await wait_healthy(srv.url)
    async with Client(srv.url, token="") as client:
        await client.add_storage(**STORAGE)
        await client.add_item(**item("before"))
    other = await asyncpg.connect(pg_url)
    try:
        await claim_from_test(other, srv)
        # the other holder writes: the inventory moves on without this server
        await other.execute("UPDATE inventory_state SET version = version + 1")
    finally:
        await other.close()
    code = await asyncio.to_thread(srv.proc.wait, WAIT)
    assert code == 3
    log = srv.log_path.read_text()
    assert "another server wrote while this one did not hold the write claim" in log
    assert "Traceback" not in log


@dataclass
class Answer:
    server: str
    name: str
    status: int  # 0: no answer (connection refused or reset)
    sent: int  # event-loop order of the request and of its answer
    answered: int
    retry_after: str | None = None


@pytest.mark.postgres
@pytest.mark.slow
async def test_two_servers_never_both_acknowledge_writes(pg_url, server_process):
    """A's sessions are terminated again and again while B starts, under writes to both. B
    takes the claim; from then on A answers 503; once B is killed, A finds that B wrote and
    exits. No write sent after one server acknowledged a write is acknowledged by the other,
    and every acknowledged write is in the database."""
    a = server_process(pg_url).start()
    await wait_healthy(a.url)
    async with Client(a.url, token="") as client:
        await client.add_storage(**STORAGE)
    b = server_process(pg_url)
    clock = itertools.count()
    answers: list[Answer] = []
    targets = {"A": a.url}
    done = asyncio.Event()

    async def writer(k: int) -> None:
        timeout = aiohttp.ClientTimeout(total=WAIT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for n in itertools.count():
                if done.is_set():
                    return
                for server, url in list(targets.items()):
                    name, sent = f"w{k}/{server}/{n}", next(clock)
                    try:
                        status, _body, headers = await post(session, url, name)
                        retry = headers.get("Retry-After")
                    except (aiohttp.ClientError, OSError):
                        status, retry = 0, None
                    answers.append(Answer(server, name, status, sent, next(clock), retry))
                await asyncio.sleep(0.01)

    def waiting(why: str) -> bool:
        assert time.monotonic() < deadline, f"{why}: {len(answers)} answers"
        return True

    writers = [asyncio.create_task(writer(k)) for k in range(3)]
    admin = await asyncpg.connect(pg_url)
    deadline = time.monotonic() + 2 * WAIT
    try:
        while sum(x.status == 201 for x in answers) < 10 and waiting("A acknowledged nothing"):
            await asyncio.sleep(0.05)
        del targets["A"]  # A's writes would take the claim back at once: B would never win
        for _attempt in range(5):
            starting = asyncio.create_task(asyncio.to_thread(b.start))
            while not starting.done():
                await terminate(admin, a.proc.pid)
                await asyncio.sleep(0.02)
            with contextlib.suppress(RuntimeError):  # exit 2: A won this round
                await starting
                break
        else:
            pytest.fail("B never got the claim while A's sessions were being terminated")
        targets.update(A=a.url, B=b.url)
        while (sum(x.server == "B" and x.status == 201 for x in answers) < 10
               or sum(x.server == "A" and x.status == 503 for x in answers) < 3) \
                and waiting("B never wrote, or A never answered 503"):
            await asyncio.sleep(0.05)
        print(f"B started after {_attempt + 1} attempt(s); answers: "
              f"{collections.Counter((x.server, x.status) for x in answers)}")
        b.kill()
        assert await asyncio.to_thread(a.proc.wait, WAIT) == 3  # B wrote: A must not go on
    finally:
        done.set()
        await asyncio.gather(*writers, return_exceptions=True)
        await admin.close()

    acked = [x for x in answers if x.status == 201]
    first_b = min(x.answered for x in acked if x.server == "B")
    assert not [x for x in acked if x.server == "A" and x.sent > first_b], \
        "A acknowledged a write sent after B had acknowledged one"
    late_a = [x for x in answers if x.server == "A" and x.sent > first_b]
    assert all(x.status in (503, 0) for x in late_a), {x.status for x in late_a}
    assert all(x.retry_after == "1" for x in late_a if x.status == 503)
    assert {x.status for x in answers} <= {201, 503, 0}
    c = server_process(pg_url).start()
    assert await names_in(c.url) >= {x.name for x in acked}


# ------------------------------------------------------------------ a lost claim, queued work


def log_lines(srv: ServerProcess) -> int:
    return len(srv.log_path.read_bytes().splitlines())


def assert_stops_on(srv: ServerProcess, sig: int) -> None:
    """``sig`` ends the server within a few seconds (a bound on hanging, not a timing assert)."""
    srv.proc.send_signal(sig)
    try:
        srv.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server ignored signal {sig}; last log lines:\n"
                    + "\n".join(srv.log_path.read_text().splitlines()[-3:]))


async def queue_a_failing_copy(srv: ServerProcess, tmp_path) -> None:
    """A copy that keeps failing and being retried (its target's root does not exist), once
    it has failed once."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "g1").write_bytes(b"x" * 10)
    async with Client(srv.url, token="") as client:
        await client.add_storage(name="src", kind="posix", root=str(src), capacity="1 GB",
                                 phase="GAS")
        await client.add_storage(name="dst", kind="posix", root=str(tmp_path / "missing"),
                                 capacity="1 GB", phase="GAS")
        await client.add_item(item_name="g1", storage="src", size=10)
        await client.add_operation("copy", "g1", "dst")
        deadline = time.monotonic() + WAIT
        while not [op async for op in client.operations() if op.get("last_error")]:
            assert time.monotonic() < deadline, "the copy never failed"
            await asyncio.sleep(0.1)


def fast_retries(tmp_path) -> str:
    """A config retrying failed operations every half second: a spinning engine shows fast."""
    path = tmp_path / "fast.yaml"
    path.write_text("fileops: {retry_base: 0.5, retry_max: 0.5, poll: 0.2, max_attempts: 999,"
                    " unreachable_after: 999}\n")
    return str(path)


async def assert_quiet(srv: ServerProcess, seconds: float = 3) -> None:
    """The server's log grows by a few lines at most over ``seconds`` (it once wrote 7,000
    lines a second, one per refused attempt)."""
    before = log_lines(srv)
    await asyncio.sleep(seconds)
    grown = log_lines(srv) - before
    assert grown < 20, (grown, srv.log_path.read_text().splitlines()[-3:])


@pytest.mark.parametrize("sig", [pytest.param(15, id="SIGTERM"), pytest.param(2, id="SIGINT")])
async def test_sqlite_a_lost_claim_with_queued_operations_backs_off_and_stops_on_signal(
        server_process, tmp_path, sig):
    """The database file is replaced and a second server takes the claim while a copy keeps
    being retried on the first: the first neither spins nor floods its log (one line per
    change of state), and SIGTERM or SIGINT stop it."""
    config = fast_retries(tmp_path)
    a = server_process(None, "--config", config).start()
    await wait_healthy(a.url)
    await queue_a_failing_copy(a, tmp_path)
    replace_database(tmp_path / "data" / "inventory.sqlite")
    b = await start_when_free(server_process, "--config", config)
    await assert_quiet(a)
    assert "replaced" in (await wait_healthy(a.url))["claim_lost"]
    log = a.log_path.read_text()
    assert log.count("file operations paused") == 1, log[-2000:]
    assert "session ended" not in log
    assert_stops_on(a, sig)
    assert_stops_on(b, 15)


@pytest.mark.postgres
async def test_postgres_a_lost_claim_with_queued_operations_backs_off_and_stops_on_signal(
        pg_url, server_process, tmp_path):
    """Another session holds the claim (the server's session was terminated) while a copy
    keeps being retried: no tight loop, a quiet log, and SIGTERM stops the server."""
    a = server_process(pg_url, "--config", fast_retries(tmp_path)).start()
    await wait_healthy(a.url)
    await queue_a_failing_copy(a, tmp_path)
    other = await asyncpg.connect(pg_url, server_settings={
        "application_name": "dlm-serve host=elsewhere pid=4242"})
    try:
        await claim_from_test(other, a)
        deadline = time.monotonic() + WAIT
        while not (await wait_healthy(a.url))["claim_lost"]:
            assert time.monotonic() < deadline, "the server never noticed the lost claim"
            await asyncio.sleep(0.1)
        await assert_quiet(a)
        assert "host=elsewhere pid=4242" in (await wait_healthy(a.url))["claim_lost"]
        log = a.log_path.read_text()
        assert "session ended" in log and log.count("file operations paused") <= 1
        assert_stops_on(a, 15)
    finally:
        await other.close()


# ------------------------------------------------------------------ the lock file itself


@pytest.mark.parametrize("kind", ["directory", "dangling-symlink"])
def test_sqlite_a_bad_lock_file_is_named_not_taken_for_a_port(tmp_path, kind):
    data = tmp_path / "data"
    data.mkdir()
    lock = data / ("inventory.sqlite" + LOCK_SUFFIX)
    if kind == "directory":
        lock.mkdir()
    else:
        lock.symlink_to(tmp_path / "nowhere" / "x.lock")
    result = serve(free_port(), str(data), None)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "cannot listen" not in line, line
    assert f"lock file {lock}" in line, line
    assert ("is a directory" if kind == "directory" else "is a symbolic link") in line, line


async def test_sqlite_the_holder_line_is_printed_printable(server_process, tmp_path):
    """The lock file's content is anyone's: control characters are shown escaped."""
    a = server_process(None).start()
    await wait_healthy(a.url)
    lock = tmp_path / "data" / ("inventory.sqlite" + LOCK_SUFFIX)
    with open(lock, "r+") as f:  # the holder's line, rewritten with an escape sequence
        f.write("host=\x1b[2Jevil\x07 pid=1 since=x\n")
    result = await asyncio.to_thread(serve, free_port(), str(tmp_path / "data"), None)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "\x1b" not in line and "\x07" not in line, repr(line)
    assert "host=\\x1b[2Jevil\\x07" in line, line
