"""Applying a Detox cycle's plan: one write that re-judges the plan against the inventory as it
is now, queues the deletions that still hold, expires what is due, and records the cycle.

The plan was computed on a snapshot; between then and now replicas may have changed. A planned
deletion is applied only if its replica is still settled (complete, corrupt or missing) and, for
an item that is not expired, the last-copy and phase rules still allow it counting every other
deletion of the same plan as done. Everything else is dropped and counted, never deleted blindly.
"""

from __future__ import annotations

import dataclasses
import hashlib

from inventory import model, validate
from inventory.errors import BadRequest, DLMError
from inventory.inventory import Inventory
from inventory.objects import CopyRequest, Cycle, Operation
from inventory.pins import inventory_pins
from inventory.records import ItemRecord, ReplicaRecord
from inventory.specs import CyclePlanIn, DealerPlanIn, DetoxPlanIn
from inventory.store.generic import upsert
from inventory.store.ops import DbOp, UpsertRows
from inventory.writes import Claims, Pending, Prepared, Write
from inventory.writes_ops import (
    DELETING,
    OperationSpec,
    QueueOperations,
    deletion_refusal,
    persisted,
)

SETTLED = {model.COMPLETE, model.REPLICA_STATE["corrupt"], model.REPLICA_STATE["missing"]}


def _check_hash(plan: CyclePlanIn) -> None:
    if hashlib.sha256(plan.policy_text.encode()).hexdigest() != plan.policy_sha256:
        raise BadRequest("policy_sha256 is not the hash of policy_text", "policy_sha256")


def _cycle(kind: str, plan: CyclePlanIn, inv: Inventory, pending: Pending,
           summary: dict, now: float) -> tuple[Cycle, list[DbOp]]:
    """The cycle record and its compressed decisions (the cycle row first: the report refers
    to it)."""
    summary = {**plan.summary, **summary,
               "policy": {"name": plan.policy_name, "file": plan.policy_file,
                          "sha256": plan.policy_sha256},
               "snapshot_version": plan.snapshot_version}
    cycle = Cycle(pending.next_id(inv, "cycle"), kind, plan.started, now,
                  plan.policy_text, summary)
    return cycle, [upsert([cycle]),
                   UpsertRows("cycle_report", ("cycle_id", "decisions"), ("cycle_id",),
                              [(cycle.id, plan.decisions)])]


class ApplyDetoxPlan(Write):
    def __init__(self, plan: DetoxPlanIn) -> None:
        self.plan = plan

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        plan = self.plan
        _check_hash(plan)
        now = model.now()
        items: dict[int, ItemRecord] = {}
        dropped = {"not_due": 0, "changed": 0, "safety": 0, "pinned": 0}
        pins = pinned(inv, now)
        for index, text in enumerate(plan.expirations):
            oid = validate.uuid_value(text, f"expirations[{index}]")
            rec = pending.item(inv, oid)
            if rec is None or rec.state != model.READY or rec.expire_at is None \
                    or rec.expire_at > now:
                dropped["not_due"] += 1
                continue
            items[oid] = rec._replace(state=model.EXPIRED)
        deleting: set[tuple[int, int]] = set(pending.deleting)
        replicas: list[ReplicaRecord] = []
        ops: list[Operation] = []
        for index, (text, storage_id, _label, _line) in enumerate(plan.deletions):
            oid = validate.uuid_value(text, f"deletions[{index}]")
            row = inv.replica_row(oid, storage_id)
            key = (oid, storage_id)
            if row is None or inv.r_state[row] not in SETTLED or key in deleting \
                    or key in pending.new_replicas:
                dropped["changed"] += 1
                continue
            expiring = items.get(oid)
            state = expiring.state if expiring is not None else pending.item_state(inv, oid)
            live = state not in (model.EXPIRED, model.DELETED)
            if live and key in pins:
                dropped["pinned"] += 1  # a user asked for this copy until a later time
                continue
            if live and deletion_refusal(inv, oid, storage_id, deleting):
                dropped["safety"] += 1
                continue
            deleting.add(key)
            replicas.append(inv.replica_record(row, state=DELETING))
            op_id = pending.next_id(inv, "operation")
            ops.append(Operation(op_id, "delete", oid, None, storage_id, "detox", "queued", 0,
                                 None, now, now))
        pending.deleting.update(deleting)
        pending.items.update(items)
        cycle, db_ops = _cycle("detox", plan, inv, pending, {
            "applied": {"expirations": len(items), "deletions": len(ops),
                        "deleted_bytes": sum(r.size or 0 for r in replicas)},
            "dropped": dropped}, now)
        expired = list(items.values())

        def apply(inv: Inventory) -> Cycle:
            inv.update_items(expired)
            for r in replicas:
                inv.update_replica(inv.replica_row(r.oid, r.storage_id), r)
            for op in ops:
                inv.put_object(op)
            inv.put_object(cycle)
            return cycle

        more, changes = persisted(items=expired, replicas=replicas, created=ops)
        changes.append(("cycle", cycle))
        return Prepared(db_ops + more, apply, changes, rows=len(ops) + len(expired))


class ApplyDealerPlan(Write):
    """Queue a Dealer cycle's copies that still make sense, and close satisfied requests."""

    def __init__(self, plan: DealerPlanIn) -> None:
        self.plan = plan

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        plan = self.plan
        _check_hash(plan)
        now = model.now()
        dropped = {"changed": 0}
        claimed: set[tuple[int, int]] = set()
        mine = Claims(new_replicas=claimed)
        replicas: list[ReplicaRecord] = []
        ops: list[Operation] = []
        for index, (text, target_id, source_id, reason, _line) in enumerate(plan.copies):
            oid = validate.uuid_value(text, f"copies[{index}]")
            row = inv.row_of_oid(oid)
            target = inv.storages.get(target_id)
            key = (oid, target_id)
            if row is None or target is None or key in claimed or key in pending.new_replicas:
                dropped["changed"] += 1
                continue
            spec = OperationSpec("copy", oid, target_id, source_id)
            try:
                replica = QueueOperations.copy_replica(
                    inv, spec, row, target, inv.replica_row(oid, target_id), "", now, pending,
                    mine)
            except DLMError:
                dropped["changed"] += 1  # the inventory moved since the snapshot
                continue
            replicas.append(replica)
            origin = "user" if reason.startswith("request") else "dealer"
            ops.append(Operation(pending.next_id(inv, "operation"), "copy", oid,
                                 source_id, target_id, origin, "queued", 0, None, now, now))
        mine.merge_into(pending)
        done = []
        for request_id in plan.requests_done:
            request = inv.requests.get(request_id)
            if request is not None and request.state == "pending" and _satisfied(inv, request):
                done.append(dataclasses.replace(request, state="done", updated=now))
        cycle, db_ops = _cycle("dealer", plan, inv, pending, {
            "applied": {"copies": len(ops), "bytes": sum(r.size or 0 for r in replicas),
                        "requests_done": len(done)},
            "dropped": dropped}, now)

        def apply(inv: Inventory) -> Cycle:
            inv.add_replicas(replicas)
            for obj in (*ops, *done, cycle):
                inv.put_object(obj)
            return cycle

        more, changes = persisted(replicas=replicas, objects=done, created=ops)
        changes.append(("cycle", cycle))
        return Prepared(db_ops + more, apply, changes, rows=len(ops))


def pinned(inv: Inventory, now: float) -> set[tuple[int, int]]:
    """(oid, storage id) of copies that open or served copy requests pin until a later time
    (a container's request pins its members): ``inventory.pins``, as the planners see them."""
    oids = inv.i_oid
    return {(oids[row], sid) for (row, sid), pin in inventory_pins(inv).items()
            if pin.holds(now)}


def _satisfied(inv: Inventory, request: CopyRequest) -> bool:
    """Every file the request covers has a complete copy on its storage."""
    row = inv.row_of_oid(request.oid)
    if row is None:
        return False
    rows = inv.child_rows(row) if inv.i_type[row] == model.CONTAINER else [row]
    return all(any(inv.r_storage[r] == request.storage_id and inv.r_state[r] == model.COMPLETE
                   for r in inv.replica_rows_of_item(x)) for x in rows)
