"""Dealer benchmark: one full cycle (snapshot, plan, apply) through a real server.

    .venv/bin/python benchmarks/bench_dealer.py [--replicas 1000000] [--storages 100]

``generate.py`` writes N replicas (2 per item) on S storages into a new PostgreSQL database;
``dlm serve`` runs on it; this process runs ``dealer.cycle.run_cycle`` with a phase policy
(GAS 1 copy, LIQUID 2, SOLID 2, 90% target occupancy), so that every item whose two copies do
not reach its target phase gets copies. Baseline in the same run, over the same snapshot: a
hand-written loop that only finds the items below their target phase (no destination choice,
no limits, no plan). Target (issue 7): a cycle over 10,000,000 replicas in under 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))

import generate  # noqa: E402
from serving import dlm_server  # noqa: E402

from dealer.cycle import run_cycle  # noqa: E402
from inventory import model  # noqa: E402
from inventory.client import Client  # noqa: E402
from inventory.feed import WIRE_ITEM_FIELDS, WIRE_REPLICA_FIELDS, WIRE_STORAGE_FIELDS  # noqa: E402
from policies import load_policy_text  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
POLICY = """partition "all" { }
dealer {
    phase GAS    copies 1
    phase LIQUID copies 2
    phase SOLID  copies 2
    limits { target_occupancy 90% }
}
"""
TARGET_SECONDS = 30.0


def baseline(snap) -> tuple[float, int]:
    """Items below their target phase, found by the shortest loop that can find them."""
    started = time.perf_counter()
    s_id, s_phase = WIRE_STORAGE_FIELDS.index("id"), WIRE_STORAGE_FIELDS.index("phase")
    weight = {s[s_id]: model.PHASE_WEIGHT[model.PHASE[s[s_phase]]] for s in snap.storages}
    r_oid, r_sid = WIRE_REPLICA_FIELDS.index("oid"), WIRE_REPLICA_FIELDS.index("storage_id")
    r_state = WIRE_REPLICA_FIELDS.index("state")
    have: dict[str, int] = defaultdict(int)
    for rep in snap.replica_records():
        if rep[r_state] == "complete":
            have[rep[r_oid]] += weight[rep[r_sid]]
    i_target = WIRE_ITEM_FIELDS.index("target_phase")
    phase = model.PHASE
    below = sum(1 for oid, item in snap.items.items()
                if model.phase_of_weights(have.get(oid, 0)) < phase[item[i_target]])
    return time.perf_counter() - started, below


async def run(args: argparse.Namespace) -> int:
    name = f"dlm_bench_dealer_{os.getpid()}"
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    workdir = Path(tempfile.mkdtemp(prefix="dlm-bench-dealer-"))
    try:
        spec = generate.Spec(items=args.replicas // 2, replicas=2, storages=args.storages,
                             seed=args.seed)
        print(f"generating {args.replicas:,} replicas on {args.storages} storages ...",
              file=sys.stderr)
        await generate.create_database(ADMIN, name)
        await generate.write_postgres(url, spec)
        policy = load_policy_text(POLICY, "bench-dealer.policy")
        async with dlm_server(url, workdir, timeout=1800) as server:
            health = server.health
            load = os.getloadavg()
            async with Client(server.url, token="", timeout=3600) as client:
                t0 = time.perf_counter()
                result = await run_cycle(client, policy, POLICY)
                total = time.perf_counter() - t0
                snap = await client.snapshot()
        base_s, below = baseline(snap)
    finally:
        await generate.drop_database(ADMIN, name)
    secs = result.seconds
    summary = result.plan.summary()
    applied = result.applied["summary"]["applied"]
    print(f"\nDealer cycle, {health['replicas']:,} replicas, {health['items']:,} items, "
          f"{args.storages} storages; load average {load[0]:.1f} at the start\n")
    print("| phase | seconds |\n|---|---:|")
    for key in ("snapshot", "plan", "apply"):
        print(f"| {key} | {secs[key]:.2f} |")
    print(f"| end to end | {total:.2f} |")
    print(f"| baseline: find the items below target (same snapshot) | {base_s:.2f} |")
    print(f"\nplanned {summary['copies']:,} copies ({applied['copies']:,} queued), "
          f"{sum(summary['unmet'].values()):,} items without room; baseline found {below:,} "
          f"items below target. Plan / baseline: {secs['plan'] / base_s:.1f}x. "
          f"Target at 10M replicas: < {TARGET_SECONDS:.0f} s end to end.")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=1_000_000)
    p.add_argument("--storages", type=int, default=100)
    p.add_argument("--seed", type=int, default=42)
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
