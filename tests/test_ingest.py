"""Verified ingest (issue 15, items 4, 5 and 10): a registration on a storage the server reaches
is acknowledged only once the payload was seen there with the stated size (and adler32 when
asked); malformed checksums and sizes past int64 are refused at input."""

from __future__ import annotations

import json
import zlib

import pytest

from inventory import errors
from inventory.ingest import Payload
from inventory.server.state import STATE
from inventory.specs import ItemSpec
from inventory.writes import AddItems

pytest_plugins = ["tests.cli_fixtures"]
MAX = 2**63 - 1


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


@pytest.fixture
async def disk(server, tmp_path):
    """A POSIX storage on a real directory (verification on, the default)."""
    root = tmp_path / "disk"
    root.mkdir()
    await server.client.add_storage(name="disk", kind="posix", root=str(root), capacity=10**12)
    server.root = root
    return server


async def names(client) -> list[str]:
    page = await client.request("GET", "/v1/items", params={"version": "all"})
    return sorted(i["item_name"] for i in page["items"])


# ------------------------------------------------------------------------------ REST: item 4

async def test_a_missing_payload_is_refused_and_nothing_registered(disk):
    c = disk.client
    with pytest.raises(errors.Conflict) as refused:
        await c.add_item(item_name="obs/none", storage="disk", size=3)
    assert refused.value.field == "storage"
    assert "'obs/none'" in refused.value.message and "no payload" in refused.value.message
    assert str(disk.root / "obs/none") in refused.value.message
    with pytest.raises(errors.Conflict) as refused:
        await c.add_item(item_name="obs/none", storage="disk", uri="obs/elsewhere")
    assert refused.value.field == "uri"
    assert await names(c) == []
    assert (await c.storage("disk"))["used"] == 0


async def test_a_payload_of_another_size_is_refused(disk):
    (disk.root / "a").write_bytes(b"12345")
    with pytest.raises(errors.Conflict) as refused:
        await disk.client.add_item(item_name="a", storage="disk", size=4)
    assert refused.value.field == "size"
    assert refused.value.details == {"expected": 4, "actual": 5}
    assert "'a'" in refused.value.message and "5 bytes, not 4" in refused.value.message
    assert await names(disk.client) == []


async def test_the_size_is_taken_from_the_storage(disk):
    (disk.root / "obs").mkdir()
    (disk.root / "obs/x").write_bytes(b"x" * 1234)
    item = await disk.client.add_item(item_name="obs/x", storage="disk")
    assert item["size"] == 1234 and item["state"] == "READY"
    assert item["replicas"][0]["size"] == 1234 and item["checksum"] is None
    # version 2 lives at name@v2 (storage/paths.default_path): that file is what is checked
    with pytest.raises(errors.Conflict, match="obs/x@v2"):
        await disk.client.add_item(item_name="obs/x", storage="disk")
    (disk.root / "obs/x@v2").write_bytes(b"yy")
    second = await disk.client.add_item(item_name="obs/x", storage="disk")
    assert (second["item_version"], second["size"]) == (2, 2)


async def test_verify_checksum_records_it_or_refuses_a_mismatch(disk):
    data = b"payload bytes" * 1000
    (disk.root / "f").write_bytes(data)
    item = await disk.client.add_item(item_name="f", storage="disk", verify="checksum")
    assert item["checksum"] == adler(data) and item["checksum_method"] == "adler32"
    assert item["replicas"][0]["checksum"] == adler(data) and item["size"] == len(data)
    (disk.root / "g").write_bytes(data)
    with pytest.raises(errors.Conflict) as refused:
        await disk.client.add_item(item_name="g", storage="disk", checksum="0badf00d",
                                   verify="checksum")
    assert refused.value.field == "checksum"
    assert refused.value.details == {"expected": "0badf00d", "actual": adler(data)}
    ok = await disk.client.add_item(item_name="g", storage="disk",
                                    checksum=adler(data).upper(), verify="checksum")
    assert ok["checksum"] == adler(data)
    assert await names(disk.client) == ["f", "g"]


async def test_a_bulk_request_is_refused_whole_naming_the_first_bad_item(disk):
    for i in range(5):
        (disk.root / f"b{i}").write_bytes(b"z" * i)
    specs = [{"item_name": f"b{i}", "storage": "disk"} for i in range(5)]
    specs[3]["size"] = 99
    specs.append({"item_name": "missing", "storage": "disk"})
    with pytest.raises(errors.Conflict) as refused:
        await disk.client.add_items(specs)
    assert refused.value.field == "items[3].size"
    assert "items[3] 'b3'" in refused.value.message
    del specs[3]["size"]
    with pytest.raises(errors.Conflict) as refused:
        await disk.client.add_items(specs)
    assert refused.value.field == "items[5].storage"
    assert await names(disk.client) == []
    answers = await disk.client.add_items(specs[:5])
    assert len(answers) == 5
    assert (await disk.client.storage("disk"))["used"] == 0 + 1 + 2 + 3 + 4


async def test_a_bulk_request_over_several_storages_is_checked_on_each(disk, tmp_path):
    """The stats of all POSIX storages of a request run in one thread-pool call: each item
    is still looked for on its own storage, and the first bad item in request order (not
    in storage order) is named."""
    other = tmp_path / "other"
    other.mkdir()
    await disk.client.add_storage(name="other", kind="posix", root=str(other), capacity=10**9)
    (disk.root / "d").mkdir()
    for i in range(4):
        (disk.root / "d" / f"f{i}").write_bytes(b"a" * i)
        (other / f"g{i}").write_bytes(b"b" * (10 + i))
    specs = [{"item_name": f"d/f{i}" if i % 2 else f"g{i}",
              "storage": "disk" if i % 2 else "other"} for i in range(4)]
    specs += [{"item_name": "g9", "storage": "other"}, {"item_name": "d/f9", "storage": "disk"}]
    specs[5], specs[4] = specs[4], specs[5]  # disk's missing item first, then other's
    with pytest.raises(errors.Conflict) as refused:
        await disk.client.add_items(specs)
    assert refused.value.field == "items[4].storage" and "'d/f9'" in refused.value.message
    specs[0]["item_name"] = "d/f0"  # on other: no such file there
    with pytest.raises(errors.Conflict) as refused:
        await disk.client.add_items(specs)
    assert refused.value.field == "items[0].storage" and "'d/f0'" in refused.value.message
    specs[0]["item_name"] = "g0"
    assert len(await disk.client.add_items(specs[:4])) == 4
    page = await disk.client.request("GET", "/v1/items", params={"version": "all"})
    assert sorted((i["item_name"], i["size"]) for i in page["items"]) == [
        ("d/f1", 1), ("d/f3", 3), ("g0", 10), ("g2", 12)]


async def test_a_patch_registering_a_location_checks_the_payload(disk):
    c = disk.client
    item = await c.add_item(item_name="later")
    with pytest.raises(errors.Conflict) as refused:
        await c.patch_item(item["oid"], storage="disk")
    assert refused.value.field == "storage"
    with pytest.raises(errors.Conflict) as refused:
        await c.patch_items([{"oid": item["oid"], "storage": "disk", "uri": "elsewhere"}])
    assert refused.value.field == "items[0].uri"
    assert (await c.item(item["oid"]))["state"] == "INITIALISED"
    (disk.root / "later").write_bytes(b"abc")
    with pytest.raises(errors.Conflict) as refused:
        await c.patch_item(item["oid"], storage="disk", size=4)
    assert refused.value.field == "size"
    done = await c.patch_item(item["oid"], storage="disk", verify="checksum")
    assert done["state"] == "READY" and done["size"] == 3 and done["checksum"] == adler(b"abc")


async def test_a_storage_with_verify_ingest_off_is_taken_on_trust(server, tmp_path):
    c = server.client
    await c.add_storage(name="remote", kind="posix", root=str(tmp_path / "not-here"),
                        capacity=10**9, config={"verify_ingest": False})
    item = await c.add_item(item_name="far/away", storage="remote", size=10)
    assert item["state"] == "READY" and item["size"] == 10
    with pytest.raises(errors.BadRequest) as refused:
        await c.add_item(item_name="far/other", storage="remote")
    assert refused.value.field == "size" and "verify_ingest" in refused.value.message
    # turned on, the same storage is looked at (and its missing root is no payload)
    await c.patch_storage("remote", config={"verify_ingest": True})
    with pytest.raises(errors.Unavailable) as refused:
        await c.add_item(item_name="far/third", storage="remote", size=1)
    assert refused.value.field == "storage" and "verify_ingest" in refused.value.message
    assert await names(c) == ["far/away"]


async def test_verify_ingest_must_be_a_boolean(server, tmp_path):
    with pytest.raises(errors.BadRequest) as refused:
        await server.client.add_storage(name="s", kind="posix", root=str(tmp_path),
                                        capacity=1, config={"verify_ingest": "no"})
    assert refused.value.field == "config.verify_ingest"
    await server.client.add_storage(name="s", kind="posix", root=str(tmp_path), capacity=1)
    with pytest.raises(errors.BadRequest) as refused:
        await server.client.patch_storage("s", config={"verify_ingest": 0})
    assert refused.value.field == "config.verify_ingest"


async def test_a_payload_outside_the_root_through_a_symlink_is_refused(disk, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"secret")
    (disk.root / "link").symlink_to(outside)
    with pytest.raises(errors.BadRequest) as refused:
        await disk.client.add_item(item_name="link/f", storage="disk")
    assert refused.value.field == "item_name"
    assert "reaches the file through a symlink" in refused.value.message
    assert await names(disk.client) == []
    with pytest.raises(errors.BadRequest) as refused:
        await disk.client.add_items([{"item_name": "ok/.dlm-x", "storage": "disk"}])
    assert refused.value.field == "items[0].item_name"


async def test_a_stale_payload_is_refused_by_the_writer(disk):
    """The handler saw version 1's path; the writer would give version 2: 409, not a replica
    registered at a path nobody looked at."""
    (disk.root / "v").write_bytes(b"1")
    await disk.client.add_item(item_name="v", storage="disk")
    state = disk.app[STATE]
    storage = state.inventory.storage_by_name["disk"]
    seen = Payload(storage.id, storage.kind, storage.root, "v", 1, 1, None)
    with pytest.raises(errors.Conflict, match="retry"):
        await state.scheduler.write(AddItems([ItemSpec(item_name="v", storage="disk")],
                                             batch=False, payloads=[seen]))
    assert await names(disk.client) == ["v"]


# ------------------------------------------------------------------------------ REST: item 5

@pytest.mark.parametrize(("fields", "field"), [
    ({"checksum": "xyz"}, "checksum"),
    ({"checksum": "123456789"}, "checksum"),
    ({"checksum": ""}, "checksum"),
    ({"checksum": "0a0b0c0d", "checksum_method": "md5"}, "checksum_method"),
    ({"checksum_method": "sha1"}, "checksum_method"),
])
async def test_a_malformed_checksum_is_refused_everywhere(server, fields, field):
    c = server.client
    with pytest.raises(errors.BadRequest) as refused:
        await c.add_item(item_name="c", **fields)
    assert refused.value.field == field
    with pytest.raises(errors.BadRequest) as refused:
        await c.add_items([{"item_name": "ok"}, {"item_name": "c", **fields}])
    assert refused.value.field == f"items[1].{field}"
    item = await c.add_item(item_name="p")
    with pytest.raises(errors.BadRequest) as refused:
        await c.patch_item(item["oid"], **fields)
    assert refused.value.field == field
    with pytest.raises(errors.BadRequest) as refused:
        await c.patch_items([{"oid": item["oid"], **fields}])
    assert refused.value.field == f"items[0].{field}"
    assert await names(c) == ["p"]


async def test_a_checksum_is_kept_in_canonical_form(server):
    item = await server.client.add_item(item_name="c", checksum=" ABC ",
                                        checksum_method="ADLER32")
    assert item["checksum"] == "00000abc" and item["checksum_method"] == "adler32"
    patched = await server.client.patch_item(item["oid"], checksum="F")
    assert patched["checksum"] == "0000000f"


# ------------------------------------------------------------------------------ REST: item 10

async def test_sizes_and_capacities_are_bounded_to_int64(server, tmp_path):
    c = server.client
    for capacity in (2**63, "9999999 PB", "8 EiB", 10**30):
        with pytest.raises(errors.BadRequest) as refused:
            await c.add_storage(name="big", kind="posix", root=str(tmp_path), capacity=capacity)
        assert refused.value.field == "capacity"
    exact = await c.add_storage(name="big", kind="posix", root=str(tmp_path),
                                capacity="1.1 PB", config={"verify_ingest": False})
    assert exact["capacity"] == 1_100_000_000_000_000  # not float-rounded
    with pytest.raises(errors.BadRequest) as refused:
        await c.patch_storage("big", capacity=2**63)
    assert refused.value.field == "capacity"
    with pytest.raises(errors.BadRequest) as refused:
        await c.add_items([{"item_name": "s"}, {"item_name": "t", "size": 2**63}])
    assert refused.value.field == "items[1].size"
    await c.patch_storage("big", capacity=MAX)
    huge = await c.add_item(item_name="huge", storage="big", size=MAX)
    assert huge["size"] == MAX
    storage = await c.storage("big")
    assert storage["used"] == MAX and isinstance(storage["used"], int)
    assert storage["free"] == 0 and storage["occupancy"] == 1.0
    # a second byte would take the storage's sum past int64: refused, the sum stays exact
    with pytest.raises(errors.Conflict) as refused:
        await c.add_item(item_name="one-more", storage="big", size=1)
    assert refused.value.field == "size"
    assert (await c.storage("big"))["used"] == MAX


async def test_a_container_size_stays_within_int64(server):
    c = server.client
    box = await c.add_item(item_name="box", item_type="container")
    inner = await c.add_item(item_name="box/inner", item_type="container",
                             parent_oid=box["oid"])
    await c.add_item(item_name="box/a", size=MAX - 1, parent_oid=box["oid"])
    await c.add_item(item_name="box/inner/b", size=1, parent_oid=inner["oid"])
    with pytest.raises(errors.Conflict) as refused:
        await c.add_items([{"item_name": "box/inner/c", "size": 1,
                            "parent_oid": inner["oid"]}])
    assert refused.value.field == "items[0].size"
    assert (await c.item(box["oid"]))["size"] == MAX


# ------------------------------------------------------------------------------ CLI

@pytest.fixture
def real_disk(cli_server, tmp_path):
    root = tmp_path / "cli-disk"
    root.mkdir()
    cli_server.add_disk("real", root=str(root), config={})
    return root


def test_cli_inject_takes_the_size_from_the_storage_and_verifies(dlm, real_disk):
    (real_disk / "obs").mkdir()
    (real_disk / "obs/a").write_bytes(b"hello")
    item = dlm.json("inject", "obs/a", "--storage", "real", "--verify", "checksum")
    assert item["size"] == 5 and item["checksum"] == adler(b"hello")
    message = dlm.error("inject", "obs/b", "--storage", "real")
    assert "'obs/b'" in message and "no payload" in message
    (real_disk / "obs/d").write_bytes(b"hello")
    message = dlm.error("inject", "obs/d", "--storage", "real", "--size", "6")
    assert message.startswith("size: ") and "5 bytes, not 6" in message
    message = dlm.error("inject", "obs/c", "--checksum", "xyz")
    assert message.startswith("checksum: ")
    assert [i["item_name"] for i in dlm.json("ls")] == ["obs/a"]


def test_cli_bulk_inject_reports_the_line_of_the_first_bad_record(dlm, real_disk, tmp_path):
    for i in range(4):
        (real_disk / f"f{i}").write_bytes(b"q" * (i + 1))
    path = tmp_path / "items.jsonl"
    records = [{"item_name": f"f{i}"} for i in range(4)]
    records[2]["size"] = 7
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    message = dlm.error("inject", "--from", str(path), "--storage", "real", "--no-progress")
    assert message.startswith(f"{path} line 3: size: ")
    assert message.count("nothing was registered") == 1
    records[2] = {"item_name": "f2", "checksum": "00000000"}
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    message = dlm.error("inject", "--from", str(path), "--storage", "real", "--no-progress",
                        "--verify", "checksum")
    assert message.startswith(f"{path} line 3: checksum: ")
    assert dlm.json("ls") == []
    del records[2]["checksum"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = dlm("inject", "--from", str(path), "--storage", "real", "--no-progress").out
    assert out.strip() == f"registered 4 items from {path}"
    assert dlm.json("show", "f3")["size"] == 4
