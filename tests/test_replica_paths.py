"""One file per replica (issue 15, items 2 and 3): each version of a name has its own default
path, registered uris are resolved and checked, a (storage, file) belongs to one live replica in
memory and in the database, copies never overwrite a file that is not theirs, deletions never
remove a file another replica names, and migration 008 moves legacy shared files apart."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

import schema
from consistency.cycle import Options, run_consistency
from inventory import errors, model
from inventory.dashboard import fragments
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from inventory.server.state import STATE
from inventory.specs import ItemSpec
from inventory.storage.errors import PathConflict
from inventory.storage.factory import backend_for
from inventory.storage.posix import PosixBackend
from inventory.store import open_store
from inventory.store.base import StoreConflict
from inventory.store.ops import InsertItems, InsertReplicas, InsertStorage
from inventory.writes import AddItems, Pending
from tests.conftest import InProcessServer, adler
from tests.s3server import BUCKET, RcloneS3, s3_server  # noqa: F401
from tests.test_fileops import FAST, operation, queue

pytest_plugins = ["tests.cli_fixtures"]


@pytest.fixture
async def fs(db_url, tmp_path):
    """A server with a fast engine and two POSIX storages."""
    srv = InProcessServer(db_url, tmp_path, fileops=FAST)
    await srv.start()
    srv.roots = {}
    for name in ("src", "dst"):
        srv.roots[name] = tmp_path / name
        srv.roots[name].mkdir()
        await srv.client.add_storage(name=name, kind="posix", root=str(srv.roots[name]),
                                     capacity=10**9, phase="GAS")
    try:
        yield srv
    finally:
        await srv.stop()


def put(root, path: str, data: bytes) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


async def register(srv, name: str, data: bytes, path: str, **spec) -> dict:
    """Place ``data`` at ``path`` on src and register it there (at its default path unless a
    uri is given)."""
    put(srv.roots["src"], path, data)
    spec.setdefault("target_phase", "GAS")
    return await srv.client.add_item(item_name=name, storage="src", size=len(data),
                                     checksum=adler(data), **spec)


def uri_on(item: dict, storage: str) -> str:
    return next(r["uri"] for r in item["replicas"] if r["storage"] == storage)


# --------------------------------------------------------------------------- the layout

async def test_two_versions_of_one_name_never_share_a_file(fs):
    c = fs.client
    one, two = os.urandom(3000), os.urandom(4000)
    v1 = await register(fs, "ver/file", one, "ver/file")
    v2 = await register(fs, "ver/file", two, "ver/file@v2")
    assert v2["item_version"] == 2
    assert uri_on(await c.item(v2["oid"]), "src") == f"{fs.roots['src']}/ver/file@v2"
    for item in (v1, v2):
        done = await operation(c, (await queue(c, "copy", item["oid"], "dst"))["id"])
        assert done["state"] == "done", done
    assert (fs.roots["dst"] / "ver/file").read_bytes() == one
    assert (fs.roots["dst"] / "ver/file@v2").read_bytes() == two
    assert uri_on(await c.item(v2["oid"]), "dst") == f"{fs.roots['dst']}/ver/file@v2"
    where = await c.request("GET", f"/v1/items/{v2['oid']}/storages")
    assert {s["name"]: s["uri"] for s in where["storages"]}["dst"] == \
        f"{fs.roots['dst']}/ver/file@v2"
    # deleting v1's copy leaves v2's file alone
    gone = await operation(c, (await queue(c, "delete", v1["oid"], "dst"))["id"])
    assert gone["state"] == "done", gone
    assert not (fs.roots["dst"] / "ver/file").exists()
    assert (fs.roots["dst"] / "ver/file@v2").read_bytes() == two
    states = {r["storage"]: r["state"] for r in (await c.item(v2["oid"]))["replicas"]}
    assert states == {"src": "complete", "dst": "complete"}


async def test_the_dashboard_shows_where_each_version_lives(fs):
    await register(fs, "dash/f", b"1", "dash/f")
    v2 = await register(fs, "dash/f", b"2", "dash/f@v2")
    inv = fs.app[STATE].inventory
    html = fragments.item(inv, inv.row_of_oid(model.parse_uuid(v2["oid"])), [])
    assert f"{fs.roots['src']}/dash/f@v2" in html


async def test_a_name_that_reads_as_a_version_path_is_refused(fs):
    with pytest.raises(errors.BadRequest) as caught:
        await fs.client.add_item(item_name="ver/file@v2")
    assert caught.value.field == "item_name" and "version 2" in caught.value.message
    # @v1 and a leading zero are not default paths of anything else: fine
    await fs.client.add_item(item_name="ver/file@v1")
    await fs.client.add_item(item_name="ver/file@v02")


async def test_consistency_maps_version_paths_back_to_their_items(fs):
    """A storage holding ``f`` (v1), ``f@v2`` (v2) and a uri-registered file lists clean: no
    orphan for ``f@v2``, nothing missing; an old stray ``f@v3`` with no version 3 is dark data."""
    c = fs.client
    one, two, three = os.urandom(100), os.urandom(200), os.urandom(300)
    await register(fs, "f", one, "f")
    await register(fs, "f", two, "f@v2")
    await register(fs, "g", three, "elsewhere/g.bin", uri="elsewhere/g.bin")
    old = 1_600_000_000
    for path in ("f", "f@v2", "elsewhere/g.bin"):
        os.utime(fs.roots["src"] / path, (old, old))
    run = await run_consistency(c, "src", Options(checksums="all"))
    assert all(not rows for rows in run.report["findings"].values()), run.report["findings"]
    put(fs.roots["src"], "f@v3", b"stray")
    os.utime(fs.roots["src"] / "f@v3", (old, old))
    run = await run_consistency(c, "src", Options(checksums="all"))
    assert [row["path"] for row in run.report["findings"]["orphan"]] == ["f@v3"]
    assert not run.report["findings"]["missing"]


# --------------------------------------------------------------------------- registration

async def test_relative_uri_is_stored_resolved_and_copied_from(fs):
    c = fs.client
    data = os.urandom(500)
    item = await register(fs, "rel", data, "sub/rel.bin", uri="sub/rel.bin")
    assert uri_on(await c.item(item["oid"]), "src") == f"{fs.roots['src']}/sub/rel.bin"
    done = await operation(c, (await queue(c, "copy", item["oid"], "dst"))["id"])
    assert done["state"] == "done", done
    assert (fs.roots["dst"] / "rel").read_bytes() == data
    # an absolute uri under the root is kept in the same normal form
    abs_item = await register(fs, "abs", data, "a/abs.bin", uri=f"{fs.roots['src']}//a/abs.bin"
                              .replace("//a", "/a"))
    assert uri_on(await c.item(abs_item["oid"]), "src") == f"{fs.roots['src']}/a/abs.bin"


def bad_uris(fs) -> list[tuple[str, str]]:
    src, dst = fs.roots["src"], fs.roots["dst"]
    return [
        ("/etc/passwd", "outside the storage root"),
        (f"{dst}/x", "outside the storage root"),          # another storage's root
        (f"{src}2/x", "outside the storage root"),         # a sibling sharing the prefix
        ("../x", "'..'"),
        (f"{src}/a/../../x", "'..'"),
        ("a\\b", "forbidden character"),
        (".dlm-x", "reserved"),
        ("d/" + "x" * 256, "255 bytes"),
        ("a\u0085b", "forbidden character"),
        ("a\u202eb", "forbidden character"),
        ("", "empty"),
        ("s3://bucket/x", "outside the storage root"),
    ]


async def test_bad_uris_are_refused_naming_the_field(fs):
    c = fs.client
    before = (await c.health())["version"]
    for uri, why in bad_uris(fs):
        with pytest.raises(errors.BadRequest) as caught:
            await c.add_item(item_name="x", storage="src", size=1, uri=uri)
        assert caught.value.field == "uri" and why in caught.value.message, (uri, caught.value)
        with pytest.raises(errors.BadRequest) as caught:
            await c.request("POST", "/v1/items", json=[
                {"item_name": "ok"}, {"item_name": "x", "storage": "src", "size": 1,
                                      "uri": uri}])
        assert caught.value.field == "items[1].uri", (uri, caught.value)
    item = await c.add_item(item_name="patched", size=1)
    for uri, why in bad_uris(fs):
        with pytest.raises(errors.BadRequest) as caught:
            await c.request("PATCH", f"/v1/items/{item['oid']}",
                            json={"storage": "src", "uri": uri})
        assert caught.value.field == "uri" and why in caught.value.message, (uri, caught.value)
    assert (await c.health())["replicas"] == 0
    assert (await c.health())["version"] == before + 1  # only the item "patched"


@pytest.mark.parametrize("name, why", [
    ("a\\b", "forbidden character"), (".dlm-x", "reserved"), ("d/.dlm-x/y", "reserved"),
    ("d/" + "é" * 128, "255 bytes"), ("a\u0085b", "control"), ("a\u009fb", "control"),
    ("a\u202eb", "bidirectional"), ("a\u2066b", "bidirectional"),
])
async def test_names_the_storage_would_refuse_are_refused_at_registration(fs, name, why):
    with pytest.raises(errors.BadRequest) as caught:
        await fs.client.add_item(item_name=name, storage="src", size=1)
    assert caught.value.field == "item_name" and why in caught.value.message, caught.value
    with pytest.raises(errors.BadRequest) as caught:
        await fs.client.request("POST", "/v1/items", json=[{"item_name": "ok"},
                                                           {"item_name": name}])
    assert caught.value.field == "items[1].item_name"


async def test_another_items_file_is_a_conflict_naming_the_holder(fs):
    c = fs.client
    data = os.urandom(10)
    first = await register(fs, "first", data, "first")
    # its default path, given as a uri by another item
    with pytest.raises(errors.Conflict) as caught:
        await c.add_item(item_name="thief", storage="src", size=10, uri="first")
    assert caught.value.field == "uri" and first["oid"] in caught.value.message
    # a custom uri, claimed by another item's uri or default path
    custom = await register(fs, "custom", data, "store/c.bin", uri="store/c.bin")
    for spec in ({"item_name": "thief", "uri": f"{fs.roots['src']}/store/c.bin"},
                 {"item_name": "store/c.bin"}):
        with pytest.raises(errors.Conflict) as caught:
            await c.add_item(storage="src", size=10, **spec)
        assert caught.value.field in ("uri", "storage") and custom["oid"] in \
            caught.value.message, caught.value
    # PATCH and batches name the field the same way
    item = await c.add_item(item_name="late", size=10)
    with pytest.raises(errors.Conflict) as caught:
        await c.request("PATCH", f"/v1/items/{item['oid']}", json={"storage": "src",
                                                                    "uri": "store/c.bin"})
    assert caught.value.field == "uri"
    put(fs.roots["src"], "same", b"1")
    with pytest.raises(errors.Conflict) as caught:
        await c.request("POST", "/v1/items", json=[
            {"item_name": "a", "storage": "src", "size": 1, "uri": "same"},
            {"item_name": "b", "storage": "src", "size": 1, "uri": "same"}])
    assert caught.value.field == "items[1].uri"
    # the file is free again once its replica is gone
    assert (await c.health())["replicas"] == 2


async def test_claims_in_one_group_commit_see_each_other(fs):
    """Two registrations prepared in one group (the scheduler's Pending) cannot both take one
    file, nor can a copy take a file a registration of the same group claimed."""
    inv = fs.app[STATE].inventory
    pending = Pending()
    AddItems([ItemSpec(item_name="g1", storage="src", size=1, uri="shared")]).prepare(
        inv, pending)
    with pytest.raises(errors.Conflict) as caught:
        AddItems([ItemSpec(item_name="g2", storage="src", size=1, uri="shared")]).prepare(
            inv, pending)
    assert caught.value.field == "items[0].uri"
    with pytest.raises(errors.Conflict):
        AddItems([ItemSpec(item_name="shared", storage="src", size=1)]).prepare(inv, pending)
    # a fresh group does not see the claims of one that never committed
    AddItems([ItemSpec(item_name="g2", storage="src", size=1, uri="shared")]).prepare(
        inv, Pending())


def test_cli_inject_with_a_bad_uri_fails_naming_it(dlm, cli_server):
    cli_server.add_disk()
    message = dlm.error("inject", "x", "--storage", "disk1", "--size", "1", "--uri",
                        "/etc/passwd")
    assert "uri" in message and "outside the storage root" in message
    assert cli_server.api(lambda c: c.health())["items"] == 0


# --------------------------------------------------------------------------- copies

async def test_a_copy_never_overwrites_a_foreign_file(fs):
    c = fs.client
    data = os.urandom(2000)
    item = await register(fs, "taken", data, "taken")
    put(fs.roots["dst"], "taken", b"somebody else's data")
    done = await operation(c, (await queue(c, "copy", item["oid"], "dst"))["id"])
    assert done["state"] == "failed", done
    assert "exists and is not this copy's" in done["last_error"]
    assert "taken" in done["last_error"]
    assert (fs.roots["dst"] / "taken").read_bytes() == b"somebody else's data"
    assert [r["storage"] for r in (await c.item(item["oid"]))["replicas"]] == ["src"]
    # same size, other bytes: still not this copy's
    put(fs.roots["dst"], "taken", bytes(2000))
    done = await operation(c, (await queue(c, "copy", item["oid"], "dst"))["id"])
    assert done["state"] == "failed" and "adler32" in done["last_error"], done
    assert (fs.roots["dst"] / "taken").read_bytes() == bytes(2000)


async def test_a_retried_copy_accepts_the_file_its_first_attempt_completed(fs):
    c = fs.client
    data = os.urandom(5000)
    item = await register(fs, "crashed", data, "crashed")
    put(fs.roots["dst"], "crashed", data)  # the attempt before the server died got this far
    done = await operation(c, (await queue(c, "copy", item["oid"], "dst"))["id"])
    assert done["state"] == "done" and done["attempts"] == 1, done
    replica = next(r for r in (await c.item(item["oid"]))["replicas"] if r["storage"] == "dst")
    assert replica["state"] == "complete" and replica["checksum"] == adler(data)
    assert replica["size"] == 5000


def test_posix_exclusive_write_refuses_an_existing_file(tmp_path):
    """The backend primitive: the temporary file is never renamed over a file that appeared
    meanwhile (renameat2 NOREPLACE, or link)."""

    async def go() -> None:
        async with PosixBackend(tmp_path) as backend:
            async def chunks():
                yield b"new"
            (tmp_path / "f").write_bytes(b"old")
            with pytest.raises(PathConflict, match="exists and is not this copy's"):
                await backend.write("f", chunks(), exclusive=True)
            assert (tmp_path / "f").read_bytes() == b"old"
            assert sorted(os.listdir(tmp_path)) == ["f"]  # no temporary file left
            await backend.write("g", chunks(), exclusive=True)
            assert (tmp_path / "g").read_bytes() == b"new"

    asyncio.run(go())


@pytest.fixture
async def with_s3(tmp_path, s3_server: RcloneS3):  # noqa: F811
    srv = InProcessServer(f"sqlite:{tmp_path / 'db.sqlite'}", tmp_path, fileops=FAST)
    await srv.start()
    prefix = f"paths-{os.urandom(4).hex()}"
    (tmp_path / "disk").mkdir()
    await srv.client.add_storage(name="disk", kind="posix", root=str(tmp_path / "disk"),
                                 capacity=10**9, phase="GAS")
    await srv.client.add_storage(name="bucket", kind="s3", root=f"{BUCKET}/{prefix}",
                                 capacity=10**9, phase="LIQUID", config=s3_server.config())
    srv.disk, srv.objects = tmp_path / "disk", s3_server.directory / BUCKET / prefix
    try:
        yield srv
    finally:
        await srv.stop()


# a buffered PUT, a streaming PUT (over part_size) and multipart (over multipart_threshold)
@pytest.mark.parametrize("size", [1000, 7 * 1024 * 1024, 11 * 1024 * 1024])
async def test_s3_copy_never_overwrites_and_accepts_its_own_completed_file(with_s3, size):
    c = with_s3.client
    data = os.urandom(size)
    put(with_s3.disk, "o.bin", data)
    item = await c.add_item(item_name="o.bin", storage="disk", size=size, checksum=adler(data))
    put(with_s3.objects, "o.bin", b"foreign")  # rclone keeps objects as plain files
    await _settle_listing()
    done = await operation(c, (await queue(c, "copy", item["oid"], "bucket"))["id"])
    assert done["state"] == "failed" and "exists and is not this copy's" in done["last_error"]
    assert (with_s3.objects / "o.bin").read_bytes() == b"foreign"
    put(with_s3.objects, "o.bin", data)  # as if an earlier attempt had completed it
    await _settle_listing()
    done = await operation(c, (await queue(c, "copy", item["oid"], "bucket"))["id"])
    assert done["state"] == "done", done
    replica = next(r for r in (await c.item(item["oid"]))["replicas"]
                   if r["storage"] == "bucket")
    assert replica["state"] == "complete" and replica["checksum"] == adler(data)


async def _settle_listing() -> None:
    """rclone serve s3 sees files written into its directory after its dir cache time."""
    await asyncio.sleep(1.2)


async def test_s3_backend_exclusive_write_checks_before_the_final_request(with_s3):
    """Each upload path HEADs before the request that makes the object visible."""
    storage = with_s3.app[STATE].inventory.storage_by_name["bucket"]
    backend = backend_for(storage.kind, storage.root, storage.config)
    try:
        put(with_s3.objects, "x/exists", b"x")
        await _settle_listing()
        for size in (10, 7 * 1024 * 1024, 11 * 1024 * 1024):
            async def chunks(size=size):
                yield os.urandom(size)
            with pytest.raises(PathConflict, match="exists and is not this copy's"):
                await backend.write("x/exists", chunks(), size_hint=size, exclusive=True)
            assert (with_s3.objects / "x/exists").read_bytes() == b"x"
    finally:
        await backend.close()


# --------------------------------------------------------------------------- deletions

async def _legacy_store(db_url, tmp_path, storage_root, records):
    store = open_store(db_url, str(tmp_path))
    await store.open()
    try:
        await store.commit(records, 1)
    finally:
        await store.close()


def _storage(root) -> StorageRecord:
    return StorageRecord(1, "disk", "posix", str(root), 10**9, model.PHASE["GAS"], "online",
                         {}, {}, 1.0)


def _item(name: str, version: int, created: float) -> ItemRecord:
    return ItemRecord(model.new_oid(), name, version, model.FILE, model.READY,
                      model.PHASE["GAS"], 3, None, None, None, None, created, None, 0, None,
                      None, None)


def _replica(item: ItemRecord, uri, created: float, state=model.COMPLETE) -> ReplicaRecord:
    return ReplicaRecord(item.oid, 1, uri, state, 3, None, created, None, None)


async def test_a_deletion_keeps_a_file_another_replica_names(db_url, tmp_path):
    """A legacy name ``f@v2`` (version 1) and version 2 of ``f`` both sit at ``f@v2``: deleting
    one drops its replica and leaves the file to the other."""
    root = tmp_path / "disk"
    put(root, "f@v2", b"abc")
    legacy, v1, v2 = _item("f@v2", 1, 1.0), _item("f", 1, 2.0), _item("f", 2, 3.0)
    await _legacy_store(db_url, tmp_path, root, [
        InsertStorage(_storage(root)), InsertItems([legacy, v1, v2]),
        InsertReplicas([_replica(legacy, None, 1.0), _replica(v2, None, 3.0)])])
    srv = InProcessServer(db_url, tmp_path, fileops=FAST)
    await srv.start()
    try:
        c = srv.client
        await c.request("PATCH", f"/v1/items/{model.format_uuid(legacy.oid)}",
                        json={"state": "EXPIRED"})
        op = await queue(c, "delete", model.format_uuid(legacy.oid), "disk")
        done = await operation(c, op["id"])
        assert done["state"] == "done" and "file kept" in done["last_error"], done
        assert (root / "f@v2").read_bytes() == b"abc"
        assert (await c.item(model.format_uuid(legacy.oid)))["replicas"] == []
        kept = await c.item(model.format_uuid(v2.oid))
        assert [r["state"] for r in kept["replicas"]] == ["complete"]
        # with the other replica gone too, the file is deleted for real
        await c.request("PATCH", f"/v1/items/{model.format_uuid(v2.oid)}",
                        json={"state": "EXPIRED"})
        done = await operation(c, (await queue(c, "delete", model.format_uuid(v2.oid),
                                               "disk"))["id"])
        assert done["state"] == "done" and not done["last_error"], done
        assert not (root / "f@v2").exists()
    finally:
        await srv.stop()


# --------------------------------------------------------------------------- the database

async def test_the_database_refuses_two_live_replicas_at_one_uri(db_url, tmp_path):
    a, b = _item("a", 1, 1.0), _item("b", 1, 1.0)
    store = open_store(db_url, str(tmp_path))
    await store.open()
    try:
        await store.commit([InsertStorage(_storage(tmp_path)), InsertItems([a, b]),
                            InsertReplicas([_replica(a, f"{tmp_path}/x", 1.0)])], 1)
        with pytest.raises(StoreConflict):
            await store.commit([InsertReplicas([_replica(b, f"{tmp_path}/x", 1.0)])], 2)
    finally:
        await store.close()


async def test_migration_008_moves_shared_files_apart(db_url, tmp_path, monkeypatch, caplog):
    """A database at schema 7 with the bug: v1 and v2 of ``a`` both at ``a``, two items at one
    custom uri, a lone v2 at its bare name. After 8 nothing that has a file moves; the losers
    get their own path, state missing, logged."""
    every = schema.migrations
    monkeypatch.setattr(schema, "migrations", lambda dialect: every(dialect)[:7])
    root = tmp_path / "disk"
    a1, a2 = _item("a", 1, 1.0), _item("a", 2, 2.0)
    lone = _item("lone", 2, 1.0)
    plain = _item("plain", 1, 1.0)
    d, e = _item("d", 1, 1.0), _item("e", 1, 1.0)
    await _legacy_store(db_url, tmp_path, root, [
        InsertStorage(_storage(root)), InsertItems([a1, a2, lone, plain, d, e]),
        InsertReplicas([_replica(a1, None, 1.0), _replica(a2, None, 2.0),
                        _replica(lone, None, 1.0), _replica(plain, None, 1.0),
                        _replica(d, f"{root}/shared", 1.0),
                        _replica(e, f"{root}/shared", 5.0)])])
    monkeypatch.setattr(schema, "migrations", every)
    caplog.set_level(logging.WARNING, logger="dlm.store")
    srv = InProcessServer(db_url, tmp_path)
    await srv.start()
    try:
        c = srv.client
        assert (await c.health())["db"]["schema_version"] == schema.latest_version("sqlite")

        async def replica(item):
            body = await c.item(model.format_uuid(item.oid))
            (only,) = body["replicas"]
            return only["uri"], only["state"]

        assert await replica(a2) == (f"{root}/a", "complete")      # kept, pinned
        assert await replica(a1) == (f"{root}/a@v1", "missing")    # moved off v2's file
        assert await replica(lone) == (f"{root}/lone", "complete")  # pinned, not moved
        assert await replica(plain) == (f"{root}/plain", "complete")
        assert await replica(e) == (f"{root}/shared", "complete")
        assert await replica(d) == (f"{root}/d", "missing")
        moved = {(r.item, r.storage, r.new_uri) for r in caplog.records
                 if r.name == "dlm.store" and hasattr(r, "new_uri")}
        assert moved == {("a", "disk", f"{root}/a@v1"), ("d", "disk", f"{root}/d")}
        # the pinned file is still its replica's: a new registration cannot take it
        put(root, "lone", b"abc")  # (ingest looks at the payload first)
        with pytest.raises(errors.Conflict):
            await c.add_item(item_name="thief", storage="disk", size=1, uri="lone")
    finally:
        await srv.stop()
    # logged once: a restart has nothing more to say
    caplog.clear()
    srv = InProcessServer(db_url, tmp_path)
    await srv.start()
    await srv.stop()
    assert not [r for r in caplog.records if hasattr(r, "new_uri")]
