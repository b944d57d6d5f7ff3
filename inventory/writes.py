"""Write transactions: each checks a request against the inventory and says what will change.

A write is prepared by the scheduler's writer (the only code that mutates the inventory), so the
memory it checks against cannot move under it. ``prepare`` returns the database operations and an
``apply`` that changes memory; ``apply`` runs only after the database committed. Writes grouped
in one database transaction see each other's claims through ``Pending``, so two requests in a
group cannot both create ``name`` version 3.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from inventory import model, validate
from inventory.errors import BadRequest, Conflict, Forbidden, NotFound
from inventory.feed import REMOVED_STORAGE
from inventory.ingest import VERIFY_INGEST, Payload, recheck, verifies_ingest
from inventory.inventory import NONE, Inventory
from inventory.metadata import check as check_values
from inventory.objects import CopyRequest, IdFloor, Token
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from inventory.specs import (
    AccessSpec,
    ItemPatch,
    ItemSpec,
    RequestSpec,
    StoragePatch,
    StorageSpec,
    TokenSpec,
)
from inventory.storage import paths
from inventory.storage.errors import ConfigError, InvalidPath
from inventory.storage.factory import check_config
from inventory.store.base import ITEM_COLUMNS, STORAGE_COLUMNS, item_db_row, storage_db_row
from inventory.store.generic import upsert
from inventory.store.ops import (
    DbOp,
    DeleteRows,
    InsertItems,
    InsertReplicas,
    InsertStorage,
    UpsertRows,
)

MAX_BATCH = 10_000
DELETED_REPLICA = model.REPLICA_STATE["deleted"]
MAX_VERSION = 2**31 - 1  # specs.Version's bound: item versions are a 32-bit column

Change = tuple[str, Any]  # ("storage" | "item" | "replica", record)


@dataclass(slots=True)
class Prepared:
    ops: list[DbOp]
    apply: Callable[[Inventory], Any]  # returns the client's result
    changes: list[Change]
    rows: int = 1  # size hint for grouping


@dataclass(slots=True)
class Pending:
    """What writes earlier in the same group will change, not yet in memory: later writes of
    the group read through it, so two increments of one counter both count."""

    item_versions: dict[str, set[int]] = field(default_factory=dict)
    storage_names: set[str] = field(default_factory=set)
    storage_ids: set[int] = field(default_factory=set)
    items: dict[int, ItemRecord] = field(default_factory=dict)
    new_replicas: set[tuple[int, int]] = field(default_factory=set)
    deleting: set[tuple[int, int]] = field(default_factory=set)  # (oid, storage id)
    # (oid, storage id) of replicas earlier writes of the group remove: a write deciding on
    # what is left of an item (the last deletion of an expired item) counts them as gone
    removed: set[tuple[int, int]] = field(default_factory=set)
    storages: dict[int, StorageRecord] = field(default_factory=dict)
    objects: dict[tuple[str, Any], Any] = field(default_factory=dict)  # (table, key) -> object
    max_ids: dict[str, int] = field(default_factory=dict)
    # Files claimed by replicas of the group (see claim_path): (storage id, path) -> oid of the
    # replicas registered at a uri, the (oid, storage id) of those, and the oids of new items.
    # A default-path claim needs no entry: (oid, storage id) in new_replicas says it.
    path_claims: dict[tuple[int, str], int] = field(default_factory=dict)
    custom_claims: set[tuple[int, int]] = field(default_factory=set)
    new_items: dict[tuple[str, int], int] = field(default_factory=dict)
    # bytes registered by the group per storage id (containers: -1 - row): the int64 bound
    bytes_added: dict[int, int] = field(default_factory=dict)

    def item(self, inv: Inventory, oid: int) -> ItemRecord | None:
        rec = self.items.get(oid)
        if rec is not None:
            return rec
        row = inv.row_of_oid(oid)
        return None if row is None else inv.item_record(row)

    def item_state(self, inv: Inventory, oid: int) -> int | None:
        """``item(inv, oid).state`` without building the record (a Detox plan asks it for
        every deletion)."""
        rec = self.items.get(oid)
        if rec is not None:
            return rec.state
        row = inv.row_of_oid(oid)
        return None if row is None else inv.i_state[row]

    def has_replica(self, inv: Inventory, oid: int, storage_id: int) -> bool:
        return ((oid, storage_id) in self.new_replicas
                or inv.replica_row(oid, storage_id) is not None)

    def has_complete_replica(self, inv: Inventory, oid: int) -> bool:
        if any(o == oid for o, _ in self.new_replicas):
            return True
        row = inv.row_of_oid(oid)
        return row is not None and any(inv.r_state[r] == model.COMPLETE
                                       for r in inv.replica_rows_of_item(row))

    def storage(self, inv: Inventory, name: str) -> StorageRecord | None:
        storage = inv.storage_by_name.get(name)
        if storage is None:
            return None
        return self.storages.get(storage.id) or storage.record()

    def next_id(self, inv: Inventory, table: str) -> int:
        """A new id for ``table``: one more than any it ever gave (``Inventory.last_ids``, O(1):
        the scan of every operation ever queued made each cycle slower than the last)."""
        current = max(self.max_ids.get(table, 0), inv.last_ids.get(table, 0))
        self.max_ids[table] = current + 1
        return current + 1

    def latest_version(self, inv: Inventory, name: str) -> int:
        row = inv.row_of_name(name)
        latest = 0 if row is None else inv.i_version[row]
        return max(latest, max(self.item_versions.get(name, ()), default=0))

    def has_version(self, inv: Inventory, name: str, version: int) -> bool:
        return (version in self.item_versions.get(name, ())
                or inv.row_of_name(name, version) is not None)


@dataclass(slots=True)
class Claims:
    """Path claims a write makes before they join ``Pending`` (merged when it succeeds)."""

    new_replicas: set[tuple[int, int]] = field(default_factory=set)
    path_claims: dict[tuple[int, str], int] = field(default_factory=dict)
    custom_claims: set[tuple[int, int]] = field(default_factory=set)
    new_items: dict[tuple[str, int], int] = field(default_factory=dict)

    def merge_into(self, pending: Pending) -> None:
        pending.new_replicas.update(self.new_replicas)
        pending.path_claims.update(self.path_claims)
        pending.custom_claims.update(self.custom_claims)
        pending.new_items.update(self.new_items)


def path_holder(inv: Inventory, layers: tuple[Pending | Claims, ...], storage_id: int,
                path: str, oid: int, owners: list[tuple[str, int]]) -> int | None:
    """The oid of the live replica other than ``oid``'s whose file on the storage is ``path``:
    in memory, or claimed earlier in the same group or write (``layers``); None when the file
    is free. ``owners`` are the (name, version) whose default path ``path`` is, but ``oid``'s
    own item (``storage.paths.default_owners``)."""
    row = inv.path_holder(storage_id, path, skip_oid=oid, owners=())  # registered uris
    if row is not None:
        return inv.i_oid[inv.r_item[row]]
    for layer in layers:
        if layer.path_claims:
            holder = layer.path_claims.get((storage_id, path))
            if holder is not None and holder != oid:
                return holder
    for owner in owners:
        other = None
        for layer in layers:
            other = layer.new_items.get(owner)
            if other is not None:
                break
        if other is None:
            item = inv.row_of_name(*owner)
            if item is None:
                continue
            other = inv.i_oid[item]
        if other == oid:
            continue
        key = (other, storage_id)
        row = inv.replica_row(other, storage_id)
        if row is not None and row not in inv.r_uri and inv.r_state[row] != DELETED_REPLICA:
            return other
        if any(key in layer.new_replicas for layer in layers) \
                and not any(key in layer.custom_claims for layer in layers):
            return other
    return None


def claim_path(inv: Inventory, layers: tuple[Pending | Claims, ...], mine: Claims,
               storage: StorageRecord | Any, oid: int, name: str, version: int,
               uri: str | None, field: str) -> None:
    """Refuse (409 naming ``field``) a replica of ``oid`` on ``storage`` whose file another
    live replica names, else record the claim in ``mine``: one file per replica."""
    sid = storage.id
    key = (oid, sid)
    if uri is None and version == 1 and paths.VERSION_MARK not in name \
            and not inv.uri_index.get(sid) and not mine.path_claims:
        for layer in layers:
            if layer.path_claims:
                break
        else:
            # The usual Dealer copy: the bare name is the default path of (name, 1) alone,
            # and no uri on the storage can name it: nothing to look up.
            mine.new_replicas.add(key)
            return
    path = paths.replica_path(storage, name, version, uri)
    if uri is None and version > 1:
        owners = [(path, 1)]  # name@vN: the only other item it can be the default path of
    elif uri is None and paths.VERSION_MARK not in name:
        owners = []
    else:
        owners = [o for o in paths.default_owners(path) if o != (name, version)]
    holder = path_holder(inv, (*layers, mine), sid, path, oid, owners)
    if holder is not None:
        row = inv.row_of_oid(holder)
        what = ("another item" if row is None
                else f"{inv.i_name[row]!r} version {inv.i_version[row]}")
        raise Conflict(f"{path!r} on storage {storage.name!r} is the file of {what} "
                       f"(oid {model.format_uuid(holder)}): one file per replica", field,
                       holder=model.format_uuid(holder))
    mine.new_replicas.add(key)
    if uri is not None:
        mine.path_claims[(sid, path)] = oid
        mine.custom_claims.add(key)


def normal_uri(storage: StorageRecord | Any, uri: str, field: str) -> str:
    """A registered uri in its normal form: relative uris resolved against the root, anything
    outside the root or bucket prefix, or a path the storage would refuse, a 400 naming
    ``field``."""
    try:
        path = paths.path_of_uri(storage.kind, storage.root, uri)
    except InvalidPath as exc:
        raise BadRequest(f"{exc.message} (storage {storage.name!r} is "
                         f"{paths.storage_prefix(storage.kind, storage.root)!r})",
                         field) from None
    return paths.uri_of(storage.kind, storage.root, path)


class Write(abc.ABC):
    """A request to change the inventory."""

    # Prepared and committed in a group of its own: the writes around it in the queue then
    # see memory with it applied, not through ``Pending`` (removing a storage: every write that
    # names a storage would otherwise have to ask Pending whether it is still there).
    alone: bool = False

    @abc.abstractmethod
    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        """Check the request; raise a DLMError (nothing changes) or say what will change."""


class AddStorage(Write):
    def __init__(self, spec: StorageSpec, real_roots: Mapping[str, str] | None = None) -> None:
        """``real_roots``: the real path (``os.path.realpath``) of each POSIX root that exists,
        the new one and the registered ones, looked up by the request handler off the event
        loop (a hung mount must not stop the writer); None: looked up here (tests, tools)."""
        self.spec = spec
        self.real_roots = real_roots

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        spec = self.spec
        root = validate.storage_root(spec.kind, spec.root)
        if root != spec.root:  # stored, compared and shown in its one normal form
            spec = msgspec.structs.replace(spec, root=root)
        name = validate.storage_name(spec.name, "name")
        if name in inv.storage_by_name or name in pending.storage_names:
            raise Conflict(f"a storage named {name!r} exists already", "name")
        capacity = validate.byte_size(spec.capacity, "capacity")
        check_values(spec.attributes, "attributes")  # jsonb: no NaN, no int past 64 bits
        check_values(spec.config, "config")
        _check_root(spec.kind, spec.root)
        _check_verify_ingest(spec.config)
        others = [*inv.storages.values(),
                  *(rec for (table, _), rec in pending.objects.items() if table == _NEW_ROOT)]
        _check_overlap(spec, others, self.real_roots)
        storage_id = max([inv.next_storage_id(), *(i + 1 for i in pending.storage_ids)])
        if storage_id > model.MAX_STORAGE_ID:
            raise Conflict(f"no storage id left (at most {model.MAX_STORAGE_ID} storages)", "name")
        record = StorageRecord(storage_id, name, spec.kind, spec.root, capacity,
                               model.PHASE[spec.phase], spec.status, dict(spec.attributes),
                               dict(spec.config), model.now())
        pending.storage_names.add(name)
        pending.storage_ids.add(storage_id)
        pending.objects[(_NEW_ROOT, name)] = record  # a later AddStorage of the group sees it

        def apply(inv: Inventory):
            return inv.add_storage(record)

        return Prepared([InsertStorage(record)], apply, [("storage", record)])


def _check_root(kind: str, root: str) -> None:
    if kind == "posix":
        validate.storage_root(kind, root)
    elif not root or root.startswith("/") or "//" in root:
        raise BadRequest("an s3 root is 'bucket' or 'bucket/prefix'", "root")


_NEW_ROOT = "storage_root"


def real_roots(roots: list[str]) -> dict[str, str]:
    """The real path of each POSIX root (blocking: a thread). A root that does not exist yet is
    resolved as far as it exists: ``/x/alias/q``, with ``alias`` a symlink to another storage's
    root and ``q`` not made yet, is that root's ``q`` and overlaps it."""
    return {root: os.path.realpath(root) for root in roots}


def _nested(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` (normalised, '/'-separated) are equal or one contains the
    other at a '/' boundary ('' contains everything: a whole bucket)."""
    if a == b or not a or not b:
        return True
    return b.startswith(a.rstrip("/") + "/") or a.startswith(b.rstrip("/") + "/")


def _check_overlap(spec: StorageSpec, others: list[StorageRecord],
                   reals: Mapping[str, str] | None) -> None:
    """Refuse a root that equals, contains or lies inside another storage's root: a uri
    registered on one would name a file of the other, and deleting it there would remove
    another item's payload (issue 15). POSIX: normalised strings, and real paths where the
    directories exist (a symlink to another root, a trailing-slash twin); S3: the same bucket
    at the same endpoint with prefixes that overlap at a '/' boundary."""
    if spec.kind == "posix":
        posix = [o for o in others if o.kind == "posix"]
        if reals is None:
            reals = real_roots([spec.root, *(o.root for o in posix)])
        mine = {os.path.normpath(spec.root), reals.get(spec.root)} - {None}
        for other in posix:
            theirs = {os.path.normpath(other.root), reals.get(other.root)} - {None}
            if any(_nested(a, b) for a in mine for b in theirs if a and b):
                _overlap(spec.root, other)
        return
    bucket, prefix, endpoint = _s3_place(spec.root, spec.config)
    for other in others:
        if other.kind != spec.kind:
            continue
        their_bucket, their_prefix, their_endpoint = _s3_place(other.root, other.config)
        if (their_bucket, their_endpoint) == (bucket, endpoint) and _nested(prefix,
                                                                              their_prefix):
            _overlap(spec.root, other)


def _s3_place(root: str, config: Mapping[str, Any]) -> tuple[str, str, str | None]:
    location = root.removeprefix("s3://").strip("/")
    bucket, _, prefix = location.partition("/")
    endpoint = config.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") \
        or os.environ.get("AWS_ENDPOINT_URL")
    return bucket, prefix.strip("/"), str(endpoint).rstrip("/") if endpoint else None


def _overlap(root: str, other: StorageRecord) -> None:
    raise Conflict(f"root {root} overlaps the root {other.root} of storage {other.name!r} "
                   "(equal, inside it or containing it): two storages must never name one "
                   "file, or a deletion on one would remove the other's payload", "root",
                   storage=other.name)


def _check_verify_ingest(config: dict[str, Any]) -> None:
    """``verify_ingest`` decides whether the server looks at payloads: a typo must not be
    taken for "off" (or "on") silently."""
    if not isinstance(config.get(VERIFY_INGEST, True), bool):
        raise BadRequest(f"expected true or false, got {config[VERIFY_INGEST]!r}",
                         f"config.{VERIFY_INGEST}")


class AddItems(Write):
    """Register items, and for the one-call ingest their first complete replica."""

    def __init__(self, specs: list[ItemSpec], *, batch: bool = True,
                 registered_by: str | None = None,
                 payloads: list[Payload | None] | None = None) -> None:
        """``payloads``: what the request handler found on the storages, one per spec
        (``inventory.server.ingest``); None only for callers that checked nothing (tests,
        benchmarks of the writer alone)."""
        self.specs = specs
        self.batch = batch
        self.registered_by = registered_by  # the token's name: who may later expire them
        self.payloads = payloads

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
        claims = Claims()
        container_sizes: dict[int, int] = {}
        added: dict[int, int] = {}  # bytes per storage or container (_claim_bytes)
        storages = inv.storage_by_name
        for index, spec in enumerate(specs):
            where = f"items[{index}]." if self.batch else ""
            name = validate.item_name(spec.item_name, where + "item_name")
            version = spec.item_version
            mine = claimed.setdefault(name, set())
            if version is None:
                version = max(pending.latest_version(inv, name), max(mine, default=0)) + 1
                if version > MAX_VERSION:  # would overflow the column after the commit
                    raise Conflict(f"{name!r} has version {MAX_VERSION}, the last one: give "
                                   f"a free item_version", where + "item_version")
            elif version in mine or pending.has_version(inv, name, version):
                raise Conflict(f"{name!r} version {version} exists already",
                               where + "item_version")
            mine.add(version)
            parent, prow = None, -1
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
                         else None if spec.lifetime is None
                         else validate.expiry_after(now, spec.lifetime, where + "lifetime"))
            item_type = model.ITEM_TYPE[spec.item_type]
            checksum, method = validate.checksum(spec.checksum, spec.checksum_method, where)
            size = spec.size
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
                uri = None if spec.uri is None else normal_uri(storage, spec.uri, where + "uri")
                if self.payloads is not None and verifies_ingest(storage.config):
                    found = recheck(self.payloads[index], storage, version, spec.uri,
                                    where + "storage")
                    size = found.size
                    if found.checksum is not None:
                        checksum, method = found.checksum, model.DEFAULT_CHECKSUM_METHOD
                if size is None:
                    raise BadRequest("required when storage is given" + _unverified(storage),
                                     where + "size")
                claims.new_items[(name, version)] = oid
                claim_path(inv, (pending,), claims, storage, oid, name, version, uri,
                           where + ("storage" if uri is None else "uri"))
                _claim_bytes(storage.id, storage.used, f"storage {storage.name!r}", pending,
                             added, size, where + "size")
                state = model.READY
                replicas.append(ReplicaRecord(oid, storage.id, uri, model.COMPLETE,
                                              size, checksum, now, None, None))
            elif spec.uri is not None:
                raise BadRequest("uri needs a storage", where + "uri")
            if parent is not None and size:
                top = _outermost(inv, prow)
                if top not in container_sizes:
                    container_sizes[top] = inv.container_size(top)
                _claim_bytes(-1 - top, container_sizes[top], f"container {inv.i_name[top]!r}",
                             pending, added, size, where + "size")
            items.append(ItemRecord(
                oid, name, version, item_type, state, model.PHASE[spec.target_phase], size,
                checksum, method, spec.metadata, parent, now, expire_at, 0, None,
                spec.owner, spec.group, self.registered_by,
            ))
        for name, versions in claimed.items():
            pending.item_versions.setdefault(name, set()).update(versions)
        claims.merge_into(pending)
        for key, count in added.items():
            pending.bytes_added[key] = pending.bytes_added.get(key, 0) + count

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


def _claim_bytes(key: int, base: int, what: str, pending: Pending, mine: dict[int, int],
                 size: int, field: str) -> None:
    """Count ``size`` more bytes on a storage or container (``key``: storage id, or -1 - row
    of a container) holding ``base`` bytes, refusing a total past int64: every sum over sizes
    stays an exact int that fits the columns, the int64 arrays and the JSON answers."""
    total = base + pending.bytes_added.get(key, 0) + mine.get(key, 0) + size
    if total > validate.MAX_BYTES:
        raise Conflict(f"{what} would hold {total} bytes, more than {validate.MAX_BYTES} "
                       f"(a signed 64-bit integer)", field)
    mine[key] = mine.get(key, 0) + size


def _unverified(storage: Any) -> str:
    return ("" if verifies_ingest(storage.config) else
            f" (storage {storage.name!r} has verify_ingest off: the server does not look there)")


def _outermost(inv: Inventory, row: int) -> int:
    """The container holding ``row`` at the top: its size includes every inner one's."""
    while (up := inv.i_parent[row]) != -1:
        row = up
    return row


# --------------------------------------------------------------------------- item changes

def _oid(text: str, field: str) -> int:
    oid = validate.uuid_value(text, field)
    return oid


def _item_or_404(inv: Inventory, pending: Pending, text: str, field: str) -> ItemRecord:
    rec = pending.item(inv, _oid(text, field))
    if rec is None:
        raise NotFound(f"no item with oid {text}", field)
    return rec


def _accepting_storage(inv: Inventory, pending: Pending, name: str, field: str) -> StorageRecord:
    storage = pending.storage(inv, name)
    if storage is None:
        raise BadRequest(f"no storage named {name!r}", field)
    if storage.status not in ("online", "draining"):
        raise Conflict(f"storage {name!r} is {storage.status}", field)
    return storage


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for a write: the token's name (None without tokens) and its role."""

    name: str | None
    role: str


OPERATOR = Actor(None, "operator")  # the server itself, open mode, tests
CHANGE_RULE = "producer_changes_own_items"
# What a PATCH changes, in the order a refusal names them (``verify`` says how, not what).
PATCH_FIELDS = ("state", "expire_at", "lifetime", "target_phase", "metadata", "size",
                "checksum", "checksum_method", "storage", "uri")


def may_change(actor: Actor, registered_by: str | None) -> bool:
    """An account changes only its own items, an operator any (Rucio's rule for DIDs): every
    field of an item can destroy its data (an expiry or state deletes it, a wrong size or
    checksum gets the good copy marked corrupt, a fake location plus a lower phase lets Detox
    delete the genuine copy). Items no token registered are the operators'."""
    return actor.role == "operator" or (actor.name is not None
                                        and actor.name == registered_by)


def check_change_rule(actor: Actor, rec: ItemRecord, patch: ItemPatch, where: str) -> None:
    """403 naming the rule and the first field the PATCH would change, unless ``actor`` may
    change ``rec`` (``may_change``)."""
    if may_change(actor, rec.registered_by):
        return
    field_name = next((f for f in PATCH_FIELDS if getattr(patch, f) is not msgspec.UNSET),
                      "oid")
    by = ("no token (only operators may change it)" if rec.registered_by is None
          else f"token {rec.registered_by!r}")
    raise Forbidden(f"a producer may change only the items it registered: "
                    f"{rec.item_name!r} v{rec.item_version} was registered by {by}, not "
                    f"{actor.name!r}; ask an operator", where + field_name, rule=CHANGE_RULE,
                    registered_by=rec.registered_by)


def check_changes(inv: Inventory, actor: Actor, patches: Sequence[tuple[str, ItemPatch]],
                  batch: bool) -> None:
    """The change rule, in the request handler: a refused PATCH is answered before any payload
    of it is looked at. ``UpdateItems`` checks again in the writer (the authority); an oid
    that is bad or unknown here is left to it."""
    if actor.role == "operator":
        return
    for index, (oid_text, patch) in enumerate(patches):
        try:
            row = inv.row_of_oid(model.parse_uuid(oid_text))
        except ValueError:
            continue
        if row is not None:
            check_change_rule(actor, inv.item_record(row), patch,
                              f"items[{index}]." if batch else "")


class UpdateItems(Write):
    """PATCH: the SKA DLM setters (state, phase, expiry, metadata, checksum, size, location)."""

    def __init__(self, patches: list[tuple[str, ItemPatch]], *, batch: bool = True,
                 actor: Actor = OPERATOR,
                 payloads: list[Payload | None] | None = None) -> None:
        """``payloads``: the payloads of the locations registered, as for ``AddItems``."""
        self.patches = patches
        self.batch = batch
        self.actor = actor
        self.payloads = payloads

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        if not self.patches:
            raise BadRequest("at least one change is required", "items")
        if len(self.patches) > MAX_BATCH:
            raise BadRequest(f"at most {MAX_BATCH} changes per request", "items")
        now = model.now()
        mine = Pending(items=dict(pending.items), new_replicas=set(pending.new_replicas),
                       storages=pending.storages, path_claims=dict(pending.path_claims),
                       custom_claims=set(pending.custom_claims), new_items=pending.new_items)
        records: dict[int, ItemRecord] = {}
        replicas: list[ReplicaRecord] = []
        added: dict[int, int] = {}
        for index, (oid_text, patch) in enumerate(self.patches):
            where = f"items[{index}]." if self.batch else ""
            rec = _item_or_404(inv, mine, oid_text, where + "oid")
            check_change_rule(self.actor, rec, patch, where)
            payload = NO_CHECK if self.payloads is None else self.payloads[index]
            new, replica = _patched(inv, mine, rec, patch, where, now, payload)
            if replica is not None:
                storage = inv.storages[replica.storage_id]
                _claim_bytes(storage.id, storage.used, f"storage {storage.name!r}", pending,
                             added, replica.size or 0, where + "size")
            if replica is not None:
                replicas.append(replica)
                mine.new_replicas.add((rec.oid, replica.storage_id))
                if replica.uri is not None:
                    storage = inv.storages[replica.storage_id]
                    mine.path_claims[(storage.id, paths.replica_path(
                        storage, rec.item_name, rec.item_version, replica.uri))] = rec.oid
                    mine.custom_claims.add((rec.oid, replica.storage_id))
            mine.items[rec.oid] = new
            records[rec.oid] = new
        pending.items.update(records)
        pending.new_replicas.update((r.oid, r.storage_id) for r in replicas)
        pending.path_claims.update(mine.path_claims)
        pending.custom_claims.update(mine.custom_claims)
        for key, count in added.items():
            pending.bytes_added[key] = pending.bytes_added.get(key, 0) + count
        items = list(records.values())

        def apply(inv: Inventory) -> list[ItemRecord]:
            inv.update_items(items)
            inv.add_replicas(replicas)
            return items

        ops: list[DbOp] = [item_upsert(items)]
        if replicas:
            ops.append(InsertReplicas(replicas))
        changes: list[Change] = [("item", r) for r in items]
        changes.extend(("replica", r) for r in replicas)
        return Prepared(ops, apply, changes, rows=len(items) + len(replicas))


def item_upsert(items: list[ItemRecord]) -> UpsertRows:
    out = model.format_uuid
    return UpsertRows("data_item", ITEM_COLUMNS, ("oid",), [item_db_row(r, out) for r in items])


NO_CHECK = Payload(-1, "", "", "", None, -1, None)  # UpdateItems without payloads: trusted


def _patched(inv: Inventory, pending: Pending, rec: ItemRecord, patch: ItemPatch, where: str,
             now: float, payload: Payload | None = NO_CHECK
             ) -> tuple[ItemRecord, ReplicaRecord | None]:
    changes: dict[str, Any] = {}
    unset = msgspec.UNSET
    if patch.target_phase is not unset:
        changes["target_phase"] = model.PHASE[patch.target_phase]
    if patch.expire_at is not unset and patch.lifetime is not unset:
        raise BadRequest("give expire_at or lifetime, not both", where + "lifetime")
    if patch.expire_at is not unset:
        changes["expire_at"] = (None if patch.expire_at is None
                                else validate.time_value(patch.expire_at, where + "expire_at"))
    if patch.lifetime is not unset:
        changes["expire_at"] = validate.expiry_after(now, patch.lifetime, where + "lifetime")
    if patch.metadata is not unset:
        changes["metadata"] = patch.metadata or None
    if patch.size is not unset:
        changes["size"] = patch.size
    if patch.checksum is not unset or patch.checksum_method is not unset:
        given = rec.checksum if patch.checksum is unset else patch.checksum
        method = rec.checksum_method if patch.checksum_method is unset else patch.checksum_method
        checksum, method = validate.checksum(given, method, where)
        if patch.checksum is not unset:
            changes["checksum"] = checksum
        if method != rec.checksum_method:
            changes["checksum_method"] = method
    replica = None
    if patch.uri is not unset and patch.storage is unset:
        raise BadRequest("uri needs a storage", where + "uri")
    state = rec.state
    if patch.storage is not unset:
        storage = _accepting_storage(inv, pending, patch.storage, where + "storage")
        if rec.item_type == model.CONTAINER:
            raise BadRequest("a container has no payload to place on a storage",
                             where + "storage")
        if pending.has_replica(inv, rec.oid, storage.id):
            raise Conflict(f"{rec.item_name!r} already has a replica on {storage.name!r}",
                           where + "storage")
        size = changes.get("size", rec.size)
        if payload is not NO_CHECK and verifies_ingest(storage.config):
            found = recheck(payload, storage, rec.item_version,
                            None if patch.uri is unset else patch.uri, where + "storage")
            if size is None:
                size = changes["size"] = found.size
            if found.checksum is not None and changes.get("checksum", rec.checksum) is None:
                changes["checksum"] = found.checksum
                changes["checksum_method"] = model.DEFAULT_CHECKSUM_METHOD
        if size is None:
            raise BadRequest("the item's size must be known (give size) to register a copy"
                             + _unverified(storage), where + "size")
        if state in (model.EXPIRED, model.DELETED):
            raise Conflict(f"cannot register a copy of a {model.ITEM_STATES[state]} item",
                           where + "storage")
        uri = None if patch.uri is unset or patch.uri is None \
            else normal_uri(storage, patch.uri, where + "uri")
        claim_path(inv, (pending,), Claims(), storage, rec.oid, rec.item_name,
                   rec.item_version, uri, where + ("storage" if uri is None else "uri"))
        replica = ReplicaRecord(rec.oid, storage.id, uri,
                                model.COMPLETE, size, changes.get("checksum", rec.checksum),
                                now, None, None)
        if state == model.INITIALISED:
            changes["state"] = model.READY
    if patch.state is not unset:
        wanted = model.ITEM_STATE[patch.state]
        current = changes.get("state", state)
        if wanted != current:
            if wanted not in model.ITEM_TRANSITIONS[state]:
                hint = (" (items reach DELETED through deletion)" if wanted == model.DELETED
                        else "")
                raise Conflict(f"cannot go from {model.ITEM_STATES[state]} to {patch.state}"
                               f"{hint}", where + "state", from_state=model.ITEM_STATES[state],
                               to_state=patch.state)
            if wanted == model.READY and replica is None \
                    and not pending.has_complete_replica(inv, rec.oid):
                raise Conflict(f"{rec.item_name!r} has no complete replica: register its "
                               f"location (storage, uri) to make it READY", where + "state")
        changes["state"] = wanted
    return rec._replace(**changes), replica


class DeleteItem(Write):
    """Mark an item for deletion: Detox removes its payloads; nothing is removed inline."""

    def __init__(self, oid: str) -> None:
        self.oid = oid

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        rec = _item_or_404(inv, pending, self.oid, "oid")
        if rec.state == model.DELETED:
            raise Conflict(f"{rec.item_name!r} is deleted already", "oid")
        row = inv.by_oid[rec.oid]
        has_payload = (inv.i_first_replica[row] != -1
                       or any(o == rec.oid for o, _ in pending.new_replicas))
        now = model.now()
        new = rec._replace(state=model.EXPIRED if has_payload else model.DELETED,
                           expire_at=now if has_payload else rec.expire_at)
        pending.items[rec.oid] = new

        def apply(inv: Inventory) -> ItemRecord:
            inv.update_items([new])
            return new

        return Prepared([item_upsert([new])], apply, [("item", new)])


class RecordAccesses(Write):
    """Count reads of items (popularity); many clients' reads share one transaction."""

    def __init__(self, accesses: list[tuple[str, AccessSpec]], *, batch: bool = True) -> None:
        self.accesses = accesses
        self.batch = batch

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        if not self.accesses:
            raise BadRequest("at least one access is required", "accesses")
        if len(self.accesses) > MAX_BATCH:
            raise BadRequest(f"at most {MAX_BATCH} accesses per request", "accesses")
        now = model.now()
        records: dict[int, ItemRecord] = {}
        for index, (oid_text, access) in enumerate(self.accesses):
            where = f"accesses[{index}]." if self.batch else ""
            oid = _oid(oid_text, where + "oid")
            rec = records.get(oid) or pending.item(inv, oid)
            if rec is None:
                raise NotFound(f"no item with oid {oid_text}", where + "oid")
            if rec.state == model.DELETED:
                raise Conflict(f"{rec.item_name!r} is deleted", where + "oid")
            at = now if access.at is None else validate.time_value(access.at, where + "at")
            last = at if rec.last_access is None else max(rec.last_access, at)
            records[oid] = rec._replace(access_count=rec.access_count + access.count,
                                        last_access=last)
        pending.items.update(records)
        items = list(records.values())

        def apply(inv: Inventory) -> list[ItemRecord]:
            inv.update_items(items)
            return items

        return Prepared([item_upsert(items)], apply, [("item", r) for r in items],
                        rows=len(items))


# --------------------------------------------------------------------------- storages

class UpdateStorage(Write):
    def __init__(self, name: str, patch: StoragePatch) -> None:
        self.name = name
        self.patch = patch

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        rec = pending.storage(inv, self.name)
        if rec is None:
            raise NotFound(f"no storage named {self.name!r}", "name")
        patch, unset = self.patch, msgspec.UNSET
        changes: dict[str, Any] = {}
        if patch.capacity is not unset:
            changes["capacity"] = validate.byte_size(patch.capacity, "capacity")
        if patch.phase is not unset:
            changes["phase"] = model.PHASE[patch.phase]
        if patch.attributes is not unset:
            check_values(patch.attributes, "attributes")
            merged = dict(rec.attributes)
            for key, value in patch.attributes.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            changes["attributes"] = merged
        if patch.config is not unset:
            check_values(patch.config, "config")
            _check_verify_ingest(patch.config)
            changes["config"] = {**rec.config, **patch.config}
            check_storage_config(rec.kind, rec.root, changes["config"])
        if patch.status is not unset and patch.status != rec.status:
            if patch.status == "retired":
                last = inv.last_copies_on(rec.id)
                if last:
                    raise Conflict(f"storage {rec.name!r} holds the last complete copy of {last} "
                                   f"live item(s): drain it first", "status", last_copies=last)
            changes["status"] = patch.status
        new = rec._replace(**changes)
        pending.storages[rec.id] = new

        def apply(inv: Inventory):
            return inv.update_storage(new)

        op = UpsertRows("storage", STORAGE_COLUMNS, ("id",), [storage_db_row(new)])
        return Prepared([op], apply, [("storage", new)])


LIVE_OPERATIONS = ("queued", "running")


class RemoveStorage(Write):
    """Remove a storage that holds nothing: no replica row (in any state) and no queued or
    running operation or pending copy request names it. The finished operations and requests
    that named it go with it (they would point at nothing).

    Its id may then be given to a later storage: replica uids embed the storage id, and no
    replica row with this id is left (none can be added to a storage that does not exist).
    """

    alone = True

    def __init__(self, name: str) -> None:
        self.name = name

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        storage = inv.storage_by_name.get(self.name)
        if storage is None:
            raise NotFound(f"no storage named {self.name!r}", "name")
        sid, name = storage.id, storage.name
        op_ids, request_ids = inv.storage_history(sid)
        live = [i for i in op_ids if inv.operations[i].state in LIVE_OPERATIONS]
        if live:
            raise Conflict(f"storage {name!r} has {len(live)} queued or running operation(s) "
                           f"(first: {live[0]}): cancel them or let them finish first", "name",
                           reason="operations", operations=len(live))
        open_requests = [i for i in request_ids if inv.requests[i].state == "pending"]
        if open_requests:
            raise Conflict(f"storage {name!r} has {len(open_requests)} pending copy request(s) "
                           f"(first: {open_requests[0]}): cancel them first", "name",
                           reason="requests", requests=len(open_requests))
        if storage.replica_count or storage.head != NONE:
            raise Conflict(f"storage {name!r} holds {storage.replica_count} replica(s): drain "
                           f"it (or delete them) first; only an empty storage can be removed",
                           "name", reason="replicas", replicas=storage.replica_count)
        gone = storage.record()._replace(status=REMOVED_STORAGE)
        db_ops: list[DbOp] = []
        # by storage, not by id: finished operations past the retention are in the database
        # only (inventory.retention), and they go too
        db_ops.append(DeleteRows("operation", ("target_id",), [(sid,)]))
        db_ops.append(DeleteRows("operation", ("source_id",), [(sid,)]))
        if request_ids:
            db_ops.append(DeleteRows("copy_request", ("id",), [(i,) for i in request_ids]))
        db_ops.append(DeleteRows("storage", ("id",), [(sid,)]))
        # the removed rows may hold the highest ids: keep them, so no id is given twice
        floors = [IdFloor(table, inv.last_ids[table])
                  for table, ids in (("operation", op_ids or inv.operations_in_db_only),
                                     ("copy_request", request_ids))
                  if ids and table in inv.last_ids]
        if floors:
            db_ops.append(upsert(floors))

        def apply(inv: Inventory) -> dict[str, Any]:
            inv.remove_storage(sid)
            return {"name": name, "id": sid, "operations_removed": len(op_ids),
                    "requests_removed": len(request_ids)}

        return Prepared(db_ops, apply, [("storage", gone)])


# --------------------------------------------------------------------------- tokens

def check_storage_config(kind: str, root: str, config: dict[str, Any]) -> None:
    """A config the backend would refuse is a 400 now, not an internal error at the first
    inject or copy (``storage.factory.check_config``)."""
    _check_verify_ingest(config)  # names config.verify_ingest, the one setting DLM reads
    try:
        check_config(kind, root, config)
    except ConfigError as exc:
        raise BadRequest(exc.message, "root" if "root" in exc.message else "config") from None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AddToken(Write):
    """Create an API token; the secret is in the result only, the inventory keeps its hash."""

    def __init__(self, spec: TokenSpec) -> None:
        self.spec = spec

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        spec = self.spec
        name = validate.storage_name(spec.name, "name")
        if name in inv.tokens or ("token", name) in pending.objects:
            raise Conflict(f"a token named {name!r} exists already", "name")
        expires = None if spec.expires_at is None else validate.time_value(spec.expires_at,
                                                                           "expires_at")
        now = model.now()
        if expires is not None and expires <= now:
            raise BadRequest(f"must be in the future (a token that has expired lets nobody in), "
                             f"got {spec.expires_at!r}", "expires_at")
        if spec.role != "operator" and not _operators_left(inv, pending, now):
            # the first token ends open mode: a reader's or producer's alone would leave nobody
            # able to act as operator (nor to create one) until the config file is edited
            raise Conflict(f"no operator token exists: a {spec.role} token now would end open "
                           f"mode with nobody left to act as operator; create an operator token "
                           f"first (dlm token create --role operator)", "role")
        secret = "dlm_" + secrets.token_urlsafe(32)
        token = Token(name, spec.role, token_hash(secret), model.now(), expires)
        pending.objects[("token", name)] = token

        def apply(inv: Inventory) -> tuple[Token, str]:
            inv.put_object(token)
            return token, secret

        # Tokens stay out of the change feed: their hashes are nobody else's business.
        return Prepared([upsert([token])], apply, [])


def _operators_left(inv: Inventory, pending: Pending, now: float, but: str | None = None
                    ) -> bool:
    """Whether a live (unexpired) operator token other than ``but`` exists or is being made."""
    tokens = [*inv.tokens.values(),
              *(obj for (kind, _), obj in pending.objects.items() if kind == "token")]
    return any(t.role == "operator" and t.name != but
               and (t.expires_at is None or t.expires_at > now) for t in tokens)


class DeleteToken(Write):
    def __init__(self, name: str) -> None:
        self.name = name

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        token = inv.tokens.get(self.name)
        if token is None:
            raise NotFound(f"no token named {self.name!r}", "name")
        if token.from_config:
            raise Conflict(f"token {self.name!r} is listed in the server's config file: remove "
                           f"it there and restart the server", "name")
        now = model.now()
        if token.role == "operator" and len(inv.tokens) > 1 and \
                not _operators_left(inv, pending, now, but=token.name):
            raise Conflict(f"{self.name!r} is the last operator token: without it the other "
                           f"tokens could not act as operator (nor create one); create another "
                           f"operator token first, or delete the others", "name")
        name = self.name

        def apply(inv: Inventory) -> None:
            inv.remove_token(name)

        return Prepared([DeleteRows("token", ("name",), [(name,)])], apply, [])


# --------------------------------------------------------------------------- copy requests

class AddRequest(Write):
    def __init__(self, spec: RequestSpec, requester: str | None) -> None:
        self.spec = spec
        self.requester = requester

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        spec = self.spec
        row = None
        try:
            oid = model.parse_uuid(spec.item)
        except ValueError:
            row = inv.row_of_name(spec.item)
        else:
            row = inv.row_of_oid(oid)
        if row is None:
            raise NotFound(f"no item {spec.item!r} (give an oid or an item name)", "item")
        if inv.i_state[row] in (model.EXPIRED, model.DELETED):
            raise Conflict(f"{inv.i_name[row]!r} is {model.ITEM_STATES[inv.i_state[row]]}",
                           "item")
        storage = _accepting_storage(inv, pending, spec.storage, "storage")
        pin = None if spec.pin_until is None else validate.time_value(spec.pin_until,
                                                                      "pin_until")
        now = model.now()
        if pin is not None and pin <= now:
            # a pin that ended protects nothing: a typo (1970, 0001-01-01) would be accepted
            # as if the copy were kept
            raise BadRequest(f"must be in the future (a pin that ended keeps nothing), "
                             f"got {spec.pin_until!r}",
                             "pin_until")
        request = CopyRequest(pending.next_id(inv, "copy_request"), inv.i_oid[row],
                              storage.id, "pending", pin, now, now, self.requester, spec.comment)

        def apply(inv: Inventory) -> CopyRequest:
            inv.put_object(request)
            return request

        return Prepared([upsert([request])], apply, [("request", request)])


REQUEST_RULE = "requester_cancels_own_requests"


class CancelRequest(Write):
    """Cancel a pending copy request: only its requester or an operator (a cancel drops the
    request's pin, after which Detox may delete the copy someone else asked to keep)."""

    def __init__(self, request_id: int, actor: Actor = OPERATOR) -> None:
        self.request_id = request_id
        self.actor = actor

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        request = inv.requests.get(self.request_id)
        if request is None:
            raise NotFound(f"no copy request {self.request_id}", "id")
        if not may_change(self.actor, request.requester):
            by = ("no token (only operators may cancel it)" if request.requester is None
                  else f"token {request.requester!r}")
            raise Forbidden(f"a producer may cancel only the copy requests it made: request "
                            f"{request.id} was made by {by}, not {self.actor.name!r}; ask an "
                            f"operator", "id", rule=REQUEST_RULE, requester=request.requester)
        if request.state != "pending":
            raise Conflict(f"copy request {self.request_id} is {request.state}", "id")
        new = dataclasses.replace(request, state="cancelled", updated=model.now())

        def apply(inv: Inventory) -> CopyRequest:
            inv.put_object(new)
            return new

        return Prepared([upsert([new])], apply, [("request", new)])
