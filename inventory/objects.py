"""The small tables kept in memory beside items and replicas: tokens, copy requests,
operations and cycles. There are few of them, so a plain object each is the simple choice.

Each class knows its table, its columns (the database row order) and how to build itself from a
row, so the stores load and write all of them the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from inventory import model

UuidIn = Callable[[Any], int]
UuidOut = Callable[[int], Any]

ROLES: tuple[str, ...] = ("reader", "producer", "operator")
REQUEST_STATES: tuple[str, ...] = ("pending", "done", "failed", "cancelled")
OPERATION_STATES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
OPERATION_KINDS: tuple[str, ...] = ("copy", "delete")
CYCLE_KINDS: tuple[str, ...] = ("detox", "dealer", "consistency")


CONFIG_TOKEN_CREATED = 0.0  # the creation time given to tokens of the config file
_COLUMNS: dict[type, tuple[str, ...]] = {}  # per Row class, its fields' names in order


class Row:
    """A dataclass stored as one row of ``table``; fields named in ``uuid_fields`` are oids
    (ints in memory), ``json_fields`` are JSON in the database."""

    table: ClassVar[str]
    key: ClassVar[tuple[str, ...]]
    uuid_fields: ClassVar[frozenset[str]] = frozenset()
    json_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        names = _COLUMNS.get(cls)
        if names is None:
            names = _COLUMNS[cls] = tuple(f.name for f in fields(cls))
        return names

    def db_row(self, uuid_out: UuidOut = model.format_uuid) -> tuple:
        # getattr per column, not dataclasses.astuple: that one deep-copies every value and
        # was most of the time a Dealer plan of 300k copies spent writing its operations.
        uuids, jsons = self.uuid_fields, self.json_fields
        out = []
        for name in self.columns():
            value = getattr(self, name)
            if value is not None:
                if name in uuids:
                    value = uuid_out(value)
                elif name in jsons:
                    value = json.dumps(value, separators=(",", ":"), sort_keys=True)
            out.append(value)
        return tuple(out)

    @classmethod
    def from_db(cls, row: Any, uuid_in: UuidIn) -> Row:
        values = []
        for f, value in zip(fields(cls), row, strict=True):
            if value is not None and f.name in cls.uuid_fields:
                value = uuid_in(value)
            elif value is not None and f.name in cls.json_fields and isinstance(value, str):
                value = json.loads(value)
            values.append(value)
        return cls(*values)


@dataclass(slots=True)
class Token(Row):
    table: ClassVar[str] = "token"
    key: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    role: str
    sha256: str
    created: float  # CONFIG_TOKEN_CREATED for a token listed in the server's config file
    expires_at: float | None = None

    @property
    def from_config(self) -> bool:
        """Listed in the config file: not stored, back at every start, so not deletable."""
        return self.created == CONFIG_TOKEN_CREATED


@dataclass(slots=True)
class CopyRequest(Row):
    """A user's wish for an item (or a container's members) to be on a storage."""

    table: ClassVar[str] = "copy_request"
    key: ClassVar[tuple[str, ...]] = ("id",)
    uuid_fields: ClassVar[frozenset[str]] = frozenset({"oid"})

    id: int
    oid: int
    storage_id: int
    state: str
    pin_until: float | None
    created: float
    updated: float
    requester: str | None = None
    comment: str | None = None


@dataclass(slots=True)
class Operation(Row):
    """A queued copy or deletion; durable so that a restart resumes it."""

    table: ClassVar[str] = "operation"
    key: ClassVar[tuple[str, ...]] = ("id",)
    uuid_fields: ClassVar[frozenset[str]] = frozenset({"oid"})

    id: int
    kind: str
    oid: int
    source_id: int | None
    target_id: int
    origin: str
    state: str
    attempts: int
    last_error: str | None
    created: float
    updated: float
    not_before: float | None = None  # a retry waits until then


@dataclass(slots=True)
class Cycle(Row):
    """One Detox, Dealer or Consistency run with its summary."""

    table: ClassVar[str] = "cycle"
    key: ClassVar[tuple[str, ...]] = ("id",)
    json_fields: ClassVar[frozenset[str]] = frozenset({"summary"})

    id: int
    kind: str
    started: float
    ended: float | None
    policy: str | None
    summary: dict[str, Any]


@dataclass(slots=True)
class IdFloor(Row):
    """The highest id a table ever gave, kept when rows with the highest ids are removed
    (``dlm storage rm`` takes its finished operations and requests along): an id is never
    given twice, so a script holding an old operation id cannot cancel an unrelated one."""

    table: ClassVar[str] = "id_floor"
    key: ClassVar[tuple[str, ...]] = ("name",)

    name: str  # the table: "operation", "copy_request", "cycle"
    value: int


TABLES: tuple[type[Row], ...] = (Token, CopyRequest, Operation, Cycle, IdFloor)
