"""A plain-language summary of a loaded policy, printed by ``dlm policy check``: what an operator
needs to confirm the file says what they meant (the scope, the triggers, every rule in the order
it is tried, the placement targets and the limits)."""

from __future__ import annotations

from .model import DealerPolicy, DetoxPolicy, Partition, Policy
from .units import format_bytes, format_duration, format_fraction


def summarize(policy: Policy) -> list[str]:
    lines = [f"{policy.file}: partition \"{policy.name}\""]
    lines += _partition(policy.partition, "  ")
    if policy.detox is not None:
        lines += _detox(policy.detox)
    else:
        lines.append("  detox: none (this policy never deletes)")
    if policy.dealer is not None:
        lines += _dealer(policy.dealer)
    else:
        lines.append("  dealer: none (this policy never places copies)")
    return lines


def _partition(part: Partition, indent: str) -> list[str]:
    out = []
    members = part.members.text if part.members is not None else "every replica"
    out.append(f"{indent}members: {members}")
    if part.storages is not None:
        out.append(f"{indent}storages: {part.storages.text}")
    quotas = []
    if part.default_quota is not None:
        quotas.append(f"default {_quota(part.default_quota)}")
    quotas += [f'"{name}" {_quota(q)}' for name, q in sorted(part.quotas.items())]
    if quotas:
        out.append(f"{indent}quotas: " + "; ".join(quotas))
    for child in part.children:
        out.append(f"{indent}sub-partition \"{child.name}\" (line {child.line}):")
        out += _partition(child, indent + "  ")
    return out


def _quota(quota) -> str:
    if quota.bytes is not None:
        return format_bytes(quota.bytes)
    return f"{format_fraction(quota.fraction or 0)} of capacity"


def _detox(detox: DetoxPolicy) -> list[str]:
    out = [f"  detox (line {detox.line}):"]
    on = detox.on.text if detox.on is not None else "the partition's storages"
    out.append(f"    works on: {on}")
    if detox.when is not None:
        until = detox.until.text if detox.until is not None else f"not ({detox.when.text})"
        out.append(f"    cleans a storage when {detox.when.text}, until {until}")
    else:
        out.append("    no 'when': dismissed replicas are never deleted, only 'delete' rules act")
    out.append("    rules, first match wins:")
    width = max([len(r.action) for r in detox.rules] + [7])
    for rule in detox.rules:
        out.append(f"      line {rule.line:<4} {rule.action:<{width}} \"{rule.label}\": "
                   f"{rule.condition}")
    d = detox.default
    out.append(f"      line {d.line:<4} {d.action:<{width}} \"{d.label}\": everything else")
    out.append("    deletion order: " + ", ".join(
        f"{k.attribute.path} {'descending' if k.descending else 'ascending'}"
        for k in detox.order))
    return out


def _dealer(dealer: DealerPolicy) -> list[str]:
    out = [f"  dealer (line {dealer.line}):"]
    for rule in dealer.rules:
        out.append(f"    line {rule.line:<4} \"{rule.label}\": {_copies(rule.copies)} of items "
                   f"where {rule.condition.text if rule.condition else '-'}"
                   + _where(rule))
    for phase, placement in dealer.phases.items():
        out.append(f"    line {placement.line:<4} target phase {phase}: "
                   f"{_copies(placement.copies)}" + _where(placement))
    if not dealer.rules and not dealer.phases:
        out.append("    no copy requirements")
    pop = dealer.popularity
    if pop is not None:
        to = f", to {pop.to.text}" if pop.to is not None else ""
        out.append(f"    popularity: half-life {format_duration(pop.half_life)}, one extra copy "
                   f"per {pop.threshold:g} of popularity, at most {pop.max_copies} copies{to}")
    bal = dealer.balance
    if bal is not None:
        parts = []
        if bal.spread is not None:
            parts.append(f"occupancy spread under {format_fraction(bal.spread)}")
        if bal.volume_per_cycle is not None:
            parts.append(f"at most {format_bytes(bal.volume_per_cycle)} moved per cycle")
        out.append("    balance: " + (", ".join(parts) or "on, default settings"))
    lim = dealer.limits
    parts = []
    if lim.target_occupancy is not None:
        parts.append(f"fill destinations up to {format_fraction(lim.target_occupancy)}")
    if lim.max_pending is not None:
        parts.append(f"pending at most {format_fraction(lim.max_pending)} of capacity")
    if lim.volume_per_cycle is not None:
        parts.append(f"{format_bytes(lim.volume_per_cycle)} per cycle")
    if lim.storage_volume_per_cycle is not None:
        parts.append(f"{format_bytes(lim.storage_volume_per_cycle)} per storage per cycle")
    out.append("    limits: " + ("; ".join(parts) if parts else "none"))
    return out


def _copies(n: int) -> str:
    return f"{n} cop{'y' if n == 1 else 'ies'}"


def _where(placement) -> str:
    text = ""
    if placement.to is not None:
        text += f", to {placement.to.text}"
    if placement.source is not None:
        text += f", from {placement.source.text}"
    return text
