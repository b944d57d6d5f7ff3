"""Measure the memory that two proposed inventory column changes would save, before making them.

    .venv/bin/python benchmarks/memory_variants.py --db dlm_bench_load   # made by generate.py

Loads the database (PostgresStore.load, in a fresh process per variant) into:

- ``current``: ``inventory.Inventory`` as it is;
- ``replica-checksums``: the replica checksum kept packed like the item checksum
  (``inventory.Checksums``: 9 bytes a row) instead of a sparse dict of strings (~75 bytes a
  replica plus the string), since every replica made by the one-call ingest or a verified copy
  has one;
- ``owner-group``: owner and group as 2-byte codes into a table of distinct names (as
  ``i_method`` does for checksum methods) instead of sparse dicts (~45 bytes an item each), since
  production items nearly all have both;
- ``both``.

The variants are subclasses that move a field out of the way of ``Inventory.add_items`` /
``add_replicas`` and store it themselves, so their load time is not what a real change would
cost; their memory is. This is a throwaway prototype for a change to ``inventory/inventory.py``:
delete it once such a change has landed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from inventory.inventory import Checksums, Inventory  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
VARIANTS = ("current", "replica-checksums", "owner-group", "both")


class Codes:
    """A column of 2-byte codes into a list of distinct strings; code 0 is None."""

    __slots__ = ("_code", "_index", "_names")

    def __init__(self) -> None:
        self._code = array("H")
        self._names: list[str | None] = [None]
        self._index: dict[str | None, int] = {None: 0}

    def extend(self, values) -> None:
        index, names = self._index, self._names
        for value in values:
            code = index.get(value)
            if code is None:
                code = index[value] = len(names)
                names.append(sys.intern(value))
            self._code.append(code)

    def get(self, row: int) -> str | None:
        return self._names[self._code[row]]


def variant_class(name: str) -> type[Inventory]:
    packed_checksums = name in ("replica-checksums", "both")
    coded_owners = name in ("owner-group", "both")

    class Variant(Inventory):
        def __init__(self) -> None:
            super().__init__()
            if packed_checksums:
                self.r_checksum = Checksums()
            if coded_owners:
                self.i_owner, self.i_group = Codes(), Codes()

        def add_items(self, records):
            if not coded_owners:
                return super().add_items(records)
            owner, group = self.i_owner, self.i_group
            self.i_owner, self.i_group = {}, {}
            try:
                rows = super().add_items([(*r[:15], None, None) for r in records])
            finally:
                self.i_owner, self.i_group = owner, group
            owner.extend([r[15] for r in records])
            group.extend([r[16] for r in records])
            return rows

        def add_replicas(self, records):
            if not packed_checksums:
                return super().add_replicas(records)
            checksums = self.r_checksum
            self.r_checksum = {}
            try:
                rows = super().add_replicas([(*r[:5], None, *r[6:]) for r in records])
            finally:
                self.r_checksum = checksums
            checksums.extend([r[5] for r in records])
            return rows

    return Variant


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


async def measure(url: str, variant: str) -> dict:
    from inventory.store.postgres import PostgresStore

    store = PostgresStore(url)
    await store.open()
    inv = variant_class(variant)()
    gc.collect()
    before = rss()
    started = time.perf_counter()
    await store.load(inv)
    seconds = time.perf_counter() - started
    gc.collect()
    after = rss()
    await store.close()
    return {"variant": variant, "seconds": seconds, "bytes": after - before,
            "items": inv.counts.items, "replicas": inv.counts.replicas}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="database name (or postgresql:// URL)")
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    url = args.db if "://" in args.db else args.admin_url.rsplit("/", 1)[0] + "/" + args.db
    if args.variant:
        import uvloop

        print(json.dumps(uvloop.run(measure(url, args.variant))))
        return 0
    print("| variant | bytes per replica (item costs included) | total MB |")
    print("|---|---|---|")
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--db", url, "--variant", variant],
                             check=True, capture_output=True, text=True, cwd=REPO)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {variant} | {r['bytes'] / r['replicas']:.0f} B | {r['bytes'] / 2**20:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
