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
from typing import Any

from inventory import model
from inventory.objects import Row
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord

WIRE_ITEM_FIELDS = ("oid", "item_name", "item_version", "item_type", "state", "target_phase",
                    "size", "checksum", "checksum_method", "metadata", "parent_oid", "created",
                    "expire_at", "access_count", "last_access", "owner", "group")
WIRE_REPLICA_FIELDS = ("uid", "oid", "storage_id", "uri", "state", "size", "checksum", "created",
                       "expire_at", "last_verified")
WIRE_STORAGE_FIELDS = ("id", "name", "kind", "root", "capacity", "phase", "status", "attributes",
                       "config", "created")

_fmt = model.format_uuid
_TYPES, _STATES, _PHASES = model.ITEM_TYPES, model.ITEM_STATES, model.PHASES
_RSTATES = model.REPLICA_STATES


def item_wire(r: ItemRecord) -> list[Any]:
    """An item as a list in WIRE_ITEM_FIELDS order: ids as UUID strings, times epoch seconds."""
    parent = r.parent_oid
    return [_fmt(r.oid), r.item_name, r.item_version, _TYPES[r.item_type], _STATES[r.state],
            _PHASES[r.target_phase], r.size, r.checksum, r.checksum_method, r.metadata,
            None if parent is None else _fmt(parent), r.created, r.expire_at, r.access_count,
            r.last_access, r.owner, r.group]


def replica_wire(r: ReplicaRecord) -> list[Any]:
    return [_fmt(r.oid | r.storage_id), _fmt(r.oid), r.storage_id, r.uri, _RSTATES[r.state],
            r.size, r.checksum, r.created, r.expire_at, r.last_verified]


def storage_wire(r: StorageRecord) -> list[Any]:
    return [r.id, r.name, r.kind, r.root, r.capacity, _PHASES[r.phase], r.status, r.attributes,
            r.config, r.created]


def object_wire(obj: Row) -> list[Any]:
    """A request, operation or cycle as a list of its fields (oids as UUID strings)."""
    uuids = obj.uuid_fields
    return [model.format_uuid(getattr(obj, f.name))
            if f.name in uuids and getattr(obj, f.name) is not None else getattr(obj, f.name)
            for f in dataclasses.fields(obj)]


_ENCODERS = {"item": item_wire, "replica": replica_wire, "storage": storage_wire,
             "request": object_wire, "operation": object_wire, "cycle": object_wire}


def change_wire(kind: str, record: Any) -> list[Any]:
    return [kind, _ENCODERS[kind](record)]


class ChangeFeed:
    """Recent committed transactions: (version, [(kind, record), ...]), oldest first."""

    def __init__(self, version: int, max_changes: int = 1_000_000) -> None:
        self._entries: deque[tuple[int, list[tuple[str, Any]]]] = deque()
        self._held = 0
        self._max = max_changes
        self.base_version = version  # every change after this version is kept
        self.version = version
        self._new = asyncio.Event()

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

    def since(self, version: int, limit: int) -> tuple[list[list[Any]], int]:
        """Changes after ``version`` (whole transactions, about ``limit`` records) and the
        version they lead to. Raises LookupError when that history is no longer kept."""
        if version < self.base_version:
            raise LookupError(version)
        out: list[list[Any]] = []
        reached = version
        records = 0
        for entry_version, changes in self._entries:
            if entry_version <= version:
                continue
            if out and records + len(changes) > limit:
                break
            out.append([entry_version, [change_wire(k, r) for k, r in changes]])
            records += len(changes)
            reached = entry_version
        return out, reached

    async def wait(self, version: int, timeout: float) -> None:
        """Return when a version after ``version`` exists, or after ``timeout`` seconds."""
        if self.version > version:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._new.wait(), timeout)
