"""The snapshot stream and the change feed: what Detox, Dealer and mirrors build on."""

from __future__ import annotations

import asyncio

import pytest

from inventory import errors
from inventory.feed import WIRE_ITEM_FIELDS, WIRE_REPLICA_FIELDS

NO_PAYLOADS = {"verify_ingest": False}  # storages the server cannot reach: the feed only


async def seed(client, n=50):
    await client.add_storage(name="disk1", kind="posix", root="/d1", capacity=10**12,
                             config=NO_PAYLOADS)
    await client.add_storage(name="s3a", kind="s3", root="bucket/prefix", capacity=10**12,
                             phase="LIQUID", config=NO_PAYLOADS)
    return await client.add_items({"item_name": f"f/{i}", "storage": "disk1" if i % 2 else "s3a",
                                   "size": i, "checksum": f"{i:08x}"} for i in range(n))


async def test_snapshot_holds_everything_at_one_version(server):
    created = await seed(server.client)
    snap = await server.client.snapshot()
    health = await server.client.health()
    assert snap.version == health["version"]
    assert snap.fields["item"] == list(WIRE_ITEM_FIELDS)
    assert snap.fields["replica"] == list(WIRE_REPLICA_FIELDS)
    assert {s[1] for s in snap.storages} == {"disk1", "s3a"}
    assert set(snap.items) == {c["oid"] for c in created}
    assert len(snap.replicas) == 50
    name = WIRE_ITEM_FIELDS.index("item_name")
    state = WIRE_ITEM_FIELDS.index("state")
    some = snap.items[created[7]["oid"]]
    assert some[name] == "f/7" and some[state] == "READY"
    uid = next(u for u, r in snap.replicas.items() if r[1] == created[7]["oid"])
    assert snap.replicas[uid][WIRE_REPLICA_FIELDS.index("state")] == "complete"


async def test_snapshot_taken_while_writes_land_is_consistent(server):
    await seed(server.client, 10)

    async def writer():
        for batch in range(20):
            await server.client.add_items({"item_name": f"w/{batch}/{i}", "storage": "disk1",
                                           "size": 1} for i in range(200))

    task = asyncio.create_task(writer())
    taken = 0
    while not task.done():
        # each snapshot checked as it comes (keeping them all grew to gigabytes when the
        # writer was slow): at version V it holds exactly what V committed, whole batches only
        snap = await server.client.snapshot()
        taken += 1
        batches = {}
        for record in snap.items.values():
            if record[1].startswith("w/"):
                batches.setdefault(record[1].split("/")[1], 0)
                batches[record[1].split("/")[1]] += 1
        assert all(count == 200 for count in batches.values()), batches
        assert len(snap.replicas) == len(snap.items)
        await asyncio.sleep(0.01)  # let the writer's batches through between snapshots
    await task
    assert taken
    final = await server.client.snapshot()
    assert len(final.items) == 10 + 20 * 200


async def test_changes_follow_a_snapshot_exactly(server):
    await seed(server.client, 5)
    snap = await server.client.snapshot()
    more = await server.client.add_items({"item_name": f"late/{i}", "storage": "disk1",
                                          "size": 2} for i in range(3))
    page = await server.client.changes(snap.version)
    assert page["version"] == snap.version + 1
    [(version, changes)] = page["transactions"]
    assert version == snap.version + 1
    for kind, record in changes:
        snap.apply(kind, record)
    assert {c["oid"] for c in more} <= set(snap.items)
    assert [k for k, _ in changes] == ["item"] * 3 + ["replica"] * 3
    fresh = await server.client.snapshot()
    assert fresh.items == snap.items and fresh.replicas == snap.replicas


async def test_long_poll_returns_when_a_change_commits(sqlite_server):
    client = sqlite_server.client
    version = (await client.health())["version"]
    poll = asyncio.create_task(client.changes(version, wait=30))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await client.add_item(item_name="wake")
    page = await asyncio.wait_for(poll, 5)
    assert page["version"] == version + 1


async def test_long_poll_times_out_empty(sqlite_server):
    version = (await sqlite_server.client.health())["version"]
    page = await sqlite_server.client.changes(version, wait=1)
    assert page == {"version": version, "transactions": []}


async def test_changes_older_than_kept_history_are_gone(sqlite_server):
    client = sqlite_server.client
    from inventory.server.state import STATE

    sqlite_server.app[STATE].feed._max = 5
    for i in range(10):
        await client.add_item(item_name=f"g/{i}")
    with pytest.raises(errors.Gone) as info:
        await client.changes(0)
    assert info.value.field == "since"
    assert "snapshot" in str(info.value)


async def test_changes_limit_splits_between_transactions(sqlite_server):
    client = sqlite_server.client
    start = (await client.health())["version"]
    for i in range(4):
        await client.add_items([{"item_name": f"t/{i}/a"}, {"item_name": f"t/{i}/b"}])
    page = await client.changes(start, limit=3)
    assert len(page["transactions"]) == 1 and page["version"] == start + 1
    rest = await client.changes(page["version"], limit=100)
    assert len(rest["transactions"]) == 3 and rest["version"] == start + 4


async def test_changes_of_some_kinds_only(sqlite_server, http):
    client = sqlite_server.client
    await client.add_storage(name="disk1", kind="posix", root="/d1", capacity=10**9,
                             config=NO_PAYLOADS)
    start = (await client.health())["version"]
    item = await client.add_item(item_name="k/1", storage="disk1", size=1)
    await client.add_request(item["oid"], "disk1")  # a transaction with a request only
    await client.add_item(item_name="k/2")
    page = await client.changes(start, kinds=["item"])
    assert page["version"] == start + 3  # past the request's transaction
    assert [[k for k, _ in changes] for _v, changes in page["transactions"]] == [["item"],
                                                                               ["item"]]
    everything = await client.changes(start)
    assert [[k for k, _ in changes] for _v, changes in everything["transactions"]] == [
        ["item", "replica"], ["request"], ["item"]]
    async with http.get("/v1/changes", params={"since": str(start),
                                               "kinds": "item,tokens"}) as resp:
        body = await resp.json()
        assert resp.status == 400 and body["error"]["field"] == "kinds"
        assert "'tokens'" in body["error"]["message"]


async def test_versions_survive_a_restart(server):
    await seed(server.client, 3)
    before = (await server.client.health())["version"]
    await server.restart()
    assert (await server.client.health())["version"] == before
    await server.client.add_item(item_name="after")
    assert (await server.client.health())["version"] == before + 1
