"""Inventory benchmark on PostgreSQL: load time, memory per item and replica, durable REST inject.

    .venv/bin/python benchmarks/bench_inventory.py --items 1000000 --replicas 2
    .venv/bin/python benchmarks/bench_inventory.py --skip load --inject-items 200000 --db sqlite

Each number comes with a baseline measured in the same run on the same rows:

- load: ``PostgresStore.load`` of N items and N*R replicas into a fresh ``Inventory`` (in a fresh
  process), against raw asyncpg fetches of the same rows (the same queries, rows thrown away) and
  a raw binary ``COPY ... TO STDOUT`` of the same rows;
- memory: resident set size of that fresh process before and after the load, after
  ``gc.collect()``: total MB, bytes per replica with the item costs included (the target), bytes
  per item (a second process loads the items alone) and per replica on top of its item;
- inject: ``dlm serve --db postgresql://...`` as a subprocess, a few concurrent clients POSTing
  batches of items with one replica each (acknowledged only after the commit: durable), against
  raw asyncpg ``copy_records_to_table`` of the same rows (items + replicas) into a fresh database
  with the same schema; the storages have ``verify_ingest: false``, so nothing is looked at;
- verified inject: the same items and server, every storage a local POSIX directory holding a
  real small file for each item, each POST acknowledged only after the server stat'ed all its
  payloads (issue 15), against the unverified inject and the raw COPY of the same run.

``--db sqlite`` runs both injects on the embedded SQLite store instead (a file in the work
directory, no raw COPY baseline): PostgreSQL bounds the unverified inject on a small machine,
SQLite shows what the check costs against a faster writer.

Targets (issue 2): load < 15 s; < 300 B per replica (item costs included); inject >= 30% of COPY.
Target (issue 15): verified inject >= 50,000 items/s.
The databases it creates (``dlm_bench_*``) are dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))

import generate  # noqa: E402
from serving import cpu_seconds, dlm_server  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
TARGET_LOAD_S = 15.0
TARGET_BYTES_PER_REPLICA = 300
TARGET_INJECT_RATIO = 0.30
TARGET_VERIFIED_RATE = 50_000  # items/s, issue 15 item 4


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def url_of(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


# =========================================================================== child processes
# Each measurement that needs a clean heap runs in its own interpreter: ``--child KIND URL``.

async def child_load(url: str, items_only: bool) -> dict:
    from inventory.inventory import Inventory
    from inventory.store.base import loading, storage_from_db
    from inventory.store.postgres import PostgresStore

    store = PostgresStore(url)
    await store.open()
    inv = Inventory()
    gc.collect()
    before = rss()
    started, cpu = time.perf_counter(), time.process_time()
    if items_only:  # what load() does, without the replicas: the per-item share of the memory
        with loading():
            async with store._pool.acquire() as conn, conn.transaction(readonly=True):
                for row in await conn.fetch("SELECT * FROM storage ORDER BY id"):
                    inv.add_storage(storage_from_db([row[c] for c in generate.STORAGE_COLUMNS]))
                await store._load_items(conn, inv, {})
    else:
        await store.load(inv)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.collect()
    after = rss()
    await store.close()
    return {"seconds": seconds, "cpu": cpu, "rss_before": before, "rss_after": after,
            "items": inv.counts.items, "replicas": inv.counts.replicas,
            "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


async def child_fetch(url: str) -> dict:
    """Raw asyncpg: the load's queries, fetched in the same batches, rows dropped."""
    import asyncpg

    from inventory.store import postgres

    conn = await asyncpg.connect(url)
    rows = 0
    started, cpu = time.perf_counter(), time.process_time()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        queries = [*postgres._ITEM_QUERIES,
                   f"SELECT {postgres._q(generate.REPLICA_COLUMNS[1:])} FROM replica"]
        for query in queries:
            cursor = await conn.cursor(query)
            while batch := await cursor.fetch(postgres._FETCH):
                rows += len(batch)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    await conn.close()
    return {"seconds": seconds, "cpu": cpu, "rows": rows}


async def child_copy_out(url: str) -> dict:
    """Raw asyncpg binary COPY TO of the same rows, bytes dropped."""
    import asyncpg

    from inventory.store import postgres

    conn = await asyncpg.connect(url)
    size = 0

    async def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    started = time.perf_counter()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.copy_from_query(f"SELECT {postgres._q(generate.ITEM_COLUMNS)} FROM data_item",
                                   output=sink, format="binary")
        await conn.copy_from_query(
            f"SELECT {postgres._q(generate.REPLICA_COLUMNS[1:])} FROM replica",
            output=sink, format="binary")
    seconds = time.perf_counter() - started
    await conn.close()
    return {"seconds": seconds, "bytes": size}


def run_child(kind: str, url: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, url], check=True,
                         capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(kind: str, url: str) -> int:
    import uvloop

    jobs = {"load": lambda: child_load(url, False), "load-items": lambda: child_load(url, True),
            "fetch": lambda: child_fetch(url), "copy-out": lambda: child_copy_out(url)}
    result = uvloop.run(jobs[kind]())
    print(json.dumps(result))
    return 0


# =========================================================================== inject

async def serve_startup(db_url: str, workdir: Path) -> dict:
    """``dlm serve`` on the loaded database: its own load time (/v1/health) and its RSS."""
    async with dlm_server(db_url, workdir, timeout=300) as server:
        health = server.health
        with open(f"/proc/{server.proc.pid}/statm") as f:
            server_rss = int(f.read().split()[1]) * PAGE
        return {"ready_seconds": server.ready_seconds, "load_seconds": health.get("load_seconds"),
                "items": health.get("items"), "replicas": health.get("replicas"),
                "rss": server_rss}


def write_payloads(bodies: list[dict], roots: dict[str, Path]) -> float:
    """A small real file for each item at its default path (``name`` or ``name@vN``) under its
    storage's root, of a size 0-63 bytes that becomes the item's; seconds taken."""
    from inventory.storage.paths import default_path

    started = time.perf_counter()
    made: set[Path] = set()
    for i, body in enumerate(bodies):
        path = roots[body["storage"]] / default_path(body["item_name"], body["item_version"])
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        body["size"] = size = i % 64
        with open(path, "wb") as f:
            f.write(b"x" * size)
    return time.perf_counter() - started


async def check_alone(spec: generate.Spec, payloads: Path, batch: int) -> dict:
    """What verification costs without the database: the server's payload check
    (``inventory.server.ingest.payloads_of_items``, one request's batch at a time, as the
    handler runs it) over the files the verified inject used, in this process."""
    from types import SimpleNamespace

    import msgspec

    from inventory.fileops.engine import Backends
    from inventory.inventory import Inventory
    from inventory.records import StorageRecord
    from inventory.server.ingest import payloads_of_items
    from inventory.specs import ItemSpec

    specs = list(generate.item_specs(spec))
    for i, body in enumerate(specs):
        body["size"] = i % 64  # as write_payloads made them
    decoded = msgspec.json.decode(msgspec.json.encode(specs), type=list[ItemSpec])
    inv = Inventory()
    for s in generate.storages(spec):
        inv.add_storage(StorageRecord(s.id, s.name, "posix", str(payloads / s.name), s.capacity,
                                      s.phase, "online", {}, {}, 0.0))
    state = SimpleNamespace(inventory=inv, backends=Backends())
    try:
        cpu0, started = time.process_time(), time.perf_counter()
        for lo in range(0, len(decoded), batch):
            found = await payloads_of_items(state, decoded[lo:lo + batch], True)
            assert all(p is not None for p in found)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    finally:
        await state.backends.close()
    return {"seconds": seconds, "items": len(decoded), "cpu": cpu}


async def rest_inject(db_url: str, spec: generate.Spec, batch: int, clients: int,
                      workdir: Path, payloads: Path | None = None) -> dict:
    """Start ``dlm serve`` on ``db_url``, add the storages, POST every item; items/s.

    Without ``payloads`` the storages have ``verify_ingest: false`` (nothing is looked at:
    unverified inject). With it, every storage is a POSIX directory under ``payloads`` holding
    a real small file for each item, and each POST is acknowledged only after the server
    stat'ed them all (verified inject, ``verify: size``)."""
    import aiohttp
    import msgspec

    roots = {s.name: payloads / s.name for s in generate.storages(spec)} if payloads else {}
    specs = list(generate.item_specs(spec))
    files_seconds = write_payloads(specs, roots) if payloads else None
    async with dlm_server(db_url, workdir) as server:
        base, proc = server.url, server.proc
        encode = msgspec.json.encode
        bodies, chunk = [], []
        for body in specs:
            chunk.append(body)
            if len(chunk) == batch:
                bodies.append(encode(chunk))
                chunk = []
        if chunk:
            bodies.append(encode(chunk))
        async with aiohttp.ClientSession(base_url=base,
                                         timeout=aiohttp.ClientTimeout(total=600)) as session:
            from inventory import model
            for s in generate.storages(spec):
                where = ({"kind": "posix", "root": str(roots[s.name]), "config": {}} if payloads
                         else {"kind": s.kind, "root": s.root,
                               "config": {"verify_ingest": False}})
                async with session.post("/v1/storages", json={
                        "name": s.name, **where, "capacity": s.capacity,
                        "phase": model.PHASES[s.phase], "attributes": s.attributes}) as resp:
                    assert resp.status == 201, await resp.text()
            queue = iter(bodies)
            done = 0
            latencies: list[float] = []

            async def client() -> None:
                nonlocal done
                for body in queue:
                    t0 = time.perf_counter()
                    async with session.post("/v1/items", data=body,
                                            headers={"Content-Type": "application/json"}) as r:
                        answer = await r.read()
                        if r.status != 201:
                            raise RuntimeError(f"POST /v1/items: {r.status} {answer[:300]!r}")
                    latencies.append(time.perf_counter() - t0)
                    done += len(json.loads(answer)["items"])

            cpu0 = cpu_seconds(proc.pid)
            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            seconds = time.perf_counter() - started
            cpu = cpu_seconds(proc.pid) - cpu0
            async with session.get("/v1/health") as resp:
                health = await resp.json()
        assert health["items"] == spec.items == done, (health, done)
        latencies.sort()
        return {"seconds": seconds, "items": done, "replicas": health["replicas"],
                "server_cpu": cpu, "files_seconds": files_seconds,
                "p50": latencies[len(latencies) // 2],
                "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


async def raw_copy(db_url: str, spec: generate.Spec) -> dict:
    """Raw asyncpg COPY of the same rows (items + their replica) into the same schema."""
    import asyncpg

    from inventory import model
    from inventory.store.postgres import PostgresStore

    store = PostgresStore(db_url)
    await store.open()
    await store.close()
    out = model.format_uuid
    storages = [generate.storage_db_row(s) for s in generate.storages(spec)]
    chunks = [([generate.item_db_row(r, out) for r in items],
               [generate.replica_db_row(r, out) for r in replicas])
              for items, replicas in generate.records(spec)]
    conn = await asyncpg.connect(db_url)
    try:
        await conn.copy_records_to_table("storage", columns=generate.STORAGE_COLUMNS,
                                         records=storages)
        started = time.perf_counter()
        async with conn.transaction():
            for items, replicas in chunks:
                await conn.copy_records_to_table("data_item", columns=generate.ITEM_COLUMNS,
                                                 records=items)
                await conn.copy_records_to_table("replica", columns=generate.REPLICA_COLUMNS,
                                                 records=replicas)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return {"seconds": seconds, "items": sum(len(i) for i, _ in chunks),
            "rows": sum(len(i) + len(r) for i, r in chunks)}


# =========================================================================== report

def fmt_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                     + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def verdict(ok: bool, applies: bool = True) -> str:
    if not applies:
        return "(target is for 1M items)"
    return "met" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="DLM inventory benchmark on PostgreSQL")
    p.add_argument("--items", type=int, default=1_000_000, help="items for load and memory")
    p.add_argument("--replicas", type=int, default=2, help="replicas per item")
    p.add_argument("--storages", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--inject-items", type=int, default=200_000,
                   help="items injected through REST (and by the raw COPY baseline)")
    p.add_argument("--batch", type=int, default=2000, help="items per POST /v1/items")
    p.add_argument("--clients", type=int, default=4, help="concurrent REST clients")
    p.add_argument("--admin-url", default=os.environ.get(
        "DLM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--load-db", help="reuse this existing database (made by generate.py with the "
                                     "same --items/--replicas/--storages/--seed) for the load")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the load and its baselines this many times, keep the fastest")
    p.add_argument("--skip", action="append", default=[], choices=["load", "inject"])
    p.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql",
                   help="the database of the REST injects (sqlite: a file in the work "
                        "directory, no raw COPY baseline; the load needs postgresql)")
    p.add_argument("--keep", action="store_true", help="do not drop the databases made")
    p.add_argument("--json", help="also write the raw results to this file")
    p.add_argument("--child", nargs=2, metavar=("KIND", "URL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    return asyncio.run(bench(args))


async def bench(args: argparse.Namespace) -> int:
    tag = f"{os.getpid()}"
    made: list[str] = []
    results: dict = {"python": sys.version.split()[0], "cores": os.cpu_count()}
    admin = args.admin_url
    sqlite = args.db == "sqlite"
    if sqlite and "load" not in args.skip:
        raise SystemExit("--db sqlite measures the inject only: add --skip load")
    if sqlite:
        import sqlite3
        results["sqlite"] = sqlite3.sqlite_version
    else:
        import asyncpg
        conn = await asyncpg.connect(admin)
        results["postgresql"] = await conn.fetchval("SHOW server_version")
        await conn.close()
    results["loadavg"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with open("/proc/meminfo") as f:
        results["ram_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    workdir = Path(tempfile.mkdtemp(prefix="dlm-bench-"))
    try:
        if "load" not in args.skip:
            spec = generate.Spec(items=args.items, replicas=args.replicas,
                                 storages=args.storages, seed=args.seed)
            if args.load_db:
                load_url = url_of(admin, args.load_db)
            else:
                name = f"dlm_bench_load_{tag}"
                load_url = await generate.create_database(admin, name)
                made.append(name)
                print(f"generating {spec.items} items x {spec.replicas} replicas ...",
                      file=sys.stderr)
                results["generate"] = await generate.write_postgres(load_url, spec)
            print("loading (store.load, raw fetch, raw COPY TO) ...", file=sys.stderr)
            # The fastest of --repeat runs of each: the one least disturbed by other processes.
            for key, kind in (("load", "load"), ("fetch", "fetch"), ("copy_out", "copy-out")):
                results[key] = min((run_child(kind, load_url) for _ in range(args.repeat)),
                                   key=lambda r: r["seconds"])
            results["load_items"] = run_child("load-items", load_url)
            print("dlm serve on the loaded database ...", file=sys.stderr)
            results["serve"] = await serve_startup(load_url, workdir)
        if "inject" not in args.skip:
            spec = generate.Spec(items=args.inject_items, replicas=1, storages=args.storages,
                                 seed=args.seed + 1)
            if sqlite:
                rest_url = f"sqlite:{workdir / 'rest.db'}"
            else:
                rest_name, copy_name = f"dlm_bench_rest_{tag}", f"dlm_bench_copy_{tag}"
                rest_url = await generate.create_database(admin, rest_name)
                made.append(rest_name)
                copy_url = await generate.create_database(admin, copy_name)
                made.append(copy_name)
                print(f"raw COPY of {spec.items} items + replicas ...", file=sys.stderr)
                results["copy_in"] = await raw_copy(copy_url, spec)
            print(f"REST inject of {spec.items} items, batches of {args.batch}, "
                  f"{args.clients} clients ...", file=sys.stderr)
            results["inject"] = await rest_inject(rest_url, spec, args.batch, args.clients,
                                                  workdir)
            results["inject"].update(batch=args.batch, clients=args.clients)
            if sqlite:
                verified_url = f"sqlite:{workdir / 'verified.db'}"
            else:
                verified_name = f"dlm_bench_verified_{tag}"
                verified_url = await generate.create_database(admin, verified_name)
                made.append(verified_name)
            print(f"verified REST inject of {spec.items} items (small real files) ...",
                  file=sys.stderr)
            results["verified"] = await rest_inject(verified_url, spec, args.batch,
                                                    args.clients, workdir,
                                                    payloads=workdir / "payloads")
            results["verified"].update(batch=args.batch, clients=args.clients)
            results["check"] = await check_alone(spec, workdir / "payloads", args.batch)
    finally:
        if not args.keep:
            for name in made:
                await generate.drop_database(admin, name)
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def report(r: dict, args: argparse.Namespace) -> None:
    db = (f"PostgreSQL {r['postgresql']}" if "postgresql" in r
          else f"SQLite {r['sqlite']} (the injects' database)")
    print(f"\nmachine: {r['cores']} cores, {r['ram_gib']} GiB RAM, CPython {r['python']}, "
          f"{db}; load average {r['loadavg']} at the start\n")
    rows = [("benchmark", "result", "baseline (same run)", "ratio", "target", "")]
    if "load" in r:
        ld, fe, co, li = r["load"], r["fetch"], r["copy_out"], r["load_items"]
        n_items, n_reps = ld["items"], ld["replicas"]
        full = n_items >= 1_000_000
        total = ld["rss_after"] - ld["rss_before"]
        item_bytes = (li["rss_after"] - li["rss_before"]) / li["items"]
        per_replica = total / n_reps if n_reps else float("nan")
        if "generate" in r:
            g = r["generate"]
            rows.append(("generate + COPY in (generate.py)",
                         f"{g['seconds']:.1f} s", "", "", "", ""))
        rows += [
            (f"load {n_items:,} items + {n_reps:,} replicas",
             f"{ld['seconds']:.2f} s ({(n_items + n_reps) / ld['seconds'] / 1e3:.0f}k rows/s)",
             f"raw fetch {fe['seconds']:.2f} s", f"{ld['seconds'] / fe['seconds']:.2f}x",
             f"< {TARGET_LOAD_S:.0f} s", verdict(ld["seconds"] < TARGET_LOAD_S, full)),
            ("", "", f"raw binary COPY TO {co['seconds']:.2f} s",
             f"{ld['seconds'] / co['seconds']:.2f}x", "", ""),
            ("  CPU time of the loading process", f"{ld['cpu']:.2f} s",
             f"raw fetch {fe['cpu']:.2f} s", f"{ld['cpu'] / fe['cpu']:.2f}x", "", ""),
            ("memory, total (RSS delta)", f"{total / 2**20:.0f} MB", "", "", "", ""),
            ("bytes per replica, item costs included", f"{per_replica:.0f} B", "", "",
             f"< {TARGET_BYTES_PER_REPLICA} B",
             verdict(per_replica < TARGET_BYTES_PER_REPLICA, full)),
            ("bytes per item (items alone)", f"{item_bytes:.0f} B", "", "", "", ""),
            ("bytes per replica on top of its item",
             f"{(total - item_bytes * n_items) / n_reps:.0f} B", "", "", "", ""),
            ("peak RSS of the loading process", f"{ld['maxrss'] / 2**20:.0f} MB", "", "", "", ""),
        ]
        if "serve" in r:
            sv = r["serve"]
            rows.append(("dlm serve on that database: load, RSS",
                         f"{sv['load_seconds']:.2f} s, {sv['rss'] / 2**20:.0f} MB",
                         f"ready after {sv['ready_seconds']:.1f} s", "", "", ""))
    if "inject" in r:
        inj, cp = r["inject"], r.get("copy_in")
        rate = inj["items"] / inj["seconds"]
        base = cp["items"] / cp["seconds"] if cp else None
        rows += [
            (f"durable REST inject, {inj['items']:,} items + 1 replica each",
             f"{rate:,.0f} items/s ({inj['seconds']:.1f} s)",
             f"raw COPY {base:,.0f} items/s ({cp['seconds']:.1f} s)" if base else
             "(no raw COPY on SQLite)", f"{rate / base:.0%}" if base else "",
             f">= {TARGET_INJECT_RATIO:.0%}" if base else "",
             verdict(rate / base >= TARGET_INJECT_RATIO) if base else ""),
            (f"  POST latency ({inj['batch']} items/request, {inj['clients']} clients)",
             f"p50 {inj['p50'] * 1e3:.0f} ms, p99 {inj['p99'] * 1e3:.0f} ms",
             f"server CPU {inj['server_cpu']:.1f} s", "", "", ""),
        ]
    if "verified" in r:
        ver, inj, cp = r["verified"], r["inject"], r.get("copy_in")
        vrate = ver["items"] / ver["seconds"]
        rate = inj["items"] / inj["seconds"]
        base = cp["items"] / cp["seconds"] if cp else None
        rows += [
            (f"verified REST inject (stat of each payload), {ver['items']:,} items",
             f"{vrate:,.0f} items/s ({ver['seconds']:.1f} s)",
             f"unverified inject {rate:,.0f} items/s", f"{vrate / rate:.0%}",
             f">= {TARGET_VERIFIED_RATE:,} items/s", verdict(vrate >= TARGET_VERIFIED_RATE)),
            *([("", "", f"raw COPY {base:,.0f} items/s", f"{vrate / base:.0%}", "", "")]
              if base else []),
            (f"  POST latency ({ver['batch']} items/request, {ver['clients']} clients)",
             f"p50 {ver['p50'] * 1e3:.0f} ms, p99 {ver['p99'] * 1e3:.0f} ms",
             f"server CPU {ver['server_cpu']:.1f} s",
             f"(files written in {ver['files_seconds']:.1f} s)", "", ""),
            ("  the payload check alone (in process, no database)",
             f"{r['check']['items'] / r['check']['seconds']:,.0f} items/s",
             f"CPU {r['check']['cpu'] / r['check']['items'] * 1e6:.1f} us per item", "", "", ""),
            ("  the check's server CPU per item (verified - unverified)",
             f"{(ver['server_cpu'] - inj['server_cpu']) / ver['items'] * 1e6:.1f} us",
             f"unverified {inj['server_cpu'] / inj['items'] * 1e6:.1f} us per item", "", "",
             ""),
        ]
    print(fmt_table(rows))


if __name__ == "__main__":
    sys.exit(main())
