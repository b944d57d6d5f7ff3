"""GET /v1/snapshot/columns: the inventory as columns, equal to the record snapshot."""

from __future__ import annotations

import asyncio
import random
import zlib

import numpy as np
import pytest

from detox.cycle import run_cycle
from inventory import columns, errors
from policies import load_policy_text
from tests.conftest import adler, settle

DROP_DISK2 = """
partition "all" { }
detox {
    delete "off disk2" if replica.storage == "disk2"
    default protect "keep"
}
"""


async def populate(c, tmp_path) -> list[str]:
    for name in ("disk1", "disk2"):
        (tmp_path / name).mkdir()
        await c.add_storage(name=name, kind="posix", root=str(tmp_path / name),
                            capacity=10**9, phase="GAS",
                            config={"verify_ingest": False})  # no payloads: snapshots only
    oids = []
    for i in range(30):
        item = await c.add_item(
            item_name=f"set/f{i}", storage="disk1", size=100 + i, checksum=adler(b"x" * i),
            target_phase="GAS", metadata={"run": i, "tags": ["a", "b"]} if i % 3 == 0 else None,
            owner=f"user{i % 2}" if i % 5 else None, group="ska" if i % 2 else "cms",
            expire_at=f"2300-01-{i % 28 + 1:02d}T00:00:00Z" if i % 7 == 0 else None)
        oids.append(item["oid"])
        if i % 2:
            await c.request("PATCH", f"/v1/items/{item['oid']}", json={"storage": "disk2"})
        if i % 4 == 0:
            await c.request("POST", f"/v1/items/{item['oid']}/accesses", json={"count": i + 1})
    return oids


async def test_the_column_snapshot_equals_the_record_snapshot(server, tmp_path):
    c = server.client
    await populate(c, tmp_path)
    snap = await c.snapshot()
    records = list(snap.replica_records())
    cs = await c.column_snapshot(["name", "metadata"])
    expected = columns.from_records(snap.version, snap.storages, snap.items, records)
    assert cs.version == snap.version
    assert sorted(map(tuple, cs.storages)) == sorted(map(tuple, expected.storages))
    # item rows are the server's rows, in registration order, as the record snapshot's items
    for name, column in expected.items.items():
        got = cs.items[name]
        if name in ("owner", "group"):  # codes into each side's own table
            table, exp_table = ((cs.owners, expected.owners) if name == "owner"
                                else (cs.groups, expected.groups))
            assert [table[x] for x in got] == [exp_table[x] for x in column]
        else:
            np.testing.assert_array_equal(got, column, err_msg=name)
    assert cs.names == expected.names
    assert cs.metadata == expected.metadata
    # replicas: the same set (the server's row order need not be the record stream's)
    def replica_rows(s):
        return sorted(zip(s.replicas["item"].tolist(), s.replicas["storage_id"].tolist(),
                          s.replicas["state"].tolist(), s.replicas["size"].tolist(),
                          s.replicas["created"].tolist(),
                          np.nan_to_num(s.replicas["expire_at"], nan=-1).tolist(),
                          strict=True))
    assert replica_rows(cs) == replica_rows(expected)
    assert cs.oid_texts(np.arange(1)) == [next(iter(snap.items))]
    uids = set(cs.replica_uid_texts(np.arange(cs.replica_count)))
    assert uids == set(snap.replicas)


async def test_removed_replicas_leave_no_rows_and_optional_fields_are_asked_for(server,
                                                                               tmp_path):
    c = server.client
    await populate(c, tmp_path)
    for i in range(30):
        (tmp_path / "disk2" / "set").mkdir(exist_ok=True)
        (tmp_path / "disk2" / f"set/f{i}").write_bytes(b"x" * (100 + i))
    policy = load_policy_text(DROP_DISK2, "drop.policy")
    result = await run_cycle(c, policy, DROP_DISK2)
    assert len(result.plan.deletions) == 15
    await settle(c)
    cs = await c.column_snapshot()
    assert cs.names is None and cs.metadata is None
    snap = await c.snapshot()
    assert cs.replica_count == len(snap.replicas)
    assert (cs.replicas["item"] >= 0).all()


async def test_writes_during_the_stream_are_not_in_it(server, tmp_path):
    """The columns are copied in one step: a write acknowledged after the request started
    streaming is in the next snapshot, not half in this one."""
    c = server.client
    await populate(c, tmp_path)
    before = (await c.request("GET", "/v1/health"))["version"]
    stream = asyncio.create_task(c.column_snapshot(["name"]))
    await c.add_item(item_name="late", storage="disk1", size=1, checksum=adler(b""),
                     target_phase="GAS")
    cs = await stream
    if cs.version == before:
        assert "late" not in cs.names
    else:
        assert cs.names[-1] == "late" and cs.item_count == len(cs.names)


async def test_unknown_optional_field_is_refused(server):
    with pytest.raises(errors.BadRequest) as e:
        await server.client.column_snapshot(["names"])
    assert e.value.field == "with" and "'names'" in str(e.value)



@pytest.mark.parametrize("n", [0, 255, 256, 65535, 65536, 70000])
def test_bin_headers_of_every_width(n):
    import msgpack

    from inventory.client import _bin_header

    assert msgpack.unpackb(_bin_header(n) + b"x" * n) == b"x" * n


async def test_a_plan_with_large_binary_values_is_posted_in_parts(server, tmp_path):
    """A plan's decisions (~100 MB at 10M replicas) are sent from where they are, not packed
    into a second copy: the server must store exactly the bytes sent."""
    import msgpack

    from detox.cycle import plan_header
    from inventory.client import _packed_parts
    from inventory.server.state import STATE

    body = {"policy_name": "all", "decisions": bytes(range(256)) * 8192, "summary": {"n": 1}}
    parts = [bytes(p) async for p in _packed_parts(body)]
    assert len(parts) == 3 and b"".join(parts) == msgpack.packb(body, use_bin_type=True)

    c = server.client
    await populate(c, tmp_path)
    policy = load_policy_text(DROP_DISK2, "drop.policy")
    # over the 1 MiB threshold; a whole zlib stream (the server measures what it expands to)
    blob = zlib.compress(random.Random(7).randbytes(1 << 20) + b"end", 0)
    answer = await c.post_msgpack("/v1/cycles/detox", {
        **plan_header(policy, DROP_DISK2, 0, 1.7e9), "expirations": [], "deletions": [],
        "summary": {}, "decisions": blob})
    stored = await server.app[STATE].store.cycle_decisions(answer["id"])
    assert bytes(stored) == blob


async def test_head_answers_the_headers_only(server, tmp_path):
    """HEAD gives the version and media type and no body (a body would land on the keep-alive
    connection as a bogus next answer); the next request on the connection is answered."""
    c = server.client
    await populate(c, tmp_path)
    version = (await c.request("GET", "/v1/health"))["version"]
    async with c._session.head(c.url + "/v1/snapshot/columns") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == columns.MEDIA_TYPE
        assert resp.headers["X-DLM-Version"] == str(version)
        assert await resp.read() == b""
    assert (await c.column_snapshot()).version == version


def test_a_column_longer_than_its_rows_is_refused():
    reader = columns.ColumnReader()
    reader.feed({"format": columns.FORMAT, "version": 1, "counts": {"items": 1, "replicas": 0},
                 "columns": {"item": {"size": "<i8"}, "replica": {}},
                 "names": {"owner": [None], "group": [None]}, "optional": []})
    reader.feed(("column", "item", "size", b"\0" * 8))
    with pytest.raises(ValueError, match="more bytes"):
        reader.feed(("column", "item", "size", b"\0" * 8))
