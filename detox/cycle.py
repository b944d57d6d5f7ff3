"""One Detox cycle as a process does it: snapshot in, plan computed, plan sent, report out.

The only I/O is here (the server's snapshot and the plan's POST); the decision is
``detox.planner.plan_cycle``. A dry run stops before the POST and changes nothing.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from detox.columns import ColumnDecisions, needed_fields, plan_columns
from detox.columns import supports as supports_columns
from detox.planner import DetoxPlan, plan_cycle
from inventory import model
from inventory.client import Client, Snapshot
from inventory.columns import ColumnSnapshot
from inventory.decisions import DECISION_COLUMNS
from inventory.memory import trim_heap
from policies import Policy

log = logging.getLogger("dlm.detox")



@dataclass(slots=True)
class CycleResult:
    """What a Detox or Dealer cycle did: its plan, the snapshot it planned on (kept by
    ``dlm detox|dealer --every`` to catch up for the next cycle), the server's answer."""

    plan: Any  # DetoxPlan or dealer.planner.DealerPlan
    snapshot_version: int
    seconds: dict[str, float]
    applied: dict[str, Any] | None  # the server's answer (None for a dry run)
    snapshot: Snapshot | None = None


def encode_decisions(plan: DetoxPlan, chunk: int = 50_000) -> bytearray:
    """The decisions as the server stores them: zlib-compressed msgpack
    ``{"columns": [...], "rows": [[uid, storage_id, outcome, rule, line, size], ...]}``.

    Streamed: rows are packed ``chunk`` at a time (one C call each; the chunk's own array
    header dropped) and compressed as they come, so no list of every row is ever built."""
    decisions = plan.decisions
    if isinstance(decisions, ColumnDecisions):  # the column planner's: encoded as columns
        packer = msgpack.Packer(use_bin_type=True)
        compressor = compressobj()
        out = bytearray(compressor.compress(
            packer.pack_map_header(ColumnDecisions.ENCODED_PAIRS)))
        for key, value in decisions.encode():
            out += compressor.compress(packer.pack(key))
            out += compressor.compress(packer.pack(value))
            del value
        out += compressor.flush()
        return out
    n = len(decisions)
    packer = msgpack.Packer(use_bin_type=True)
    compressor = compressobj()
    out = bytearray(compressor.compress(packer.pack_map_header(2) + packer.pack("columns")
                                        + packer.pack(DECISION_COLUMNS) + packer.pack("rows")
                                        + packer.pack_array_header(n)))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        packed = packer.pack(list(decisions.rows(lo, hi)))
        out += compressor.compress(memoryview(packed)[_array_header_size(hi - lo):])
    out += compressor.flush()
    return out  # one buffer (msgpack sends a bytearray as bin): no second copy to join


def _array_header_size(n: int) -> int:
    return 1 if n < 16 else 3 if n < 1 << 16 else 5


def compressobj() -> Any:
    """zlib at level 1 (ISA-L's when installed: the same format, several times faster)."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency, but optional here
        return zlib.compressobj(1)
    return isal_zlib.compressobj(1)


async def run_cycle(client: Client, policy: Policy, policy_text: str, *, dry_run: bool = False,
                    now: float | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    snapshot: Snapshot | None = None) -> CycleResult:
    """One cycle; ``progress(stage, done, total)`` follows it (the snapshot, then the
    planning and applying stages) for a progress bar.

    Planned on columns (``detox.columns``) when the policy allows it, which every policy
    without a comparison of two attributes does: a new column snapshot each cycle (it costs
    less than catching up a record snapshot would). Otherwise on records, and then with the
    ``snapshot`` of an earlier cycle, that one is caught up through the change feed instead of
    a new one being taken."""
    started = time.time()
    if supports_columns(policy):
        return await _run_on_columns(client, policy, policy_text, started if now is None else now,
                                     started, dry_run=dry_run, progress=progress)

    def plan(snap: Snapshot, _context: None) -> DetoxPlan:
        return plan_cycle(policy, snap.storages, snap.items, snap.replica_records(),
                          started if now is None else now, snap.pins())

    def body(plan: DetoxPlan, snap: Snapshot) -> dict[str, Any]:
        return plan_body(policy, policy_text, plan, snap.version, started)

    return await run_stages(client, "/v1/cycles/detox", plan, body, dry_run=dry_run,
                            progress=progress, kept=snapshot)


def plan_body(policy: Policy, policy_text: str, plan: DetoxPlan, snapshot_version: int,
              started: float) -> dict[str, Any]:
    """What ``POST /v1/cycles/detox`` receives for a plan, whichever planner made it."""
    return {
        **plan_header(policy, policy_text, snapshot_version, started),
        "expirations": plan.expirations,
        "deletions": [[d.oid, d.storage_id, d.rule, d.line] for d in plan.deletions],
        "summary": plan.summary(),
        "decisions": encode_decisions(plan),
    }


def column_taker(client: Client, fields: list[str],
                 progress: Callable[[str, int, int], None] | None
                 ) -> Callable[[], Awaitable[ColumnSnapshot]]:
    """``run_stages``' ``take`` for a new column snapshot with the optional ``fields`` a
    policy reads, its progress in MiB received."""
    async def take() -> ColumnSnapshot:
        report = None if progress is None else (
            lambda done, total: progress("snapshot (MiB)", done >> 20, total >> 20))
        return await client.column_snapshot(fields, report)

    return take


async def _run_on_columns(client: Client, policy: Policy, policy_text: str, now: float,
                          started: float, *, dry_run: bool,
                          progress: Callable[[str, int, int], None] | None) -> CycleResult:
    def plan(snap: ColumnSnapshot, _context: None) -> DetoxPlan:
        return plan_columns(policy, snap, now)

    def body(plan: DetoxPlan, snap: ColumnSnapshot) -> dict[str, Any]:
        return plan_body(policy, policy_text, plan, snap.version, started)

    result = await run_stages(client, "/v1/cycles/detox", plan, body, dry_run=dry_run,
                              progress=progress, kept=None,
                              take=column_taker(client, needed_fields(policy), progress))
    result.snapshot = None  # nothing to catch up: the next cycle takes a new one
    return result


async def run_stages(client: Client, path: str, plan: Callable[[Snapshot, Any], Any],
                     body: Callable[[Any, Snapshot], dict[str, Any]], *, dry_run: bool,
                     progress: Callable[[str, int, int], None] | None, kept: Snapshot | None,
                     context: Callable[[], Awaitable[Any]] | None = None,
                     take: Callable[[], Awaitable[Any]] | None = None) -> CycleResult:
    """The stages every cycle goes through, timed: the snapshot (``take()``; by default a new
    record snapshot, or ``kept`` caught up) and whatever else the plan reads (``context``), the
    plan, and unless ``dry_run`` the plan's POST to ``path``. Detox and Dealer differ only in
    ``plan`` and ``body``."""
    t0 = time.perf_counter()
    snap = await (take() if take is not None else fresh_snapshot(client, kept, progress))
    extra = None if context is None else await context()
    t1 = time.perf_counter()
    # The snapshot is millions of long-lived objects: out of the cyclic collector's sight for
    # the cycle, or every collection the plan's allocations trigger walks all of them.
    gc.freeze()
    try:
        if progress is not None:
            progress("plan", 0, 0)
        planned = plan(snap, extra)
        trim_heap()  # the plan's freed heap, before the apply's peak stacks on it
        t2 = time.perf_counter()
        applied = None
        if not dry_run:
            if progress is not None:
                progress("apply", 0, 0)
            applied = await client.post_msgpack(path, body(planned, snap))
        t3 = time.perf_counter()
    finally:
        gc.unfreeze()
    return CycleResult(planned, snap.version, {"snapshot": t1 - t0, "plan": t2 - t1,
                                               "apply": t3 - t2}, applied, snap)


async def fresh_snapshot(client: Client, kept: Snapshot | None,
                         progress: Callable[[str, int, int], None] | None) -> Snapshot:
    """The inventory as it is now: ``kept`` (an earlier cycle's snapshot) brought up to date
    through the change feed when the server still has the changes since it, else a new
    snapshot (the first cycle, or after the server restarted or the feed moved on)."""
    if kept is not None:
        if progress is not None:
            progress("catching up", 0, 0)
        if await client.catch_up(kept):
            return kept
        log.info("the change feed no longer reaches the kept snapshot; taking a new one",
                 extra={"snapshot_version": kept.version})
    return await client.snapshot(
        None if progress is None else lambda done, total: progress("snapshot", done, total))


def plan_header(policy: Policy, policy_text: str, snapshot_version: int,
                started: float) -> dict[str, Any]:
    """The fields every cycle plan sends the server: which policy, which snapshot, when."""
    return {
        "policy_name": policy.partition.name,
        "policy_file": policy.file,
        "policy_text": policy_text,
        "policy_sha256": hashlib.sha256(policy_text.encode()).hexdigest(),
        "snapshot_version": snapshot_version,
        "started": started,
    }


def format_report(result: CycleResult, *, dry_run: bool) -> str:
    """The cycle as an operator reads it: per storage before/after, what went, what blocked."""
    plan = result.plan
    summary = plan.summary()
    lines = [
        f"Detox {'dry run' if dry_run else 'cycle'} at {model.format_time(plan.now)} "
        f"(snapshot version {result.snapshot_version}): {summary['deletions']} deletions, "
        f"{_bytes(summary['deleted_bytes'])}, {summary['expirations']} items expired",
        "",
        f"{'storage':<20} {'triggered':>9} {'before':>8} {'after':>8} {'deleted':>10}  status",
    ]
    for s in plan.storages:
        status = "not judged by this policy" if not s.judged else \
            "ok" if s.satisfied else "STILL OVER: protected by " + ", ".join(
            f"{label} ({_bytes(b)})" for label, b in
            sorted(s.protected_bytes.items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"{s.name:<20} {'yes' if s.triggered else 'no':>9} "
                     f"{s.occupancy_before:>7.1%} {s.occupancy_after:>7.1%} "
                     f"{_bytes(s.deleted_bytes):>10}  {status}")
    lines.append("")
    lines.append("decisions by rule:")
    for key, entry in sorted(summary["by_rule"].items(), key=lambda kv: -kv[1]["bytes"]):
        lines.append(f"  {key:<50} {entry['replicas']:>9} replicas {_bytes(entry['bytes']):>10}")
    if summary["pinned"]:
        lines.append("")
        lines.append("kept, pinned by copy requests:")
        for pin in summary["pinned"]:
            by = f" ({pin['requester']})" if pin["requester"] else ""
            lines.append(f"  request {pin['request']}{by} until {pin['until']}: "
                         f"{pin['replicas']} replicas, {_bytes(pin['bytes'])}")
    if result.applied is not None:
        applied = result.applied["summary"]
        lines.append("")
        lines.append(f"applied as cycle {result.applied['id']}: "
                     f"{applied['applied']['deletions']} deletions queued, "
                     f"{applied['applied']['expirations']} expirations; "
                     f"dropped at apply: {format_dropped(applied.get('dropped', {}))}")
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items())
    lines.append(f"timing: {timing}")
    return "\n".join(lines)


DROPPED = {  # why the server dropped part of a plan (inventory.writes_cycles.ApplyDetoxPlan)
    "changed": "the inventory changed",
    "safety": "the safety re-check",
    "pinned": "pinned by a copy request since the snapshot",
    "not_due": "expiry no longer due",
}


def format_dropped(dropped: dict[str, int]) -> str:
    """Every kind of drop the server counted, the known ones first, none left out."""
    kinds = [*DROPPED, *sorted(set(dropped) - set(DROPPED))]
    return ", ".join(f"{dropped.get(kind, 0)} ({DROPPED.get(kind, kind)})" for kind in kinds)


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"
