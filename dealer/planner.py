"""Dealer's plan over a record snapshot: ``dealer.dealing``'s algorithm reading the items as
wire records, one by one. The reference the column planner (``dealer.columns``) is held equal
to, and the planner for policies the column evaluator cannot express. Pure: records in, plan
out, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dealer.dealing import Copy, DealerPlan, Dealing, StorageState, storage_states
from detox.planner import DEFAULT_HALF_LIFE, decayed_popularity
from inventory import model
from inventory.feed import WIRE_ITEM_FIELDS as IF
from inventory.feed import WIRE_REPLICA_FIELDS as RF
from policies import ItemView, Policy
from policies.model import Placement

__all__ = ["Copy", "DealerPlan", "RecordItems", "StorageState", "plan_cycle"]

_I = {name: i for i, name in enumerate(IF)}
_R = {name: i for i, name in enumerate(RF)}
_HELD = {"complete", "pending", "copying"}  # a copy there, or one on its way


def plan_cycle(policy: Policy, storages: Sequence[Sequence[Any]],
               items: Mapping[str, Sequence[Any]], replicas: Iterable[Sequence[Any]],
               now: float, *, reliability: Mapping[str, Mapping[str, Any]] | None = None,
               requests: Sequence[Mapping[str, Any]] = ()) -> DealerPlan:
    """The copies of one Dealer cycle over a snapshot's wire records.

    ``reliability`` maps storage names to their measured ``success_rate`` and ``throughput``
    (``GET /v1/storages``); ``requests`` are pending copy requests (``GET /v1/requests``).
    """
    if policy.dealer is None:
        return DealerPlan(now)
    states = storage_states(storages, reliability or {})
    table = RecordItems(policy, states, items, replicas, now)
    return Dealing(policy, table, states, now).run(requests)


class RecordItems:
    """``ItemTable`` over wire records, item by item."""

    def __init__(self, policy: Policy, states: Mapping[int, StorageState],
                 items: Mapping[str, Sequence[Any]], replicas: Iterable[Sequence[Any]],
                 now: float) -> None:
        dealer = policy.dealer
        assert dealer is not None
        self._policy, self._dealer, self._states, self._now = policy, dealer, states, now
        self._half_life = dealer.popularity.half_life if dealer.popularity else DEFAULT_HALF_LIFE
        self._records = list(items.values())
        self._oids = list(items)
        self._index = {oid: i for i, oid in enumerate(self._oids)}
        self._names = {oid: it[_I["item_name"]] for oid, it in items.items()}
        self._replicas: list[list[Sequence[Any]]] = [[] for _ in self._oids]
        for rep in replicas:
            i = self._index.get(rep[_R["oid"]])
            if i is not None:
                self._replicas[i].append(rep)
        self._views: dict[int, ItemView] = {}
        self._member: dict[int, bool] = {}
        self._children: dict[int, list[int]] | None = None
        self.live = [i for i, it in enumerate(self._records)
                     if it[_I["state"]] == "READY" and it[_I["item_type"]] == "file"]

    def oids(self, items: Sequence[int]) -> list[str]:
        return [self._oids[i] for i in items]

    def find(self, oid: str) -> int | None:
        return self._index.get(oid)

    def is_ready(self, item: int) -> bool:
        return self._records[item][_I["state"]] == "READY"

    def is_live(self, item: int) -> bool:
        it = self._records[item]
        return it[_I["state"]] == "READY" and it[_I["item_type"]] == "file"

    def size(self, item: int) -> int:
        return self._records[item][_I["size"]] or 0

    def target(self, item: int) -> int:
        return model.PHASE[self._records[item][_I["target_phase"]]]

    def view(self, item: int) -> ItemView:
        view = self._views.get(item)
        if view is None:
            it = self._records[item]
            states = self._states
            complete = [r for r in self._replicas[item] if r[_R["state"]] == "complete"]
            parent = it[_I["parent_oid"]]
            view = self._views[item] = ItemView(
                it[_I["item_name"]], version=it[_I["item_version"]], type=it[_I["item_type"]],
                state=it[_I["state"]],
                phase=model.PHASES[model.phase_of_weights(
                    sum(states[r[_R["storage_id"]]].phase_weight for r in complete))],
                target_phase=it[_I["target_phase"]], size=self.size(item),
                created=it[_I["created"]], expire_at=it[_I["expire_at"]],
                metadata=it[_I["metadata"]] or {}, copies=len(complete),
                popularity=self.popularity(item),
                access_count=it[_I["access_count"]], last_access=it[_I["last_access"]],
                parent=self._names.get(parent) if parent is not None else None,
                owner=it[_I["owner"]], group=it[_I["group"]])
        return view

    def member(self, item: int) -> bool:
        inside = self._member.get(item)
        if inside is None:
            inside = self._member[item] = self._policy.partition.contains(
                self.view(item), None, self._now)
        return inside

    def requirement(self, item: int) -> Placement | None:
        return self._dealer.requirement(self.view(item), self._now)

    def popularity(self, item: int) -> float:
        it = self._records[item]
        return decayed_popularity(it[_I["access_count"]], it[_I["last_access"]], self._now,
                                  self._half_life)

    def held(self, item: int) -> tuple[set[int], int]:
        held: set[int] = set()
        weight = 0
        for rep in self._replicas[item]:
            if rep[_R["state"]] in _HELD:
                held.add(rep[_R["storage_id"]])
                weight += self._states[rep[_R["storage_id"]]].phase_weight
        return held, weight

    def complete_on(self, item: int) -> list[int]:
        return [r[_R["storage_id"]] for r in self._replicas[item] if r[_R["state"]] == "complete"]

    def children(self, item: int) -> list[int]:
        if self._children is None:
            self._children = defaultdict(list)
            for i, it in enumerate(self._records):
                parent = self._index.get(it[_I["parent_oid"]])
                if parent is not None:
                    self._children[parent].append(i)
        return self._children.get(item, [])

    def usage(self) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
        used: dict[int, int] = defaultdict(int)
        pending: dict[int, int] = defaultdict(int)
        part: dict[int, int] = defaultdict(int)
        for item, reps in enumerate(self._replicas):
            inside = bool(reps) and self.member(item)
            for rep in reps:
                state = rep[_R["state"]]
                if state in ("deleting", "deleted"):
                    continue
                sid = rep[_R["storage_id"]]
                size = rep[_R["size"]]
                used[sid] += size if size is not None else self.size(item)
                if state in ("pending", "copying"):
                    pending[sid] += size if size is not None else self.size(item)
                if inside:
                    part[sid] += size or self.size(item)
        return used, pending, part

    def on_draining(self, draining: set[int]) -> Iterable[int]:
        return [i for i in self.live if not draining.isdisjoint(self.complete_on(i))]

    def short(self, dealing: Dealing) -> np.ndarray:
        def deficit(i: int) -> tuple:
            return (model.phase_of_weights(dealing.weight(i)) - self.target(i),
                    len(dealing.holders(i)), self._oids[i])

        return np.array(sorted((i for i in self.live if self.member(i) and dealing.is_short(i)),
                               key=deficit), dtype=np.int64)

    def sizes(self, items: np.ndarray) -> np.ndarray:
        return np.array([self.size(i) for i in items.tolist()], dtype=np.int64)

    def placement_codes(self, items: np.ndarray) -> tuple[np.ndarray, list[Placement]]:
        placements: list[Placement] = []
        code_of: dict[int, int] = {}
        codes = []
        for i in items.tolist():
            placement = self.requirement(i)
            assert placement is not None
            code = code_of.get(id(placement))
            if code is None:
                code = code_of[id(placement)] = len(placements)
                placements.append(placement)
            codes.append(code)
        return np.array(codes, dtype=np.int64), placements

    def popular(self, dealing: Dealing) -> Iterable[int]:
        return [i for i in self.live if self.member(i)]

    def held_on(self, sid: int) -> Iterable[int]:
        return [i for i in self.live if self.member(i) and sid in self.held(i)[0]]
