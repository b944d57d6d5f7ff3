"""Write transactions of copy and delete operations: queue, start, complete, fail, cancel.

A queued copy creates the target replica in state ``pending`` (so projected occupancy counts it
and nobody queues the same copy twice); a queued deletion puts the replica in ``deleting``. The
last-copy rule is checked when a deletion is queued and again when it starts, inside the writer,
counting only ``complete`` replicas that are not being deleted: two deletions of an item's two
copies can never both start.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import repeat

from inventory import model
from inventory.errors import BadRequest, Conflict, NotFound
from inventory.inventory import Inventory
from inventory.objects import CopyRequest, Cycle, Operation, Row
from inventory.records import ItemRecord, ReplicaRecord
from inventory.redact import redact_text, storage_secrets
from inventory.requests import requests_served
from inventory.storage.errors import StorageError
from inventory.store.base import REPLICA_COLUMNS, replica_db_row
from inventory.store.generic import insert, upsert
from inventory.store.ops import DbOp, DeleteRows, UpsertRows
from inventory.writes import Change, Claims, Pending, Prepared, Write, claim_path, item_upsert

log = logging.getLogger("dlm.fileops")

log = logging.getLogger("dlm.inventory")

PENDING = model.REPLICA_STATE["pending"]
COPYING = model.REPLICA_STATE["copying"]
DELETING = model.REPLICA_STATE["deleting"]
DELETED_REPLICA = model.REPLICA_STATE["deleted"]
LIVE_STATES = {model.INITIALISED, model.READY, model.CORRUPTED}


@dataclass(slots=True, frozen=True)
class OperationSpec:
    kind: str  # "copy" | "delete"
    oid: int
    target_id: int
    source_id: int | None = None


def replica_upsert(records: Sequence[ReplicaRecord]) -> UpsertRows:
    out = model.format_uuid
    return UpsertRows("replica", REPLICA_COLUMNS, ("uid",),
                      [replica_db_row(r, out) for r in records])


_OBJECT_KINDS = {Operation: "operation", CopyRequest: "request", Cycle: "cycle"}


def persisted(*, items: Sequence[ItemRecord] = (), replicas: Sequence[ReplicaRecord] = (),
              objects: Sequence[Row] = (), created: Sequence[Row] = ()
              ) -> tuple[list[DbOp], list[Change]]:
    """The database writes and the change-feed records of changed items, replicas and small
    objects (operations, requests, cycles): what every multi-record write ends with.

    ``objects`` are upserted; ``created`` are objects this write makes with new ids (a cycle's
    operations), inserted: a plain COPY on PostgreSQL instead of a staging table and an
    ON CONFLICT check per row. Their change-feed records are the same either way.
    """
    db_ops: list[DbOp] = []
    changes: list[Change] = []
    if items:
        db_ops.append(item_upsert(items))
        changes.extend(zip(repeat("item"), items))
    if replicas:
        db_ops.append(replica_upsert(replicas))
        changes.extend(zip(repeat("replica"), replicas))
    for write, group_of in ((insert, created), (upsert, objects)):
        by_class: dict[type, list[Row]] = {}
        for obj in group_of:
            by_class.setdefault(type(obj), []).append(obj)
        for cls, group in by_class.items():
            db_ops.append(write(group))
            changes.extend(zip(repeat(_OBJECT_KINDS[cls]), group))
    return db_ops, changes


def _replica_delete(oid: int, storage_id: int) -> DeleteRows:
    return DeleteRows("replica", ("uid",), [(model.format_uuid(oid | storage_id),)])


def deletion_refusal(inv: Inventory, oid: int, storage_id: int,
                     excluding: Collection[tuple[int, int]] = ()) -> str | None:
    """Why the copy of ``oid`` on ``storage_id`` must not be deleted now, or None.

    For an item that is not EXPIRED (or DELETED): never its last complete copy, and never a copy
    whose removal drops the item's current phase below its target phase. Replicas already
    being deleted, and those in ``excluding`` (deletions planned in the same write), do not
    count as copies.
    """
    row = inv.row_of_oid(oid)
    if row is None or inv.i_state[row] not in LIVE_STATES:
        return None
    weight = 0
    others = 0
    for r in inv.replica_rows_of_item(row):
        if inv.r_storage[r] == storage_id or inv.r_state[r] != model.COMPLETE \
                or (oid, inv.r_storage[r]) in excluding:
            continue
        others += 1
        weight += model.PHASE_WEIGHT[inv.storages[inv.r_storage[r]].phase]
    if others == 0:
        return f"it is the last complete copy of {inv.i_name[row]!r}"
    remaining = model.phase_of_weights(weight)
    if remaining < inv.i_target[row]:
        return (f"{inv.i_name[row]!r} would drop to phase {model.PHASES[remaining]}, below its "
                f"target {model.PHASES[inv.i_target[row]]}")
    return None


class QueueOperations(Write):
    def __init__(self, specs: list[OperationSpec], origin: str) -> None:
        self.specs = specs
        self.origin = origin

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        now = model.now()
        ops: list[Operation] = []
        replicas: list[ReplicaRecord] = []
        claimed: set[tuple[int, int]] = set()
        mine = Claims(new_replicas=claimed)
        deleting: set[tuple[int, int]] = set(pending.deleting)
        for index, spec in enumerate(self.specs):
            where = f"operations[{index}]."
            row = inv.row_of_oid(spec.oid)
            if row is None:
                raise NotFound(f"no item with oid {model.format_uuid(spec.oid)}", where + "item")
            target = inv.storages.get(spec.target_id)
            if target is None:
                raise BadRequest(f"no storage with id {spec.target_id}", where + "target")
            key = (spec.oid, spec.target_id)
            if key in claimed or key in pending.new_replicas:
                raise Conflict("two operations on the same copy", where + "target")
            claimed.add(key)
            existing = inv.replica_row(spec.oid, spec.target_id)
            if spec.kind == "copy":
                replica = self.copy_replica(inv, spec, row, target, existing, where, now,
                                            pending, mine)
            elif spec.kind == "delete":
                replica = self._delete(inv, spec, existing, target, where, deleting)
                deleting.add(key)
            else:
                raise BadRequest("expected copy or delete", where + "kind")
            replicas.append(replica)
            ops.append(Operation(pending.next_id(inv, "operation"), spec.kind,
                                 spec.oid, spec.source_id, spec.target_id, self.origin,
                                 "queued", 0, None, now, now))
        mine.merge_into(pending)
        pending.deleting.update(deleting)

        def apply(inv: Inventory) -> list[Operation]:
            new = [r for r in replicas if inv.replica_row(r.oid, r.storage_id) is None]
            inv.add_replicas(new)
            for r in replicas:
                rrow = inv.replica_row(r.oid, r.storage_id)
                if r not in new:
                    inv.update_replica(rrow, r)
            for op in ops:
                inv.put_object(op)
            return ops

        changes: list[Change] = [("replica", r) for r in replicas]
        changes.extend(("operation", o) for o in ops)
        db_ops: list[DbOp] = [replica_upsert(replicas), upsert(ops)]
        return Prepared(db_ops, apply, changes, rows=len(ops))

    @staticmethod
    def copy_replica(inv: Inventory, spec: OperationSpec, row: int, target, existing,
                     where: str, now: float, pending: Pending, mine: Claims) -> ReplicaRecord:
        """The pending target replica of a copy, or a DLMError saying why it cannot be (its
        default path on the target being another live replica's file included). The claim is
        recorded in ``mine``."""
        if inv.i_state[row] not in (model.READY, model.CORRUPTED):
            raise Conflict(f"{inv.i_name[row]!r} is {model.ITEM_STATES[inv.i_state[row]]}: "
                           f"only READY items are copied", where + "item")
        if inv.i_type[row] == model.CONTAINER:
            raise BadRequest("a container has no payload; copy its members", where + "item")
        if target.status != "online":
            raise Conflict(f"storage {target.name!r} is {target.status}", where + "target")
        if existing is not None:
            raise Conflict(f"{inv.i_name[row]!r} already has a "
                           f"{model.REPLICA_STATES[inv.r_state[existing]]} replica on "
                           f"{target.name!r}", where + "target")
        sources = [r for r in inv.replica_rows_of_item(row) if inv.r_state[r] == model.COMPLETE]
        if spec.source_id is not None:
            if spec.source_id not in {inv.r_storage[r] for r in sources}:
                raise Conflict("the source holds no complete copy", where + "source")
        elif not sources:
            raise Conflict(f"{inv.i_name[row]!r} has no complete copy to copy from",
                           where + "item")
        claim_path(inv, (pending,), mine, target, spec.oid, inv.i_name[row], inv.i_version[row],
                   None, where + "target")
        size = inv.i_size[row]
        return ReplicaRecord(spec.oid, spec.target_id, None, PENDING,
                             None if size < 0 else size, None, now, None, None)

    @staticmethod
    def _delete(inv: Inventory, spec: OperationSpec, existing, target, where: str,
                deleting: Collection[tuple[int, int]]) -> ReplicaRecord:
        if existing is None:
            raise Conflict(f"no replica on {target.name!r} to delete", where + "target")
        if inv.r_state[existing] in (PENDING, COPYING, DELETING):
            raise Conflict(f"the replica on {target.name!r} is "
                           f"{model.REPLICA_STATES[inv.r_state[existing]]}", where + "target")
        refusal = deletion_refusal(inv, spec.oid, spec.target_id, deleting)
        if refusal:
            raise Conflict(f"refused: {refusal}", where + "target")
        return inv.replica_record(existing)._replace(state=DELETING)


def _operation(inv: Inventory, op_id: int, *states: str) -> Operation:
    op = inv.operations.get(op_id)
    if op is None:
        if inv.operations_in_db_only and 0 < op_id <= inv.last_ids.get("operation", 0):
            # dropped from memory after the retention: only finished operations are
            raise Conflict(f"operation {op_id} has finished (or its storage was removed): "
                           f"it is no longer queued or running", "id")
        raise NotFound(f"no operation {op_id}", "id")
    if op.state not in states:
        raise Conflict(f"operation {op_id} is {op.state}", "id")
    return op


def _with_replica_state(inv: Inventory, op: Operation, state: int, **fields
                        ) -> ReplicaRecord | None:
    row = inv.replica_row(op.oid, op.target_id)
    if row is None:
        return None
    return inv.replica_record(row)._replace(state=state, **fields)


def _finish(op: Operation, records: list[ReplicaRecord], removed: list[ReplicaRecord],
            items: list[ItemRecord], served: Sequence[CopyRequest] = ()) -> Prepared:
    """The write of an operation's new state, its replicas' and items', and the copy
    requests its copy ``served`` (closed as done)."""
    def apply(inv: Inventory) -> Operation:
        for r in records:
            inv.update_replica(inv.replica_row(r.oid, r.storage_id), r)
        for r in removed:
            inv.remove_replica(inv.replica_row(r.oid, r.storage_id))
        inv.update_items(items)
        inv.put_object(op)
        for request in served:
            inv.put_object(request)
        if served:
            log.info("copy requests served by a completed copy",
                     extra={"operation": op.id, "oid": model.format_uuid(op.oid),
                            "requests": [r.id for r in served]})
        return op

    db_ops, changes = persisted(items=items, replicas=records, objects=[op, *served])
    for r in removed:
        db_ops.append(_replica_delete(r.oid, r.storage_id))
        changes.append(("replica", r._replace(state=DELETED_REPLICA)))
    return Prepared(db_ops, apply, changes)


def _has_replica_left(inv: Inventory, row: int, gone: Collection[tuple[int, int]]) -> bool:
    """Whether item ``row`` keeps a replica that is not deleted once the replicas in ``gone``
    ((oid, storage id)) are removed."""
    oid = inv.i_oid[row]
    return any(inv.r_state[r] != DELETED_REPLICA and (oid, inv.r_storage[r]) not in gone
               for r in inv.replica_rows_of_item(row))


def _removing(inv: Inventory, pending: Pending, removed: list[ReplicaRecord]
              ) -> list[ItemRecord]:
    """Claim the removal of ``removed`` in the group and say which items it settles: an EXPIRED
    item left with no replica is DELETED.

    Decided on the group's final state: removals by earlier writes of the same group count as
    done (``Pending.removed``), so when the deletions of an item's last replicas finish in one
    group commit the last of them settles it, instead of each seeing the others still there
    (issue 15: the item stayed EXPIRED with no replica forever)."""
    if not removed:
        return []
    pending.removed.update((r.oid, r.storage_id) for r in removed)
    items = []
    for oid in dict.fromkeys(r.oid for r in removed):
        rec = pending.item(inv, oid)
        row = inv.row_of_oid(oid)
        if rec is None or row is None or rec.state != model.EXPIRED \
                or _has_replica_left(inv, row, pending.removed):
            continue
        new = rec._replace(state=model.DELETED)
        pending.items[oid] = new
        items.append(new)
    return items


class StartOperation(Write):
    """Claim a queued operation; for a deletion, the last-copy rule is checked once more."""

    def __init__(self, op_id: int) -> None:
        self.op_id = op_id

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        op = _operation(inv, self.op_id, "queued")
        if op.kind == "delete":
            refusal = deletion_refusal(inv, op.oid, op.target_id)
            if refusal:
                raise Conflict(f"refused: {refusal}", "id")
            shared = _shared_file(inv, op)
            if shared is not None:
                return _forget_replica(inv, pending, op, shared)
        now = model.now()
        new = dataclasses.replace(op, state="running", attempts=op.attempts + 1, updated=now,
                                  not_before=None)
        replica = _with_replica_state(inv, op, COPYING if op.kind == "copy" else DELETING)
        return _finish(new, [] if replica is None else [replica], [], [])


def _shared_file(inv: Inventory, op: Operation) -> str | None:
    """Why the file of the replica a deletion removes must stay: another live replica names
    it (a registration from before one file per replica was enforced), else None."""
    row = inv.replica_row(op.oid, op.target_id)
    if row is None:
        return None
    try:
        path = inv.replica_path(row)
    except StorageError:
        return None  # a legacy uri outside the storage: the deletion fails on its own
    holder = inv.path_holder(op.target_id, path, skip_oid=op.oid)
    if holder is None:
        return None
    other = inv.r_item[holder]
    return (f"{path!r} on {inv.storages[op.target_id].name!r} is also the file of "
            f"{inv.i_name[other]!r} version {inv.i_version[other]}")


def _forget_replica(inv: Inventory, pending: Pending, op: Operation, why: str) -> Prepared:
    """A deletion whose file another replica names: the replica leaves the inventory, the file
    stays. The operation is done at once (the engine sees it so and touches nothing)."""
    done = dataclasses.replace(op, state="done", attempts=op.attempts + 1,
                               updated=model.now(), not_before=None,
                               last_error=f"file kept: {why}")
    prepared = _removal(inv, pending, op, done)
    applied = prepared.apply

    def apply(inv: Inventory) -> Operation:
        result = applied(inv)
        log.warning("deletion removed the replica from the inventory but kept its file",
                    extra={"operation": op.id, "oid": model.format_uuid(op.oid),
                           "storage": inv.storages[op.target_id].name, "reason": why})
        return result

    prepared.apply = apply
    return prepared


def _removal(inv: Inventory, pending: Pending, op: Operation, done: Operation) -> Prepared:
    """A finished deletion: the replica row goes; an EXPIRED item whose last payload it was
    becomes DELETED (decided on the group's final state, ``_removing``)."""
    row = inv.replica_row(op.oid, op.target_id)
    removed = [] if row is None else [inv.replica_record(row)]
    return _finish(done, [], removed, _removing(inv, pending, removed))


class CompleteOperation(Write):
    """A copy arrived verified, or a payload is gone: make the inventory say so."""

    def __init__(self, op_id: int, *, size: int | None = None, checksum: str | None = None
                 ) -> None:
        self.op_id = op_id
        self.size = size
        self.checksum = checksum

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        op = _operation(inv, self.op_id, "running")
        now = model.now()
        done = dataclasses.replace(op, state="done", updated=now, last_error=None)
        if op.kind == "copy":
            replica = _with_replica_state(inv, op, model.COMPLETE, size=self.size,
                                          checksum=self.checksum, last_verified=now)
            if replica is None:
                return _finish(done, [], [], [])
            served = requests_served(inv, op.oid, op.target_id, now)
            return _finish(done, [replica], [], [], served)
        return _removal(inv, pending, op, done)


class FailOperation(Write):
    """An attempt failed: queue it again after ``retry_in`` seconds, or give up."""

    def __init__(self, op_id: int, error: str, *, retry_in: float | None) -> None:
        self.op_id = op_id
        self.error = error
        self.retry_in = retry_in

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        op = _operation(inv, self.op_id, "running", "queued")
        now = model.now()
        # readers see last_error: no storage's credentials in it, whoever wrote the text
        self.error = redact_text(self.error, storage_secrets(
            s.config for s in inv.storages.values()))
        if self.retry_in is not None:
            again = dataclasses.replace(op, state="queued", last_error=self.error,
                                        updated=now, not_before=now + self.retry_in)
            replica = _with_replica_state(inv, op, PENDING if op.kind == "copy" else DELETING)
            return _finish(again, [] if replica is None else [replica], [], [])
        failed = dataclasses.replace(op, state="failed", last_error=self.error, updated=now,
                                     not_before=None)
        restored, removed = _undo(inv, op)
        return _finish(failed, restored, removed, _removing(inv, pending, removed))


def _undo(inv: Inventory, op: Operation) -> tuple[list[ReplicaRecord], list[ReplicaRecord]]:
    """(replicas to restore, replicas to remove) when an operation ends without effect."""
    row = inv.replica_row(op.oid, op.target_id)
    if row is None:
        return [], []
    if op.kind == "copy":
        return [], [inv.replica_record(row)]  # the copy never arrived
    return [inv.replica_record(row)._replace(state=model.COMPLETE)], []  # still there


class CancelOperation(Write):
    def __init__(self, op_id: int) -> None:
        self.op_id = op_id

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        op = _operation(inv, self.op_id, "queued")
        cancelled = dataclasses.replace(op, state="cancelled", updated=model.now(),
                                        not_before=None)
        restored, removed = _undo(inv, op)
        return _finish(cancelled, restored, removed, _removing(inv, pending, removed))


class RequeueInterrupted(Write):
    """At start: operations left ``running`` by a stopped server are queued again.

    Nothing partial was registered (targets are written under a temporary name and the replica
    stays ``copying`` until verified), so trying again from the start is always safe.
    """

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        now = model.now()
        ops = [dataclasses.replace(inv.operations[op_id], state="queued", updated=now,
                                   last_error="interrupted by a server restart")
               for op_id in inv.operations_by_state["running"]]
        replicas = []
        for op in ops:
            replica = _with_replica_state(inv, op, PENDING if op.kind == "copy" else DELETING)
            if replica is not None:
                replicas.append(replica)

        def apply(inv: Inventory) -> int:
            for r in replicas:
                inv.update_replica(inv.replica_row(r.oid, r.storage_id), r)
            for op in ops:
                inv.put_object(op)
            return len(ops)

        if not ops:
            return Prepared([], apply, [])
        db_ops: list[DbOp] = [upsert(ops)]
        if replicas:
            db_ops.append(replica_upsert(replicas))
        return Prepared(db_ops, apply, [("operation", o) for o in ops])


class DeleteStuckItems(Write):
    """At start: an item EXPIRED with no replica left that is not deleted has nothing more to
    lose and no cycle will ever touch it (Detox plans deletions of replicas): it is DELETED,
    durably, each one logged. Such items were left by deletions that finished in one group
    commit before the writer decided on the group's final state (issue 15)."""

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        stuck = [row for row in inv.rows_in_state(model.EXPIRED)
                 if not _has_replica_left(inv, row, pending.removed)]
        items = [inv.item_record(row)._replace(state=model.DELETED) for row in stuck]
        pending.items.update((r.oid, r) for r in items)

        def apply(inv: Inventory) -> list[ItemRecord]:
            inv.update_items(items)
            for r in items:
                log.warning("an EXPIRED item had no replica left: it is now DELETED",
                            extra={"oid": model.format_uuid(r.oid), "item_name": r.item_name,
                                   "item_version": r.item_version})
            return items

        if not items:
            return Prepared([], apply, [])
        return Prepared([item_upsert(items)], apply, [("item", r) for r in items],
                        rows=len(items))


class MarkReplica(Write):
    """Record what a transfer or a check found about a copy (e.g. a corrupt source)."""

    def __init__(self, oid: int, storage_id: int, state: str) -> None:
        self.oid = oid
        self.storage_id = storage_id
        self.state = model.REPLICA_STATE[state]

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        row = inv.replica_row(self.oid, self.storage_id)
        if row is None:
            raise NotFound("no such replica", "uid")
        replica = inv.replica_record(row)._replace(state=self.state)
        items = []
        item_row = inv.r_item[row]
        if inv.i_state[item_row] == model.READY and not any(
                inv.r_state[r] == model.COMPLETE for r in inv.replica_rows_of_item(item_row)
                if r != row):
            items.append(inv.item_record(item_row)._replace(state=model.CORRUPTED))

        def apply(inv: Inventory) -> ReplicaRecord:
            inv.update_replica(row, replica)
            inv.update_items(items)
            return replica

        db_ops: list[DbOp] = [replica_upsert([replica])]
        if items:
            db_ops.append(item_upsert(items))
        changes: list[Change] = [("replica", replica)]
        changes.extend(zip(repeat("item"), items))
        return Prepared(db_ops, apply, changes)
