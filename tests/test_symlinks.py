"""Symlinks and overlapping roots (issue 15, after items 2-3): a replica's file is a regular file
reached without any symlink below its storage root, so no deletion, copy or check acts on
another item's file through a link; consistency never deletes what a link reaches; and no two
storages' roots overlap. Through REST, the CLI and the consistency run, on SQLite and
PostgreSQL where the inventory is involved."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from consistency.cycle import Options, run_consistency
from inventory import errors
from inventory.cli import main
from inventory.server.state import STATE
from inventory.specs import StorageSpec
from inventory.storage.errors import ThroughSymlink
from inventory.storage.posix import SYMLINK_REFUSAL, PosixBackend
from inventory.writes import AddStorage, Pending
from tests.conftest import adler
from tests.test_consistency import age, site  # noqa: F401  (fixture)
from tests.test_consistency_cli import served  # noqa: F401  (fixture)
from tests.test_fileops import operation, queue
from tests.test_replica_paths import fs  # noqa: F401  (fixture: src and dst on a fast engine)

pytest_plugins = ["tests.cli_fixtures"]




def put(root: Path, path: str, data: bytes) -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


async def victim(srv, data: bytes = b"the only copy of v3") -> dict:
    """Another item's only payload, at ver/file@v3 on src."""
    put(srv.roots["src"], "ver/file@v3", data)
    return await srv.client.add_item(item_name="victim", storage="src", uri="ver/file@v3",
                                     size=len(data), checksum=adler(data), target_phase="GAS")


# --------------------------------------------------------------------------- registration

async def test_registration_through_a_symlink_is_refused(fs):  # noqa: F811 (fs from test_replica_paths)
    c, root = fs.client, fs.roots["src"]
    await victim(fs)
    (root / "dirlink").mkdir()
    (root / "dirlink/v").symlink_to(root / "ver")  # a directory symlink inside the root
    put(root, "sy/real", b"12345")
    (root / "sy/link").symlink_to("real")  # a file symlink
    for spec, field in (
            ({"item_name": "evil/e", "uri": "dirlink/v/file@v3"}, "uri"),
            ({"item_name": "evil/e", "uri": f"{root}/dirlink/v/file@v3"}, "uri"),
            ({"item_name": "dirlink/v/file@v3x"}, "item_name"),
            ({"item_name": "evil/l", "uri": "sy/link"}, "uri"),
            ({"item_name": "sy/link"}, "item_name")):
        with pytest.raises(errors.BadRequest) as refused:
            await c.add_item(storage="src", verify="checksum", **spec)
        assert refused.value.field == field, refused.value
        assert SYMLINK_REFUSAL in refused.value.message, refused.value
    put(root, "ver/file@v3x", b"x")  # a real file behind the link: still refused
    with pytest.raises(errors.BadRequest) as refused:
        await c.add_item(item_name="dirlink/v/file@v3x", storage="src")
    assert refused.value.field == "item_name" and SYMLINK_REFUSAL in refused.value.message
    with pytest.raises(errors.BadRequest) as refused:  # a bulk request: whole, naming the line
        await c.add_items([{"item_name": "ok", "storage": "src", "uri": "sy/real"},
                           {"item_name": "bad", "storage": "src", "uri": "sy/link"}])
    assert refused.value.field == "items[1].uri"
    assert (await c.health())["items"] == 1  # the victim alone
    assert (root / "ver/file@v3").exists() and (root / "sy/real").exists()


def test_cli_inject_through_a_symlink_fails_naming_the_uri(dlm, cli_server, tmp_path):
    root = tmp_path / "disk"
    put(root, "real", b"abc")
    (root / "link").symlink_to(root / "real")
    cli_server.add_disk(root=str(root), config={})  # verified
    message = dlm.error("inject", "x", "--storage", "disk1", "--uri", "link")
    assert "uri" in message and SYMLINK_REFUSAL in message
    assert cli_server.api(lambda c: c.health())["items"] == 0


# --------------------------------------------------------------------------- deletions, copies

async def test_a_deletion_through_a_planted_symlink_removes_nothing(fs):  # noqa: F811 (fs from test_replica_paths)
    """Registered at a real directory that is then swapped for a link to another item's files:
    expiring it and deleting its replica fails and leaves the other item's only payload."""
    c, root = fs.client, fs.roots["src"]
    v = await victim(fs)
    put(root, "dirlink/v/file@v3", b"decoy")
    evil = await c.add_item(item_name="evil/e", storage="src", uri="dirlink/v/file@v3",
                            target_phase="GAS")
    for name in os.listdir(root / "dirlink/v"):
        os.unlink(root / "dirlink/v" / name)
    os.rmdir(root / "dirlink/v")
    (root / "dirlink/v").symlink_to(root / "ver")
    # and a file symlink, planted over a registered file
    put(root, "sy/f", b"payload")
    f = await c.add_item(item_name="sy/f", storage="src", target_phase="GAS")
    put(root, "keep/target", b"someone else's")
    os.unlink(root / "sy/f")
    (root / "sy/f").symlink_to(root / "keep/target")
    for item in (evil, f):
        await c.request("PATCH", f"/v1/items/{item['oid']}", json={"state": "EXPIRED"})
        done = await operation(c, (await queue(c, "delete", item["oid"], "src"))["id"])
        assert done["state"] == "failed", done
        assert SYMLINK_REFUSAL in done["last_error"], done
    assert (root / "ver/file@v3").read_bytes() == b"the only copy of v3"
    assert (root / "keep/target").read_bytes() == b"someone else's"
    assert (root / "sy/f").is_symlink() and (root / "dirlink/v").is_symlink()  # left as found
    kept = await c.item(v["oid"])
    assert kept["state"] == "READY" and [r["state"] for r in kept["replicas"]] == ["complete"]


async def test_copies_refuse_a_symlinked_source_or_target(fs):  # noqa: F811 (fs from test_replica_paths)
    c, src, dst = fs.client, fs.roots["src"], fs.roots["dst"]
    data = os.urandom(3000)
    put(src, "run/a", data)
    item = await c.add_item(item_name="run/a", storage="src", size=len(data),
                            checksum=adler(data), target_phase="GAS")
    # target: dst/run is a link to another directory of dst; nothing may be written there
    (dst / "elsewhere").mkdir()
    (dst / "run").symlink_to(dst / "elsewhere")
    done = await operation(c, (await queue(c, "copy", item["oid"], "dst"))["id"])
    assert done["state"] == "failed" and SYMLINK_REFUSAL in done["last_error"], done
    assert os.listdir(dst / "elsewhere") == []
    # source: the registered file was swapped for a link to other bytes of the same size
    os.unlink(dst / "run")
    put(src, "other", os.urandom(3000))
    os.unlink(src / "run/a")
    (src / "run/a").symlink_to(src / "other")
    done = await operation(c, (await queue(c, "copy", item["oid"], "dst"))["id"])
    assert done["state"] == "failed" and SYMLINK_REFUSAL in done["last_error"], done
    assert not (dst / "run/a").exists()


async def test_the_backend_refuses_every_operation_through_a_symlink(tmp_path):
    """The rule at the storage layer: stat, stat_many, checksum, read, write, delete."""
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "root").mkdir()
    (tmp_path / "via").symlink_to(outer)  # the root itself may sit under a symlink
    backend = PosixBackend(tmp_path / "via/root", fsync=False)
    root = outer / "root"
    put(root, "d/real", b"abc")
    (root / "l").symlink_to(root / "d")
    (root / "d/flink").symlink_to("real")
    try:
        assert (await backend.stat("d/real")).size == 3
        for path in ("l/real", "d/flink"):
            for call in (backend.stat, backend.checksum, backend.delete):
                with pytest.raises(ThroughSymlink, match=SYMLINK_REFUSAL):
                    await call(path)
            with pytest.raises(ThroughSymlink):
                async with backend.open_read(path):
                    pass

            async def chunks():
                yield b"new"
            with pytest.raises(ThroughSymlink):
                await backend.write(path, chunks())
            with pytest.raises(ThroughSymlink):
                await backend.write(f"{path}/deeper", chunks())
        with pytest.raises(ThroughSymlink):
            await backend.write("l/new", chunks())
        infos = await backend.stat_many(["d/real", "l/real", "d/flink", "l/nope", "d/nope"])
        assert infos[0].size == 3
        assert [type(i).__name__ for i in infos[1:]] == [
            "ThroughSymlink", "ThroughSymlink", "ThroughSymlink", "NotFound"]
        assert (root / "d/real").read_bytes() == b"abc" and not (root / "d/new").exists()
        assert (root / "d/flink").is_symlink() and (root / "l").is_symlink()
        await backend.delete("d/real")  # a real file is deleted as before
        assert not (root / "d/real").exists()
    finally:
        await backend.close()


# --------------------------------------------------------------------------- consistency

async def swap_for_links(site) -> Path:  # noqa: F811
    """set/f8 (one copy, disk1) swapped for a file symlink to a real file; set/f9's directory
    reached through a directory symlink; plus a dangling link and one out of the root."""
    disk1 = site.roots["disk1"]
    target = put(disk1, "real/f8", site.data["set/f8"])
    age(target)
    os.unlink(disk1 / "set/f8")
    (disk1 / "set/f8").symlink_to(target)
    # set/f9 lived in set/; register one more item under linked/ then swap the directory
    data = os.urandom(500)
    age(put(disk1, "linked/g", data))
    item = await site.client.add_item(item_name="linked/g", storage="disk1", size=len(data),
                                      target_phase="GAS")
    site.items["linked/g"], site.data["linked/g"] = item["oid"], data
    os.rename(disk1 / "linked", disk1 / "moved")
    (disk1 / "linked").symlink_to("moved")
    (disk1 / "dangling").symlink_to(disk1 / "nothing")
    (disk1 / "out").symlink_to("/etc")
    return disk1


async def test_fix_never_deletes_a_file_a_replica_reaches_through_a_symlink(site):  # noqa: F811
    disk1 = await swap_for_links(site)
    c = site.client
    run = await run_consistency(c, "disk1", Options(checksums="all", fix=True))
    report = run.report
    orphans = {row["path"]: row["action"] for row in report["findings"]["orphan"]}
    # the real files the links reach are judged on their own: unknown, so orphans, kept
    assert set(orphans) == {"real/f8", "moved/g"}, orphans
    assert orphans["real/f8"] == "not deleted: the symlink set/f8 reaches it"
    assert orphans["moved/g"] == "not deleted: the symlink linked reaches it"
    assert run.deleted == 0
    assert report["findings"]["missing"] == []  # the replicas behind links are not judged
    assert report["counts"]["skipped"]["symlink"] == 2
    assert report["symlinks"] == [
        {"path": "dangling", "target": None}, {"path": "linked", "target": "moved"},
        {"path": "out", "target": None}, {"path": "set/f8", "target": "real/f8"}]
    assert (disk1 / "real/f8").read_bytes() == site.data["set/f8"]
    assert (disk1 / "moved/g").read_bytes() == site.data["linked/g"]
    for link in ("set/f8", "linked", "dangling", "out"):
        assert (disk1 / link).is_symlink()
    for name in ("set/f8", "linked/g"):
        item = await c.item(site.items[name])
        assert item["state"] == "READY"
        assert [r["state"] for r in item["replicas"]] == ["complete"]
    # a stray file no link reaches is still deleted
    age(put(disk1, "stray/dark", b"dark"))
    run = await run_consistency(c, "disk1", Options(checksums="none", fix=True))
    assert run.deleted == 1 and not (disk1 / "stray/dark").exists()
    assert (disk1 / "real/f8").exists() and (disk1 / "moved/g").exists()


def test_cli_consistency_reports_symlinks_and_keeps_their_targets(
        served, tmp_path, capsys):  # noqa: F811
    there = served["site"]
    disk1 = there.roots["disk1"]
    target = put(disk1, "real/f8", there.data["set/f8"])
    age(target)
    os.unlink(disk1 / "set/f8")
    (disk1 / "set/f8").symlink_to(target)
    out = tmp_path / "r.json"
    code = main(["consistency", "disk1", "--url", served["url"], "--fix", "--report", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "symlink 1" in captured.out and "set/f8 -> real/f8" in captured.out
    assert "0 orphans deleted" in captured.out
    report = json.loads(out.read_text())
    assert report["symlinks"] == [{"path": "set/f8", "target": "real/f8"}]
    assert target.read_bytes() == there.data["set/f8"]


async def test_a_copy_through_a_symlink_on_the_source_blames_the_source(fs):  # noqa: F811 (fs from test_replica_paths)
    """The planted symlinked directory is on the source: the error names the source storage
    and its reliability is charged, not the target's."""
    c, src, dst = fs.client, fs.roots["src"], fs.roots["dst"]
    data = os.urandom(2000)
    put(src, "pl/sub/x", data)
    item = await c.add_item(item_name="pl/sub/x", storage="src", size=len(data),
                            checksum=adler(data), target_phase="GAS")
    os.rename(src / "pl/sub", src / "moved")
    (src / "pl/sub").symlink_to(src / "moved")
    done = await operation(c, (await queue(c, "copy", item["oid"], "dst"))["id"])
    assert done["state"] == "failed", done
    assert done["last_error"].startswith("invalid_path on src:"), done
    assert SYMLINK_REFUSAL in done["last_error"] and str(src) in done["last_error"], done
    assert "on dst" not in done["last_error"], done
    assert (await c.storage("dst"))["reliability"]["copies_failed"] == 0
    assert (await c.storage("src"))["reliability"]["copies_failed"] >= 1
    assert not (dst / "pl/sub/x").exists()


def test_served_report_says_what_was_done_with_symlinked_orphans(
        served, tmp_path, capsys):  # noqa: F811
    """An orphan reached by a symlink is kept: the report the server serves (JSON and HTML)
    says so with the reason, counts only what was deleted, and keeps the symlinks list, as
    the local report does."""
    there = served["site"]
    disk1 = there.roots["disk1"]
    kept, gone = put(disk1, "real/file", b"d\n"), put(disk1, "stray/old", b"an orphan")
    age(kept)
    age(gone)
    (disk1 / "filelink").symlink_to("real/file")
    out = tmp_path / "c1.json"
    code = main(["consistency", "disk1", "--url", served["url"], "--fix", "--grace", "1s",
                 "--report", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert kept.exists() and not gone.exists()
    local = json.loads(out.read_text())
    actions = {r["path"]: r["action"] for r in local["findings"]["orphan"]}
    assert actions == {"real/file": "not deleted: the symlink filelink reaches it",
                       "stray/old": "deleted"}
    assert local["symlinks"] == [{"path": "filelink", "target": "real/file"}]
    assert local["fix"]["orphans_deleted"] == 1 and local["fix"]["orphans_confirmed"] == 1
    with urllib.request.urlopen(f"{served['url']}/v1/consistency/reports/{local['id']}"
                                "?format=json") as resp:
        remote = json.loads(resp.read())
    assert remote["findings"] == local["findings"]
    assert remote["fix"] == local["fix"]
    assert remote["symlinks"] == local["symlinks"]
    with urllib.request.urlopen(f"{served['url']}/v1/consistency/reports/{local['id']}"
                                "?format=html") as resp:
        page = resp.read().decode()
    assert "not deleted: the symlink filelink reaches it" in page
    assert "deletion confirmed" not in page
    assert '<table id="symlinks">' in page and "<td>filelink</td><td>real/file</td>" in page
    assert '&quot;orphans_deleted&quot;: 1' in page


async def test_deletion_outcomes_are_refused_for_paths_not_confirmed(server):
    c = server.client
    await c.add_storage(name="s", kind="posix", root="/nonexistent/s", capacity=1)
    tally = {"count": 0, "bytes": 0}
    counts = {k: tally for k in ("missing", "orphan", "size_mismatch", "checksum_mismatch",
                                 "ok", "listed")}
    counts.update(expected=0, skipped={}, checksums_read=0, missing_fraction=0)
    body = {"storage": "s", "started": 1e9, "ended": 1e9 + 1, "snapshot_version": 0,
            "inventory_version": 0, "grace": 1, "max_missing": 0.05, "checksums": "none",
            "counts": counts, "fix": True, "orphan": [["old", None, None, 1, None, None, 1e8,
                                                      None]],
            "symlinks": [["ln", "young"]]}
    stored = await c.request("POST", "/v1/consistency/reports", json=body)
    assert stored["delete_orphans"] == ["old"]
    path = f"/v1/consistency/reports/{stored['id']}/deletions"
    for outcomes in ({"young": "deleted"}, {"nope": "deleted"}, {"old": ""}):
        with pytest.raises(errors.BadRequest) as refused:
            await c.request("POST", path, json={"outcomes": outcomes})
        assert refused.value.field.startswith("outcomes"), outcomes
    await c.request("POST", path, json={"outcomes": {"old": "deleted"}})
    with pytest.raises(errors.BadRequest):  # recorded once
        await c.request("POST", path, json={"outcomes": {"old": "deleted"}})
    with pytest.raises(errors.NotFound) as missing:
        await c.request("POST", "/v1/consistency/reports/999/deletions",
                        json={"outcomes": {"old": "deleted"}})
    assert missing.value.field == "id"
    report = await c.request("GET", f"/v1/consistency/reports/{stored['id']}")
    assert report["fix"]["orphans_deleted"] == 1
    assert report["symlinks"] == [{"path": "ln", "target": "young"}]
    assert [r["action"] for r in report["findings"]["orphan"]] == ["deleted"]


# --------------------------------------------------------------------------- overlapping roots

async def test_overlapping_posix_roots_are_refused(server, tmp_path):
    c = server.client
    base = tmp_path / "vol"
    (base / "a/inner").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(base / "a")
    await c.add_storage(name="a", kind="posix", root=str(base / "a"), capacity=10**9)
    for root in (f"{base}/a", f"{base}/a/", f"{base}//a", f"{base}/./a", f"{base}/a/inner",
                 f"{base}/a/not/yet", str(base), str(tmp_path), str(tmp_path / "alias"),
                 f"{tmp_path}/alias/inner"):
        with pytest.raises(errors.Conflict) as refused:
            await c.add_storage(name="b", kind="posix", root=root, capacity=10**9)
        assert refused.value.field == "root", root
        assert "'a'" in refused.value.message and "overlaps" in refused.value.message, root
    # a sibling whose name merely starts the same is no overlap
    (base / "ab").mkdir()
    await c.add_storage(name="ab", kind="posix", root=str(base / "ab"), capacity=10**9)
    assert sorted(s["name"] for s in await c.storages()) == ["a", "ab"]


async def test_overlapping_roots_in_one_group_commit_are_refused(server, tmp_path):
    inv = server.app[STATE].inventory
    pending = Pending()
    spec = StorageSpec(name="x", kind="posix", root=str(tmp_path / "x"), capacity=1)
    AddStorage(spec).prepare(inv, pending)
    with pytest.raises(errors.Conflict) as refused:
        AddStorage(StorageSpec(name="y", kind="posix", root=str(tmp_path / "x/y"),
                               capacity=1)).prepare(inv, pending)
    assert refused.value.field == "root" and "'x'" in refused.value.message


async def test_overlapping_s3_prefixes_on_one_endpoint_are_refused(server):
    c = server.client
    here = {"endpoint_url": "http://127.0.0.1:9"}
    await c.add_storage(name="s", kind="s3", root="bucket/data/run", capacity=1, config=here)
    for root in ("bucket/data/run", "bucket/data/run/", "bucket",
                 "bucket/data", "bucket/data/run/sub"):
        with pytest.raises(errors.Conflict) as refused:
            await c.add_storage(name="t", kind="s3", root=root, capacity=1,
                                config={"endpoint_url": "http://127.0.0.1:9/"})
        assert refused.value.field == "root" and "'s'" in refused.value.message, root
    for name, root, config in (("t1", "bucket/data/running", here),
                               ("t2", "bucket/other", here),
                               ("t3", "other/data/run", here),
                               ("t4", "bucket/data/run", {"endpoint_url": "http://h:9"})):
        await c.add_storage(name=name, kind="s3", root=root, capacity=1, config=config)


def test_cli_storage_add_of_an_overlapping_root_fails_naming_it(dlm, cli_server, tmp_path):
    (tmp_path / "disk").mkdir()
    dlm("storage", "add", "disk1", "--kind", "posix", "--root", str(tmp_path / "disk"),
        "--capacity", "1 TB")
    message = dlm.error("storage", "add", "disk2", "--kind", "posix", "--root",
                        f"{tmp_path}/disk/", "--capacity", "1 TB")
    assert "root" in message and "'disk1'" in message and "overlaps" in message
