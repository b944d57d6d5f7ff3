"""The scheduler: serialised writers with group commit, parallel readers, failed commits."""

from __future__ import annotations

import asyncio

import pytest

from inventory import errors
from inventory.feed import ChangeFeed
from inventory.inventory import Inventory
from inventory.scheduler import RWLock, Scheduler
from inventory.specs import ItemSpec, StorageSpec
from inventory.store import StoreInDoubt, StoreUnavailable
from inventory.store.sqlite import SQLiteStore
from inventory.writes import AddItems, AddStorage


class FlakyStore(SQLiteStore):
    """A real SQLite store whose next commits can be made to fail, to test the writer's side."""

    fail_next = 0
    lose_answer_next = 0  # commit, then claim the outcome is unknown
    unreachable_checks = 0  # committed_version fails this many times first
    commits = 0

    async def commit(self, ops, version):
        self.commits += 1
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailable("disk on fire")
        await super().commit(ops, version)
        if self.lose_answer_next:
            self.lose_answer_next -= 1
            raise StoreInDoubt("connection lost during COMMIT")

    async def committed_version(self):
        if self.unreachable_checks:
            self.unreachable_checks -= 1
            raise StoreUnavailable("still down")
        return await super().committed_version()


@pytest.fixture
async def scheduler(tmp_path):
    store = FlakyStore(str(tmp_path / "db.sqlite"))
    await store.claim()  # as the server does: the writer's claim first
    await store.open()
    inv = Inventory()
    await store.load(inv)
    sched = Scheduler(inv, store, ChangeFeed(inv.version))
    await sched.start()
    yield sched
    await sched.stop()
    await store.close()


def one(name, **kw):
    return AddItems([ItemSpec(item_name=name, **kw)], batch=False)


async def test_concurrent_writes_are_grouped_into_few_transactions(scheduler):
    results = await asyncio.gather(*(scheduler.write(one(f"n/{i}")) for i in range(300)))
    assert len(results) == 300
    assert scheduler.inventory.counts.items == 300
    assert scheduler.stats.writes == 300
    assert scheduler.stats.transactions < 30, scheduler.stats
    assert scheduler.inventory.version == scheduler.stats.transactions


async def test_arrival_order_decides_who_gets_a_name(scheduler):
    first = scheduler.write(one("same", item_version=1))
    second = scheduler.write(one("same", item_version=1))
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], list)
    assert isinstance(results[1], errors.Conflict)


async def test_failed_commit_changes_no_memory_and_the_writer_goes_on(scheduler):
    await scheduler.write(AddStorage(StorageSpec(name="d", kind="posix", root="/d",
                                                 capacity=10)))
    version = scheduler.inventory.version
    scheduler.store.fail_next = 1
    with pytest.raises(errors.Unavailable):
        await scheduler.write(one("lost", storage="d", size=1))
    inv = scheduler.inventory
    assert inv.version == version
    assert inv.row_of_name("lost") is None
    assert inv.counts.items == 0 and inv.storages[1].used == 0
    assert scheduler.feed.version == version
    await scheduler.write(one("kept", storage="d", size=1))
    assert inv.row_of_name("kept") is not None and inv.version == version + 1


async def test_a_group_that_fails_fails_every_member(scheduler):
    scheduler.store.fail_next = 1
    results = await asyncio.gather(*(scheduler.write(one(f"g/{i}")) for i in range(20)),
                                   return_exceptions=True)
    failed = [r for r in results if isinstance(r, errors.Unavailable)]
    assert failed, "the failing commit refused nobody"
    assert scheduler.inventory.counts.items == len(results) - len(failed)


async def test_writer_apply_waits_for_a_long_reader(scheduler):
    async with scheduler.reading() as inv:
        write = asyncio.create_task(scheduler.write(one("after-reader")))
        await asyncio.sleep(0.2)
        # committed to the database perhaps, but not visible while the reader holds the view
        assert inv.row_of_name("after-reader") is None
        assert not write.done()
    await write
    assert scheduler.inventory.row_of_name("after-reader") is not None


async def test_rwlock_readers_share_and_a_waiting_writer_goes_first():
    lock = RWLock()
    order = []
    async with lock.read(), lock.read():
        assert lock.readers == 2

        async def writer():
            async with lock.write():
                order.append("writer")

        async def late_reader():
            async with lock.read():
                order.append("late reader")

        w = asyncio.create_task(writer())
        await asyncio.sleep(0.05)
        r = asyncio.create_task(late_reader())
        await asyncio.sleep(0.05)
        assert order == []
    await asyncio.gather(w, r)
    assert order == ["writer", "late reader"]


async def test_a_commit_whose_answer_was_lost_is_resolved_from_the_database(scheduler):
    scheduler.store.lose_answer_next = 1
    scheduler.store.unreachable_checks = 3  # the database answers only on the 4th try
    result = await scheduler.write(one("in-doubt"))
    assert result[0].item_name == "in-doubt"  # it was durable, so it is acknowledged
    inv = scheduler.inventory
    assert inv.row_of_name("in-doubt") is not None and inv.version == 1
    assert not scheduler.stats.in_doubt
    await scheduler.write(one("next"))
    assert inv.version == 2


class BrokenApply(AddItems):
    """A write whose memory change fails after the commit (a bug the checks did not catch)."""

    def prepare(self, inv, pending):
        prepared = super().prepare(inv, pending)

        def apply(inv):
            raise RuntimeError("bug")

        prepared.apply = apply
        return prepared


async def test_a_failed_apply_after_commit_stops_writes_until_a_restart(scheduler):
    with pytest.raises(errors.Unavailable):
        await scheduler.write(BrokenApply([ItemSpec(item_name="x")], batch=False))
    assert scheduler.broken and "restart the server" in scheduler.broken
    with pytest.raises(errors.Unavailable) as info:
        await scheduler.write(one("after"))
    assert "restart" in str(info.value)
