"""The in-memory inventory's indexes and compact columns, through its Python API."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory import model
from inventory.inventory import Checksums, Inventory
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from tests.conftest import fuzz_budget


def item(name, version=1, *, state=model.READY, expire=None, parent=None, checksum=None,
         item_type=model.FILE, size=10, **kw):
    return ItemRecord(model.new_oid(), name, version, item_type, state, model.PHASE["SOLID"],
                      size, checksum, "adler32" if checksum else None, kw.get("metadata"),
                      parent, 1000.0, expire, 0, None, kw.get("owner"), kw.get("group"))


@pytest.fixture
def inv():
    inv = Inventory()
    for sid, phase in ((1, "GAS"), (2, "GAS"), (3, "LIQUID"), (4, "SOLID"), (5, "PLASMA")):
        inv.add_storage(StorageRecord(sid, f"s{sid}", "posix", f"/s{sid}", 10**9,
                                      model.PHASE[phase], "online", {}, {}, 0.0))
    return inv


def test_versions_in_any_order_give_the_latest_and_each_version(inv):
    for version in (2, 5, 1, 3):
        inv.add_item(item("n", version))
    assert inv.i_version[inv.row_of_name("n")] == 5
    assert [inv.i_version[r] for r in inv.versions_of("n")] == [5, 3, 2, 1]
    assert inv.row_of_name("n", 4) is None
    assert inv.i_version[inv.row_of_name("n", 3)] == 3
    assert inv.row_of_name("missing") is None


def test_bulk_add_with_versions_inside_one_batch(inv):
    inv.add_items([item("b", 1), item("b", 3), item("b", 2), item("c", 1)])
    assert [inv.i_version[r] for r in inv.versions_of("b")] == [3, 2, 1]
    assert inv.counts.items == 4


def test_state_expiry_and_parent_indexes(inv):
    rows = inv.add_items([item("a", state=model.INITIALISED), item("b", expire=50.0),
                          item("c", expire=10.0), item("d", expire=99.0),
                          item("box", item_type=model.CONTAINER)])
    box_oid = inv.i_oid[rows[-1]]
    m1 = inv.add_item(item("box/1", parent=box_oid))
    m2 = inv.add_item(item("box/2", parent=box_oid))
    assert list(inv.rows_in_state(model.INITIALISED)) == [rows[0]]
    assert set(inv.rows_in_state(model.READY)) == set(rows[1:]) | {m1, m2}
    assert [inv.i_name[r] for r in inv.rows_expiring_before(50.0)] == ["c"]
    assert [inv.i_name[r] for r in inv.rows_expiring_before(99.5)] == ["c", "b", "d"]
    assert inv.child_rows(rows[-1]) == [m1, m2]
    assert inv.counts.items_by_state[model.INITIALISED] == 1


def test_glob_and_prefix_name_matching_is_sorted(inv):
    inv.add_items([item(n) for n in ("run/2", "run/10", "run/1", "other/1", "runx")])
    assert [inv.i_name[r] for r in inv.rows_matching_name("run/*")] == \
        ["run/1", "run/10", "run/2"]
    assert [inv.i_name[r] for r in inv.rows_matching_name("run?")] == ["runx"]
    assert [inv.i_name[r] for r in inv.rows_matching_name("run[x]")] == ["runx"]
    assert [inv.i_name[r] for r in inv.rows_matching_name("other/1")] == ["other/1"]


@pytest.mark.parametrize("checksum", [None, "0", "0a1b2c3d", "00000000", "ffffffffffffffff",
                                      "ABCDEF01", "0x1f", "1_2", " 12", "a" * 64, "zz", ""])
def test_checksums_round_trip_exactly(checksum):
    packed = Checksums()
    packed.extend(["00ff", checksum, "abc"])
    assert [packed.get(0), packed.get(1), packed.get(2)] == ["00ff", checksum, "abc"]
    packed.set(1, "beef")
    assert packed.get(1) == "beef"


def test_item_record_round_trip_keeps_every_field(inv):
    rec = item("x/y", 7, checksum="DEADbeef" * 8, expire=123.5, metadata={"k": [1, 2]},
               owner="alice", group="ska")
    row = inv.add_item(rec)
    assert inv.item_record(row) == rec
    rep = ReplicaRecord(rec.oid, 2, "/custom/uri", model.COMPLETE, 10, "0a0b", 5.0, 77.0, 6.0)
    rrow = inv.add_replica(rep)
    assert inv.replica_record(rrow) == rep


def test_replicas_are_listed_per_item_and_per_storage_with_usage(inv):
    a, b = item("a", size=100), item("b", size=7)
    inv.add_items([a, b])
    inv.add_replicas([ReplicaRecord(a.oid, 1, None, model.COMPLETE, 100, None, 1.0, None, None),
                      ReplicaRecord(a.oid, 2, None, model.COMPLETE, None, None, 1.0, None, None),
                      ReplicaRecord(b.oid, 1, None, model.COMPLETE, 7, None, 1.0, None, None)])
    assert sorted(inv.r_storage[r] for r in inv.replica_rows_of_item(inv.row_of_name("a"))) \
        == [1, 2]
    assert sorted(inv.i_name[inv.r_item[r]] for r in inv.replica_rows_on_storage(1)) == ["a", "b"]
    assert inv.storages[1].used == 107 and inv.storages[1].replica_count == 2
    assert inv.storages[2].used == 100  # unmeasured replica counts its item's size
    assert inv.replica_row(a.oid, 2) is not None and inv.replica_row(b.oid, 2) is None
    assert inv.counts.replicas == 3


@pytest.mark.parametrize(("storages", "phase"), [
    ((), "PLASMA"), ((5,), "PLASMA"), ((1,), "GAS"), ((1, 2), "LIQUID"), ((3,), "LIQUID"),
    ((1, 3), "LIQUID"), ((3, 3), "SOLID"), ((1, 2, 3), "SOLID"), ((4,), "SOLID"),
])
def test_current_phase_follows_the_ska_weights(inv, storages, phase):
    rec = item("p")
    row = inv.add_item(rec)
    # two copies on one storage cannot exist; use distinct storages of the same phase
    phase_twin = {3: 3}
    seen = set()
    for sid in storages:
        if sid in seen:
            sid = inv.add_storage(StorageRecord(10 + len(seen), f"t{len(seen)}", "posix", "/t",
                                                1, inv.storages[phase_twin[sid]].phase, "online",
                                                {}, {}, 0.0)).id
        seen.add(sid)
        inv.add_replica(ReplicaRecord(rec.oid, sid, None, model.COMPLETE, 10, None, 1.0, None,
                                      None))
    assert model.PHASES[inv.current_phase(row)] == phase


def test_incomplete_copies_do_not_count_for_the_phase(inv):
    rec = item("q")
    row = inv.add_item(rec)
    inv.add_replica(ReplicaRecord(rec.oid, 4, None, model.REPLICA_STATE["copying"], None, None,
                                  1.0, None, None))
    assert model.PHASES[inv.current_phase(row)] == "PLASMA"


def test_uids_name_their_item_and_storage():
    oid = model.new_oid()
    assert model.is_oid(oid)
    uid = model.replica_uid(oid, 4242)
    assert model.split_uid(uid) == (oid, 4242)
    assert model.parse_uuid(model.format_uuid(uid)) == uid


def test_queued_operations_follow_the_operations_states():
    """The file operations engine reads its work from ``queued_operations`` (oldest first)."""
    import dataclasses

    from inventory.objects import Operation

    inv = Inventory()
    ops = [Operation(i, "copy", model.new_oid(), None, 1, "dealer", "queued", 0, None, 0.0, 0.0)
           for i in (3, 1, 2)]
    inv.load_objects(ops)
    assert list(inv.queued_operations) == [1, 2, 3]
    inv.put_object(dataclasses.replace(ops[1], state="running"))  # id 1
    inv.put_object(dataclasses.replace(ops[0], state="done"))  # id 3
    assert list(inv.queued_operations) == [2]
    inv.put_object(dataclasses.replace(ops[1], state="queued", attempts=1))  # retried
    assert list(inv.queued_operations) == [1, 2]
    assert inv.operations[1].attempts == 1


def _seen(inv: Inventory) -> tuple:
    """Everything the inventory says about replicas, independent of row numbers."""
    from inventory.feed import replica_rows_wire

    per_item = sorted((inv.i_name[r], sorted(inv.r_storage[x] for x in inv.replica_rows_of_item(r)))
                      for r in inv.item_rows())
    per_storage = sorted((sid, sorted(inv.i_name[inv.r_item[x]]
                                      for x in inv.replica_rows_on_storage(sid)),
                          s.used, s.replica_count) for sid, s in inv.storages.items())
    return (sorted(replica_rows_wire(inv, 0, len(inv.r_item))), per_item, per_storage,
            inv.counts.replicas)


def test_rows_of_removed_replicas_are_reused_and_nothing_else_changes(inv):
    """Removed replicas leave rows that new ones take: a server deleting and copying for months
    does not grow; the inventory reads exactly as one built from the surviving records."""
    items = [item(f"r/{i}", size=10 + i) for i in range(6)]
    inv.add_items(items)
    records = {(it.oid, sid): ReplicaRecord(it.oid, sid, f"/u/{i}" if i == 2 else None,
                                            model.COMPLETE, None if i == 3 else 10 + i,
                                            f"{i:08x}", 1.0, 99.0 if i == 4 else None, None)
               for i, it in enumerate(items) for sid in (1, 2)}
    inv.add_replicas(list(records.values()))
    width = len(inv.r_item)
    for key in [(items[0].oid, 1), (items[2].oid, 2), (items[3].oid, 1), (items[5].oid, 2)]:
        inv.remove_replica(inv.replica_row(*key))
        del records[key]
    assert len(inv.free_replica_rows) == 4
    new = [ReplicaRecord(items[0].oid, 1, None, model.REPLICA_STATE["copying"], None, None,
                         2.0, None, None),
           ReplicaRecord(items[1].oid, 3, "/elsewhere", model.COMPLETE, 11, "0000000b", 2.0,
                         5.0, 3.0)]
    rows = inv.add_replicas(new)
    assert len(inv.r_item) == width and len(inv.free_replica_rows) == 2  # two rows reused
    assert [inv.replica_record(r) for r in rows] == new
    more = [ReplicaRecord(items[i].oid, 4, None, model.COMPLETE, 1, None, 3.0, None, None)
            for i in range(4)]
    inv.add_replicas(more)  # two into free rows, two appended
    assert len(inv.r_item) == width + 2 and not inv.free_replica_rows
    records.update({(r.oid, r.storage_id): r for r in [*new, *more]})
    fresh = Inventory()
    for sid in inv.storages:
        fresh.add_storage(inv.storages[sid].record())
    fresh.add_items(items)
    fresh.add_replicas(list(records.values()))
    assert _seen(inv) == _seen(fresh)


@settings(max_examples=fuzz_budget(500), deadline=None)
@given(st.integers(0, (1 << 128) - 1), st.sampled_from(["canonical", "upper", "braces", "hex"]))
def test_parse_uuid_reads_what_uuid_reads(value, form):
    text = str(uuid.UUID(int=value))
    text = {"canonical": text, "upper": text.upper(), "braces": "{" + text + "}",
            "hex": text.replace("-", "")}[form]
    assert model.parse_uuid(text) == value


@pytest.mark.parametrize("text", [
    "", "x", "00000000-0000-0000-0000-00000000000", "00000000-0000-0000-0000-00000000000g",
    "0000000000-00-0000-0000-000000000000", "00000000-0000-0000-0000-0000000000000",
    "g0000000-0000-0000-0000-000000000000", "+0000000-0000-0000-0000-000000000000",
    "0000000_-0000-0000-0000-000000000000", "12345678-1234-1234-1234-123456789aBc",
])
def test_parse_uuid_agrees_with_uuid_on_odd_texts(text):
    try:
        expected = uuid.UUID(text).int
    except ValueError:
        with pytest.raises(ValueError):
            model.parse_uuid(text)
    else:
        assert model.parse_uuid(text) == expected
