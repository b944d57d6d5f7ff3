"""Finished operations leave memory after the retention and stay queryable from the database
(inventory.retention), on SQLite and PostgreSQL, through REST, the CLI and the Python API."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from inventory.errors import Conflict, DLMError
from inventory.server.state import STATE
from inventory.writes_ops import CompleteOperation, FailOperation, StartOperation
from tests.cli_fixtures import ThreadedServer
from tests.conftest import InProcessServer

pytest_plugins = ["tests.cli_fixtures"]

RETENTION = 0.5  # seconds: the sweep runs every 0.125 s


async def storages(client, tmp_path, *names: str) -> None:
    for name in names:
        await client.add_storage(name=name, kind="posix", root=str(tmp_path / name),
                                 capacity=10**12, phase="GAS",
                                 config={"verify_ingest": False})


@pytest.fixture
async def srv(db_url, tmp_path):
    server = InProcessServer(db_url, tmp_path, fileops=None, ops_retention=RETENTION)
    await server.start()
    await storages(server.client, tmp_path, "a", "b", "c")
    try:
        yield server
    finally:
        await server.stop()


async def queue_copies(client, count: int, target: str = "b", prefix: str = "obs") -> list[int]:
    items = await client.add_items([{"item_name": f"{prefix}/{i}", "storage": "a", "size": 10}
                                    for i in range(count)])
    return [(await client.add_operation("copy", item["oid"], target))["id"] for item in items]


async def until_memory_holds(server, wanted: set[int], timeout: float = 30) -> None:
    """Wait for the periodic sweep (nothing else drops operations)."""
    deadline = time.monotonic() + timeout
    inv = server.app[STATE].inventory
    while set(inv.operations) != wanted:
        assert time.monotonic() < deadline, sorted(inv.operations)
        await asyncio.sleep(0.05)


async def listed(client, **filters) -> list[int]:
    ids = [op["id"] async for op in client.operations(**filters)]
    assert len(ids) == len(set(ids)), ids  # no operation twice across memory and database
    return ids


async def finish_some(server, ops: list[int]) -> tuple[list[int], list[int], list[int]]:
    """(done, cancelled, still queued) of ``ops``: a third each."""
    scheduler = server.app[STATE].scheduler
    done, cancelled, queued = ops[::3], ops[1::3], ops[2::3]
    for op in done:
        await scheduler.write(StartOperation(op))
        await scheduler.write(CompleteOperation(op, size=10, checksum="0e2b0211"))
    for op in cancelled:
        await server.client.cancel_operation(op)
    return done, cancelled, queued


async def refused(call, status: int) -> DLMError:
    with pytest.raises(DLMError) as info:
        await call
    assert info.value.status == status, info.value
    return info.value


async def test_finished_operations_leave_memory_and_stay_listable(srv):
    c = srv.client
    ops = await queue_copies(c, 30)
    done, cancelled, queued = await finish_some(srv, ops)
    await until_memory_holds(srv, set(queued))
    assert srv.app[STATE].inventory.operations_in_db_only
    # every page of every filter, from the database and memory, in id order, each once
    assert await listed(c, limit=4) == ops
    assert await listed(c, state="done", limit=3) == done
    assert await listed(c, state="cancelled", limit=7) == cancelled
    assert await listed(c, state="queued", limit=2) == queued
    assert await listed(c, state="failed") == []
    assert await listed(c, kind="copy", storage="b", limit=5) == ops
    assert await listed(c, kind="delete") == []
    assert await listed(c, storage="c") == []
    page = await c.request("GET", "/v1/operations", params={"state": "done", "limit": "4"})
    assert [o["id"] for o in page["operations"]] == done[:4]
    assert page["cursor"] == str(done[3])
    first = page["operations"][0]
    assert (first["state"], first["target"], first["item_name"]) == ("done", "b", "obs/0")
    # one operation at a time, live or from the database
    assert (await c.operation(done[0]))["state"] == "done"
    assert (await c.operation(queued[0]))["state"] == "queued"
    assert (await refused(c.operation(9999), 404)).message == "no operation 9999"


async def test_no_duplicates_across_the_memory_database_boundary(srv):
    """Operations that finished after the sweep are in memory and the database at once."""
    c = srv.client
    ops = await queue_copies(c, 12)
    _done, cancelled, queued = await finish_some(srv, ops)
    await until_memory_holds(srv, set(queued))
    late = queued[:2]  # finished now: in memory (and the database) until the next sweeps
    for op in late:
        await c.cancel_operation(op)
    inv = srv.app[STATE].inventory
    assert set(late) <= set(inv.operations)
    assert await listed(c, state="cancelled", limit=1) == sorted(cancelled + late)
    assert await listed(c, limit=3) == ops
    assert await listed(c, state="queued") == queued[2:]
    # the dashboard's operations page lists them too (newest first, from both sides)
    async with aiohttp.ClientSession() as http, \
            http.get(f"{srv.url}/dashboard/fragments/operations",
                     params={"state": "cancelled"}) as resp:
        assert resp.status == 200
        html = await resp.text()
    for op in cancelled + late:
        assert f">{op}<" in html


async def test_late_outcomes_of_dropped_operations_are_refused_clearly(srv):
    c = srv.client
    ops = await queue_copies(c, 3)
    done, cancelled, queued = await finish_some(srv, ops)
    await until_memory_holds(srv, set(queued))
    scheduler = srv.app[STATE].scheduler
    for write in (CompleteOperation(done[0]), FailOperation(cancelled[0], "late", retry_in=None),
                  StartOperation(done[0])):
        with pytest.raises(Conflict, match=r"has finished .*no longer queued or running"):
            await scheduler.write(write)
    # REST says which state it finished in
    error = await refused(c.cancel_operation(done[0]), 409)
    assert (error.field, error.message) == ("id", f"operation {done[0]} is done")
    error = await refused(c.cancel_operation(cancelled[0]), 409)
    assert error.message == f"operation {cancelled[0]} is cancelled"
    assert (await refused(c.cancel_operation(99999), 404)).message == "no operation 99999"
    assert (await refused(c.operation("nine"), 400)).field == "id"
    await refused(c.operation(2**70), 404)
    # the queued one still runs its course
    await scheduler.write(StartOperation(queued[0]))
    await scheduler.write(CompleteOperation(queued[0], size=10, checksum="0e2b0211"))
    assert (await c.operation(queued[0]))["state"] == "done"


async def test_restart_loads_live_operations_only_and_lists_the_rest(srv, tmp_path):
    c = srv.client
    ops = await queue_copies(c, 9)
    done, _cancelled, queued = await finish_some(srv, ops)
    await until_memory_holds(srv, set(queued))
    await srv.restart()
    inv = srv.app[STATE].inventory
    assert set(inv.operations) == set(queued)  # the load skipped the old finished ones
    assert inv.operations_in_db_only
    c = srv.client
    assert await listed(c, limit=2) == ops
    assert await listed(c, state="done") == done
    # new ids continue after the highest ever given, dropped or not
    more = await queue_copies(c, 1, prefix="new")
    assert more[0] == max(ops) + 1


async def test_a_storage_whose_operations_are_in_the_database_only_is_removed(srv):
    c = srv.client
    ops = await queue_copies(c, 4, target="c")
    for op in ops:
        await c.cancel_operation(op)
    await until_memory_holds(srv, set())
    removed = await c.request("DELETE", "/v1/storages/c")
    assert removed["name"] == "c"
    assert await listed(c) == []  # gone from the database too, not only from memory
    await srv.restart()
    assert await listed(srv.client) == []
    assert (await queue_copies(srv.client, 1, prefix="next"))[0] == max(ops) + 1


async def test_forever_keeps_every_operation_in_memory(db_url, tmp_path):
    server = InProcessServer(db_url, tmp_path, fileops=None, ops_retention=None)
    await server.start()
    try:
        await storages(server.client, tmp_path, "a", "b")
        ops = await queue_copies(server.client, 3)
        for op in ops:
            await server.client.cancel_operation(op)
        await asyncio.sleep(0.3)
        inv = server.app[STATE].inventory
        assert set(inv.operations) == set(ops) and not inv.operations_in_db_only
        await server.restart()
        assert set(server.app[STATE].inventory.operations) == set(ops)
    finally:
        await server.stop()


# ----------------------------------------------------------------------------- CLI

@pytest.fixture
def cli_server(tmp_path):
    server = ThreadedServer(f"sqlite:{tmp_path / 'inventory.sqlite'}", tmp_path / "data",
                            fileops=None, ops_retention=RETENTION)
    try:
        yield server
    finally:
        server.stop()


def test_cli_lists_and_shows_operations_past_the_retention(dlm, cli_server, tmp_path):
    cli_server.call(storages(cli_server._server.client, tmp_path, "a", "b"))
    ops = cli_server.call(queue_copies(cli_server._server.client, 5))
    for op in ops[:3]:
        dlm("ops", "cancel", str(op))
    cli_server.call(until_memory_holds(cli_server._server, set(ops[3:])))
    assert [o["id"] for o in dlm.json("ops", "--state", "cancelled")] == ops[:3]
    assert [o["id"] for o in dlm.json("ops", "--limit", "4")] == ops[:4]
    lines = dlm("ops", "--state", "cancelled").out.splitlines()
    assert len(lines) == 4 and lines[1].split()[:2] == [str(ops[0]), "copy"]
    out = dlm("ops", "show", str(ops[0])).out
    assert "state       cancelled" in out and "obs/0" in out
    assert dlm.json("ops", "show", str(ops[4]))["state"] == "queued"
    assert dlm.error("ops", "show", "777") == "id: no operation 777"
    assert dlm.error("ops", "show", "x").startswith("id: expected an integer")
    assert dlm.error("ops", "cancel", str(ops[1])) == f"id: operation {ops[1]} is cancelled"


@pytest.mark.parametrize("value", ["soon", "-1h", "1w", "", "1 h h"])
def test_bad_retention_is_one_line_on_stderr(dlm_offline, tmp_path, value):
    assert "--ops-retention: expected a duration" in dlm_offline.error(
        "serve", "--data-dir", str(tmp_path), f"--ops-retention={value}", status=2)
    config = tmp_path / "dlm.yaml"
    config.write_text(f"ops_retention: '{value}'\n")
    assert "ops_retention: expected a duration" in dlm_offline.error(
        "serve", "--config", str(config), status=2)


# ------------------------------------------------- indexes kept with the inventory (issue 17)

async def test_queued_operations_are_indexed_per_target_storage(srv):
    """The file operations engine starts work per target storage from this index."""
    c = srv.client
    to_b = await queue_copies(c, 3, target="b")
    to_c = await queue_copies(c, 2, target="c", prefix="more")
    inv = srv.app[STATE].inventory
    sid = {s["name"]: s["id"] for s in await c.storages()}
    assert {t: list(q) for t, q in inv.queued_by_target.items()} == {sid["b"]: to_b,
                                                                   sid["c"]: to_c}
    await srv.app[STATE].scheduler.write(StartOperation(to_b[0]))
    await c.cancel_operation(to_c[0])
    assert {t: list(q) for t, q in inv.queued_by_target.items()} == {sid["b"]: to_b[1:],
                                                                   sid["c"]: to_c[1:]}
    await c.cancel_operation(to_c[1])
    assert sid["c"] not in inv.queued_by_target
    assert list(inv.queued_operations) == to_b[1:]


async def test_only_pinning_requests_are_indexed(srv):
    """A Detox plan's apply reads the pins from this index, not from every request."""
    c = srv.client
    await c.add_items([{"item_name": f"pin/{i}", "storage": "a", "size": 10} for i in range(3)])
    pinned = await c.add_request("pin/0", "b", pin_until="2099-01-01T00:00:00Z")
    await c.add_request("pin/1", "b")
    cancelled = await c.add_request("pin/2", "b", pin_until="2099-01-01T00:00:00Z")
    await c.cancel_request(cancelled["id"])
    inv = srv.app[STATE].inventory
    assert list(inv.pinning_requests) == [pinned["id"]]
    await srv.restart()
    assert list(srv.app[STATE].inventory.pinning_requests) == [pinned["id"]]
