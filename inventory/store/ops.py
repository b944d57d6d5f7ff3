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



@dataclass(slots=True, frozen=True)
class InsertRows:
    """Insert new rows, never replacing one (a duplicate key is a constraint error): the bulk
    path for objects a write creates, e.g. a cycle's queued operations. PostgreSQL COPYs them
    straight into the table, without the staging table and ON CONFLICT check of an upsert."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple]


@dataclass(slots=True, frozen=True)
class UpsertRows:
    """Insert rows, or replace the existing ones with the same ``key``: how every change to an
    existing record is written (records are whole; both databases support the upsert)."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    rows: list[tuple]


@dataclass(slots=True, frozen=True)
class DeleteRows:
    table: str
    key: tuple[str, ...]
    rows: list[tuple]


DbOp = InsertStorage | InsertItems | InsertReplicas | InsertRows | UpsertRows | DeleteRows
