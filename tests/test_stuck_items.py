"""An expired item whose last replicas go ends DELETED (issue 15, item 6): decided on the state a
group commit leaves, not on what each write of the group saw alone; and an item a database
already holds EXPIRED with no replica is DELETED when the server loads it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from inventory.server.state import STATE
from inventory.writes_ops import CancelOperation, CompleteOperation, StartOperation
from tests.conftest import InProcessServer

STORAGES = ("a", "b", "c")


@pytest.fixture
async def srv(db_url, tmp_path):
    """No file operations engine: the test starts and finishes the operations itself, all
    finishing in one group commit."""
    server = InProcessServer(db_url, tmp_path, fileops=None)
    await server.start()
    for name in STORAGES:
        (tmp_path / name).mkdir()
        await server.client.add_storage(name=name, kind="posix", root=str(tmp_path / name),
                                        capacity=10**9)
    try:
        yield server
    finally:
        await server.stop()


async def payload(client, name: str, storages=STORAGES) -> None:
    """The item's 10-byte file on each storage: registrations check it is there."""
    for storage in storages:
        path = Path((await client.storage(storage))["root"]) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"0123456789")


async def expired_item(client, name: str, storages=STORAGES) -> str:
    """An item with a complete replica on each of ``storages``, then marked for deletion."""
    await payload(client, name, storages)
    item = await client.add_item(item_name=name, storage=storages[0], size=10)
    for storage in storages[1:]:
        await client.request("PATCH", f"/v1/items/{item['oid']}", json={"storage": storage})
    await client.request("DELETE", f"/v1/items/{item['oid']}")
    assert (await client.item(item["oid"]))["state"] == "EXPIRED"
    return item["oid"]


async def queue_delete(client, oid: str, storage: str) -> int:
    op = await client.request("POST", "/v1/operations",
                              json={"kind": "delete", "item": oid, "target": storage})
    return op["id"]


async def in_one_group(scheduler, writes) -> list:
    """Every write queued before the writer wakes: one group, one commit."""
    before = scheduler.stats.transactions
    results = await asyncio.gather(*(scheduler.write(w) for w in writes))
    assert scheduler.stats.transactions == before + 1
    assert scheduler.stats.last_group_size == len(writes)
    return results


async def test_last_deletions_finishing_in_one_group_delete_the_item(srv):
    c = srv.client
    scheduler = srv.app[STATE].scheduler
    gone = [await expired_item(c, f"race/{i}") for i in range(10)]
    kept = await expired_item(c, "race/kept")  # one replica stays: it stays EXPIRED
    ops = [await queue_delete(c, oid, s) for oid in gone for s in STORAGES]
    ops += [await queue_delete(c, kept, s) for s in STORAGES[:2]]
    for op in ops:
        await scheduler.write(StartOperation(op))
    await in_one_group(scheduler, [CompleteOperation(op) for op in ops])
    for oid in gone:
        item = await c.item(oid)
        assert (item["state"], item["replicas"]) == ("DELETED", [])
    item = await c.item(kept)
    assert item["state"] == "EXPIRED" and [r["storage"] for r in item["replicas"]] == ["c"]
    await srv.restart()  # durable: the database says so too
    assert {(await srv.client.item(oid))["state"] for oid in gone} == {"DELETED"}
    assert (await srv.client.health())["items_by_state"]["DELETED"] == 10


async def test_a_cancelled_copy_and_a_deletion_in_one_group_delete_the_item(srv):
    """The removal of a copy that never arrived counts like a deletion's."""
    c = srv.client
    scheduler = srv.app[STATE].scheduler
    await payload(c, "half", ("a",))
    item = await c.add_item(item_name="half", storage="a", size=10)
    copy = await c.request("POST", "/v1/operations",
                           json={"kind": "copy", "item": item["oid"], "target": "b"})
    await c.request("DELETE", f"/v1/items/{item['oid']}")  # EXPIRED: it has payloads
    delete = await queue_delete(c, item["oid"], "a")
    await scheduler.write(StartOperation(delete))
    await in_one_group(scheduler, [CompleteOperation(delete), CancelOperation(copy["id"])])
    after = await c.item(item["oid"])
    assert (after["state"], after["replicas"]) == ("DELETED", [])


async def _drop_replicas(db_url: str) -> None:
    """What a server before the fix could leave behind: EXPIRED items, no replica rows."""
    if db_url.startswith("sqlite:"):
        with sqlite3.connect(db_url.removeprefix("sqlite:")) as db:
            db.execute("DELETE FROM replica")
        return
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("DELETE FROM replica")
    finally:
        await conn.close()


async def _stored_states(db_url: str) -> dict[str, str]:
    sql = "SELECT item_name, item_state FROM data_item"
    if db_url.startswith("sqlite:"):
        with sqlite3.connect(db_url.removeprefix("sqlite:")) as db:
            return dict(db.execute(sql).fetchall())
    conn = await asyncpg.connect(db_url)
    try:
        return {r[0]: r[1] for r in await conn.fetch(sql)}
    finally:
        await conn.close()


async def test_an_item_stuck_in_the_database_is_deleted_at_load(srv, db_url, caplog):
    c = srv.client
    stuck = await expired_item(c, "stuck", ("a",))
    await payload(c, "live", ("a",))
    live = await c.add_item(item_name="live", storage="a", size=10)
    await c.add_item(item_name="new")  # INITIALISED, no replica: not touched
    loaded = (await c.health())["version"]
    await srv.stop()
    await _drop_replicas(db_url)
    assert (await _stored_states(db_url))["stuck"] == "EXPIRED"
    with caplog.at_level(logging.WARNING, logger="dlm.inventory"):
        await srv.start()
    c = srv.client
    item = await c.item(stuck)
    assert (item["state"], item["replicas"]) == ("DELETED", [])
    [record] = [r for r in caplog.records if "no replica left" in r.getMessage()]
    assert record.oid == stuck and record.item_name == "stuck"
    assert await _stored_states(db_url) == {"stuck": "DELETED", "live": "READY",
                                            "new": "INITIALISED"}
    assert (await c.item(live["oid"]))["state"] == "READY"
    # the repair is itself a committed version: followers of the change feed see it
    changes = await c.changes(loaded, wait=0)
    assert changes["version"] == loaded + 1
    assert any(kind == "item" and record[0] == stuck and record[4] == "DELETED"
               for _v, tx in changes["transactions"] for kind, record in tx)
