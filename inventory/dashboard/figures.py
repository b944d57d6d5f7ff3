"""The dashboard's figures, computed from memory: per-storage rows with watermarks, projected
occupancy and drain progress; bytes moved and deleted per day; an item's operations.

Pure functions of the inventory (and the occupancy history) so the fast tests can check them
without a browser, and so the HTML fragments and the plot data agree on every number.
"""

from __future__ import annotations

import functools
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inventory.dashboard.history import OccupancyHistory
from inventory.inventory import Inventory, Storage
from inventory.objects import Cycle, Operation
from policies import PolicyError, ir, load_policy_text

PENDING = ("queued", "running")
DAYS = 30  # days of the bytes-per-day plot


@dataclass(frozen=True, slots=True)
class Watermarks:
    """Detox's thresholds as occupancy fractions, from the last Detox cycle's policy."""

    high: float | None
    low: float | None
    cycle_id: int
    storages: frozenset[str]  # the storages that cycle judged


@dataclass(frozen=True, slots=True)
class Drain:
    """A draining storage: bytes still on it, the share gone since the drain was first seen,
    and the time left at the rate ``used`` measurably falls."""

    left: int
    progress: float | None
    rate: float | None  # bytes/s
    eta: float | None  # seconds


@dataclass(frozen=True, slots=True)
class StorageRow:
    """One storage line of the dashboard."""

    storage: Storage
    occupancy: float | None
    incoming: int  # bytes of queued/running copies to it
    outgoing: int  # bytes of queued/running deletions on it
    projected: float | None
    high: float | None
    low: float | None
    drain: Drain | None

    @property
    def name(self) -> str:
        return self.storage.name


def _threshold(condition: ir.Condition | None, ops: tuple[str, ...]) -> float | None:
    """X of a ``storage.occupancy > X`` condition (any operand order); None for anything else
    (a compound condition has no single line to draw)."""
    if condition is None or not isinstance(condition.expr, ir.Compare):
        return None
    cmp = condition.expr
    flipped = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
    left, right, op = cmp.left, cmp.right, cmp.op
    if isinstance(left, ir.Const) and isinstance(right, ir.Attr):
        left, right, op = right, left, flipped.get(op, op)
    if (isinstance(left, ir.Attr) and left.path == "storage.occupancy"
            and isinstance(right, ir.Const) and not right.is_now and op in ops
            and isinstance(right.value, int | float)):
        return float(right.value)
    return None


@functools.lru_cache(maxsize=32)
def policy_watermarks(text: str) -> tuple[float | None, float | None]:
    """(high, low) of a policy's ``detox { when ... until ... }``; (None, None) when the policy
    no longer parses (written for an older dlm) or has no Detox section. Cached: the same
    policy text comes back on every page load."""
    try:
        policy = load_policy_text(text, "cycle.policy")
    except PolicyError:
        return None, None
    detox = policy.detox
    if detox is None:
        return None, None
    return (_threshold(detox.when.source if detox.when else None, (">", ">=")),
            _threshold(detox.until.source if detox.until else None, ("<", "<=")))


def last_detox(inv: Inventory) -> Cycle | None:
    cycles = [c for c in inv.cycles.values() if c.kind == "detox"]
    return max(cycles, key=lambda c: c.id) if cycles else None


def watermarks(inv: Inventory) -> Watermarks | None:
    cycle = last_detox(inv)
    if cycle is None or not cycle.policy:
        return None
    high, low = policy_watermarks(cycle.policy)
    names = frozenset(s.get("name") for s in cycle.summary.get("storages", ())
                      if isinstance(s, dict) and isinstance(s.get("name"), str))
    return Watermarks(high, low, cycle.id, names)


def item_size(inv: Inventory, oid: int) -> int:
    row = inv.row_of_oid(oid)
    if row is None:
        return 0
    return max(inv.i_size[row], 0)


def pending_bytes(inv: Inventory) -> tuple[Counter[int], Counter[int]]:
    """(bytes coming to each storage id, bytes leaving it) by queued or running operations."""
    incoming: Counter[int] = Counter()
    outgoing: Counter[int] = Counter()
    for op in inv.operations.values():
        if op.state in PENDING:
            (incoming if op.kind == "copy" else outgoing)[op.target_id] += item_size(inv, op.oid)
    return incoming, outgoing


def drain_of(storage: Storage, history: OccupancyHistory | None) -> Drain | None:
    if storage.status != "draining":
        return None
    start = history.drain_start.get(storage.name) if history else None
    progress = None
    if start is not None and start[1] > 0:
        progress = max(0.0, min(1.0, 1 - storage.used / start[1]))
    elif storage.used == 0:
        progress = 1.0
    rate = history.drain_rate(storage.name) if history else None
    eta = storage.used / rate if rate else (0.0 if storage.used == 0 else None)
    return Drain(storage.used, progress, rate, eta)


def storage_rows(inv: Inventory, history: OccupancyHistory | None = None) -> list[StorageRow]:
    """Every storage by name, with the last Detox cycle's watermarks where it judged it."""
    marks = watermarks(inv)
    incoming, outgoing = pending_bytes(inv)
    rows = []
    for s in sorted(inv.storages.values(), key=lambda s: s.name):
        cap = s.capacity
        add, remove = incoming[s.id], outgoing[s.id]
        judged = marks is not None and s.name in marks.storages
        rows.append(StorageRow(
            s, s.used / cap if cap else None, add, remove,
            max(s.used + add - remove, 0) / cap if cap else None,
            marks.high if judged else None, marks.low if judged else None,
            drain_of(s, history)))
    return rows


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def bytes_per_day(inv: Inventory, now: float | None = None, days: int = DAYS
                  ) -> list[dict[str, Any]]:
    """Bytes copied and deleted by finished operations on each of the last ``days`` days
    (UTC), oldest first, days without any included so the plot's axis is continuous."""
    now = time.time() if now is None else now
    first = now - (days - 1) * 86400
    copied: dict[str, int] = defaultdict(int)
    deleted: dict[str, int] = defaultdict(int)
    for op in inv.operations.values():
        if op.state == "done" and op.updated >= first - 86400:
            (copied if op.kind == "copy" else deleted)[day_of(op.updated)] += item_size(inv, op.oid)
    out = []
    for i in range(days):
        day = day_of(first + i * 86400)
        out.append({"day": day, "copied": copied.get(day, 0), "deleted": deleted.get(day, 0)})
    return out


def detox_points(inv: Inventory) -> dict[str, list[tuple[float, float]]]:
    """Occupancy before (at the start) and after (at the end) of each Detox cycle, per storage:
    the part of the occupancy series the server does keep."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for cycle in sorted(inv.cycles.values(), key=lambda c: c.started):
        if cycle.kind != "detox":
            continue
        for s in cycle.summary.get("storages", ()):
            if not isinstance(s, dict) or not isinstance(s.get("name"), str):
                continue
            before, after = s.get("occupancy_before"), s.get("occupancy_after")
            if isinstance(before, int | float):
                out[s["name"]].append((cycle.started, float(before)))
            if isinstance(after, int | float):
                out[s["name"]].append((cycle.ended or cycle.started, float(after)))
    return out


def occupancy_series(inv: Inventory, history: OccupancyHistory | None,
                     now: float | None = None) -> dict[str, list[tuple[float, float]]]:
    """Per storage: Detox's recorded points, the sampled ones and the present, in time order.
    Detox's "after" is what it planned, so it is drawn like any other point: the samples that
    follow show what really happened."""
    now = time.time() if now is None else now
    series = detox_points(inv)
    if history is not None:
        for sample in history.samples:
            for name, used in sample.used.items():
                cap = sample.capacity.get(name)
                if cap:
                    series[name].append((sample.t, used / cap))
    for s in inv.storages.values():
        if s.capacity:
            series[s.name].append((now, s.used / s.capacity))
    return {name: sorted(points) for name, points in sorted(series.items())
            if name in inv.storage_by_name}


def operation_counts(inv: Inventory) -> dict[str, dict[str, int]]:
    """Operations by state, per kind: {"copy": {"queued": 3, ...}, "delete": {...}}."""
    out: dict[str, dict[str, int]] = {"copy": {}, "delete": {}}
    for op in inv.operations.values():
        bucket = out.setdefault(op.kind, {})
        bucket[op.state] = bucket.get(op.state, 0) + 1
    return out


def storage_activity(inv: Inventory) -> dict[int, dict[str, int]]:
    """Per storage id: queued, running and failed operations that touch it (as target)."""
    out: dict[int, dict[str, int]] = defaultdict(lambda: {"queued": 0, "running": 0,
                                                            "failed": 0})
    for op in inv.operations.values():
        if op.state in ("queued", "running", "failed"):
            out[op.target_id][op.state] += 1
    return out


def operations_of(inv: Inventory, oid: int) -> list[Operation]:
    """The operations on one item, newest first."""
    return sorted((op for op in inv.operations.values() if op.oid == oid),
                  key=lambda o: -o.id)


def recent_operations(inv: Inventory, states: tuple[str, ...], limit: int = 500
                      ) -> list[Operation]:
    """Operations in ``states``, newest first: what an operator looks at first."""
    found = [op for op in inv.operations.values() if op.state in states]
    found.sort(key=lambda o: -o.id)
    return found[:limit]

