"""The store interface: the durable side of the inventory, one implementation per database."""

from __future__ import annotations

import abc
import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import Any

from inventory import metadata as stored_metadata
from inventory import model
from inventory.inventory import Inventory
from inventory.memory import gc_paused, trim_heap
from inventory.objects import Operation, Token
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from inventory.store.ops import DbOp

ITEM_COLUMNS = ("oid", "item_name", "item_version", "item_type", "item_state", "target_phase",
                "size", "checksum", "checksum_method", "metadata", "parent_oid", "created",
                "expire_at", "access_count", "last_access", "owner", "group", "registered_by")
REPLICA_COLUMNS = ("uid", "oid", "storage_id", "uri", "state", "size", "checksum", "created",
                   "expire_at", "last_verified")
STORAGE_COLUMNS = ("id", "name", "kind", "root", "capacity", "phase", "status", "attributes",
                   "config", "created")


class StoreError(Exception):
    """The database could not commit; nothing of the transaction is applied."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or failed: the client may retry later (HTTP 503)."""


class StoreInDoubt(StoreUnavailable):
    """The connection broke while COMMIT was under way: the transaction may have happened."""


class StoreConflict(StoreError):
    """The database refused the transaction on a constraint (HTTP 409)."""


class StoreRefused(StoreError):
    """The database, or the driver encoding a row for it, refused a value of the transaction
    (a NUL in a PostgreSQL text, an index entry past its size limit, a value no column type
    holds): the same transaction fails the same way every time (HTTP 400), and it is one
    write's value, never the database's state."""


# What encoding a row for the database raises on a value it cannot carry (json.dumps of bytes,
# an int past 64 bits for SQLite, a lone surrogate for UTF-8, nesting past the recursion limit)
ENCODING_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)


class ClaimRefused(StoreUnavailable):
    """Another server holds the database's single-writer claim (inventory.store.claim)."""

    def __init__(self, where: str, holder: str, message: str | None = None) -> None:
        super().__init__(message or f"another dlm server writes {where}: held by {holder}")
        self.where = where
        self.holder = holder


class ClaimStale(StoreError):
    """The claim was lost and taken back, and the database moved meanwhile: another server
    wrote, and this server's memory is no longer the database's. Only a reload can go on."""


class SchemaError(Exception):
    """The database schema cannot be used by this version of dlm."""


class Store(abc.ABC):
    """Opens (and migrates) a database, loads it into memory, and commits transactions.

    ``commit`` is all-or-nothing and durable when it returns: the write path acknowledges a client
    only after it. Every commit also records the inventory version it makes current.
    """

    backend: str = ""
    dialect: str = ""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create or migrate the schema; SchemaError when the DB is newer than us."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def load(self, inventory: Inventory) -> None:
        """Fill an empty inventory with everything the database holds."""

    @abc.abstractmethod
    async def commit(self, ops: Sequence[DbOp], version: int) -> None:
        """Apply ``ops`` and set the inventory version in one transaction."""

    # how the claim can be lost while the server runs, for the log and /v1/health
    claim_lost_why = "its database session ended"

    @abc.abstractmethod
    async def claim(self) -> None:
        """Take the database's single-writer claim, or raise ClaimRefused naming the holder.
        A server takes it before ``open``; ``commit`` writes only while it is held."""

    @abc.abstractmethod
    def holds_claim(self) -> bool:
        """Whether the claim is held now (False once lost: a PostgreSQL session that died)."""

    async def claimed_version(self) -> int:
        """Take the claim back if it was lost, then the version the database holds: under the
        claim nobody else can change it, so it tells whether someone wrote meanwhile."""
        await self.claim()
        return await self.committed_version()

    async def claim_for(self, version: int) -> None:
        """Before the commit of ``version``: hold the claim, and when it had to be taken (again),
        check that the database is still at ``version - 1``, the memory the commit comes from
        (ClaimStale otherwise): a write never lands on an inventory someone else changed."""
        if self.holds_claim():
            return
        found = await self.claimed_version()
        if found != version - 1:
            raise ClaimStale(f"the database is at inventory version {found} and this server's "
                             f"memory at {version - 1}: another server wrote while this one "
                             f"did not hold the write claim")

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    @abc.abstractmethod
    async def committed_version(self) -> int:
        """The inventory version the database holds now: after a commit whose answer was lost,
        it says whether that commit happened (every commit stores its version)."""

    @abc.abstractmethod
    async def stored_tokens(self) -> list[Token]:
        """The API tokens in the database: a read-only server re-reads them when the primary's
        change (the change feed does not carry token hashes)."""

    @abc.abstractmethod
    async def cycle_decisions(self, cycle_id: int) -> bytes | None:
        """The compressed decisions of a cycle (kept out of memory: they can be large)."""

    @abc.abstractmethod
    async def operations(self, **filters: Any) -> list[Operation]:
        """A page of operations as the database holds them (``generic.operations_query``'s
        filters): finished operations past the retention are only there."""

    async def operation(self, op_id: int) -> Operation | None:
        """One operation as the database holds it, or None."""
        found = await self.operations(after=op_id - 1, before=op_id + 1, limit=1)
        return found[0] if found else None

    def describe(self) -> str:
        return self.backend


PATH_REPAIRS = ("SELECT p.oid, s.name, p.item_name, p.item_version, p.old_uri, p.new_uri, "
                "p.state FROM path_repair p JOIN storage s ON s.id = p.storage_id")


def log_path_repairs(rows: Sequence[Sequence[Any]]) -> None:
    """Say which replicas migration 008 moved off a file another replica kept (schema/*/
    008_one_file_per_replica.sql): each was left ``missing`` at its new path, so consistency
    and Dealer copy it again."""
    log = logging.getLogger("dlm.store")
    for oid, storage, name, version, old, new, state in rows:
        log.warning("replica shared its file with a newer one: moved to its own path", extra={
            "oid": str(oid), "item": name, "version": version, "storage": storage,
            "old_uri": old, "new_uri": new, "state": state})


def check_schema_version(found: int, known: int, where: str) -> None:
    if found > known:
        raise SchemaError(
            f"the database at {where} has schema version {found}, newer than the {known} this "
            f"dlm knows; it was written by a newer dlm: upgrade dlm before starting it"
        )


# --- row conversion shared by the stores (names in the DB, codes in memory) -------------------

def dumps_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def item_db_row(rec: ItemRecord, uuid_out) -> tuple:
    parent = rec.parent_oid
    return (
        uuid_out(rec.oid), rec.item_name, rec.item_version, model.ITEM_TYPES[rec.item_type],
        model.ITEM_STATES[rec.state], model.PHASES[rec.target_phase], rec.size, rec.checksum,
        rec.checksum_method, dumps_json(rec.metadata),
        None if parent is None else uuid_out(parent), rec.created, rec.expire_at,
        rec.access_count, rec.last_access, rec.owner, rec.group, rec.registered_by,
    )


def replica_db_row(rec: ReplicaRecord, uuid_out) -> tuple:
    return (
        uuid_out(model.replica_uid(rec.oid, rec.storage_id)), uuid_out(rec.oid), rec.storage_id,
        rec.uri, model.REPLICA_STATES[rec.state], rec.size, rec.checksum, rec.created,
        rec.expire_at, rec.last_verified,
    )


def storage_db_row(rec: StorageRecord) -> tuple:
    return (rec.id, rec.name, rec.kind, rec.root, rec.capacity, model.PHASES[rec.phase],
            rec.status, dumps_json(rec.attributes), dumps_json(rec.config), rec.created)


def storage_from_db(row: Sequence[Any]) -> StorageRecord:
    attributes, config = row[7], row[8]
    if isinstance(attributes, str):
        attributes, config = json.loads(attributes), json.loads(config)
    return StorageRecord(row[0], row[1], row[2], row[3], row[4], model.PHASE[row[5]], row[6],
                         attributes, config, row[9])


# --- loading: database rows to records, column by column ---------------------------------------
# A load converts millions of rows. Transposing a batch with zip() and converting whole columns
# with map() runs the loops in C; building each record field by field in Python costs several
# times more. Records are still ItemRecord / ReplicaRecord (tuple.__new__ on the class, no copy).

_tuple_new = tuple.__new__
_item_type, _item_state = model.ITEM_TYPE.__getitem__, model.ITEM_STATE.__getitem__
_phase, _replica_state = model.PHASE.__getitem__, model.REPLICA_STATE.__getitem__


def item_records(rows: Sequence[Sequence[Any]], uuid_in: Callable[[Any], int],
                 shared: dict[Any, Any] | None = None) -> list[ItemRecord]:
    """ItemRecords of database rows in ITEM_COLUMNS order (``uuid_in``: a DB uuid to its int).

    ``shared`` (one dict for a whole load) makes equal owner, group and registered_by strings
    one object: the driver returns a new string per row, and a few distinct owners over a
    million items would otherwise cost ~60 bytes each per item.
    """
    if not rows:
        return []
    (oid, name, version, itype, state, target, size, checksum, method, metadata, parent,
     created, expire, access, last_access, owner, group, registered) = zip(*rows, strict=True)
    nothing = (None,) * len(rows)
    if metadata != nothing:
        loads, suspect = json.loads, stored_metadata.suspect
        texts = metadata
        metadata = [None if m is None or suspect(m) else loads(m) for m in texts]
        for index, text in enumerate(texts):
            if text is not None and metadata[index] is None:
                _make_servable(metadata, index, text, uuid_in(oid[index]), name[index])
    if parent != nothing:
        parent = [None if p is None else uuid_in(p) for p in parent]
    if shared is not None:
        same = shared.setdefault
        owner, group = list(map(same, owner, owner)), list(map(same, group, group))
        if registered != nothing:
            registered = list(map(same, registered, registered))
    return list(map(_tuple_new, repeat(ItemRecord), zip(
        map(uuid_in, oid), name, version, map(_item_type, itype), map(_item_state, state),
        map(_phase, target), size, checksum, method, metadata, parent, created, expire, access,
        last_access, owner, group, registered, strict=True,
    )))


def _make_servable(metadata: list[Any], index: int, text: str, oid: int, name: str) -> None:
    """Metadata an older version stored past today's bounds, made servable in memory (the
    row is left as it is): said once per item at load, so the operator can fix it."""
    metadata[index], why = stored_metadata.servable(text)
    if why:
        logging.getLogger("dlm.store").warning(
            "item metadata stored past the metadata bounds is served changed", extra={
                "oid": model.format_uuid(oid), "item": name, "why": why})


def replica_records(rows: Sequence[Sequence[Any]], uuid_in: Callable[[Any], int],
                    shared: dict[Any, Any] | None = None) -> list[ReplicaRecord]:
    """ReplicaRecords of database rows in REPLICA_COLUMNS[1:] order (the uid is implied).

    With ``shared`` (one dict for a whole load), the copies of an item that carry the same
    checksum share one string object.
    """
    if not rows:
        return []
    oid, storage_id, uri, state, size, checksum, created, expire, verified = zip(*rows,
                                                                                 strict=True)
    if shared is not None:
        checksum = list(map(shared.setdefault, checksum, checksum))
    return list(map(_tuple_new, repeat(ReplicaRecord), zip(
        map(uuid_in, oid), storage_id, uri, map(_replica_state, state), size, checksum, created,
        expire, verified, strict=True,
    )))


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Around a whole load: the cyclic garbage collector paused (the loaded data holds no
    reference cycles), then the freed memory given back (the batches freed along the way leave
    holes in the C heap: ~80 MB for a million items)."""
    try:
        with gc_paused():
            yield
    finally:
        trim_heap()
