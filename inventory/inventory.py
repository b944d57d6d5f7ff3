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
import functools
import re
import sys
from array import array
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sortedcontainers import SortedDict, SortedList, SortedSet

from inventory import model
from inventory.objects import (
    OPERATION_STATES,
    CopyRequest,
    Cycle,
    IdFloor,
    Operation,
    Row,
    Token,
)
from inventory.pins import PINNING_STATES
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from inventory.rowsets import RowSet
from inventory.storage import paths
from inventory.storage.errors import InvalidPath

NONE = -1  # "no row" in link columns
_NAN = model.NO_TIME
_intern = sys.intern
_LOWER_HEX = re.compile(r"[0-9a-f]+")
_DELETED = model.REPLICA_STATE["deleted"]
FINISHED_OPERATIONS = frozenset({"done", "failed", "cancelled"})
_PHASE_OF_WEIGHT = np.array([model.phase_of_weights(w) for w in range(5)], dtype=np.uint8)


def _literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard (``[x]`` escapes count as the letter)."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c in "*?":
            break
        if c == "[":
            end = pattern.find("]", i + 2)
            if end == i + 2 and pattern[i + 1] != "!":
                out.append(pattern[i + 1])
                i = end + 1
                continue
            break
        out.append(c)
        i += 1
    return "".join(out)


def _time(value: float | None) -> float:
    return _NAN if value is None else value


@dataclass(slots=True)
class Reliability:
    """What the file operations engine measured on a storage since the server started:
    Dealer prefers storages that copy successfully and fast (Dynamo's principle 8)."""

    copies_ok: int = 0
    copies_failed: int = 0
    deletions_ok: int = 0
    deletions_failed: int = 0
    bytes_copied: int = 0
    copy_seconds: float = 0.0
    consecutive_failures: int = 0
    unreachable_until: float = 0.0

    @property
    def success_rate(self) -> float | None:
        done = self.copies_ok + self.copies_failed
        return None if done == 0 else self.copies_ok / done

    @property
    def throughput(self) -> float | None:
        """Bytes per second of successful copies written to the storage."""
        return None if self.copy_seconds <= 0 else self.bytes_copied / self.copy_seconds


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
    reliability: Reliability = field(default_factory=lambda: Reliability())

    def record(self) -> StorageRecord:
        return StorageRecord(self.id, self.name, self.kind, self.root, self.capacity, self.phase,
                             self.status, self.attributes, self.config, self.created)


@functools.lru_cache(maxsize=256)
def _hex(value: int, length: int) -> str:
    # An item and its replicas usually share one checksum: an answer formats it once.
    return f"{value:0{length}x}"


class Checksums:
    """Item checksums, packed: a hex digest of up to 16 digits (adler32, crc32c, xxh64: nearly
    all of them) is kept as an 8-byte int and its length, not as a ~60-byte string."""

    __slots__ = ("_length", "_other", "_value")

    def __init__(self) -> None:
        self._value = array("Q")
        self._length = bytearray()  # 0: none; 1-16: hex digits; 255: in _other
        self._other: dict[int, str] = {}

    def extend(self, checksums: Sequence[str | None]) -> None:
        row = len(self._length)
        value, length, other = self._value.append, self._length.append, self._other
        match = _LOWER_HEX.fullmatch
        for checksum in checksums:
            if checksum is None:
                value(0)
                length(0)
            elif len(checksum) <= 16 and match(checksum):
                value(int(checksum, 16))
                length(len(checksum))
            else:
                value(0)
                length(255)
                other[row] = checksum
            row += 1

    def set(self, row: int, checksum: str | None) -> None:
        self._other.pop(row, None)
        if checksum is None:
            self._value[row], self._length[row] = 0, 0
        elif 0 < len(checksum) <= 16 and _LOWER_HEX.fullmatch(checksum):
            self._value[row], self._length[row] = int(checksum, 16), len(checksum)
        else:
            self._value[row], self._length[row] = 0, 255
            self._other[row] = checksum

    def get(self, row: int) -> str | None:
        length = self._length[row]
        if length == 0:
            return None
        if length == 255:
            return self._other[row]
        return _hex(self._value[row], length)


_WIDER = {"B": "H", "H": "I"}


class Names:
    """A column of strings drawn from a small vocabulary (owners, groups): a 4-byte code per
    row into one table of distinct names, instead of a pointer (or a dict entry) per row.

    ``typecode`` "B" starts at one byte per row and widens (to 2, then 4 bytes) when the table
    outgrows it: for vocabularies that stay tiny (the token names that registered items), it
    saves 3 bytes per item, 30 MB at 10M items. The column snapshot sends the 4-byte kind as
    it is, so owners and groups keep "I".
    """

    __slots__ = ("_codes", "_index", "_limit", "_names")

    def __init__(self, typecode: str = "I") -> None:
        self._codes = array(typecode)
        self._limit = 1 << (8 * self._codes.itemsize)
        self._names: list[str | None] = [None]
        self._index: dict[str | None, int] = {None: 0}

    def _code(self, name: str | None) -> int:
        code = self._index.get(name)
        if code is None:
            code = self._index[name] = len(self._names)
            self._names.append(name)
            if code >= self._limit:
                self._codes = array(_WIDER[self._codes.typecode], self._codes)
                self._limit = 1 << (8 * self._codes.itemsize)
        return code

    def extend(self, names: Sequence[str | None]) -> None:
        code = self._code
        codes = [code(n or None) for n in names]  # may widen self._codes: look it up after
        self._codes.extend(codes)

    def set(self, row: int, name: str | None) -> None:
        self._codes[row] = self._code(name or None)

    def get(self, row: int) -> str | None:
        return self._names[self._codes[row]]


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
        # Item columns. Links between rows are 4-byte ints ("i"); fields most items leave unset
        # live in sparse dicts keyed by row, so they cost nothing where unset.
        self.i_oid: list[int] = []  # the same int objects are the keys of by_oid
        self.i_name: list[str] = []
        self.i_version = array("i")
        self.i_type = bytearray()
        self.i_state = bytearray()
        self.i_target = bytearray()
        self.i_size = array("q")  # -1: unknown
        self.i_checksum = Checksums()
        self.i_method = bytearray()  # index into self.methods; 0: none
        self.methods: list[str | None] = [None, model.DEFAULT_CHECKSUM_METHOD]
        self.i_metadata: dict[int, dict[str, Any]] = {}
        self.i_parent = array("i")
        self.i_created = array("d")
        self.i_expire = array("d")
        self.i_access_count = array("q")
        self.i_last_access = array("d")
        self.i_owner = Names()
        self.i_group = Names()
        self.i_registered_by = Names("B")  # the token that created the item; never changes
        self.i_first_replica = array("i")
        self.i_older = array("i")  # next older version of the same name
        # replica columns
        self.r_item = array("i")
        self.r_storage = array("H")
        self.r_state = bytearray()
        self.r_size = array("q")
        self.r_checksum = Checksums()  # as verified; nearly every replica has one
        self.r_uri: dict[int, str] = {}  # where not the storage's default location
        # storage id -> {uri in normal form: row} of the replicas registered at a uri: with the
        # invertible default layout (storage.paths.default_owners) it answers "which replica
        # names this file" in a few dict lookups, with nothing kept per default-path replica.
        self.uri_index: dict[int, dict[str, int]] = {}
        self.r_created = array("d")
        self.r_expire: dict[int, float] = {}  # temporary copies only
        self.r_verified = array("d")
        self.r_next_in_item = array("i")
        self.r_prev_on_storage = array("i")
        self.r_next_on_storage = array("i")
        self.free_replica_rows: list[int] = []  # rows removed replicas left empty, for reuse
        # indexes
        self.by_oid: dict[int, int] = {}
        self.latest_by_name: dict[str, int] = {}
        # Only the selective states are indexed; READY is nearly everything and is scanned.
        self.by_state: dict[int, set[int]] = {
            s: set() for s in range(len(model.ITEM_STATES)) if s != model.READY
        }
        self.expiry: SortedList = SortedList()  # (expire_at, row) of items with an expiry
        self.children: dict[int, list[int]] = {}  # members in row order (rows only grow)
        # Listing indexes (docs/architecture.md has their cost per replica): a page of
        # GET /v1/items walks one of them from its cursor instead of every row.
        self.storage_items: dict[int, RowSet] = {}  # storage id -> rows of items with a replica
        self.i_phase = bytearray()  # current_phase of each item, kept as replicas change
        self.name_index: SortedList = SortedList()  # every name (latest_by_name's keys), sorted
        self.with_metadata = RowSet()  # rows of items that have metadata
        self._deferred: list[str] | None = None  # names added during a bulk load, unsorted
        self._phases_stale = False
        # small tables (inventory/objects.py)
        self.tokens: dict[str, Token] = {}
        self.token_by_hash: dict[str, Token] = {}
        self.token_generation = 0  # counts token changes: read-only servers reload on a change
        self.requests: dict[int, CopyRequest] = {}
        # per item oid, the ids of its pending copy requests: a copy that completes closes the
        # requests it serves without a look at every request ever made (inventory.requests)
        self.open_requests: dict[int, set[int]] = {}
        self.request_scan: dict[int, int] = {}  # container request -> first member to check
        # the requests that pin copies (open or served, with a pin_until: inventory.pins), so
        # that a Detox plan's apply and the snapshots read them without a walk over every
        # request ever made
        self.pinning_requests: dict[int, CopyRequest] = {}
        # Operations in id order (a page of GET /v1/operations starts at its cursor in
        # O(log n)): the live ones (queued, running) and the finished ones of the last
        # ``retention`` seconds; older finished ones are in the database only (the sweep of
        # inventory.retention drops them, the load skips them).
        self.operations: SortedDict = SortedDict()
        # per state, the ids of its operations, in order: "queued" is where the file
        # operations engine looks for work (hundreds of thousands may be queued), the others
        # answer ?state= pages without a walk over every operation
        self.operations_by_state: dict[str, SortedSet] = {
            s: SortedSet() for s in OPERATION_STATES}
        self.queued_operations: SortedSet = self.operations_by_state["queued"]
        # target storage id -> ids of its queued operations, in order: the engine starts work
        # per storage without walking operations whose storages are busy
        self.queued_by_target: dict[int, SortedSet] = {}
        # finished operations, id -> when they finished, oldest first: what the sweep drops
        self.finished_operations: OrderedDict[int, float] = OrderedDict()
        self.retention: float | None = None  # seconds finished operations stay; None: forever
        # whether the database holds finished operations memory does not (some were dropped
        # or not loaded): only then do their queries read the database too
        self.operations_in_db_only = False
        self.cycles: dict[int, Cycle] = {}
        # per table, the highest id given so far (kept up to date by put_object, and raised
        # by IdFloor rows): a new id is one more, without a scan of every operation ever queued
        self.last_ids: dict[str, int] = {}

    # ---------------------------------------------------------------- storages

    def add_storage(self, rec: StorageRecord) -> Storage:
        storage = Storage(*rec)
        self.storages[storage.id] = storage
        self.storage_by_name[storage.name] = storage
        self._items_on(storage.id)
        return storage

    def storage_history(self, storage_id: int) -> tuple[list[int], list[int]]:
        """Ids of the operations and copy requests that name a storage."""
        ops = [op.id for op in self.operations.values()
               if op.target_id == storage_id or op.source_id == storage_id]
        requests = [r.id for r in self.requests.values() if r.storage_id == storage_id]
        return ops, requests

    def remove_storage(self, storage_id: int) -> None:
        """Forget an empty storage and the operations and requests that named it (the primary
        and a mirror applying the feed both call this: the feed says only "removed")."""
        storage = self.storages.pop(storage_id)
        self.storage_items.pop(storage_id, None)
        if self.storage_by_name.get(storage.name) is storage:
            del self.storage_by_name[storage.name]
        ops, requests = self.storage_history(storage_id)
        for op_id in ops:
            self.forget_operation(op_id)
        for request_id in requests:
            self._forget_open_request(self.requests.pop(request_id))
            self.pinning_requests.pop(request_id, None)

    def _forget_open_request(self, request: CopyRequest) -> None:
        self.request_scan.pop(request.id, None)
        ids = self.open_requests.get(request.oid)
        if ids is not None:
            ids.discard(request.id)
            if not ids:
                del self.open_requests[request.oid]

    def next_storage_id(self) -> int:
        return max(self.storages, default=0) + 1

    def update_storage(self, rec: StorageRecord) -> Storage:
        storage = self.storages[rec.id]
        old_phase = storage.phase
        (_id, storage.name, storage.kind, storage.root, storage.capacity, storage.phase,
         storage.status, storage.attributes, storage.config, storage.created) = rec
        if storage.phase != old_phase and storage.replica_count:
            self._phases_stale = True  # every item with a copy there may change phase
            if self._deferred is None:
                self.recompute_phases()
        return storage

    def last_copies_on(self, storage_id: int) -> int:
        """Live items (not EXPIRED or DELETED) whose only complete copy is on this storage."""
        count = 0
        state, item_state = self.r_state, self.i_state
        r_item, r_storage = self.r_item, self.r_storage
        gone = (model.EXPIRED, model.DELETED)
        for row in self.replica_rows_on_storage(storage_id):
            if state[row] != model.COMPLETE or item_state[r_item[row]] in gone:
                continue
            if not any(state[r] == model.COMPLETE and r_storage[r] != storage_id
                       for r in self.replica_rows_of_item(r_item[row])):
                count += 1
        return count

    # ---------------------------------------------------------------- small tables

    def load_objects(self, objects: Iterable[Row]) -> None:
        for obj in objects:
            self.put_object(obj)

    def put_object(self, obj: Row) -> None:
        """Insert or replace a token, copy request, operation or cycle."""
        match obj:
            case Token():
                old = self.tokens.get(obj.name)
                if old is not None:
                    self.token_by_hash.pop(old.sha256, None)
                self.tokens[obj.name] = obj
                self.token_by_hash[obj.sha256] = obj
                self.token_generation += 1
            case CopyRequest():
                old = self.requests.get(obj.id)
                if old is not None:
                    self._forget_open_request(old)
                self.requests[obj.id] = obj
                if obj.state == "pending":
                    self.open_requests.setdefault(obj.oid, set()).add(obj.id)
                if obj.pin_until is not None and obj.state in PINNING_STATES:
                    self.pinning_requests[obj.id] = obj
                else:
                    self.pinning_requests.pop(obj.id, None)
                self._saw_id(obj)
            case Operation():
                self._put_operation(obj)
            case Cycle():
                self.cycles[obj.id] = obj
                self._saw_id(obj)
            case IdFloor():
                self.last_ids[obj.name] = max(self.last_ids.get(obj.name, 0), obj.value)
            case _:
                raise TypeError(f"not an inventory object: {obj!r}")

    def _put_operation(self, op: Operation) -> None:
        old = self.operations.get(op.id)
        if old is not None and old.state != op.state:
            self.operations_by_state[old.state].discard(op.id)
            if old.state == "queued":
                self._unqueue(old)
        self.operations[op.id] = op
        self.operations_by_state[op.state].add(op.id)
        if op.state == "queued":
            queue = self.queued_by_target.get(op.target_id)
            if queue is None:
                queue = self.queued_by_target[op.target_id] = SortedSet()
            queue.add(op.id)
        self._saw_id(op)
        if op.state in FINISHED_OPERATIONS:
            self.finished_operations.pop(op.id, None)
            self.finished_operations[op.id] = op.updated
        elif old is not None and old.state in FINISHED_OPERATIONS:
            self.finished_operations.pop(op.id, None)  # (a finished operation never returns)

    def forget_operation(self, op_id: int) -> Operation | None:
        """Drop an operation from memory (the database keeps it, or the caller deletes it)."""
        op = self.operations.pop(op_id, None)
        if op is not None:
            self.operations_by_state[op.state].discard(op_id)
            self.finished_operations.pop(op_id, None)
            if op.state == "queued":
                self._unqueue(op)
        return op

    def _unqueue(self, op: Operation) -> None:
        queue = self.queued_by_target.get(op.target_id)
        if queue is not None:
            queue.discard(op.id)
            if not queue:
                del self.queued_by_target[op.target_id]

    def drop_finished_operations(self, before: float, limit: int) -> int:
        """Drop at most ``limit`` operations that finished before ``before`` (epoch seconds),
        oldest first; the number dropped. They stay in the database, where the queries for
        finished operations find them (``operations_in_db_only``)."""
        finished = self.finished_operations
        dropped = 0
        while finished and dropped < limit:
            op_id, ended = next(iter(finished.items()))
            if ended >= before:
                break
            self.forget_operation(op_id)
            dropped += 1
        if dropped:
            self.operations_in_db_only = True
        return dropped

    def operations_after(self, after: int, state: str | None = None) -> Iterator[Operation]:
        """Operations in memory with an id above ``after`` (in ``state``), in id order:
        O(log n) to the first, then one step each."""
        ids = self.operations.irange(minimum=after + 1) if state is None \
            else self.operations_by_state[state].irange(minimum=after + 1)
        return map(self.operations.__getitem__, ids)

    def _saw_id(self, obj: CopyRequest | Operation | Cycle) -> None:
        if obj.id > self.last_ids.get(obj.table, 0):
            self.last_ids[obj.table] = obj.id

    def remove_token(self, name: str) -> None:
        token = self.tokens.pop(name)
        self.token_by_hash.pop(token.sha256, None)
        self.token_generation += 1

    # ---------------------------------------------------------------- items

    def add_item(self, rec: ItemRecord) -> int:
        return self.add_items([rec]).start

    def add_items(self, records: Sequence[ItemRecord]) -> range:
        """Append items column by column (a bulk insert or a load chunk); returns their rows.

        Column-wise ``extend`` from transposed records is several times faster than appending
        field by field per row, which is what makes loading millions of items quick.
        """
        start = len(self.i_oid)
        rows = list(range(start, start + len(records)))  # shared by both indexes
        if not rows:
            return range(start, start)
        (oid, name, version, itype, state, target, size, checksum, method, metadata, parent,
         created, expire, access, last_access, owner, group, registered_by) = zip(*records,
                                                                                  strict=True)
        self.by_oid.update(zip(oid, rows, strict=True))  # before parents are resolved
        self.i_oid.extend(oid)
        self.i_name.extend(name)
        self.i_version.extend(version)
        self.i_type.extend(itype)
        self.i_state.extend(state)
        self.i_target.extend(target)
        self.i_size.extend([-1 if x is None else x for x in size])
        self.i_checksum.extend(checksum)
        code = self._method_code
        self.i_method.extend([1 if m == model.DEFAULT_CHECKSUM_METHOD else code(m)
                              for m in method])
        by_oid = self.by_oid
        parents = [NONE if p is None else by_oid[p] for p in parent]
        self.i_parent.extend(parents)
        self.i_created.extend(created)
        self.i_expire.extend([_NAN if x is None else x for x in expire])
        self.i_access_count.extend(access)
        self.i_last_access.extend([_NAN if x is None else x for x in last_access])
        self.i_first_replica.extend(array("i", [NONE]) * len(rows))
        self.i_older.extend(array("i", [NONE]) * len(rows))
        self.i_phase.extend(bytes(len(rows)))  # PLASMA (0): no complete copy yet
        with_meta = self.with_metadata.add
        for r, v in zip(rows, metadata, strict=True):
            if v:
                self.i_metadata[r] = v
                with_meta(r)
        self.i_owner.extend(owner)
        self.i_group.extend(group)
        self.i_registered_by.extend(registered_by)
        latest = self.latest_by_name
        claim = latest.setdefault
        new_names = []
        for row, item_name in zip(rows, name, strict=True):
            first = claim(item_name, row)
            if first != row:
                self._link_version(row, item_name, version[row - start], first)
            else:
                new_names.append(item_name)
        if self._deferred is not None:
            self._deferred.extend(new_names)
        else:
            self.name_index.update(new_names)
        counts = self.counts
        by_state = counts.items_by_state
        if state.count(model.READY) != len(rows):
            for row, st in zip(rows, state, strict=True):
                if st != model.READY:
                    self.by_state[st].add(row)
                by_state[st] += 1
        else:
            by_state[model.READY] += len(rows)
        self.expiry.update((e, r) for r, e in zip(rows, expire, strict=True) if e is not None)
        for row, p in zip(rows, parents, strict=True):
            if p != NONE:
                self.children.setdefault(p, []).append(row)
        counts.items += len(rows)
        return range(start, start + len(rows))

    def update_items(self, records: Sequence[ItemRecord]) -> None:
        """Replace the fields of existing items (name, version, type, parent and registered_by
        never change)."""
        by_oid, by_state, counts = self.by_oid, self.by_state, self.counts
        for rec in records:
            row = by_oid[rec.oid]
            old_state = self.i_state[row]
            if old_state != rec.state:
                if old_state != model.READY:
                    by_state[old_state].discard(row)
                if rec.state != model.READY:
                    by_state[rec.state].add(row)
                counts.items_by_state[old_state] -= 1
                counts.items_by_state[rec.state] += 1
                self.i_state[row] = rec.state
            old_expire = self.i_expire[row]
            if old_expire == old_expire:  # not NaN
                self.expiry.discard((old_expire, row))
            if rec.expire_at is not None:
                self.expiry.add((rec.expire_at, row))
            self.i_expire[row] = _time(rec.expire_at)
            self.i_target[row] = rec.target_phase
            self.i_size[row] = -1 if rec.size is None else rec.size
            self.i_checksum.set(row, rec.checksum)
            self.i_method[row] = self._method_code(rec.checksum_method)
            self.i_access_count[row] = rec.access_count
            self.i_last_access[row] = _time(rec.last_access)
            if rec.metadata:
                self.i_metadata[row] = rec.metadata
                self.with_metadata.add(row)
            elif self.i_metadata.pop(row, None) is not None:
                self.with_metadata.discard(row)
            self.i_owner.set(row, rec.owner)
            self.i_group.set(row, rec.group)

    def container_size(self, row: int) -> int:
        """Sum of the sizes of a container's members, recursively (unknown sizes count 0)."""
        total = 0
        stack = list(self.children.get(row, ()))
        while stack:
            member = stack.pop()
            if self.i_type[member] == model.CONTAINER:
                stack.extend(self.children.get(member, ()))
            else:
                total += max(self.i_size[member], 0)
        return total

    def _method_code(self, method: str | None) -> int:
        try:
            return self.methods.index(method)
        except ValueError:
            if len(self.methods) == 255:
                raise ValueError("more than 254 checksum methods") from None
            self.methods.append(_intern(method))
            return len(self.methods) - 1

    def _link_version(self, row: int, name: str, version: int, latest: int) -> None:
        """Put ``row`` into the newest-first chain of versions of ``name``."""
        if self.i_version[latest] < version:
            self.i_older[row] = latest
            self.latest_by_name[name] = row
            return
        # An older version arriving late (e.g. loaded out of order): insert it in the chain.
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
            self.i_checksum.get(row), self.methods[self.i_method[row]],
            self.i_metadata.get(row), None if parent == NONE else self.i_oid[parent],
            self.i_created[row], model.opt_time(self.i_expire[row]), self.i_access_count[row],
            model.opt_time(self.i_last_access[row]), self.i_owner.get(row), self.i_group.get(row),
            self.i_registered_by.get(row),
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

    # ---------------------------------------------------------------- listing indexes

    def defer_indexes(self) -> None:
        """Until ``settle_indexes``, the listing indexes only collect what is added (a load
        at start: one sort at the end instead of an insertion per row)."""
        if self._deferred is None:
            self._deferred = []
            for rows in (*self.storage_items.values(), self.with_metadata):
                rows.defer()

    def settle_indexes(self) -> None:
        """Bring the listing indexes up to date after ``defer_indexes`` (or a storage's phase
        change): the sort, once, of what a load added."""
        names, self._deferred = self._deferred, None
        if names:
            if len(names) * 4 >= len(self.name_index):
                self.name_index = SortedList([*self.name_index, *names])
            else:
                self.name_index.update(names)
        for rows in (*self.storage_items.values(), self.with_metadata):
            rows.settle()
        if self._phases_stale:
            self.recompute_phases()

    def recompute_phases(self) -> None:
        """``i_phase`` of every item from the replica columns at once (numpy): a load, or a
        storage whose phase changed (~0.1 s per 10M replicas instead of ~2 us a replica)."""
        n = len(self.i_phase)
        weight = np.zeros(max(self.storages, default=0) + 1, dtype=np.float64)
        for sid, storage in self.storages.items():
            weight[sid] = model.PHASE_WEIGHT[storage.phase]
        r_item = np.frombuffer(self.r_item, dtype=np.int32)
        r_storage = np.frombuffer(self.r_storage, dtype=np.uint16)
        r_state = np.frombuffer(self.r_state, dtype=np.uint8)
        live = (r_item >= 0) & (r_state == model.COMPLETE)
        total = np.bincount(r_item[live], weights=weight[r_storage[live]], minlength=n)
        del r_item, r_storage, r_state  # views that pin the columns' buffers
        phases = _PHASE_OF_WEIGHT[np.minimum(total, 4).astype(np.intp)]
        self.i_phase[:] = phases.tobytes()
        self._phases_stale = False

    def _items_on(self, storage_id: int) -> RowSet:
        rows = self.storage_items.get(storage_id)
        if rows is None:
            rows = self.storage_items[storage_id] = RowSet()
            if self._deferred is not None:
                rows.defer()
        return rows

    def _refresh_phase(self, item: int) -> None:
        if self._deferred is None and not self._phases_stale:
            self.i_phase[item] = self.current_phase(item)
        else:
            self._phases_stale = True

    def phases(self) -> bytearray:
        """``i_phase``, recomputed first if a load or a storage's phase change left it stale."""
        if self._phases_stale:
            self.recompute_phases()
        return self.i_phase

    def names_from(self, start: str) -> Iterator[str]:
        """Every name from ``start`` on (inclusive), in name order. Not to be kept across an
        await."""
        if self._deferred is not None:
            self.settle_indexes()
        return self.name_index.irange(minimum=start)

    def items_on_storage(self, storage_id: int) -> RowSet:
        """Rows of the items with a replica (any state) on the storage, ascending."""
        if self._deferred is not None:
            self.settle_indexes()
        return self._items_on(storage_id)

    def rows_in_state(self, state: int) -> Iterable[int]:
        if state == model.READY:
            st = self.i_state
            return (row for row in range(len(st)) if st[row] == model.READY)
        return sorted(self.by_state[state])

    def rows_expiring_before(self, ts: float) -> Iterator[int]:
        """Rows of items whose expiry time is strictly before ``ts``, soonest first."""
        for _expire, row in self.expiry.irange(maximum=(ts, NONE)):
            yield row

    def child_rows(self, row: int) -> list[int]:
        return self.children.get(row, [])

    def rows_matching_name(self, pattern: str, latest_only: bool = True) -> Iterator[int]:
        """Rows whose name matches a glob (``*``, ``?``, ``[...]``), in name order."""
        if not any(c in pattern for c in "*?["):
            rows = [] if pattern not in self.latest_by_name else [self.latest_by_name[pattern]]
        else:
            prefix = _literal_prefix(pattern)
            match = fnmatch.fnmatchcase
            latest = self.latest_by_name
            rows = []
            for name in self.names_from(prefix):
                if not name.startswith(prefix):
                    break
                if match(name, pattern):
                    rows.append(latest[name])
        for row in rows:
            if latest_only:
                yield row
            else:
                yield from self.versions_of(self.i_name[row])

    # ---------------------------------------------------------------- replicas

    def add_replica(self, rec: ReplicaRecord) -> int:
        return self.add_replicas([rec])[0]

    def add_replicas(self, records: Sequence[ReplicaRecord]) -> Sequence[int]:
        """Add replicas and return their rows: first into the rows removed replicas left
        empty (a server that runs for months deletes and copies millions), then appended
        column by column (the load at start, and large batches)."""
        free = self.free_replica_rows
        if not free:
            return self._append_replicas(records)
        reused = min(len(free), len(records))
        rows = [self._fill_free_row(rec, free.pop()) for rec in records[:reused]]
        if reused < len(records):
            rows.extend(self._append_replicas(records[reused:]))
        return rows

    def _fill_free_row(self, rec: ReplicaRecord, row: int) -> int:
        """One replica into an empty row, linked first in its item's and storage's lists."""
        item = self.by_oid[rec.oid]
        self.r_item[row] = item
        self.r_storage[row] = rec.storage_id
        self.r_state[row] = rec.state
        self.r_size[row] = -1 if rec.size is None else rec.size
        self.r_created[row] = rec.created
        self.r_verified[row] = _time(rec.last_verified)
        self.r_checksum.set(row, rec.checksum)
        for sparse, value in ((self.r_uri, rec.uri), (self.r_expire, rec.expire_at)):
            if value is not None:
                sparse[row] = value
        if rec.uri is not None:
            self._index_uri(row, rec.storage_id, rec.uri)
        self.r_next_in_item[row] = self.i_first_replica[item]
        self.i_first_replica[item] = row
        storage = self.storages[rec.storage_id]
        head = storage.head
        self.r_next_on_storage[row] = head
        self.r_prev_on_storage[row] = NONE
        if head != NONE:
            self.r_prev_on_storage[head] = row
        storage.head = row
        storage.replica_count += 1
        storage.used += self._replica_bytes(row)
        self.counts.replicas += 1
        self._items_on(rec.storage_id).add(item)
        self._refresh_phase(item)
        return row

    def _append_replicas(self, records: Sequence[ReplicaRecord]) -> range:
        """Append replicas column by column and link each into its item's and storage's list."""
        start = len(self.r_item)
        n = len(records)
        if not n:
            return range(start, start)
        (oid, storage_id, uri, state, size, checksum, created, expire,
         verified) = zip(*records, strict=True)
        by_oid = self.by_oid
        items = [by_oid[o] for o in oid]
        self.r_item.extend(items)
        self.r_storage.extend(storage_id)
        self.r_state.extend(state)
        self.r_size.extend([-1 if x is None else x for x in size])
        self.r_created.extend(created)
        self.r_verified.extend([_NAN if x is None else x for x in verified])
        rows = range(start, start + n)
        self.r_checksum.extend(checksum)
        for sparse, values in ((self.r_uri, uri), (self.r_expire, expire)):
            sparse.update((r, v) for r, v in zip(rows, values, strict=True) if v is not None)
        if uri.count(None) != n:
            for r, sid, u in zip(rows, storage_id, uri, strict=True):
                if u is not None:
                    self._index_uri(r, sid, u)
        self.r_prev_on_storage.extend(array("i", [NONE]) * n)
        # Each new replica becomes the head of its item's list and of its storage's list.
        first = self.i_first_replica
        next_in_item = self.r_next_in_item
        next_on_storage = self.r_next_on_storage
        prev_on_storage = self.r_prev_on_storage
        storages = self.storages
        heads = {sid: storages[sid].head for sid in set(storage_id)}
        used = dict.fromkeys(heads, 0)
        item_size = self.i_size
        for row, item, sid, sz in zip(rows, items, storage_id, size, strict=True):
            next_in_item.append(first[item])
            first[item] = row
            head = heads[sid]
            next_on_storage.append(head)
            if head != NONE:
                prev_on_storage[head] = row
            heads[sid] = row
            # a replica not yet measured occupies what its item says it will
            used[sid] += sz if sz is not None else max(item_size[item], 0)
        for sid, count in Counter(storage_id).items():
            storage = storages[sid]
            storage.head = heads[sid]
            storage.replica_count += count
            storage.used += used[sid]
        self.counts.replicas += n
        items_on = self._items_on
        for item, sid in zip(items, storage_id, strict=True):
            items_on(sid).add(item)
        if self._deferred is not None:
            self._phases_stale = True  # settle_indexes computes them all at once
        else:
            refresh = self._refresh_phase
            for item in set(items):
                refresh(item)
        return rows

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
        # the walk of replica_rows_of_item, without a generator: a Detox plan asks this twice
        # for each of its (hundreds of thousands of) deletions
        row = self.i_first_replica[item]
        storage, nxt = self.r_storage, self.r_next_in_item
        while row != NONE:
            if storage[row] == storage_id:
                return row
            row = nxt[row]
        return None

    def update_replica(self, row: int, rec: ReplicaRecord) -> None:
        """Replace the mutable fields of a replica (state, size, checksum, uri, times)."""
        storage = self.storages[self.r_storage[row]]
        storage.used -= self._replica_bytes(row)
        self.r_state[row] = rec.state
        self.r_size[row] = -1 if rec.size is None else rec.size
        self.r_verified[row] = _time(rec.last_verified)
        self.r_checksum.set(row, rec.checksum)
        old_uri = self.r_uri.get(row)
        if old_uri != rec.uri:
            if old_uri is not None:
                self._unindex_uri(row, old_uri)
            if rec.uri is not None:
                self._index_uri(row, storage.id, rec.uri)
        for sparse, value in ((self.r_uri, rec.uri), (self.r_expire, rec.expire_at)):
            if value is None:
                sparse.pop(row, None)
            else:
                sparse[row] = value
        storage.used += self._replica_bytes(row)
        self._refresh_phase(self.r_item[row])

    def remove_replica(self, row: int) -> None:
        """Unlink a replica from its item and storage; its row stays empty (``r_item`` NONE)
        until a new replica takes it (or a restart compacts the columns)."""
        item = self.r_item[row]
        storage = self.storages[self.r_storage[row]]
        storage.used -= self._replica_bytes(row)
        storage.replica_count -= 1
        nxt = self.r_next_in_item
        if self.i_first_replica[item] == row:
            self.i_first_replica[item] = nxt[row]
        else:
            prev = self.i_first_replica[item]
            while nxt[prev] != row:
                prev = nxt[prev]
            nxt[prev] = nxt[row]
        before, after = self.r_prev_on_storage[row], self.r_next_on_storage[row]
        if before == NONE:
            storage.head = after
        else:
            self.r_next_on_storage[before] = after
        if after != NONE:
            self.r_prev_on_storage[after] = before
        self.r_checksum.set(row, None)
        uri = self.r_uri.get(row)
        if uri is not None:
            self._unindex_uri(row, uri)
        for sparse in (self.r_uri, self.r_expire):
            sparse.pop(row, None)
        self.r_item[row] = NONE
        self.free_replica_rows.append(row)
        self.counts.replicas -= 1
        self._items_on(storage.id).discard(item)
        self._refresh_phase(item)

    def _normal_uri(self, storage_id: int, uri: str) -> str | None:
        """``uri`` in the normal form (root prefix + checked path), or None for a uri that names
        nothing under the storage (registered before uris were checked)."""
        storage = self.storages[storage_id]
        prefix = paths.storage_prefix(storage.kind, storage.root)
        if uri.startswith(prefix):
            return uri  # registered since uris are normalised: the key is the same string
        try:
            return prefix + paths.path_of_uri(storage.kind, storage.root, uri)
        except InvalidPath:
            return None

    def _index_uri(self, row: int, storage_id: int, uri: str) -> None:
        key = self._normal_uri(storage_id, uri)
        if key is not None:
            index = self.uri_index.get(storage_id)
            if index is None:
                index = self.uri_index[storage_id] = {}
            index.setdefault(key, row)  # two (legacy) claims: the first keeps the entry

    def _unindex_uri(self, row: int, uri: str) -> None:
        key = self._normal_uri(self.r_storage[row], uri)
        index = self.uri_index.get(self.r_storage[row])
        if key is not None and index is not None and index.get(key) == row:
            del index[key]

    def replica_path(self, row: int) -> str:
        """Where the replica in ``row`` lives, relative to its storage root
        (``storage.paths.replica_path``; InvalidPath for a legacy uri outside the storage)."""
        item = self.r_item[row]
        return paths.replica_path(self.storages[self.r_storage[row]], self.i_name[item],
                                  self.i_version[item], self.r_uri.get(row))

    def replica_uri(self, row: int) -> str:
        item = self.r_item[row]
        return paths.replica_uri(self.storages[self.r_storage[row]], self.i_name[item],
                                 self.i_version[item], self.r_uri.get(row))

    def path_holder(self, storage_id: int, path: str, *, skip_oid: int = -1,
                    owners: list[tuple[str, int]] | None = None) -> int | None:
        """The row of the live replica (any state but ``deleted``) on the storage whose file is
        ``path``, other than ``skip_oid``'s, or None. A few dict lookups: the uri index, then
        the at most two (name, version) whose default path ``path`` is (``owners``, when the
        caller has them already, without the skipped item's own)."""
        index = self.uri_index.get(storage_id)
        if index:
            storage = self.storages[storage_id]
            row = index.get(paths.uri_of(storage.kind, storage.root, path))
            if row is not None and self.i_oid[self.r_item[row]] != skip_oid \
                    and self.r_state[row] != _DELETED:
                return row
        for name, version in paths.default_owners(path) if owners is None else owners:
            item = self.row_of_name(name, version)
            if item is None or self.i_oid[item] == skip_oid:
                continue
            row = self.replica_row(self.i_oid[item], storage_id)
            if row is not None and row not in self.r_uri and self.r_state[row] != _DELETED:
                return row
        return None

    def _replica_bytes(self, row: int) -> int:
        size = self.r_size[row]
        return size if size >= 0 else max(self.i_size[self.r_item[row]], 0)

    def replica_record(self, row: int, state: int | None = None) -> ReplicaRecord:
        """The replica in ``row`` (with ``state`` instead of its own, when given)."""
        size = self.r_size[row]
        return ReplicaRecord(
            self.i_oid[self.r_item[row]], self.r_storage[row], self.r_uri.get(row),
            self.r_state[row] if state is None else state, None if size < 0 else size,
            self.r_checksum.get(row),
            self.r_created[row], self.r_expire.get(row), model.opt_time(self.r_verified[row]),
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
