"""Item lookups by name through REST: the in-memory inventory against one SQL query per request.

    .venv/bin/python benchmarks/bench_lookup.py --items 1000000 --requests 20000 --concurrency 32

Both servers run on the same PostgreSQL database (made by ``benchmarks/generate.py``) in their
own process and answer ``GET /v1/items?name=NAME`` with the item and its replicas:

- ``dlm serve --db ...``: the inventory loaded into memory, the answer built from it;
- the baseline, a minimal aiohttp server that runs one SQL query per request through an asyncpg
  pool (what a DB-centred design such as a REST layer over the catalogue does).

The same client (uvloop, aiohttp, ``--concurrency`` requests in flight, names drawn at random
from the database) drives each in turn; it prints requests/s and latency percentiles and the ratio.
Issue 3's targets: >= 3x the baseline's throughput, p99 under 10 ms. The load comes from ``wrk``
when it is installed (C, cheap: what is measured is the servers), else from a Python client.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import generate  # noqa: E402
from serving import dlm_server, free_port, start, stop, wait_healthy  # noqa: E402

BASELINE_SQL = """
SELECT d.oid::text, d.item_name, d.item_version, d.item_type, d.item_state, d.target_phase,
       d.size, d.checksum, d.checksum_method, d.metadata, d.created, d.expire_at,
       d.access_count, d.last_access, d.owner, d."group",
       coalesce((SELECT json_agg(json_build_object(
                    'uid', r.uid::text, 'storage', s.name, 'uri', r.uri, 'state', r.state,
                    'size', r.size, 'checksum', r.checksum, 'created', r.created))
                 FROM replica r JOIN storage s ON s.id = r.storage_id
                 WHERE r.oid = d.oid), '[]')
FROM data_item d
WHERE d.item_name = $1 AND d.item_state <> 'DELETED'
ORDER BY d.item_version DESC LIMIT 1
"""


# ------------------------------------------------------------------ the baseline server

def baseline_server(db_url: str, port: int, pool_size: int) -> None:
    """One SQL query per request, answered as JSON (run as a child process)."""
    import asyncpg
    import uvloop
    from aiohttp import web

    async def make_app() -> web.Application:
        pool = await asyncpg.create_pool(db_url, min_size=pool_size, max_size=pool_size)
        await pool.execute("SELECT 1")

        async def items(request: web.Request) -> web.Response:
            row = await pool.fetchrow(BASELINE_SQL, request.query["name"])
            found = [] if row is None else [{
                "oid": row[0], "item_name": row[1], "item_version": row[2],
                "item_type": row[3], "state": row[4], "target_phase": row[5], "size": row[6],
                "checksum": row[7], "checksum_method": row[8],
                "metadata": json.loads(row[9]) if row[9] else {}, "created": row[10],
                "expire_at": row[11], "access_count": row[12], "last_access": row[13],
                "owner": row[14], "group": row[15], "replicas": json.loads(row[16])}]
            return web.json_response({"items": found, "cursor": None})

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_get("/v1/items", items)
        app.router.add_get("/v1/health", health)
        return app

    uvloop.install()
    web.run_app(make_app(), host="127.0.0.1", port=port, print=None, access_log=None)


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


async def bench(args: argparse.Namespace) -> int:
    import asyncpg

    workdir = Path(tempfile.mkdtemp(prefix="dlm-bench-lookup-"))
    name = args.db or f"dlm_bench_lookup_{os.getpid()}"
    db_url = args.admin_url.rsplit("/", 1)[0] + "/" + name
    made = args.db is None
    if made:
        print(f"generating {args.items:,} items ...", flush=True)
        await generate.create_database(args.admin_url, name)
        await generate.write_postgres(db_url, generate.Spec(items=args.items, replicas=2))
    try:
        conn = await asyncpg.connect(db_url)
        names = [r[0] for r in await conn.fetch(
            "SELECT item_name FROM data_item ORDER BY random() LIMIT $1", args.names)]
        await conn.close()
        results: dict[str, dict] = {}
        for round_ in range(1, args.rounds + 1):  # contenders take turns; the best round counts
            for workers in args.workers:  # -- DLM, one process, then with read workers
                print(f"round {round_}: DLM with {workers} process(es) ...", flush=True)
                keep_best(results, f"dlm{workers}", await measure_dlm(args, db_url, names,
                                                                     workers, workdir))
            print(f"round {round_}: SQL-per-request server ...", flush=True)
            keep_best(results, "sql", await measure_sql(args, db_url, names, workdir))
    finally:
        if made and not args.keep:
            await generate.drop_database(args.admin_url, name)
    report(results, args)
    return 0


def keep_best(results: dict[str, dict], key: str, result: dict) -> None:
    result["rounds"] = [*results.get(key, {}).get("rounds", []), result["rate"]]
    if key not in results or result["rate"] > results[key]["rate"]:
        results[key] = result
    else:
        results[key]["rounds"] = result["rounds"]


async def measure_dlm(args: argparse.Namespace, db_url: str, names: list[str], workers: int,
                      workdir: Path) -> dict:
    async with dlm_server(db_url, workdir, "--workers", str(workers)) as server:
        await wait_workers(server.url, workers - 1, server.proc)
        return await run_load(args, server.url, names, workdir)


async def measure_sql(args: argparse.Namespace, db_url: str, names: list[str],
                      workdir: Path) -> dict:
    port = free_port()
    log = workdir / "baseline.log"
    proc = start([sys.executable, __file__, "--baseline-server", db_url, str(port),
                  str(args.pool)], log)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", proc, log, 120)
        return await run_load(args, f"http://127.0.0.1:{port}", names, workdir)
    finally:
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


def report(results: dict, args: argparse.Namespace) -> None:
    sql = results["sql"]
    runs = [(f"DLM, {w} process{'es' if w > 1 else ''}", results[f"dlm{w}"])
            for w in args.workers]
    load = os.getloadavg()
    print(f"\nlookups by name, {args.items:,} items, concurrency {args.concurrency}, "
          f"load from {args.driver}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    print(f"| {'server':<28} | {'req/s':>8} | {'p50 ms':>7} | {'p90 ms':>7} | "
          f"{'p99 ms':>7} | {'errors':>6} | {'vs SQL':>6} | every round, req/s")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 8}|{'-' * 20}|")
    for label, r in (*runs, ("one SQL query per request", sql)):
        rounds = " ".join(f"{rate:.0f}" for rate in r["rounds"])
        print(f"| {label:<28} | {r['rate']:>8.0f} | {r['p50_ms']:>7.2f} | {r['p90_ms']:>7.2f} | "
              f"{r['p99_ms']:>7.2f} | {r['errors']:>6} | {r['rate'] / sql['rate']:>5.2f}x | "
              f"{rounds} |")
    label, best = max(runs, key=lambda run: run[1]["rate"])
    ratio = best["rate"] / sql["rate"]
    print(f"\nbest: {label}: {ratio:.2f}x the SQL server's throughput (target >= 3x: "
          f"{'met' if ratio >= 3 else 'MISSED'}), p99 {best['p99_ms']:.2f} ms "
          f"(target < 10 ms: {'met' if best['p99_ms'] < 10 else 'MISSED'})")


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
    parser.add_argument("--pool", type=int, default=10, help="baseline asyncpg pool size")
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
                        default=[1, 2], help="DLM runs, by processes (dlm serve --workers): "
                                             "comma-separated, default 1,2")
    args = parser.parse_args(argv)
    import uvloop

    return uvloop.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
