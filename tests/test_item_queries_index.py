"""Item listings from the indexes (issue 17): the same answers as a filter over every row, a page
at a time from a cursor, through the inventory, REST, the Python client and read workers."""

from __future__ import annotations

import base64
import fnmatch
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from inventory import model, queries
from inventory.client import Client
from inventory.inventory import NONE, Inventory
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from inventory.rowsets import LOAD, RowSet
from tests.test_read_workers import _call, _serve, _until_serving

# ----------------------------------------------------------------------------- RowSet


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6 * LOAD)), max_size=400),
       st.lists(st.integers(0, 6 * LOAD), max_size=3000), st.integers(-1, 6 * LOAD))
def test_rowset_is_a_sorted_set(ops, loaded, after):
    rows, model_set = RowSet(), set()
    rows.defer()  # a load: buffered, then sorted once
    for r in loaded:
        rows.add(r)
    model_set.update(loaded)
    rows.settle()
    for add, r in ops:
        if add:
            rows.add(r)
            model_set.add(r)
        else:
            rows.discard(r)
            model_set.discard(r)
    assert list(rows) == sorted(model_set)
    assert len(rows) == len(model_set)
    assert list(rows.after(after)) == sorted(r for r in model_set if r > after)
    for r in (after, after + 1):
        assert (r in rows) == (r in model_set)


def test_rowset_splits_big_chunks_and_drops_empty_ones():
    rows = RowSet(range(0, 10 * LOAD, 2))
    for r in range(1, 10 * LOAD, 2):  # inserts in the middle split chunks
        rows.add(r)
    assert list(rows) == list(range(10 * LOAD))
    for r in range(10 * LOAD):
        rows.discard(r)
    assert list(rows) == [] and len(rows) == 0 and rows.nbytes() == 0


# ----------------------------------------------------------------------------- random inventories

_PARTS = ("a", "b", "ab", "a*b", "c")  # "*" in a name: the prefix must escape it


def _records(rng: random.Random, n: int, start_oid: int, parents: list[int]
             ) -> tuple[list[ItemRecord], list[ReplicaRecord]]:
    items, replicas = [], []
    for i in range(n):
        oid = start_oid + i
        name = "/".join(rng.choice(_PARTS) for _ in range(rng.randint(1, 3)))
        metadata = rng.choice([None, None, {"run": rng.randint(1, 3)}, {"ok": rng.random() < .5},
                               {"run": -1, "q": rng.choice(["good", "bad"])}])
        parent = rng.choice(parents) if parents and rng.random() < 0.2 else None
        itype = model.CONTAINER if rng.random() < 0.1 else model.FILE
        items.append(ItemRecord(
            oid, name, 1, itype, rng.choice(range(len(model.ITEM_STATES))),
            rng.randrange(len(model.PHASES)), 10, None, "adler32", metadata, parent, 1.0,
            rng.choice([None, 50.0, 150.0]), 0, None, None, None))
        for sid in rng.sample([1, 2, 3], rng.randint(0, 3)):
            replicas.append(ReplicaRecord(oid, sid, None, rng.choice([0, 1, 2, 2, 2, 5]), 10,
                                          None, 1.0, None, None))
    return items, replicas


def _with_versions(items: list[ItemRecord], inv: Inventory) -> list[ItemRecord]:
    """Each record as the next version of its name (names repeat on purpose)."""
    out, seen = [], {}
    for rec in items:
        row = inv.latest_by_name.get(rec.item_name)
        last = seen.get(rec.item_name, 0 if row is None else inv.i_version[row])
        seen[rec.item_name] = last + 1
        out.append(rec._replace(item_version=last + 1))
    return out


def _inventory(seed: int, deferred: bool) -> tuple[Inventory, random.Random]:
    rng = random.Random(seed)
    inv = Inventory()
    for sid in (1, 2, 3):
        inv.add_storage(StorageRecord(sid, f"s{sid}", "posix", f"/s{sid}", 10**9,
                                      rng.randrange(len(model.PHASES)), "online", {}, {}, 0.0))
    if deferred:
        inv.defer_indexes()  # as a store's load does
    oid = 1
    for _ in range(3):
        containers = [inv.i_oid[r] for r in range(len(inv.i_oid)) if inv.i_type[r]]
        items, replicas = _records(rng, rng.randint(5, 40), oid, containers)
        oid += len(items)
        inv.add_items(_with_versions(items, inv))
        rng.shuffle(replicas)  # a load adds them in the database's order
        inv.add_replicas(replicas)
    if deferred:
        inv.settle_indexes()
    return inv, rng


def _change(inv: Inventory, rng: random.Random) -> None:
    """Random updates, as the writer (or a mirror applying the feed) makes them."""
    for _ in range(rng.randint(1, 30)):
        what = rng.random()
        live = [r for r in range(len(inv.r_item)) if inv.r_item[r] != NONE]
        if what < 0.3 and inv.i_oid:
            row = rng.randrange(len(inv.i_oid))
            rec = inv.item_record(row)._replace(
                state=rng.randrange(len(model.ITEM_STATES)),
                metadata=rng.choice([None, {"run": 2}, {"q": "good"}]),
                target_phase=rng.randrange(len(model.PHASES)))
            inv.update_items([rec])
        elif what < 0.5 and live:
            row = rng.choice(live)
            inv.update_replica(row, inv.replica_record(row, rng.choice([0, 2, 5])))
        elif what < 0.65 and live:
            inv.remove_replica(rng.choice(live))
        elif what < 0.8 and inv.i_oid:
            item = rng.randrange(len(inv.i_oid))
            sid = rng.choice([1, 2, 3])
            if inv.replica_row(inv.i_oid[item], sid) is None:
                inv.add_replicas([ReplicaRecord(inv.i_oid[item], sid, None, 2, 1, None, 1.0,
                                                None, None)])
        elif what < 0.85:
            storage = inv.storages[rng.choice([1, 2, 3])]
            inv.update_storage(storage.record()._replace(phase=rng.randrange(4)))
        else:
            start = max(inv.i_oid, default=0) + 1
            containers = [inv.i_oid[r] for r in range(len(inv.i_oid)) if inv.i_type[r]]
            items, replicas = _records(rng, rng.randint(1, 5), start, containers)
            inv.add_items(_with_versions(items, inv))
            inv.add_replicas(replicas)


def _random_filters(inv: Inventory, rng: random.Random) -> queries.Filters:
    f = queries.Filters()
    pick = rng.random
    if pick() < 0.3:
        f.prefix = rng.choice(["a", "a/", "ab", "a*", "b/a", "c/c", "zz"])
    if pick() < 0.2:
        f.name = rng.choice(["a", "a/b", "a*", "*b", "a/?", "[ab]/*", "a[*]b*", "nope"])
    version = rng.choice(["latest", "latest", "all", 1, 2])
    f.all_versions = version != "latest"
    f.version = version if isinstance(version, int) else None
    if pick() < 0.3:
        f.state = rng.randrange(len(model.ITEM_STATES))
    if pick() < 0.3:
        f.phase = rng.randrange(len(model.PHASES))
    if pick() < 0.15:
        f.target = rng.randrange(len(model.PHASES))
    if pick() < 0.15:
        f.item_type = rng.randrange(2)
    if pick() < 0.4:
        f.storage_id = rng.choice([1, 2, 3])
    containers = [r for r in range(len(inv.i_oid)) if inv.i_type[r]]
    if containers and pick() < 0.2:
        f.parent_row = rng.choice(containers)
    if pick() < 0.15:
        f.expired_before = rng.choice([100.0, 200.0])
    if pick() < 0.3:
        f.meta = rng.choice([{"run": "2"}, {"run": "-1"}, {"ok": "true"}, {"q": "good"},
                             {"run": "1", "q": "bad"}])
    return f


def _reference(inv: Inventory, f: queries.Filters) -> list[int]:
    """Every row, filtered one by one (what a page used to do): the answer to match."""
    out = []
    for r in range(len(inv.i_oid)):
        name = inv.i_name[r]
        if f.name and not fnmatch.fnmatchcase(name, f.name):
            continue
        if f.prefix and not name.startswith(f.prefix):
            continue
        if not f.all_versions and inv.latest_by_name[name] != r:
            continue
        if f.version is not None and inv.i_version[r] != f.version:
            continue
        if (inv.i_state[r] != f.state) if f.state is not None else (
                inv.i_state[r] == model.DELETED):
            continue
        if f.phase is not None and inv.current_phase(r) != f.phase:
            continue
        if f.target is not None and inv.i_target[r] != f.target:
            continue
        if f.item_type is not None and inv.i_type[r] != f.item_type:
            continue
        if f.storage_id is not None and not any(
                inv.r_storage[x] == f.storage_id for x in inv.replica_rows_of_item(r)):
            continue
        if f.parent_row is not None and inv.i_parent[r] != f.parent_row:
            continue
        if f.expired_before is not None and not inv.i_expire[r] < f.expired_before:
            continue
        metadata = inv.i_metadata.get(r, {})
        if any(k not in metadata or _text(metadata[k]) != v for k, v in f.meta.items()):
            continue
        out.append(r)
    if f.by_name:
        out.sort(key=lambda r: (inv.i_name[r], inv.i_version[r]))
    return out


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pages(inv: Inventory, plan: queries.Plan, limit: int, budget: int, max_examined: int
           ) -> list[int]:
    """Every page of a plan, as the handler walks it (in ``budget`` steps, at most
    ``max_examined`` candidates a page), through encoded cursors."""
    rows: list[int] = []
    cursor = None
    for _ in range(10_000):
        progress = queries.Scan(queries.decode_cursor(cursor, inv, plan.by_name), limit + 1)
        while not progress.done and progress.examined < max_examined:
            queries.scan(plan, progress, min(budget, max_examined - progress.examined))
        assert len(progress.found[:limit]) <= limit
        rows.extend(progress.found[:limit])
        position = queries.page_cursor(progress, limit)
        if position is None:
            return rows
        cursor = queries.encode_cursor(position)
    raise AssertionError("the cursor never reached the end")


def _check_indexes(inv: Inventory) -> None:
    for r in range(len(inv.i_oid)):
        assert inv.phases()[r] == inv.current_phase(r), r
    for sid in inv.storages:
        truth = sorted({inv.r_item[x] for x in inv.replica_rows_on_storage(sid)})
        assert list(inv.items_on_storage(sid)) == truth
    assert list(inv.with_metadata) == sorted(inv.i_metadata)
    assert list(inv.names_from("")) == sorted(inv.latest_by_name)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**9), st.booleans())
def test_indexed_pages_equal_a_filter_over_every_row(seed, deferred):
    inv, rng = _inventory(seed, deferred)
    for round_ in range(3):
        if round_:
            _change(inv, rng)
        _check_indexes(inv)
        for _ in range(8):
            f = _random_filters(inv, rng)
            expected = _reference(inv, f)
            got = _pages(inv, queries.plan(inv, f), rng.choice([1, 2, 5, 1000]),
                         rng.choice([1, 3, 2048]), rng.choice([1, 4, 10**6]))
            assert got == expected, (f, queries.plan(inv, f).driver)


def test_a_container_lists_every_member_in_row_order():
    inv, _rng = _inventory(7, False)
    parent = next(r for r in range(len(inv.i_oid)) if inv.i_type[r] and inv.child_rows(r))
    got = _pages(inv, queries.children_plan(inv, parent), 1, 1, 10)
    assert got == [r for r in range(len(inv.i_oid)) if inv.i_parent[r] == parent]


def test_the_driver_is_the_most_selective_index():
    inv, _rng = _inventory(3, True)
    f = queries.Filters(storage_id=1, meta={"run": "2"})
    plan = queries.plan(inv, f)
    assert plan.driver in ("storage", "metadata")
    small = min(len(inv.items_on_storage(1)), len(inv.with_metadata))
    assert plan.driver == ("storage" if len(inv.items_on_storage(1)) == small else "metadata")
    assert queries.plan(inv, queries.Filters(prefix="a")).driver == "name"
    assert queries.plan(inv, queries.Filters()).driver == "all"


# ----------------------------------------------------------------------------- REST and client


async def _disk(client, name: str, phase: str = "GAS") -> None:
    await client.add_storage(name=name, kind="posix", root=f"/data/{name}", capacity=10**12,
                             phase=phase, config={"verify_ingest": False})


async def _fill(client) -> dict[str, dict]:
    await _disk(client, "d1")
    await _disk(client, "d2", "SOLID")
    specs = []
    for i in range(30):
        spec = {"item_name": f"{'obs' if i % 2 else 'raw'}/{i:02d}", "size": 1}
        if i % 3:
            spec["storage"] = "d1" if i % 5 else "d2"
        if i % 4 == 0:
            spec["metadata"] = {"run": i % 8, "good": i % 8 == 0}
        specs.append(spec)
    made = await client.add_items(specs)
    return {m["item_name"]: m for m in made}


async def _listed(client, **filters) -> list[tuple[str, int]]:
    return [(i["item_name"], i["item_version"])
            async for i in client.find_items(limit=filters.pop("limit", 4), **filters)]


async def test_listings_page_through_rest_and_the_client(server):
    client = server.client
    made = await _fill(client)
    names = sorted(made)
    # name order for prefixes, whatever the page size
    assert await _listed(client, prefix="obs/") == [(n, 1) for n in names if n.startswith("obs")]
    assert await _listed(client, prefix="obs/", limit=1) == await _listed(client, prefix="obs/")
    assert await _listed(client, name="raw/1*") == [("raw/10", 1), ("raw/12", 1),
                                                    ("raw/14", 1), ("raw/16", 1), ("raw/18", 1)]
    # registration order for the rest
    on_d2 = [n for n in made if int(n[-2:]) % 3 and int(n[-2:]) % 5 == 0]
    assert await _listed(client, storage="d2") == [(n, 1) for n in on_d2]
    assert await _listed(client, phase="SOLID") == [(n, 1) for n in on_d2]
    assert await _listed(client, state="INITIALISED") == [
        (n, 1) for n in made if int(n[-2:]) % 3 == 0]
    assert await _listed(client, metadata={"run": "0"}) == [("raw/00", 1), ("raw/08", 1),
                                                            ("raw/16", 1), ("raw/24", 1)]
    assert await _listed(client, metadata={"good": "true"}, storage="d1") == [("raw/08", 1),
                                                                             ("raw/16", 1)]
    # changes show at once: a new version, a deleted item, a storage's phase
    await client.add_item(item_name="obs/01", item_version=2, storage="d2", size=1)
    await client.request("DELETE", f"/v1/items/{made['obs/03']['oid']}")
    assert ("obs/03", 1) not in await _listed(client, prefix="obs/")
    assert (await _listed(client, prefix="obs/0", version="all"))[:2] == [("obs/01", 1),
                                                                        ("obs/01", 2)]
    await client.request("PATCH", "/v1/storages/d2", json={"phase": "LIQUID"})
    assert await _listed(client, phase="SOLID") == []
    liquid = await _listed(client, phase="LIQUID")
    assert ("obs/01", 2) in liquid and len(liquid) == len(on_d2) + 1
    # the load at start builds the same indexes
    asked = ({"prefix": "raw/"}, {"storage": "d1"}, {"phase": "LIQUID"},
             {"metadata": {"run": "4"}}, {"state": "DELETED"}, {"name": "obs/*", "version": "all"})
    before = [await _listed(client, **dict(k)) for k in asked]
    assert all(before)
    await server.restart()
    assert [await _listed(server.client, **dict(k)) for k in asked] == before


async def test_a_long_walk_answers_partial_pages_that_the_client_follows(server, monkeypatch):
    client = server.client
    made = await _fill(client)
    monkeypatch.setattr(queries, "MAX_EXAMINED", 3)  # a page examines at most 3 candidates
    page = await client.request("GET", "/v1/items", params={"meta.run": "0", "limit": "10"})
    assert len(page["items"]) < 4 and page["cursor"]  # stopped early: the cursor goes on
    assert await _listed(client, metadata={"run": "0"}, limit=10) == [
        ("raw/00", 1), ("raw/08", 1), ("raw/16", 1), ("raw/24", 1)]
    assert await _listed(client, prefix="raw/", limit=100) == [
        (n, 1) for n in sorted(made) if n.startswith("raw/")]


async def test_cursors_of_another_query_or_made_up_are_refused(http, sqlite_server):
    await _fill(sqlite_server.client)
    url = sqlite_server.url + "/v1/items"

    async def get(**params) -> tuple[int, dict]:
        async with http.get(url, params=params) as resp:
            return resp.status, await resp.json()

    status, first = await get(prefix="obs/", limit="2")
    assert status == 200 and first["cursor"]
    status, body = await get(storage="d1", cursor=first["cursor"])  # a name cursor, row query
    assert status == 400 and body["error"]["field"] == "cursor"
    for bad in ("zzz", "!!", base64.urlsafe_b64encode(b"rx").decode(),
                base64.urlsafe_b64encode(b"n:x").decode()):
        status, body = await get(prefix="obs/", cursor=bad)
        assert status == 400 and body["error"]["field"] == "cursor", bad
    # a row cursor (what every listing gave before name order) still continues a name listing
    status, rows = await get(storage="d1", limit="1")
    status, after = await get(prefix="obs/", cursor=rows["cursor"])
    assert status == 200
    status, whole = await get(prefix="obs/")
    first_name = rows["items"][0]["item_name"]
    assert [i["item_name"] for i in after["items"]] == [
        i["item_name"] for i in whole["items"] if i["item_name"] > first_name]


async def test_read_workers_answer_listings_from_their_own_indexes(db_url, tmp_path):
    srv = _serve(tmp_path, db_url, 2)
    try:
        await _until_serving(srv.url, 1)
        async with Client(srv.url, token="") as client:
            await _fill(client)
            await client.request("PATCH", "/v1/storages/d2", json={"phase": "LIQUID"})
            expected = {"d2": await _listed(client, storage="d2")}
        seen = set()
        for _ in range(12):  # one connection each: the kernel picks the process
            status, body, worker = await _call("GET", srv.url + "/v1/items",
                                               params={"phase": "LIQUID", "limit": "100"})
            assert status == 200
            assert [(i["item_name"], 1) for i in body["items"]] == expected["d2"], worker
            status, body, worker = await _call("GET", srv.url + "/v1/items",
                                               params={"prefix": "obs/", "limit": "3"})
            assert [i["item_name"] for i in body["items"]] == ["obs/01", "obs/03", "obs/05"]
            seen.add(worker)
        assert seen - {None}, "no listing was answered by a read worker"
    finally:
        srv.stop()


async def test_a_long_listing_gives_the_event_loop_back_between_slices(server, monkeypatch):
    from inventory.server import routes_items

    await _fill(server.client)
    yields = []
    real_sleep = routes_items.asyncio.sleep

    async def counting_sleep(delay):
        yields.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(routes_items, "SLICE_SECONDS", 0.0)  # every batch is a slice
    monkeypatch.setattr(routes_items, "_BATCH", 1)
    monkeypatch.setattr(routes_items.asyncio, "sleep", counting_sleep)
    page = await server.client.request("GET", "/v1/items", params={"meta.run": "0"})
    assert [i["item_name"] for i in page["items"]] == ["raw/00", "raw/08", "raw/16", "raw/24"]
    assert yields.count(0) >= 8  # candidates walked, then items answered, one slice each
