"""Queueing operations: one request per operation against one list (issue 25).

    .venv/bin/python benchmarks/bench_queue.py [--operations 1000] [--rounds 3] [--db URL]

A ``dlm serve`` subprocess (SQLite in a temporary directory unless ``--db``) with its file
operations engine at ``workers: 0``, so queued copies stay queued and only queueing is measured
(the issue's 20-43 s were measured with copies running, which only adds to the one-by-one
side). ``--operations`` small items are registered on a POSIX storage; each round queues a copy
of every one to a fresh storage, once with one ``POST /v1/operations`` per operation (what
``dlm ops queue`` did in a loop) and once with the whole list in one request
(``Client.add_operations``, what ``dlm ops queue --from`` sends per batch). The best round of
each is reported, with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from serving import dlm_server  # noqa: E402

from inventory.client import Client  # noqa: E402


async def add_storage(client: Client, root: Path, name: str) -> None:
    (root / name).mkdir()
    await client.add_storage(name=name, kind="posix", root=str(root / name), capacity=10**12)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        work = Path(tmp)
        config = work / "dlm.yaml"
        config.write_text("fileops:\n  workers: 0\n")
        db = args.db or f"sqlite:{work / 'inventory.sqlite'}"
        async with dlm_server(db, work, "--config", str(config)) as server:
            client = Client(server.url, token="")
            try:
                await measure(client, work, args)
            finally:
                await client.close()


async def measure(client: Client, work: Path, args: argparse.Namespace) -> None:
    n = args.operations
    await add_storage(client, work, "disk")
    for i in range(n):
        (work / "disk" / f"f{i}").write_bytes(b"x")
    await client.add_items([{"item_name": f"f{i}", "storage": "disk"} for i in range(n)])
    names = [f"f{i}" for i in range(n)]
    best = {"one by one": float("inf"), "one list": float("inf")}
    for r in range(args.rounds):
        target = f"one-{r}"
        await add_storage(client, work, target)
        started = time.perf_counter()
        for name in names:
            await client.add_operation("copy", name, target)
        best["one by one"] = min(best["one by one"], time.perf_counter() - started)
        target = f"list-{r}"
        await add_storage(client, work, target)
        started = time.perf_counter()
        queued = await client.add_operations(
            {"kind": "copy", "item": name, "target": target} for name in names)
        best["one list"] = min(best["one list"], time.perf_counter() - started)
        assert len(queued) == n
    print(f"{n:,} operations queued, best of {args.rounds} rounds "
          f"({platform.python_version()}, {db_kind(args.db)}):")
    print(f"{'how':<12} {'seconds':>9} {'ops/s':>10}")
    for how, seconds in best.items():
        print(f"{how:<12} {seconds:>9.3f} {n / seconds:>10,.0f}")
    print(f"ratio: one list is {best['one by one'] / best['one list']:.1f}x faster")


def db_kind(url: str | None) -> str:
    return "SQLite" if url is None or url.startswith("sqlite") else "PostgreSQL"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--operations", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--db", help="database URL (default: SQLite in a temporary directory)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
