"""Write transactions: each checks a request against the inventory and says what will change.

A write is prepared by the scheduler's writer (the only code that mutates the inventory), so the
memory it checks against cannot move under it. ``prepare`` returns the database operations and an
``apply`` that changes memory; ``apply`` runs only after the database committed. Writes grouped
in one database transaction see each other's claims through ``Pending``, so two requests in a
group cannot both create ``name`` version 3.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inventory import model, validate
from inventory.errors import BadRequest, Conflict
from inventory.inventory import Inventory
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from inventory.specs import ItemSpec, StorageSpec
from inventory.store.ops import DbOp, InsertItems, InsertReplicas, InsertStorage

MAX_BATCH = 10_000

Change = tuple[str, Any]  # ("storage" | "item" | "replica", record)


@dataclass(slots=True)
class Prepared:
    ops: list[DbOp]
    apply: Callable[[Inventory], Any]  # returns the client's result
    changes: list[Change]
    rows: int = 1  # size hint for grouping


@dataclass(slots=True)
class Pending:
    """Names and ids claimed by writes earlier in the same group, not yet in memory."""

    item_versions: dict[str, set[int]] = field(default_factory=dict)
    storage_names: set[str] = field(default_factory=set)
    storage_ids: set[int] = field(default_factory=set)

    def latest_version(self, inv: Inventory, name: str) -> int:
        row = inv.row_of_name(name)
        latest = 0 if row is None else inv.i_version[row]
        return max(latest, max(self.item_versions.get(name, ()), default=0))

    def has_version(self, inv: Inventory, name: str, version: int) -> bool:
        return (version in self.item_versions.get(name, ())
                or inv.row_of_name(name, version) is not None)


class Write(abc.ABC):
    """A request to change the inventory."""

    @abc.abstractmethod
    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        """Check the request; raise a DLMError (nothing changes) or say what will change."""


class AddStorage(Write):
    def __init__(self, spec: StorageSpec) -> None:
        self.spec = spec

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        spec = self.spec
        name = validate.storage_name(spec.name, "name")
        if name in inv.storage_by_name or name in pending.storage_names:
            raise Conflict(f"a storage named {name!r} exists already", "name")
        capacity = validate.byte_size(spec.capacity, "capacity")
        _check_root(spec.kind, spec.root)
        storage_id = max([inv.next_storage_id(), *(i + 1 for i in pending.storage_ids)])
        if storage_id > model.MAX_STORAGE_ID:
            raise Conflict(f"no storage id left (at most {model.MAX_STORAGE_ID} storages)", "name")
        record = StorageRecord(storage_id, name, spec.kind, spec.root, capacity,
                               model.PHASE[spec.phase], spec.status, dict(spec.attributes),
                               dict(spec.config), model.now())
        pending.storage_names.add(name)
        pending.storage_ids.add(storage_id)

        def apply(inv: Inventory):
            return inv.add_storage(record)

        return Prepared([InsertStorage(record)], apply, [("storage", record)])


def _check_root(kind: str, root: str) -> None:
    if kind == "posix":
        if not root.startswith("/"):
            raise BadRequest("a posix root must be an absolute directory path", "root")
    elif not root or root.startswith("/") or "//" in root:
        raise BadRequest("an s3 root is 'bucket' or 'bucket/prefix'", "root")


class AddItems(Write):
    """Register items, and for the one-call ingest their first complete replica."""

    def __init__(self, specs: list[ItemSpec], *, batch: bool = True) -> None:
        self.specs = specs
        self.batch = batch

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        specs = self.specs
        if len(specs) > MAX_BATCH:
            raise BadRequest(f"at most {MAX_BATCH} items per request, got {len(specs)}", "items")
        if not specs:
            raise BadRequest("at least one item is required", "items")
        now = model.now()
        items: list[ItemRecord] = []
        replicas: list[ReplicaRecord] = []
        claimed: dict[str, set[int]] = {}
        storages = inv.storage_by_name
        for index, spec in enumerate(specs):
            where = f"items[{index}]." if self.batch else ""
            name = validate.item_name(spec.item_name, where + "item_name")
            version = spec.item_version
            mine = claimed.setdefault(name, set())
            if version is None:
                version = max(pending.latest_version(inv, name), max(mine, default=0)) + 1
            elif version in mine or pending.has_version(inv, name, version):
                raise Conflict(f"{name!r} version {version} exists already",
                               where + "item_version")
            mine.add(version)
            parent = None
            if spec.parent_oid is not None:
                parent = validate.uuid_value(spec.parent_oid, where + "parent_oid")
                prow = inv.row_of_oid(parent)
                if prow is None:
                    raise BadRequest(f"no item with oid {spec.parent_oid}", where + "parent_oid")
                if inv.i_type[prow] != model.CONTAINER:
                    raise BadRequest(f"{inv.i_name[prow]!r} is not a container",
                                     where + "parent_oid")
            if spec.expire_at is not None and spec.lifetime is not None:
                raise BadRequest("give expire_at or lifetime, not both", where + "lifetime")
            expire_at = (validate.time_value(spec.expire_at, where + "expire_at")
                         if spec.expire_at is not None
                         else None if spec.lifetime is None else now + spec.lifetime)
            item_type = model.ITEM_TYPE[spec.item_type]
            method = spec.checksum_method
            if method is None and spec.checksum is not None:
                method = model.DEFAULT_CHECKSUM_METHOD
            oid = model.new_oid()
            state = model.INITIALISED
            if spec.storage is not None:
                storage = storages.get(spec.storage)
                if storage is None:
                    raise BadRequest(f"no storage named {spec.storage!r}", where + "storage")
                if storage.status not in ("online", "draining"):
                    raise Conflict(f"storage {storage.name!r} is {storage.status}",
                                   where + "storage")
                if item_type == model.CONTAINER:
                    raise BadRequest("a container has no payload to place on a storage",
                                     where + "storage")
                if spec.size is None:
                    raise BadRequest("required when storage is given", where + "size")
                state = model.READY
                replicas.append(ReplicaRecord(oid, storage.id, spec.uri, model.COMPLETE,
                                              spec.size, spec.checksum, now, None, None))
            elif spec.uri is not None:
                raise BadRequest("uri needs a storage", where + "uri")
            items.append(ItemRecord(
                oid, name, version, item_type, state, model.PHASE[spec.target_phase], spec.size,
                spec.checksum, method, spec.metadata, parent, now, expire_at, 0, None,
                spec.owner, spec.group,
            ))
        for name, versions in claimed.items():
            pending.item_versions.setdefault(name, set()).update(versions)

        def apply(inv: Inventory) -> list[ItemRecord]:
            inv.add_items(items)
            inv.add_replicas(replicas)
            return items

        ops: list[DbOp] = [InsertItems(items)]
        if replicas:
            ops.append(InsertReplicas(replicas))
        changes: list[Change] = [("item", rec) for rec in items]
        changes.extend(("replica", rep) for rep in replicas)
        return Prepared(ops, apply, changes, rows=len(items) + len(replicas))
