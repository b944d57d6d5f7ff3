"""JSON shapes of storages, items and replicas (SKA DLM column names where one exists)."""

from __future__ import annotations

from typing import Any

from inventory import model
from inventory.inventory import NONE, Inventory, Storage
from inventory.redact import public_config

_fmt, _time = model.format_uuid, model.format_time


def storage_json(storage: Storage) -> dict[str, Any]:
    capacity = storage.capacity
    rel = storage.reliability
    return {
        "id": storage.id,
        "name": storage.name,
        "kind": storage.kind,
        "root": storage.root,
        "capacity": capacity,
        "used": storage.used,
        "free": max(capacity - storage.used, 0),
        "occupancy": storage.used / capacity if capacity else None,
        "replica_count": storage.replica_count,
        "phase": model.PHASES[storage.phase],
        "status": storage.status,
        "attributes": storage.attributes,
        "config": public_config(storage.config),
        "created": _time(storage.created),
        "reliability": {
            "copies_ok": rel.copies_ok, "copies_failed": rel.copies_failed,
            "deletions_ok": rel.deletions_ok, "deletions_failed": rel.deletions_failed,
            "success_rate": rel.success_rate, "throughput": rel.throughput,
            "unreachable_until": _time(rel.unreachable_until or None),
        },
    }


def replica_json(inv: Inventory, row: int, oid_text: str | None = None) -> dict[str, Any]:
    """A replica; ``oid_text``, its item's formatted oid when the caller has it (the uid is
    that text with the storage id in the last four hex digits)."""
    item = inv.r_item[row]
    storage = inv.storages[inv.r_storage[row]]
    size = inv.r_size[row]
    if oid_text is None:
        oid_text = _fmt(inv.i_oid[item])
    return {
        "uid": f"{oid_text[:-4]}{storage.id:04x}",
        "oid": oid_text,
        "storage": storage.name,
        "storage_id": storage.id,
        "uri": inv.replica_uri(row),
        "state": model.REPLICA_STATES[inv.r_state[row]],
        "size": None if size < 0 else size,
        "checksum": inv.r_checksum.get(row),
        "created": _time(inv.r_created[row]),
        "expire_at": _time(inv.r_expire.get(row)),
        "last_verified": _time(inv.r_verified[row]),
    }


def item_json(inv: Inventory, row: int, *, replicas: bool = True) -> dict[str, Any]:
    size = inv.container_size(row) if inv.i_type[row] == model.CONTAINER else inv.i_size[row]
    parent = inv.i_parent[row]
    oid_text = _fmt(inv.i_oid[row])
    out = {
        "oid": oid_text,
        "item_name": inv.i_name[row],
        "item_version": inv.i_version[row],
        "item_type": model.ITEM_TYPES[inv.i_type[row]],
        "parent_oid": None if parent == NONE else _fmt(inv.i_oid[parent]),
        "size": None if size < 0 else size,
        "checksum": inv.i_checksum.get(row),
        "checksum_method": inv.methods[inv.i_method[row]],
        "metadata": inv.i_metadata.get(row, {}),
        "target_phase": model.PHASES[inv.i_target[row]],
        "current_phase": model.PHASES[inv.current_phase(row)],
        "state": model.ITEM_STATES[inv.i_state[row]],
        "created": _time(inv.i_created[row]),
        "expire_at": _time(inv.i_expire[row]),
        "access_count": inv.i_access_count[row],
        "last_access": _time(inv.i_last_access[row]),
        "owner": inv.i_owner.get(row),
        "group": inv.i_group.get(row),
        "registered_by": inv.i_registered_by.get(row),
    }
    if replicas:
        out["replicas"] = [replica_json(inv, r, oid_text)
                           for r in inv.replica_rows_of_item(row)]
    return out
