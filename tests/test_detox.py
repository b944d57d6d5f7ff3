"""Detox scenarios through the real server, the file operations engine and the CLI."""

from __future__ import annotations

import asyncio
import os

import pytest

from detox.cycle import run_cycle
from inventory.cli import main
from inventory.fileops.engine import FileOpsLimits
from policies import load_policy_text
from tests.conftest import InProcessServer, adler, settle

POLICY = """
partition "all" { }
detox {
    when  storage.occupancy > 90%
    until storage.occupancy < 70%
    ignore  "in flight" if replica.state != complete
    protect "keep"      if item.metadata.keep == true
    delete  "expired"   if item.state == EXPIRED
    default dismiss "candidate"
    order by item.popularity ascending, replica.size descending
}
"""
# The same policy with a rule the column planner cannot express (two attributes compared; it
# never matches here): planned on records, with a snapshot kept and caught up between cycles.
RECORD_POLICY = POLICY.replace('    default dismiss', '    protect "grown" if replica.size > '
                               'item.size\n    default dismiss')
FAST = FileOpsLimits(workers=4, per_storage=4, retry_base=0.05, poll=0.05)



@pytest.fixture
async def site(db_url, tmp_path):
    """disk1 is full (10 items of 100 bytes in 1000); items 0-5 also have a copy on disk2."""
    srv = InProcessServer(db_url, tmp_path, fileops=FAST)
    await srv.start()
    c = srv.client
    srv.roots = {}
    for name, capacity in (("disk1", 1000), ("disk2", 100_000)):
        root = tmp_path / name
        root.mkdir()
        srv.roots[name] = root
        await c.add_storage(name=name, kind="posix", root=str(root), capacity=capacity,
                            phase="GAS")
    srv.items = {}
    for i in range(10):
        data = os.urandom(100)
        name = f"set/f{i}"
        for disk in ("disk1", "disk2") if i <= 5 else ("disk1",):
            (srv.roots[disk] / "set").mkdir(exist_ok=True)
            (srv.roots[disk] / name).write_bytes(data)
        item = await c.add_item(item_name=name, storage="disk1", size=100, checksum=adler(data),
                                target_phase="GAS", metadata={"keep": i == 0})
        if i <= 5:
            await c.request("PATCH", f"/v1/items/{item['oid']}", json={"storage": "disk2"})
        # popularity: f5 most read, f1 least
        if i:
            await c.request("POST", f"/v1/items/{item['oid']}/accesses", json={"count": i})
        srv.items[name] = item["oid"]
    try:
        yield srv
    finally:
        await srv.stop()



async def replicas_of(client, oid):
    return sorted(r["storage"] for r in (await client.item(oid))["replicas"])


async def test_a_full_storage_ends_under_its_low_watermark(site):
    c = site.client
    policy = load_policy_text(POLICY, "test.policy")
    result = await run_cycle(c, policy, POLICY)
    assert len(result.plan.deletions) == 4
    assert result.applied["summary"]["applied"]["deletions"] == 4
    ops = await settle(c)
    assert [o["state"] for o in ops] == ["done"] * 4
    assert {o["origin"] for o in ops} == {"detox"}
    disk1 = await c.request("GET", "/v1/storages/disk1")
    assert disk1["used"] == 600 and disk1["occupancy"] < 0.7
    # least popular candidates went first: f1..f4; f5 (most read) stays; f0 is protected
    gone = [n for n, oid in site.items.items() if "disk1" not in await replicas_of(c, oid)]
    assert gone == ["set/f1", "set/f2", "set/f3", "set/f4"]
    for name in gone:
        assert not (site.roots["disk1"] / name).exists()
        assert (site.roots["disk2"] / name).exists()
    # last copies (f6..f9) and the protected f0 survive
    for i in (0, 5, 6, 7, 8, 9):
        assert "disk1" in await replicas_of(c, site.items[f"set/f{i}"])
    # the cycle is in the history with every decision and its rule
    [cycle] = (await c.request("GET", "/v1/history", params={"kind": "detox"}))["cycles"]
    full = await c.request("GET", f"/v1/history/{cycle['id']}")
    assert full["policy"] == POLICY and full["summary"]["applied"]["deletions"] == 4
    decisions = (await c.request("GET", f"/v1/history/{cycle['id']}/decisions",
                                 params={"storage": "disk1"}))["decisions"]
    by_outcome = {}
    for d in decisions:
        by_outcome.setdefault(d["outcome"], []).append(d["rule"])
    assert sorted(by_outcome["delete"]) == ["candidate"] * 4
    assert by_outcome["keep"].count("keep") == 1  # f0, protected
    assert by_outcome["keep"].count("not needed (candidate)") == 5  # f5..f9: under 70% first


async def test_dry_run_changes_nothing(site):
    c = site.client
    before = await c.health()
    result = await run_cycle(c, load_policy_text(POLICY, "t"), POLICY, dry_run=True)
    assert len(result.plan.deletions) == 4 and result.applied is None
    after = await c.health()
    assert after["version"] == before["version"]
    assert (await c.request("GET", "/v1/operations"))["operations"] == []


async def test_expired_items_lose_every_payload_and_end_deleted(site):
    c = site.client
    oid = site.items["set/f7"]  # a last copy: expiry overrides that
    await c.request("PATCH", f"/v1/items/{oid}", json={"expire_at": "2001-01-01T00:00:00Z"})
    relaxed = POLICY.replace("occupancy > 90%", "occupancy > 200%")  # nothing triggered
    result = await run_cycle(c, load_policy_text(relaxed, "t"), relaxed)
    assert result.plan.expirations == [oid]
    assert [(d.oid, d.rule) for d in result.plan.deletions] == [(oid, "lifecycle: item expired")]
    await settle(c)
    item = await c.item(oid)
    assert item["state"] == "DELETED" and item["replicas"] == []
    assert not (site.roots["disk1"] / "set/f7").exists()


async def test_a_plan_made_stale_by_the_inventory_is_rejudged(site):
    c = site.client
    policy = load_policy_text(POLICY, "t")
    from detox.planner import plan_cycle
    snap = await c.snapshot()
    plan = plan_cycle(policy, snap.storages, snap.items, snap.replicas.values(),
                      __import__("time").time())
    # meanwhile an operator deletes the disk2 copies of the planned items by hand
    for d in plan.deletions:
        await c.request("POST", "/v1/operations", json={"kind": "delete", "item": d.oid,
                                                        "target": "disk2"})
    await settle(c)
    import hashlib

    from detox.cycle import encode_decisions
    answer = await c.post_msgpack("/v1/cycles/detox", {
        "policy_name": "all", "policy_file": "t", "policy_text": POLICY,
        "policy_sha256": hashlib.sha256(POLICY.encode()).hexdigest(),
        "snapshot_version": snap.version, "started": 0.0, "expirations": [],
        "deletions": [[d.oid, d.storage_id, d.rule, d.line] for d in plan.deletions],
        "summary": {}, "decisions": encode_decisions(plan)})
    # each planned disk1 copy is now the last one: the safety re-check drops them all
    assert answer["summary"]["applied"]["deletions"] == 0
    assert answer["summary"]["dropped"]["safety"] == 4
    await settle(c)
    for d in plan.deletions:
        assert await replicas_of(c, d.oid) == ["disk1"]


async def test_inject_during_a_cycle_is_not_blocked_or_lost(site):
    c = site.client
    policy = load_policy_text(POLICY, "t")

    async def inject():
        made = []
        for batch in range(10):
            made += await c.add_items({"item_name": f"new/{batch}/{i}"} for i in range(50))
        return made

    cycle, made = await asyncio.gather(run_cycle(c, policy, POLICY), inject())
    assert len(made) == 500 and cycle.applied is not None
    assert (await c.health())["items_by_state"]["INITIALISED"] == 500


def test_cli_runs_a_cycle_and_prints_the_report(tmp_path, capsys):
    import threading

    policy_file = tmp_path / "p.policy"
    policy_file.write_text(POLICY)
    ready = threading.Event()
    holder = {}

    async def serve():
        srv = InProcessServer(f"sqlite:{tmp_path / 'db.sqlite'}", tmp_path, fileops=FAST)
        await srv.start()
        await srv.client.add_storage(name="d", kind="posix", root=str(tmp_path), capacity=10)
        holder["url"] = srv.url
        ready.set()
        while not holder.get("stop"):
            await asyncio.sleep(0.05)
        await srv.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(30)
        code = main(["detox", "--policy", str(policy_file), "--url", holder["url"],
                     "--dry-run"])
        out = capsys.readouterr().out
        assert code == 0 and "Detox dry run" in out and "d " in out
        code = main(["detox", "--policy", str(policy_file), "--url", holder["url"], "--json"])
        assert code == 0 and '"deletions": 0' in capsys.readouterr().out
    finally:
        holder["stop"] = True
        thread.join(30)


def test_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.policy"
    bad.write_text("detox {")
    assert main(["detox", "--policy", str(bad)]) == 2  # a wrong input file: nothing was sent
    assert "bad.policy:1:" in capsys.readouterr().err
    good = tmp_path / "good.policy"
    good.write_text(POLICY)
    assert main(["detox", "--policy", str(good), "--url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the DLM server" in err and "Traceback" not in err
    assert main(["detox", "--policy", str(good), "--every", "soon"]) == 2
    assert "--every" in capsys.readouterr().err


def _plan_key(plan) -> tuple:
    return (sorted((d.oid, d.storage_id, d.rule) for d in plan.deletions),
            sorted(plan.expirations), plan.summary()["storages"])


async def test_a_kept_snapshot_caught_up_through_the_feed_plans_like_a_new_one(site):
    """`dlm detox --every` keeps its snapshot between cycles and catches it up through the
    change feed: the next plan must be the one a new snapshot gives."""
    c = site.client
    policy = load_policy_text(RECORD_POLICY, "test.policy")
    first = await run_cycle(c, policy, RECORD_POLICY)
    assert first.plan.deletions and first.snapshot is not None
    await settle(c)
    # the inventory moves on: the deletions done, new items, an expiry, a storage change
    (site.roots["disk1"] / "late").mkdir()
    for i in range(5):
        (site.roots["disk1"] / f"late/{i}").write_bytes(b"l" * 150)
        await c.add_item(item_name=f"late/{i}", storage="disk1", size=150)
    await c.request("PATCH", f"/v1/items/{site.items['set/f6']}",
                    json={"expire_at": "2000-01-01T00:00:00Z"})
    await c.request("PATCH", "/v1/storages/disk2", json={"capacity": 150_000})
    kept = await run_cycle(c, policy, RECORD_POLICY, dry_run=True, snapshot=first.snapshot)
    assert kept.snapshot is first.snapshot  # caught up, not taken again
    fresh = await run_cycle(c, policy, RECORD_POLICY, dry_run=True)
    assert kept.snapshot_version == fresh.snapshot_version
    assert kept.plan.deletions, "the new items put disk1 over its watermark again"
    assert _plan_key(kept.plan) == _plan_key(fresh.plan)


async def test_columns_and_records_plan_alike_through_the_server(site):
    """The same inventory, planned on a column snapshot and on a record snapshot: the same
    deletions and outcomes, and the column cycle keeps no snapshot (it takes a new one)."""
    c = site.client
    on_columns = await run_cycle(c, load_policy_text(POLICY, "test.policy"), POLICY,
                                 dry_run=True)
    on_records = await run_cycle(c, load_policy_text(RECORD_POLICY, "test.policy"),
                                 RECORD_POLICY, dry_run=True)
    assert on_columns.snapshot is None and on_records.snapshot is not None
    assert on_columns.plan.deletions
    assert _plan_key(on_columns.plan) == _plan_key(on_records.plan)
    def without_line(plan):  # the record policy's extra rule moves the default down a line
        return sorted((uid, sid, outcome, rule, size)
                      for uid, sid, outcome, rule, _line, size in plan.decisions)
    assert without_line(on_columns.plan) == without_line(on_records.plan)


async def test_a_kept_snapshot_the_feed_no_longer_reaches_is_taken_again(db_url, tmp_path):
    srv = InProcessServer(db_url, tmp_path, fileops=None, feed_max_changes=10)
    await srv.start()
    try:
        c = srv.client
        await c.add_storage(name="disk1", kind="posix", root=str(tmp_path), capacity=10**6)
        policy = load_policy_text(RECORD_POLICY, "test.policy")
        first = await run_cycle(c, policy, RECORD_POLICY, dry_run=True)
        for batch in range(3):  # 3 x 10 items and replicas: past what the feed keeps
            (tmp_path / f"b{batch}").mkdir()
            for i in range(10):
                (tmp_path / f"b{batch}/{i}").write_bytes(b"b")
            await c.add_items({"item_name": f"b{batch}/{i}", "storage": "disk1", "size": 1}
                              for i in range(10))
        second = await run_cycle(c, policy, RECORD_POLICY, dry_run=True,
                                 snapshot=first.snapshot)
        assert second.snapshot is not first.snapshot
        assert len(second.snapshot.items) == 30
    finally:
        await srv.stop()


async def test_the_report_says_a_rule_once_and_which_storages_it_did_not_judge(site):
    """A safety label is not prefixed with its outcome again, and a storage outside the
    policy's ``on`` is 'not judged', not 'ok', however full it is."""
    from detox.cycle import format_report

    text = POLICY.replace("detox {", 'detox {\n    on storage.name == "disk1"')
    policy = load_policy_text(text.replace("< 70%", "< 10%"), "p.policy")  # reaches last copies
    result = await run_cycle(site.client, policy, "", dry_run=True)
    summary = result.plan.summary()
    assert not any(key.startswith("safety: safety:") for key in summary["by_rule"])
    assert any(key.startswith("safety: last complete copy") for key in summary["by_rule"])
    judged = {s["name"]: s["judged"] for s in summary["storages"]}
    assert judged == {"disk1": True, "disk2": False}
    report = format_report(result, dry_run=True)
    disk2 = next(line for line in report.splitlines() if line.startswith("disk2"))
    assert disk2.endswith("not judged by this policy")
    assert "safety: safety:" not in report


def test_a_plan_is_answered_before_the_operations_it_queued_start(tmp_path, capsys):
    """The answer to a plan's POST leaves before the file operations engine is woken for the
    operations it queued (a 100k-deletion plan's first dispatch used to delay it by seconds):
    here the wake-up blocks the server until the CLI has its answer, which it would never get
    if the answer waited for the wake-up."""
    import threading

    policy_file = tmp_path / "p.policy"
    policy_file.write_text(POLICY)
    ready, answered = threading.Event(), threading.Event()
    holder: dict = {"woken_after_answer": []}

    async def serve():
        srv = InProcessServer(f"sqlite:{tmp_path / 'db.sqlite'}", tmp_path, fileops=FAST)
        await srv.start()
        await srv.client.add_storage(name="d", kind="posix", root=str(tmp_path), capacity=10)
        from inventory.server.state import STATE
        engine = srv.app[STATE].engine
        wake = engine.wake

        def blocking_wake():
            holder["woken_after_answer"].append(answered.wait(20))
            wake()

        engine.wake = blocking_wake
        holder["url"] = srv.url
        ready.set()
        while not holder.get("stop"):
            await asyncio.sleep(0.05)
        await srv.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(30)
        code = main(["detox", "--policy", str(policy_file), "--url", holder["url"]])
        answered.set()
        assert code == 0 and "applied as cycle" in capsys.readouterr().out
    finally:
        holder["stop"] = True
        thread.join(30)
    assert holder["woken_after_answer"] == [True]
