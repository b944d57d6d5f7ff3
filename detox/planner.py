"""Detox's decision: which replicas to delete this cycle. Pure: data in, plan out, no I/O.

The algorithm is Dynamo's, with its gaps closed:

1. Items whose expiry time has passed are expired, and all their payloads planned for deletion.
2. Every replica of the partition on a storage Detox works on (`on`) is judged by the compiled
   rules: protect / delete / dismiss / ignore, first match wins.
3. `delete` decisions are planned everywhere; on each triggered storage (`when`), taken in order
   of highest protected fraction first, `dismiss` candidates are planned in the policy's order
   until `until` holds. Occupancy is projected: pending copies count, planned and pending
   deletions do not.
4. The safety net, whatever the policy says: for an item that is not expired, never its last
   complete copy, never a copy whose loss drops its phase below its target. Planned deletions
   of other copies count as gone.
5. A storage that cannot be brought under `until` is reported with how far it stayed and the
   rules that protect the most bytes there.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inventory import model
from inventory.feed import WIRE_ITEM_FIELDS as IF
from inventory.feed import WIRE_REPLICA_FIELDS as RF
from inventory.feed import WIRE_STORAGE_FIELDS as SF
from policies import DELETE, DISMISS, IGNORE, PROTECT, ItemView, Policy, ReplicaView, StorageView

DEFAULT_HALF_LIFE = 7 * 86400.0
SAFETY_LAST_COPY = "safety: last complete copy"
SAFETY_PHASE = "safety: phase below target"
EXPIRED_LABEL = "lifecycle: item expired"

# decision outcomes recorded per replica
DELETED = "delete"  # planned for deletion
KEPT = "keep"  # protected, or a candidate not needed
SAFE = "safety"  # the policy wanted it gone, the safety net kept it
IGNORED = "ignore"

_I = {name: i for i, name in enumerate(IF)}
_R = {name: i for i, name in enumerate(RF)}
_S = {name: i for i, name in enumerate(SF)}
_SETTLED = {"complete", "corrupt", "missing"}  # may be deleted; others are in flight


@dataclass(slots=True)
class Deletion:
    oid: str
    storage_id: int
    size: int
    rule: str  # label of the deciding rule
    line: int


@dataclass(slots=True)
class StorageOutcome:
    name: str
    capacity: int
    quota: int | None
    used_before: int  # projected, partition bytes when a quota is set
    used_after: int
    occupancy_before: float
    occupancy_after: float
    triggered: bool
    satisfied: bool  # `until` holds after the plan (or the storage was not triggered)
    deleted_bytes: int = 0
    deleted_replicas: int = 0
    protected_bytes: dict[str, int] = field(default_factory=dict)  # rule label -> bytes

    def to_json(self) -> dict[str, Any]:
        top = sorted(self.protected_bytes.items(), key=lambda kv: -kv[1])[:5]
        return {
            "name": self.name, "capacity": self.capacity, "quota": self.quota,
            "used_before": self.used_before, "used_after": self.used_after,
            "occupancy_before": round(self.occupancy_before, 6),
            "occupancy_after": round(self.occupancy_after, 6),
            "triggered": self.triggered, "satisfied": self.satisfied,
            "deleted_bytes": self.deleted_bytes, "deleted_replicas": self.deleted_replicas,
            "top_protecting_rules": [{"rule": label, "bytes": b} for label, b in top],
        }


@dataclass(slots=True)
class DetoxPlan:
    now: float
    expirations: list[str] = field(default_factory=list)  # oids going READY -> EXPIRED
    deletions: list[Deletion] = field(default_factory=list)
    storages: list[StorageOutcome] = field(default_factory=list)
    # per replica: (uid, storage id, outcome, rule label, rule line, size)
    decisions: list[tuple[str, int, str, str, int, int]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        by_rule: dict[str, dict[str, int]] = defaultdict(lambda: {"replicas": 0, "bytes": 0})
        outcomes: dict[str, int] = defaultdict(int)
        for _uid, _sid, outcome, label, _line, size in self.decisions:
            entry = by_rule[f"{outcome}: {label}"]
            entry["replicas"] += 1
            entry["bytes"] += size
            outcomes[outcome] += 1
        return {
            "expirations": len(self.expirations),
            "deletions": len(self.deletions),
            "deleted_bytes": sum(d.size for d in self.deletions),
            "outcomes": dict(outcomes),
            "by_rule": dict(by_rule),
            "storages": [s.to_json() for s in self.storages],
            "unsatisfied": [s.name for s in self.storages if not s.satisfied],
        }


def decayed_popularity(count: int, last: float | None, now: float, half_life: float) -> float:
    if not count or last is None:
        return 0.0
    return count * math.pow(0.5, max(now - last, 0.0) / half_life)


def plan_cycle(policy: Policy, storages: Sequence[Sequence[Any]],
               items: Mapping[str, Sequence[Any]], replicas: Iterable[Sequence[Any]],
               now: float) -> DetoxPlan:
    """The deletions of one Detox cycle over a snapshot's wire records."""
    detox, partition = policy.detox, policy.partition
    half_life = (policy.dealer.popularity.half_life
                 if policy.dealer is not None and policy.dealer.popularity is not None
                 else DEFAULT_HALF_LIFE)
    plan = DetoxPlan(now)
    storage_by_id = {s[_S["id"]]: s for s in storages}
    phase_weight = {sid: model.PHASE_WEIGHT[model.PHASE[s[_S["phase"]]]]
                    for sid, s in storage_by_id.items()}

    # ---- per item: complete copies and their weight; per storage: projected usage
    by_item: dict[str, list[Sequence[Any]]] = defaultdict(list)
    for rep in replicas:
        by_item[rep[_R["oid"]]].append(rep)
    expired: set[str] = set()
    for oid, item in items.items():
        state = item[_I["state"]]
        expire_at = item[_I["expire_at"]]
        if state == "READY" and expire_at is not None and expire_at <= now:
            plan.expirations.append(oid)
            expired.add(oid)
        elif state in ("EXPIRED", "DELETED"):
            expired.add(oid)
    copies = {oid: sum(1 for r in reps if r[_R["state"]] == "complete")
              for oid, reps in by_item.items()}
    weight = {oid: sum(phase_weight[r[_R["storage_id"]]] for r in reps
                       if r[_R["state"]] == "complete") for oid, reps in by_item.items()}

    def item_size(oid: str, rep: Sequence[Any]) -> int:
        size = rep[_R["size"]]
        if size is None:
            size = items[oid][_I["size"]] or 0
        return size

    # ---- views
    item_views: dict[str, ItemView] = {}

    def item_view(oid: str) -> ItemView:
        view = item_views.get(oid)
        if view is None:
            it = items[oid]
            parent = it[_I["parent_oid"]]
            state = "EXPIRED" if oid in plan_expired else it[_I["state"]]
            view = ItemView(
                it[_I["item_name"]], version=it[_I["item_version"]], type=it[_I["item_type"]],
                state=state, phase=model.PHASES[model.phase_of_weights(weight.get(oid, 0))],
                target_phase=it[_I["target_phase"]], size=it[_I["size"]] or 0,
                created=it[_I["created"]], expire_at=it[_I["expire_at"]],
                metadata=it[_I["metadata"]] or {}, copies=copies.get(oid, 0),
                popularity=decayed_popularity(it[_I["access_count"]], it[_I["last_access"]],
                                              now, half_life),
                access_count=it[_I["access_count"]], last_access=it[_I["last_access"]],
                parent=None if parent is None or parent not in items
                else items[parent][_I["item_name"]],
                owner=it[_I["owner"]], group=it[_I["group"]])
            item_views[oid] = view
        return view

    plan_expired = set(plan.expirations)
    total_used: dict[int, int] = defaultdict(int)
    part_used: dict[int, int] = defaultdict(int)
    in_partition: dict[str, bool] = {}
    for oid, reps in by_item.items():
        if oid not in items:
            continue
        for rep in reps:
            if rep[_R["state"]] in ("deleting", "deleted"):
                continue  # already on its way out: projected occupancy excludes it
            sid = rep[_R["storage_id"]]
            size = item_size(oid, rep)
            total_used[sid] += size
            member = partition.contains(item_view(oid), _replica_view(rep, storage_by_id, copies,
                                                                      size), now)
            in_partition[rep[_R["uid"]]] = member
            if member:
                part_used[sid] += size

    quotas = {}
    views: dict[int, StorageView] = {}

    def storage_view(sid: int) -> StorageView:
        s = storage_by_id[sid]
        quota = quotas[sid]
        used = part_used[sid] if quota else total_used[sid]
        return StorageView.build(
            s[_S["name"]], kind=s[_S["kind"]], status=s[_S["status"]], phase=s[_S["phase"]],
            attributes=s[_S["attributes"]] or {}, capacity=s[_S["capacity"]], used=used,
            quota=quota)

    for sid, s in storage_by_id.items():
        base = StorageView.build(s[_S["name"]], kind=s[_S["kind"]], status=s[_S["status"]],
                                 phase=s[_S["phase"]], attributes=s[_S["attributes"]] or {},
                                 capacity=s[_S["capacity"]], used=total_used[sid])
        quotas[sid] = partition.quota_for(base) if partition.uses(base) else None
        views[sid] = storage_view(sid)
    works_on = {sid for sid, v in views.items() if detox.applies_to(v)}
    triggered = {sid for sid in works_on if detox.triggered(views[sid])}
    used_before = {sid: (part_used[sid] if quotas[sid] else total_used[sid]) for sid in views}
    occ_before = {sid: views[sid].occupancy for sid in views}

    # ---- the safety net: what may go without breaking a live item
    remaining_copies = dict(copies)
    remaining_weight = dict(weight)

    def safety(oid: str, sid: int, rep_state: str) -> str | None:
        if oid in expired or rep_state != "complete":
            return None  # expired items lose everything; bad copies are no copies
        if remaining_copies.get(oid, 0) <= 1:
            return SAFETY_LAST_COPY
        target = model.PHASE[items[oid][_I["target_phase"]]]
        if model.phase_of_weights(remaining_weight[oid] - phase_weight[sid]) < target:
            return SAFETY_PHASE
        return None

    def plan_deletion(oid: str, rep: Sequence[Any], size: int, label: str, line: int) -> None:
        sid = rep[_R["storage_id"]]
        plan.deletions.append(Deletion(oid, sid, size, label, line))
        if rep[_R["state"]] == "complete":
            remaining_copies[oid] -= 1
            remaining_weight[oid] -= phase_weight[sid]
        total_used[sid] -= size
        if in_partition.get(rep[_R["uid"]]):
            part_used[sid] -= size

    # ---- 1. expired items: every settled payload goes
    decisions = plan.decisions
    for oid in sorted(expired):
        for rep in by_item.get(oid, ()):
            if rep[_R["state"]] in _SETTLED:
                size = item_size(oid, rep)
                plan_deletion(oid, rep, size, EXPIRED_LABEL, 0)
                decisions.append((rep[_R["uid"]], rep[_R["storage_id"]], DELETED, EXPIRED_LABEL,
                                  0, size))

    # ---- 2. judge every other replica
    candidates: dict[int, list[tuple[tuple, str, Sequence[Any], int, Any]]] = defaultdict(list)
    protected: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    deletes: list[tuple[str, Sequence[Any], int, Any]] = []
    for oid, reps in by_item.items():
        if oid in expired or oid not in items:
            continue
        iv = item_view(oid)
        for rep in reps:
            sid = rep[_R["storage_id"]]
            if sid not in works_on or not in_partition.get(rep[_R["uid"]], False):
                continue
            size = item_size(oid, rep)
            rv = _replica_view(rep, storage_by_id, copies, size)
            sv = views[sid]
            rule = detox.decide(iv, rv, sv, now)
            action = rule.action
            if action == DELETE:
                deletes.append((oid, rep, size, rule))
            elif action == DISMISS and sid in triggered:
                key = detox.sort_key(iv, rv, sv, now)
                candidates[sid].append((key, oid, rep, size, rule))
            elif action == IGNORE:
                decisions.append((rep[_R["uid"]], sid, IGNORED, rule.label, rule.line, size))
            else:  # protect, or a candidate on a storage that needs no cleaning
                if action == PROTECT:
                    protected[sid][rule.label] += size
                decisions.append((rep[_R["uid"]], sid, KEPT, rule.label, rule.line, size))

    # ---- 3a. `delete` decisions, everywhere
    for oid, rep, size, rule in deletes:
        sid = rep[_R["storage_id"]]
        reason = safety(oid, sid, rep[_R["state"]])
        if reason:
            protected[sid][reason] += size
            decisions.append((rep[_R["uid"]], sid, SAFE, f"{reason} ({rule.label})",
                              rule.line, size))
            continue
        plan_deletion(oid, rep, size, rule.label, rule.line)
        decisions.append((rep[_R["uid"]], sid, DELETED, rule.label, rule.line, size))

    # ---- 3b. triggered storages: most protected first, candidates in the policy's order
    def protected_fraction(sid: int) -> float:
        used = used_before[sid] or 1
        return sum(protected[sid].values()) / used

    for sid in sorted(triggered, key=lambda s: (-protected_fraction(s), s)):
        queue = sorted(candidates.get(sid, ()), key=lambda c: c[0])
        position = 0
        while position < len(queue) and not detox.satisfied(storage_view(sid)):
            _key, oid, rep, size, rule = queue[position]
            position += 1
            reason = safety(oid, sid, rep[_R["state"]])
            if reason:
                protected[sid][reason] += size
                decisions.append((rep[_R["uid"]], sid, SAFE, f"{reason} ({rule.label})",
                                  rule.line, size))
                continue
            plan_deletion(oid, rep, size, rule.label, rule.line)
            decisions.append((rep[_R["uid"]], sid, DELETED, rule.label, rule.line, size))
        for _key, _oid, rep, size, rule in queue[position:]:
            decisions.append((rep[_R["uid"]], sid, KEPT, f"not needed ({rule.label})",
                              rule.line, size))

    # ---- 4. the outcome per storage
    deleted_by_storage: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for d in plan.deletions:
        deleted_by_storage[d.storage_id][0] += d.size
        deleted_by_storage[d.storage_id][1] += 1
    for sid in sorted(views, key=lambda s: storage_by_id[s][_S["name"]]):
        after = storage_view(sid)
        is_triggered = sid in triggered
        plan.storages.append(StorageOutcome(
            after.name, after.capacity, quotas[sid], used_before[sid], after.used,
            occ_before[sid], after.occupancy, is_triggered,
            not is_triggered or detox.satisfied(after),
            deleted_by_storage[sid][0], deleted_by_storage[sid][1], dict(protected[sid])))
    return plan


def _replica_view(rep: Sequence[Any], storage_by_id: Mapping[int, Sequence[Any]],
                  copies: Mapping[str, int], size: int) -> ReplicaView:
    state = rep[_R["state"]]
    return ReplicaView(
        storage_by_id[rep[_R["storage_id"]]][_S["name"]], state=state, size=size,
        created=rep[_R["created"]],
        is_last_copy=state == "complete" and copies.get(rep[_R["oid"]], 0) == 1,
        expire_at=rep[_R["expire_at"]])
