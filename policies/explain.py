"""Why a policy decides what it decides about one item: which rule, on which line, and the
attribute values it looked at. Pure: it takes views and ``now`` and returns data; `render` turns
that data into the text ``dlm policy explain`` prints.

The values come from running the same generated code as `DetoxPolicy.decide` with every
attribute read recorded (see `policies.codegen`), so an explanation cannot disagree with a
decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .context import ItemView, ReplicaView, StorageView
from .formatting import format_value
from .model import Condition, Placement, Policy, Rule


@dataclass(frozen=True, slots=True)
class Check:
    """One condition evaluated: what it is, whether it held, the values it read."""

    what: str
    line: int
    text: str
    result: bool
    values: tuple[tuple[str, Any], ...]


@dataclass(slots=True)
class ReplicaExplanation:
    replica: ReplicaView
    storage: StorageView
    decision: Rule | None                       # None when Detox does not work on the storage
    checks: list[Check] = field(default_factory=list)   # partition, on, when, rules in order
    triggered: bool = False


@dataclass(slots=True)
class ItemExplanation:
    item: ItemView
    partition: str | None                        # most specific partition, None when outside
    replicas: list[ReplicaExplanation]
    placement: Placement | None = None
    wanted_copies: int | None = None
    placement_checks: list[Check] = field(default_factory=list)
    has_detox: bool = True


def _check(what: str, condition: Condition, item, replica, storage, now) -> Check:
    result, values = condition.explain(item, replica, storage, now)
    return Check(what, condition.line, condition.text, result, tuple(values))


def explain(policy: Policy, item: ItemView,
            replicas: Sequence[tuple[ReplicaView, StorageView]], now: float) -> ItemExplanation:
    """Explain every replica of ``item`` under ``policy`` at time ``now``."""
    part = policy.partition.subpartition(item, None, now)
    out = ItemExplanation(item, part.name if part is not None else None, [],
                          has_detox=policy.detox is not None)
    detox = policy.detox
    for replica, storage in replicas:
        entry = ReplicaExplanation(replica, storage, None)
        out.replicas.append(entry)
        if detox is None:
            continue
        members = policy.partition.members
        if members is not None:
            check = _check(f'partition "{policy.partition.name}"', members, item, replica,
                           storage, now)
            entry.checks.append(check)
        if detox.on is not None:
            check = _check("on", detox.on, None, None, storage, now)
            entry.checks.append(check)
            if not check.result:
                continue
        elif not detox.applies_to(storage):
            continue
        if detox.when is not None:
            entry.checks.append(_check("when", detox.when, None, None, storage, now))
        entry.triggered = detox.triggered(storage)
        entry.decision = detox.decide(item, replica, storage, now)
        if entry.decision.index == -2:
            continue
        for rule, condition in zip(detox.rules, detox.conditions, strict=True):
            check = _check(f'{rule.action} "{rule.label}"', condition, item, replica, storage,
                           now)
            entry.checks.append(check)
            if check.result:
                break
    dealer = policy.dealer
    if dealer is not None:
        for rule in dealer.rules:
            assert rule.condition is not None
            check = _check(f'place "{rule.label}"', rule.condition, item, None, None, now)
            out.placement_checks.append(check)
            if check.result:
                break
        out.placement = dealer.requirement(item, now)
        out.wanted_copies = dealer.wanted_copies(item, now)
    return out


_EFFECT = {
    "protect": "kept (protected)",
    "delete": "deleted",
    "ignore": "left alone (ignored by Detox)",
}


def _effect(entry: ReplicaExplanation) -> str:
    assert entry.decision is not None
    action = entry.decision.action
    if action == "dismiss":
        return ("deletion candidate; the storage is over its trigger, so it may be deleted"
                if entry.triggered else
                "deletion candidate, but the storage is not triggered: kept for now")
    if entry.decision.index == -2:
        return "not in the partition: Detox leaves it alone"
    return _EFFECT[action]


def _values(check: Check, now: float, indent: str) -> list[str]:
    return [f"{indent}{path} = {format_value(path, value, now)}" for path, value in check.values]


def render(result: ItemExplanation, now: float, oid: str = "") -> list[str]:
    """The explanation as text lines."""
    item = result.item
    head = f"item {item.name} v{item.version}" + (f" ({oid})" if oid else "")
    lines = [head,
             f"  state {item.state}, phase {item.phase} (target {item.target_phase}), "
             f"{format_value('item.size', item.size)}, {item.copies} complete "
             f"cop{'y' if item.copies == 1 else 'ies'}",
             "  partition: " + (result.partition or "outside this policy's partition")]
    if not result.replicas:
        lines.append("  no replicas")
    for entry in result.replicas:
        replica, storage = entry.replica, entry.storage
        lines.append(f"replica on {storage.name} ({replica.state}, "
                     f"{format_value('replica.size', replica.size)}, storage {storage.status}, "
                     f"occupancy {format_value('storage.occupancy', storage.occupancy)})")
        if not result.has_detox:
            lines.append("  the policy has no detox section: never deleted by it")
            continue
        if entry.decision is None:
            lines.append("  not handled by Detox: the storage is outside 'on' / the partition")
            for check in entry.checks:
                lines.append(f"  line {check.line} {check.what}: {'yes' if check.result else 'no'}"
                             f"  [{check.text}]")
                lines += _values(check, now, "      ")
            continue
        rule = entry.decision
        where = "default" if rule.is_default else f"line {rule.line}"
        lines.append(f"  decided by {where}: {rule.action} \"{rule.label}\""
                     + (f" if {rule.condition}" if rule.condition and rule.index >= 0 else ""))
        lines.append(f"  effect: {_effect(entry)}")
        for check in entry.checks:
            verdict = "matches" if check.result else "no match"
            if check.what in ("on", "when") or check.what.startswith("partition"):
                verdict = "yes" if check.result else "no"
            lines.append(f"  line {check.line} {check.what}: {verdict}  [{check.text}]")
            lines += _values(check, now, "      ")
    if result.wanted_copies is not None:
        lines.append("dealer:")
        for check in result.placement_checks:
            lines.append(f"  line {check.line} {check.what}: "
                         f"{'matches' if check.result else 'no match'}  [{check.text}]")
            lines += _values(check, now, "      ")
        placement = result.placement
        if placement is None:
            lines.append(f"  no placement rule applies (no phase entry for "
                         f"{item.target_phase}); wants {result.wanted_copies} copies")
        else:
            lines.append(f"  decided by line {placement.line} \"{placement.label}\": "
                         f"{placement.copies} copies; with popularity {item.popularity:g}, "
                         f"wants {result.wanted_copies}"
                         + (f", to {placement.to.text}" if placement.to else ""))
    return lines
