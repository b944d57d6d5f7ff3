"""Dealer's algorithm: which new copies to make and where, written once over an item table.
Pure: data in, plan out, no I/O.

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

The items are read through an ``ItemTable``: ``dealer.planner.RecordItems`` reads a record
snapshot item by item; ``dealer.columns.ColumnItems`` reads a column snapshot, where everything
that is per item (requirement, membership, current phase, who is short of copies) is computed as
array operations and the sequential part runs only for the items that need copies.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from inventory import model
from inventory.feed import WIRE_STORAGE_FIELDS as SF
from policies import ItemView, Policy, StorageView
from policies.model import Condition, DealerPolicy, Placement

_S = {name: i for i, name in enumerate(SF)}


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
    online: bool = True
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



class ItemTable(Protocol):
    """The items as ``Dealing`` reads them: numbered 0..n-1 in snapshot order (the order the
    stages walk them in), with what the snapshot says of each. The plan changes nothing here:
    ``Dealing`` keeps the copies it plans on top."""

    def oids(self, items: Sequence[int]) -> list[str]: ...
    def find(self, oid: str) -> int | None: ...
    def is_ready(self, item: int) -> bool: ...
    def is_live(self, item: int) -> bool: ...  # a READY file
    def size(self, item: int) -> int: ...
    def target(self, item: int) -> int: ...  # target phase code
    def view(self, item: int) -> ItemView: ...
    def member(self, item: int) -> bool: ...  # in the policy's partition
    def requirement(self, item: int) -> Placement | None: ...
    def popularity(self, item: int) -> float: ...
    def held(self, item: int) -> tuple[set[int], int]: ...  # storages holding it, their weight
    def complete_on(self, item: int) -> list[int]: ...  # storages with a complete copy
    def children(self, item: int) -> list[int]: ...  # a container's members, in order

    def usage(self) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
        """Bytes per storage id: used (every copy there or on its way), pending (on its way)
        and the partition's (used by its members)."""
        ...

    def on_draining(self, draining: set[int]) -> Iterable[int]:
        """Live items with a complete copy on one of ``draining``, in order."""
        ...

    def short(self, dealing: Dealing) -> np.ndarray:
        """Live items of the partition short of their requirement (``Dealing.is_short``, on
        the copies planned so far), most deficient first: by how far their phase is below
        target, then by how few holders they have, then by oid."""
        ...

    def sizes(self, items: np.ndarray) -> np.ndarray:
        """``size`` of each of ``items`` (int64)."""
        ...

    def placement_codes(self, items: np.ndarray) -> tuple[np.ndarray, list[Placement]]:
        """``requirement`` of each of ``items``, as codes into the returned placements."""
        ...

    def popular(self, dealing: Dealing) -> Iterable[int]:
        """Live items of the partition that may want popularity copies, in order."""
        ...

    def held_on(self, sid: int) -> Iterable[int]:
        """Live items of the partition held on storage ``sid`` in the snapshot."""
        ...


def storage_states(storages: Sequence[Sequence[Any]],
                   reliability: Mapping[str, Mapping[str, Any]]) -> dict[int, StorageState]:
    """The storages of a snapshot as Dealer projects them, with their measured reliability."""
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
            1.0 if rate is None else rate, rel.get("throughput") or 0.0,
            online=s[_S["status"]] == "online")
    return states


def _next_fitting(sizes: np.ndarray, start: int, room: int, chunk: int = 1 << 16) -> int:
    """The first position from ``start`` whose size is at most ``room`` (``len(sizes)``:
    none), searched a chunk at a time: the next one is usually near."""
    for lo in range(start, len(sizes), chunk):
        hits = np.flatnonzero(sizes[lo:lo + chunk] <= room)
        if len(hits):
            return lo + int(hits[0])
    return len(sizes)


def _reason(placement: Placement) -> str:
    """What a copy made for ``placement`` is recorded as."""
    return f"place {placement.label}" if placement.phase is None else f"phase {placement.phase}"


class Dealing:
    """One cycle's planning: the storages as projected while copies are planned, the copies
    planned so far, and the five stages (see the module's docstring), over an ``ItemTable``."""

    def __init__(self, policy: Policy, table: ItemTable, states: dict[int, StorageState],
                 now: float) -> None:
        assert policy.dealer is not None
        self.dealer: DealerPolicy = policy.dealer
        self.partition = policy.partition
        self.table = table
        self.states = states
        self.now = now
        self.limits = self.dealer.limits
        self.plan = DealerPlan(now)
        self.total_queued = 0
        self._holders: dict[int, set[int]] = {}  # items touched so far: snapshot + planned
        self._weights: dict[int, int] = {}
        self._planned_on: dict[int, list[int]] = defaultdict(list)  # storage -> items
        # the copies, column-wise (Copy objects and oid texts are made once, at the end)
        self._items: list[int] = []
        self._targets: list[int] = []
        self._sources: list[int] = []
        self._sizes: list[int] = []
        self._reasons: list[tuple[str, int]] = []
        self._view_of: tuple[int, ItemView] | None = None
        self._offline = {sid for sid, st in states.items()
                         if st.view_args["status"] == "offline"}  # never a source

        used, pending, part = table.usage()
        for sid, st in states.items():
            st.used, st.pending = used.get(sid, 0), pending.get(sid, 0)
            base = st.view()
            st.usable = self.partition.uses(base)
            st.quota = self.partition.quota_for(base) if st.usable else None
            st.partition_used = part.get(sid, 0)
            st.cached = None
        self.before = {sid: st.view().occupancy for sid, st in states.items()}
        # Every storage by rank, kept sorted as copies fill them (one moves per copy): a
        # copy's destination is the first in rank order that passes the checks, found without
        # filtering and sorting all storages for each copy.
        self.ranked: list[tuple[tuple, int]] = sorted((self.rank(st), sid)
                                                      for sid, st in states.items())
        self.rank_of = {sid: key for key, sid in self.ranked}

    # ---- what is planned so far, per item

    def holders(self, item: int) -> set[int]:
        """Storages with a copy of ``item`` or one on its way (planned ones included)."""
        held = self._holders.get(item)
        if held is None:
            held, self._weights[item] = self.table.held(item)
            self._holders[item] = held
        return held

    def weight(self, item: int) -> int:
        """Phase weight of ``item``'s complete and pending copies (planned ones included)."""
        if item not in self._holders:
            self.holders(item)
        return self._weights[item]

    @property
    def touched(self) -> Mapping[int, set[int]]:
        """Items whose holders were read or changed, with their holders."""
        return self._holders

    def view(self, item: int) -> ItemView:
        if self._view_of is None or self._view_of[0] != item:
            self._view_of = (item, self.table.view(item))
        return self._view_of[1]

    def is_short(self, item: int) -> bool:
        """Whether ``item`` has fewer copies than its requirement asks for, or a phase below
        its target (planned copies counted); False without a requirement."""
        placement = self.table.requirement(item)
        return placement is not None and (
            len(self.holders(item)) < placement.copies
            or model.phase_of_weights(self.weight(item)) < self.table.target(item))

    def wanted(self, item: int) -> int:
        """``DealerPolicy.wanted_copies``, with the table's requirement and popularity."""
        return self.dealer.copies_wanted(self.table.requirement(item),
                                         self.table.popularity(item))

    # ---- storages

    @staticmethod
    def rank(st: StorageState) -> tuple:
        free = (st.capacity - st.used) / st.capacity if st.capacity else 0.0
        return (-st.reliability, -free, -st.throughput, st.name)

    def rerank(self, st: StorageState) -> None:
        ranked = self.ranked
        del ranked[bisect.bisect_left(ranked, (self.rank_of[st.id], st.id))]
        key = self.rank_of[st.id] = self.rank(st)
        bisect.insort(ranked, (key, st.id))

    def fits(self, st: StorageState, size: int, *, hard_only: bool = False) -> bool:
        if st.capacity and st.used + size > st.capacity:
            return False
        if hard_only:
            return True
        if st.quota is not None and st.partition_used + size > st.quota:
            return False
        limits = self.limits
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
                    self.total_queued + size > limits.volume_per_cycle:
                return False
        return True

    def best_destination(self, item: int, accept: Callable[[int, StorageState], bool] | None,
                         *, hard_only: bool = False, avoid: Iterable[int] = (),
                         size: int | None = None) -> StorageState | None:
        """The first storage in rank order that may take a copy of ``item`` (of ``size``,
        when the caller knows it): cheap checks first, then the policy's ``accept``."""
        if size is None:
            size = self.table.size(item)
        limits = self.limits
        if not hard_only and limits is not None and limits.volume_per_cycle is not None \
                and self.total_queued + size > limits.volume_per_cycle:
            return None  # the cycle's volume is spent: no storage fits (fits() says so)
        held = self.holders(item)
        states = self.states
        for _key, sid in self.ranked:
            if sid in held or sid in avoid:
                continue
            st = states[sid]
            if st.online and (hard_only or st.usable) and self.fits(st, size,
                                                                    hard_only=hard_only) \
                    and (accept is None or accept(item, st)):
                return st
        return None

    def source_for(self, item: int, placement: Placement | None = None) -> int | None:
        states = self.states
        good = self.table.complete_on(item)
        if self._offline:
            good = [sid for sid in good if sid not in self._offline]
        if placement is not None and placement.source is not None:
            view = self.view(item)
            good = [s for s in good
                    if placement.accepts_source(view, states[s].view(), self.now)] or good
        if not good:
            return None
        return min(good, key=self.rank_of.__getitem__)

    def add_copy(self, item: int, st: StorageState, reason: str, line: int,
                 placement: Placement | None = None, size: int | None = None) -> bool:
        """Plan a copy of ``item`` (of ``size``, when the caller knows it) to ``st``."""
        source = self.source_for(item, placement)
        if source is None:
            return False
        if size is None:
            size = self.table.size(item)
        self._items.append(item)
        self._targets.append(st.id)
        self._sources.append(source)
        self._sizes.append(size)
        self._reasons.append((reason, line))
        st.used += size
        st.pending += size
        st.queued += size
        self.total_queued += size
        if self.table.member(item):
            st.partition_used += size
        self.holders(item).add(st.id)
        self._weights[item] += st.phase_weight
        self._planned_on[st.id].append(item)
        st.cached = None
        self.rerank(st)
        return True

    def unmet(self, reason: str) -> None:
        self.plan.unmet[reason] = self.plan.unmet.get(reason, 0) + 1

    def destination_test(self, to: Condition | None
                         ) -> Callable[[int, StorageState], bool] | None:
        """A rule's ``to`` as ``best_destination`` calls it (None: any storage)."""
        if to is None:
            return None
        now = self.now

        def accept(item: int, st: StorageState) -> bool:
            return to(self.view(item), None, st.view(), now)

        return accept

    # ---- the stages

    def run(self, requests: Sequence[Mapping[str, Any]] = ()) -> DealerPlan:
        self.requests(requests)
        self.drain()
        self.requirements()
        self.popularity()
        self.balance()
        return self.finish()

    def requests(self, requests: Sequence[Mapping[str, Any]]) -> None:
        """1. users' copy requests, oldest first; a request already satisfied is done."""
        table = self.table
        by_name = {st.name: st for st in self.states.values()}
        for request in sorted(requests, key=lambda r: r["id"]):
            st = by_name.get(request["storage"])
            if st is None:
                continue
            reason = f"request {request['id']}"
            item = table.find(request["oid"])
            wanted = ([] if item is None else table.children(item)) or (
                [] if item is None else [item])
            wanted = [i for i in wanted if table.is_ready(i)]
            done = True
            for i in wanted:
                if st.id in table.complete_on(i):
                    continue
                done = False
                if st.id in self.holders(i):
                    continue  # on its way
                if not st.online or not self.fits(st, table.size(i), hard_only=True) \
                        or not self.add_copy(i, st, reason, 0):
                    self.unmet(reason)
            if done and wanted:
                self.plan.requests_done.append(request["id"])

    def drain(self) -> None:
        """2. draining storages: copy away what is not safe elsewhere."""
        draining = {sid for sid, st in self.states.items()
                    if st.view_args["status"] == "draining"}
        if not draining:
            return
        table, states = self.table, self.states
        for item in table.on_draining(draining):
            target = table.target(item)
            for _ in [s for s in table.complete_on(item) if s in draining]:
                elsewhere = [s for s in self.holders(item) if s not in draining]
                weight = sum(states[s].phase_weight for s in elsewhere)
                if elsewhere and model.phase_of_weights(weight) >= target:
                    break
                placement = table.requirement(item)
                st = self.best_destination(
                    item, self.destination_test(placement and placement.to), avoid=draining)
                if st is None or not self.add_copy(item, st, "drain", 0, placement):
                    self.unmet("drain")
                    break

    def requirements(self) -> None:
        """3. requirements (place rules, then phases), most deficient first.

        Once the cycle's ``volume_per_cycle`` is nearly spent, most short items are too large
        for what is left: no storage fits them (``best_destination`` would say so after its
        volume check), so they are counted unmet in bulk, up to the next item that fits."""
        table = self.table
        items = table.short(self)
        sizes = table.sizes(items)
        codes, placements = table.placement_codes(items)
        tests = [(_reason(p), self.destination_test(p.to)) for p in placements]
        volume = self.limits.volume_per_cycle if self.limits is not None else None
        spent = np.zeros(len(placements), dtype=np.int64)  # unmet: the volume was spent
        item_list, size_list, code_list = items.tolist(), sizes.tolist(), codes.tolist()
        k, n = 0, len(item_list)
        while k < n:
            if volume is not None and self.total_queued + size_list[k] > volume:
                end = _next_fitting(sizes, k + 1, volume - self.total_queued)
                spent += np.bincount(codes[k:end], minlength=len(placements))
                k = end
                continue
            item, placement, size = item_list[k], placements[code_list[k]], size_list[k]
            reason, accept = tests[code_list[k]]
            target = table.target(item)
            while (len(self.holders(item)) < placement.copies
                   or model.phase_of_weights(self._weights[item]) < target):
                st = self.best_destination(item, accept, size=size)
                if st is None or not self.add_copy(item, st, reason, placement.line,
                                                   placement, size):
                    self.unmet(reason)
                    break
            k += 1
        for (reason, _accept), count in zip(tests, spent.tolist(), strict=True):
            if count:
                self.plan.unmet[reason] = self.plan.unmet.get(reason, 0) + count

    def popularity(self) -> None:
        """4. popularity extras, up to the policy's maximum."""
        popularity = self.dealer.popularity
        if popularity is None:
            return
        accept = self.destination_test(popularity.to)
        for item in self.table.popular(self):
            wanted = self.wanted(item)
            while len(self.holders(item)) < wanted:
                st = self.best_destination(item, accept)
                if st is None or not self.add_copy(item, st, "popularity", popularity.line):
                    break

    def balance(self) -> None:
        """5. balancing: from the fullest storages toward the emptiest."""
        balance = self.dealer.balance
        if balance is None or balance.spread is None:
            return
        table = self.table
        budget = balance.volume_per_cycle
        online = [st for st in self.states.values() if st.view_args["status"] == "online"
                  and st.capacity and st.usable]
        moved = 0
        while len(online) > 1:
            online.sort(key=lambda st: st.used / st.capacity)
            low, high = online[0], online[-1]
            if high.used / high.capacity - low.used / low.capacity <= balance.spread:
                break
            progressed = False
            for item in self._balance_candidates(high, low):
                size = table.size(item)
                if budget is not None and moved + size > budget:
                    break
                if not self.fits(low, size):
                    continue
                if (high.used - size) / high.capacity < (low.used + size) / low.capacity:
                    continue  # would overshoot
                if self.add_copy(item, low, "balance", balance.line):
                    high.used -= size  # Detox will reclaim the copy on the full storage
                    high.cached = None
                    self.rerank(high)
                    moved += size
                    progressed = True
                    break
            if not progressed:
                break

    def _balance_candidates(self, high: StorageState, low: StorageState) -> Iterator[int]:
        """Live items of the partition on ``high`` and not on ``low``, least popular first."""
        table = self.table
        planned = [i for i in self._planned_on[high.id] if table.is_live(i) and table.member(i)]
        items = sorted({*table.held_on(high.id), *planned},
                       key=lambda i: (table.popularity(i), i))
        for item in items:
            if low.id not in self.holders(item):
                yield item

    def finish(self) -> DealerPlan:
        plan = self.plan
        plan.copies = [Copy(oid, target, source, size, reason, line)
                       for oid, target, source, size, (reason, line) in zip(
                           self.table.oids(self._items), self._targets, self._sources,
                           self._sizes, self._reasons, strict=True)]
        copies_to = Counter(self._targets)
        for sid, st in sorted(self.states.items(), key=lambda kv: kv[1].name):
            plan.storages.append({
                "name": st.name, "status": st.view_args["status"], "capacity": st.capacity,
                "occupancy_before": round(self.before[sid], 6),
                "occupancy_after": round(st.view().occupancy, 6),
                "queued_bytes": st.queued,
                "queued_copies": copies_to[sid],
                "reliability": st.reliability,
            })
        return plan
