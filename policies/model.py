"""A loaded policy: partition, Detox and Dealer sections with their conditions compiled.

These are the objects Detox and Dealer call. All methods are pure functions of their arguments
(views and ``now``); nothing here reads a clock, a file or the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import codegen, ir
from .context import ItemView, ReplicaView, StorageView

PROTECT, DELETE, DISMISS, IGNORE = "protect", "delete", "dismiss", "ignore"
ACTIONS: tuple[str, ...] = (PROTECT, DELETE, DISMISS, IGNORE)


@dataclass(frozen=True, slots=True)
class Rule:
    """A Detox decision and the rule that made it; the same object is returned for every replica
    the rule decides, so recording it costs one reference. ``index`` is the rule's position
    (-1 for the default, -2 for "not in the partition")."""

    action: str
    label: str
    line: int
    column: int
    file: str
    condition: str = ""
    index: int = -1

    @property
    def is_default(self) -> bool:
        return self.index == -1

    def __str__(self) -> str:
        return f'{self.action} "{self.label}" ({self.file}:{self.line})'


class Condition:
    """A compiled condition: call it with views and ``now``. ``explain`` runs the same generated
    code with every attribute read recorded."""

    __slots__ = ("_explain", "_fn", "file", "source")

    def __init__(self, source: ir.Condition, file: str) -> None:
        self.source = source
        self.file = file
        self._fn = codegen.condition_function(source, file)
        self._explain: Callable[..., bool] | None = None

    @property
    def text(self) -> str:
        return self.source.text

    @property
    def line(self) -> int:
        return self.source.line

    def __call__(self, item: ItemView | None = None, replica: ReplicaView | None = None,
                 storage: StorageView | None = None, now: float = 0.0) -> bool:
        return self._fn(item, replica, storage, now)

    def explain(self, item: ItemView | None = None, replica: ReplicaView | None = None,
                storage: StorageView | None = None,
                now: float = 0.0) -> tuple[bool, list[tuple[str, Any]]]:
        """(result, [(attribute path, value read), ...]) in the order the rule read them;
        short-circuited parts are not read and not listed."""
        if self._explain is None:
            self._explain = codegen.condition_function(self.source, self.file, explain=True)
        seen: list[tuple[str, Any]] = []

        def record(path: str, value: Any) -> Any:
            if (path, value) not in seen:
                seen.append((path, value))
            return value

        return self._explain(item, replica, storage, now, record), seen


# --- partition -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Quota:
    """A fixed size in bytes, or a fraction of the storage's capacity (``quota "x" 50%``)."""

    bytes: int | None = None
    fraction: float | None = None
    line: int = 0

    def for_capacity(self, capacity: float) -> float:
        return float(self.bytes) if self.bytes is not None else (self.fraction or 0.0) * capacity


class Partition:
    """Which replicas belong (``members``), on which storages (``storages``), with which quotas.
    A partition that groups sub-partitions and has no ``members`` of its own contains a replica
    when one of its sub-partitions does."""

    def __init__(self, name: str, line: int, file: str, members: ir.Condition | None,
                 storages: ir.Condition | None, quotas: Mapping[str, Quota],
                 default_quota: Quota | None, children: Iterable[Partition]) -> None:
        self.name = name
        self.line = line
        self.file = file
        self.members = Condition(members, file) if members is not None else None
        self.storages = Condition(storages, file) if storages is not None else None
        self.quotas = dict(quotas)
        self.default_quota = default_quota
        self.children = tuple(children)

    def contains(self, item: ItemView, replica: ReplicaView | None = None,
                 now: float = 0.0) -> bool:
        """True when the replica (or, without one, the item) belongs to this partition."""
        return self.members is None or self.members(item, replica, None, now)

    def uses(self, storage: StorageView) -> bool:
        """True when the partition may keep data on ``storage`` (no ``storages`` clause: any)."""
        return self.storages is None or self.storages(None, None, storage, 0.0)

    def quota_for(self, storage: StorageView) -> float | None:
        """Bytes this partition may use on ``storage``, None when no quota applies."""
        quota = self.quotas.get(storage.name, self.default_quota)
        return quota.for_capacity(storage.capacity) if quota is not None else None

    def subpartition(self, item: ItemView, replica: ReplicaView | None = None,
                     now: float = 0.0) -> Partition | None:
        """The most specific (sub-)partition holding the replica, or None when outside."""
        if not self.contains(item, replica, now):
            return None
        for child in self.children:
            found = child.subpartition(item, replica, now)
            if found is not None:
                return found
        return self

    def walk(self) -> Iterable[Partition]:
        yield self
        for child in self.children:
            yield from child.walk()


# --- detox -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OrderKey:
    attribute: ir.Attr
    descending: bool
    text: str


class DetoxPolicy:
    """Deletion rules. Call order for one cycle:

    1. ``applies_to(storage)``: Detox works on this storage at all (``on``);
    2. ``triggered(storage)``: it needs cleaning now (``when``);
    3. ``decide(item, replica, storage, now)`` for each replica on it -> the `Rule` that decides;
       ``delete`` rules act everywhere Detox applies, ``dismiss`` only on triggered storages;
    4. candidates sorted by ``sort_key`` and removed until ``satisfied(storage)`` (``until``).

    The safety rules of DESIGN.md (never the last copy, never below the target phase) are Detox's
    to enforce on top of whatever the policy says.
    """

    def __init__(self, partition: Partition, file: str, line: int, on: ir.Condition | None,
                 when: ir.Condition | None, until: ir.Condition | None,
                 rules: Iterable[tuple[ir.Condition, Rule]], default: Rule,
                 order: Iterable[OrderKey]) -> None:
        self.partition = partition
        self.file = file
        self.line = line
        self.on = Condition(on, file) if on is not None else None
        self.when = Condition(when, file) if when is not None else None
        self.until = Condition(until, file) if until is not None else None
        pairs = list(rules)
        self.rules: tuple[Rule, ...] = tuple(rule for _, rule in pairs)
        self.conditions: tuple[Condition, ...] = tuple(Condition(c, file) for c, _ in pairs)
        self.default = default
        self.order: tuple[OrderKey, ...] = tuple(order)
        members = partition.members.source if partition.members is not None else None
        self.outside = Rule(IGNORE, f"not in partition {partition.name}", partition.line, 1,
                            file, members.text if members else "", -2)
        self.decide: Callable[[ItemView, ReplicaView, StorageView, float], Rule] = (
            codegen.decide_function(members, self.outside,
                                    [(c, r) for c, r in pairs], default, file))
        self.sort_key: Callable[[ItemView, ReplicaView, StorageView, float], tuple] = (
            codegen.sort_key_function([(k.attribute, k.descending) for k in self.order], file))

    # ``decide`` and ``sort_key`` are generated functions set in __init__:
    #   decide(item, replica, storage, now) -> Rule   first matching rule, else the default;
    #                                                 `outside` when not in the partition
    #   sort_key(item, replica, storage, now) -> tuple  ascending = delete first

    def applies_to(self, storage: StorageView) -> bool:
        if self.on is not None:
            return self.on(None, None, storage, 0.0)
        return self.partition.uses(storage)

    def triggered(self, storage: StorageView) -> bool:
        return self.when is not None and self.when(None, None, storage, 0.0)

    def satisfied(self, storage: StorageView) -> bool:
        """True when cleaning can stop: ``until`` holds, or, without ``until``, ``when`` no
        longer does."""
        if self.until is not None:
            return self.until(None, None, storage, 0.0)
        return not self.triggered(storage)

    def decide_all(self, rows: Iterable[tuple[ItemView, ReplicaView, StorageView]],
                   now: float) -> list[Rule]:
        """``decide`` over many (item, replica, storage) rows: the Detox inner loop."""
        decide = self.decide
        return [decide(item, replica, storage, now) for item, replica, storage in rows]


# --- dealer ----------------------------------------------------------------------------------

class Placement:
    """How many copies an item needs and where: a ``phase`` entry (items whose target phase is
    ``phase``) or a named ``place`` rule (items matching ``condition``). ``to`` restricts the
    destinations and ``source`` the storages copies may be read from."""

    def __init__(self, label: str, line: int, file: str, copies: int, phase: str | None,
                 condition: ir.Condition | None, to: ir.Condition | None,
                 source: ir.Condition | None) -> None:
        self.label = label
        self.line = line
        self.file = file
        self.copies = copies
        self.phase = phase
        self.condition = Condition(condition, file) if condition is not None else None
        self.to = Condition(to, file) if to is not None else None
        self.source = Condition(source, file) if source is not None else None

    def applies(self, item: ItemView, now: float) -> bool:
        if self.condition is not None:
            return self.condition(item, None, None, now)
        return item.target_phase == self.phase

    def accepts_destination(self, item: ItemView, storage: StorageView, now: float) -> bool:
        return self.to is None or self.to(item, None, storage, now)

    def accepts_source(self, item: ItemView, storage: StorageView, now: float) -> bool:
        return self.source is None or self.source(item, None, storage, now)

    def __repr__(self) -> str:
        return f"Placement({self.label!r}, copies={self.copies}, line={self.line})"


@dataclass(frozen=True, slots=True)
class Popularity:
    """Extra copies for popular items: one more copy per ``threshold`` of popularity, up to
    ``max_copies`` in all; ``half_life`` is the decay of the access weight."""

    half_life: float
    threshold: float
    max_copies: int
    to: Condition | None = None
    line: int = 0

    def decayed(self, weight: float, elapsed: float) -> float:
        """Access weight ``elapsed`` seconds later."""
        return weight * math.pow(0.5, max(elapsed, 0.0) / self.half_life)

    def extra_copies(self, popularity: float) -> int:
        return int(popularity // self.threshold) if popularity > 0 else 0


@dataclass(frozen=True, slots=True)
class Balance:
    spread: float | None = None            # target max occupancy difference between storages
    volume_per_cycle: int | None = None    # bytes moved for balancing per cycle
    line: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    target_occupancy: float | None = None        # do not fill a destination past this fraction
    max_pending: float | None = None             # pending copies, as a fraction of capacity
    volume_per_cycle: int | None = None          # bytes queued per cycle, in total
    storage_volume_per_cycle: int | None = None  # bytes queued per cycle, per destination
    line: int = 0


class DealerPolicy:
    """Placement rules: named ``place`` rules are tried top-down (first match wins), then the
    ``phase`` entry for the item's target phase."""

    def __init__(self, partition: Partition, file: str, line: int,
                 phases: Mapping[str, Placement], rules: Iterable[Placement],
                 popularity: Popularity | None, balance: Balance | None,
                 limits: Limits) -> None:
        self.partition = partition
        self.file = file
        self.line = line
        self.phases = dict(phases)
        self.rules = tuple(rules)
        self.popularity = popularity
        self.balance = balance
        self.limits = limits

    def requirement(self, item: ItemView, now: float) -> Placement | None:
        """The placement that decides how many copies ``item`` needs, None when none applies."""
        for rule in self.rules:
            if rule.applies(item, now):
                return rule
        return self.phases.get(item.target_phase)

    def wanted_copies(self, item: ItemView, now: float) -> int:
        """Copies to keep: the requirement's count plus popularity extras, capped at the
        popularity maximum (never below the requirement)."""
        return self.copies_wanted(self.requirement(item, now), item.popularity)

    def copies_wanted(self, placement: Placement | None, popularity: float) -> int:
        """``wanted_copies`` for an item whose requirement and popularity are known."""
        base = placement.copies if placement is not None else 0
        if self.popularity is None:
            return base
        wanted = base + self.popularity.extra_copies(popularity)
        return max(base, min(wanted, self.popularity.max_copies))

    def destinations(self, item: ItemView, storages: Iterable[StorageView],
                     now: float) -> list[StorageView]:
        """Storages a new copy of ``item`` may go to: used by the partition and accepted by the
        deciding placement's ``to``."""
        placement = self.requirement(item, now)
        return [s for s in storages if self.partition.uses(s)
                and (placement is None or placement.accepts_destination(item, s, now))]


@dataclass(slots=True)
class Policy:
    """One policy file: a partition and optional Detox and Dealer sections."""

    name: str
    file: str
    partition: Partition
    detox: DetoxPolicy | None = None
    dealer: DealerPolicy | None = None
    source: str = field(default="", repr=False)
