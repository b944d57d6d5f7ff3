"""InsertRows, the bulk insert of new objects (a cycle's queued operations), on both stores:
the rows read back as written, an existing key refuses the whole transaction, and a Detox
cycle applied through the server leaves the rows a restart loads back."""

from __future__ import annotations

import pytest

import schema
from detox.cycle import run_cycle
from inventory import model
from inventory.inventory import Inventory
from inventory.objects import Operation
from inventory.records import ItemRecord, StorageRecord
from inventory.store import StoreConflict, open_store
from inventory.store.generic import COPY_UPSERT_ROWS, insert
from inventory.store.ops import InsertItems, InsertStorage
from policies import load_policy_text
from tests.conftest import InProcessServer


def _storage() -> StorageRecord:
    return StorageRecord(1, "disk1", "posix", "/data/disk1", 10**12, model.PHASE["GAS"],
                         "online", {}, {}, 1.0)


def _item(oid: int, i: int) -> ItemRecord:
    return ItemRecord(oid, f"set/f{i}", 1, model.FILE, model.READY, model.PHASE["GAS"], 100,
                      None, None, None, None, 1.0, None, 0, None, None, None)


def _operations(first_id: int, oids: list[int]) -> list[Operation]:
    return [Operation(first_id + i, "delete", oid, None, 1, "detox", "queued", 0, None, 2.0, 2.0)
            for i, oid in enumerate(oids)]


async def _loaded(db_url: str, tmp_path) -> Inventory:
    store = open_store(db_url, str(tmp_path))
    await store.open()
    try:
        inv = Inventory()
        await store.load(inv)
        return inv
    finally:
        await store.close()


@pytest.mark.parametrize("count", [3, COPY_UPSERT_ROWS + 20])  # executemany, then COPY
async def test_inserted_rows_load_back_and_a_taken_key_refuses_the_transaction(
        db_url, tmp_path, count):
    oids = [model.new_oid() for _ in range(count)]
    ops = _operations(1, oids)
    store = open_store(db_url, str(tmp_path))
    await store.open()
    try:
        await store.commit([InsertStorage(_storage()),
                            InsertItems([_item(oid, i) for i, oid in enumerate(oids)]),
                            insert(ops)], 1)
        # a new id beside one that exists: nothing of it commits
        again = _operations(count, oids[:2])
        with pytest.raises(StoreConflict):
            await store.commit([insert(again)], 2)
        assert await store.committed_version() == 1
    finally:
        await store.close()
    inv = await _loaded(db_url, tmp_path)
    assert inv.version == 1
    assert sorted(inv.operations.values(), key=lambda o: o.id) == ops


RELAXED = """
partition "all" { }
detox {
    when  storage.occupancy > 200%
    until storage.occupancy < 70%
    delete  "expired"   if item.state == EXPIRED
    default dismiss "candidate"
}
"""


async def test_a_detox_cycle_leaves_rows_a_restart_loads_back(db_url, tmp_path):
    srv = InProcessServer(db_url, tmp_path, fileops=None)  # operations stay queued
    await srv.start()
    try:
        c = srv.client
        await c.add_storage(name="disk1", kind="posix", root=str(tmp_path / "disk1"),
                            capacity=1000, phase="GAS")
        (tmp_path / "disk1/set").mkdir(parents=True)
        oids = []
        for i in range(4):
            (tmp_path / f"disk1/set/f{i}").write_bytes(b"x" * 100)
            item = await c.add_item(item_name=f"set/f{i}", storage="disk1", size=100,
                                    checksum="0000000a", target_phase="GAS")
            oids.append(item["oid"])
        for oid in oids[:2]:
            await c.request("PATCH", f"/v1/items/{oid}", json={"expire_at": "2001-01-01T00:00:00Z"})
        result = await run_cycle(c, load_policy_text(RELAXED, "t"), RELAXED)
        assert result.applied["summary"]["applied"] == {
            "expirations": 2, "deletions": 2, "deleted_bytes": 200}
        before = (await c.request("GET", "/v1/operations"))["operations"]
        items_before = [await c.item(oid) for oid in oids]
        await srv.restart()  # memory from the database only
        c = srv.client
        assert (await c.request("GET", "/v1/operations"))["operations"] == before
        assert [await c.item(oid) for oid in oids] == items_before
    finally:
        await srv.stop()
    assert sorted((o["oid"], o["kind"], o["origin"], o["state"]) for o in before) == sorted(
        (oid, "delete", "detox", "queued") for oid in oids[:2])
    states = {oid: (i["state"], [r["state"] for r in i["replicas"]])
              for oid, i in zip(oids, items_before, strict=True)}
    assert states == {oids[0]: ("EXPIRED", ["deleting"]), oids[1]: ("EXPIRED", ["deleting"]),
                      oids[2]: ("READY", ["complete"]), oids[3]: ("READY", ["complete"])}


@pytest.mark.postgres
async def test_postgres_schema_leaves_room_for_hot_updates_and_no_operation_item_key(pg_url,
                                                                                     tmp_path):
    """Migration 5: replica and item pages keep room for a row's next version (a cycle's state
    changes are HOT updates, no new index entries) and operations do not lock their item.
    Migration 6: a new replica row writes one random index entry (its uid) and locks nothing."""
    import asyncpg

    store = open_store(pg_url, str(tmp_path))
    await store.open()
    try:
        assert await store.schema_version() == schema.latest_version(store.dialect)
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        options = dict(await conn.fetch(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN ('replica', 'data_item')"))
        assert options == {"replica": ["fillfactor=85"], "data_item": ["fillfactor=90"]}
        keys = {r["conname"] for r in await conn.fetch(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'operation'::regclass "
            "AND contype = 'f'")}
        assert keys == {"operation_source_id_fkey", "operation_target_id_fkey"}
        replica = {(r["conname"], r["contype"]) for r in await conn.fetch(
            "SELECT conname, contype::text FROM pg_constraint "
            "WHERE conrelid = 'replica'::regclass")}
        assert replica == {("replica_pkey", "p"), ("replica_state_check", "c")}
    finally:
        await conn.close()
