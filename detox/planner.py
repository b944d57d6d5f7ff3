"""Detox's decision: which replicas to delete this cycle. Pure: data in, plan out, no I/O.

The algorithm is Dynamo's, with its gaps closed:

1. Items whose expiry time has passed are expired, and all their payloads planned for deletion.
2. Every replica of the partition on a storage Detox works on (`on`) is judged by the compiled
   rules: protect / delete / dismiss / ignore, first match wins. A copy a copy request pins
   (``inventory.pins``, pin still holding) is kept whatever a protect, delete or dismiss rule
   says, with the pin as its reason (`pinned by copy request N until T`), and counts as
   protected: the storage's next candidates are taken instead.
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
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from inventory import model
from inventory.feed import STORAGE_HEX
from inventory.feed import WIRE_ITEM_FIELDS as IF
from inventory.feed import WIRE_REPLICA_FIELDS as RF
from inventory.feed import WIRE_STORAGE_FIELDS as SF
from inventory.pins import Pin
from policies import DELETE, DISMISS, IGNORE, PROTECT, ItemView, Policy, ReplicaView, StorageView
from policies.context import EMPTY
from policies.model import Rule

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
    judged: bool = True  # inside the policy's `on`: storages outside it are only reported

    def to_json(self) -> dict[str, Any]:
        top = sorted(self.protected_bytes.items(), key=lambda kv: -kv[1])[:5]
        return {
            "name": self.name, "capacity": self.capacity, "quota": self.quota,
            "used_before": self.used_before, "used_after": self.used_after,
            "occupancy_before": round(self.occupancy_before, 6),
            "occupancy_after": round(self.occupancy_after, 6),
            "triggered": self.triggered, "satisfied": self.satisfied, "judged": self.judged,
            "deleted_bytes": self.deleted_bytes, "deleted_replicas": self.deleted_replicas,
            "top_protecting_rules": [{"rule": label, "bytes": b} for label, b in top],
        }


def rule_key(outcome: str, label: str) -> str:
    """A decision kind as reports name it, ``outcome: label``; a label that already starts
    with its outcome (the safety net's ``safety: last complete copy``) is not said twice."""
    return label if label.startswith(f"{outcome}:") else f"{outcome}: {label}"


class DecisionKinds:
    """The table of decision kinds ``(outcome, rule label, rule line)`` a plan's decisions
    index into: a few dozen per cycle, however many millions of decisions."""

    __slots__ = ("_code_of", "kinds")

    def __init__(self) -> None:
        self.kinds: list[tuple[str, str, int]] = []  # (outcome, label, line)
        self._code_of: dict[tuple[str, str, int], int] = {}

    def code(self, outcome: str, label: str, line: int) -> int:
        key = (outcome, label, line)
        code = self._code_of.get(key)
        if code is None:
            code = self._code_of[key] = len(self.kinds)
            self.kinds.append(key)
        return code


class Decisions(DecisionKinds, Sequence[tuple[str, int, str, str, int, int]]):
    """Every replica's decision, kept column-wise (a reference to the replica's wire record, a
    code and a size: ~20 bytes a decision instead of a ~150-byte tuple), read as a sequence of
    ``(uid, storage id, outcome, rule label, rule line, size)`` tuples."""

    __slots__ = ("_totals", "codes", "replicas", "sizes")

    def __init__(self) -> None:
        super().__init__()
        self.replicas: list[Sequence[Any]] = []  # wire records: uid and storage id are read here
        self.codes = array("i")  # index into ``kinds``
        self.sizes = array("q")
        self._totals: tuple[int, list[int], list[int]] | None = None

    def add(self, replica: Sequence[Any], code: int, size: int) -> None:
        self.replicas.append(replica)
        self.codes.append(code)
        self.sizes.append(size)

    def append(self, decision: Sequence[Any]) -> None:
        """Add one ``(uid, storage id, outcome, label, line, size)`` decision."""
        uid, sid, outcome, label, line, size = decision
        record: list[Any] = [None] * len(RF)
        record[_R["uid"]], record[_R["storage_id"]] = uid, sid
        self.add(record, self.code(outcome, label, line), size)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return list(self.rows(*index.indices(len(self))[:2]))
        record = self.replicas[index]
        outcome, label, line = self.kinds[self.codes[index]]
        return (record[_R["uid"]], record[_R["storage_id"]], outcome, label, line,
                self.sizes[index])

    def __iter__(self) -> Iterator[tuple[str, int, str, str, int, int]]:
        return self.rows(0, len(self))

    def rows(self, lo: int, hi: int) -> Iterator[tuple[str, int, str, str, int, int]]:
        """Decisions ``lo`` to ``hi`` as tuples (built in C: zip and map)."""
        records, codes = self.replicas[lo:hi], self.codes[lo:hi]
        kinds = self.kinds
        return zip(map(itemgetter(_R["uid"]), records),
                   map(itemgetter(_R["storage_id"]), records),
                   map([k[0] for k in kinds].__getitem__, codes),
                   map([k[1] for k in kinds].__getitem__, codes),
                   map([k[2] for k in kinds].__getitem__, codes), self.sizes[lo:hi], strict=True)

    def totals(self) -> tuple[list[int], list[int]]:
        """Decisions and bytes per code."""
        if self._totals is None or self._totals[0] != len(self):
            count = [0] * len(self.kinds)
            size = [0] * len(self.kinds)
            for code, n in Counter(self.codes).items():
                count[code] = n
            for code, b in zip(self.codes, self.sizes, strict=True):
                size[code] += b
            self._totals = (len(self), count, size)
        return self._totals[1], self._totals[2]


@dataclass(slots=True)
class DetoxPlan:
    now: float
    expirations: list[str] = field(default_factory=list)  # oids going READY -> EXPIRED
    deletions: list[Deletion] = field(default_factory=list)
    storages: list[StorageOutcome] = field(default_factory=list)
    # per replica: (uid, storage id, outcome, rule label, rule line, size)
    decisions: Decisions = field(default_factory=Decisions)
    pinned: dict[Pin, list[int]] = field(default_factory=dict)  # pin -> [replicas, bytes] kept

    def summary(self) -> dict[str, Any]:
        by_rule: dict[str, dict[str, int]] = defaultdict(lambda: {"replicas": 0, "bytes": 0})
        outcomes: dict[str, int] = defaultdict(int)
        count, size = self.decisions.totals()
        for (outcome, label, _line), n, b in zip(self.decisions.kinds, count, size,
                                                 strict=True):
            if not n:
                continue
            entry = by_rule[rule_key(outcome, label)]
            entry["replicas"] += n
            entry["bytes"] += b
            outcomes[outcome] += n
        return {
            "expirations": len(self.expirations),
            "deletions": len(self.deletions),
            "deleted_bytes": sum(d.size for d in self.deletions),
            "outcomes": dict(outcomes),
            "by_rule": dict(by_rule),
            "storages": [s.to_json() for s in self.storages],
            "unsatisfied": [s.name for s in self.storages if not s.satisfied],
            "pinned": [pin.to_json() | {"replicas": n, "bytes": b} for pin, (n, b)
                       in sorted(self.pinned.items(), key=lambda kv: kv[0].request)],
        }


def decayed_popularity(count: int, last: float | None, now: float, half_life: float) -> float:
    if not count or last is None:
        return 0.0
    return count * math.pow(0.5, max(now - last, 0.0) / half_life)


class CycleStorages:
    """The storages of one Detox cycle, shared by the record and the column planner: their
    partition quotas, their usage as deletions are planned (all bytes, and the partition's
    bytes where a quota applies), the views the policy judges them by, and their outcomes.

    ``total_used`` is filled by the planner (bytes of every replica not on its way out);
    ``part_used`` too when ``has_quotas``, then ``begin()`` fixes the cycle's starting point."""

    def __init__(self, policy: Policy, storages: Sequence[Sequence[Any]],
                 total_used: dict[int, int]) -> None:
        self.detox = policy.detox
        self.by_id = {s[_S["id"]]: s for s in storages}
        self.total_used = total_used
        for sid in self.by_id:
            total_used.setdefault(sid, 0)
        self.part_used: dict[int, int] = defaultdict(int)
        partition = policy.partition
        self.quotas: dict[int, float | None] = {}
        for sid, s in self.by_id.items():
            base = StorageView.build(s[_S["name"]], kind=s[_S["kind"]], status=s[_S["status"]],
                                     phase=s[_S["phase"]],
                                     attributes=s[_S["attributes"]] or {},
                                     capacity=s[_S["capacity"]], used=total_used[sid])
            self.quotas[sid] = partition.quota_for(base) if partition.uses(base) else None
        self.has_quotas = any(self.quotas.values())

    def used(self, sid: int) -> int:
        return self.part_used[sid] if self.quotas[sid] else self.total_used[sid]

    def view(self, sid: int) -> StorageView:
        s = self.by_id[sid]
        return StorageView.build(
            s[_S["name"]], kind=s[_S["kind"]], status=s[_S["status"]], phase=s[_S["phase"]],
            attributes=s[_S["attributes"]] or {}, capacity=s[_S["capacity"]],
            used=self.used(sid), quota=self.quotas[sid])

    def begin(self) -> None:
        """The usage before any deletion: which storages Detox works on (``works_on``, their
        views as the rules see them) and which are triggered."""
        views = {sid: self.view(sid) for sid in self.by_id}
        self.works_on = {sid: v for sid, v in views.items() if self.detox.applies_to(v)}
        self.triggered = {sid for sid, v in self.works_on.items() if self.detox.triggered(v)}
        self.used_before = {sid: self.used(sid) for sid in views}
        self.occupancy_before = {sid: v.occupancy for sid, v in views.items()}

    def clean(self, sid: int, queue: Iterable[Any],
              delete_if_safe: Callable[[Any], bool]) -> int:
        """Delete from ``queue`` (the triggered storage's candidates, in the policy's order)
        until ``until`` holds; how many candidates were consumed. The storage's view is
        re-checked only after a deletion changed it."""
        view = self.view(sid)
        limit = view.quota if view.quota else view.capacity
        satisfied = self.detox.satisfied
        consumed = 0
        if satisfied(view):
            return 0
        for candidate in queue:
            consumed += 1
            if not delete_if_safe(candidate):
                continue
            used = self.used(sid)
            view.used = used
            view.free = max(view.capacity - used, 0)
            view.occupancy = (used / limit) if limit else 0.0
            if satisfied(view):
                break
        return consumed

    def protected_first(self, protected: Mapping[int, Mapping[str, int]]) -> list[int]:
        """The triggered storages, the one with the largest protected share first (Dynamo)."""
        def fraction(sid: int) -> float:
            return sum(protected[sid].values()) / (self.used_before[sid] or 1)
        return sorted(self.triggered, key=lambda sid: (-fraction(sid), sid))

    def outcomes(self, deletions: Sequence[Deletion],
                 protected: Mapping[int, Mapping[str, int]]) -> list[StorageOutcome]:
        """Each storage before and after the plan, by name."""
        deleted: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for d in deletions:
            deleted[d.storage_id][0] += d.size
            deleted[d.storage_id][1] += 1
        out = []
        for sid in sorted(self.by_id, key=lambda s: self.by_id[s][_S["name"]]):
            after = self.view(sid)
            triggered = sid in self.triggered
            out.append(StorageOutcome(
                after.name, after.capacity, self.quotas[sid], self.used_before[sid], after.used,
                self.occupancy_before[sid], after.occupancy, triggered,
                not triggered or self.detox.satisfied(after), deleted[sid][0], deleted[sid][1],
                dict(protected.get(sid, {})), sid in self.works_on))
        return out


# Per item, the complete copies and the sum of their phase weights, packed in one int.
_SHIFT = 20  # weights (at most 4 per copy, 65535 storages) stay under 2**20
_WEIGHT = (1 << _SHIFT) - 1
_PHASE_OF_WEIGHT = tuple(model.PHASES[model.phase_of_weights(w)] for w in range(5))


def plan_cycle(policy: Policy, storages: Sequence[Sequence[Any]],
               items: Mapping[str, Sequence[Any]], replicas: Iterable[Sequence[Any]],
               now: float, pins: Mapping[tuple[str, int], Pin] | None = None) -> DetoxPlan:
    """The deletions of one Detox cycle over a snapshot's wire records; ``pins`` are the
    copies copy requests pin, per (oid, storage id) (``Snapshot.pins()``).

    Memory beyond the snapshot: one int per item (complete copies and phase weight), the
    decisions column-wise, the candidates of triggered storages and the deletions. The views
    the policy reads are two reused objects, refilled per item and per replica (the generated
    ``decide`` and ``sort_key`` keep no reference to them)."""
    detox, partition = policy.detox, policy.partition
    half_life = (policy.dealer.popularity.half_life
                 if policy.dealer is not None and policy.dealer.popularity is not None
                 else DEFAULT_HALF_LIFE)
    plan = DetoxPlan(now)
    if not isinstance(replicas, Collection):
        replicas = list(replicas)
    storage_by_id = {s[_S["id"]]: s for s in storages}
    phase_weight = {sid: model.PHASE_WEIGHT[model.PHASE[s[_S["phase"]]]]
                    for sid, s in storage_by_id.items()}
    unit = {sid: (1 << _SHIFT) + w for sid, w in phase_weight.items()}
    name_of = {sid: s[_S["name"]] for sid, s in storage_by_id.items()}
    I_STATE, I_EXPIRE, I_SIZE, I_TARGET = _I["state"], _I["expire_at"], _I["size"], \
        _I["target_phase"]
    R_OID, R_SID, R_STATE, R_SIZE, R_CREATED, R_EXPIRE = (
        _R["oid"], _R["storage_id"], _R["state"], _R["size"], _R["created"], _R["expire_at"])
    R_UID = _R["uid"]
    # the pins that hold now, by replica uid (the oid's text with the storage id at its end)
    pinned = {oid[:32] + STORAGE_HEX[sid]: pin for (oid, sid), pin in (pins or {}).items()
              if pin.holds(now)}

    # ---- items: which are expired, which expire now
    expired: set[str] = set()
    for oid, item in items.items():
        state = item[I_STATE]
        if state == "READY":
            expire_at = item[I_EXPIRE]
            if expire_at is not None and expire_at <= now:
                plan.expirations.append(oid)
                expired.add(oid)
        elif state == "EXPIRED" or state == "DELETED":
            expired.add(oid)
    plan_expired = set(plan.expirations)

    # ---- replicas, first pass: complete copies and weight per item, usage per storage
    agg: dict[str, int] = {}
    agg_get = agg.get
    total_used: dict[int, int] = defaultdict(int)
    total_used.update(dict.fromkeys(storage_by_id, 0))
    expired_reps: list[Sequence[Any]] = []
    for rep in replicas:
        oid = rep[R_OID]
        state = rep[R_STATE]
        if state == "complete":
            agg[oid] = agg_get(oid, 0) + unit[rep[R_SID]]
        elif state == "deleting" or state == "deleted":
            continue  # already on its way out: projected occupancy excludes it
        size = rep[R_SIZE]
        if size is None or oid in expired:
            item = items.get(oid)
            if item is None:
                continue
            if size is None:
                size = item[I_SIZE] or 0
            if oid in expired and state in _SETTLED:
                expired_reps.append(rep)
        elif oid not in items:
            continue
        total_used[rep[R_SID]] += size

    def fill_item(iv: ItemView, oid: str, it: Sequence[Any], packed: int) -> None:
        """Refill the reused item view with ``oid``'s record."""
        parent = it[_I["parent_oid"]]
        iv.name = it[_I["item_name"]]
        iv.version = it[_I["item_version"]]
        iv.type = it[_I["item_type"]]
        iv.state = "EXPIRED" if oid in plan_expired else it[I_STATE]
        iv.phase = _PHASE_OF_WEIGHT[min(packed & _WEIGHT, 4)]
        iv.target_phase = it[I_TARGET]
        iv.size = it[I_SIZE] or 0
        iv.created = it[_I["created"]]
        iv.expire_at = it[I_EXPIRE]
        iv.metadata = it[_I["metadata"]] or EMPTY
        iv.copies = packed >> _SHIFT
        access = it[_I["access_count"]]
        last = it[_I["last_access"]]
        iv.popularity = (access * math.pow(0.5, max(now - last, 0.0) / half_life)
                         if access and last is not None else 0.0)
        iv.access_count = access
        iv.last_access = last
        iv.parent = None if parent is None or parent not in items \
            else items[parent][_I["item_name"]]
        iv.owner = it[_I["owner"]]
        iv.group = it[_I["group"]]

    # ---- storages: quotas, views, which Detox works on and which are triggered
    book = CycleStorages(policy, storages, total_used)
    part_used = book.part_used
    member: bytearray | None = None  # per replica position, with quotas only
    if book.has_quotas:
        # partition usage counts on quota'd storages: membership of every replica, up front
        member = bytearray(len(replicas))
        iv, rv = ItemView(""), ReplicaView("")
        contains = partition.contains
        last_oid: str | None = None
        for index, rep in enumerate(replicas):
            oid = rep[R_OID]
            item = items.get(oid)
            state = rep[R_STATE]
            if item is None or state == "deleting" or state == "deleted":
                continue
            if oid != last_oid:
                fill_item(iv, oid, item, agg_get(oid, 0))
                last_oid = oid
            size = rep[R_SIZE]
            if size is None:
                size = item[I_SIZE] or 0
            _fill_replica(rv, rep, name_of, size, iv.copies)
            if contains(iv, rv, now):
                member[index] = 1
                part_used[rep[R_SID]] += size

    book.begin()
    works_on, triggered = book.works_on, book.triggered

    # ---- the safety net: what may go without breaking a live item
    gone: dict[str, int] = {}  # per item: copies and weight planned for deletion, packed
    gone_get = gone.get

    def safety(oid: str, sid: int, rep_state: str) -> str | None:
        if oid in expired or rep_state != "complete":
            return None  # expired items lose everything; bad copies are no copies
        remaining = agg_get(oid, 0) - gone_get(oid, 0)
        if remaining >> _SHIFT <= 1:
            return SAFETY_LAST_COPY
        target = model.PHASE[items[oid][I_TARGET]]
        if model.phase_of_weights((remaining & _WEIGHT) - phase_weight[sid]) < target:
            return SAFETY_PHASE
        return None

    def plan_deletion(oid: str, rep: Sequence[Any], size: int, label: str, line: int,
                      index: int) -> None:
        sid = rep[R_SID]
        plan.deletions.append(Deletion(oid, sid, size, label, line))
        if rep[R_STATE] == "complete":
            gone[oid] = gone_get(oid, 0) + unit[sid]
        total_used[sid] -= size
        if member is not None and member[index]:
            part_used[sid] -= size

    decisions = plan.decisions
    code = decisions.code
    add = decisions.add
    add_replica, add_code, add_size = (decisions.replicas.append, decisions.codes.append,
                                       decisions.sizes.append)

    def delete_if_safe(rep: Sequence[Any], size: int, rule: Any, index: int) -> bool:
        """Plan a rule's deletion unless the safety net forbids it (then the replica counts
        as protected, by the safety reason). Whether it was planned."""
        sid, oid = rep[R_SID], rep[R_OID]
        reason = safety(oid, sid, rep[R_STATE])
        if reason:
            protected[sid][reason] += size
            add(rep, code(SAFE, f"{reason} ({rule.label})", rule.line), size)
            return False
        plan_deletion(oid, rep, size, rule.label, rule.line, index)
        add(rep, code(DELETED, rule.label, rule.line), size)
        return True

    # ---- 1. expired items: every settled payload goes
    if expired_reps:
        position = {id(rep): index for index, rep in enumerate(replicas)} \
            if member is not None else {}
        expired_reps.sort(key=itemgetter(R_OID))
        for rep in expired_reps:
            oid = rep[R_OID]
            size = rep[R_SIZE]
            if size is None:
                size = items[oid][I_SIZE] or 0
            plan_deletion(oid, rep, size, EXPIRED_LABEL, 0, position.get(id(rep), -1))
            add(rep, code(DELETED, EXPIRED_LABEL, 0), size)
        del position

    # ---- 2. judge every other replica
    rules = (detox.outside, detox.default, *detox.rules)  # by Rule.index + 2
    kept_code = [code(KEPT, r.label, r.line) for r in rules]
    ignored_code = [code(IGNORED, r.label, r.line) for r in rules]
    candidates: dict[int, list[tuple[tuple, int, Sequence[Any], int, Rule]]] = defaultdict(list)
    protected_by_rule = {sid: [0] * len(rules) for sid in storage_by_id}
    deletes: list[tuple[int, Sequence[Any], int, Rule]] = []
    pin_kept: dict[tuple[int, Pin], list[int]] = {}  # per storage and pin: [replicas, bytes]
    pin_codes: dict[Pin, int] = {}
    decide, sort_key, outside = detox.decide, detox.sort_key, detox.outside
    iv, rv = ItemView(""), ReplicaView("")
    last_oid = None
    item = None
    copies = 0
    for index, rep in enumerate(replicas):
        oid = rep[R_OID]
        if oid != last_oid:
            last_oid = oid
            item = None if oid in expired else items.get(oid)
            if item is not None:
                packed = agg_get(oid, 0)
                fill_item(iv, oid, item, packed)
                copies = packed >> _SHIFT
        if item is None:
            continue
        state = rep[R_STATE]
        sid = rep[R_SID]
        sv = works_on.get(sid)
        if sv is None or state == "deleting" or state == "deleted":
            continue
        if member is not None and not member[index]:
            continue
        size = rep[R_SIZE]
        if size is None:
            size = item[I_SIZE] or 0
        rv.storage = name_of[sid]
        rv.state = state
        rv.size = size
        rv.created = rep[R_CREATED]
        rv.is_last_copy = copies == 1 and state == "complete"
        rv.expire_at = rep[R_EXPIRE]
        rule = decide(iv, rv, sv, now)
        if rule is outside:
            continue  # not in the partition (the generated decide checks `members` first)
        action = rule.action
        if pinned and action != IGNORE:
            pin = pinned.get(rep[R_UID])
            if pin is not None:  # a user's copy request keeps it, like a protect rule
                pin_code = pin_codes.get(pin)
                if pin_code is None:
                    pin_code = pin_codes[pin] = code(KEPT, pin.reason, 0)
                add(rep, pin_code, size)
                kept = pin_kept.get((sid, pin))
                if kept is None:
                    kept = pin_kept[sid, pin] = [0, 0]
                kept[0] += 1
                kept[1] += size
                continue
        if action == DELETE:
            deletes.append((index, rep, size, rule))
        elif action == DISMISS and sid in triggered:
            candidates[sid].append((sort_key(iv, rv, sv, now), index, rep, size, rule))
        elif action == IGNORE:
            add_replica(rep)
            add_code(ignored_code[rule.index + 2])
            add_size(size)
        else:  # protect, or a candidate on a storage that needs no cleaning
            if action == PROTECT:
                protected_by_rule[sid][rule.index + 2] += size
            add_replica(rep)  # decisions.add, inlined
            add_code(kept_code[rule.index + 2])
            add_size(size)
    protected: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sid, by_rule in protected_by_rule.items():
        for rule, size in zip(rules, by_rule, strict=True):
            if size:
                protected[sid][rule.label] += size
    protect_pinned(plan, protected, pin_kept)

    # ---- 3a. `delete` decisions, everywhere
    for index, rep, size, rule in deletes:
        delete_if_safe(rep, size, rule, index)
    del deletes

    # ---- 3b. triggered storages: most protected first, candidates in the policy's order
    for sid in book.protected_first(protected):
        queue = candidates.pop(sid, [])
        queue.sort(key=itemgetter(0))
        consumed = book.clean(sid, queue, lambda c: delete_if_safe(c[2], c[3], c[4], c[1]))
        for _key, _index, rep, size, rule in queue[consumed:]:
            add(rep, code(KEPT, f"not needed ({rule.label})", rule.line), size)
        del queue

    # ---- 4. the outcome per storage
    plan.storages = book.outcomes(plan.deletions, protected)
    return plan


def protect_pinned(plan: DetoxPlan, protected: dict[int, dict[str, int]],
                   pin_kept: Mapping[tuple[int, Pin], Sequence[int]]) -> None:
    """Count what pins keep (``pin_kept``: per storage and pin, [replicas, bytes]) as
    protected on each storage by the pin's reason, after the rules, request by request, and
    per pin in the plan: both planners end their step 2 with this."""
    for (sid, pin), (count, size) in sorted(pin_kept.items(),
                                            key=lambda kv: (kv[0][0], kv[0][1].request)):
        protected[sid][pin.reason] += size
        total = plan.pinned.setdefault(pin, [0, 0])
        total[0] += count
        total[1] += size


def _fill_replica(rv: ReplicaView, rep: Sequence[Any], name_of: Mapping[int, str], size: int,
                  copies: int) -> None:
    state = rep[_R["state"]]
    rv.storage = name_of[rep[_R["storage_id"]]]
    rv.state = state
    rv.size = size
    rv.created = rep[_R["created"]]
    rv.is_last_copy = state == "complete" and copies == 1
    rv.expire_at = rep[_R["expire_at"]]
