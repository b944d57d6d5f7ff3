"""Dealer scenarios through the real server, the file operations engine and the CLI."""

from __future__ import annotations

import asyncio
import os

import pytest

from dealer.columns import supports as supports_columns
from dealer.cycle import run_cycle
from dealer.planner import plan_cycle
from detox.cycle import run_cycle as run_detox
from inventory import errors
from inventory.cli import main
from inventory.fileops.engine import FileOpsLimits
from policies import load_policy_text
from tests.conftest import InProcessServer, adler, settle

POLICY = """
partition "all" { }
dealer {
    phase GAS    copies 1
    phase LIQUID copies 2
    phase SOLID  copies 2
    limits { target_occupancy 90% }
}
"""
FAST = FileOpsLimits(workers=4, per_storage=4, retry_base=0.05, max_attempts=2, poll=0.05,
                     unreachable_after=100)



@pytest.fixture
async def grid(db_url, tmp_path):
    srv = InProcessServer(db_url, tmp_path, fileops=FAST)
    await srv.start()
    srv.roots = {}

    async def storage(name, phase="GAS", capacity=10_000, **kw):
        root = tmp_path / name
        root.mkdir()
        srv.roots[name] = root
        return await srv.client.add_storage(name=name, kind="posix", root=str(root),
                                            capacity=capacity, phase=phase, **kw)

    async def item(name, storage="g1", size=100, **kw):
        data = os.urandom(size)
        (srv.roots[storage] / name).write_bytes(data)
        return await srv.client.add_item(item_name=name, storage=storage, size=size,
                                         checksum=adler(data), **kw)

    srv.storage, srv.item = storage, item
    try:
        yield srv
    finally:
        await srv.stop()



async def cycle(srv, policy_text=POLICY, **kw):
    result = await run_cycle(srv.client, load_policy_text(policy_text, "t.policy"),
                             policy_text, **kw)
    await settle(srv.client)
    return result


async def copies(srv, oid):
    item = await srv.client.item(oid)
    return {r["storage"]: r["state"] for r in item["replicas"]}, item


async def test_liquid_item_gets_a_second_verified_copy(grid):
    for name in ("g1", "g2", "g3"):
        await grid.storage(name)
    item = await grid.item("l.dat", target_phase="LIQUID")
    first = await cycle(grid)
    assert [c.reason for c in first.plan.copies] == ["phase LIQUID"]
    where, full = await copies(grid, item["oid"])
    assert sorted(where.values()) == ["complete", "complete"] and full["current_phase"] == \
        "LIQUID"
    for storage in where:
        assert (grid.roots[storage] / "l.dat").exists()
    again = await cycle(grid)
    assert again.plan.copies == []  # satisfied: nothing more


async def test_solid_target_is_reached_by_adding_phases(grid):
    await grid.storage("g1")
    await grid.storage("g2")
    await grid.storage("liq", phase="LIQUID")
    item = await grid.item("s.dat", target_phase="SOLID")
    await cycle(grid)
    where, full = await copies(grid, item["oid"])
    assert full["current_phase"] == "SOLID"  # GAS + GAS + LIQUID = 4
    assert set(where) == {"g1", "g2", "liq"}


async def test_a_copy_request_is_served_first_and_closed(grid):
    await grid.storage("g1")
    await grid.storage("g2")
    await grid.storage("wanted")
    busy = await grid.item("busy.dat", target_phase="LIQUID")
    asked = await grid.item("asked.dat", target_phase="GAS")
    request = await grid.client.request("POST", "/v1/requests",
                                        json={"item": "asked.dat", "storage": "wanted"})
    policy = POLICY.replace("target_occupancy 90%", "target_occupancy 90%\n"
                            "        volume_per_cycle 150 B")
    first = await cycle(grid, policy)
    assert [c.reason for c in first.plan.copies] == [f"request {request['id']}"]
    assert (await copies(grid, asked["oid"]))[0]["wanted"] == "complete"
    [req] = (await grid.client.request("GET", "/v1/requests"))["requests"]
    assert req["state"] == "done"  # closed by its copy's completion, before the next cycle
    second = await cycle(grid, policy)
    assert second.plan.requests_done == []  # nothing left for the cycle to close
    assert len((await copies(grid, busy["oid"]))[0]) == 2  # served in the second cycle


async def test_storages_at_target_occupancy_receive_nothing(grid):
    await grid.storage("g1")
    await grid.storage("full", capacity=1000)
    await grid.item("pad", storage="full", size=850, target_phase="GAS")
    item = await grid.item("x.dat", target_phase="LIQUID")
    result = await cycle(grid)
    assert result.plan.copies == [] and result.plan.unmet == {"phase LIQUID": 1}
    assert set((await copies(grid, item["oid"]))[0]) == {"g1"}


async def test_an_unreliable_storage_is_avoided(grid):
    await grid.storage("g1", capacity=100_000)
    await grid.storage("flaky", capacity=100_000)
    await grid.storage("steady", capacity=10_000)  # less free space: ranked last if all equal
    # make a copy to flaky fail: a file stands where the item's directory must be
    (grid.roots["flaky"] / "dir").write_text("in the way")
    (grid.roots["g1"] / "dir").mkdir()
    bad = await grid.item("dir/x.dat", storage="g1", target_phase="GAS")
    await grid.client.request("POST", "/v1/operations", json={
        "kind": "copy", "item": bad["oid"], "target": "flaky"})
    await settle(grid.client)
    flaky = await grid.client.request("GET", "/v1/storages/flaky")
    assert flaky["reliability"]["copies_failed"] >= 1
    item = await grid.item("y.dat", target_phase="LIQUID")
    result = await cycle(grid)
    chosen = [c.target_id for c in result.plan.copies if c.oid == item["oid"]]
    steady = await grid.client.request("GET", "/v1/storages/steady")
    assert chosen == [steady["id"]]


async def test_popular_items_gain_copies_and_detox_takes_them_back(grid):
    for name in ("g1", "g2", "g3", "g4"):
        await grid.storage(name)
    item = await grid.item("hot.dat", target_phase="GAS")
    policy = POLICY.replace("    limits", "    popularity { half_life 7d threshold 10 "
                            "max_copies 3 }\n    limits")
    await grid.client.request("POST", f"/v1/items/{item['oid']}/accesses", json={"count": 25})
    await cycle(grid, policy)
    assert len((await copies(grid, item["oid"]))[0]) == 3
    cool = ('partition "all" { }\ndetox {\n    when storage.occupancy > 0%\n'
            "    until storage.occupancy < 0%\n    protect \"popular\" if "
            "item.popularity >= 10\n    default dismiss\n}\n")
    await grid.client.request("PATCH", f"/v1/items/{item['oid']}",
                              json={"metadata": {"cooled": True}})
    await run_detox(grid.client, load_policy_text(cool, "c"), cool)
    await settle(grid.client)
    assert len((await copies(grid, item["oid"]))[0]) == 3  # still popular: protected
    quiet = cool.replace("item.popularity >= 10", "item.popularity >= 1000")
    await run_detox(grid.client, load_policy_text(quiet, "q"), quiet)
    await settle(grid.client)
    assert len((await copies(grid, item["oid"]))[0]) == 1  # never the last copy


async def test_a_draining_storage_is_emptied_then_retired(grid):
    await grid.storage("old")
    await grid.storage("new1")
    await grid.storage("new2")
    items = [await grid.item(f"d{i}", storage="old", target_phase="GAS") for i in range(4)]
    await grid.client.request("PATCH", "/v1/storages/old", json={"status": "draining"})
    with pytest.raises(errors.Conflict):
        await grid.client.request("PATCH", "/v1/storages/old", json={"status": "retired"})
    result = await cycle(grid)
    assert {c.reason for c in result.plan.copies} == {"drain"}
    drain = ('partition "all" { }\ndetox {\n    on storage.status == draining\n'
             "    when storage.status == draining\n    until storage.used == 0 B\n"
             "    default dismiss\n}\n")
    await run_detox(grid.client, load_policy_text(drain, "d"), drain)
    await settle(grid.client)
    for it in items:
        where, full = await copies(grid, it["oid"])
        assert "old" not in where and len(where) == 1 and full["state"] == "READY"
    old = await grid.client.request("PATCH", "/v1/storages/old", json={"status": "retired"})
    assert old["status"] == "retired" and old["used"] == 0


async def test_dry_run_and_cli(grid, capsys, tmp_path):
    await grid.storage("g1")
    await grid.storage("g2")
    await grid.item("z.dat", target_phase="LIQUID")
    before = (await grid.client.health())["version"]
    result = await run_cycle(grid.client, load_policy_text(POLICY, "t"), POLICY, dry_run=True)
    assert len(result.plan.copies) == 1 and result.applied is None
    assert (await grid.client.health())["version"] == before
    policy_file = tmp_path / "p.policy"
    policy_file.write_text(POLICY)
    code = await asyncio.to_thread(main, ["dealer", "--policy", str(policy_file), "--url",
                                          grid.url, "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "Dealer dry run" in out and "phase LIQUID" in out


# A rule comparing two attributes: beyond the column evaluator, so planned on records
RECORD_POLICY = POLICY.replace("phase GAS ", 'place "odd" if item.access_count > item.version '
                               "copies 3\n    phase GAS ")


async def test_a_kept_snapshot_caught_up_through_the_feed_sees_new_items(grid):
    """`dlm dealer --every` on records catches its last snapshot up through the change feed:
    an item ingested since is copied as a new snapshot would have it copied."""
    await grid.storage("g1")
    await grid.storage("g2")
    policy = load_policy_text(RECORD_POLICY, "t.policy")
    assert not supports_columns(policy)
    first = await run_cycle(grid.client, policy, RECORD_POLICY)
    assert first.plan.copies == [] and first.snapshot is not None
    await grid.item("new", target_phase="LIQUID")
    kept = await run_cycle(grid.client, policy, RECORD_POLICY, dry_run=True,
                           snapshot=first.snapshot)
    fresh = await run_cycle(grid.client, policy, RECORD_POLICY, dry_run=True)
    assert kept.snapshot is first.snapshot
    assert [(c.oid, c.target_id) for c in kept.plan.copies] == \
        [(c.oid, c.target_id) for c in fresh.plan.copies] != []


async def test_a_cycle_on_columns_takes_a_new_snapshot_and_plans_as_records_do(grid):
    """The benchmark's kind of policy is planned on a column snapshot, a new one each cycle
    (nothing is kept to catch up), and plans what the record planner plans."""
    await grid.storage("g1")
    await grid.storage("g2")
    await grid.storage("l1", phase="LIQUID")
    policy = load_policy_text(POLICY, "t.policy")
    assert supports_columns(policy)
    first = await run_cycle(grid.client, policy, POLICY)
    assert first.snapshot is None
    await grid.item("new", target_phase="SOLID")
    on_columns = await run_cycle(grid.client, policy, POLICY, dry_run=True,
                                 snapshot=first.snapshot)
    snap = await grid.client.snapshot()
    on_records = plan_cycle(policy, snap.storages, snap.items, snap.replicas.values(),
                            on_columns.plan.now)
    assert [(c.oid, c.target_id, c.reason) for c in on_columns.plan.copies] == \
        [(c.oid, c.target_id, c.reason) for c in on_records.copies] != []
