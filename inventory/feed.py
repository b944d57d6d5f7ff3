"""The change feed and the wire form of records, shared with the snapshot.

Committed transactions are kept in memory, newest last, up to a bound on the number of changed
records. A consumer that fell further behind than that gets 410 Gone and takes a new snapshot
(the same contract as a Kubernetes watch whose resourceVersion is too old). Versions survive
restarts (the database stores the last one), the kept history does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

from inventory import model
from inventory.objects import CopyRequest, Cycle, Operation, Row
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from inventory.redact import public_config

WIRE_ITEM_FIELDS = ("oid", "item_name", "item_version", "item_type", "state", "target_phase",
                    "size", "checksum", "checksum_method", "metadata", "parent_oid", "created",
                    "expire_at", "access_count", "last_access", "owner", "group",
                    "registered_by")
WIRE_REPLICA_FIELDS = ("uid", "oid", "storage_id", "uri", "state", "size", "checksum", "created",
                       "expire_at", "last_verified")
WIRE_STORAGE_FIELDS = ("id", "name", "kind", "root", "capacity", "phase", "status", "attributes",
                       "config", "created")

# The status of a storage record in the feed that says the storage was removed (a removed
# replica is a record in state ``deleted`` the same way): consumers drop it.
REMOVED_STORAGE = "removed"

_fmt = model.format_uuid
_TYPES, _STATES, _PHASES = model.ITEM_TYPES, model.ITEM_STATES, model.PHASES
_RSTATES = model.REPLICA_STATES


def item_wire(r: ItemRecord) -> list[Any]:
    """An item as a list in WIRE_ITEM_FIELDS order: ids as UUID strings, times epoch seconds."""
    parent = r.parent_oid
    return [_fmt(r.oid), r.item_name, r.item_version, _TYPES[r.item_type], _STATES[r.state],
            _PHASES[r.target_phase], r.size, r.checksum, r.checksum_method, r.metadata,
            None if parent is None else _fmt(parent), r.created, r.expire_at, r.access_count,
            r.last_access, r.owner, r.group, r.registered_by]


def replica_wire(r: ReplicaRecord) -> list[Any]:
    return [_fmt(r.oid | r.storage_id), _fmt(r.oid), r.storage_id, r.uri, _RSTATES[r.state],
            r.size, r.checksum, r.created, r.expire_at, r.last_verified]


def storage_wire(r: StorageRecord, *, secrets: bool = False) -> list[Any]:
    """A storage as a list; its credentials only with ``secrets`` (operators: Consistency
    lists storages with them)."""
    return [r.id, r.name, r.kind, r.root, r.capacity, _PHASES[r.phase], r.status, r.attributes,
            r.config if secrets else public_config(r.config), r.created]


def object_wire(obj: Row) -> list[Any]:
    """A request, operation or cycle as a list of its fields (oids as UUID strings)."""
    uuids = obj.uuid_fields
    return [model.format_uuid(getattr(obj, f.name))
            if f.name in uuids and getattr(obj, f.name) is not None else getattr(obj, f.name)
            for f in dataclasses.fields(obj)]


CHANGE_KINDS = ("item", "replica", "storage", "request", "operation", "cycle")
_ENCODERS = {"item": item_wire, "replica": replica_wire, "storage": storage_wire,
             "request": object_wire, "operation": object_wire, "cycle": object_wire}


def change_wire(kind: str, record: Any) -> list[Any]:
    return [kind, _ENCODERS[kind](record)]


# --------------------------------------------------------------------------- wire to records
# What a read-only mirror needs to apply the feed to its own Inventory: the exact inverse of the
# encoders above (storages come without credentials, which a mirror never uses).

_parse = model.parse_uuid


def item_from_wire(w: list[Any]) -> ItemRecord:
    parent = w[10]
    return ItemRecord(_parse(w[0]), w[1], w[2], model.ITEM_TYPE[w[3]], model.ITEM_STATE[w[4]],
                      model.PHASE[w[5]], w[6], w[7], w[8], w[9],
                      None if parent is None else _parse(parent), *w[11:])


def replica_from_wire(w: list[Any]) -> ReplicaRecord:
    return ReplicaRecord(_parse(w[1]), w[2], w[3], model.REPLICA_STATE[w[4]], *w[5:])


def storage_from_wire(w: list[Any]) -> StorageRecord:
    return StorageRecord(*w[:5], model.PHASE[w[5]], *w[6:])


def _object_decoder(cls: type[Row]) -> Any:
    return lambda w: cls.from_db(w, _parse)


_DECODERS = {"item": item_from_wire, "replica": replica_from_wire, "storage": storage_from_wire,
             "request": _object_decoder(CopyRequest), "operation": _object_decoder(Operation),
             "cycle": _object_decoder(Cycle)}


def change_from_wire(change: list[Any]) -> tuple[str, Any]:
    """``[kind, fields]`` as sent by the feed back to ``(kind, record)``."""
    kind, fields = change
    return kind, _DECODERS[kind](fields)


class ChangeFeed:
    """Recent committed transactions: (version, [(kind, record), ...]), oldest first."""

    def __init__(self, version: int, max_changes: int = 1_000_000) -> None:
        self._entries: deque[tuple[int, list[tuple[str, Any]]]] = deque()
        self._held = 0
        self._max = max_changes
        self.base_version = version  # every change after this version is kept
        self.version = version
        self._new = asyncio.Event()
        # Called with each new version before any writer is acknowledged (read workers learn
        # the committed version this way).
        self.listeners: list[Callable[[int], None]] = []
        self.closed = False

    def close(self) -> None:
        """The server is stopping: end every long poll now rather than at its timeout (a
        stopping aiohttp server waits for the handlers in flight)."""
        self.closed = True
        self._new.set()

    def append(self, version: int, changes: list[tuple[str, Any]]) -> None:
        self._entries.append((version, changes))
        self._held += len(changes)
        self.version = version
        while self._held > self._max and len(self._entries) > 1:
            old_version, old = self._entries.popleft()
            self._held -= len(old)
            self.base_version = old_version
        self._new.set()
        self._new = asyncio.Event()
        for listener in self.listeners:
            listener(version)

    def since(self, version: int, limit: int, kinds: Collection[str] | None = None
              ) -> tuple[list[list[Any]], int]:
        """Changes after ``version`` (whole transactions, about ``limit`` records) and the
        version they lead to. Raises LookupError when that history is no longer kept.
        With ``kinds``, only records of those kinds are sent (and counted); transactions left
        without any are skipped, the version still moves past them."""
        if version < self.base_version:
            raise LookupError(version)
        out: list[list[Any]] = []
        reached = version
        records = 0
        for entry_version, changes in self._entries:
            if entry_version <= version:
                continue
            if kinds is not None:
                changes = [(k, r) for k, r in changes if k in kinds]
            if records and records + len(changes) > limit:
                break
            if changes:
                out.append([entry_version, [change_wire(k, r) for k, r in changes]])
            records += len(changes)
            reached = entry_version
        return out, reached

    async def wait(self, version: int, timeout: float) -> None:
        """Return when a version after ``version`` exists, or after ``timeout`` seconds."""
        if self.version > version or self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._new.wait(), timeout)


# --------------------------------------------------------------------------- snapshot chunks
# The snapshot encodes rows straight from the inventory's columns (no record objects), a chunk
# at a time; the tuples are the lists ``item_wire`` / ``replica_wire`` give, in the same order.

def item_rows_wire(inv: Any, lo: int, hi: int) -> list[tuple[Any, ...]]:
    """Items ``lo`` to ``hi`` (row numbers) in WIRE_ITEM_FIELDS order."""
    rows = range(lo, hi)
    oids = inv.i_oid
    oid_text = [_fmt(o) for o in oids[lo:hi]]
    none = -1
    parents = inv.i_parent[lo:hi]
    parent_text = ([None] * (hi - lo) if parents.count(none) == hi - lo else
                   [None if p == none else _fmt(oids[p]) for p in parents])
    return list(zip(
        oid_text, inv.i_name[lo:hi], inv.i_version[lo:hi],
        map(_TYPES.__getitem__, inv.i_type[lo:hi]), map(_STATES.__getitem__, inv.i_state[lo:hi]),
        map(_PHASES.__getitem__, inv.i_target[lo:hi]),
        [None if s < 0 else s for s in inv.i_size[lo:hi]],
        _checksums(inv.i_checksum, lo, hi), map(inv.methods.__getitem__, inv.i_method[lo:hi]),
        map(inv.i_metadata.get, rows), parent_text, inv.i_created[lo:hi],
        [None if t != t else t for t in inv.i_expire[lo:hi]], inv.i_access_count[lo:hi],
        [None if t != t else t for t in inv.i_last_access[lo:hi]],
        _names(inv.i_owner, lo, hi), _names(inv.i_group, lo, hi),
        _names(inv.i_registered_by, lo, hi), strict=True))


def _checksums(column: Any, lo: int, hi: int) -> Iterable[str | None]:
    """Rows ``lo`` to ``hi`` of an ``inventory.Checksums`` column: when all of them are packed
    8-digit digests (adler32, crc32c), formatted in one C loop."""
    lengths = getattr(column, "_length", None)
    if lengths is not None and lengths.count(8, lo, hi) == hi - lo:
        return map("%08x".__mod__, column._value[lo:hi])
    return map(column.get, range(lo, hi))


def _names(column: Any, lo: int, hi: int) -> Iterable[str | None]:
    """Rows ``lo`` to ``hi`` of an ``inventory.Names`` column (codes into a table of names)."""
    codes = getattr(column, "_codes", None)
    if codes is not None:
        return map(column._names.__getitem__, codes[lo:hi])
    return map(column.get, range(lo, hi))


# a storage id as the last four hex digits of a replica uid (model.py: oid | storage id)
STORAGE_HEX = [f"{sid:04x}" for sid in range(1 << 16)]


def replica_rows_wire(inv: Any, lo: int, hi: int) -> list[tuple[Any, ...]]:
    """Replicas ``lo`` to ``hi`` (row numbers; unused rows skipped) in WIRE_REPLICA_FIELDS order.
    The uid is the oid's text with the storage id in its last four hex digits (model.py)."""
    rows = range(lo, hi)
    item_rows = inv.r_item[lo:hi]
    oids = inv.i_oid
    cache: dict[int, str] = {}  # an item's replicas are usually neighbours
    get = cache.get
    oid_text = []
    append = oid_text.append
    for r in item_rows:
        text = get(r)
        if text is None:
            text = cache[r] = _fmt(oids[r]) if r >= 0 else ""
        append(text)
    storages = inv.r_storage[lo:hi]
    uid_text = [o[:32] + h for o, h in zip(oid_text, map(STORAGE_HEX.__getitem__, storages),
                                          strict=True)]
    out = list(zip(
        uid_text, oid_text, storages, map(inv.r_uri.get, rows),
        map(_RSTATES.__getitem__, inv.r_state[lo:hi]),
        [None if s < 0 else s for s in inv.r_size[lo:hi]], map(inv.r_checksum.get, rows),
        inv.r_created[lo:hi], map(inv.r_expire.get, rows),
        [None if t != t else t for t in inv.r_verified[lo:hi]], strict=True))
    if -1 in item_rows:
        out = [row for row, r in zip(out, item_rows, strict=True) if r >= 0]
    return out
