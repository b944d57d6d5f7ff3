"""A missing POSIX root is an unreachable storage, never created by a copy; `storage add` warns
about it (or creates it when asked); `storage rm` removes an empty storage (issue 15, item 9).
Through the backend, REST and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re

import pytest

from inventory import errors
from inventory.client import Client
from inventory.mirror import apply_transactions
from inventory.server.state import STATE
from inventory.specs import ItemSpec
from inventory.storage.errors import Unreachable
from inventory.storage.posix import PosixBackend
from inventory.writes import AddItems, RemoveStorage
from tests.conftest import InProcessServer, adler
from tests.test_auth import make_tokens, status_of
from tests.test_fileops import FAST, operation, queue
from tests.test_read_workers import _everything, _loaded, quiet_server  # noqa: F401

pytest_plugins = ["tests.cli_fixtures"]


async def chunks(data: bytes):
    yield data


# ----------------------------------------------------------------------------- the backend

async def test_a_write_or_copy_never_creates_a_missing_root(tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    src = PosixBackend(tmp_path / "src", fsync=False)
    (tmp_path / "src").mkdir()
    await src.write("run/a.dat", chunks(b"payload"))
    dst = PosixBackend(mount / "vol", fsync=False)  # the volume is not mounted
    try:
        with pytest.raises(Unreachable, match="missing"):
            await dst.write("run/a.dat", chunks(b"payload"))
        with pytest.raises(Unreachable, match="missing") as caught:
            await dst.copy_from(src, "run/a.dat", "run/a.dat", expected_size=None,
                                expected_checksum=None)
        assert caught.value.retryable
        assert list(mount.iterdir()) == []  # nothing made under the mount point
        (mount / "vol").mkdir()  # mounted: directories below the root are made as needed
        await dst.copy_from(src, "run/a.dat", "run/deep/a.dat", expected_size=None,
                            expected_checksum=None)
        assert (mount / "vol" / "run" / "deep" / "a.dat").read_bytes() == b"payload"
    finally:
        await src.close()
        await dst.close()


# ----------------------------------------------------------------------------- REST

@pytest.fixture
async def fs(db_url, tmp_path):
    """A server with a fast file operations engine and one POSIX storage ``src``."""
    srv = InProcessServer(db_url, tmp_path, fileops=FAST)
    await srv.start()
    (tmp_path / "src").mkdir()
    await srv.client.add_storage(name="src", kind="posix", root=str(tmp_path / "src"),
                                 capacity=10**9)
    try:
        yield srv
    finally:
        await srv.stop()


async def add_item(srv, root, name: str, data: bytes) -> dict:
    (root / name).write_bytes(data)
    return await srv.client.add_item(item_name=name, storage="src", size=len(data),
                                     checksum=adler(data))


async def test_copy_to_a_missing_root_fails_unreachable_and_creates_nothing(fs, tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    root = mount / "vol"
    added = await fs.client.add_storage(name="dst", kind="posix", root=str(root),
                                        capacity=10**9)
    assert len(added["warnings"]) == 1 and "does not exist" in added["warnings"][0]
    item = await add_item(fs, tmp_path / "src", "a.dat", b"some bytes")
    op = await queue(fs.client, "copy", item["oid"], "dst")
    done = await operation(fs.client, op["id"])
    assert done["state"] == "failed" and done["attempts"] == FAST.max_attempts, done
    assert "unreachable" in done["last_error"] and str(root) in done["last_error"]
    assert not root.exists() and list(mount.iterdir()) == []
    after = await fs.client.item(item["oid"])
    assert [r["storage"] for r in after["replicas"]] == ["src"]
    dst = await fs.client.storage("dst")
    assert dst["reliability"]["copies_failed"] == FAST.max_attempts
    root.mkdir()  # the volume is back: the same copy works
    op = await queue(fs.client, "copy", item["oid"], "dst")
    done = await operation(fs.client, op["id"])
    assert done["state"] == "done", done
    assert (root / "a.dat").read_bytes() == b"some bytes"


async def test_storage_add_warns_or_creates_the_root(server, tmp_path):
    c = server.client
    present = tmp_path / "present"
    present.mkdir()
    made = await c.add_storage(name="p", kind="posix", root=str(present), capacity=1)
    assert made["warnings"] == []
    root = tmp_path / "new" / "vol"
    made = await c.add_storage(name="n", kind="posix", root=str(root), capacity=1,
                               create_root=True)
    assert made["warnings"] == [] and root.is_dir()
    s3 = await c.add_storage(name="b", kind="s3", root="bucket/x", capacity=1)
    assert s3["warnings"] == []
    with pytest.raises(errors.BadRequest) as bad:
        await c.add_storage(name="b2", kind="s3", root="bucket/y", capacity=1, create_root=True)
    assert bad.value.field == "create_root"
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(errors.Conflict) as conflict:
        await c.add_storage(name="f", kind="posix", root=str(tmp_path / "file" / "vol"),
                            capacity=1, create_root=True)
    assert conflict.value.field == "root" and "cannot create root" in conflict.value.message
    # a storage refused after its root was made leaves no directory behind
    with pytest.raises(errors.Conflict):
        await c.add_storage(name="p", kind="posix", root=str(tmp_path / "dup" / "vol"),
                            capacity=1, create_root=True)
    assert not (tmp_path / "dup").exists()
    assert {s["name"] for s in await c.storages()} == {"p", "n", "b"}


async def test_storage_rm_of_an_empty_storage_and_409_for_a_used_one(
        quiet_server, tmp_path):  # noqa: F811
    server = quiet_server  # no engine: operations stay as queued
    c = server.client
    for name in ("used", "queued", "asked", "empty"):
        await c.add_storage(name=name, kind="posix", root=f"/nowhere/{name}", capacity=10**9,
                            config={"verify_ingest": False})  # roots the server cannot reach
    item = await c.add_item(item_name="x", storage="used", size=1)
    copy_to_empty = await queue(c, "copy", item["oid"], "empty")
    await c.request("DELETE", f"/v1/operations/{copy_to_empty['id']}")  # history naming it
    await queue(c, "copy", item["oid"], "queued")
    await c.add_request(item["oid"], "asked")
    copy = await _loaded(server.db_url, tmp_path)  # a read worker's copy, following the feed
    loaded_at = copy.version
    for name, reason in (("used", "replicas"), ("queued", "operations"),
                         ("asked", "requests")):
        with pytest.raises(errors.Conflict) as refused:
            await c.remove_storage(name)
        assert refused.value.details["reason"] == reason and refused.value.field == "name"
        assert name in refused.value.message
    with pytest.raises(errors.NotFound) as unknown:
        await c.remove_storage("nothing")
    assert unknown.value.field == "name"
    removed = await c.remove_storage("empty")
    assert removed == {"name": "empty", "id": 4, "operations_removed": 1,
                       "requests_removed": 0}
    with pytest.raises(errors.NotFound):
        await c.storage("empty")
    ops = await c.request("GET", "/v1/operations")
    assert copy_to_empty["id"] not in [o["id"] for o in ops["operations"]]
    # the feed tells the followers; the snapshot no longer has it
    page = await c.changes(loaded_at)
    apply_transactions(copy, page["transactions"])
    snap = await c.snapshot()
    assert "empty" not in [s[1] for s in snap.storages]
    assert "empty" not in copy.storage_by_name and 4 not in copy.storages
    assert _everything(copy) == _everything(await _loaded(server.db_url, tmp_path))
    await server.restart()
    assert sorted(s["name"] for s in await server.client.storages()) == ["asked", "queued",
                                                                        "used"]
    # the id is free again (no replica, operation or request names it): a new storage
    again = await server.client.add_storage(name="again", kind="posix", root="/nowhere/a",
                                            capacity=1)
    assert again["replica_count"] == 0
    assert [o for o in (await server.client.request("GET", "/v1/operations"))["operations"]
            if o["target"] == "again"] == []


async def test_storage_rm_needs_an_operator(sqlite_server):
    await sqlite_server.client.add_storage(name="e", kind="posix", root="/e", capacity=1)
    tokens = await make_tokens(sqlite_server.client)
    status, body, _ = await status_of(sqlite_server.url, "DELETE", "/v1/storages/e",
                                      tokens["producer"])
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body, _ = await status_of(sqlite_server.url, "DELETE", "/v1/storages/e",
                                      tokens["operator"])
    assert status == 200 and body["name"] == "e"


async def test_a_snapshot_following_the_feed_drops_a_removed_storage(sqlite_server):
    c = sqlite_server.client
    await c.add_storage(name="keep", kind="posix", root="/k", capacity=1)
    await c.add_storage(name="gone", kind="posix", root="/g", capacity=1)
    async with Client(sqlite_server.url) as reader:
        snap = await reader.snapshot()
        await c.remove_storage("gone")
        for _version, changes in (await reader.changes(snap.version))["transactions"]:
            for kind, record in changes:
                snap.apply(kind, record)
    assert [s[1] for s in snap.storages] == ["keep"]


# ----------------------------------------------------------------------------- CLI

def test_cli_storage_add_warns_creates_and_rm(dlm, cli_server, tmp_path):
    missing = tmp_path / "mnt" / "vol"
    result = dlm("storage", "add", "m", "--kind", "posix", "--root", str(missing),
                 "--capacity", "1 TB")
    assert re.search(r"^dlm: warning: root .*vol does not exist", result.err, re.M), result.err
    assert re.search(r"^name\s+m$", result.out, re.M) and not missing.exists()
    created = tmp_path / "made" / "vol"
    result = dlm("storage", "add", "c", "--kind", "posix", "--root", str(created),
                 "--capacity", "1 TB", "--create-root")
    assert result.err == "" and created.is_dir()
    out = dlm("storage", "rm", "m").out
    assert out.strip() == "storage 'm' (id 1) removed"
    assert dlm.error("storage", "rm", "m") == "name: no storage named 'm'"
    (created / "i").write_bytes(b"i")  # the payload, checked before it is registered
    cli_server.api(lambda client: client.add_item(item_name="i", storage="c", size=1))
    message = dlm.error("storage", "rm", "c")
    assert "holds 1 replica(s)" in message and message.startswith("name: ")
    assert "reason: replicas" in message
    assert [s["name"] for s in dlm.json("storage", "ls")] == ["c"]


@pytest.mark.parametrize("remove_first", [False, True])
async def test_a_removal_is_never_grouped_with_a_write_naming_the_storage(server,
                                                                         remove_first):
    """Writes queued together share one group commit; a removal runs in a group of its own, so
    a replica registered on the storage in the same instant is either refused or refuses it
    (PostgreSQL has no foreign key from replica to storage to catch it)."""
    c = server.client
    await c.add_storage(name="x", kind="posix", root="/x", capacity=10)
    scheduler = server.app[STATE].scheduler
    writes = [AddItems([ItemSpec(item_name="on/x", storage="x", size=1)], batch=False),
              RemoveStorage("x")]
    if remove_first:
        writes.reverse()
    results = await asyncio.gather(*map(scheduler.write, writes), return_exceptions=True)
    assert scheduler.broken is None
    if remove_first:
        assert isinstance(results[0], dict) and isinstance(results[1], errors.BadRequest)
        assert await c.storages() == []
    else:
        assert isinstance(results[1], errors.Conflict), results
        assert results[1].details["reason"] == "replicas"
        assert (await c.storage("x"))["replica_count"] == 1


async def test_ids_are_never_given_twice_after_a_storage_removal(quiet_server):  # noqa: F811
    """``storage rm`` takes the finished operations and copy requests naming the storage along;
    if they held the highest ids, a later operation or request must not get one of them again,
    not even after a restart (a script holding the old id would cancel an unrelated one)."""
    server = quiet_server
    c = server.client
    for name in ("keep", "gone"):
        await c.add_storage(name=name, kind="posix", root=f"/nowhere/{name}", capacity=10**9,
                            config={"verify_ingest": False})
    item = await c.add_item(item_name="x", storage="keep", size=1)
    op = await queue(c, "copy", item["oid"], "gone")  # the highest operation id
    await c.request("DELETE", f"/v1/operations/{op['id']}")
    request = await c.add_request(item["oid"], "gone")
    await c.request("DELETE", f"/v1/requests/{request['id']}")
    removed = await c.remove_storage("gone")
    assert (removed["operations_removed"], removed["requests_removed"]) == (1, 1)
    for restart in (False, True):
        if restart:
            await server.restart()
            c = server.client
        await c.add_storage(name=f"new{restart:d}", kind="posix", root=f"/nowhere/n{restart:d}",
                            capacity=10**9, config={"verify_ingest": False})
        again = await queue(c, "copy", item["oid"], f"new{restart:d}")
        assert again["id"] > op["id"]
        asked = await c.add_request(item["oid"], f"new{restart:d}")
        assert asked["id"] > request["id"]
        await c.request("DELETE", f"/v1/operations/{again['id']}")
        await c.request("DELETE", f"/v1/requests/{asked['id']}")
