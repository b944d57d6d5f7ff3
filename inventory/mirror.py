"""Apply the change feed to an in-memory Inventory: how a read-only server keeps its copy equal
to the primary's.

Changes carry whole records, so applying one is an upsert of that record; a replica whose state
is ``deleted`` is the primary's removal of it. Applying the transactions after version V to an
inventory loaded at V gives the primary's inventory at the last version applied.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from inventory import model
from inventory.feed import REMOVED_STORAGE, change_from_wire
from inventory.inventory import Inventory
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from inventory.redact import public_config

_DELETED_REPLICA = model.REPLICA_STATE["deleted"]


def apply_item(inv: Inventory, rec: ItemRecord) -> None:
    if rec.oid in inv.by_oid:
        inv.update_items([rec])
    else:
        inv.add_items([rec])


def apply_replica(inv: Inventory, rec: ReplicaRecord) -> None:
    row = inv.replica_row(rec.oid, rec.storage_id)
    if rec.state == _DELETED_REPLICA:
        if row is not None:
            inv.remove_replica(row)
    elif row is None:
        inv.add_replicas([rec])
    else:
        inv.update_replica(row, rec)


def apply_storage(inv: Inventory, rec: StorageRecord) -> None:
    old = inv.storages.get(rec.id)
    if rec.status == REMOVED_STORAGE:  # the primary removed it (writes.RemoveStorage)
        if old is not None:
            inv.remove_storage(rec.id)
        return
    if old is None:
        inv.add_storage(rec)
        return
    if old.name != rec.name:
        inv.storage_by_name.pop(old.name, None)
    # The feed sends storages without credentials: a mirror keeps the ones it loaded.
    public = public_config(old.config)
    secrets = {k: v for k, v in old.config.items() if k not in public}
    config = {**secrets, **rec.config}
    inv.update_storage(rec._replace(config=config))
    inv.storage_by_name[rec.name] = inv.storages[rec.id]


_APPLY = {"item": apply_item, "replica": apply_replica, "storage": apply_storage}


def apply_transactions(inv: Inventory, transactions: Iterable[list[Any]]) -> int:
    """Apply ``[[version, [change, ...]], ...]`` (the ``/v1/changes`` answer) in order; returns
    the number of records applied. Versions at or below the inventory's are skipped."""
    applied = 0
    for version, changes in transactions:
        if version <= inv.version:
            continue
        for change in changes:
            kind, rec = change_from_wire(change)
            apply = _APPLY.get(kind)
            if apply is None:
                inv.put_object(rec)
            else:
                apply(inv, rec)
            applied += 1
        inv.version = version
    return applied
