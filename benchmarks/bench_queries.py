"""Listing queries a page at a time: DLM's indexes against SQL with indexes made for each query.

    nice -n 10 .venv/bin/python benchmarks/bench_queries.py --db dlm_bench_queries_1m

Issue 17's targets: any page of ``GET /v1/items`` (limit 1,000) under 50 ms, first page or last,
and exact-name lookups at p99 under 10 ms while listings run beside them.

Each listing (by storage, prefix, state, current phase, parent, a common and a rare metadata
value) is paged through to its end with the cursors the server gives, and the first, the last
and the slowest page are timed. Meanwhile a second process looks names up one after another
(``GET /v1/items?name=N``, ``--lookup-rate`` per second) and records each latency.

The baseline is the best simple alternative: the same listing in PostgreSQL, keyset-paged
(``WHERE key > last ORDER BY key LIMIT 1000``) with an index made for each query (created on the
benchmark database here; each plan is checked with EXPLAIN and the run stops if one scans a
whole table), each page's items with their replicas built as JSON by the database, timed in
this process through asyncpg (no HTTP in between: in the baseline's favour). The current phase
is not a column in the database: its query computes it from the replicas, as DLM does.

The database is made by ``benchmarks/generate.py`` (``--db NAME`` reuses one; else one is made
and dropped after). The benchmark adds a container with ``--members`` members to it once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import generate  # noqa: E402
from serving import dlm_server  # noqa: E402

from inventory import model  # noqa: E402

PAGE = 1000
CONTAINER = "bench/queries/container"

# (label, DLM query parameters, SQL baseline key); the SQL side is in BASELINE below.
LISTINGS = [
    ("storage", {"storage": "site01-disk"}, "storage"),
    ("prefix", {"prefix": "store/data/Run2023B/"}, "prefix"),
    ("state", {"state": "READY"}, "state"),
    ("phase", {"phase": "SOLID"}, "phase"),
    ("parent", {"parent": None}, "parent"),  # the container's oid, looked up
    ("metadata", {"meta.quality": "good"}, "metadata"),
    ("metadata, rare", {"meta.run": "123457"}, "metadata_rare"),
]

# Item JSON with its replicas, built by PostgreSQL (what DLM sends for each item).
_ITEM_JSON = """json_build_object(
    'oid', d.oid, 'item_name', d.item_name, 'item_version', d.item_version,
    'item_type', d.item_type, 'parent_oid', d.parent_oid, 'size', d.size,
    'checksum', d.checksum, 'checksum_method', d.checksum_method, 'metadata', d.metadata,
    'target_phase', d.target_phase, 'state', d.item_state, 'created', d.created,
    'expire_at', d.expire_at, 'access_count', d.access_count, 'last_access', d.last_access,
    'owner', d.owner, 'group', d."group",
    'replicas', coalesce((SELECT json_agg(json_build_object(
        'uid', r.uid, 'storage', s.name, 'uri', r.uri, 'state', r.state, 'size', r.size,
        'checksum', r.checksum, 'created', r.created))
        FROM replica r JOIN storage s ON s.id = r.storage_id WHERE r.oid = d.oid), '[]'))"""
_LATEST = """NOT EXISTS (SELECT 1 FROM data_item n WHERE n.item_name = d.item_name
                            AND n.item_version > d.item_version)"""
_WEIGHT = """coalesce((SELECT sum(CASE s.phase WHEN 'GAS' THEN 1 WHEN 'LIQUID' THEN 2
                                        WHEN 'SOLID' THEN 4 ELSE 0 END)
                    FROM replica r JOIN storage s ON s.id = r.storage_id
                    WHERE r.oid = d.oid AND r.state = 'complete'), 0)"""


def _page_sql(source: str, where: str, key: str) -> str:
    return (f"SELECT {key} AS key, {_ITEM_JSON} AS item FROM {source} "
            f"WHERE {where} AND d.item_state <> 'DELETED' AND {_LATEST} "
            f"ORDER BY {key} LIMIT {PAGE}")


# key -> (SQL of a page: $1 the filter value, $2 the last key; the first key)
BASELINE = {
    "storage": (_page_sql("replica x JOIN data_item d ON d.oid = x.oid",
                          "x.storage_id = $1 AND x.oid > $2", "x.oid"), "uuid"),
    "prefix": (_page_sql("data_item d",
                         "d.item_name COLLATE \"C\" >= $1 AND d.item_name COLLATE \"C\" < $3 "
                         "AND d.item_name COLLATE \"C\" > $2", "d.item_name COLLATE \"C\""),
               "text"),
    "state": (_page_sql("data_item d", "d.item_state = $1 AND d.oid > $2", "d.oid"), "uuid"),
    # SOLID: complete copies whose storages' phase weights add up to 4 or more
    "phase": (_page_sql("data_item d", f"d.oid > $2 AND $1::text = 'SOLID' AND {_WEIGHT} >= 4",
                        "d.oid"), "uuid"),
    "parent": (_page_sql("data_item d", "d.parent_oid = $1::uuid AND d.oid > $2", "d.oid"),
               "uuid"),
    "metadata": (_page_sql("data_item d", "d.metadata @> $1::jsonb AND d.oid > $2", "d.oid"),
                 "uuid"),
    "metadata_rare": (_page_sql("data_item d", "d.metadata @> $1::jsonb AND d.oid > $2",
                                "d.oid"), "uuid"),
}
# the indexes each query needs (the schema has none of them but the name's)
BASELINE_INDEXES = [
    "CREATE INDEX IF NOT EXISTS bench_q_replica_storage ON replica (storage_id, oid)",
    "CREATE INDEX IF NOT EXISTS bench_q_replica_oid ON replica (oid)",
    "CREATE INDEX IF NOT EXISTS bench_q_name ON data_item (item_name COLLATE \"C\")",
    "CREATE INDEX IF NOT EXISTS bench_q_state ON data_item (item_state, oid)",
    "CREATE INDEX IF NOT EXISTS bench_q_parent ON data_item (parent_oid, oid)",
    "CREATE INDEX IF NOT EXISTS bench_q_metadata ON data_item USING gin (metadata jsonb_path_ops)",
]
_FIRST_KEY = {"uuid": "00000000-0000-0000-0000-000000000000", "text": ""}


# ------------------------------------------------------------------ set-up

async def prepare(db_url: str, members: int) -> str:
    """The container (once) and the baseline's indexes; the container's oid."""
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        oid = await conn.fetchval("SELECT oid::text FROM data_item WHERE item_name = $1",
                                  CONTAINER)
        if oid is None:
            print(f"adding a container with {members:,} members ...", flush=True)
            rng = random.Random(7)

            def new_oid() -> str:  # as generate.py makes them: v4, storage bits zero
                return model.format_uuid((rng.getrandbits(128) & generate._V4_MASK)
                                         | generate._V4_BITS)
            oid = new_oid()
            rows = [(oid, CONTAINER, None)]
            rows += [(new_oid(), f"{CONTAINER}/member-{i:07d}", oid) for i in range(members)]
            async with conn.transaction():
                for i, (m_oid, name, parent) in enumerate(rows):
                    await conn.execute(
                        "INSERT INTO data_item (oid, item_name, item_version, item_type, "
                        "item_state, target_phase, size, created, parent_oid) VALUES "
                        "($1, $2, 1, $3, 'READY', 'SOLID', 1, $4, $5)",
                        m_oid, name, "container" if i == 0 else "file",
                        generate.EPOCH + i, parent)
        for sql in BASELINE_INDEXES:
            await conn.execute(sql)
        await conn.execute("ANALYZE data_item")
        await conn.execute("ANALYZE replica")
    finally:
        await conn.close()
    return oid


def _sql_args(key: str, params: dict[str, str]) -> list:
    value = next(iter(params.values()))
    if key == "storage":
        return [int(value.split("-")[0].removeprefix("site")) * 2 - 1]  # siteNN-disk's id
    if key == "prefix":
        return [value, value[:-1] + chr(ord(value[-1]) + 1)]
    if key in ("metadata", "metadata_rare"):
        k = next(iter(params)).removeprefix("meta.")
        return [json.dumps({k: int(value) if value.isdigit() else value})]
    return [value]


async def explain(conn, key: str, params: dict[str, str]) -> str:
    """The plan's scans (stops the run if the query reads a whole table)."""
    sql, kind = BASELINE[key]
    args = _sql_args(key, params)
    args.insert(1, _FIRST_KEY[kind])
    plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
    scans: list[str] = []

    def walk(node: dict) -> None:
        if "Scan" in node["Node Type"]:
            what = node.get("Index Name", node.get("Relation Name"))
            scans.append(f"{node['Node Type']}({what})")
        for child in node.get("Plans", []):
            walk(child)
    walk(plan[0]["Plan"])
    seq = [s for s in scans if s.startswith("Seq Scan") and "storage" not in s]
    if seq:
        raise SystemExit(f"baseline {key}: the plan scans a whole table: {scans}")
    return ", ".join(dict.fromkeys(scans))


# ------------------------------------------------------------------ timing

async def page_through(fetch, max_pages: int) -> dict:
    """Pages until the end (or ``max_pages``): first, last and slowest page in ms."""
    times, count, cursor = [], 0, None
    while True:
        started = time.perf_counter()
        n, cursor = await fetch(cursor)
        times.append((time.perf_counter() - started) * 1000)
        count += n
        if cursor is None or len(times) >= max_pages:
            break
    return {"pages": len(times), "items": count, "first_ms": times[0], "last_ms": times[-1],
            "max_ms": max(times), "total_s": sum(times) / 1000, "complete": cursor is None}


async def dlm_listing(session, base: str, params: dict[str, str], max_pages: int) -> dict:
    async def fetch(cursor):
        query = {**params, "limit": str(PAGE)}
        if cursor:
            query["cursor"] = cursor
        async with session.get(base + "/v1/items", params=query) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise SystemExit(f"{params}: {resp.status} {body[:300]!r}")
        page = json.loads(body)
        return len(page["items"]), page["cursor"]
    return await page_through(fetch, max_pages)


async def sql_listing(pool, key: str, params: dict[str, str], max_pages: int) -> dict:
    sql, kind = BASELINE[key]
    args = _sql_args(key, params)

    async def fetch(cursor):
        last = _FIRST_KEY[kind] if cursor is None else cursor
        async with pool.acquire() as conn:
            rows = await conn.fetch(sql, args[0], last, *args[1:])
        return len(rows), (str(rows[-1]["key"]) if len(rows) == PAGE else None)
    return await page_through(fetch, max_pages)


# ------------------------------------------------------------------ the lookup process

async def lookups(base: str, names_file: str, out_file: str, rate: float) -> None:
    """Exact-name lookups one after another at ``rate`` per second until SIGTERM; each
    latency in ms to ``out_file``."""
    import aiohttp

    names = Path(names_file).read_text().split("\n")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    latencies: list[float] = []
    errors = 0
    rng = random.Random(1)
    async with aiohttp.ClientSession() as session:
        next_at = time.perf_counter()
        while not stop.is_set():
            started = time.perf_counter()
            async with session.get(base + "/v1/items",
                                   params={"name": rng.choice(names)}) as resp:
                await resp.read()
                errors += resp.status != 200
            latencies.append((time.perf_counter() - started) * 1000)
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    Path(out_file).write_text(json.dumps({"latencies": latencies, "errors": errors}))


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


# ------------------------------------------------------------------ the run

async def bench(args: argparse.Namespace) -> int:
    import aiohttp
    import asyncpg

    workdir = Path(tempfile.mkdtemp(prefix="dlm-bench-queries-"))
    name = args.db or f"dlm_bench_queries_{os.getpid()}"
    db_url = args.admin_url.rsplit("/", 1)[0] + "/" + name
    made = args.db is None
    if made:
        print(f"generating {args.items:,} items ...", flush=True)
        await generate.create_database(args.admin_url, name)
        await generate.write_postgres(db_url, generate.Spec(items=args.items, replicas=2))
    try:
        container = await prepare(db_url, args.members)
        conn = await asyncpg.connect(db_url)
        names = [r[0] for r in await conn.fetch(
            "SELECT item_name FROM data_item ORDER BY random() LIMIT 20000")]
        items = await conn.fetchval("SELECT count(*) FROM data_item")
        replicas = await conn.fetchval("SELECT count(*) FROM replica")
        listings = [(label, {k: (container if v is None else v) for k, v in params.items()}, key)
                    for label, params, key in LISTINGS]
        plans = {key: await explain(conn, key, params) for _, params, key in listings}
        await conn.close()
        (workdir / "names").write_text("\n".join(names))
        results: dict[str, dict] = {}
        async with dlm_server(db_url, workdir) as server:
            print(f"DLM ready in {server.ready_seconds:.0f} s", flush=True)
            idle = await run_lookups(args, server.url, workdir, "idle", None)
            dlm: dict[str, dict] = {}

            async def listings_run() -> None:
                async with aiohttp.ClientSession() as session:
                    for label, params, _key in listings:
                        print(f"DLM: {label} ...", flush=True)
                        dlm[label] = await dlm_listing(session, server.url, params,
                                                       args.max_pages)
            beside = await run_lookups(args, server.url, workdir, "beside", listings_run)
        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
        sql: dict[str, dict] = {}
        for label, params, key in listings:
            print(f"SQL: {label} ...", flush=True)
            sql[label] = await sql_listing(pool, key, params, args.max_pages)
        await pool.close()
        results = {"dlm": dlm, "sql": sql, "idle": idle, "beside": beside, "plans": plans}
    finally:
        if made and not args.keep:
            await generate.drop_database(args.admin_url, name)
    report(results, items, replicas, listings)
    return 0


async def run_lookups(args: argparse.Namespace, base: str, workdir: Path, tag: str,
                      during) -> dict:
    """The lookup process for ``during()`` (or ``args.idle_seconds`` when None)."""
    out = workdir / f"lookups-{tag}.json"
    proc = subprocess.Popen([sys.executable, __file__, "--lookups", base, str(workdir / "names"),
                             str(out), str(args.lookup_rate)])
    try:
        await asyncio.sleep(1)
        if during is None:
            await asyncio.sleep(args.idle_seconds)
        else:
            await during()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    found = json.loads(out.read_text())
    lat = found["latencies"]
    return {"count": len(lat), "errors": found["errors"], "p50_ms": _pct(lat, 0.5),
            "p99_ms": _pct(lat, 0.99), "max_ms": max(lat, default=float("nan"))}


def report(results: dict, items: int, replicas: int, listings: list) -> None:
    load = os.getloadavg()
    print(f"\nlisting pages of {PAGE} items, {items:,} items and {replicas:,} replicas; "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    print("| listing | items | pages | DLM first ms | DLM last ms | DLM max ms | SQL first ms "
          "| SQL last ms | SQL max ms | SQL/DLM (last page) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for label, _params, _key in listings:
        d, s = results["dlm"][label], results["sql"][label]
        worst = max(worst, d["max_ms"])
        print(f"| {label} | {d['items']:,} | {d['pages']}{'' if d['complete'] else '+'} | "
              f"{d['first_ms']:.1f} | {d['last_ms']:.1f} | {d['max_ms']:.1f} | "
              f"{s['first_ms']:.1f} | {s['last_ms']:.1f} | {s['max_ms']:.1f} | "
              f"{s['last_ms'] / d['last_ms']:.1f}x |")
    idle, beside = results["idle"], results["beside"]
    print(f"\nexact lookups: idle p50 {idle['p50_ms']:.2f} ms p99 {idle['p99_ms']:.2f} ms "
          f"({idle['count']}); beside the listings p50 {beside['p50_ms']:.2f} ms p99 "
          f"{beside['p99_ms']:.2f} ms max {beside['max_ms']:.1f} ms ({beside['count']}, "
          f"{beside['errors']} errors)")
    print(f"targets: every DLM page < 50 ms: {'met' if worst < 50 else 'MISSED'} (slowest "
          f"{worst:.1f} ms); lookup p99 < 10 ms beside listings: "
          f"{'met' if beside['p99_ms'] < 10 else 'MISSED'}")
    print("\nbaseline plans (EXPLAIN):")
    for key, scans in results["plans"].items():
        print(f"- {key}: {scans}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--lookups"]:
        asyncio.run(lookups(argv[1], argv[2], argv[3], float(argv[4])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=20_000, help="the container's members")
    parser.add_argument("--max-pages", type=int, default=100_000,
                        help="stop a listing after this many pages (its last page then is the "
                             "last one fetched)")
    parser.add_argument("--lookup-rate", type=float, default=100.0, help="lookups per second")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--db", help="reuse this database made by generate.py")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
