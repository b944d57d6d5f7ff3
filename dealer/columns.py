"""Dealer's decision over a column snapshot: ``dealer.dealing.Dealing`` (the one algorithm) reading
the items through arrays instead of records. Pure: columns in, plan out, no I/O.

Most items of a large inventory need nothing: their copies already meet their requirement.
The record table finds that out item by item (a view, the requirement, the deficit: ~20 us an
item, ~100 s at 10M replicas). Here it is array work over every item at once: the partition's
``members`` and the ``place`` rules' conditions are evaluated with ``policies.vector``, copies
and phase weights counted with ``bincount``, and only the items that may be short of their
requirement (or may want popularity copies, or sit on a draining storage) reach the sequential
part, in the record table's order. Everything the sequential part reads of an item (its size,
holders, complete copies, and its view for a ``to`` or ``source`` condition) comes from the
same columns, so the plan is the record planner's, copy for copy
(``tests/test_dealer_columns.py`` compares the two on random policies and inventories).

A policy whose ``members`` or ``place`` conditions the column evaluator cannot express (a
comparison of two attributes, a replica or storage attribute) is planned on records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dealer.dealing import DealerPlan, Dealing, StorageState, storage_states
from detox.columns import exact_sums, item_columns, phase_weights_by_item, popularity_column
from detox.planner import DEFAULT_HALF_LIFE, decayed_popularity
from inventory import model
from inventory.columns import ColumnSnapshot
from policies import ItemView, Policy, vector
from policies.context import EMPTY
from policies.ir import attributes_of
from policies.model import Placement

_HELD = tuple(model.REPLICA_STATE[s] for s in ("complete", "pending", "copying"))
_IN_FLIGHT = tuple(model.REPLICA_STATE[s] for s in ("pending", "copying"))
_GONE = tuple(model.REPLICA_STATE[s] for s in ("deleting", "deleted"))
_COMPLETE = model.REPLICA_STATE["complete"]
_PHASE_OF_WEIGHT = np.array([model.phase_of_weights(w) for w in range(5)], dtype=np.int8)


def _item_conditions(policy: Policy) -> list[Any]:
    """The conditions the column table evaluates over items: membership and ``place`` rules."""
    dealer = policy.dealer
    members = policy.partition.members
    out = [members.source] if members is not None else []
    if dealer is not None:
        out += [rule.condition.source for rule in dealer.rules if rule.condition is not None]
    return out


def supports(policy: Policy) -> bool:
    """Whether the column planner can plan for this policy (else: the record planner)."""
    if policy.dealer is None:
        return False
    conditions = _item_conditions(policy)
    try:
        vector.check(conditions)
    except vector.Unsupported:
        return False
    return all(a.obj == "item" for c in conditions for a in attributes_of(c.expr))


def needed_fields(policy: Policy) -> list[str]:
    """The optional snapshot fields the policy reads (``inventory.columns.OPTIONAL``): its
    item conditions, and the ``to``/``source`` conditions that read the item's view."""
    dealer = policy.dealer
    conditions = _item_conditions(policy)
    if dealer is not None:
        for placement in (*dealer.rules, *dealer.phases.values()):
            conditions += [c.source for c in (placement.to, placement.source) if c is not None]
        if dealer.popularity is not None and dealer.popularity.to is not None:
            conditions.append(dealer.popularity.to.source)
    attrs = [a for c in conditions for a in attributes_of(c.expr) if a.obj == "item"]
    out = []
    if any(a.spec.name in ("name", "parent") for a in attrs):
        out.append("name")
    if any(a.spec.name == "metadata" for a in attrs):
        out.append("metadata")
    return out


def plan_columns(policy: Policy, snap: ColumnSnapshot, now: float, *,
                 reliability: Mapping[str, Mapping[str, Any]] | None = None,
                 requests: Sequence[Mapping[str, Any]] = ()) -> DealerPlan:
    """The copies of one Dealer cycle over a column snapshot (see the module's docstring)."""
    if policy.dealer is None:
        return DealerPlan(now)
    states = storage_states(snap.storages, reliability or {})
    table = ColumnItems(policy, states, snap, now)
    return Dealing(policy, table, states, now).run(requests)


def _deficit_order(oids: np.ndarray, below: np.ndarray, holders: np.ndarray) -> np.ndarray:
    """The order of ``Dealing``'s deficit key (phase below target, holders, oid) over these
    items: sorted by oid first, then by the rest with a stable radix sort of its small codes.
    (``np.lexsort`` of the same keys takes ~4x as long: 1.6 s for 2.5M items.)"""
    halves = oids.view(">u8").reshape(-1, 2).astype(np.uint64)
    by_oid = np.argsort(halves[:, 0])
    high = halves[by_oid, 0]
    if len(high) > 1 and bool((high[1:] == high[:-1]).any()):  # 64 equal bits: never, but
        by_oid = np.lexsort((halves[:, 1], halves[:, 0]))      # exact if it happens
    span = int(holders.max()) + 1 if len(holders) else 1
    key = (below - (int(below.min()) if len(below) else 0)) * span + holders
    if len(key) and int(key.max()) >= 1 << 15:  # many storages: dense codes instead
        key = np.unique(key, return_inverse=True)[1]
    small = not len(key) or int(key.max()) < 1 << 15  # radix-sorted when 16-bit
    return by_oid[np.argsort(key[by_oid].astype(np.int16 if small else np.int64),
                             kind="stable")]


class ColumnItems:
    """``dealer.dealing.ItemTable`` over a column snapshot: per-item facts as arrays, computed
    once; the few items the stages walk read them as Python values."""

    def __init__(self, policy: Policy, states: Mapping[int, StorageState],
                 snap: ColumnSnapshot, now: float) -> None:
        dealer = policy.dealer
        assert dealer is not None
        self._snap, self._dealer, self._now = snap, dealer, now
        self._half_life = dealer.popularity.half_life if dealer.popularity else DEFAULT_HALF_LIFE
        items, reps = snap.items, snap.replicas
        n = self._n = snap.item_count
        r_item, r_sid, r_state = reps["item"], reps["storage_id"], reps["state"]
        n_sids = max([*states, int(r_sid.max()) if len(r_sid) else 0]) + 1
        phase_weight = np.zeros(n_sids, dtype=np.int64)
        for sid, st in states.items():
            phase_weight[sid] = st.phase_weight
        self._n_sids = n_sids

        self._item_size = np.maximum(items["size"], 0)
        ready = items["state"] == model.READY
        self._ready = ready
        self._live_mask = ready & (items["type"] == model.FILE)

        # replicas: who holds what (complete or on its way), and the phase weight of that
        held = np.isin(r_state, _HELD)
        complete = r_state == _COMPLETE
        held_items = r_item[held]
        self._n_held = np.bincount(held_items, minlength=n).astype(np.int32)
        self._held_weight = phase_weights_by_item(held_items, phase_weight[r_sid[held]], n)
        complete_weight = phase_weights_by_item(r_item[complete],
                                                phase_weight[r_sid[complete]], n)
        copies = np.bincount(r_item[complete], minlength=n).astype(np.int32)
        self._phase = _PHASE_OF_WEIGHT[np.minimum(complete_weight, 4)]
        self._copies = copies
        # the held replicas grouped by item, its complete ones first: an item's holders are
        # held_sids[starts[i]:starts[i + 1]], its complete copies the first copies[i] of them
        rows = np.flatnonzero(held)
        rows = rows[np.argsort(r_item[rows].astype(np.int64) * 2 + ~complete[rows],
                               kind="stable")]
        self._starts = np.searchsorted(r_item[rows], np.arange(n + 1))
        self._held_sids = r_sid[rows]
        self._held_rows = rows
        self._phase_weight = phase_weight.tolist()

        # the policy over every item at once
        frame = vector.Frame(n, now, item_columns(
            snap, np.arange(n), now, self._half_life, items["state"], complete_weight, copies))
        everyone = np.ones(n, dtype=bool)
        members = policy.partition.members
        self._member = (everyone if members is None
                        else vector.evaluate(members.source.expr, frame, everyone))
        rules = [r for r in dealer.rules if r.condition is not None]
        placements: list[Placement] = [*rules, *dealer.phases.values()]
        chosen = vector.first_match([r.condition.source for r in rules], frame, everyone)
        by_target = np.full(len(model.PHASES), -1, dtype=np.int16)
        for at, placement in enumerate(dealer.phases.values()):
            by_target[model.PHASE[placement.phase]] = len(rules) + at
        fallback = by_target[items["target_phase"]]
        self._requirement = np.where(chosen >= 0, chosen, fallback).astype(np.int16)
        self._placements = placements
        # copies each item's requirement asks for (0 without one: code -1 reads the last)
        self._required = np.array([p.copies for p in placements] + [0],
                                  dtype=np.int32)[self._requirement]

    # ---- ItemTable

    def oids(self, items: Sequence[int]) -> list[str]:
        return self._snap.oid_texts(np.asarray(items, dtype=np.int64))

    def find(self, oid: str) -> int | None:
        try:
            key = model.parse_uuid(oid).to_bytes(16, "big")
        except ValueError:
            return None
        hits = np.flatnonzero(self._snap.items["oid"] == np.array(key, dtype="V16"))
        return int(hits[0]) if len(hits) else None

    def is_ready(self, item: int) -> bool:
        return bool(self._ready[item])

    def is_live(self, item: int) -> bool:
        return bool(self._live_mask[item])

    def size(self, item: int) -> int:
        return int(self._item_size[item])

    def target(self, item: int) -> int:
        return int(self._snap.items["target_phase"][item])

    def sizes(self, items: np.ndarray) -> np.ndarray:
        return self._item_size[items].astype(np.int64)

    def placement_codes(self, items: np.ndarray) -> tuple[np.ndarray, list[Placement]]:
        return self._requirement[items].astype(np.int64), self._placements

    def view(self, item: int) -> ItemView:
        snap, items = self._snap, self._snap.items
        parent = int(items["parent"][item])

        def time_or_none(column: str) -> float | None:
            value = float(items[column][item])
            return None if value != value else value

        return ItemView(
            snap.names_of(np.array([item]))[0] if snap.has_names else "",
            version=int(items["version"][item]),
            type=model.ITEM_TYPES[items["type"][item]],
            state=model.ITEM_STATES[items["state"][item]],
            phase=model.PHASES[self._phase[item]],
            target_phase=model.PHASES[self.target(item)], size=self.size(item),
            created=float(items["created"][item]), expire_at=time_or_none("expire_at"),
            metadata=(snap.metadata or {}).get(item) or EMPTY, copies=int(self._copies[item]),
            popularity=self.popularity(item),
            access_count=int(items["access_count"][item]),
            last_access=time_or_none("last_access"),
            parent=(snap.names_of(np.array([parent]))[0]
                    if parent >= 0 and snap.has_names else None),
            owner=snap.owners[items["owner"][item]], group=snap.groups[items["group"][item]])

    def member(self, item: int) -> bool:
        return bool(self._member[item])

    def requirement(self, item: int) -> Placement | None:
        at = int(self._requirement[item])
        return None if at < 0 else self._placements[at]

    def popularity(self, item: int) -> float:
        items = self._snap.items
        last = float(items["last_access"][item])
        return decayed_popularity(int(items["access_count"][item]),
                                  None if last != last else last, self._now, self._half_life)

    def held(self, item: int) -> tuple[set[int], int]:
        sids = self._held_sids[self._starts[item]:self._starts[item + 1]].tolist()
        return set(sids), sum(map(self._phase_weight.__getitem__, sids))

    def complete_on(self, item: int) -> list[int]:
        lo = int(self._starts[item])
        return self._held_sids[lo:lo + int(self._copies[item])].tolist()

    def children(self, item: int) -> list[int]:
        return np.flatnonzero(self._snap.items["parent"] == item).tolist()

    def usage(self) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
        reps = self._snap.replicas
        r_item, r_sid, r_state, r_size = (reps["item"], reps["storage_id"], reps["state"],
                                          reps["size"])
        item_size = self._item_size[r_item]
        counted = ~np.isin(r_state, _GONE)
        size = np.where(r_size < 0, item_size, r_size)  # unknown: the item's size
        n = self._n_sids

        def per_storage(mask: np.ndarray, values: np.ndarray) -> dict[int, int]:
            sums = exact_sums(r_sid[mask], values[mask], n)
            return {sid: int(sums[sid]) for sid in np.flatnonzero(sums).tolist()}

        used = per_storage(counted, size)
        pending = per_storage(counted & np.isin(r_state, _IN_FLIGHT), size)
        # the partition's bytes: a replica of size 0 counts its item's size, as on records
        part = per_storage(counted & self._member[r_item], np.where(r_size > 0, r_size,
                                                                    item_size))
        return used, pending, part

    def on_draining(self, draining: set[int]) -> Iterable[int]:
        reps = self._snap.replicas
        on = np.zeros(self._n_sids, dtype=bool)
        on[list(draining)] = True
        there = (reps["state"] == _COMPLETE) & on[reps["storage_id"]]
        items = np.zeros(self._n, dtype=bool)
        items[reps["item"][there]] = True
        return np.flatnonzero(items & self._live_mask).tolist()

    def short(self, dealing: Dealing) -> np.ndarray:
        n_held = self._n_held.copy()
        weight = self._held_weight.copy()
        for item, holders in dealing.touched.items():  # what the earlier stages changed
            n_held[item] = len(holders)
            weight[item] = dealing.weight(item)
        req, copies = self._requirement, self._required
        phase = _PHASE_OF_WEIGHT[np.minimum(weight, 4)].astype(np.int16)
        target = self._snap.items["target_phase"].astype(np.int16)
        short = self._live_mask & self._member & (req >= 0) & (
            (n_held < copies) | (phase < target))
        items = np.flatnonzero(short)
        return items[_deficit_order(self._snap.items["oid"][items],
                                    (phase[items] - target[items]).astype(np.int64),
                                    n_held[items].astype(np.int64))]

    def popular(self, dealing: Dealing) -> Iterable[int]:
        popularity = self._dealer.popularity
        if popularity is None:
            return []
        base = self._required.astype(np.int64)
        # an upper bound of each item's extras (the exact count is the scalar one, per item)
        value = popularity_column(self._snap, self._now, self._half_life)
        extra = np.floor(np.minimum(value * (1 + 1e-9) / popularity.threshold,
                                    popularity.max_copies)).astype(np.int64)  # no overflow
        wanted = np.maximum(base, np.minimum(base + extra, popularity.max_copies))
        may_want = self._live_mask & self._member & (wanted > self._n_held)
        return np.flatnonzero(may_want).tolist()

    def held_on(self, sid: int) -> Iterable[int]:
        reps = self._snap.replicas
        rows = self._held_rows
        items = np.unique(reps["item"][rows[reps["storage_id"][rows] == sid]])
        return items[self._live_mask[items] & self._member[items]].tolist()
