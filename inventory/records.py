"""Row records: the one field order shared by the database, the snapshot and the change feed.

A record is a plain tuple with Python values (ids as ints, states and phases as small-int codes,
times as float epoch seconds or None). Tuples are the cheapest thing to build, pack and unpack
(NOTES.md: msgpack tuples are 3-4x faster than dicts), so every layer speaks them.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class ItemRecord(NamedTuple):
    oid: int
    item_name: str
    item_version: int
    item_type: int
    state: int
    target_phase: int
    size: int | None
    checksum: str | None
    checksum_method: str | None
    metadata: dict[str, Any] | None
    parent_oid: int | None
    created: float
    expire_at: float | None
    access_count: int
    last_access: float | None
    owner: str | None
    group: str | None
    registered_by: str | None = None  # the token that created the item (None: no tokens)


class ReplicaRecord(NamedTuple):
    oid: int
    storage_id: int
    uri: str | None  # None: the storage's default location for the item name
    state: int
    size: int | None
    checksum: str | None
    created: float
    expire_at: float | None
    last_verified: float | None


class StorageRecord(NamedTuple):
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


ITEM_FIELDS: tuple[str, ...] = ItemRecord._fields
REPLICA_FIELDS: tuple[str, ...] = ReplicaRecord._fields
STORAGE_FIELDS: tuple[str, ...] = StorageRecord._fields
