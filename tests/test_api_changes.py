"""Item changes, deletion marks, accesses, queries, storages, copy requests, operations."""

from __future__ import annotations

import asyncio

import pytest

from inventory import errors

NO_PAYLOADS = {"verify_ingest": False}  # roots the server cannot reach; see test_ingest.py


async def setup_storages(c):
    await c.request("POST", "/v1/storages", json={"name": "disk1", "kind": "posix",
                                                 "root": "/d1", "capacity": 10**6,
                                                 "config": NO_PAYLOADS})
    await c.request("POST", "/v1/storages", json={"name": "disk2", "kind": "posix",
                                                 "root": "/d2", "capacity": 10**6,
                                                 "config": NO_PAYLOADS})
    await c.request("POST", "/v1/storages", json={"name": "tape", "kind": "posix",
                                                 "root": "/t", "capacity": 10**9,
                                                 "phase": "SOLID", "config": NO_PAYLOADS})


async def test_ska_flow_initialise_then_set_location_and_state(server):
    c = server.client
    await setup_storages(c)
    item = await c.request("POST", "/v1/items", json={"item_name": "obs/1"})
    assert item["state"] == "INITIALISED"
    with pytest.raises(errors.Conflict) as info:
        await c.request("PATCH", f"/v1/items/{item['oid']}", json={"state": "READY"})
    assert "no complete replica" in str(info.value)
    item = await c.request("PATCH", f"/v1/items/{item['oid']}",
                           json={"size": 500, "checksum": "00ff00ff", "storage": "disk1",
                                 "uri": "/d1/custom/obs1", "metadata": {"band": 2},
                                 "target_phase": "LIQUID", "lifetime": 3600})
    assert item["state"] == "READY" and item["current_phase"] == "GAS"
    assert item["replicas"][0]["uri"] == "/d1/custom/obs1"
    assert item["checksum_method"] == "adler32" and item["metadata"] == {"band": 2}
    second = await c.request("PATCH", f"/v1/items/{item['oid']}", json={"storage": "disk2"})
    assert second["current_phase"] == "LIQUID"
    await server.restart()
    c = server.client
    again = await c.request("GET", f"/v1/items/{item['oid']}")
    assert again == second
    assert (await c.request("GET", "/v1/storages/disk1"))["used"] == 500


@pytest.mark.parametrize(("start", "to", "ok"), [
    ("READY", "EXPIRED", True), ("READY", "CORRUPTED", True), ("READY", "INITIALISED", False),
    ("READY", "DELETED", False), ("EXPIRED", "READY", True), ("EXPIRED", "CORRUPTED", False),
    ("CORRUPTED", "READY", True), ("CORRUPTED", "EXPIRED", True),
])
async def test_state_transitions(sqlite_server, start, to, ok):
    c = sqlite_server.client
    await setup_storages(c)
    item = await c.request("POST", "/v1/items", json={"item_name": "t", "storage": "disk1",
                                                      "size": 1})
    path = f"/v1/items/{item['oid']}"
    if start != "READY":
        await c.request("PATCH", path, json={"state": start})
    if ok:
        assert (await c.request("PATCH", path, json={"state": to}))["state"] == to
    else:
        with pytest.raises(errors.Conflict) as info:
            await c.request("PATCH", path, json={"state": to})
        assert f"cannot go from {start} to {to}" in str(info.value)
        assert info.value.field == "state"
        assert (await c.request("GET", path))["state"] == start


async def test_bulk_patch_is_all_or_nothing(server):
    c = server.client
    made = await c.add_items([{"item_name": f"b/{i}"} for i in range(3)])
    patches = [{"oid": m["oid"], "metadata": {"i": n}} for n, m in enumerate(made)]
    assert (await c.request("PATCH", "/v1/items", json=patches))["count"] == 3
    bad = [*patches, {"oid": "00000000-0000-4000-8000-000000000000", "size": 1}]
    bad[0] = {"oid": made[0]["oid"], "metadata": {"changed": True}}
    with pytest.raises(errors.NotFound) as info:
        await c.request("PATCH", "/v1/items", json=bad)
    assert info.value.field == "items[3].oid"
    assert (await c.item(made[0]["oid"]))["metadata"] == {"i": 0}
    await server.restart()
    c = server.client
    assert (await c.item(made[2]["oid"]))["metadata"] == {"i": 2}


async def test_expiry_set_and_removed(sqlite_server):
    c = sqlite_server.client
    item = await c.add_item(item_name="e", expire_at="2030-01-01T00:00:00Z")
    assert item["expire_at"] == "2030-01-01T00:00:00Z"
    found = [i["item_name"] async for i in
             c.find_items("*", expired_before="2031-01-01T00:00:00Z")]
    assert found == ["e"]
    item = await c.request("PATCH", f"/v1/items/{item['oid']}", json={"expire_at": None})
    assert item["expire_at"] is None
    assert [i async for i in c.find_items("*", expired_before="2031-01-01T00:00:00Z")] == []


async def test_delete_marks_for_detox_or_deletes_an_empty_item(server):
    c = server.client
    await setup_storages(c)
    placed = await c.add_item(item_name="placed", storage="disk1", size=3)
    empty = await c.add_item(item_name="empty")
    marked = await c.request("DELETE", f"/v1/items/{placed['oid']}")
    assert marked["state"] == "EXPIRED" and marked["replicas"][0]["state"] == "complete"
    gone = await c.request("DELETE", f"/v1/items/{empty['oid']}")
    assert gone["state"] == "DELETED"
    with pytest.raises(errors.Conflict):
        await c.request("DELETE", f"/v1/items/{empty['oid']}")
    # DELETED items are hidden from queries unless asked for
    assert [i["item_name"] async for i in c.find_items("*")] == ["placed"]
    assert [i["item_name"] async for i in c.find_items("*", state="DELETED")] == ["empty"]
    await server.restart()
    c = server.client
    assert (await c.item(empty["oid"]))["state"] == "DELETED"


async def test_concurrent_accesses_all_count(server):
    c = server.client
    item = await c.add_item(item_name="popular")
    path = f"/v1/items/{item['oid']}/accesses"
    await asyncio.gather(*(c.request("POST", path, json={"count": 2}) for _ in range(50)))
    got = await c.request("POST", path, json={"count": 1, "at": "2020-01-01T00:00:00Z"})
    assert got["access_count"] == 101
    assert got["last_access"] > "2020-01-01"  # an older access does not move it back
    other = await c.add_item(item_name="other")
    batch = [{"oid": item["oid"]}, {"oid": other["oid"], "count": 5}]
    assert (await c.request("POST", "/v1/accesses", json=batch))["count"] == 2
    await server.restart()
    c = server.client
    assert (await c.item(item["oid"]))["access_count"] == 102
    assert (await c.item(other["oid"]))["access_count"] == 5


async def test_queries_cover_the_dlm_request_functions(sqlite_server):
    c = sqlite_server.client
    await setup_storages(c)
    box = await c.add_item(item_name="run7", item_type="container")
    a = await c.add_item(item_name="run7/a", parent_oid=box["oid"], storage="disk1", size=10,
                         metadata={"instrument": "MID", "n": 3, "ok": True})
    b = await c.add_item(item_name="run7/b", parent_oid=box["oid"], storage="tape", size=32,
                         metadata={"instrument": "LOW"})
    await c.add_item(item_name="run7/a", storage="disk2", size=11)  # version 2
    await c.add_item(item_name="raw/x")

    async def names(**params):
        return [(i["item_name"], i["item_version"]) async for i in c.find_items(**params)]

    assert await names(name="run7/a") == [("run7/a", 2)]
    assert await names(name="run7/a", version="all") == [("run7/a", 1), ("run7/a", 2)]
    assert await names(prefix="run7/") == [("run7/a", 2), ("run7/b", 1)]  # name order
    assert await names(prefix="run7/", version="1") == [("run7/a", 1), ("run7/b", 1)]
    assert await names(storage="disk1", version="all") == [("run7/a", 1)]
    assert await names(storage="disk1") == []  # version 1 is not the latest
    assert await names(parent=box["oid"], version="all") == [("run7/a", 1), ("run7/b", 1)]
    assert await names(state="INITIALISED") == [("run7", 1), ("raw/x", 1)]
    assert await names(phase="SOLID") == [("run7/b", 1)]
    assert await names(type="container") == [("run7", 1)]
    assert await names(**{"meta.instrument": "MID", "version": "all"}) == [("run7/a", 1)]
    assert await names(**{"meta.n": "3", "version": "all"}) == [("run7/a", 1)]
    assert await names(**{"meta.ok": "true", "version": "all"}) == [("run7/a", 1)]
    children = await c.request("GET", f"/v1/items/{box['oid']}/children")
    assert [i["item_name"] for i in children["items"]] == ["run7/a", "run7/b"]
    assert (await c.item(box["oid"]))["size"] == 42  # derived from its members
    where = await c.request("GET", f"/v1/items/{b['oid']}/storages")
    assert where == {"storages": [{"name": "tape", "state": "complete", "uri": "/t/run7/b"}]}
    yes = await c.request("GET", "/v1/items/exists", params={"name": "run7/a", "ready": "true"})
    assert yes == {"exists": True, "ready": True, "oid": yes["oid"]}
    old = await c.request("GET", "/v1/items/exists", params={"name": "run7/a", "version": "1"})
    assert old["oid"] == a["oid"]
    raw = await c.request("GET", "/v1/items/exists", params={"name": "raw/x", "ready": "true"})
    assert raw == {"exists": False, "ready": False, "oid": None}


async def test_pages_over_every_item_are_complete_and_stable(sqlite_server):
    c = sqlite_server.client
    await c.add_items({"item_name": f"p/{i:03d}"} for i in range(250))
    seen = []
    page = await c.request("GET", "/v1/items", params={"limit": "100"})
    seen += [i["item_name"] for i in page["items"]]
    await c.add_item(item_name="a-late-one")  # added between pages: comes at the end
    while page["cursor"]:
        page = await c.request("GET", "/v1/items", params={"limit": "100",
                                                           "cursor": page["cursor"]})
        seen += [i["item_name"] for i in page["items"]]
    assert seen == [f"p/{i:03d}" for i in range(250)] + ["a-late-one"]


async def test_storage_changes_and_retirement_guard(server):
    c = server.client
    await setup_storages(c)
    only_here = await c.add_item(item_name="only", storage="disk1", size=5)
    await c.add_item(item_name="both", storage="disk1", size=5)
    both = (await c.request("GET", "/v1/items", params={"name": "both"}))["items"][0]
    await c.request("PATCH", f"/v1/items/{both['oid']}", json={"storage": "disk2"})
    s = await c.request("PATCH", "/v1/storages/disk1",
                        json={"capacity": "2 MB", "attributes": {"region": "eu", "x": 1},
                              "status": "draining"})
    assert s["capacity"] == 2 * 10**6 and s["attributes"] == {"region": "eu", "x": 1}
    s = await c.request("PATCH", "/v1/storages/disk1", json={"attributes": {"x": None}})
    assert s["attributes"] == {"region": "eu"}
    with pytest.raises(errors.Conflict) as info:
        await c.request("PATCH", "/v1/storages/disk1", json={"status": "retired"})
    assert "last complete copy of 1 live item" in str(info.value)
    assert (await c.request("GET", "/v1/storages/disk1"))["status"] == "draining"
    await c.request("DELETE", f"/v1/items/{only_here['oid']}")  # expired items may go
    s = await c.request("PATCH", "/v1/storages/disk1", json={"status": "retired"})
    assert s["status"] == "retired"
    await server.restart()
    c = server.client
    s = await c.request("GET", "/v1/storages/disk1")
    assert (s["status"], s["capacity"], s["attributes"]) == ("retired", 2 * 10**6,
                                                            {"region": "eu"})
    with pytest.raises(errors.NotFound):
        await c.request("PATCH", "/v1/storages/nope", json={"status": "online"})


async def test_copy_requests(server):
    c = server.client
    await setup_storages(c)
    item = await c.add_item(item_name="wanted", storage="disk1", size=5)
    req = await c.request("POST", "/v1/requests",
                          json={"item": "wanted", "storage": "disk2",
                                "pin_until": "2030-01-01T00:00:00Z", "comment": "analysis"})
    assert req["oid"] == item["oid"] and req["state"] == "pending"
    assert req["pin_until"] == "2030-01-01T00:00:00Z"
    by_oid = await c.request("POST", "/v1/requests", json={"item": item["oid"],
                                                           "storage": "tape"})
    assert by_oid["id"] == req["id"] + 1
    listed = await c.request("GET", "/v1/requests", params={"storage": "disk2"})
    assert [r["id"] for r in listed["requests"]] == [req["id"]]
    cancelled = await c.request("DELETE", f"/v1/requests/{req['id']}")
    assert cancelled["state"] == "cancelled"
    with pytest.raises(errors.Conflict):
        await c.request("DELETE", f"/v1/requests/{req['id']}")
    with pytest.raises(errors.NotFound):
        await c.request("POST", "/v1/requests", json={"item": "nothing", "storage": "disk2"})
    with pytest.raises(errors.BadRequest):
        await c.request("POST", "/v1/requests", json={"item": "wanted", "storage": "nope"})
    await server.restart()
    c = server.client
    states = {r["id"]: r["state"] for r in (await c.request("GET", "/v1/requests"))["requests"]}
    assert states == {req["id"]: "cancelled", by_oid["id"]: "pending"}


async def test_operations_and_history_lists_start_empty(sqlite_server):
    c = sqlite_server.client
    assert await c.request("GET", "/v1/operations") == {"operations": [], "cursor": None}
    assert await c.request("GET", "/v1/history") == {"cycles": []}


async def test_changes_carry_updates(sqlite_server):
    c = sqlite_server.client
    item = await c.add_item(item_name="watched")
    version = (await c.health())["version"]
    await c.request("PATCH", f"/v1/items/{item['oid']}", json={"metadata": {"k": "v"}})
    page = await c.changes(version)
    [(_, [(kind, record)])] = page["transactions"]
    assert kind == "item" and record[0] == item["oid"] and record[9] == {"k": "v"}
