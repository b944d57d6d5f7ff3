"""Detox benchmark: one full cycle (snapshot, evaluation, plan, apply) through a real server.

    .venv/bin/python benchmarks/bench_detox.py [--replicas 10000000] [--storages 100]

1. ``generate.py`` writes N replicas (2 per item, so N/2 items) on S storages straight into a new
   PostgreSQL database (``dlm_bench_detox_*``); storage capacities are then set so that a share of
   the storages (``--over``, default 20%) is over the policy's high watermark (90%), the others
   between 50% and 88%.
2. ``dlm serve --db postgresql://...`` runs as a subprocess on that database.
3. In this process, ``detox.cycle.run_cycle`` runs one cycle with the 12-rule policy of
   ``bench_policy.py`` (its partition's groups renamed to the generator's, ``default dismiss``
   and an ``order by`` so that triggered storages have candidates to clean).
4. Baseline, same run, same inventory (a copy of the database made before the cycle): the best
   simple alternative, the same cycle as SQL over the catalogue in one transaction (the 12 rules
   as a CASE over replica x item x storage, expirations, least popular candidates of the
   storages over the high watermark until under the low one, deletions queued); ``BASELINE_SQL``
   says where it is simpler than DLM. ``SQL baseline / end to end`` is DLM's speed-up.

Memory: RSS before and after the snapshot (the snapshot's own size), then the peak RSS is reset
(``/proc/self/clear_refs``) and read again after the plan and the apply (``VmHWM``): the extra
memory of the Detox process beyond its snapshot.

``--cycles N`` with N >= 3 (steady state, issue 17): N cycles on one server, each with work. The
server runs no file operation (``fileops: workers: 0``) and keeps finished operations for 3 s
(``--ops-retention``); between two cycles every queued deletion is cancelled (its replica is
complete again, so the next cycle plans the same deletions on the snapshot it kept, caught up
through the change feed, as ``dlm detox --every`` does), the sweep drops them from memory, and
each cycle's time, server CPU during the apply and the server's RSS after it are printed.
Targets: the 10th cycle within 1.2x of the 1st, RSS after the 30th within 10% of after the 1st.

Targets (issue 6): end to end under 30 s, under 1 GiB extra beyond the snapshot, at 10M replicas.
The database and the server are removed at the end (``--keep`` keeps the database; ``--db NAME``
reuses one made by an earlier ``--keep`` run with the same parameters).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))

import bench_policy  # noqa: E402
import generate  # noqa: E402
from serving import (  # noqa: E402
    STEADY_RETENTION,
    cancel_queued,
    cpu_seconds,
    dlm_server,
    print_steady,
    rss_bytes,
    steady_config,
)

from detox.cycle import run_cycle  # noqa: E402
from inventory.client import Client  # noqa: E402
from policies import load_policy_text  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_SECONDS = 30.0
TARGET_EXTRA = 1 << 30
HIGH, LOW = 0.90, 0.85
NOW = generate.EPOCH + generate.SPAN + 86_400.0  # the day after the last generated item

POLICY = (bench_policy.POLICY
          .replace('{"analysis", "production"}', '{"ska", "cms", "astro"}')
          .replace('default protect "keep"',
                   'default dismiss\n    order by item.popularity ascending'))


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


async def set_capacities(url: str, over: float, seed: int) -> dict[int, float]:
    """Capacities giving each storage an occupancy: ``over`` of them above the high watermark."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        used = dict(await conn.fetch("SELECT storage_id, sum(size)::bigint FROM replica "
                                     "GROUP BY storage_id"))
        ids = sorted(await conn.fetchval("SELECT array_agg(id) FROM storage"))
        rng = random.Random(seed)
        hot = set(rng.sample(ids, round(len(ids) * over)))
        occupancy = {sid: rng.uniform(0.91, 0.98) if sid in hot else rng.uniform(0.50, 0.88)
                     for sid in ids}
        await conn.executemany("UPDATE storage SET capacity = $2 WHERE id = $1",
                               [(sid, max(1, int(used.get(sid, 0) / occ)))
                                for sid, occ in occupancy.items()])
    finally:
        await conn.close()
    return occupancy


class TimedClient(Client):
    """The Detox cycle's client, noting memory after the snapshot and the server's apply time."""

    marks: dict[str, float]
    server_pid: int

    async def snapshot(self, progress=None):  # type: ignore[override]
        return await self._measured(super().snapshot, progress)

    async def column_snapshot(self, with_=(), progress=None):  # type: ignore[override]
        self.marks["snapshot_kind"] = "columns" + (f" with {', '.join(with_)}" if with_ else "")
        return await self._measured(super().column_snapshot, with_, progress)

    async def _measured(self, take, *args):
        if "rss_after_snapshot" in self.marks:  # the baseline's or the second cycle's
            return await take(*args)
        gc.collect()
        self.marks["rss_before_snapshot"] = status_kb("VmRSS")
        cpu = cpu_seconds(self.server_pid), time.process_time()
        snap = await take(*args)
        self.marks["server_cpu_snapshot"] = cpu_seconds(self.server_pid) - cpu[0]
        self.marks["client_cpu_snapshot"] = time.process_time() - cpu[1]
        self.marks["peak_during_snapshot"] = status_kb("VmHWM")
        self.marks["peak_reset"] = reset_peak()
        self.marks["rss_after_snapshot"] = status_kb("VmRSS")  # the reset peak, as near as can be
        return snap

    async def post_msgpack(self, path, body):  # type: ignore[override]
        import msgpack

        t0 = time.perf_counter()
        rest = {k: v for k, v in body.items() if k != "decisions"}
        self.marks["body_bytes"] = len(msgpack.packb(rest, use_bin_type=True)) + len(
            body["decisions"])
        self.marks["decisions_bytes"] = len(body["decisions"])
        del rest
        t1 = time.perf_counter()
        cpu = cpu_seconds(self.server_pid)
        answer = await super().post_msgpack(path, body)  # as the cycle sends it: in parts
        self.marks["server_apply"] = time.perf_counter() - t1
        self.marks["server_cpu_apply"] = cpu_seconds(self.server_pid) - cpu
        self.marks["encode_pack"] = t1 - t0
        return answer


# The best simple alternative to DLM's cycle: the same policy as SQL over the catalogue, one
# transaction, what an engineer would write as a cron job without DLM. Every replica is judged
# by the 12 rules (first match wins, as in POLICY), expired items lose every settled payload,
# `delete` rules apply everywhere, and each storage over the high watermark takes `dismiss`
# candidates, least popular first, until under the low one; then the deletions are queued
# (replica state 'deleting') and the expirations recorded. The safety net is simpler than
# DLM's: an item that is not expired keeps at least one complete copy (its deletions past
# copies - 1 are dropped), the phase check is left out. Popularity decays as in DLM
# (``detox.planner.decayed_popularity``, half-life 7 days).
BASELINE_SQL = ("""
CREATE TEMPORARY TABLE judged ON COMMIT DROP AS
SELECT r.uid, r.oid, r.storage_id, coalesce(r.size, d.size, 0) AS size,
       coalesce(c.copies, 0) AS copies, d.item_state IN ('EXPIRED', 'DELETED') AS expired,
       pop.popularity,
       CASE
         WHEN d.item_state IN ('EXPIRED', 'DELETED') THEN
           CASE WHEN r.state IN ('complete', 'corrupt', 'missing') THEN 'delete' ELSE 'keep' END
         WHEN d."group" IS NULL OR d."group" NOT IN ('ska', 'cms', 'astro') THEN 'outside'
         WHEN r.state <> 'complete' THEN 'ignore'                                -- in flight
         WHEN c.copies = 1 THEN 'protect'                                        -- last copy
         WHEN $1 - r.created < 7 * 86400 THEN 'protect'                          -- fresh
         WHEN d.metadata -> 'pinned' = 'true'::jsonb THEN 'protect'              -- pinned
         WHEN d.expire_at < $1 THEN 'delete'                                     -- expired
         WHEN r.expire_at < $1 THEN 'delete'                                     -- temporary
         WHEN d.metadata -> 'kind' = '"raw"'::jsonb AND s.phase = 'SOLID' THEN 'protect'
         WHEN pop.popularity > 10 THEN 'protect'                                 -- popular
         WHEN d.item_state = 'CORRUPTED' THEN 'dismiss'                          -- corrupted
         WHEN d.last_access > $1 - 30 * 86400 THEN 'protect'                     -- recently read
         WHEN d.size > 100e9 AND d.access_count < 3 THEN 'dismiss'               -- big and cold
         WHEN d.item_name LIKE 'tmp-%' OR d.item_name ~ '^test_[0-9]+$' THEN 'dismiss'
         ELSE 'dismiss'                                                          -- default
       END AS action
FROM replica r
JOIN data_item d ON d.oid = r.oid
JOIN storage s ON s.id = r.storage_id
LEFT JOIN (SELECT oid, count(*) AS copies FROM replica WHERE state = 'complete'
           GROUP BY oid) c ON c.oid = r.oid
CROSS JOIN LATERAL (SELECT CASE WHEN d.access_count > 0 AND d.last_access IS NOT NULL
                               THEN d.access_count * power(0.5, greatest($1 - d.last_access, 0)
                                                                / (7 * 86400))
                               ELSE 0 END AS popularity) pop
WHERE r.state NOT IN ('deleting', 'deleted')
""", """
CREATE TEMPORARY TABLE planned ON COMMIT DROP AS
WITH usage AS (
    SELECT s.id, s.capacity, coalesce(sum(j.size), 0) AS used,
           coalesce(sum(j.size) FILTER (WHERE j.action = 'delete'), 0) AS deleted
    FROM storage s LEFT JOIN judged j ON j.storage_id = s.id
    GROUP BY s.id, s.capacity),
wanted AS (
    SELECT uid, oid, copies, expired FROM judged WHERE action = 'delete'
    UNION ALL
    SELECT uid, oid, copies, expired FROM (
        SELECT j.uid, j.oid, j.copies, j.expired, u.used - u.deleted - 0.85 * u.capacity AS excess,
               sum(j.size) OVER (PARTITION BY j.storage_id ORDER BY j.popularity, j.uid
                                 ROWS UNBOUNDED PRECEDING) - j.size AS before
        FROM judged j JOIN usage u ON u.id = j.storage_id
        WHERE j.action = 'dismiss' AND u.used > 0.90 * u.capacity) c
    WHERE before <= excess AND excess >= 0),
ranked AS (
    SELECT uid, oid, copies, expired,
           row_number() OVER (PARTITION BY oid ORDER BY uid) AS nth FROM wanted)
SELECT uid FROM ranked WHERE expired OR nth < copies
""", """
UPDATE replica SET state = 'deleting' FROM planned WHERE replica.uid = planned.uid
""")
EXPIRE_SQL = ("UPDATE data_item SET item_state = 'EXPIRED' "
              "WHERE item_state = 'READY' AND expire_at <= $1")


async def baseline(url: str, now: float) -> tuple[float, dict[str, int]]:
    """The SQL cycle on its own copy of the database, committed; its time and counts."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        t0 = time.perf_counter()
        async with conn.transaction():
            await conn.execute("SET LOCAL work_mem = '256MB'")
            expired = int((await conn.execute(EXPIRE_SQL, now)).split()[-1])
            judge, plan, apply = BASELINE_SQL
            await conn.execute(judge, now)
            await conn.execute(plan)
            deleted = int((await conn.execute(apply)).split()[-1])
        return time.perf_counter() - t0, {"deletions": deleted, "expirations": expired}
    finally:
        await conn.close()


def gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


async def run(args: argparse.Namespace) -> int:
    n_items = args.replicas // 2
    spec = generate.Spec(items=n_items, replicas=2, storages=args.storages, seed=args.seed)
    name = f"dlm_bench_detox_{os.getpid()}"
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    created_db = False
    kept = None  # with --keep: the generated inventory, left as generated
    workdir = Path(tempfile.mkdtemp(prefix="dlm-bench-detox-"))
    try:
        if args.db:  # a fresh copy: the cycle changes the inventory it runs on
            await generate.create_database(ADMIN, name, template=args.db)
            created_db = True
        else:
            print(f"generating {args.replicas:,} replicas ({n_items:,} items) on "
                  f"{args.storages} storages into {name} ...", file=sys.stderr)
            await generate.create_database(ADMIN, name)
            created_db = True
            stats = await generate.write_postgres(url, spec)
            print(f"  written in {stats['seconds']:.1f} s", file=sys.stderr)
            if args.keep:  # the cycle runs on a copy: what is kept stays as generated
                kept, name = name, f"{name}_run"
                url = ADMIN.rsplit("/", 1)[0] + "/" + name
                await generate.create_database(ADMIN, name, template=kept)
        occupancy = await set_capacities(url, args.over, args.seed)
        base_url = await generate.create_database(ADMIN, f"{name}_sql", template=name)
        policy = load_policy_text(POLICY, "bench-detox.policy")
        # A 10M-replica plan is ~176 MB: within the server's default plan limit (1 GiB,
        # `max_plan_body`), above its general request limit (64 MiB).
        extra = steady_config(workdir) if args.cycles > 2 else []
        async with dlm_server(url, workdir, *extra, timeout=900) as server:
            health = server.health
            print(f"server ready in {server.ready_seconds:.1f} s ({health.get('items')} "
                  f"items, {health.get('replicas')} replicas)", file=sys.stderr)
            async with TimedClient(server.url, token="", timeout=3600) as client:
                client.marks = {}
                client.server_pid = server.proc.pid
                await generate.checkpoint(ADMIN)
                await asyncio.sleep(1.0)
                load = os.getloadavg()
                t0 = time.perf_counter()
                result = await run_cycle(client, policy, POLICY, now=NOW)
                total = time.perf_counter() - t0
                peak_after = status_kb("VmHWM")
                marks = dict(client.marks)  # the second cycle's POST notes its own
                summary = result.plan.summary()
                n = len(result.plan.decisions)
                secs, applied = result.seconds, result.applied["summary"]
                second = None
                cycles = [{"total": total, **secs, "cpu_apply": marks["server_cpu_apply"],
                           "work": applied["applied"]["deletions"],
                           "rss": rss_bytes(server.proc.pid)}]
                if args.cycles == 2:  # `dlm detox --every`: the kept snapshot caught up by the feed
                    t1 = time.perf_counter()
                    again = await run_cycle(client, policy, POLICY, now=NOW,
                                            snapshot=result.snapshot)
                    second = {**again.seconds, "total": time.perf_counter() - t1,
                              "deletions": len(again.plan.deletions)}
                    del again
                kept_snapshot = result.snapshot
                for cycle in range(1, args.cycles if args.cycles > 2 else 0):
                    # steady state: what the last cycle queued is cancelled (its replicas are
                    # complete again, so this cycle plans the same deletions), then a cycle
                    cancelled = await cancel_queued(client)
                    await asyncio.sleep(STEADY_RETENTION + 2.0)  # the sweep drops them
                    cycles[-1]["cancelled"] = cancelled
                    t1 = time.perf_counter()
                    again = await run_cycle(client, policy, POLICY, now=NOW,
                                            snapshot=kept_snapshot)
                    kept_snapshot = again.snapshot
                    c = {"total": time.perf_counter() - t1, **again.seconds,
                         "cpu_apply": client.marks["server_cpu_apply"],
                         "work": again.applied["summary"]["applied"]["deletions"],
                         "rss": rss_bytes(server.proc.pid)}
                    cycles.append(c)
                    print(f"cycle {cycle + 1}: {c['total']:.2f} s (snapshot {c['snapshot']:.2f}, "
                          f"plan {c['plan']:.2f}, apply {c['apply']:.2f}, server CPU apply "
                          f"{c['cpu_apply']:.1f}), {c['work']:,} deletions, server RSS "
                          f"{c['rss'] / 2**20:,.0f} MiB", file=sys.stderr, flush=True)
                    del again
                    gc.collect()
                del kept_snapshot
                del result  # its decisions hold the snapshot's replica records: free them first
                gc.collect()
        base_s, base_counts = await baseline(base_url, NOW)  # on the copy made before
    finally:
        if created_db:
            await generate.drop_database(ADMIN, name)
            await generate.drop_database(ADMIN, f"{name}_sql")
        if kept:
            print(f"kept database {kept} (reuse: --db {kept})", file=sys.stderr)

    snapshot_size = marks["rss_after_snapshot"] - marks["rss_before_snapshot"]
    extra = peak_after - marks["rss_after_snapshot"]
    hot = sum(1 for o in occupancy.values() if o > HIGH)
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load average at start {load[0]:.2f}")
    print(f"replicas {args.replicas:,} ({n_items:,} items) on {args.storages} storages, "
          f"{hot} over the {HIGH:.0%} watermark; 12-rule policy; decisions {n:,}")
    rows = [
        (f"snapshot ({marks.get('snapshot_kind', 'records')}: server copy + encode + "
         "stream + client decode)", f"{secs['snapshot']:.2f} s"),
        ("  CPU: server / Detox process", f"{marks['server_cpu_snapshot']:.1f} / "
         f"{marks['client_cpu_snapshot']:.1f} s"),
        ("plan (detox.columns.plan_columns)" if "snapshot_kind" in marks
         else "plan (detox.planner.plan_cycle)", f"{secs['plan']:.2f} s"),
        ("apply (encode plan + POST, server re-judges and commits)", f"{secs['apply']:.2f} s"),
        ("  of which the server's answer to the POST", f"{marks['server_apply']:.2f} s"),
        ("  server CPU during the POST", f"{marks['server_cpu_apply']:.1f} s"),
        ("end to end (run_cycle)", f"{total:.2f} s"),
        ("replicas/s end to end", f"{args.replicas / total:,.0f}"),
        ("baseline: the same cycle as SQL in PostgreSQL (one transaction)", f"{base_s:.2f} s"),
        ("SQL baseline / end to end (DLM's speed-up)", f"{base_s / total:.2f}x"),
        ("snapshot's own size (RSS after - before)", gib(snapshot_size)),
        ("peak RSS while decoding the snapshot", gib(marks["peak_during_snapshot"])),
        ("extra peak RSS after the snapshot (plan + apply)", gib(extra)
         + ("" if marks["peak_reset"] else " (peak not reset: upper bound)")),
        ("plan body / decisions blob", f"{marks['body_bytes'] / 1e6:.1f} MB / "
         f"{marks['decisions_bytes'] / 1e6:.1f} MB"),
    ]
    if second is not None:
        rows += [
            ("second cycle (dlm detox --every)", f"{second['total']:.2f} s"),
            ("  snapshot (columns: a new one; records: the kept one caught up)",
             f"{second['snapshot']:.2f} s"),
            ("  plan / apply", f"{second['plan']:.2f} / {second['apply']:.2f} s"),
            ("  deletions planned", f"{second['deletions']:,}"),
        ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value:>16}")
    print(f"plan: {summary['deletions']:,} deletions, {summary['expirations']:,} expirations, "
          f"outcomes {summary['outcomes']}; unsatisfied storages {len(summary['unsatisfied'])}; "
          f"applied {applied['applied']['deletions']:,} deletions, dropped {applied['dropped']}")
    print(f"SQL baseline (the best simple alternative: the policy's rules as SQL over the "
          f"catalogue): {base_counts['deletions']:,} deletions, "
          f"{base_counts['expirations']:,} expirations")
    ok = total < TARGET_SECONDS and extra < TARGET_EXTRA
    print(f"targets (< {TARGET_SECONDS:.0f} s, < 1 GiB extra):", "met" if ok else "NOT met")
    if len(cycles) > 1:
        print_steady(cycles, "deletions queued")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=10_000_000)
    p.add_argument("--storages", type=int, default=100)
    p.add_argument("--cycles", type=int, default=2,
                   help="2: also time a second cycle on the first one's snapshot, caught up "
                        "through the change feed (what `dlm detox --every` does); 3 or more: "
                        "steady state, every cycle with work (see the module's docstring)")
    p.add_argument("--over", type=float, default=0.2,
                   help="share of storages over the high watermark")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep", action="store_true", help="keep the database")
    p.add_argument("--db", help="run on a copy of this database (made by an earlier --keep run, "
                   "never changed itself)")
    args = p.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

