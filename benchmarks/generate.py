"""Synthetic inventories for benchmarks: N items, R replicas each, S storages; deterministic.

What it makes looks like the data DLM is for:

- names of 40-90 characters built like SKA and CMS paths (project / date / run / product parts,
  relative, unique), a few percent of them with a second version;
- sizes drawn from a log-normal distribution (median ~250 MB, long tail, capped at 50 GB);
- adler32-like checksums (8 hex digits), the same on the item and on each of its replicas;
- popularity (``access_count``) following Zipf's law over a random ranking of the items, with a
  share of items never accessed;
- a little JSON metadata on a fraction of the items, an expiry on another fraction;
- R complete replicas per item on R distinct storages out of S (GAS, LIQUID and SOLID disks).

Use it as a module (``records``, ``item_specs``, ``write_postgres``, ``write_sqlite``) or from the
command line::

    .venv/bin/python benchmarks/generate.py --items 1000000 --replicas 2 --storages 8 \\
        --db postgresql://postgres@127.0.0.1:5432/dlm_bench_x --create-db
    .venv/bin/python benchmarks/generate.py --items 10000 --db sqlite:/tmp/inv.sqlite

The database gets the DLM schema from the store itself (``store.open()`` runs the migrations), and
rows converted by the stores' own helpers (``item_db_row`` / ``replica_db_row`` /
``storage_db_row``), then written with COPY (PostgreSQL) or one ``executemany`` (SQLite).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inventory import model
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from inventory.store.base import (
    ITEM_COLUMNS,
    REPLICA_COLUMNS,
    STORAGE_COLUMNS,
    item_db_row,
    replica_db_row,
    storage_db_row,
)

EPOCH = 1_704_067_200.0  # 2024-01-01T00:00:00Z: generated times are fixed, not "now"
SPAN = 2 * 365 * 86_400.0  # items are created over two years
_V4_MASK = ~(0xF << 76) & ~(0x3 << 62) & ((1 << 128) - 1) & ~model.MAX_STORAGE_ID
_V4_BITS = (0x4 << 76) | (0x2 << 62)


@dataclass(frozen=True, slots=True)
class Spec:
    """What to generate. Two runs with the same Spec produce the same rows."""

    items: int = 10_000
    replicas: int = 2  # per item, on distinct storages
    storages: int = 8
    seed: int = 42
    zipf_s: float = 1.0  # exponent of the rank-popularity law
    max_access: int = 1_000_000  # access count of the most popular item
    never_accessed: float = 0.3  # share of items with access_count 0
    metadata_fraction: float = 0.05
    expire_fraction: float = 0.1
    version_fraction: float = 0.02  # share of items that are a new version of the previous name

    def __post_init__(self) -> None:
        if self.items < 0 or self.storages < 1 or not 0 <= self.replicas <= self.storages:
            raise ValueError("need items >= 0, storages >= 1 and 0 <= replicas <= storages")


# --------------------------------------------------------------------------- storages

_PHASE_CYCLE = ("GAS", "LIQUID", "SOLID", "GAS")


def storages(spec: Spec) -> list[StorageRecord]:
    """S storages: posix disks and s3 buckets at a few sites, ids 1..S."""
    out = []
    for i in range(1, spec.storages + 1):
        site = f"site{(i - 1) // 2 + 1:02d}"
        if i % 2:
            name, kind, root = f"{site}-disk", "posix", f"/data/{site}/dlm"
        else:
            name, kind, root = f"{site}-s3", "s3", f"{site}-bucket/dlm"
        phase = model.PHASE[_PHASE_CYCLE[(i - 1) % len(_PHASE_CYCLE)]]
        out.append(StorageRecord(i, name, kind, root, 10 * 10**15, phase, "online",
                                 {"site": site, "tier": 1 + i % 3}, {}, EPOCH))
    return out


# --------------------------------------------------------------------------- names

_TELESCOPES = ("low", "mid")
_SKA_PRODUCTS = (("visibility", "vis", "ms"), ("image", "img", "fits"),
                 ("calibration", "cal", "h5"), ("pulsar", "psr", "fil"))
_CMS_ERAS = ("Run2022C", "Run2022F", "Run2023B", "Run2023C", "Run2023D", "Run2024E")
_CMS_PDS = ("JetMET0", "Muon0", "EGamma1", "ZeroBias", "DisplacedJet", "Tau")
_CMS_TIERS = ("RAW", "AOD", "MINIAOD", "NANOAOD")
_OWNERS = (*tuple(f"user{i:02d}" for i in range(20)), "ska-ops", "cms-prod")
_GROUPS = ("ska", "cms", "astro", "ops")


def _name(rng: random.Random, serial: int, day: str) -> str:
    """A unique relative path of about 40-90 characters (unique through ``serial``)."""
    if rng.random() < 0.6:
        tel = rng.choice(_TELESCOPES)
        product, short, ext = rng.choice(_SKA_PRODUCTS)
        project = f"SKA-{tel.upper()}-P{rng.randrange(1, 200):04d}"
        eb = f"eb-{tel[0]}{rng.randrange(1, 10):03d}-{day}-{rng.randrange(100000):05d}"
        leaf = f"{short}_b{rng.randrange(1, 64):02d}_{serial:07d}.{ext}"
        return f"ska/{tel}/{project}/{day}/{eb}/{product}/{leaf}"
    era, pd, tier = rng.choice(_CMS_ERAS), rng.choice(_CMS_PDS), rng.choice(_CMS_TIERS)
    block = f"{rng.randrange(2500, 2600) * 1000}"
    return f"store/data/{era}/{pd}/{tier}/{block}/{serial:08x}-{rng.getrandbits(16):04x}.root"


# --------------------------------------------------------------------------- records

def _popularity(spec: Spec, rng: random.Random) -> list[int]:
    """Access count of each item: Zipf's law (count ~ max / rank^s) over a random ranking."""
    n = spec.items
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    s, top, never = spec.zipf_s, spec.max_access, spec.never_accessed
    return [0 if rng.random() < never else max(1, int(top / r**s)) for r in ranks]


def records(spec: Spec, batch: int = 50_000,
            ) -> Iterator[tuple[list[ItemRecord], list[ReplicaRecord]]]:
    """Items and their replicas, in batches of ``batch`` items (memory stays bounded)."""
    rng = random.Random(spec.seed)
    popularity = _popularity(spec, rng)
    storage_ids = list(range(1, spec.storages + 1))
    n_rep = spec.replicas
    method = model.DEFAULT_CHECKSUM_METHOD
    file_, ready, solid, complete = model.FILE, model.READY, model.PHASE["SOLID"], model.COMPLETE
    mu, sigma, cap = math.log(250e6), 1.6, 50 * 10**9
    lognorm, getrandbits, rand, sample = (rng.lognormvariate, rng.getrandbits, rng.random,
                                          rng.sample)
    prev_name, prev_version = None, 0
    items: list[ItemRecord] = []
    replicas: list[ReplicaRecord] = []
    for serial in range(spec.items):
        oid = (getrandbits(128) & _V4_MASK) | _V4_BITS
        created = EPOCH + SPAN * serial / max(spec.items, 1)
        if prev_name is not None and rand() < spec.version_fraction:
            name, version = prev_name, prev_version + 1
        else:
            day = time.strftime("%Y%m%d", time.gmtime(created))
            name, version = _name(rng, serial, day), 1
        prev_name, prev_version = name, version
        size = min(int(lognorm(mu, sigma)), cap)
        checksum = f"{getrandbits(32):08x}"
        metadata = None
        if rand() < spec.metadata_fraction:
            metadata = {"run": rng.randrange(1, 400000), "quality": rng.choice(("good", "bad")),
                        "pipeline": f"v{rng.randrange(1, 6)}.{rng.randrange(10)}"}
        expire_at = created + 86_400.0 * rng.randrange(30, 3650) if (
            rand() < spec.expire_fraction) else None
        access = popularity[serial]
        last_access = created + rand() * (EPOCH + SPAN - created) if access else None
        owner = _OWNERS[serial % len(_OWNERS)]
        group = _GROUPS[serial % len(_GROUPS)]
        items.append(ItemRecord(oid, name, version, file_, ready, solid, size, checksum, method,
                                metadata, None, created, expire_at, access, last_access, owner,
                                group))
        for sid in sample(storage_ids, n_rep):
            replicas.append(ReplicaRecord(oid, sid, None, complete, size, checksum,
                                          created + 1.0, None, None))
        if len(items) >= batch:
            yield items, replicas
            items, replicas = [], []
    if items:
        yield items, replicas


def item_specs(spec: Spec, storage_names: list[str] | None = None) -> Iterator[dict]:
    """The same items as REST ``POST /v1/items`` bodies (one-call ingest: first replica only)."""
    names = storage_names or [s.name for s in storages(spec)]
    for items, replicas in records(spec):
        first = {}
        for rep in replicas:
            first.setdefault(rep.oid, rep.storage_id)
        for rec in items:
            body = {"item_name": rec.item_name, "item_version": rec.item_version,
                    "storage": names[first.get(rec.oid, 1) - 1], "size": rec.size,
                    "checksum": rec.checksum}
            if rec.metadata is not None:
                body["metadata"] = rec.metadata
            yield body


# --------------------------------------------------------------------------- writers

async def write_postgres(url: str, spec: Spec, *, progress: bool = False) -> dict[str, float]:
    """Create the DLM schema in the database at ``url`` (empty) and COPY the inventory into it."""
    import asyncpg

    from inventory.store.postgres import PostgresStore

    store = PostgresStore(url)
    await store.open()  # creates or migrates the schema
    await store.close()
    started = time.perf_counter()
    out = model.format_uuid
    n_items = n_replicas = 0
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "storage", columns=STORAGE_COLUMNS,
                records=[storage_db_row(s) for s in storages(spec)])
            for items, replicas in records(spec):
                await conn.copy_records_to_table(
                    "data_item", columns=ITEM_COLUMNS,
                    records=[item_db_row(r, out) for r in items])
                await conn.copy_records_to_table(
                    "replica", columns=REPLICA_COLUMNS,
                    records=[replica_db_row(r, out) for r in replicas])
                n_items += len(items)
                n_replicas += len(replicas)
                if progress:
                    print(f"\r{n_items} items, {n_replicas} replicas", end="", file=sys.stderr)
            await conn.execute("UPDATE inventory_state SET version = 1")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    if progress:
        print(file=sys.stderr)
    return {"items": n_items, "replicas": n_replicas, "seconds": time.perf_counter() - started}


def write_sqlite(path: str, spec: Spec) -> dict[str, float]:
    """Create the DLM schema in the SQLite file at ``path`` (new) and insert the inventory."""
    from inventory.store.sqlite import SQLiteStore

    async def make_schema() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(make_schema())
    started = time.perf_counter()
    out = model.format_uuid
    n_items = n_replicas = 0
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        def insert(table: str, columns: tuple[str, ...]) -> str:
            names = ", ".join(f'"{c}"' for c in columns)
            return f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"

        conn.execute("BEGIN")
        conn.executemany(insert("storage", STORAGE_COLUMNS),
                         [storage_db_row(s) for s in storages(spec)])
        for items, replicas in records(spec):
            conn.executemany(insert("data_item", ITEM_COLUMNS),
                             [item_db_row(r, out) for r in items])
            conn.executemany(insert("replica", REPLICA_COLUMNS),
                             [replica_db_row(r, out) for r in replicas])
            n_items += len(items)
            n_replicas += len(replicas)
        conn.execute("UPDATE inventory_state SET version = 1")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {"items": n_items, "replicas": n_replicas, "seconds": time.perf_counter() - started}


async def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """CREATE DATABASE ``name`` on the server of ``admin_url`` (a copy of ``template`` if
    given); the URL of the new database."""
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        # FILE_COPY (PostgreSQL 15+; earlier versions always copied this way): the copy is
        # checkpointed instead of written through the WAL, which at 10M replicas put ~4 GB of
        # WAL right before the measured cycle and checkpoints in the middle of its commit.
        strategy = " STRATEGY FILE_COPY" if conn.get_server_version().major >= 15 else ""
        copy = f' TEMPLATE "{template}"{strategy}' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def checkpoint(admin_url: str) -> None:
    """A CHECKPOINT, so that a measured run starts with no WAL of the set-up behind it."""
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--replicas", type=int, default=2, help="replicas per item")
    p.add_argument("--storages", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--zipf-s", type=float, default=1.0)
    p.add_argument("--metadata-fraction", type=float, default=0.05)
    p.add_argument("--db", required=True,
                   help="postgresql://.../DBNAME (empty or new) or sqlite:PATH (new file)")
    p.add_argument("--create-db", action="store_true",
                   help="PostgreSQL: CREATE DATABASE first (through the 'postgres' database)")
    args = p.parse_args(argv)
    spec = Spec(items=args.items, replicas=args.replicas, storages=args.storages, seed=args.seed,
                zipf_s=args.zipf_s, metadata_fraction=args.metadata_fraction)
    if args.db.startswith(("postgresql://", "postgres://")):
        if args.create_db:
            base, name = args.db.rsplit("/", 1)
            asyncio.run(create_database(base + "/postgres", name))
        stats = asyncio.run(write_postgres(args.db, spec, progress=sys.stderr.isatty()))
    elif args.db.startswith("sqlite:"):
        stats = write_sqlite(args.db.removeprefix("sqlite:"), spec)
    else:
        p.error("--db must be postgresql://... or sqlite:PATH")
    print(f"{stats['items']} items, {stats['replicas']} replicas written in "
          f"{stats['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
