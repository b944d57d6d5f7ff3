"""The file operations engine, running inside ``dlm serve``.

It picks queued operations in order, within an overall limit and a per-storage limit, claims
each through the scheduler (``StartOperation``: for a deletion this re-checks the last-copy rule
inside the writer), runs it on the backends, and records the outcome through the scheduler as
well. Nothing here mutates the inventory directly, so the durability contract of every other
write holds for operations too: a server killed mid-copy restarts with the operation ``running``,
queues it again (``RequeueInterrupted``) and copies from the start; a partial target is never
visible, let alone registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from inventory import model
from inventory.errors import DLMError, Unavailable
from inventory.fileops.limits import FileOpsLimits
from inventory.inventory import Inventory, Storage
from inventory.objects import Operation
from inventory.redact import redact_text, storage_secrets
from inventory.scheduler import Scheduler
from inventory.storage import transfer
from inventory.storage.base import Backend
from inventory.storage.errors import IntegrityError, StorageError
from inventory.storage.factory import backend_for
from inventory.storage.paths import replica_path
from inventory.writes_ops import (
    CompleteOperation,
    FailOperation,
    MarkReplica,
    RequeueInterrupted,
    StartOperation,
)

log = logging.getLogger("dlm.fileops")

# After a write the server could not take (503: the database away, the claim being checked),
# operations wait this long before the next try, doubling up to the maximum.
UNAVAILABLE_PAUSE = 0.5
UNAVAILABLE_PAUSE_MAX = 30.0
# Per target storage and wake-up, queued operations that cannot start yet looked at before the
# next storage's turn (see FileOpsEngine._dispatch).
SCAN_LIMIT = 256


class Backends:
    """One backend per storage, rebuilt when the storage's kind, root or config change."""

    def __init__(self) -> None:
        self._open: dict[int, tuple[str, Backend]] = {}

    def get(self, storage: Storage) -> Backend:
        key = json.dumps([storage.kind, storage.root, storage.config], sort_keys=True)
        held = self._open.get(storage.id)
        if held is not None and held[0] == key:
            return held[1]
        backend = backend_for(storage.kind, storage.root, storage.config)
        self._open[storage.id] = (key, backend)
        return backend

    def stop_long_reads(self) -> None:
        for _key, backend in self._open.values():
            backend.stop_long_reads()

    async def close(self) -> None:
        for _key, backend in self._open.values():
            with contextlib.suppress(Exception):
                await backend.close()
        self._open.clear()


def _blame(exc: StorageError, source: Storage, target: Storage) -> Storage:
    """Which storage a failed copy counts against: the side that raised it (``side``, set by
    ``transfer.copy`` for every error: reading the source or writing the target), and only
    that one. A target whose bucket is missing is the target's fault, never a "source not
    found" (issue 25). The guesses below serve only an error nobody tagged."""
    if exc.side is not None:
        return source if exc.side == "source" else target
    if exc.code == "not_found":
        return source
    if exc.code == "unreachable" and source.kind == "s3" and target.kind != "s3":
        return source
    return target


class FileOpsEngine:
    def __init__(self, scheduler: Scheduler, limits: FileOpsLimits | None = None) -> None:
        self.scheduler = scheduler
        self.limits = limits or FileOpsLimits()
        self.backends = Backends()
        self._busy: dict[int, int] = {}
        self._running: dict[int, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._pause = 0.0  # seconds to wait before dispatching again after a refused write
        self._paused: str | None = None  # why dispatching is paused (logged once per pause)

    @property
    def inventory(self) -> Inventory:
        return self.scheduler.inventory

    async def start(self) -> None:
        requeued = await self.scheduler.write(RequeueInterrupted())
        if requeued:
            log.info("operations interrupted by the last stop queued again",
                     extra={"operations": requeued})
        self._task = asyncio.create_task(self._loop(), name="dlm-fileops")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        await self.backends.close()

    def wake(self) -> None:
        """New operations were queued: look now rather than at the next poll."""
        self._wake.set()

    # ------------------------------------------------------------------ dispatch

    async def _loop(self) -> None:
        while True:
            await self._until_writable()
            try:
                self._dispatch()
            except Exception:
                log.exception("file operations dispatch failed")
            self._wake.clear()
            await self._nap(self.limits.poll)

    async def _nap(self, seconds: float) -> None:
        """Until woken or ``seconds`` pass. Not ``asyncio.wait_for``: on Python 3.11 it
        swallows a cancellation that arrives as the event is set, and the engine (and with it
        the server's shutdown) would never stop."""
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((waiter,), timeout=seconds)
        finally:
            waiter.cancel()

    async def _until_writable(self) -> None:
        """While the server cannot write (its write claim lost, the database away), nothing is
        started: an operation needs writes to start and to record its outcome. Waits for the
        claim to come back (or the server to stop: the task is cancelled), logging once."""
        scheduler = self.scheduler
        if not scheduler.accepting_writes():
            self._paused = scheduler.broken or scheduler.claim_lost or "writes refused"
            log.warning("file operations paused: the server cannot write",
                        extra={"reason": self._paused})
            await scheduler.wait_writable()
        if self._pause:
            if self._paused is None:
                self._paused = "the database could not take a write"
                log.warning("file operations paused: the server cannot write",
                            extra={"reason": self._paused, "seconds": self._pause})
            await asyncio.sleep(self._pause)
            await scheduler.wait_writable()
        if self._paused is not None:
            log.info("file operations resumed")
            self._paused = None

    def _unavailable(self) -> None:
        """A write the operation needed was refused for now (503): pause dispatching, longer
        each time in a row, rather than starting operations that cannot be recorded."""
        self._pause = min(max(self._pause * 2, UNAVAILABLE_PAUSE), UNAVAILABLE_PAUSE_MAX)

    def _dispatch(self) -> None:
        """Start what the limits allow: per target storage with room (oldest first among
        them), its queued operations in order. A storage that is busy or left alone is passed
        over whole (``Inventory.queued_by_target``), and at most ``SCAN_LIMIT`` operations
        that cannot start yet (a retry not due, a busy source) are looked at per storage: a
        wake-up costs time in proportion to what it starts, not to the queue (hundreds of
        thousands of operations after a cycle; issue 17)."""
        limits = self.limits
        if len(self._running) >= limits.workers:
            return
        now = model.now()
        inv = self.inventory
        operations, storages, busy = inv.operations, inv.storages, self._busy
        open_targets = sorted(
            (queue[0], target) for target, queue in inv.queued_by_target.items()
            if busy.get(target, 0) < limits.per_storage
            and storages[target].reliability.unreachable_until <= now)
        for _first, target in open_targets:
            skipped = 0
            # no await below: nothing changes the queue while it is walked
            for op_id in inv.queued_by_target[target]:
                if len(self._running) >= limits.workers:
                    return
                if busy.get(target, 0) >= limits.per_storage or skipped >= SCAN_LIMIT:
                    break
                op = operations[op_id]
                if op.id in self._running or (op.not_before is not None
                                              and op.not_before > now):
                    skipped += 1
                    continue
                source = self._choose_source(op) if op.kind == "copy" else None
                if source is not None and (
                        busy.get(source, 0) >= limits.per_storage
                        or storages[source].reliability.unreachable_until > now):
                    skipped += 1
                    continue
                touched = {op.target_id} if source is None else {op.target_id, source}
                for s in touched:
                    busy[s] = busy.get(s, 0) + 1
                task = asyncio.create_task(self._execute(op.id, touched, source),
                                           name=f"dlm-op-{op.id}")
                self._running[op.id] = task

    def _choose_source(self, op: Operation) -> int | None:
        """The complete copy to read: the requested one, else the most reliable, least busy."""
        inv = self.inventory
        row = inv.row_of_oid(op.oid)
        if row is None:
            return None
        now = model.now()
        candidates = [inv.r_storage[r] for r in inv.replica_rows_of_item(row)
                      if inv.r_state[r] == model.COMPLETE and inv.r_storage[r] != op.target_id]
        if op.source_id is not None:
            return op.source_id if op.source_id in candidates else None
        usable = [s for s in candidates
                  if inv.storages[s].reliability.unreachable_until <= now
                  and inv.storages[s].status != "offline"]
        if not usable:
            return None

        def rank(sid: int) -> tuple:
            rel = inv.storages[sid].reliability
            rate = rel.success_rate
            return (-(1.0 if rate is None else rate), self._busy.get(sid, 0),
                    -(rel.throughput or 0.0))

        return min(usable, key=rank)

    # ------------------------------------------------------------------ execution

    async def _execute(self, op_id: int, touched: set[int], source: int | None) -> None:
        try:
            try:
                op = await self.scheduler.write(StartOperation(op_id))
            except Unavailable:
                # not refused: the server cannot write now (a lost claim, the database away).
                # The operation stays queued; dispatching pauses until writes come back.
                self._unavailable()
                return
            except DLMError as exc:
                # refused (e.g. the last-copy rule) or cancelled meanwhile: it ends here
                with contextlib.suppress(DLMError):
                    await self.scheduler.write(FailOperation(op_id, exc.message, retry_in=None))
                log.warning("operation refused", extra={"operation": op_id,
                                                        "reason": exc.message})
                return
            self._pause = 0.0
            if op.state == "done":
                return  # settled inside the writer (a deletion whose file another replica names)
            if op.kind == "copy":
                await self._copy(op, source)
            else:
                await self._delete(op)
        except asyncio.CancelledError:
            raise
        except Unavailable as exc:
            # its outcome could not be recorded: it stays running, and the next start queues
            # it again (RequeueInterrupted)
            self._unavailable()
            log.warning("operation outcome not recorded: the server cannot write",
                        extra={"operation": op_id, "reason": exc.message})
        except Exception:
            log.exception("operation %d crashed", op_id)
            with contextlib.suppress(Exception):
                await self.scheduler.write(FailOperation(op_id, "internal error; see the log",
                                                         retry_in=None))
        finally:
            self._running.pop(op_id, None)
            for s in touched:
                self._busy[s] -= 1
            self._wake.set()

    async def _copy(self, op: Operation, chosen: int | None) -> None:
        """Copy from the source chosen at dispatch (its slot is the one reserved), or, if that
        copy is no longer complete, from the best one left."""
        inv = self.inventory
        row = inv.row_of_oid(op.oid)
        name = inv.i_name[row]
        version = inv.i_version[row]
        size = inv.i_size[row]
        checksum = inv.i_checksum.get(row)
        method = inv.methods[inv.i_method[row]]
        expected_checksum = checksum if method == model.DEFAULT_CHECKSUM_METHOD else None
        chosen_row = None if chosen is None else inv.replica_row(op.oid, chosen)
        usable = chosen_row is not None and inv.r_state[chosen_row] == model.COMPLETE
        source_id = chosen if usable else self._choose_source(op)
        if source_id is None:
            earlier = inv.operations[op.id].last_error
            await self._failed(op, "no complete copy is available to copy from"
                               + (f" (previous attempt: {earlier})" if earlier else ""),
                               None, retryable=False)
            return
        source, target = inv.storages[source_id], inv.storages[op.target_id]
        started = time.monotonic()
        try:
            src_path = replica_path(source, name, version,
                                    inv.r_uri.get(inv.replica_row(op.oid, source_id)))
            dst_row = inv.replica_row(op.oid, op.target_id)
            dst_path = replica_path(target, name, version,
                                    None if dst_row is None else inv.r_uri.get(dst_row))
            # A consistency re-copy replaces its own replica's missing or damaged file; any
            # other copy finds its path free, or a file it wrote itself before a crash.
            result = await transfer.copy(
                self.backends.get(source), src_path, self.backends.get(target), dst_path,
                expected_size=None if size < 0 else size, expected_checksum=expected_checksum,
                replace=op.origin == "consistency")
        except IntegrityError as exc:
            if exc.side == "source":
                # the source copy is bad: never read it again, try another one
                await self.scheduler.write(MarkReplica(op.oid, source_id, "corrupt"))
                log.warning("source copy is corrupt", extra={
                    "item": name, "storage": source.name, "reason": exc.message})
            await self._failed(op, f"{exc.code}: {exc.message}", _blame(exc, source, target),
                               retryable=True)
            return
        except StorageError as exc:
            # retryable errors include a missing target bucket and a lost multipart upload:
            # the next attempt starts the upload over (storage.errors)
            blamed = _blame(exc, source, target)
            await self._failed(op, f"{exc.code} on {blamed.name}: {exc.message}", blamed,
                               retryable=exc.retryable)
            return
        rel = target.reliability
        rel.copies_ok += 1
        rel.consecutive_failures = 0
        rel.bytes_copied += result.size
        rel.copy_seconds += max(time.monotonic() - started, 1e-6)
        await self.scheduler.write(CompleteOperation(op.id, size=result.size,
                                                     checksum=result.checksum))
        log.info("copied", extra={"item": name, "from": source.name, "to": target.name,
                                  "bytes": result.size, "seconds": round(result.seconds, 3),
                                  "origin": op.origin, "operation": op.id})

    async def _delete(self, op: Operation) -> None:
        inv = self.inventory
        row = inv.row_of_oid(op.oid)
        name = inv.i_name[row]
        storage = inv.storages[op.target_id]
        rrow = inv.replica_row(op.oid, op.target_id)
        try:
            path = replica_path(storage, name, inv.i_version[row],
                                None if rrow is None else inv.r_uri.get(rrow))
            await self.backends.get(storage).delete(path)
        except StorageError as exc:
            storage.reliability.deletions_failed += 1
            await self._failed(op, f"{exc.code}: {exc.message}", storage,
                               retryable=exc.retryable)
            return
        storage.reliability.deletions_ok += 1
        await self.scheduler.write(CompleteOperation(op.id))
        log.info("deleted", extra={"item": name, "storage": storage.name, "origin": op.origin,
                                   "operation": op.id})

    async def _failed(self, op: Operation, error: str, blamed: Storage | None, *,
                      retryable: bool = True) -> None:
        limits = self.limits
        if blamed is not None:
            rel = blamed.reliability
            if op.kind == "copy":
                rel.copies_failed += 1
            rel.consecutive_failures += 1
            if rel.consecutive_failures >= limits.unreachable_after:
                rel.unreachable_until = model.now() + limits.unreachable_pause
                log.warning("storage left alone after repeated failures", extra={
                    "storage": blamed.name, "seconds": limits.unreachable_pause})
        current = self.inventory.operations.get(op.id, op)
        # the log, like last_error, shows no storage's credentials (FailOperation masks too)
        error = redact_text(error, storage_secrets(
            s.config for s in self.inventory.storages.values()))
        retry_in = None
        if retryable and current.attempts < limits.max_attempts:
            retry_in = min(limits.retry_base * 2 ** (current.attempts - 1), limits.retry_max)
        log.warning("operation failed", extra={
            "operation": op.id, "kind": op.kind, "error": error, "attempt": current.attempts,
            "retry_in": retry_in})
        await self.scheduler.write(FailOperation(op.id, error, retry_in=retry_in))
