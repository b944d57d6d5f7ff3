"""Applying a Detox cycle's plan: one write that re-judges the plan against the inventory as it
is now, queues the deletions that still hold, expires what is due, and records the cycle.

The plan was computed on a snapshot; between then and now replicas may have changed. A planned
deletion is applied only if its replica is still settled (complete, corrupt or missing) and, for
an item that is not expired, the last-copy and phase rules still allow it counting every other
deletion of the same plan as done. Everything else is dropped and counted, never deleted blindly.
"""

from __future__ import annotations

import hashlib

from inventory import model, validate
from inventory.errors import BadRequest
from inventory.inventory import Inventory
from inventory.objects import Cycle, Operation
from inventory.records import ItemRecord, ReplicaRecord
from inventory.specs import DetoxPlanIn
from inventory.store.generic import upsert
from inventory.store.ops import DbOp, UpsertRows
from inventory.writes import Change, Pending, Prepared, Write, item_upsert
from inventory.writes_ops import DELETING, deletion_refusal, replica_upsert

SETTLED = {model.COMPLETE, model.REPLICA_STATE["corrupt"], model.REPLICA_STATE["missing"]}


class ApplyDetoxPlan(Write):
    def __init__(self, plan: DetoxPlanIn) -> None:
        self.plan = plan

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        plan = self.plan
        if hashlib.sha256(plan.policy_text.encode()).hexdigest() != plan.policy_sha256:
            raise BadRequest("policy_sha256 is not the hash of policy_text", "policy_sha256")
        now = model.now()
        items: dict[int, ItemRecord] = {}
        dropped = {"not_due": 0, "changed": 0, "safety": 0}
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
            item = items.get(oid) or pending.item(inv, oid)
            if item.state not in (model.EXPIRED, model.DELETED) and \
                    deletion_refusal(inv, oid, storage_id, deleting):
                dropped["safety"] += 1
                continue
            deleting.add(key)
            replicas.append(inv.replica_record(row)._replace(state=DELETING))
            op_id = pending.next_id("operation", inv.operations)
            ops.append(Operation(op_id, "delete", oid, None, storage_id, "detox", "queued", 0,
                                 None, now, now))
        pending.deleting.update(deleting)
        pending.items.update(items)
        summary = dict(plan.summary)
        summary.update({
            "policy": {"name": plan.policy_name, "file": plan.policy_file,
                       "sha256": plan.policy_sha256},
            "snapshot_version": plan.snapshot_version,
            "applied": {"expirations": len(items), "deletions": len(ops),
                        "deleted_bytes": sum(r.size or 0 for r in replicas)},
            "dropped": dropped,
        })
        cycle = Cycle(pending.next_id("cycle", inv.cycles), "detox", plan.started, now,
                      plan.policy_text, summary)
        expired = list(items.values())

        def apply(inv: Inventory) -> Cycle:
            inv.update_items(expired)
            for r in replicas:
                inv.update_replica(inv.replica_row(r.oid, r.storage_id), r)
            for op in ops:
                inv.put_object(op)
            inv.put_object(cycle)
            return cycle

        db_ops: list[DbOp] = [upsert([cycle])]
        db_ops.append(UpsertRows("cycle_report", ("cycle_id", "decisions"), ("cycle_id",),
                                 [(cycle.id, plan.decisions)]))
        if expired:
            db_ops.append(item_upsert(expired))
        if replicas:
            db_ops.append(replica_upsert(replicas))
        if ops:
            db_ops.append(upsert(ops))
        changes: list[Change] = [("item", r) for r in expired]
        changes.extend(("replica", r) for r in replicas)
        changes.extend(("operation", o) for o in ops)
        changes.append(("cycle", cycle))
        return Prepared(db_ops, apply, changes, rows=len(ops) + len(expired))
