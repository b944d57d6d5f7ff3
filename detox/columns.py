"""Detox's decision over a column snapshot: the algorithm of ``detox.planner``, with the per-replica
work done as array operations. Pure: columns in, plan out, no I/O.

The record planner judges each replica with one call of the generated ``decide``; at 10M
replicas that loop alone is ~27 s. Here the policy's conditions are evaluated over all the
replicas at once (``policies.vector``), usage and copies per item and storage are counted with
``bincount``, and Python loops remain only where the algorithm is sequential: the safety net
over the planned deletions (each one changes what the next may take) and the cleaning of
triggered storages until ``until`` holds. Both touch the deletions, not every replica.

The plan is the record planner's, decision for decision (``tests/test_detox_columns.py``
compares the two on random policies and inventories); a policy the column evaluator cannot
express (``policies.vector.Unsupported``) is planned by the record planner instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from detox.planner import (
    DEFAULT_HALF_LIFE,
    DELETED,
    EXPIRED_LABEL,
    IGNORED,
    KEPT,
    SAFE,
    SAFETY_LAST_COPY,
    SAFETY_PHASE,
    CycleStorages,
    DecisionKinds,
    Deletion,
    DetoxPlan,
    protect_pinned,
)
from inventory import model
from inventory.columns import ColumnSnapshot
from inventory.decisions import DECISION_COLUMNS
from inventory.feed import WIRE_STORAGE_FIELDS as SF
from inventory.pins import Pin
from policies import DELETE, DISMISS, IGNORE, PROTECT, Policy, StorageView, vector
from policies.context import EMPTY
from policies.ir import attributes_of
from policies.schema import ATTRIBUTES
from policies.vector import Coded, Column, Frame, Lazy, Numeric

_S = {name: i for i, name in enumerate(SF)}
STORAGE_ATTRIBUTES = tuple(ATTRIBUTES["storage"])  # what a rule may read of a StorageView
_COMPLETE = model.REPLICA_STATE["complete"]
_GONE = (model.REPLICA_STATE["deleting"], model.REPLICA_STATE["deleted"])
_SETTLED = tuple(model.REPLICA_STATE[s] for s in ("complete", "corrupt", "missing"))
_PHASE_OF_WEIGHT = tuple(model.PHASES[model.phase_of_weights(w)] for w in range(5))


def supports(policy: Policy) -> bool:
    """Whether the column planner can plan for this policy (else: the record planner)."""
    detox = policy.detox
    members = policy.partition.members
    try:
        vector.check([c.source for c in detox.conditions]
                     + ([members.source] if members is not None else []),
                     [(k.attribute, k.descending) for k in detox.order])
    except vector.Unsupported:
        return False
    return True


def needed_fields(policy: Policy) -> list[str]:
    """The optional snapshot fields the policy reads (``inventory.columns.OPTIONAL``)."""
    conditions = [c.source for c in policy.detox.conditions]
    if policy.partition.members is not None:
        conditions.append(policy.partition.members.source)
    attrs = [a for c in conditions for a in attributes_of(c.expr)]
    attrs += [k.attribute for k in policy.detox.order]
    out = []
    if any(a.obj == "item" and a.spec.name in ("name", "parent") for a in attrs):
        out.append("name")
    if any(a.obj == "item" and a.spec.name == "metadata" for a in attrs):
        out.append("metadata")
    return out


def exact_sums(keys: np.ndarray, values: np.ndarray, n: int, *, at: np.ndarray | None = None,
               chunk: int = 1 << 20) -> np.ndarray:
    """Per key, the exact sum of ``values`` (of ``values[at]`` with ``at``). ``bincount`` adds
    in float64, which loses bytes past 2**53: each int64 value is split into three 21-bit
    limbs, whose sums over a chunk of 2**20 values stay below 2**41, exact in float64. The
    result is int64 while every sum fits (always, for real sizes), else an object array of
    Python ints: a sum past int64 (sizes are bounded to int64 at input, their sums are not)
    stays exact instead of wrapping around. A chunk at a time, so the float copies stay
    small."""
    limbs = [np.zeros(n, dtype=np.int64) for _ in range(3)]
    for lo in range(0, len(keys), chunk):
        k = keys[lo:lo + chunk]
        v = (values[lo:lo + chunk] if at is None else values[at[lo:lo + chunk]]).astype(
            np.int64, copy=False)
        for i, part in enumerate((v & _LIMB, (v >> 21) & _LIMB, v >> 42)):
            limbs[i] += np.bincount(k, weights=part, minlength=n).astype(np.int64)
    low, mid, high = limbs
    estimate = np.abs(low + mid * 2.0**21 + high * 2.0**42)
    if not len(estimate) or estimate.max() < 2.0**62:
        return low + (mid << 21) + (high << 42)
    return np.array([int(a) + (int(b) << 21) + (int(c) << 42)
                     for a, b, c in zip(low.tolist(), mid.tolist(), high.tolist(),
                                        strict=True)], dtype=object)


_LIMB = (1 << 21) - 1


class ColumnDecisions(DecisionKinds, Sequence[tuple[str, int, str, str, int, int]]):
    """Every replica's decision as two columns (replica position, code) and the table of
    kinds, read as ``(uid, storage id, outcome, rule label, rule line, size)`` tuples like
    ``detox.planner.Decisions``: 6 bytes a decision (sizes are read from the plan's size
    column when asked for)."""

    ENCODED_PAIRS = 8

    def __init__(self, snap: ColumnSnapshot) -> None:
        super().__init__()
        self._snap = snap
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.index = np.zeros(0, dtype=np.int32)  # replica positions, once finished
        self.codes = np.zeros(0, dtype=np.int16)
        self._size_of = np.zeros(0, dtype=np.int64)

    def extend(self, replicas: np.ndarray, codes: np.ndarray | int) -> None:
        """Add decisions (before ``finish``)."""
        replicas = np.asarray(replicas).astype(np.int32, copy=False)
        if np.ndim(codes) == 0:
            codes = np.full(len(replicas), codes, dtype=np.int16)
        self._parts.append((replicas, np.asarray(codes).astype(np.int16, copy=False)))

    def finish(self, size_of: np.ndarray) -> None:
        """Join what was added; ``size_of`` is the size of every replica of the snapshot."""
        if self._parts:
            self.index = np.concatenate([p[0] for p in self._parts])
            self.codes = np.concatenate([p[1] for p in self._parts])
        self._parts = []
        self._size_of = size_of

    @property
    def sizes(self) -> np.ndarray:
        return self._size_of[self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return list(self.rows(*index.indices(len(self))[:2]))
        return next(self.rows(index, index + 1))

    def __iter__(self) -> Iterator[tuple[str, int, str, str, int, int]]:
        return self.rows(0, len(self))

    def rows(self, lo: int, hi: int) -> Iterator[tuple[str, int, str, str, int, int]]:
        index = self.index[lo:hi]
        kinds = self.kinds
        for uid, sid, code, size in zip(
                self._snap.replica_uid_texts(index),
                self._snap.replicas["storage_id"][index].tolist(), self.codes[lo:hi].tolist(),
                self._size_of[index].tolist(), strict=True):
            yield (uid, sid, *kinds[code], size)

    def totals(self) -> tuple[list[int], list[int]]:
        count = np.bincount(self.codes, minlength=len(self.kinds)).tolist()
        size = exact_sums(self.codes, self._size_of, len(self.kinds), at=self.index).tolist()
        return count, size

    def encode(self) -> Iterator[tuple[str, Any]]:
        """The decisions in ``inventory.decisions``' column encoding, as the map's
        ``ENCODED_PAIRS`` (key, value) pairs, each built when asked for: the caller packs and
        compresses one at a time, so only one column's bytes exist at once."""
        replicas, index = self._snap.replicas, self.index
        # items in first-decision order, numbered densely: a replica's item is its position
        item_rows = replicas["item"][index]
        mark = np.full(self._snap.item_count, -1, dtype=np.int64)
        distinct = np.flatnonzero(np.bincount(item_rows, minlength=self._snap.item_count))
        mark[distinct] = np.arange(len(distinct))
        yield "format", "columns"
        yield "columns", list(DECISION_COLUMNS)
        yield "kinds", [list(k) for k in self.kinds]
        yield "oids", self._snap.items["oid"][distinct].tobytes()
        del distinct
        yield "item", mark[item_rows].astype("<i4").tobytes()
        del mark, item_rows
        yield "storage_id", replicas["storage_id"][index].astype("<u2").tobytes()
        yield "code", self.codes.astype("<i4").tobytes()
        yield "size", self.sizes.astype("<i8", copy=False).tobytes()


def phase_weights_by_item(items: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Per item (of ``n``), the sum of ``weights`` (phase weights, 0-4) over its rows: exact
    in bincount's float64 (small whole numbers)."""
    return np.bincount(items, weights=weights, minlength=n).astype(np.int32)


def popularity_column(snap: ColumnSnapshot, now: float, half_life: float) -> np.ndarray:
    """Every item's decayed popularity (``detox.planner.decayed_popularity``)."""
    access = snap.items["access_count"]
    last = snap.items["last_access"]
    valid = (access != 0) & ~np.isnan(last)
    elapsed = np.maximum(now - np.where(valid, last, now), 0.0)
    return np.where(valid, access * np.power(0.5, elapsed / half_life), 0.0)


def item_columns(snap: ColumnSnapshot, ri: np.ndarray, now: float, half_life: float,
                 state: np.ndarray, weight: np.ndarray,
                 copies: np.ndarray) -> dict[tuple[str, str], Callable[[], Column]]:
    """How a ``vector.Frame`` reads the item attributes over rows whose items are ``ri``:
    ``state`` (codes), ``weight`` (phase weight of the complete copies) and ``copies`` are
    per item, as the planner sees them."""
    items, n_items = snap.items, snap.item_count
    item_size = np.maximum(items["size"], 0)

    def item_numeric(values: np.ndarray, null: np.ndarray | None = None) -> Numeric:
        return Numeric(values, null, ri)

    def parent_names(keys: np.ndarray) -> list[str | None]:
        parents = items["parent"][keys]
        if not snap.has_names:
            return [None] * len(keys)
        named = parents >= 0
        out: list[str | None] = [None] * len(keys)
        for at, name in zip(np.flatnonzero(named).tolist(),
                            snap.names_of(parents[named]), strict=True):
            out[at] = name
        return out

    return {
        ("item", "name"): lambda: Lazy(ri, n_items, values_of=snap.names_of),
        ("item", "version"): lambda: item_numeric(items["version"]),
        ("item", "type"): lambda: Coded(items["type"], model.ITEM_TYPES, ri),
        ("item", "state"): lambda: Coded(state, model.ITEM_STATES, ri),
        ("item", "phase"): lambda: Coded(np.minimum(weight, 4), _PHASE_OF_WEIGHT, ri),
        ("item", "target_phase"): lambda: Coded(items["target_phase"], model.PHASES, ri),
        ("item", "size"): lambda: item_numeric(item_size),
        ("item", "created"): lambda: item_numeric(items["created"]),
        ("item", "expire_at"): lambda: item_numeric(items["expire_at"],
                                                     np.isnan(items["expire_at"])),
        ("item", "metadata"): lambda: Lazy(ri, n_items, sparse=snap.metadata or {},
                                           default=EMPTY),
        ("item", "copies"): lambda: item_numeric(copies),
        ("item", "popularity"): lambda: item_numeric(popularity_column(snap, now, half_life)),
        ("item", "access_count"): lambda: item_numeric(items["access_count"]),
        ("item", "last_access"): lambda: item_numeric(items["last_access"],
                                                       np.isnan(items["last_access"])),
        ("item", "parent"): lambda: Lazy(ri, n_items, values_of=parent_names),
        ("item", "owner"): lambda: Coded(items["owner"], snap.owners, ri),
        ("item", "group"): lambda: Coded(items["group"], snap.groups, ri),
    }


def pinned_positions(pins: dict[tuple[int, int], Pin], now: float, items: np.ndarray,
                     sids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Pin]]:
    """Where in (``items``, ``sids``) a copy is kept by a pin that holds at ``now``, the index
    of its pin in the list of holding pins, and that list: a sorted search of the pins, not a
    lookup per replica."""
    holding = [(row << 16 | sid, pin) for (row, sid), pin in pins.items() if pin.holds(now)]
    if not holding or not len(items):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), []
    keys = np.array([key for key, _pin in holding], dtype=np.int64)
    order = np.argsort(keys)
    keys = keys[order]
    wanted = (items.astype(np.int64) << 16) | sids.astype(np.int64)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    positions = np.flatnonzero(keys[at] == wanted)
    return positions, order[at[positions]], [pin for _key, pin in holding]


def plan_columns(policy: Policy, snap: ColumnSnapshot, now: float) -> DetoxPlan:
    """The deletions of one Detox cycle over a column snapshot (see the module's docstring)."""
    detox, partition = policy.detox, policy.partition
    half_life = (policy.dealer.popularity.half_life
                 if policy.dealer is not None and policy.dealer.popularity is not None
                 else DEFAULT_HALF_LIFE)
    plan = DetoxPlan(now)
    decisions = ColumnDecisions(snap)
    plan.decisions = decisions  # type: ignore[assignment]
    items, reps = snap.items, snap.replicas
    n_items, n_reps = snap.item_count, snap.replica_count

    storage_by_id = {s[_S["id"]]: s for s in snap.storages}
    n_sids = max([*storage_by_id, int(reps["storage_id"].max()) if n_reps else 0]) + 1
    phase_weight = np.zeros(n_sids, dtype=np.int64)
    for sid, s in storage_by_id.items():
        phase_weight[sid] = model.PHASE_WEIGHT[model.PHASE[s[_S["phase"]]]]
    name_table: list[str | None] = [None] * n_sids
    for sid, s in storage_by_id.items():
        name_table[sid] = s[_S["name"]]

    # ---- items: which are expired, which expire now
    i_state = items["state"]
    expiring = (i_state == model.READY) & (items["expire_at"] <= now)
    expiring_rows = np.flatnonzero(expiring)
    plan.expirations = snap.oid_texts(expiring_rows)
    expired = expiring | (i_state == model.EXPIRED) | (i_state == model.DELETED)
    state_now = np.where(expiring, model.EXPIRED, i_state)

    # ---- replicas: complete copies and weight per item, usage per storage
    r_item, r_sid, r_state = reps["item"], reps["storage_id"], reps["state"]
    item_size = np.maximum(items["size"], 0)
    size = np.where(reps["size"] < 0, item_size[r_item], reps["size"])
    complete = r_state == _COMPLETE
    gone_state = np.isin(r_state, _GONE)
    counted = ~gone_state
    complete_items = r_item[complete]
    copies = np.bincount(complete_items, minlength=n_items).astype(np.int32)
    weight = phase_weights_by_item(complete_items, phase_weight[r_sid[complete]], n_items)
    del complete_items
    total_used = dict.fromkeys(storage_by_id, 0)
    sums = exact_sums(r_sid[counted], size[counted], n_sids)
    for sid in np.flatnonzero(sums).tolist():
        total_used[sid] = total_used.get(sid, 0) + int(sums[sid])
    expired_rep = expired[r_item] & counted & np.isin(r_state, _SETTLED)

    def frame(rows: np.ndarray, storage_views: dict[int, StorageView] | None) -> Frame:
        """The attributes a policy reads, over the replicas ``rows``."""
        ri = r_item[rows]
        rs = r_sid[rows]

        def replica_numeric(values: np.ndarray, null: np.ndarray | None = None) -> Numeric:
            return Numeric(values, null, rows)

        def storage_column(name: str) -> Coded:
            table = [None] * n_sids
            for sid, view in (storage_views or {}).items():
                table[sid] = getattr(view, name)
            return Coded(rs, table)

        builders: dict[tuple[str, str], Any] = {
            **item_columns(snap, ri, now, half_life, state_now, weight, copies),
            ("replica", "storage"): lambda: Coded(rs, name_table),
            ("replica", "state"): lambda: Coded(r_state, model.REPLICA_STATES, rows),
            ("replica", "size"): lambda: replica_numeric(size),
            ("replica", "created"): lambda: replica_numeric(reps["created"]),
            ("replica", "is_last_copy"): lambda: replica_numeric(
                (copies[r_item] == 1) & complete),
            ("replica", "expire_at"): lambda: replica_numeric(
                reps["expire_at"], np.isnan(reps["expire_at"])),
        }
        if storage_views is not None:
            for name in STORAGE_ATTRIBUTES:
                builders["storage", name] = (lambda name=name: storage_column(name))
        return Frame(len(rows), now, builders)

    # ---- storages: quotas, views, which Detox works on and which are triggered
    book = CycleStorages(policy, snap.storages, total_used)
    part_used = book.part_used
    member: np.ndarray | None = None
    if book.has_quotas:
        rows = np.flatnonzero(counted)
        inside = np.ones(len(rows), dtype=bool)
        if partition.members is not None:
            inside = vector.evaluate(partition.members.source.expr, frame(rows, None), inside)
        member = np.zeros(n_reps, dtype=bool)
        member[rows[inside]] = True
        sums = exact_sums(r_sid[member], size[member], n_sids)
        for sid in np.flatnonzero(sums).tolist():
            part_used[sid] += int(sums[sid])

    book.begin()
    works_on, triggered = book.works_on, book.triggered

    # ---- the safety net: what may go without breaking a live item
    copies_of = copies.tolist()
    weight_of = weight.tolist()
    target_of = items["target_phase"]
    expired_of = expired
    weight_by_sid = phase_weight.tolist()
    gone_copies: dict[int, int] = defaultdict(int)
    gone_weight: dict[int, int] = defaultdict(int)
    member_of = member

    def safety(item: int, sid: int, state: int) -> str | None:
        if expired_of[item] or state != _COMPLETE:
            return None
        if copies_of[item] - gone_copies[item] <= 1:
            return SAFETY_LAST_COPY
        remaining = weight_of[item] - gone_weight[item]
        if model.phase_of_weights(remaining - weight_by_sid[sid]) < target_of[item]:
            return SAFETY_PHASE
        return None

    decided_rows: list[int] = []  # the deletions' and the safety net's decisions
    decided_codes: list[int] = []
    protected: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    # the deletions, column-wise: Deletion objects (and oid texts) are made once at the end
    del_items: list[int] = []
    del_sids: list[int] = []
    del_sizes: list[int] = []
    del_rules: list[tuple[str, int]] = []

    def plan_deletion(index: int, item: int, sid: int, state: int, nbytes: int,
                      rule: tuple[str, int]) -> None:
        del_items.append(item)
        del_sids.append(sid)
        del_sizes.append(nbytes)
        del_rules.append(rule)
        if state == _COMPLETE:
            gone_copies[item] += 1
            gone_weight[item] += weight_by_sid[sid]
        total_used[sid] -= nbytes
        if member_of is not None and member_of[index]:
            part_used[sid] -= nbytes

    def delete_if_safe(index: int, item: int, sid: int, state: int, nbytes: int,
                       rule: Any) -> bool:
        """Plan a rule's deletion unless the safety net forbids it (then the replica counts
        as protected, by the safety reason). Whether it was planned."""
        reason = safety(item, sid, state)
        decided_rows.append(index)
        if reason:
            protected[sid][reason] += nbytes
            decided_codes.append(decisions.code(SAFE, f"{reason} ({rule.label})", rule.line))
            return False
        plan_deletion(index, item, sid, state, nbytes, (rule.label, rule.line))
        decided_codes.append(decisions.code(DELETED, rule.label, rule.line))
        return True

    def columns_of(indices: np.ndarray) -> zip:
        """(index, item, storage, state, size) of replicas, as Python ints."""
        return zip(indices.tolist(), r_item[indices].tolist(), r_sid[indices].tolist(),
                   r_state[indices].tolist(), size[indices].tolist(), strict=True)

    # ---- 1. expired items: every settled payload goes, by oid
    expired_idx = np.flatnonzero(expired_rep)
    if len(expired_idx):
        halves = items["oid"][r_item[expired_idx]].view(">u8").reshape(-1, 2)
        expired_idx = expired_idx[np.lexsort((halves[:, 1], halves[:, 0]))]
        code = decisions.code(DELETED, EXPIRED_LABEL, 0)
        for index, item, sid, state, nbytes in columns_of(expired_idx):
            plan_deletion(index, item, sid, state, nbytes, (EXPIRED_LABEL, 0))
        decisions.extend(expired_idx, code)

    # ---- 2. judge every other replica
    on_storage = np.zeros(n_sids, dtype=bool)
    on_storage[list(works_on)] = True
    judged = ~expired[r_item] & on_storage[r_sid] & counted
    if member is not None:
        judged &= member
    rows = np.flatnonzero(judged).astype(np.int32)
    f = frame(rows, works_on)
    inside = np.ones(len(rows), dtype=bool)
    if partition.members is not None:
        inside = vector.evaluate(partition.members.source.expr, f, inside)
    chosen = vector.first_match([c.source for c in detox.conditions], f, inside)
    del f  # its columns: the sort keys below need a new one only for candidates
    rules = (detox.outside, detox.default, *detox.rules)  # by Rule.index + 2
    slot = np.where(inside, chosen + 2, 0).astype(np.int16)  # 0: outside, 1: the default
    del chosen
    action_codes = {name: code for code, name in enumerate((PROTECT, DELETE, DISMISS, IGNORE))}
    action = np.array([action_codes[r.action] for r in rules], dtype=np.int8)[slot]
    is_triggered = np.zeros(n_sids, dtype=bool)
    is_triggered[list(triggered)] = True
    rs = r_sid[rows]
    candidate = (action == action_codes[DISMISS]) & is_triggered[rs] & inside
    deleting = (action == action_codes[DELETE]) & inside
    ignored = (action == action_codes[IGNORE]) & inside
    # copies a copy request pins: kept whatever a protect, delete or dismiss rule says
    pin_at, pin_index, pin_list = pinned_positions(snap.pins, now, r_item[rows], rs)
    held = np.zeros(len(rows), dtype=bool)
    if len(pin_at):
        judged_pin = inside[pin_at] & ~ignored[pin_at]
        pin_at, pin_index = pin_at[judged_pin], pin_index[judged_pin]
        held[pin_at] = True
        candidate &= ~held
        deleting &= ~held
    kept = inside & ~candidate & ~deleting & ~ignored & ~held
    kept_code = np.array([decisions.code(KEPT, r.label, r.line) for r in rules], dtype=np.int32)
    ignored_code = np.array([decisions.code(IGNORED, r.label, r.line) for r in rules],
                            dtype=np.int32)
    # decisions in replica order, as the record planner appends them
    decided = kept | ignored | held
    codes = np.where(ignored, ignored_code[slot], kept_code[slot])
    pin_kept: dict[tuple[int, Pin], list[int]] = {}
    if len(pin_at):
        used = np.unique(pin_index)
        pin_code = np.zeros(len(pin_list), dtype=np.int32)
        pin_code[used] = [decisions.code(KEPT, pin_list[i].reason, 0) for i in used.tolist()]
        codes[pin_at] = pin_code[pin_index]
        # per (storage, pin): replicas and bytes kept
        key = rs[pin_at].astype(np.int64) * len(pin_list) + pin_index
        keys, counts = np.unique(key, return_counts=True)
        sums = exact_sums(np.searchsorted(keys, key), size[rows[pin_at]], len(keys))
        for k, n, b in zip(keys.tolist(), counts.tolist(), sums.tolist(), strict=True):
            # equal pins (one request's, on many copies) are one entry
            entry = pin_kept.setdefault((k // len(pin_list), pin_list[k % len(pin_list)]),
                                        [0, 0])
            entry[0] += n
            entry[1] += b
    decisions.extend(rows[decided], codes[decided])
    del codes, held
    protecting = kept & (action == action_codes[PROTECT])
    del action
    n_rules = len(rules)
    by_rule = exact_sums(rs[protecting].astype(np.int64) * n_rules + slot[protecting],
                         size[rows[protecting]], n_sids * n_rules).reshape(n_sids, n_rules)
    for sid, r in zip(*np.nonzero(by_rule), strict=True):
        protected[int(sid)][rules[int(r)].label] += int(by_rule[sid, r])
    protect_pinned(plan, protected, pin_kept)

    # ---- 3a. `delete` decisions, everywhere
    for (index, item, sid, state, nbytes), s in zip(columns_of(rows[deleting]),
                                                    slot[deleting].tolist(), strict=True):
        delete_if_safe(index, item, sid, state, nbytes, rules[s])

    # ---- 3b. triggered storages: most protected first, candidates in the policy's order
    cand_pos = np.flatnonzero(candidate)
    keys = vector.sort_keys([(k.attribute, k.descending) for k in detox.order],
                            frame(rows[cand_pos], works_on), np.arange(len(cand_pos)))
    order = np.lexsort((cand_pos, *reversed(keys), rs[cand_pos]))
    del keys
    cand_pos = cand_pos[order]
    cand_sids = rs[cand_pos]
    bounds = np.searchsorted(cand_sids, np.arange(n_sids + 1))
    not_needed = np.array([decisions.code(KEPT, f"not needed ({r.label})", r.line)
                           for r in rules], dtype=np.int32)
    for sid in book.protected_first(protected):
        queue = cand_pos[bounds[sid]:bounds[sid + 1]]
        consumed = book.clean(sid, zip(columns_of(rows[queue]), slot[queue].tolist(),
                                       strict=True),
                              lambda c: delete_if_safe(*c[0], rules[c[1]]))
        rest = queue[consumed:]
        decisions.extend(rows[rest], not_needed[slot[rest]])
    decisions.extend(np.array(decided_rows, dtype=np.int64),
                     np.array(decided_codes, dtype=np.int32))
    decisions.finish(size)
    plan.deletions = [Deletion(oid, sid, nbytes, label, line) for oid, sid, nbytes, (label, line)
                      in zip(snap.oid_texts(np.array(del_items, dtype=np.int64)), del_sids,
                             del_sizes, del_rules, strict=True)]

    # ---- 4. the outcome per storage
    plan.storages = book.outcomes(plan.deletions, protected)
    return plan

