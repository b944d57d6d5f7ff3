"""Consistency scenarios through the real server, real POSIX and S3 storages, the file
operations engine and the CLI: each kind of inconsistency planted, found, and repaired."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consistency import cycle as consistency_cycle
from consistency.cycle import Options, run_consistency
from inventory.fileops.engine import FileOpsLimits
from inventory.storage.factory import backend_for
from tests.conftest import InProcessServer, adler, settle
from tests.s3server import BUCKET, s3_server  # noqa: F401  (fixture)

FAST = FileOpsLimits(workers=4, per_storage=4, retry_base=0.05, poll=0.05)
OLD = time.time() - 3 * 86400  # well past the 24 h grace period


def age(path: Path, when: float = OLD) -> None:
    os.utime(path, (when, when))


async def make_site(tmp_path: Path, **config) -> InProcessServer:
    """disk1 holds f0..f9, disk2 holds a second copy of f0..f5; every file 3 days old."""
    srv = InProcessServer(f"sqlite:{tmp_path / 'inventory.sqlite'}", tmp_path, **config)
    await srv.start()
    c = srv.client
    srv.roots = {}
    for name in ("disk1", "disk2"):
        root = tmp_path / name
        root.mkdir()
        srv.roots[name] = root
        await c.add_storage(name=name, kind="posix", root=str(root), capacity=10**9,
                            phase="GAS")
    srv.items, srv.data = {}, {}
    for i in range(10):
        payload = os.urandom(1000 + i)
        name = f"set/f{i}"
        for disk in ("disk1", "disk2") if i < 6 else ("disk1",):
            path = srv.roots[disk] / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(payload)
            age(path)
        item = await c.add_item(item_name=name, storage="disk1", size=len(payload),
                                checksum=adler(payload), target_phase="GAS")
        if i < 6:
            await c.request("PATCH", f"/v1/items/{item['oid']}", json={"storage": "disk2"})
        srv.items[name], srv.data[name] = item["oid"], payload
    return srv


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[InProcessServer]:
    srv = await make_site(tmp_path, fileops=FAST)
    try:
        yield srv
    finally:
        await srv.stop()


def plant(site: InProcessServer) -> None:
    """One of each: deleted (with and without another copy), stray old and young files,
    truncated, one byte flipped."""
    disk1 = site.roots["disk1"]
    (disk1 / "set/f1").unlink()  # missing, copy on disk2
    (disk1 / "set/f7").unlink()  # missing, the only copy: lost
    stray = disk1 / "stray/old.dat"
    stray.parent.mkdir()
    stray.write_bytes(b"dark data")
    age(stray)
    (disk1 / "stray/young.dat").write_bytes(b"an upload about to be registered")
    f2 = disk1 / "set/f2"
    f2.write_bytes(site.data["set/f2"][:500])  # truncated
    age(f2)
    f3 = disk1 / "set/f3"
    flipped = bytearray(site.data["set/f3"])
    flipped[10] ^= 0xFF
    f3.write_bytes(bytes(flipped))  # same size, other bytes
    age(f3)


def paths(report: dict, kind: str) -> list[str]:
    return [row["path"] for row in report["findings"][kind]]


async def test_report_names_exactly_what_was_planted(site):
    plant(site)
    run = await run_consistency(site.client, "disk1", Options(checksums="all"))
    report = run.report
    assert paths(report, "missing") == ["set/f1", "set/f7"]
    assert paths(report, "orphan") == ["stray/old.dat"]
    assert paths(report, "size_mismatch") == ["set/f2"]
    assert paths(report, "checksum_mismatch") == ["set/f3"]
    counts = report["counts"]
    assert counts["ok"]["count"] == 6 and counts["expected"] == 10
    assert counts["skipped"]["young"] == 1  # stray/young.dat
    assert counts["missing"]["bytes"] == 1001 + 1007
    [f2] = report["findings"]["size_mismatch"]
    assert (f2["oid"], f2["expected_size"], f2["size"]) == (site.items["set/f2"], 1002, 500)
    [f3] = report["findings"]["checksum_mismatch"]
    assert f3["expected_checksum"] == adler(site.data["set/f3"]) != f3["checksum"]
    # stored: listed through the API and in the history as a consistency cycle
    assert report["id"] is not None and report["fix"] is None
    listed = await site.client.request("GET", "/v1/consistency/reports",
                                       params={"storage": "disk1"})
    assert [r["id"] for r in listed["reports"]] == [report["id"]]
    history = await site.client.request("GET", "/v1/history", params={"kind": "consistency"})
    assert [c["id"] for c in history["cycles"]] == [report["id"]]
    decisions = await site.client.request("GET", f"/v1/history/{report['id']}/decisions",
                                          params={"outcome": "missing"})
    assert [d["path"] for d in decisions["decisions"]] == ["set/f1", "set/f7"]
    # without --fix nothing changed
    assert (await site.client.request("GET", "/v1/operations"))["operations"] == []
    assert (await site.client.item(site.items["set/f7"]))["state"] == "READY"


async def test_fix_repairs_without_deleting_registered_data(site):
    plant(site)
    c = site.client
    before = {n: (site.roots["disk1"] / n).read_bytes() for n in site.data
              if n not in ("set/f1", "set/f2", "set/f3", "set/f7")}
    # 2 of 10 missing: over the default limit of 5%, which the test raises
    run = await run_consistency(c, "disk1", Options(checksums="all", fix=True,
                                                    max_missing=0.5))
    fix = run.report["fix"]
    assert fix["applied"] == {"recopies": 3, "marked_missing": 1, "lost": 1,
                              "orphans_confirmed": 1}
    assert run.deleted == 1 and fix["orphans_deleted"] == 1
    actions = {row["path"]: row["action"] for kind in run.report["findings"]
               for row in run.report["findings"][kind]}
    assert "LOST" in actions["set/f7"] and actions["stray/old.dat"] == "deleted"
    ops = await settle(c)
    assert sorted((o["kind"], o["item_name"], o["origin"], o["state"]) for o in ops) == [
        ("copy", "set/f1", "consistency", "done"), ("copy", "set/f2", "consistency", "done"),
        ("copy", "set/f3", "consistency", "done")]
    disk1 = site.roots["disk1"]
    for name in ("set/f1", "set/f2", "set/f3"):
        assert (disk1 / name).read_bytes() == site.data[name]
        item = await c.item(site.items[name])
        assert {r["storage"]: r["state"] for r in item["replicas"]} == {
            "disk1": "complete", "disk2": "complete"}
    lost = await c.item(site.items["set/f7"])
    assert lost["state"] == "CORRUPTED"
    assert [r["state"] for r in lost["replicas"]] == ["missing"]
    assert not (disk1 / "stray/old.dat").exists()
    assert (disk1 / "stray/young.dat").exists()  # in flight: never deleted
    for name, content in before.items():  # registered complete replicas untouched
        assert (disk1 / name).read_bytes() == content
    # a second run finds nothing left to repair (f7 is known missing, not judged again)
    again = await run_consistency(c, "disk1", Options(checksums="all", fix=True))
    assert all(not rows for rows in again.report["findings"].values())
    assert again.report["counts"]["skipped"]["not_complete"] == 1


async def test_in_flight_changes_during_the_listing_are_not_flagged(site, monkeypatch):
    c = site.client
    disk1 = site.roots["disk1"]
    real_collect = consistency_cycle.listing.collect

    async def listing_with_traffic(kind, root, backend, progress=None, symlinks=None):
        # while the listing runs: a stray upload that the walk sees, a new file registered
        # (its object came after the walk passed), and a listed registered copy deleted by an
        # operation
        (disk1 / "stray").mkdir()
        (disk1 / "stray/during.dat").write_bytes(b"upload in progress")
        entries = await real_collect(kind, root, backend, symlinks=symlinks)
        payload = b"created during the listing"
        (disk1 / "set/new").write_bytes(payload)
        await c.add_item(item_name="set/new", storage="disk1", size=len(payload),
                         checksum=adler(payload), target_phase="GAS")
        await c.request("POST", "/v1/operations", json={
            "kind": "delete", "item": "set/f4", "target": "disk1"})
        await settle(c)
        assert not (disk1 / "set/f4").exists()
        return [e for e in entries if e.path != "set/new"]

    monkeypatch.setattr(consistency_cycle.listing, "collect", listing_with_traffic)
    run = await run_consistency(c, "disk1", Options(checksums="all", fix=True))
    report = run.report
    assert all(not rows for rows in report["findings"].values()), report["findings"]
    skipped = report["counts"]["skipped"]
    # set/new (registered after the walk passed) and set/f4 (listed, then deleted with its
    # replica): both changed in the inventory while the listing ran
    assert skipped["in_flight"] == 2 and skipped["young"] == 1  # stray/during.dat
    assert (disk1 / "set/new").exists() and (disk1 / "stray/during.dat").exists()
    assert run.deleted == 0


async def test_targets_of_queued_copies_are_never_orphans(tmp_path):
    srv = await make_site(tmp_path, fileops=None)  # no engine: the copy stays queued
    try:
        c = srv.client
        await c.request("POST", "/v1/operations", json={  # f8 is on disk1 only
            "kind": "copy", "item": "set/f8", "target": "disk2"})
        landed = srv.roots["disk2"] / "set/f8"
        landed.write_bytes(srv.data["set/f8"])  # the copy landed, not yet registered
        age(landed)
        run = await run_consistency(c, "disk2", Options(checksums="all", fix=True))
        assert all(not rows for rows in run.report["findings"].values())
        assert run.report["counts"]["skipped"]["not_complete"] == 1  # the pending target
        assert landed.exists() and run.deleted == 0
    finally:
        await srv.stop()


async def test_safety_limit_reports_and_fixes_nothing(site):
    c = site.client
    for i in range(1, 10):
        (site.roots["disk1"] / f"set/f{i}").unlink()
    old = site.roots["disk1"] / "stray.dat"
    old.write_bytes(b"x")
    age(old)
    run = await run_consistency(c, "disk1", Options(fix=True, max_missing=0.05))
    assert run.safety and "look missing" in run.safety
    assert len(run.report["findings"]["missing"]) == 9
    assert run.report["safety"] == run.safety and run.report["fix"]["applied"] == {}
    assert (await c.request("GET", "/v1/operations"))["operations"] == []
    assert old.exists()
    for oid in site.items.values():
        item = await c.item(oid)
        assert item["state"] == "READY"
        assert {r["state"] for r in item["replicas"]} == {"complete"}


async def test_the_server_rechecks_the_safety_limit_and_the_replicas(site):
    """A report from an older, careless or lying client: the server judges again."""
    c = site.client
    oid = site.items["set/f0"]
    counts = {k: {"count": 0, "bytes": 0} for k in (
        "missing", "orphan", "size_mismatch", "checksum_mismatch", "ok", "listed")}
    base = {"storage": "disk1", "started": time.time() - 5, "ended": time.time() - 4,
            "snapshot_version": 1, "inventory_version": 1, "grace": 86400,
            "max_missing": 0.5, "checksums": "none", "fix": True,
            "counts": {**counts, "expected": 10, "skipped": {}, "checksums_read": 0,
                       "missing_fraction": 0.0}}
    item = await c.item(oid)
    created = [r for r in item["replicas"] if r["storage"] == "disk1"]
    assert created
    # the replica's registration does not match (re-registered since): dropped
    stale = [["set/f0", oid, 1000, None, None, None, None, 1.0]]
    answer = await c.post_msgpack("/v1/consistency/reports", {**base, "missing": stale})
    assert answer["summary"]["fix"]["dropped"] == {"changed": 1}
    # 9 missing of 10 replicas on disk1: over the limit whatever the client's fraction says
    many = [[f"set/f{i}", site.items[f"set/f{i}"], 1000, None, None, None, None, 1.0]
            for i in range(1, 10)]
    answer = await c.post_msgpack("/v1/consistency/reports", {**base, "missing": many})
    assert "look missing" in answer["summary"]["safety"] and answer["delete_orphans"] == []
    # an orphan path that is a registered replica is never confirmed for deletion
    known = [["set/f5", None, None, 1005, None, None, OLD, None]]
    answer = await c.post_msgpack("/v1/consistency/reports", {**base, "orphan": known})
    assert answer["delete_orphans"] == []
    assert answer["summary"]["fix"]["dropped"] == {"orphan_known": 1}
    assert (await c.request("GET", "/v1/operations"))["operations"] == []
    # bad input is a 400 naming the field, and changes nothing
    from inventory import errors
    with pytest.raises(errors.BadRequest) as bad:
        await c.post_msgpack("/v1/consistency/reports", {**base, "storage": "nope"})
    assert bad.value.field == "storage"
    with pytest.raises(errors.BadRequest) as bad:
        await c.post_msgpack("/v1/consistency/reports", {**base, "started": 1e300})
    assert bad.value.field == "started"


async def test_reports_in_every_format(site):
    plant(site)
    c = site.client
    run = await run_consistency(c, "disk1", Options(checksums="all"))
    rid = run.report["id"]
    url = f"/v1/consistency/reports/{rid}"
    as_json = await c.request("GET", url)
    assert as_json["format"] == "dlm-consistency/1"
    assert paths(as_json, "orphan") == ["stray/old.dat"]
    async with c._session.get(c.url + url, params={"format": "csv"}) as resp:
        assert resp.content_type == "text/csv"
        lines = (await resp.text()).splitlines()
    assert lines[0].startswith("storage,kind,path,oid")
    assert sorted(line.split(",")[2] for line in lines[1:]) == [
        "set/f1", "set/f2", "set/f3", "set/f7", "stray/old.dat"]
    async with c._session.get(c.url + url, params={"format": "html"}) as resp:
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "<table" in page and "stray/old.dat" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    from inventory import errors
    with pytest.raises(errors.BadRequest):
        await c.request("GET", url, params={"format": "pdf"})
    with pytest.raises(errors.NotFound):
        await c.request("GET", "/v1/consistency/reports/999")


async def test_s3_storage(tmp_path, s3_server):  # noqa: F811
    """The same plantings on an S3 bucket (rclone serve s3: objects are files we can damage),
    repaired from a POSIX copy."""
    srv = InProcessServer(f"sqlite:{tmp_path / 'inventory.sqlite'}", tmp_path, fileops=FAST)
    await srv.start()
    c = srv.client
    prefix = f"cons-{os.getpid()}-{time.monotonic_ns()}"
    config = s3_server.config(list_page_size=2)  # several pages
    disk = tmp_path / "disk"
    (disk / "obs").mkdir(parents=True)
    objects = s3_server.directory / BUCKET / prefix
    try:
        await c.add_storage(name="s3", kind="s3", root=f"{BUCKET}/{prefix}", capacity=10**9,
                            phase="GAS", config=config)
        await c.add_storage(name="disk", kind="posix", root=str(disk), capacity=10**9,
                            phase="GAS")
        backend = backend_for("s3", f"{BUCKET}/{prefix}", config)
        data, oids = {}, {}
        try:
            for i in range(6):
                payload = os.urandom(2000 + i)
                name = f"obs/o{i}"

                async def chunks(p: bytes = payload) -> AsyncIterator[bytes]:
                    yield p

                await backend.write(name, chunks())
                (disk / name).write_bytes(payload)
                item = await c.add_item(item_name=name, storage="s3", size=len(payload),
                                        checksum=adler(payload), target_phase="GAS")
                await c.request("PATCH", f"/v1/items/{item['oid']}", json={"storage": "disk"})
                data[name], oids[name] = payload, item["oid"]
        finally:
            await backend.close()
        (objects / "obs/o1").unlink()
        (objects / "obs/o2").write_bytes(data["obs/o2"][:100])
        flipped = bytearray(data["obs/o3"])
        flipped[0] ^= 1
        (objects / "obs/o3").write_bytes(bytes(flipped))
        (objects / "dark.bin").write_bytes(b"dark")
        for name in ("obs/o2", "obs/o3", "dark.bin"):
            age(objects / name)
        (objects / "young.bin").write_bytes(b"young")
        await asyncio.sleep(1.2)  # rclone's directory cache
        run = await run_consistency(c, "s3", Options(checksums="all"))
        report = run.report
        assert paths(report, "missing") == ["obs/o1"]
        assert paths(report, "orphan") == ["dark.bin"]
        assert paths(report, "size_mismatch") == ["obs/o2"]
        assert paths(report, "checksum_mismatch") == ["obs/o3"]
        assert report["counts"]["ok"]["count"] == 3
        assert report["counts"]["skipped"]["young"] == 1

        run = await run_consistency(c, "s3", Options(checksums="all", fix=True,
                                                     max_missing=0.5))
        orphan_actions = [r["action"] for r in run.report["findings"]["orphan"]]
        assert run.report["fix"]["applied"]["recopies"] == 3 and run.deleted == 1, orphan_actions
        ops = await settle(c)
        assert [o["state"] for o in ops] == ["done"] * 3
        for name in ("obs/o1", "obs/o2", "obs/o3"):
            assert (objects / name).read_bytes() == data[name]
        assert not (objects / "dark.bin").exists() and (objects / "young.bin").exists()
        await asyncio.sleep(1.2)
        again = await run_consistency(c, "s3", Options(checksums="all"))
        assert all(not rows for rows in again.report["findings"].values())
    finally:
        await srv.stop()
