"""One Dealer cycle as a process does it: snapshot, storages' reliability and open copy
requests in; plan computed; plan sent; report out. The decision is ``dealer.planner`` (on a
column snapshot through ``dealer.columns`` when the policy allows it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack

from dealer.columns import needed_fields, plan_columns
from dealer.columns import supports as supports_columns
from dealer.planner import DealerPlan, plan_cycle
from detox.cycle import CycleResult, column_taker, compressobj, plan_header, run_stages
from inventory import model
from inventory.client import Client, Snapshot
from inventory.columns import ColumnSnapshot
from policies import Policy

DECISION_COLUMNS = ("oid", "target_id", "source_id", "rule", "line", "size")


def encode_decisions(plan: DealerPlan) -> bytes:
    rows = [[c.oid, c.target_id, c.source_id, c.reason, c.line, c.size] for c in plan.copies]
    packer = compressobj()  # level 1: level 6 cost 0.6 s for the 312k copies of a 1M cycle
    return packer.compress(msgpack.packb({"columns": DECISION_COLUMNS, "rows": rows},
                                         use_bin_type=True)) + packer.flush()


async def run_cycle(client: Client, policy: Policy, policy_text: str, *, dry_run: bool = False,
                    now: float | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    snapshot: Snapshot | None = None) -> CycleResult:
    """One cycle; ``progress(stage, done, total)`` follows it (the snapshot, then the
    planning and applying stages) for a progress bar.

    Planned on a new column snapshot (``dealer.columns``) when the policy allows it, which
    every policy whose ``members`` and ``place`` conditions read only item attributes and
    compare no two attributes does. Otherwise on records, and then with the ``snapshot`` of an
    earlier cycle, that one is caught up through the change feed instead of a new one being
    taken."""
    started = time.time()
    on_columns = supports_columns(policy)

    async def context() -> tuple[dict, dict]:
        """Beside the snapshot: the storages' measured reliability and open copy requests."""
        storages = await client.request("GET", "/v1/storages")
        requests = await client.request("GET", "/v1/requests", params={"state": "pending"})
        return storages, requests

    def plan(snap: Snapshot | ColumnSnapshot, extra: tuple[dict, dict]) -> DealerPlan:
        storages, requests = extra
        reliability = {s["name"]: s.get("reliability") or {} for s in storages["storages"]}
        at = started if now is None else now
        if isinstance(snap, ColumnSnapshot):
            return plan_columns(policy, snap, at, reliability=reliability,
                                requests=requests["requests"])
        return plan_cycle(policy, snap.storages, snap.items, snap.replicas.values(), at,
                          reliability=reliability, requests=requests["requests"])

    def body(plan: DealerPlan, snap: Snapshot | ColumnSnapshot) -> dict[str, Any]:
        return {
            **plan_header(policy, policy_text, snap.version, started),
            "copies": [[c.oid, c.target_id, c.source_id, c.reason, c.line]
                       for c in plan.copies],
            "requests_done": plan.requests_done, "summary": plan.summary(),
            "decisions": encode_decisions(plan),
        }

    result = await run_stages(client, "/v1/cycles/dealer", plan, body, dry_run=dry_run,
                              progress=progress, kept=None if on_columns else snapshot,
                              context=context,
                              take=column_taker(client, needed_fields(policy), progress)
                              if on_columns else None)
    if on_columns:
        result.snapshot = None  # nothing to catch up: the next cycle takes a new one
    return result


def format_report(result: CycleResult, *, dry_run: bool) -> str:
    plan = result.plan
    summary = plan.summary()
    lines = [
        f"Dealer {'dry run' if dry_run else 'cycle'} at {model.format_time(plan.now)} "
        f"(snapshot version {result.snapshot_version}): {summary['copies']} copies, "
        f"{summary['bytes']} bytes, {summary['requests_done']} requests done",
        "",
        f"{'storage':<20} {'status':>9} {'before':>8} {'after':>8} {'copies in':>10}",
    ]
    for s in plan.storages:
        lines.append(f"{s['name']:<20} {s['status']:>9} {s['occupancy_before']:>7.1%} "
                     f"{s['occupancy_after']:>7.1%} {s['queued_copies']:>10}")
    lines.append("")
    for reason, entry in sorted(summary["by_reason"].items()):
        lines.append(f"  {reason:<40} {entry['copies']:>8} copies {entry['bytes']:>14} bytes")
    for reason, count in sorted(summary["unmet"].items()):
        lines.append(f"  no room for {count} item(s): {reason}")
    if result.applied is not None:
        applied = result.applied["summary"]
        lines.append(f"applied as cycle {result.applied['id']}: "
                     f"{applied['applied']['copies']} copies queued, "
                     f"{applied['dropped']['changed']} dropped because the inventory changed")
    lines.append("timing: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items()))
    return "\n".join(lines)
