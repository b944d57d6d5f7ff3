"""The scheduler: readers in parallel, one writer at a time, grouped database commits.

Writes queue in arrival order. The writer takes every write waiting (up to a bound), prepares
each against memory, commits them all in ONE database transaction (group commit: a thousand
concurrent one-item injects pay one fsync, not a thousand), then applies them to memory under
the exclusive lock and acknowledges. A failed commit changes nothing in memory.

Short reads need no lock: they run on the event loop between two awaits and memory only changes
inside ``apply``, which never awaits. Long reads that await while reading (streaming a snapshot)
hold ``read()``, and a writer's apply waits for them; a waiting writer holds back new readers so a
stream of readers cannot starve it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from inventory.errors import BadRequest, Conflict, DLMError, Unavailable
from inventory.feed import ChangeFeed
from inventory.inventory import Inventory
from inventory.memory import gc_paused
from inventory.store import (
    ClaimRefused,
    ClaimStale,
    Store,
    StoreConflict,
    StoreError,
    StoreInDoubt,
    StoreRefused,
)
from inventory.writes import Pending, Prepared, Write

log = logging.getLogger("dlm.scheduler")

MAX_GROUP_WRITES = 512  # bounds the latency one group adds to the writes queued behind it
CLAIM_CHECK = 0.5  # seconds between two looks at the store's write claim
CLAIM_RETRY_MAX = 5.0  # while it is lost, tries to take it back space out up to this


class RWLock:
    """Many readers or one writer; writers first once one is waiting."""

    def __init__(self) -> None:
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            async with self._changed:
                self._readers -= 1
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        async with self._changed:
            self._writers_waiting += 1
            try:
                await self._changed.wait_for(lambda: not self._writing and not self._readers)
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            async with self._changed:
                self._writing = False
                self._changed.notify_all()

    @property
    def readers(self) -> int:
        return self._readers


COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _bucket_counts(bounds: tuple[float, ...]) -> list[int]:
    return [0] * (len(bounds) + 1)  # the last one is +Inf


@dataclass(slots=True)
class WriterStats:
    """What the writer measured, for /metrics: counters and two cumulative histograms."""

    commit_buckets: list[int] = field(default_factory=lambda: _bucket_counts(COMMIT_BUCKETS))
    group_buckets: list[int] = field(default_factory=lambda: _bucket_counts(GROUP_BUCKETS))
    transactions: int = 0
    writes: int = 0
    failed_commits: int = 0
    last_group_size: int = 0
    commit_seconds: float = 0.0
    in_doubt: bool = False  # a commit's outcome is unknown until the database answers


class Scheduler:
    """``on_fatal(reason)`` is called once when the server must not go on writing (another
    server wrote while this one had lost its claim): ``dlm serve`` then exits non-zero."""

    def __init__(self, inventory: Inventory, store: Store, feed: ChangeFeed,
                 on_fatal: Callable[[str], None] | None = None) -> None:
        self.inventory = inventory
        self.store = store
        self.feed = feed
        self.on_fatal = on_fatal
        self.lock = RWLock()
        self.stats = WriterStats()
        self._queue: asyncio.Queue[tuple[Write, asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._claim_task: asyncio.Task | None = None
        # One of: a group's commit and apply, an in-doubt resolution, a re-take of the claim.
        # The re-take compares the database's version with memory's: no commit may be halfway.
        self._store_turn = asyncio.Lock()
        self.broken: str | None = None  # why writes are refused until a restart
        self._claim_lost: str | None = None
        # set while writes are accepted: what retries writes (the file operations engine)
        # waits on it instead of trying again and again while the claim is lost
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def claim_lost(self) -> str | None:
        """Why writes are refused until the claim is back (None while it is held)."""
        return self._claim_lost

    @claim_lost.setter
    def claim_lost(self, reason: str | None) -> None:
        self._claim_lost = reason
        if reason is None and not self.broken:
            self._writable.set()
        else:
            self._writable.clear()

    def accepting_writes(self) -> bool:
        """Whether a write would be tried now (not refused at once for a lost claim or a
        broken writer)."""
        return self._writable.is_set() and not self.broken

    async def wait_writable(self) -> None:
        """Until writes are accepted again (the claim taken back); never returns on a broken
        writer (the server is stopping). Cancel it to stop waiting."""
        while not self.accepting_writes():
            if self.broken:
                self._writable.clear()
            await self._writable.wait()

    def check_claim(self) -> str | None:
        """Why writes cannot be acknowledged now, looking at the claim itself (cheap: no
        database round trip; a file's inode for SQLite), so that /v1/health reports a lost
        claim before a write tries it. It only reports: the next write or the background check
        takes the claim back or refuses (a PostgreSQL that is merely down is not a refusal)."""
        if self._claim_lost is None and not self.broken and not self.store.holds_claim():
            return (f"this server does not hold its write claim on the database "
                    f"({self.store.claim_lost_why}); writes wait until it holds it again")
        return self._claim_lost

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dlm-writer")
        self._claim_task = asyncio.create_task(self._keep_claim(), name="dlm-claim")

    async def stop(self) -> None:
        for task in (self._task, self._claim_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._claim_task = None
        while not self._queue.empty():
            _write, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(Unavailable("the server is shutting down"))

    async def write(self, write: Write):
        """Queue ``write`` and return its result once it is durable and visible."""
        if self.broken:
            raise Unavailable(self.broken)
        if self.claim_lost:
            raise Unavailable(self.claim_lost)
        if self._task is None or self._task.done():
            raise Unavailable("the writer is not running")
        future = asyncio.get_running_loop().create_future()
        # a client that went away leaves nobody to read a failure: read it here, so that it is
        # not logged as "Future exception was never retrieved"
        future.add_done_callback(_retrieve)
        await self._queue.put((write, future))
        # Shield: a client that disconnects must not cancel a commit in flight.
        return await asyncio.shield(future)

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[Inventory]:
        async with self.lock.read():
            yield self.inventory

    # ----------------------------------------------------------------- writer

    async def _run(self) -> None:
        queue = self._queue
        while True:
            group = [await queue.get()]
            while not queue.empty() and len(group) < MAX_GROUP_WRITES:
                group.append(queue.get_nowait())
            for part in split_alone(group):
                try:
                    async with self._store_turn:
                        await self._commit_group(part)
                except Exception as exc:  # the writer must survive anything one group does
                    log.exception("writer failed on a group of %d writes", len(part))
                    for _write, future in part:
                        if not future.done():
                            future.set_exception(
                                Unavailable(f"internal error while writing: {exc}"))

    async def _commit_group(self, group: list[tuple[Write, asyncio.Future]]) -> None:
        ready = self._prepare(group)
        if not ready:
            return
        try:
            await self._commit(ready)
        except (StoreConflict, StoreRefused) as exc:
            if len(ready) == 1:
                raise_into(ready, _refusal(exc))
                return
            # One write broke a constraint or holds a value the checks did not foresee, and the
            # database's words name it (another client's value). Prepare and commit each write
            # again on its own, against memory as it is then (the failed commit changed
            # nothing there), so only the culprit fails, with its own error.
            log.warning("group commit of %d writes refused; retrying one by one", len(ready),
                        extra={"error": str(exc)})
            for write, future in [(w, f) for w, f in group if not f.done()]:
                if self.broken:
                    future.set_exception(Unavailable(self.broken))
                    continue
                one = self._prepare([(write, future)])
                if not one:
                    continue
                try:
                    await self._commit(one)
                except (StoreConflict, StoreRefused) as exc:
                    raise_into(one, _refusal(exc))
                except StoreError as exc:
                    raise_into(one, Unavailable(f"the database could not commit: {exc}"))
        except StoreError as exc:
            log.error("commit failed, %d writes refused: %s", len(ready), exc)
            raise_into(ready, Unavailable(f"the database could not commit: {exc}"))

    def _prepare(self, group: list[tuple[Write, asyncio.Future]]
                 ) -> list[tuple[Prepared, asyncio.Future]]:
        pending = Pending()
        ready = []
        # a cycle's plan makes hundreds of thousands of records here and in apply: collections
        # would walk the change feed's million records each time (inventory.memory)
        with gc_paused():
            for write, future in group:
                if future.done():
                    continue
                try:
                    ready.append((write.prepare(self.inventory, pending), future))
                except DLMError as exc:
                    future.set_exception(exc)
        return ready

    # ----------------------------------------------------------------- the write claim

    async def _keep_claim(self) -> None:
        """Notice a lost write claim and take it back (or give up writing) without waiting for
        a client's write: meanwhile writes are refused at once (503), reads go on."""
        told = False  # the loss is logged once, not every look
        delay = CLAIM_CHECK
        while not self.broken:
            await asyncio.sleep(delay)
            if self._claim_lost is None and self.store.holds_claim():
                told = False
                delay = CLAIM_CHECK
                continue
            # lost: try to take it back, less and less often while another server holds it
            delay = min(delay * 2, CLAIM_RETRY_MAX)
            async with self._store_turn:
                if self._claim_lost is None and self.store.holds_claim():
                    continue
                if not told:
                    log.warning(f"the write claim is lost ({self.store.claim_lost_why}); "
                                f"taking it back", extra={"version": self.inventory.version})
                    told = True
                with contextlib.suppress(ClaimStale):  # _retake_claim has stopped the writer
                    await self._retake_claim()
            if self._claim_lost is None:
                delay = CLAIM_CHECK

    async def _retake_claim(self) -> None:
        """Take the claim back; go on writing only if the database is still at memory's
        version (ClaimStale, and the server stops, if someone else wrote)."""
        try:
            found = await self.store.claimed_version()
        except ClaimRefused as exc:
            self._claim_refused(str(exc))
            return
        except StoreError as exc:  # unreachable: writes try themselves (503 while it is)
            log.debug("cannot take the write claim back yet", extra={"error": str(exc)})
            self.claim_lost = None
            return
        if found != self.inventory.version:
            raise self._stale(f"the database is at inventory version {found} and this server's "
                              f"memory at {self.inventory.version}: another server wrote while "
                              f"this one did not hold the write claim")
        log.warning("write claim taken back; writes accepted again", extra={"version": found})
        self.claim_lost = None

    def _claim_refused(self, why: str) -> None:
        reason = (f"this server has lost its write claim on the database ({why}); writes are "
                  f"refused until it holds it again")
        if reason != self.claim_lost:
            log.error("write claim lost; refusing writes", extra={"reason": why})
        self.claim_lost = reason

    def _stale(self, why: str) -> ClaimStale:
        """Stop writing for good: memory is not the database's any more. ``on_fatal`` ends the
        server so that a restart (a supervisor's) loads the database again."""
        if self.broken is None:
            self.broken = f"{why}; restart the server to reload the inventory"
            self._writable.clear()
            log.error("not writing on a stale inventory; stopping", extra={"reason": why})
            if self.on_fatal is not None:
                self.on_fatal(self.broken)
        return ClaimStale(why)

    async def _committed_after_all(self, version: int, exc: StoreError) -> bool:
        """Did the commit of ``version`` happen? Its answer was lost (the connection broke during
        COMMIT, say); the database knows. Ask it, under the claim taken back, until it answers:
        the writer waits meanwhile, so memory never runs ahead of or behind the database."""
        delay = 0.05
        warned = False
        others = None  # a server that held the claim while this one asked
        stats = self.stats
        while True:
            try:
                found = await self.store.claimed_version()
            except StoreError as failure:
                if isinstance(failure, ClaimRefused):
                    others = failure.holder
                    self._claim_refused(str(failure))
                if not warned:
                    log.error("commit outcome unknown, asking the database until it answers",
                              extra={"version": version, "error": str(exc)})
                    warned = True
                stats.in_doubt = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            stats.in_doubt = False
            if found == version - 1:
                self.claim_lost = None
                return False
            if found == version and others is None:
                log.warning("commit reported failed but was durable; applying it",
                            extra={"version": version, "error": str(exc)})
                self.claim_lost = None
                return True
            if found == version:  # ours, or the other server's first commit: no telling
                raise self._stale(f"the commit of inventory version {version} was in doubt and "
                                  f"another server ({others}) held the write claim meanwhile")
            raise self._stale(f"the database is at inventory version {found}, memory at "
                              f"{version - 1}: another writer changed it")

    async def _commit(self, ready: list[tuple[Prepared, asyncio.Future]]) -> None:
        inv = self.inventory
        ops = [op for prepared, _ in ready for op in prepared.ops]
        if not ops:  # nothing to make durable (a write that found nothing to do)
            for prepared, future in ready:
                if not future.done():
                    future.set_result(prepared.apply(inv))
            return
        version = inv.version + 1
        started = time.perf_counter()
        try:
            await self.store.commit(ops, version)
        except StoreInDoubt as exc:
            self.stats.failed_commits += 1
            if not await self._committed_after_all(version, exc):
                raise
        except ClaimStale as exc:
            self.stats.failed_commits += 1
            raise self._stale(str(exc)) from None
        except ClaimRefused as exc:
            self.stats.failed_commits += 1
            self._claim_refused(str(exc))
            raise
        except StoreError:
            self.stats.failed_commits += 1
            raise
        self.claim_lost = None  # the commit held the claim, taken back if it had to be
        elapsed = time.perf_counter() - started
        self.stats.commit_seconds += elapsed
        self.stats.commit_buckets[bisect.bisect_left(COMMIT_BUCKETS, elapsed)] += 1
        self.stats.group_buckets[bisect.bisect_left(GROUP_BUCKETS, len(ready))] += 1
        async with self.lock.write():
            changes = []
            results = []
            try:
                with gc_paused():
                    for prepared, _future in ready:
                        results.append(prepared.apply(inv))
                        changes.extend(prepared.changes)
            except Exception as exc:
                # The database has the transaction and memory has part of it: serving on would
                # mean answering from an inventory that is not the database's. Stop writing;
                # a restart loads the truth.
                self.broken = (f"memory could not apply committed version {version} ({exc!r}); "
                               f"restart the server to reload the inventory from the database")
                self._writable.clear()
                log.critical("inventory memory is inconsistent", exc_info=True,
                             extra={"version": version})
                raise
            inv.version = version
            self.feed.append(version, changes)
        stats = self.stats
        stats.transactions += 1
        stats.writes += len(ready)
        stats.last_group_size = len(ready)
        for (_prepared, future), result in zip(ready, results, strict=True):
            if not future.done():
                future.set_result(result)


def split_alone(group: list[tuple[Write, asyncio.Future]]
                ) -> list[list[tuple[Write, asyncio.Future]]]:
    """The group in order, each write marked ``alone`` in a group of its own."""
    if not any(write.alone for write, _ in group):
        return [group]
    parts: list[list[tuple[Write, asyncio.Future]]] = [[]]
    for entry in group:
        if entry[0].alone:
            parts.extend(([entry], []))
        else:
            parts[-1].append(entry)
    return [part for part in parts if part]


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _refusal(exc: StoreConflict | StoreRefused) -> DLMError:
    """What the client whose write alone the database refused is told: its own error."""
    log.warning("the database refused a write", extra={"error": str(exc)})
    if isinstance(exc, StoreConflict):
        return Conflict(f"the database refused the change: {exc}")
    return BadRequest(f"the database refused a value of this request: {exc}", "body")


def raise_into(ready: list[tuple[Prepared, asyncio.Future]], exc: DLMError) -> None:
    for _prepared, future in ready:
        if not future.done():
            future.set_exception(exc)
