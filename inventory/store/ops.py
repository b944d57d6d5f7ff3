"""What a committed transaction does to the database, as plain data both stores understand."""

from __future__ import annotations

from dataclasses import dataclass

from inventory.records import ItemRecord, ReplicaRecord, StorageRecord


@dataclass(slots=True, frozen=True)
class InsertStorage:
    record: StorageRecord


@dataclass(slots=True, frozen=True)
class InsertItems:
    records: list[ItemRecord]


@dataclass(slots=True, frozen=True)
class InsertReplicas:
    records: list[ReplicaRecord]


DbOp = InsertStorage | InsertItems | InsertReplicas
