"""Server JSON -> views: what ``dlm policy explain`` evaluates. Pure (no I/O), so it is tested
with fixture JSON and reused by any tool that has the REST shapes of items and storages in hand.

The REST item has no popularity of its own; when the JSON carries none, popularity is the
access count decayed since the last access with the policy's half-life (7 days when the policy
sets none), the same weight Dealer's popularity settings describe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .context import EMPTY, ItemView, ReplicaView, StorageView
from .model import Partition
from .units import parse_date

DEFAULT_HALF_LIFE = 7 * 86400.0


class RemoteDataError(ValueError):
    """The server's JSON does not have the expected shape (names the field)."""


@dataclass(frozen=True, slots=True)
class RemoteReplica:
    view: ReplicaView
    storage: StorageView
    uid: str
    uri: str


@dataclass(frozen=True, slots=True)
class RemoteItem:
    view: ItemView
    oid: str
    replicas: tuple[RemoteReplica, ...]


def _time(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    try:
        return parse_date(str(value))
    except ValueError:
        raise RemoteDataError(f"{key}: not an ISO-8601 time: {value!r}") from None


def _number(record: Mapping[str, Any], key: str, default: float = 0) -> Any:
    value = record.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RemoteDataError(f"{key}: not a number: {value!r}")
    return value


def _mapping(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = record.get(key)
    if value is None:
        return EMPTY
    if not isinstance(value, Mapping):
        raise RemoteDataError(f"{key}: not an object: {value!r}")
    return value


def storage_view(record: Mapping[str, Any], partition: Partition | None = None) -> StorageView:
    """A storage's REST JSON as a view; with ``partition``, ``quota`` and ``occupancy`` follow
    the partition's quota on that storage."""
    if not isinstance(record, Mapping) or not isinstance(record.get("name"), str):
        raise RemoteDataError(f"storage: expected an object with a name, got {record!r}")
    fields = dict(
        kind=str(record.get("kind") or "posix"), status=str(record.get("status") or "online"),
        phase=str(record.get("phase") or "GAS"), attributes=_mapping(record, "attributes"),
        capacity=_number(record, "capacity"), used=_number(record, "used"),
        pending=_number(record, "pending"),
    )
    view = StorageView.build(record["name"], **fields)
    if partition is not None:
        quota = partition.quota_for(view)
        if quota is not None:
            view = StorageView.build(record["name"], quota=int(quota), **fields)
    return view


def item_views(item: Mapping[str, Any], storages: Iterable[Mapping[str, Any]], now: float, *,
               partition: Partition | None = None, half_life: float | None = None,
               parent_name: str | None = None) -> RemoteItem:
    """The item, and each replica with its storage, as views ready for the policy.

    ``copies`` counts complete replicas and ``is_last_copy`` marks the only complete one;
    ``parent`` is ``parent_name`` when the caller looked it up, else the parent's oid."""
    if not isinstance(item, Mapping) or not isinstance(item.get("item_name"), str):
        raise RemoteDataError(f"item: expected an object with an item_name, got {item!r}")
    by_name: dict[str, StorageView] = {}
    by_id: dict[Any, StorageView] = {}
    for record in storages:
        view = storage_view(record, partition)
        by_name[view.name] = view
        if isinstance(record, Mapping) and record.get("id") is not None:
            by_id[record["id"]] = view
    replicas = item.get("replicas") or []
    if not isinstance(replicas, list):
        raise RemoteDataError("replicas: not a list")
    complete = sum(1 for r in replicas if isinstance(r, Mapping) and r.get("state") == "complete")
    access_count = _number(item, "access_count")
    last_access = _time(item, "last_access")
    popularity = item.get("popularity")
    if not isinstance(popularity, int | float) or isinstance(popularity, bool):
        popularity = _decayed(access_count, last_access, now, half_life or DEFAULT_HALF_LIFE)
    view = ItemView(
        item["item_name"], version=int(_number(item, "item_version", 1)),
        type=str(item.get("item_type") or "file"), state=str(item.get("state") or "READY"),
        phase=str(item.get("current_phase") or "PLASMA"),
        target_phase=str(item.get("target_phase") or "SOLID"), size=_number(item, "size"),
        created=_time(item, "created") or 0.0, expire_at=_time(item, "expire_at"),
        metadata=_mapping(item, "metadata"), copies=complete, popularity=float(popularity),
        access_count=access_count, last_access=last_access,
        parent=parent_name or item.get("parent_oid"), owner=item.get("owner"),
        group=item.get("group"),
    )
    out = []
    for record in replicas:
        if not isinstance(record, Mapping):
            raise RemoteDataError(f"replica: not an object: {record!r}")
        name = record.get("storage")
        storage = by_name.get(name) if isinstance(name, str) else None
        if storage is None:
            storage = by_id.get(record.get("storage_id"))
        if storage is None:  # a storage the listing did not return: still explain the replica
            storage = StorageView.build(str(name or record.get("storage_id")), status="offline")
        state = str(record.get("state") or "complete")
        replica = ReplicaView(
            storage.name, state=state, size=_number(record, "size", view.size),
            created=_time(record, "created") or 0.0,
            is_last_copy=state == "complete" and complete == 1,
            expire_at=_time(record, "expire_at"),
        )
        out.append(RemoteReplica(replica, storage, str(record.get("uid") or ""),
                                 str(record.get("uri") or "")))
    return RemoteItem(view, str(item.get("oid") or ""), tuple(out))


def _decayed(count: float, last: float | None, now: float, half_life: float) -> float:
    if not count or last is None:
        return 0.0
    return count * math.pow(0.5, max(now - last, 0.0) / half_life)
