"""Storages and items through REST on both backends: create, read, reload from the database."""

from __future__ import annotations

from pathlib import Path

import pytest

import schema
from inventory import errors


async def add_disk(client, name="disk1", **kw):
    """A storage the server cannot reach (verify_ingest off): these tests are about the
    inventory's answers; verified ingest is tested in test_ingest.py."""
    spec = {"name": name, "kind": "posix", "root": f"/data/{name}", "capacity": "10 TB",
            "phase": "GAS", "config": {"verify_ingest": False}, **kw}
    return await client.add_storage(**spec)


async def test_health_reports_backend_and_counts(server):
    health = await server.client.health()
    assert health["status"] == "ok"
    assert health["db"]["backend"] in ("sqlite", "postgresql")
    migrations = len(list((Path(schema.__file__).parent / "sqlite").glob("[0-9]*.sql")))
    assert health["db"]["schema_version"] == schema.latest_version("sqlite") == migrations
    assert (health["items"], health["replicas"], health["storages"]) == (0, 0, 0)


async def test_storage_round_trip_and_reload(server):
    created = await add_disk(server.client, attributes={"region": "eu", "tier": 1})
    assert created["capacity"] == 10 * 10**12
    assert created["id"] == 1 and created["status"] == "online"
    second = await add_disk(server.client, "tape1", phase="SOLID", capacity=5)
    assert second["id"] == 2 and second["phase"] == "SOLID"
    await server.restart()
    storages = {s["name"]: s for s in await server.client.storages()}
    assert storages["disk1"] == {k: v for k, v in created.items() if k != "warnings"}
    assert storages["tape1"]["capacity"] == 5


async def test_one_call_ingest_makes_a_ready_item_with_a_complete_replica(server):
    await add_disk(server.client)
    item = await server.client.add_item(item_name="obs/scan-1.ms", storage="disk1", size=1234,
                                        checksum="0a0b0c0d", metadata={"instrument": "MID"},
                                        lifetime=3600)
    assert item["state"] == "READY"
    assert item["current_phase"] == "GAS" and item["target_phase"] == "SOLID"
    assert item["checksum_method"] == "adler32"
    assert item["expire_at"] is not None
    [replica] = item["replicas"]
    assert replica["state"] == "complete"
    assert replica["uri"] == "/data/disk1/obs/scan-1.ms"
    assert replica["uid"][:-4] == item["oid"][:-4]
    storage = (await server.client.storages())[0]
    assert storage["used"] == 1234 and storage["replica_count"] == 1
    await server.restart()
    assert await server.client.item(item["oid"]) == item


async def test_item_without_location_is_initialised(server):
    item = await server.client.add_item(item_name="raw/a")
    assert item["state"] == "INITIALISED" and item["replicas"] == []
    assert item["current_phase"] == "PLASMA"


async def test_bulk_inject_assigns_versions_and_survives_restart(server):
    await add_disk(server.client)
    specs = [{"item_name": f"run/{i:04d}", "storage": "disk1", "size": i} for i in range(500)]
    specs.append({"item_name": "run/0001", "storage": "disk1", "size": 7})  # version 2
    created = await server.client.add_items(specs)
    assert len(created) == 501
    assert created[-1]["item_version"] == 2
    before = await server.client.health()
    assert before["items"] == 501 and before["replicas"] == 501
    await server.restart()
    after = await server.client.health()
    assert (after["items"], after["replicas"], after["version"]) == (501, 501, before["version"])
    latest = [i async for i in server.client.find_items("run/0001")]
    assert [i["item_version"] for i in latest] == [2]
    every = [i async for i in server.client.find_items("run/0001", version="all")]
    assert [i["item_version"] for i in every] == [1, 2]  # registration order
    v1 = [i async for i in server.client.find_items("run/0001", version=1)]
    assert v1[0]["size"] == 1


async def test_find_items_by_glob_pages_with_a_stable_cursor(server):
    await server.client.add_items({"item_name": f"g/{i:03d}"} for i in range(25))
    await server.client.add_items([{"item_name": "other/x"}])
    names = [i["item_name"] async for i in server.client.find_items("g/*", limit=7)]
    assert names == [f"g/{i:03d}" for i in range(25)]
    page = await server.client.request("GET", "/v1/items", params={"name": "g/0[01]?",
                                                                   "limit": "100"})
    assert len(page["items"]) == 20 and page["cursor"] is None


async def test_container_members(server):
    parent = await server.client.add_item(item_name="ds", item_type="container")
    child = await server.client.add_item(item_name="ds/f1", parent_oid=parent["oid"])
    assert child["parent_oid"] == parent["oid"]
    await server.restart()
    assert (await server.client.item(child["oid"]))["parent_oid"] == parent["oid"]


async def test_explicit_duplicate_version_is_a_conflict_and_changes_nothing(server):
    await server.client.add_item(item_name="dup", item_version=3)
    before = await server.client.health()
    with pytest.raises(errors.Conflict) as info:
        await server.client.add_items([{"item_name": "new"},
                                       {"item_name": "dup", "item_version": 3}])
    assert info.value.field == "items[1].item_version"
    after = await server.client.health()
    assert (after["items"], after["version"]) == (before["items"], before["version"])


async def test_duplicate_inside_one_batch_is_refused_whole(server):
    with pytest.raises(errors.Conflict):
        await server.client.add_items([{"item_name": "x", "item_version": 1},
                                       {"item_name": "x", "item_version": 1}])
    assert (await server.client.health())["items"] == 0
