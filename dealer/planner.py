"""Dealer's decision: which new copies to make and where. Pure: data in, plan out, no I/O.

Work is taken in priority order, each step seeing the copies the steps before it planned:

1. users' copy requests (a request already satisfied is reported done);
2. items on draining storages that are not safe elsewhere;
3. every READY item of the partition below its requirement: the named ``place`` rule or the
   ``phase`` entry gives a copy count; copies are added until the item has that many and its
   current phase (pending copies counted) reaches its target phase;
4. popularity extras, up to the policy's maximum;
5. balancing: copies of items from the fullest storages to the emptiest, within the spread and
   the volume per cycle (Detox then reclaims the surplus copy on the full storage).

A destination must be online, used by the partition, accepted by the rule's ``to``, hold no copy
of the item yet, and stay under the target occupancy, the partition quota, the pending fraction
and the per-cycle volumes once the copy is counted. Among the eligible, Dealer prefers the most
reliable storage (copy success rate measured by the file operations engine), then the most free
space, then the highest throughput.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detox.planner import DEFAULT_HALF_LIFE, decayed_popularity
from inventory import model
from inventory.feed import WIRE_ITEM_FIELDS as IF
from inventory.feed import WIRE_REPLICA_FIELDS as RF
from inventory.feed import WIRE_STORAGE_FIELDS as SF
from policies import ItemView, Policy, StorageView

_I = {name: i for i, name in enumerate(IF)}
_R = {name: i for i, name in enumerate(RF)}
_S = {name: i for i, name in enumerate(SF)}
_HELD = {"complete", "pending", "copying"}  # a copy there, or one on its way


@dataclass(slots=True)
class Copy:
    oid: str
    target_id: int
    source_id: int | None
    size: int
    reason: str  # "request 12", "phase LIQUID", "place AOD", "popularity", "drain", "balance"
    line: int = 0


@dataclass(slots=True)
class StorageState:
    """A storage as Dealer projects it while planning."""

    id: int
    name: str
    view_args: dict[str, Any]
    capacity: int
    phase_weight: int
    used: int  # every copy there or on its way, minus deletions in flight
    pending: int  # bytes of copies on their way
    partition_used: int
    quota: int | None
    reliability: float  # copy success rate, 1.0 when unmeasured
    throughput: float
    queued: int = 0  # bytes planned this cycle
    usable: bool = True  # the partition may use it (fixed for the cycle)
    cached: StorageView | None = None  # the view, until the projection changes

    def view(self) -> StorageView:
        if self.cached is None:
            self.cached = StorageView.build(
                self.name, capacity=self.capacity,
                used=self.partition_used if self.quota else self.used,
                quota=self.quota, pending=self.pending, **self.view_args)
        return self.cached


@dataclass(slots=True)
class DealerPlan:
    now: float
    copies: list[Copy] = field(default_factory=list)
    requests_done: list[int] = field(default_factory=list)
    unmet: dict[str, int] = field(default_factory=dict)  # reason -> items that found no room
    storages: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        by_reason: dict[str, dict[str, int]] = defaultdict(lambda: {"copies": 0, "bytes": 0})
        for c in self.copies:
            key = c.reason.split(" ", 1)[0] if c.reason.startswith("request") else c.reason
            by_reason[key]["copies"] += 1
            by_reason[key]["bytes"] += c.size
        return {"copies": len(self.copies), "bytes": sum(c.size for c in self.copies),
                "requests_done": len(self.requests_done), "by_reason": dict(by_reason),
                "unmet": dict(self.unmet), "storages": self.storages}


def plan_cycle(policy: Policy, storages: Sequence[Sequence[Any]],
               items: Mapping[str, Sequence[Any]], replicas: Iterable[Sequence[Any]],
               now: float, *, reliability: Mapping[str, Mapping[str, Any]] | None = None,
               requests: Sequence[Mapping[str, Any]] = ()) -> DealerPlan:
    """The copies of one Dealer cycle over a snapshot's wire records.

    ``reliability`` maps storage names to their measured ``success_rate`` and ``throughput``
    (``GET /v1/storages``); ``requests`` are pending copy requests (``GET /v1/requests``).
    """
    dealer, partition = policy.dealer, policy.partition
    plan = DealerPlan(now)
    if dealer is None:
        return plan
    limits = dealer.limits
    half_life = dealer.popularity.half_life if dealer.popularity else DEFAULT_HALF_LIFE
    reliability = reliability or {}

    by_item: dict[str, list[Sequence[Any]]] = defaultdict(list)
    for rep in replicas:
        by_item[rep[_R["oid"]]].append(rep)

    def size_of(oid: str) -> int:
        return items[oid][_I["size"]] or 0

    # ---- storages, projected
    states: dict[int, StorageState] = {}
    for s in storages:
        sid = s[_S["id"]]
        rel = reliability.get(s[_S["name"]], {})
        rate = rel.get("success_rate")
        states[sid] = StorageState(
            sid, s[_S["name"]],
            {"kind": s[_S["kind"]], "status": s[_S["status"]], "phase": s[_S["phase"]],
             "attributes": s[_S["attributes"]] or {}},
            s[_S["capacity"]], model.PHASE_WEIGHT[model.PHASE[s[_S["phase"]]]], 0, 0, 0, None,
            1.0 if rate is None else rate, rel.get("throughput") or 0.0)
    item_views: dict[str, ItemView] = {}
    holders: dict[str, set[int]] = {}  # storages with a copy (or one on its way)
    weights: dict[str, int] = {}  # phase weight of complete and pending copies
    for oid, reps in by_item.items():
        if oid not in items:
            continue
        held = set()
        weight = 0
        for rep in reps:
            state = rep[_R["state"]]
            sid = rep[_R["storage_id"]]
            size = rep[_R["size"]] if rep[_R["size"]] is not None else size_of(oid)
            if state in _HELD:
                held.add(sid)
                weight += states[sid].phase_weight
            if state in ("deleting", "deleted"):
                continue
            st = states[sid]
            st.used += size
            if state in ("pending", "copying"):
                st.pending += size
        holders[oid] = held
        weights[oid] = weight

    def item_view(oid: str) -> ItemView:
        view = item_views.get(oid)
        if view is None:
            it = items[oid]
            complete = [r for r in by_item.get(oid, ()) if r[_R["state"]] == "complete"]
            view = ItemView(
                it[_I["item_name"]], version=it[_I["item_version"]], type=it[_I["item_type"]],
                state=it[_I["state"]],
                phase=model.PHASES[model.phase_of_weights(
                    sum(states[r[_R["storage_id"]]].phase_weight for r in complete))],
                target_phase=it[_I["target_phase"]], size=size_of(oid),
                created=it[_I["created"]], expire_at=it[_I["expire_at"]],
                metadata=it[_I["metadata"]] or {}, copies=len(complete),
                popularity=decayed_popularity(it[_I["access_count"]], it[_I["last_access"]],
                                              now, half_life),
                access_count=it[_I["access_count"]], last_access=it[_I["last_access"]],
                owner=it[_I["owner"]], group=it[_I["group"]])
            item_views[oid] = view
        return view

    for st in states.values():
        base = st.view()
        st.usable = partition.uses(base)
        st.quota = partition.quota_for(base) if st.usable else None
        st.cached = None
    for oid, reps in by_item.items():
        if oid not in items:
            continue
        if not partition.contains(item_view(oid), None, now):
            continue
        for rep in reps:
            if rep[_R["state"]] not in ("deleting", "deleted"):
                states[rep[_R["storage_id"]]].partition_used += rep[_R["size"]] or size_of(oid)
    before = {sid: st.view().occupancy for sid, st in states.items()}
    total_queued = 0

    def fits(st: StorageState, size: int, *, hard_only: bool = False) -> bool:
        if st.capacity and st.used + size > st.capacity:
            return False
        if hard_only:
            return True
        if st.quota is not None and st.partition_used + size > st.quota:
            return False
        if limits is not None:
            if limits.target_occupancy is not None and st.capacity and \
                    (st.used + size) / st.capacity > limits.target_occupancy:
                return False
            if limits.max_pending is not None and st.capacity and \
                    (st.pending + size) / st.capacity > limits.max_pending:
                return False
            if limits.storage_volume_per_cycle is not None and \
                    st.queued + size > limits.storage_volume_per_cycle:
                return False
            if limits.volume_per_cycle is not None and \
                    total_queued + size > limits.volume_per_cycle:
                return False
        return True

    def rank(st: StorageState) -> tuple:
        free = (st.capacity - st.used) / st.capacity if st.capacity else 0.0
        return (-st.reliability, -free, -st.throughput, st.name)

    # Every storage by rank, kept sorted as copies fill them (one moves per copy): a copy's
    # destination is the first in rank order that passes the checks, found without filtering
    # and sorting all storages for each copy (that was most of a cycle's planning time).
    ranked: list[tuple[tuple, int]] = sorted((rank(st), sid) for sid, st in states.items())
    rank_of = {sid: key for key, sid in ranked}

    def rerank(st: StorageState) -> None:
        old = (rank_of[st.id], st.id)
        del ranked[bisect.bisect_left(ranked, old)]
        key = rank_of[st.id] = rank(st)
        bisect.insort(ranked, (key, st.id))

    def source_for(oid: str, placement=None) -> int | None:
        view = item_view(oid)
        good = [r[_R["storage_id"]] for r in by_item.get(oid, ())
                if r[_R["state"]] == "complete"
                and states[r[_R["storage_id"]]].view_args["status"] != "offline"]
        if placement is not None:
            good = [s for s in good
                    if placement.accepts_source(view, states[s].view(), now)] or good
        if not good:
            return None
        return min(good, key=rank_of.__getitem__)

    def add_copy(oid: str, st: StorageState, reason: str, line: int, placement=None) -> bool:
        nonlocal total_queued
        source = source_for(oid, placement)
        if source is None:
            return False
        size = size_of(oid)
        plan.copies.append(Copy(oid, st.id, source, size, reason, line))
        st.used += size
        st.pending += size
        st.queued += size
        total_queued += size
        if partition.contains(item_view(oid), None, now):
            st.partition_used += size
        holders.setdefault(oid, set()).add(st.id)
        weights[oid] = weights.get(oid, 0) + st.phase_weight
        st.cached = None
        rerank(st)
        return True

    def best_destination(oid: str, accept, *, hard_only: bool = False,
                         avoid: set[int] = frozenset()) -> StorageState | None:
        view = item_view(oid)
        size = size_of(oid)
        held = holders.get(oid, set())
        # in rank order, cheap checks first, then the policy's `to`, until one accepts
        for _key, sid in ranked:
            if sid in held or sid in avoid:
                continue
            st = states[sid]
            if st.view_args["status"] == "online" and (hard_only or st.usable) \
                    and fits(st, size, hard_only=hard_only) and accept(view, st):
                return st
        return None

    def unmet(reason: str) -> None:
        plan.unmet[reason] = plan.unmet.get(reason, 0) + 1

    live = [oid for oid, it in items.items()
            if it[_I["state"]] == "READY" and it[_I["item_type"]] == "file"]

    # ---- 1. users' copy requests
    by_name = {st.name: st for st in states.values()}
    members: dict[str, list[str]] = defaultdict(list)
    for oid, it in items.items():
        if it[_I["parent_oid"]] is not None:
            members[it[_I["parent_oid"]]].append(oid)
    for request in sorted(requests, key=lambda r: r["id"]):
        st = by_name.get(request["storage"])
        if st is None:
            continue
        wanted = members.get(request["oid"], []) or [request["oid"]]
        wanted = [o for o in wanted if o in items and items[o][_I["state"]] == "READY"]
        done = True
        for oid in wanted:
            complete_here = any(r[_R["storage_id"]] == st.id and r[_R["state"]] == "complete"
                                for r in by_item.get(oid, ()))
            if complete_here:
                continue
            done = False
            if st.id in holders.get(oid, set()):
                continue  # on its way
            if st.view_args["status"] != "online" or not fits(st, size_of(oid), hard_only=True):
                unmet(f"request {request['id']}")
                continue
            if not add_copy(oid, st, f"request {request['id']}", 0):
                unmet(f"request {request['id']}")
        if done and wanted:
            plan.requests_done.append(request["id"])

    # ---- 2. draining storages: copy away what is not safe elsewhere
    draining = {sid for sid, st in states.items() if st.view_args["status"] == "draining"}
    if draining:
        for oid in live:
            on_drain = [r for r in by_item.get(oid, ()) if r[_R["storage_id"]] in draining
                        and r[_R["state"]] == "complete"]
            if not on_drain:
                continue
            target = model.PHASE[items[oid][_I["target_phase"]]]
            for _ in on_drain:
                elsewhere = [s for s in holders.get(oid, set()) if s not in draining]
                weight = sum(states[s].phase_weight for s in elsewhere)
                if elsewhere and model.phase_of_weights(weight) >= target:
                    break
                placement = dealer.requirement(item_view(oid), now)
                st = best_destination(oid, lambda v, s, p=placement: p is None
                                      or p.accepts_destination(v, s.view(), now),
                                      avoid=draining)
                if st is None or not add_copy(oid, st, "drain", 0, placement):
                    unmet("drain")
                    break

    # ---- 3. requirements (place rules, then phases), most deficient first
    def deficit(oid: str) -> tuple:
        target = model.PHASE[items[oid][_I["target_phase"]]]
        return (model.phase_of_weights(weights.get(oid, 0)) - target,
                len(holders.get(oid, ())), oid)

    for oid in sorted(live, key=deficit):
        view = item_view(oid)
        if not partition.contains(view, None, now):
            continue
        placement = dealer.requirement(view, now)
        if placement is None:
            continue
        target = model.PHASE[view.target_phase]
        reason = (f"place {placement.label}" if placement.phase is None
                  else f"phase {placement.phase}")
        while (len(holders.get(oid, ())) < placement.copies
               or model.phase_of_weights(weights.get(oid, 0)) < target):
            st = best_destination(oid, lambda v, s, p=placement: p.accepts_destination(
                v, s.view(), now))
            if st is None or not add_copy(oid, st, reason, placement.line, placement):
                unmet(reason)
                break

    # ---- 4. popularity extras
    popularity = dealer.popularity
    if popularity is not None:
        for oid in live:
            view = item_view(oid)
            if not partition.contains(view, None, now):
                continue
            wanted = dealer.wanted_copies(view, now)
            while len(holders.get(oid, ())) < wanted:
                st = best_destination(oid, lambda v, s: popularity.to is None
                                      or popularity.to(v, None, s.view(), now))
                if st is None or not add_copy(oid, st, "popularity", popularity.line):
                    break

    # ---- 5. balancing: from the fullest storages toward the emptiest
    balance = dealer.balance
    if balance is not None and balance.spread is not None:
        budget = balance.volume_per_cycle
        online = [st for st in states.values() if st.view_args["status"] == "online"
                  and st.capacity and st.usable]
        moved = 0
        while len(online) > 1:
            online.sort(key=lambda st: st.used / st.capacity)
            low, high = online[0], online[-1]
            if high.used / high.capacity - low.used / low.capacity <= balance.spread:
                break
            candidates = [oid for oid in live if high.id in holders.get(oid, set())
                          and low.id not in holders.get(oid, set())
                          and partition.contains(item_view(oid), None, now)]
            candidates.sort(key=lambda o: item_view(o).popularity)
            progressed = False
            for oid in candidates:
                size = size_of(oid)
                if budget is not None and moved + size > budget:
                    break
                if not fits(low, size):
                    continue
                if (high.used - size) / high.capacity < (low.used + size) / low.capacity:
                    continue  # would overshoot
                if add_copy(oid, low, "balance", balance.line):
                    high.used -= size  # Detox will reclaim the copy on the full storage
                    high.cached = None
                    rerank(high)
                    moved += size
                    progressed = True
                    break
            if not progressed:
                break

    copies_to = Counter(c.target_id for c in plan.copies)
    for sid, st in sorted(states.items(), key=lambda kv: kv[1].name):
        plan.storages.append({
            "name": st.name, "status": st.view_args["status"], "capacity": st.capacity,
            "occupancy_before": round(before[sid], 6),
            "occupancy_after": round(st.view().occupancy, 6),
            "queued_bytes": st.queued,
            "queued_copies": copies_to[sid],
            "reliability": st.reliability,
        })
    return plan
