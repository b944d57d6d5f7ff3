"""Dealer benchmark: one full cycle (snapshot, plan, apply) through a real server.

    .venv/bin/python benchmarks/bench_dealer.py [--replicas 10000000] [--storages 100]
        [--volume "100 TB"] [--keep | --db NAME]

``generate.py`` writes N replicas (2 per item, every item's target phase SOLID) on S storages
(GAS, LIQUID, SOLID, GAS, ... in turn) into a new PostgreSQL database; ``dlm serve`` runs on it;
this process runs ``dealer.cycle.run_cycle`` with a phase policy (GAS 1 copy, LIQUID 2, SOLID 2,
90% target occupancy), so every item whose two copies do not make SOLID is short: about half
of them (2.5M items needing 3.1M copies at 10M replicas).

``--volume`` is the policy's ``volume_per_cycle``: what one cycle may queue, as a production
Dealer is run (every 30 minutes in the operator guide; Dynamo had transfer limits per cycle). The
cycle still judges every item and orders all the short ones; the most deficient get copies until
the volume is spent, the rest are reported unmet and wait for the next cycle. ``--volume none``
queues a copy for every short item at once (3.1M copies at 10M replicas).

Baseline in the same run, over a record snapshot of the same inventory: a hand-written loop
that only finds the items below their target phase (no destination choice, no limits, no plan).
Target (issue 7): a cycle over 10,000,000 replicas on 100 storages in under 30 s end to end.
The database is removed at the end (``--keep`` keeps it, as generated; ``--db NAME`` runs on a
copy of a kept one).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
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
from serving import cpu_seconds, dlm_server  # noqa: E402

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
    limits {
        target_occupancy 90%
        VOLUME
    }
}
"""
TARGET_SECONDS = 30.0


def policy_text(volume: str) -> str:
    line = "" if volume == "none" else f"volume_per_cycle {volume}"
    return POLICY.replace("VOLUME", line)


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


class TimedClient(Client):
    """The cycle's client, noting the server's CPU time during the plan's POST."""

    server_pid: int
    marks: dict[str, float]

    async def post_msgpack(self, path, body):  # type: ignore[override]
        t0, cpu = time.perf_counter(), cpu_seconds(self.server_pid)
        answer = await super().post_msgpack(path, body)
        self.marks["server_apply"] = time.perf_counter() - t0
        self.marks["server_cpu_apply"] = cpu_seconds(self.server_pid) - cpu
        return answer


async def run(args: argparse.Namespace) -> int:
    name = f"dlm_bench_dealer_{os.getpid()}"
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    kept = None
    workdir = Path(tempfile.mkdtemp(prefix="dlm-bench-dealer-"))
    text = policy_text(args.volume)
    policy = load_policy_text(text, "bench-dealer.policy")
    try:
        if args.db:  # a fresh copy: the cycle changes the inventory it runs on
            await generate.create_database(ADMIN, name, template=args.db)
        else:
            spec = generate.Spec(items=args.replicas // 2, replicas=2, storages=args.storages,
                                 seed=args.seed)
            print(f"generating {args.replicas:,} replicas on {args.storages} storages ...",
                  file=sys.stderr)
            await generate.create_database(ADMIN, name)
            await generate.write_postgres(url, spec)
            if args.keep:  # the cycle runs on a copy: what is kept stays as generated
                kept, name = name, f"{name}_run"
                url = ADMIN.rsplit("/", 1)[0] + "/" + name
                await generate.create_database(ADMIN, name, template=kept)
        async with dlm_server(url, workdir, timeout=1800) as server:
            health = server.health
            async with TimedClient(server.url, token="", timeout=3600) as client:
                client.server_pid, client.marks = server.proc.pid, {}
                await generate.checkpoint(ADMIN)
                await asyncio.sleep(1.0)
                load = os.getloadavg()
                t0 = time.perf_counter()
                result = await run_cycle(client, policy, text)
                total = time.perf_counter() - t0
                marks = client.marks
                summary = result.plan.summary()
                applied = result.applied["summary"]["applied"]
                secs = result.seconds
                marks["columns"] = result.snapshot is None
                del result
                gc.collect()
                snap = await client.snapshot()  # the same inventory, for the baseline
        gc.freeze()
        base_s, below = baseline(snap)
        gc.unfreeze()
        del snap
    finally:
        await generate.drop_database(ADMIN, name)
        if kept:
            print(f"kept database {kept} (reuse: --db {kept})", file=sys.stderr)
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load average at start {load[0]:.2f}")
    print(f"\nDealer cycle, {health['replicas']:,} replicas, {health['items']:,} items, "
          f"{args.storages} storages, volume per cycle: {args.volume}\n")
    rows = [
        ("snapshot (columns)" if marks.get("columns") else "snapshot (records)",
         f"{secs['snapshot']:.2f} s"),
        ("plan", f"{secs['plan']:.2f} s"),
        ("apply (encode + POST; server checks and commits)", f"{secs['apply']:.2f} s"),
        ("  server CPU during the POST", f"{marks['server_cpu_apply']:.1f} s"),
        ("end to end (run_cycle)", f"{total:.2f} s"),
        ("baseline: find the items below target (record snapshot)", f"{base_s:.2f} s"),
        ("plan / baseline", f"{secs['plan'] / base_s:.2f}x"),
    ]
    width = max(len(k) for k, _ in rows)
    print("| stage | value |\n|---|---:|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value:>10} |")
    unmet = sum(summary["unmet"].values())
    print(f"\nplanned {summary['copies']:,} copies ({summary['bytes'] / 1e12:.1f} TB; "
          f"{applied['copies']:,} queued), {unmet:,} short items left for later cycles; "
          f"the baseline found {below:,} items below target. "
          f"Target at 10M replicas: < {TARGET_SECONDS:.0f} s end to end: "
          + ("met" if total < TARGET_SECONDS else "NOT met"))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=10_000_000)
    p.add_argument("--storages", type=int, default=100)
    p.add_argument("--volume", default="100 TB",
                   help="the policy's volume_per_cycle (a size such as '100 TB'; 'none': "
                        "no limit, every short item gets its copies in this cycle)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep", action="store_true", help="keep the generated database")
    p.add_argument("--db", help="run on a copy of this database (made by an earlier --keep "
                   "run, never changed itself)")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
