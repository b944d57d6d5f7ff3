"""Item lookups by name through REST: the in-memory inventory against the best simple
alternative, one indexed SQL query per request, with the same number of processes on each side.

    .venv/bin/python benchmarks/bench_lookup.py --items 1000000 --rounds 2   # --workers 1,2

Both servers run on the same PostgreSQL database (made by ``benchmarks/generate.py``) and answer
``GET /v1/items?name=NAME`` with the same JSON (the item and its replicas, every field DLM gives):

- ``dlm serve --db ... --workers N``: the inventory loaded into memory, the answer built from it
  (N processes: the primary and N-1 read workers on the same port);
- the baseline, N processes of a minimal aiohttp server sharing the port (``SO_REUSEPORT``), each
  running one SQL query per request through its own asyncpg pool (``--pool`` connections): what
  a REST layer over the catalogue does. Its query reads the latest version by the unique
  ``(item_name, item_version)`` index and the item's replicas by an index on ``replica(oid)``.

DLM itself never reads replicas by item in SQL (it loads the whole table and writes rows by their
``uid`` primary key), so its schema has no index led by ``oid`` since version 6. The baseline
needs one: the benchmark creates ``bench_lookup_replica_oid`` in the benchmark's database
(dropped again at the end when ``--db`` names a database it did not make). Before any load the
script checks the baseline's plan with EXPLAIN, both the plan for one name and the generic plan
a prepared statement falls back to, and stops if either scans a table; and it checks that both
servers give the same answers for a sample of names.

The same client drives each server in turn: ``wrk`` (C, one thread, ``--concurrency`` requests
in flight, names drawn at random; apt-get install wrk) when it is installed, else a Python
client. It prints requests/s and latency percentiles per server and the ratio at equal
processes. Targets (issue 17): >= 3x the baseline's throughput at equal processes, p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import generate  # noqa: E402
from serving import dlm_server, free_port, start, stop, wait_healthy  # noqa: E402

# The latest version of a name (a DELETED latest version hides the name, as in DLM), its
# replicas and their storages, in one round trip: one row per replica (one with NULLs if none).
BASELINE_SQL = """
SELECT d.oid, d.item_name, d.item_version, d.item_type, d.item_state, d.target_phase, d.size,
       d.checksum, d.checksum_method, d.metadata::text, d.parent_oid, d.created, d.expire_at,
       d.access_count, d.last_access, d.owner, d."group", d.registered_by,
       r.storage_id, r.uri, r.state, r.size, r.checksum, r.created, r.expire_at, r.last_verified,
       s.name, s.kind, s.root, s.phase
FROM (SELECT * FROM data_item WHERE item_name = $1 ORDER BY item_version DESC LIMIT 1) d
LEFT JOIN replica r ON r.oid = d.oid
LEFT JOIN storage s ON s.id = r.storage_id
"""
# A container's size: its members' sizes, recursively (through the data_item_parent index).
CONTAINER_SIZE_SQL = """
WITH RECURSIVE member AS (
    SELECT oid, item_type, size FROM data_item WHERE parent_oid = $1
    UNION ALL
    SELECT d.oid, d.item_type, d.size FROM data_item d JOIN member m ON d.parent_oid = m.oid)
SELECT coalesce(sum(greatest(size, 0)) FILTER (WHERE item_type = 'file'), 0) FROM member
"""
INDEX_NAME = "bench_lookup_replica_oid"
INDEX_SQL = f"CREATE INDEX IF NOT EXISTS {INDEX_NAME} ON replica (oid)"
INDEXED_TABLES = ("data_item", "replica")  # read any other way, the benchmark stops
INDEXED_SCANS = ("Index Scan", "Index Only Scan", "Bitmap Heap Scan")


# ------------------------------------------------------------------ the baseline server

def baseline_answer(rows: list[Any], container_size: int | None = None) -> dict[str, Any]:
    """The JSON DLM gives for a lookup by name, built from ``BASELINE_SQL``'s rows with the
    same helpers (times, replica uris, phases)."""
    from inventory import model
    from inventory.storage import paths

    if not rows or rows[0][4] == "DELETED":
        return {"items": [], "cursor": None}
    d = rows[0]
    fmt_time = model.format_time
    oid_text = str(d[0])
    replicas, weight = [], 0
    for r in rows:
        if r[18] is None:  # LEFT JOIN: an item without replicas
            continue
        located = _Located(r[27], r[28])
        if r[20] == "complete":
            weight += model.PHASE_WEIGHT[model.PHASE[r[29]]]
        replicas.append({
            "uid": f"{oid_text[:-4]}{r[18]:04x}", "oid": oid_text, "storage": r[26],
            "storage_id": r[18], "uri": paths.replica_uri(located, d[1], d[2], r[19]),
            "state": r[20], "size": r[21], "checksum": r[22], "created": fmt_time(r[23]),
            "expire_at": fmt_time(r[24]), "last_verified": fmt_time(r[25])})
    size = container_size if d[3] == "container" else d[6]
    item = {
        "oid": oid_text, "item_name": d[1], "item_version": d[2], "item_type": d[3],
        "parent_oid": None if d[10] is None else str(d[10]), "size": size, "checksum": d[7],
        "checksum_method": d[8], "metadata": json.loads(d[9]) if d[9] else {},
        "target_phase": d[5], "current_phase": model.PHASES[model.phase_of_weights(weight)],
        "state": d[4], "created": fmt_time(d[11]), "expire_at": fmt_time(d[12]),
        "access_count": d[13], "last_access": fmt_time(d[14]), "owner": d[15], "group": d[16],
        "registered_by": d[17], "replicas": replicas}
    return {"items": [item], "cursor": None}


class _Located:
    __slots__ = ("kind", "root")

    def __init__(self, kind: str, root: str) -> None:
        self.kind, self.root = kind, root


def baseline_server(db_url: str, port: int, pool_size: int) -> None:
    """One SQL query per request, answered as JSON (run as a child process; several of them
    share the port)."""
    import asyncpg
    import msgspec
    import uvloop
    from aiohttp import web

    encode = msgspec.json.Encoder().encode

    async def make_app() -> web.Application:
        pool = await asyncpg.create_pool(db_url, min_size=pool_size, max_size=pool_size)
        await pool.execute("SELECT 1")

        async def items(request: web.Request) -> web.Response:
            name = request.query.get("name")
            if not name:
                return web.json_response({"error": "name is required"}, status=400)
            async with pool.acquire() as conn:
                rows = await conn.fetch(BASELINE_SQL, name)
                size = None
                if rows and rows[0][3] == "container":
                    size = await conn.fetchval(CONTAINER_SIZE_SQL, rows[0][0])
            return web.Response(body=encode(baseline_answer(rows, size)),
                                content_type="application/json")

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_get("/v1/items", items)
        app.router.add_get("/v1/health", health)
        return app

    uvloop.install()
    web.run_app(make_app(), host="127.0.0.1", port=port, print=None, access_log=None,
                reuse_port=True)


# ------------------------------------------------------------------ the baseline's plan

async def prepare_baseline(conn: Any, sample_name: str) -> dict[str, Any]:
    """Create the baseline's index, refresh the statistics, and check with EXPLAIN that the
    lookup reads ``data_item`` and ``replica`` through indexes, for one name and in the generic
    plan a prepared statement may switch to; SystemExit with the plan if not."""
    created = not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", INDEX_NAME)
    await conn.execute(INDEX_SQL)
    await conn.execute("ANALYZE data_item, replica, storage")
    literal = await conn.fetchval("SELECT quote_literal($1)", sample_name)  # EXECUTE binds none
    plans = {}
    for mode in ("force_custom_plan", "force_generic_plan"):
        await conn.execute(f"SET plan_cache_mode = {mode}")
        await conn.execute(f"PREPARE bench_lookup AS {BASELINE_SQL}")
        text = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE bench_lookup({literal})")
        await conn.execute("DEALLOCATE bench_lookup")
        plan = json.loads(text)[0]["Plan"] if isinstance(text, str) else text[0]["Plan"]
        scans = list(_scans(plan))
        bad = [s for s in scans if s[1] in INDEXED_TABLES and s[0] not in INDEXED_SCANS]
        missing = set(INDEXED_TABLES) - {s[1] for s in scans}
        if bad or missing:
            shown = "\n".join(f"  {kind} on {table} {index or ''}" for kind, table, index in scans)
            raise SystemExit(f"the baseline's query is not indexed ({mode}): a scan of "
                             f"{', '.join(sorted({b[1] for b in bad} | missing))}\n{shown}")
        plans[mode] = [f"{kind} on {table}" + (f" using {index}" if index else "")
                       for kind, table, index in scans]
    await conn.execute("RESET plan_cache_mode")
    times = []
    for _ in range(5):  # the first one reads the pages from disk: the best of five
        analyzed = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + BASELINE_SQL.replace(
            "$1", "$1::text"), sample_name)
        analyzed = json.loads(analyzed) if isinstance(analyzed, str) else analyzed
        times.append(analyzed[0]["Execution Time"])
    return {"created_index": created, "plans": plans, "execution_ms": min(times)}


def _scans(plan: dict[str, Any]):
    """(node type, table, index) of every node of a plan that reads a table."""
    if "Relation Name" in plan:
        yield plan["Node Type"], plan["Relation Name"], plan.get("Index Name")
    for child in plan.get("Plans", ()):
        yield from _scans(child)


# ------------------------------------------------------------------ the load

async def drive(base: str, names: list[str], requests: int, concurrency: int,
                warmup: int) -> dict:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    errors = 0
    rng = random.Random(7)
    todo = [rng.choice(names) for _ in range(requests + warmup)]
    position = 0

    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal position, errors
            while position < len(todo):
                name = todo[position]
                position += 1
                started = time.perf_counter()
                async with session.get(base + "/v1/items", params={"name": name}) as resp:
                    body = await resp.read()
                    if resp.status != 200 or b'"items":[]' in body:
                        errors += 1
                if position > warmup:
                    latencies.append(time.perf_counter() - started)

        # warm-up pass (connections, caches), then the measured pass
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    measured = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(measured - 1, int(p * measured))] * 1000

    return {"requests": measured, "seconds": wall * measured / (measured + warmup),
            "rate": measured / (wall * measured / (measured + warmup)),
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "errors": errors}


WRK_SCRIPT = """
local names = {}
for line in io.lines(os.getenv("DLM_NAMES")) do names[#names + 1] = line end
math.randomseed(7)
request = function()
  return wrk.format("GET", "/v1/items?name=" .. names[math.random(#names)])
end
"""


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


async def drive_wrk(base: str, names: list[str], seconds: int, concurrency: int,
                    workdir: Path) -> dict:
    """The load from ``wrk`` (C, one thread): the client costs the servers little CPU, so
    the comparison is of the servers rather than of a Python client."""
    from urllib.parse import quote

    names_file = workdir / "names.txt"
    names_file.write_text("\n".join(quote(n, safe="/") for n in names) + "\n")
    script = workdir / "names.lua"
    script.write_text(WRK_SCRIPT)
    env = {**os.environ, "DLM_NAMES": str(names_file)}
    for duration in (2, seconds):  # a short warm-up, then the measured run
        proc = await asyncio.create_subprocess_exec(
            "wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", str(script),
            base + "/v1/items", env=env, stdout=asyncio.subprocess.PIPE)
        out = (await proc.communicate())[0].decode()
    result = {"errors": 0}
    for line in out.splitlines():
        words = line.split()
        if line.strip().startswith(("50%", "90%", "99%")):
            result[f"p{words[0].rstrip('%')}_ms"] = _ms(words[1])
        elif line.startswith("Requests/sec:"):
            result["rate"] = float(words[1])
        elif "requests in" in line:
            result["requests"] = int(words[0])
        elif line.strip().startswith("Non-2xx"):
            result["errors"] = int(words[-1])
    return result


async def answers(base: str, names: list[str]) -> dict[str, Any]:
    """Each name's answer, replicas in uid order (the servers may list them in any order)."""
    import aiohttp

    out = {}
    async with aiohttp.ClientSession() as session:
        for name in names:
            async with session.get(base + "/v1/items", params={"name": name}) as resp:
                body = await resp.json()
            for item in body.get("items", ()):
                item["replicas"].sort(key=lambda r: r["uid"])
            out[name] = body
    return out


# ------------------------------------------------------------------ the benchmark

async def bench(args: argparse.Namespace) -> int:
    import asyncpg

    workdir = Path(tempfile.mkdtemp(prefix="dlm-bench-lookup-"))
    name = args.db or f"dlm_bench_lookup_{os.getpid()}"
    db_url = args.admin_url.rsplit("/", 1)[0] + "/" + name
    made = args.db is None
    created_index = False
    if made:
        print(f"generating {args.items:,} items ...", flush=True)
        await generate.create_database(args.admin_url, name)
        await generate.write_postgres(db_url, generate.Spec(items=args.items, replicas=2))
    try:
        conn = await asyncpg.connect(db_url)
        try:
            names = [r[0] for r in await conn.fetch(
                "SELECT item_name FROM data_item ORDER BY random() LIMIT $1", args.names)]
            baseline = await prepare_baseline(conn, names[0])
            created_index = baseline["created_index"]
        finally:
            await conn.close()
        print(f"baseline index: replica (oid), {INDEX_NAME}, "
              f"{'created for this run' if created_index else 'already there'}; the query "
              f"takes {baseline['execution_ms']:.3f} ms in PostgreSQL (EXPLAIN ANALYZE)")
        for mode, scans in baseline["plans"].items():
            print(f"  {mode.removeprefix('force_').replace('_', ' ')}: {'; '.join(scans)}")
        results: dict[str, dict] = {}
        check = names[: args.check]
        seen: dict[str, dict] = {}
        for round_ in range(1, args.rounds + 1):  # contenders take turns; the best round counts
            for workers in args.workers:
                print(f"round {round_}: DLM with {workers} process(es) ...", flush=True)
                keep_best(results, f"dlm{workers}", await measure_dlm(
                    args, db_url, names, workers, workdir, check, seen))
                print(f"round {round_}: SQL per request with {workers} process(es) ...",
                      flush=True)
                keep_best(results, f"sql{workers}", await measure_sql(
                    args, db_url, names, workers, workdir, check, seen))
    finally:
        if made and not args.keep:
            await generate.drop_database(args.admin_url, name)
        elif made:
            print(f"kept database {name} (reuse: --db {name})")
        elif created_index:
            conn = await asyncpg.connect(db_url)
            await conn.execute(f"DROP INDEX IF EXISTS {INDEX_NAME}")
            await conn.close()
    report(results, args, baseline)
    return 0


def keep_best(results: dict[str, dict], key: str, result: dict) -> None:
    result["rounds"] = [*results.get(key, {}).get("rounds", []), result["rate"]]
    if key not in results or result["rate"] > results[key]["rate"]:
        results[key] = result
    else:
        results[key]["rounds"] = result["rounds"]


def compare(label: str, got: dict[str, Any], seen: dict[str, dict]) -> None:
    """Stop unless every server gives the answers the first one gave."""
    for name, answer in got.items():
        first = seen.setdefault(name, {"by": label, "answer": answer})
        if not answer.get("items"):
            raise SystemExit(f"{label} found no item named {name!r}")
        if answer != first["answer"]:
            raise SystemExit(f"{label} and {first['by']} answer {name!r} differently:\n"
                             f"{json.dumps(answer, sort_keys=True)}\n"
                             f"{json.dumps(first['answer'], sort_keys=True)}")


async def measure_dlm(args: argparse.Namespace, db_url: str, names: list[str], workers: int,
                      workdir: Path, check: list[str], seen: dict[str, dict]) -> dict:
    async with dlm_server(db_url, workdir, "--workers", str(workers)) as server:
        await wait_workers(server.url, workers - 1, server.proc)
        compare(f"DLM ({workers})", await answers(server.url, check), seen)
        return await run_load(args, server.url, names, workdir)


async def measure_sql(args: argparse.Namespace, db_url: str, names: list[str], workers: int,
                      workdir: Path, check: list[str], seen: dict[str, dict]) -> dict:
    port = free_port()
    procs = []
    try:
        for index in range(workers):  # each its own pool, all on one port (SO_REUSEPORT)
            log = workdir / f"baseline-{index}.log"
            procs.append(start([sys.executable, __file__, "--baseline-server", db_url,
                                str(port), str(args.pool)], log))
            await wait_healthy(f"http://127.0.0.1:{port}", procs[-1], log, 120)
        base = f"http://127.0.0.1:{port}"
        compare(f"SQL ({workers})", await answers(base, check), seen)
        return await run_load(args, base, names, workdir)
    finally:
        for proc in procs:
            stop(proc)


async def wait_workers(base: str, count: int, proc: subprocess.Popen) -> None:
    """Until the server's health lists ``count`` read workers serving (each loads the
    inventory itself, after the primary)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while count:
            if proc.poll() is not None:
                raise SystemExit("the DLM server exited; see its log")
            async with session.get(base + "/v1/health") as resp:
                workers = (await resp.json()).get("read_workers", [])
            if sum(w["serving"] for w in workers) >= count:
                return
            await asyncio.sleep(0.5)


async def run_load(args: argparse.Namespace, base: str, names: list[str],
                   workdir: Path) -> dict:
    if args.driver == "wrk":
        return await drive_wrk(base, names, args.seconds, args.concurrency, workdir)
    return await drive(base, names, args.requests, args.concurrency, args.warmup)


def report(results: dict, args: argparse.Namespace, baseline: dict[str, Any]) -> None:
    load = os.getloadavg()
    print(f"\nlookups by name, {args.items:,} items, concurrency {args.concurrency}, load from "
          f"{args.driver}, baseline pool {args.pool} per process; load average at the end "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, nice {os.nice(0)}\n")
    print(f"| {'server':<34} | {'req/s':>8} | {'p50 ms':>7} | {'p90 ms':>7} | "
          f"{'p99 ms':>7} | {'errors':>6} | {'vs SQL':>6} | every round, req/s")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 8}|{'-' * 20}|")
    ratios = []
    for w in args.workers:
        sql = results[f"sql{w}"]
        procs = f"{w} process{'es' if w > 1 else ''}"
        for label, r in ((f"DLM, {procs}", results[f"dlm{w}"]),
                         (f"SQL per request, {procs}", sql)):
            rounds = " ".join(f"{rate:.0f}" for rate in r["rounds"])
            print(f"| {label:<34} | {r['rate']:>8.0f} | {r['p50_ms']:>7.2f} | "
                  f"{r['p90_ms']:>7.2f} | {r['p99_ms']:>7.2f} | {r['errors']:>6} | "
                  f"{r['rate'] / sql['rate']:>5.2f}x | {rounds} |")
        ratios.append((results[f"dlm{w}"]["rate"] / sql["rate"], w, results[f"dlm{w}"]))
    print(f"\nbaseline: the best simple alternative, one indexed SQL query per request "
          f"({baseline['execution_ms']:.3f} ms in PostgreSQL; replicas through "
          f"{INDEX_NAME}, which the benchmark adds: DLM's schema has no index led by oid)")
    for ratio, w, best in ratios:
        print(f"{w} process(es) each side: DLM {ratio:.2f}x the SQL server's throughput "
              f"(target >= 3x: {'met' if ratio >= 3 else 'MISSED'}), DLM p99 "
              f"{best['p99_ms']:.2f} ms (target < 10 ms: "
              f"{'met' if best['p99_ms'] < 10 else 'MISSED'})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--baseline-server"]:
        baseline_server(argv[1], int(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--names", type=int, default=50_000, help="distinct names drawn")
    parser.add_argument("--check", type=int, default=50,
                        help="names whose answers must be the same from every server")
    parser.add_argument("--pool", type=int, default=10,
                        help="baseline asyncpg pool size, per process")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--db", help="reuse this database made by generate.py")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--driver", choices=["wrk", "aiohttp"],
                        default="wrk" if shutil.which("wrk") else "aiohttp",
                        help="load generator: wrk (apt-get install wrk; default when present) "
                             "or a Python aiohttp client")
    parser.add_argument("--seconds", type=int, default=20, help="wrk: measured duration")
    parser.add_argument("--rounds", type=int, default=1,
                        help="contenders take turns this many times; each one's best counts")
    parser.add_argument("--workers", type=lambda t: [int(w) for w in t.split(",")],
                        default=[1, 2], help="processes on each side (dlm serve --workers, "
                                             "baseline servers): comma-separated, default 1,2")
    args = parser.parse_args(argv)
    import uvloop

    return uvloop.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
