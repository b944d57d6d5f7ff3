"""What the listing indexes (issue 17) cost: bytes per replica, and the sort at the end of a load.

    nice -n 10 .venv/bin/python benchmarks/memory_indexes.py --items 1000000

Builds an inventory from ``generate.records`` (2 replicas per item on 8 storages, as the other
benchmarks) the way a store's load does (``defer_indexes``, chunks of 10,000, then
``settle_indexes``) and measures each listing index: the per-storage item rows (``RowSet``),
the current phase column, the sorted name index and the rows with metadata.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate

from inventory.inventory import Inventory


def sorted_list_bytes(sl) -> int:
    """A SortedList's own memory: its lists of pointers (the strings are the inventory's)."""
    return (sum(sys.getsizeof(part) for part in sl._lists) + sys.getsizeof(sl._lists)
            + sys.getsizeof(sl._maxes) + sys.getsizeof(sl._index))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    args = p.parse_args()
    spec = generate.Spec(items=args.items)
    inv = Inventory()
    for storage in generate.storages(spec):
        inv.add_storage(storage)
    inv.defer_indexes()
    started = time.perf_counter()
    for items, replicas in generate.records(spec, batch=10_000):
        inv.add_items(items)
        inv.add_replicas(replicas)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    inv.settle_indexes()
    settle = time.perf_counter() - started
    n_rep, n_items = inv.counts.replicas, inv.counts.items
    sizes = {
        "storage item rows (RowSet per storage)": sum(
            s.nbytes() for s in inv.storage_items.values()),
        "current phase column (bytearray)": sys.getsizeof(inv.i_phase),
        "name index (SortedList of the names)": sorted_list_bytes(inv.name_index),
        "rows with metadata (RowSet)": inv.with_metadata.nbytes(),
    }
    print(f"{n_items:,} items, {n_rep:,} replicas; load {loaded:.1f} s, of which the indexes' "
          f"sort at the end {settle:.2f} s\n")
    print("| index | MB | bytes per replica | bytes per item |")
    print("|---|---:|---:|---:|")
    for name, size in sizes.items():
        print(f"| {name} | {size / 1e6:.1f} | {size / n_rep:.1f} | {size / n_items:.1f} |")
    total = sum(sizes.values())
    print(f"| all | {total / 1e6:.1f} | {total / n_rep:.1f} | {total / n_items:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
