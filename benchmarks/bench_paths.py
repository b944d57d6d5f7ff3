"""What one file per replica costs the Dealer's apply: the claim of each queued copy's path.

Builds an in-memory inventory of N items (every tenth a version 2) with one replica each, then
times ``QueueOperations.copy_replica`` (what ``ApplyDealerPlan`` calls per copy) for a copy of
every item to a second storage, with the path claim and with it disabled, taking turns so that
load from other processes falls on both alike.

    python benchmarks/bench_paths.py [N]
"""

from __future__ import annotations

import gc
import sys
import time

import inventory.writes_ops as writes_ops
from inventory import model
from inventory.inventory import Inventory
from inventory.records import ItemRecord, ReplicaRecord, StorageRecord
from inventory.writes import Claims, Pending


def build(n: int) -> tuple[Inventory, list[ItemRecord]]:
    inv = Inventory()
    for sid in (1, 2):
        inv.add_storage(StorageRecord(sid, f"s{sid}", "posix", f"/d{sid}", 10**15, 1,
                                      "online", {}, {}, 1.0))
    items = [ItemRecord(model.new_oid(), f"run/file-{i:08d}", 2 if i % 10 == 0 else 1,
                        model.FILE, model.READY, 1, 100, None, None, None, None, 1.0, None, 0,
                        None, None, None) for i in range(n)]
    inv.add_items(items)
    inv.add_replicas([ReplicaRecord(r.oid, 1, None, model.COMPLETE, 100, None, 1.0, None, None)
                      for r in items])
    return inv, items


def queue_all(inv: Inventory, items: list[ItemRecord]) -> float:
    target = inv.storages[2]
    pending, claimed = Pending(), set()
    mine = Claims(new_replicas=claimed)
    copy_replica, spec_of = writes_ops.QueueOperations.copy_replica, writes_ops.OperationSpec
    started = time.perf_counter()
    for rec in items:
        copy_replica(inv, spec_of("copy", rec.oid, 2, None), inv.by_oid[rec.oid], target,
                     inv.replica_row(rec.oid, 2), "", 1.0, pending, mine)
        claimed.add((rec.oid, 2))
    return time.perf_counter() - started


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    inv, items = build(n)
    gc.freeze()
    claim = writes_ops.claim_path
    best = {"with claim": float("inf"), "without": float("inf")}
    for _ in range(3):
        for label in best:
            writes_ops.claim_path = claim if label == "with claim" else (lambda *a, **k: None)
            best[label] = min(best[label], queue_all(inv, items))
    writes_ops.claim_path = claim
    for label, seconds in best.items():
        print(f"{label:>10}: {n} copies {seconds:.2f} s, {seconds / n * 1e6:.2f} us/copy")
    extra = best["with claim"] - best["without"]
    print(f"claim: {extra / n * 1e6:.2f} us/copy, {best['with claim'] / best['without']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
