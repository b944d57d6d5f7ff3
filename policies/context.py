"""What a rule sees: plain attribute objects for an item, one of its replicas and a storage.

Detox and Dealer build these from an inventory snapshot, once per cycle; the compiled policy only
reads their attributes. They are ``__slots__`` classes (about 100 bytes each, NOTES.md) with
keyword constructors and defaults, so building a million of them is a plain loop, and several
replicas can share one ``ItemView`` and one ``StorageView``.

Views hold no clock: ``item.age`` and ``replica.age`` are computed by the rule from ``created`` and
the ``now`` passed to the evaluator, so the same views can be evaluated at any time and a decision
can be replayed exactly.

Names, not codes: states, phases, kinds and statuses are the wire names (``"READY"``,
``"complete"``, ``"SOLID"``, ``"draining"``); times are float epoch seconds, ``None`` when unset;
sizes are bytes. ``metadata`` and ``attributes`` must be mappings (never ``None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

EMPTY: Mapping[str, Any] = MappingProxyType({})


class ItemView:
    """One data item (SKA OID). ``phase`` is the current phase derived from the complete copies,
    ``copies`` the number of complete replicas, ``popularity`` the decayed access weight."""

    __slots__ = (
        "access_count",
        "copies",
        "created",
        "expire_at",
        "group",
        "last_access",
        "metadata",
        "name",
        "owner",
        "parent",
        "phase",
        "popularity",
        "size",
        "state",
        "target_phase",
        "type",
        "version",
    )

    def __init__(
        self, name: str, *, version: int = 1, type: str = "file", state: str = "READY",
        phase: str = "PLASMA", target_phase: str = "SOLID", size: int = 0, created: float = 0.0,
        expire_at: float | None = None, metadata: Mapping[str, Any] = EMPTY, copies: int = 0,
        popularity: float = 0.0, access_count: int = 0, last_access: float | None = None,
        parent: str | None = None, owner: str | None = None, group: str | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.type = type
        self.state = state
        self.phase = phase
        self.target_phase = target_phase
        self.size = size
        self.created = created
        self.expire_at = expire_at
        self.metadata = metadata
        self.copies = copies
        self.popularity = popularity
        self.access_count = access_count
        self.last_access = last_access
        self.parent = parent
        self.owner = owner
        self.group = group

    def __repr__(self) -> str:
        return f"ItemView({self.name!r}, state={self.state!r}, phase={self.phase!r})"


class ReplicaView:
    """One copy of an item on one storage (SKA UID). ``is_last_copy`` is true when this is the
    item's only complete copy; ``expire_at`` is set for a temporary copy."""

    __slots__ = ("created", "expire_at", "is_last_copy", "size", "state", "storage")

    def __init__(
        self, storage: str, *, state: str = "complete", size: int = 0, created: float = 0.0,
        is_last_copy: bool = False, expire_at: float | None = None,
    ) -> None:
        self.storage = storage
        self.state = state
        self.size = size
        self.created = created
        self.is_last_copy = is_last_copy
        self.expire_at = expire_at

    def __repr__(self) -> str:
        return f"ReplicaView({self.storage!r}, state={self.state!r})"


class StorageView:
    """One storage as the policy sees it in this cycle. Use `StorageView.build` to have
    ``free`` and ``occupancy`` derived consistently."""

    __slots__ = (
        "attributes",
        "capacity",
        "free",
        "kind",
        "name",
        "occupancy",
        "pending",
        "phase",
        "quota",
        "status",
        "used",
    )

    def __init__(
        self, name: str, *, kind: str = "posix", status: str = "online", phase: str = "GAS",
        attributes: Mapping[str, Any] = EMPTY, capacity: int = 0, used: int = 0, free: int = 0,
        occupancy: float = 0.0, quota: int | None = None, pending: int = 0,
    ) -> None:
        self.name = name
        self.kind = kind
        self.status = status
        self.phase = phase
        self.attributes = attributes
        self.capacity = capacity
        self.used = used
        self.free = free
        self.occupancy = occupancy
        self.quota = quota
        self.pending = pending

    @classmethod
    def build(
        cls, name: str, *, kind: str = "posix", status: str = "online", phase: str = "GAS",
        attributes: Mapping[str, Any] = EMPTY, capacity: int = 0, used: int = 0,
        quota: int | None = None, pending: int = 0,
    ) -> StorageView:
        """A view with ``free = capacity - used`` and ``occupancy = used / quota`` when the
        partition has a quota on this storage, else ``used / capacity`` (0 when both are 0):
        watermarks are about the space the partition may use."""
        limit = quota if quota else capacity
        return cls(
            name, kind=kind, status=status, phase=phase, attributes=attributes,
            capacity=capacity, used=used, free=max(capacity - used, 0),
            occupancy=(used / limit) if limit else 0.0, quota=quota, pending=pending,
        )

    def __repr__(self) -> str:
        return f"StorageView({self.name!r}, status={self.status!r})"
