"""Finished operations leave memory after a retention period; the database keeps them.

A server that runs for months finishes millions of copies and deletions: kept in memory, they
would make memory a function of history rather than of live work. Queued and running
operations always stay (the file operations engine and every write that checks them read
memory); a done, failed or cancelled one is dropped once it finished ``retention`` seconds ago
(``dlm serve --ops-retention``, config ``ops_retention``), by a periodic sweep that goes through
the writer in small batches (a write prepared beside it sees memory with or without a whole
batch, never half of one; the event loop runs between batches). The start-up load skips them
too.

Queries that can name finished operations (``GET /v1/operations``, ``dlm ops``, the dashboard)
read memory and, once something was dropped, the database as well (``Store.operations``, a
page in id order through the indexes of migration 010), merged by id without duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator

from inventory import model
from inventory.errors import Unavailable
from inventory.inventory import FINISHED_OPERATIONS, Inventory
from inventory.objects import Operation
from inventory.store import Store, StoreError
from inventory.writes import Pending, Prepared, Write

log = logging.getLogger("dlm.retention")

DEFAULT_OPS_RETENTION = 3600.0  # seconds: an hour of finished operations stays in memory
SWEEP_BATCH = 2_000  # operations dropped per write: the loop runs between batches
SWEEP_EVERY_MAX = 60.0  # seconds between sweeps at most (a quarter of the retention if less)


class DropFinishedOperations(Write):
    """Drop up to ``limit`` operations that finished before ``before`` from memory (nothing
    changes in the database: no commit, no feed record)."""

    def __init__(self, before: float, limit: int = SWEEP_BATCH) -> None:
        self.before = before
        self.limit = limit

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        before, limit = self.before, self.limit
        return Prepared([], lambda inv: inv.drop_finished_operations(before, limit), [], rows=0)


async def sweep(scheduler, retention: float) -> int:
    """Drop every operation that finished more than ``retention`` seconds ago, a batch per
    write; the number dropped."""
    total = 0
    while True:
        dropped = await scheduler.write(DropFinishedOperations(model.now() - retention))
        total += dropped
        if dropped < SWEEP_BATCH:
            return total
        await asyncio.sleep(0)


def sweep_interval(retention: float) -> float:
    return min(max(retention / 4, 0.05), SWEEP_EVERY_MAX)


async def sweep_forever(scheduler, retention: float) -> None:
    """The periodic sweep of a writing server (cancelled when it stops)."""
    every = sweep_interval(retention)
    while True:
        await asyncio.sleep(every)
        try:
            dropped = await sweep(scheduler, retention)
        except Unavailable:
            continue  # writes refused for now (claim lost, shutting down): next time
        if dropped:
            log.info("finished operations left memory (the database keeps them)",
                     extra={"operations": dropped, "retention_seconds": retention,
                            "in_memory": len(scheduler.inventory.operations)})


def start(scheduler, retention: float | None) -> asyncio.Task | None:
    if retention is None:
        return None
    return asyncio.create_task(sweep_forever(scheduler, retention), name="dlm-ops-retention")


async def stop(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ------------------------------------------------------------------ queries

def _in_memory(inv: Inventory, states: tuple[str, ...], after: int, before: int | None,
               newest_first: bool) -> Iterator[Operation]:
    low, high = after + 1, None if before is None else before - 1
    if len(states) == 1:
        ids: Iterable[int] = inv.operations_by_state[states[0]].irange(low, high,
                                                                       reverse=newest_first)
    else:
        ids = inv.operations.irange(low, high, reverse=newest_first)
    ops = map(inv.operations.__getitem__, ids)
    return ops if len(states) < 2 else (op for op in ops if op.state in states)


async def find_operations(inv: Inventory, store: Store, *, states: tuple[str, ...] = (),
                          kind: str | None = None, storage_id: int | None = None,
                          oid: int | None = None, after: int = 0, before: int | None = None,
                          limit: int = 100, newest_first: bool = False) -> list[Operation]:
    """Up to ``limit`` operations in id order (descending with ``newest_first``) with an id
    between ``after`` and ``before`` (exclusive), from memory and, when it may hold finished
    ones memory dropped, from the database: each id once (memory's version when both have
    it). Raises Unavailable when the database cannot be read."""
    found: list[Operation] = []
    for op in _in_memory(inv, states, after, before, newest_first):
        if (kind is None or op.kind == kind) and (oid is None or op.oid == oid) and (
                storage_id is None or storage_id in (op.source_id, op.target_id)):
            found.append(op)
            if len(found) >= limit:
                break
    if not inv.operations_in_db_only or (states and FINISHED_OPERATIONS.isdisjoint(states)):
        return found
    finished = tuple(s for s in states if s in FINISHED_OPERATIONS)
    try:
        stored = await store.operations(states=finished, kind=kind, storage_id=storage_id,
                                        oid=oid, after=after, before=before, limit=limit,
                                        newest_first=newest_first)
    except StoreError as exc:
        raise Unavailable(f"cannot read finished operations from the database: {exc}") \
            from None
    merged = {op.id: op for op in stored}
    merged.update((op.id, op) for op in found)
    return sorted(merged.values(), key=lambda o: o.id, reverse=newest_first)[:limit]


async def find_operation(inv: Inventory, store: Store, op_id: int) -> Operation | None:
    """One operation: from memory, else (once finished ones were dropped) the database."""
    op = inv.operations.get(op_id)
    if op is not None or not inv.operations_in_db_only or not 0 < op_id < 2**62:
        return op
    try:
        return await store.operation(op_id)
    except StoreError as exc:
        raise Unavailable(f"cannot read operation {op_id} from the database: {exc}") from None
