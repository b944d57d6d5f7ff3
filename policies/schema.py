"""What a policy can talk about: the attributes of item, replica and storage, and their types.

This table is the single source for the checker (is ``item.sise`` an attribute? can it be compared
with ``"x"``?), the code generator (how to read it), ``dlm policy explain`` (how to print it) and
the reference in docs/policy-language.md. The names mirror the inventory data model (DESIGN.md);
enumerations are the state and phase names used on the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

ITEM_TYPES: tuple[str, ...] = ("file", "container")
ITEM_STATES: tuple[str, ...] = ("INITIALISED", "READY", "EXPIRED", "DELETED", "CORRUPTED")
PHASES: tuple[str, ...] = ("PLASMA", "GAS", "LIQUID", "SOLID")
REPLICA_STATES: tuple[str, ...] = (
    "pending", "copying", "complete", "deleting", "deleted", "missing", "corrupt",
)
STORAGE_KINDS: tuple[str, ...] = ("posix", "s3")
STORAGE_STATUSES: tuple[str, ...] = ("online", "draining", "offline", "retired")

# Phases are ordered (PLASMA < GAS < LIQUID < SOLID): `storage.phase >= LIQUID` is meaningful.
PHASE_RANK: dict[str, int] = {name: rank for rank, name in enumerate(PHASES)}


class Kind(enum.Enum):
    TEXT = "text"
    NUMBER = "number"
    BYTES = "size"
    FRACTION = "fraction"
    DURATION = "duration"
    TIME = "time"
    BOOL = "boolean"
    ENUM = "name"
    ANY = "value"       # a metadata or storage-attribute value: whatever the JSON holds
    MAP = "map"         # item.metadata / storage.attributes themselves: only a key can be used
    NULL = "none"


ORDERED = frozenset({Kind.NUMBER, Kind.BYTES, Kind.FRACTION, Kind.DURATION, Kind.TIME})


@dataclass(frozen=True, slots=True)
class Type:
    kind: Kind
    names: tuple[str, ...] = ()    # the allowed names of an ENUM
    label: str = ""                # what an ENUM is called in messages: 'an item state'
    ordered: bool = False          # an ENUM whose names are ordered (phases)
    nullable: bool = False         # the attribute can be none

    def describe(self) -> str:
        """What a literal of this type looks like, for 'expected ...' in messages:
        'a size such as 500 GB', 'an item state (INITIALISED, READY, ...)'."""
        if self.kind is Kind.ENUM:
            return f"{self.label} ({', '.join(self.names)})"
        return _DESCRIPTIONS[self.kind]

    def noun(self) -> str:
        """What the type is called: 'a size', 'text', 'an item state'."""
        return self.label if self.kind is Kind.ENUM else _NOUNS[self.kind]

    @property
    def is_ordered(self) -> bool:
        return self.kind in ORDERED or self.ordered or self.kind is Kind.ANY


_DESCRIPTIONS = {
    Kind.TEXT: 'a quoted string such as "raw"',
    Kind.NUMBER: "a number",
    Kind.BYTES: "a size such as 500 GB or 2 GiB",
    Kind.FRACTION: "a percentage such as 90% (or a fraction between 0 and 1)",
    Kind.DURATION: "a duration such as 7d or 12h",
    Kind.TIME: "a date such as 2024-06-30 or now",
    Kind.BOOL: "true or false",
    Kind.ANY: "a value",
    Kind.MAP: "a key, such as .region or [\"obs id\"]",
    Kind.NULL: "none",
}

_NOUNS = {
    Kind.TEXT: "text", Kind.NUMBER: "a number", Kind.BYTES: "a size", Kind.FRACTION: "a fraction",
    Kind.DURATION: "a duration", Kind.TIME: "a time", Kind.BOOL: "a boolean", Kind.ANY: "a value",
    Kind.MAP: "a map", Kind.NULL: "none",
}

TEXT = Type(Kind.TEXT)
OPT_TEXT = Type(Kind.TEXT, nullable=True)
NUMBER = Type(Kind.NUMBER)
BYTES = Type(Kind.BYTES)
OPT_BYTES = Type(Kind.BYTES, nullable=True)
FRACTION = Type(Kind.FRACTION)
DURATION = Type(Kind.DURATION)
TIME = Type(Kind.TIME)
OPT_TIME = Type(Kind.TIME, nullable=True)
BOOL = Type(Kind.BOOL)
ANY = Type(Kind.ANY, nullable=True)
MAP = Type(Kind.MAP)
NULL = Type(Kind.NULL, nullable=True)
PHASE = Type(Kind.ENUM, PHASES, "a phase", ordered=True)


def _enum(names: tuple[str, ...], label: str) -> Type:
    return Type(Kind.ENUM, names, label)


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute: ``obj.name`` of ``type``; ``age_of`` names the time it is derived from
    (``item.age`` is ``now - item.created``, computed in the rule so views stay time-free)."""

    obj: str
    name: str
    type: Type
    doc: str
    age_of: str = ""


def _table(obj: str, *rows: tuple) -> dict[str, Attribute]:
    return {row[0]: Attribute(obj, *row) for row in rows}


ATTRIBUTES: dict[str, dict[str, Attribute]] = {
    "item": _table(
        "item",
        ("name", TEXT, "item name (SKA item_name)"),
        ("version", NUMBER, "item version (SKA item_version)"),
        ("type", _enum(ITEM_TYPES, "an item type"), "file or container"),
        ("state", _enum(ITEM_STATES, "an item state"), "lifecycle state"),
        ("phase", PHASE, "current phase, derived from the complete copies"),
        ("target_phase", PHASE, "the phase the item must reach"),
        ("size", BYTES, "size in bytes"),
        ("created", TIME, "registration time"),
        ("age", DURATION, "now - item.created", "created"),
        ("expire_at", OPT_TIME, "expiry time (OID expiration), none if it never expires"),
        ("metadata", MAP, "free-form metadata: item.metadata.KEY or item.metadata[\"KEY\"]"),
        ("copies", NUMBER, "number of complete replicas"),
        ("popularity", NUMBER, "decayed access weight"),
        ("access_count", NUMBER, "number of recorded accesses"),
        ("last_access", OPT_TIME, "time of the last recorded access, none if never"),
        ("parent", OPT_TEXT, "name of the parent item (container), none if top-level"),
        ("owner", OPT_TEXT, "owner"),
        ("group", OPT_TEXT, "owning group"),
    ),
    "replica": _table(
        "replica",
        ("storage", TEXT, "name of the storage holding the copy"),
        ("state", _enum(REPLICA_STATES, "a replica state"), "replica state"),
        ("size", BYTES, "size as verified, in bytes"),
        ("created", TIME, "time the copy was made"),
        ("age", DURATION, "now - replica.created", "created"),
        ("is_last_copy", BOOL, "true when this is the item's only complete copy"),
        ("expire_at", OPT_TIME, "expiry of a temporary copy, none if permanent"),
    ),
    "storage": _table(
        "storage",
        ("name", TEXT, "storage name"),
        ("kind", _enum(STORAGE_KINDS, "a storage kind"), "posix or s3"),
        ("status", _enum(STORAGE_STATUSES, "a storage status"), "operational status"),
        ("phase", PHASE, "resilience the storage gives (its storage phase)"),
        ("attributes", MAP, "free-form attributes: storage.attributes.region"),
        ("capacity", BYTES, "capacity in bytes"),
        ("used", BYTES, "bytes used"),
        ("free", BYTES, "bytes free (capacity - used)"),
        ("occupancy", FRACTION, "used / capacity (or / quota when a partition quota is set)"),
        ("quota", OPT_BYTES, "quota of the partition on this storage, none if unset"),
        ("pending", BYTES, "bytes of pending copies and deletions"),
    ),
}

OBJECTS: tuple[str, ...] = tuple(ATTRIBUTES)
