"""Copies pinned by copy requests, as Detox sees them (issue 15, item 7): both planners keep
them with the pin as the reason and take the next candidates, the report and the dry run show
them kept, an expired pin protects nothing, and a pin made after the snapshot is still dropped
by the server at apply and counted. Through the REST API, the Python API and the CLI."""

from __future__ import annotations

import asyncio

import pytest

from detox.cycle import CycleResult, format_report, plan_body, run_cycle
from inventory import model
from inventory.cli import main
from policies import load_policy_text
from tests.conftest import settle
from tests.test_detox import POLICY, RECORD_POLICY, replicas_of, site  # noqa: F401

FOREVER = "2099-01-01T00:00:00Z"
REASON = "pinned by copy request {} until 2099-01-01T00:00:00Z"
PLANNERS = [pytest.param(POLICY, id="columns"), pytest.param(RECORD_POLICY, id="records")]


async def pin(client, oid: str, storage: str = "disk1", until: str = FOREVER) -> int:
    request = await client.request("POST", "/v1/requests", json={
        "item": oid, "storage": storage, "pin_until": until})
    return request["id"]


async def more_candidates(site) -> None:  # noqa: F811
    """f6 and f7 get a copy on disk2 too: disk1 then has candidates f1-f7 (popularity 1-7)."""
    for i in (6, 7):
        name = f"set/f{i}"
        (site.roots["disk2"] / name).write_bytes((site.roots["disk1"] / name).read_bytes())
        await site.client.request("PATCH", f"/v1/items/{site.items[name]}",
                                  json={"storage": "disk2"})


@pytest.mark.parametrize("text", PLANNERS)
async def test_pinned_least_popular_copies_are_kept_and_the_next_ones_go(site, text):  # noqa: F811
    c = site.client
    await more_candidates(site)
    requests = [await pin(c, site.items[f"set/f{i}"]) for i in (1, 2)]  # the least popular
    result = await run_cycle(c, load_policy_text(text, "t.policy"), text)
    planned = {d.oid for d in result.plan.deletions}
    assert planned == {site.items[f"set/f{i}"] for i in (3, 4, 5, 6)}
    [disk1] = [s for s in result.plan.storages if s.name == "disk1"]
    assert disk1.triggered and disk1.satisfied and disk1.occupancy_after < 0.7
    assert disk1.protected_bytes[REASON.format(requests[0])] == 100
    assert result.applied["summary"]["dropped"]["pinned"] == 0
    assert result.applied["summary"]["applied"]["deletions"] == 4
    assert result.plan.summary()["pinned"] == [
        {"request": r, "requester": None, "until": FOREVER, "replicas": 1, "bytes": 100}
        for r in requests]
    report = format_report(result, dry_run=False)
    disk1_line = next(line for line in report.splitlines() if line.startswith("disk1 "))
    assert disk1_line.endswith("ok")
    assert f"keep: {REASON.format(requests[0])}" in report
    assert f"request {requests[1]} until {FOREVER}: 1 replicas, 100 B" in report
    assert "0 (pinned by a copy request since the snapshot)" in report
    await settle(c)
    assert (await c.request("GET", "/v1/storages/disk1"))["used"] == 600
    for i in (1, 2):
        assert "disk1" in await replicas_of(c, site.items[f"set/f{i}"])
    # the history keeps each pinned copy's decision with its reason
    [cycle] = (await c.request("GET", "/v1/history", params={"kind": "detox"}))["cycles"]
    decisions = (await c.request("GET", f"/v1/history/{cycle['id']}/decisions",
                                 params={"storage": "disk1"}))["decisions"]
    pinned = sorted((d["outcome"], d["rule"]) for d in decisions if d["rule"].startswith("pin"))
    assert pinned == [("keep", REASON.format(r)) for r in requests]


@pytest.mark.parametrize("text", PLANNERS)
async def test_an_expired_pin_no_longer_protects(site, text):  # noqa: F811
    c = site.client
    await pin(c, site.items["set/f1"], until="2050-01-01T00:00:00Z")  # a past one is 400
    result = await run_cycle(c, load_policy_text(text, "t.policy"), text, dry_run=True,
                             now=model.parse_time("2051-01-01T00:00:00Z"))
    assert {d.oid for d in result.plan.deletions} == {site.items[f"set/f{i}"]
                                                      for i in (1, 2, 3, 4)}
    assert result.plan.summary()["pinned"] == []


@pytest.mark.parametrize("text", PLANNERS)
async def test_a_pin_does_not_keep_an_expired_items_copies(site, text):  # noqa: F811
    """Expiry wins over a pin, as the server's apply has it: the item is going away."""
    c = site.client
    oid = site.items["set/f7"]
    await pin(c, oid)
    await c.request("PATCH", f"/v1/items/{oid}", json={"expire_at": "2001-01-01T00:00:00Z"})
    result = await run_cycle(c, load_policy_text(text, "t.policy"), text)
    assert (oid, "lifecycle: item expired") in {(d.oid, d.rule) for d in result.plan.deletions}
    assert result.applied["summary"]["dropped"]["pinned"] == 0


async def test_a_pin_made_after_the_snapshot_is_dropped_at_apply_and_counted(site):  # noqa: F811
    c = site.client
    policy = load_policy_text(POLICY, "t.policy")
    planned = await run_cycle(c, policy, POLICY, dry_run=True)
    first = planned.plan.deletions[0]
    await pin(c, first.oid)  # between the snapshot and the apply
    answer = await c.post_msgpack("/v1/cycles/detox", plan_body(
        policy, POLICY, planned.plan, planned.snapshot_version, planned.plan.now))
    assert answer["summary"]["dropped"]["pinned"] == 1
    assert answer["summary"]["applied"]["deletions"] == len(planned.plan.deletions) - 1
    report = format_report(CycleResult(planned.plan, planned.snapshot_version, {}, answer),
                           dry_run=False)
    assert "1 (pinned by a copy request since the snapshot)" in report
    assert "0 (the inventory changed), 0 (the safety re-check)" in report
    await settle(c)
    assert "disk1" in await replicas_of(c, first.oid)


async def test_the_dry_run_lists_pinned_copies_as_kept(site, tmp_path, capsys):  # noqa: F811
    c = site.client
    request = await pin(c, site.items["set/f1"])
    policy_file = tmp_path / "p.policy"
    policy_file.write_text(POLICY)
    before = (await c.health())["version"]
    code = await asyncio.to_thread(main, ["detox", "--policy", str(policy_file), "--url",
                                          site.url, "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "Detox dry run" in out
    assert f"keep: {REASON.format(request)}" in out
    assert "kept, pinned by copy requests:" in out
    assert f"request {request} until {FOREVER}: 1 replicas, 100 B" in out
    code = await asyncio.to_thread(main, ["detox", "--policy", str(policy_file), "--url",
                                          site.url, "--dry-run", "--json"])
    out = capsys.readouterr().out
    assert code == 0 and f'"request": {request}' in out
    assert (await c.health())["version"] == before  # a dry run changes nothing


async def test_snapshots_carry_the_pins_and_a_caught_up_snapshot_sees_new_ones(site):  # noqa: F811
    c = site.client
    disk1 = (await c.request("GET", "/v1/storages/disk1"))["id"]
    file_request = await pin(c, site.items["set/f1"])
    box = await c.add_item(item_name="box", item_type="container")
    members = [(await c.add_item(item_name=f"box/{i}", parent_oid=box["oid"]))["oid"]
               for i in range(2)]
    box_request = await pin(c, box["oid"], storage="disk1", until="2098-01-01T00:00:00Z")
    await pin(c, site.items["set/f1"], until="2050-01-01T00:00:00Z")  # shorter: not the reason
    snap = await c.snapshot()
    pins = snap.pins()
    assert pins[site.items["set/f1"], disk1].request == file_request
    assert {pins[m, disk1].request for m in members} == {box_request}
    assert (box["oid"], disk1) not in pins  # a container's request pins its members
    columns = await c.column_snapshot()
    by_oid = {(columns.oid_texts([row])[0], sid): p for (row, sid), p in columns.pins.items()}
    assert by_oid == pins
    # a request made after the snapshot reaches it through the change feed
    late = await pin(c, site.items["set/f2"])
    assert await c.catch_up(snap)
    assert snap.pins()[site.items["set/f2"], disk1].request == late
    await c.request("DELETE", f"/v1/requests/{late}")  # cancelled: no longer pins
    assert await c.catch_up(snap)
    assert (site.items["set/f2"], disk1) not in snap.pins()


async def test_a_bad_pin_until_is_refused_naming_the_field(site):  # noqa: F811
    from inventory import errors

    with pytest.raises(errors.BadRequest) as info:
        await pin(site.client, site.items["set/f1"], until="next week")
    assert info.value.field == "pin_until"
