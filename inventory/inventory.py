"""The in-memory inventory: every storage, item and replica, indexed for the queries users make.

Items and replicas are stored column-wise (one ``array`` or list per field, a row number per
object) rather than one Python object each: a ``__slots__`` object with its own indexes costs
~500 bytes per replica, the columns about half of that (docs/benchmarks.md has the measurement).

Only the scheduler's writer calls the mutating methods, and only after the database committed the
change; they never await, so a reader running on the event loop always sees a whole transaction or
none of it. Validation lives in ``inventory.writes``: these methods trust their input.
"""

from __future__ import annotations

import fnmatch
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedList

from inventory import model
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord

NONE = -1  # "no row" in link columns
_NAN = model.NO_TIME
_intern = sys.intern


def _time(value: float | None) -> float:
    return _NAN if value is None else value


@dataclass(slots=True)
class Storage:
    """A storage volume. Few of them exist, so a plain object each is fine."""

    id: int
    name: str
    kind: str
    root: str
    capacity: int
    phase: int
    status: str
    attributes: dict[str, Any]
    config: dict[str, Any]
    created: float
    # maintained by the inventory:
    used: int = 0
    replica_count: int = 0
    head: int = NONE  # first replica row on this storage (doubly linked list)

    def record(self) -> StorageRecord:
        return StorageRecord(self.id, self.name, self.kind, self.root, self.capacity, self.phase,
                             self.status, self.attributes, self.config, self.created)


@dataclass(slots=True)
class Counts:
    items: int = 0
    replicas: int = 0
    items_by_state: list[int] = field(default_factory=lambda: [0] * len(model.ITEM_STATES))


class Inventory:
    """Columns, indexes and the version of the last committed transaction applied to them."""

    def __init__(self) -> None:
        self.version = 0
        self.storages: dict[int, Storage] = {}
        self.storage_by_name: dict[str, Storage] = {}
        self.counts = Counts()
        # item columns
        self.i_oid: list[int] = []
        self.i_name: list[str] = []
        self.i_version = array("l")
        self.i_type = bytearray()
        self.i_state = bytearray()
        self.i_target = bytearray()
        self.i_size = array("q")  # -1: unknown
        self.i_checksum: list[str | None] = []
        self.i_method: list[str | None] = []
        self.i_metadata: list[dict[str, Any] | None] = []
        self.i_parent = array("l")
        self.i_created = array("d")
        self.i_expire = array("d")
        self.i_access_count = array("q")
        self.i_last_access = array("d")
        self.i_owner: list[str | None] = []
        self.i_group: list[str | None] = []
        self.i_first_replica = array("l")
        self.i_older = array("l")  # next older version of the same name
        # replica columns
        self.r_item = array("l")
        self.r_storage = array("H")
        self.r_state = bytearray()
        self.r_size = array("q")
        self.r_checksum: list[str | None] = []
        self.r_uri: list[str | None] = []
        self.r_created = array("d")
        self.r_expire = array("d")
        self.r_verified = array("d")
        self.r_next_in_item = array("l")
        self.r_prev_on_storage = array("l")
        self.r_next_on_storage = array("l")
        self._free_replica_rows: list[int] = []
        # indexes
        self.by_oid: dict[int, int] = {}
        self.latest_by_name: dict[str, int] = {}
        # Only the selective states are indexed; READY is nearly everything and is scanned.
        self.by_state: dict[int, set[int]] = {
            s: set() for s in range(len(model.ITEM_STATES)) if s != model.READY
        }
        self.expiry: SortedList = SortedList()  # (expire_at, row) of items with an expiry
        self.children: dict[int, list[int]] = {}

    # ---------------------------------------------------------------- storages

    def add_storage(self, rec: StorageRecord) -> Storage:
        storage = Storage(*rec)
        self.storages[storage.id] = storage
        self.storage_by_name[storage.name] = storage
        return storage

    def next_storage_id(self) -> int:
        return max(self.storages, default=0) + 1

    # ---------------------------------------------------------------- items

    def add_item(self, rec: ItemRecord) -> int:
        row = len(self.i_oid)
        self.i_oid.append(rec.oid)
        name = rec.item_name
        self.i_name.append(name)
        self.i_version.append(rec.item_version)
        self.i_type.append(rec.item_type)
        self.i_state.append(rec.state)
        self.i_target.append(rec.target_phase)
        self.i_size.append(-1 if rec.size is None else rec.size)
        self.i_checksum.append(rec.checksum)
        self.i_method.append(None if rec.checksum_method is None else _intern(rec.checksum_method))
        self.i_metadata.append(rec.metadata or None)
        parent = NONE if rec.parent_oid is None else self.by_oid[rec.parent_oid]
        self.i_parent.append(parent)
        self.i_created.append(rec.created)
        self.i_expire.append(_time(rec.expire_at))
        self.i_access_count.append(rec.access_count)
        self.i_last_access.append(_time(rec.last_access))
        self.i_owner.append(None if rec.owner is None else _intern(rec.owner))
        self.i_group.append(None if rec.group is None else _intern(rec.group))
        self.i_first_replica.append(NONE)
        self.by_oid[rec.oid] = row
        self._link_version(row, name, rec.item_version)
        if rec.state != model.READY:
            self.by_state[rec.state].add(row)
        if rec.expire_at is not None:
            self.expiry.add((rec.expire_at, row))
        if parent != NONE:
            self.children.setdefault(parent, []).append(row)
        counts = self.counts
        counts.items += 1
        counts.items_by_state[rec.state] += 1
        return row

    def _link_version(self, row: int, name: str, version: int) -> None:
        latest = self.latest_by_name.get(name, NONE)
        if latest == NONE or self.i_version[latest] < version:
            self.i_older.append(latest)
            self.latest_by_name[name] = row
            return
        # An older version arriving late (e.g. loaded out of order): insert it in the chain.
        self.i_older.append(NONE)
        prev, cur = NONE, latest
        while cur != NONE and self.i_version[cur] > version:
            prev, cur = cur, self.i_older[cur]
        self.i_older[row] = cur
        self.i_older[prev] = row

    def item_record(self, row: int) -> ItemRecord:
        parent = self.i_parent[row]
        size = self.i_size[row]
        return ItemRecord(
            self.i_oid[row], self.i_name[row], self.i_version[row], self.i_type[row],
            self.i_state[row], self.i_target[row], None if size < 0 else size,
            self.i_checksum[row], self.i_method[row], self.i_metadata[row],
            None if parent == NONE else self.i_oid[parent], self.i_created[row],
            model.opt_time(self.i_expire[row]), self.i_access_count[row],
            model.opt_time(self.i_last_access[row]), self.i_owner[row], self.i_group[row],
        )

    def row_of_oid(self, oid: int) -> int | None:
        return self.by_oid.get(oid)

    def row_of_name(self, name: str, version: int | None = None) -> int | None:
        """Row of ``name`` at ``version``, or of its latest version when ``version`` is None."""
        row = self.latest_by_name.get(name, NONE)
        if version is None:
            return None if row == NONE else row
        while row != NONE and self.i_version[row] > version:
            row = self.i_older[row]
        return row if row != NONE and self.i_version[row] == version else None

    def versions_of(self, name: str) -> Iterator[int]:
        """Rows of every version of ``name``, newest first."""
        row = self.latest_by_name.get(name, NONE)
        while row != NONE:
            yield row
            row = self.i_older[row]

    def rows_in_state(self, state: int) -> Iterable[int]:
        if state == model.READY:
            st = self.i_state
            return (row for row in range(len(st)) if st[row] == model.READY)
        return sorted(self.by_state[state])

    def rows_expiring_before(self, ts: float) -> Iterator[int]:
        for _expire, row in self.expiry.irange(maximum=(ts, sys.maxsize), inclusive=(True, False)):
            yield row

    def child_rows(self, row: int) -> list[int]:
        return self.children.get(row, [])

    def rows_matching_name(self, pattern: str, latest_only: bool = True) -> Iterator[int]:
        """Rows whose name matches a glob (``*``, ``?``, ``[...]``), in name order."""
        if not any(c in pattern for c in "*?["):
            rows = [] if pattern not in self.latest_by_name else [self.latest_by_name[pattern]]
        else:
            prefix = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
            match = fnmatch.fnmatchcase
            rows = [
                row for name, row in self.latest_by_name.items()
                if name.startswith(prefix) and match(name, pattern)
            ]
            rows.sort(key=self.i_name.__getitem__)
        for row in rows:
            if latest_only:
                yield row
            else:
                yield from self.versions_of(self.i_name[row])

    # ---------------------------------------------------------------- replicas

    def add_replica(self, rec: ReplicaRecord) -> int:
        item = self.by_oid[rec.oid]
        storage = self.storages[rec.storage_id]
        free = self._free_replica_rows
        if free:
            row = free.pop()
            self.r_item[row] = item
            self.r_storage[row] = rec.storage_id
            self.r_state[row] = rec.state
            self.r_size[row] = -1 if rec.size is None else rec.size
            self.r_checksum[row] = rec.checksum
            self.r_uri[row] = rec.uri
            self.r_created[row] = rec.created
            self.r_expire[row] = _time(rec.expire_at)
            self.r_verified[row] = _time(rec.last_verified)
            self.r_next_in_item[row] = self.i_first_replica[item]
            self.r_prev_on_storage[row] = NONE
            self.r_next_on_storage[row] = storage.head
        else:
            row = len(self.r_item)
            self.r_item.append(item)
            self.r_storage.append(rec.storage_id)
            self.r_state.append(rec.state)
            self.r_size.append(-1 if rec.size is None else rec.size)
            self.r_checksum.append(rec.checksum)
            self.r_uri.append(rec.uri)
            self.r_created.append(rec.created)
            self.r_expire.append(_time(rec.expire_at))
            self.r_verified.append(_time(rec.last_verified))
            self.r_next_in_item.append(self.i_first_replica[item])
            self.r_prev_on_storage.append(NONE)
            self.r_next_on_storage.append(storage.head)
        self.i_first_replica[item] = row
        if storage.head != NONE:
            self.r_prev_on_storage[storage.head] = row
        storage.head = row
        storage.replica_count += 1
        if rec.size is not None:
            storage.used += rec.size
        self.counts.replicas += 1
        return row

    def replica_rows_of_item(self, item_row: int) -> Iterator[int]:
        row = self.i_first_replica[item_row]
        nxt = self.r_next_in_item
        while row != NONE:
            yield row
            row = nxt[row]

    def replica_rows_on_storage(self, storage_id: int) -> Iterator[int]:
        row = self.storages[storage_id].head
        nxt = self.r_next_on_storage
        while row != NONE:
            yield row
            row = nxt[row]

    def replica_row(self, oid: int, storage_id: int) -> int | None:
        item = self.by_oid.get(oid)
        if item is None:
            return None
        for row in self.replica_rows_of_item(item):
            if self.r_storage[row] == storage_id:
                return row
        return None

    def replica_record(self, row: int) -> ReplicaRecord:
        size = self.r_size[row]
        return ReplicaRecord(
            self.i_oid[self.r_item[row]], self.r_storage[row], self.r_uri[row], self.r_state[row],
            None if size < 0 else size, self.r_checksum[row], self.r_created[row],
            model.opt_time(self.r_expire[row]), model.opt_time(self.r_verified[row]),
        )

    def current_phase(self, item_row: int) -> int:
        """SKA DLM phase from the phases of the storages holding complete copies."""
        weight = 0
        storages = self.storages
        for row in self.replica_rows_of_item(item_row):
            if self.r_state[row] == model.COMPLETE:
                weight += model.PHASE_WEIGHT[storages[self.r_storage[row]].phase]
        return model.phase_of_weights(weight)

    # ---------------------------------------------------------------- whole-inventory iteration

    def item_rows(self) -> range:
        return range(len(self.i_oid))

    def replica_rows(self) -> Iterator[int]:
        free = set(self._free_replica_rows)
        return (row for row in range(len(self.r_item)) if row not in free)
