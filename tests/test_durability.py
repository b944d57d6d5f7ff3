"""Durability under SIGKILL, on both backends (DESIGN.md, "Durability and safety contract").

Clients inject items (one per request, or a list in one request) through REST while the server
subprocess is killed with SIGKILL at a random (seeded) moment, then restarted on the same database:
- every acknowledged inject (a complete 201 answer) is there with identical fields;
- an unacknowledged request is all-or-nothing: every item of it with its replica, or none of it;
- nothing appears that no client asked for, and the counts in /v1/health agree;
- the inventory version never goes backwards across a restart.
A server that acknowledged before its commit was durable fails these tests.

The seed is ``DLM_TEST_SEED`` (printed on failure) so a failing schedule can be replayed.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from inventory.client import Client
from inventory.storage.paths import default_path
from tests.conftest import REPO, ServerProcess, wait_healthy
from tests.pgcluster import PgCluster, throwaway_cluster

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("DLM_TEST_SEED", "20261125"))
ROUNDS = 4
INJECTORS = 4
# verify_ingest off: a storage this test server cannot reach (its root is not a real
# directory); what it tests is not ingest, which tests/test_ingest.py covers.
STORAGE = {"name": "disk1", "kind": "posix", "root": "/data/disk1", "capacity": "100 PB",
           "phase": "GAS", "config": {"verify_ingest": False}}
# Fields a client chose, checked on every item even when its full record was never seen.
SPEC_FIELDS = ("item_name", "size", "checksum", "metadata", "target_phase", "owner", "group",
               "expire_at")


@dataclass
class Attempt:
    """One POST /v1/items: what was sent, and what came back if it was acknowledged."""

    round: int
    specs: list[dict[str, Any]]
    batch: bool
    acked: list[dict[str, Any]] | None = None  # per item: the answer (batch: oid and version)
    full: dict[str, dict[str, Any]] = field(default_factory=dict)  # oid -> full record seen
    present: bool | None = None  # an unacknowledged attempt: found after the first restart?

    @property
    def names(self) -> list[str]:
        return [s["item_name"] for s in self.specs]


def item_spec(rng: random.Random, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "item_name": name,
        "storage": "disk1",
        "size": rng.randrange(0, 1 << 40),  # a storage sums them: stay far below 2^63
        "checksum": f"{rng.getrandbits(32):08x}",
        "metadata": {"seq": rng.randrange(10**9), "ratio": rng.random(),
                     "tags": rng.sample(["raw", "cal", "img", "vis", "psf"], 2),
                     "nested": {"beam": rng.randrange(64), "ok": rng.random() < 0.5}},
        "target_phase": rng.choice(["GAS", "LIQUID", "SOLID"]),
    }
    if rng.random() < 0.3:
        spec["owner"], spec["group"] = "pipeline", f"proj{rng.randrange(5)}"
    if rng.random() < 0.3:
        spec["expire_at"] = f"2031-0{rng.randrange(1, 10)}-1{rng.randrange(10)}T12:00:00Z"
    if rng.random() < 0.2:
        spec["uri"] = f"/data/disk1/elsewhere/{name}"
    if rng.random() < 0.1:
        spec["item_version"] = rng.randrange(2, 9)
    return spec


def check_spec(item: dict[str, Any], spec: dict[str, Any]) -> None:
    """``item`` (as GET returns it) is what ``spec`` asked for, with its complete replica."""
    for key in SPEC_FIELDS:
        expected = spec.get(key)
        if key == "metadata":
            expected = expected or {}
        if key == "target_phase":
            expected = expected or "SOLID"
        assert item[key] == expected, (key, item, spec)
    if "item_version" in spec:
        assert item["item_version"] == spec["item_version"]
    assert item["state"] == "READY", item
    assert item["checksum_method"] == "adler32"
    assert len(item["replicas"]) == 1, f"the item without its replica (not atomic): {item}"
    [replica] = item["replicas"]
    assert replica["oid"] == item["oid"]
    assert (replica["storage"], replica["state"], replica["size"], replica["checksum"]) == \
        ("disk1", "complete", spec["size"], spec["checksum"]), item
    default = default_path(spec["item_name"], item["item_version"])  # name@vN for N >= 2
    assert replica["uri"] == spec.get("uri", f"/data/disk1/{default}")


async def injector(session: aiohttp.ClientSession, url: str, rng: random.Random, prefix: str,
                   rnd: int, attempts: list[Attempt], unexpected: list[Any],
                   stop: asyncio.Event | None = None) -> None:
    """POST until the server is gone (or ``stop`` is set); record every request and every
    acknowledgement. With ``stop``, a 503 (the database is down) is expected and retried."""
    seq = 0
    while stop is None or not stop.is_set():
        n = 1 if rng.random() < 0.5 else rng.randrange(2, 40)
        batch = n > 1 or rng.random() < 0.2  # sometimes a list of one
        specs = [item_spec(rng, f"{prefix}/{seq + i:06d}") for i in range(n)]
        seq += n
        attempt = Attempt(rnd, specs, batch)
        attempts.append(attempt)
        try:
            async with session.post(url + "/v1/items",
                                    json=specs if batch else specs[0]) as resp:
                status = resp.status
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, ConnectionError, ValueError, TimeoutError):
            return  # killed: this request stays unacknowledged
        if status == 503 and stop is not None:
            assert body["error"]["code"] == "unavailable"
            await asyncio.sleep(0.01)
            continue
        if status != 201:
            unexpected.append((status, body))
            return
        attempt.acked = body["items"] if batch else [body]
        if batch:
            assert body["count"] == n
            # Read back what the batch made while the server is alive, to compare it later
            # field by field (a reader between writes: it must see the whole write).
            try:
                for answer in attempt.acked[: 5]:
                    async with session.get(f"{url}/v1/items/{answer['oid']}") as resp:
                        if resp.status != 200:
                            unexpected.append((resp.status, await resp.text()))
                            return
                        attempt.full[answer["oid"]] = await resp.json()
            except (aiohttp.ClientError, ConnectionError, ValueError, TimeoutError):
                return
        else:
            attempt.full[body["oid"]] = body


async def version_poller(session: aiohttp.ClientSession, url: str, seen: list[int]) -> None:
    """Versions the server reported while alive: none may be missing after a restart."""
    while True:
        try:
            async with session.get(url + "/v1/health") as resp:
                seen.append((await resp.json())["version"])
        except (aiohttp.ClientError, ConnectionError, ValueError, TimeoutError):
            return
        await asyncio.sleep(0.02)


async def everything(url: str) -> dict[str, dict[str, Any]]:
    """Every item of every version, by name (names are unique in these tests)."""
    found: dict[str, dict[str, Any]] = {}
    async with Client(url, token="") as client:
        async for item in client.find_items("*", version="all", limit=10_000):
            assert item["item_name"] not in found, f"two items named {item['item_name']}"
            found[item["item_name"]] = item
    return found


async def verify(url: str, attempts: list[Attempt], *, seed: str) -> dict[str, Any]:
    """Check the restarted server against every request ever made; returns its health."""
    health = await wait_healthy(url)
    found = await everything(url)
    expected_names: set[str] = set()
    for attempt in attempts:
        where = f"seed {seed}, round {attempt.round}, {attempt.names[0]}.."
        if attempt.acked is not None:
            for spec, answer in zip(attempt.specs, attempt.acked, strict=True):
                item = found.get(spec["item_name"])
                assert item is not None, f"acknowledged item lost ({where}): {answer}"
                assert item["oid"] == answer["oid"], where
                assert item["item_version"] == answer["item_version"], where
                check_spec(item, spec)
                if answer["oid"] in attempt.full:
                    assert item == attempt.full[answer["oid"]], f"fields changed ({where})"
            expected_names.update(attempt.names)
            continue
        here = [name in found for name in attempt.names]
        assert all(here) or not any(here), (
            f"unacknowledged request half applied ({where}): "
            f"{sum(here)} of {len(here)} items present")
        if attempt.present is None:
            attempt.present = all(here)
        assert attempt.present == all(here), f"an unacknowledged request changed later ({where})"
        if attempt.present:
            for spec in attempt.specs:
                item = found[spec["item_name"]]
                check_spec(item, spec)
                # From now on it is as good as acknowledged: it must never change.
                if attempt.full.setdefault(item["oid"], item) != item:
                    raise AssertionError(f"fields changed ({where})")
            expected_names.update(attempt.names)
    phantoms = set(found) - expected_names
    assert not phantoms, f"items nobody asked for: {sorted(phantoms)[:5]}"
    assert health["items"] == len(found)
    assert health["replicas"] == sum(len(i["replicas"]) for i in found.values())
    return health


async def test_acknowledged_injects_survive_sigkill(db_url, server_process):
    backend = db_url.split(":", 1)[0]
    seed = f"{SEED}-{backend}"
    rng = random.Random(seed)
    srv: ServerProcess = server_process(db_url).start()
    await wait_healthy(srv.url)
    async with Client(srv.url, token="") as client:
        await client.add_storage(**STORAGE)
    attempts: list[Attempt] = []
    last_version = 0
    total_acked = 0
    timeout = aiohttp.ClientTimeout(total=60)
    for rnd in range(ROUNDS):
        health = await wait_healthy(srv.url)
        assert health["version"] >= last_version
        seen = [health["version"]]
        unexpected: list[Any] = []
        this_round: list[Attempt] = []
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks = [asyncio.create_task(injector(session, srv.url, random.Random(rng.random()),
                                                  f"r{rnd}/w{k}", rnd, this_round, unexpected))
                     for k in range(INJECTORS)]
            tasks.append(asyncio.create_task(version_poller(session, srv.url, seen)))
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            srv.kill()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert not unexpected, f"the live server refused valid requests: {unexpected[:3]}"
        acked = sum(len(a.specs) for a in this_round if a.acked is not None)
        assert acked > 0, "nothing was acknowledged before the kill: the round tested nothing"
        total_acked += acked
        attempts.extend(this_round)

        srv = server_process(db_url).start()
        health = await verify(srv.url, attempts, seed=seed)
        assert health["version"] >= max(seen), (
            f"inventory version went backwards: {health['version']} < {max(seen)} (seed {seed})")
        lost = [a for a in this_round if a.acked is None]
        print(f"round {rnd}: {acked} items acknowledged in "
              f"{sum(a.acked is not None for a in this_round)} requests; unacknowledged "
              f"requests: {sum(bool(a.present) for a in lost)} committed, "
              f"{sum(not a.present for a in lost)} absent; version {max(seen)} -> "
              f"{health['version']}")
        last_version = health["version"]
    assert total_acked >= ROUNDS * 10
    # A clean stop and start changes nothing either.
    srv.stop()
    srv = server_process(db_url).start()
    health = await verify(srv.url, attempts, seed=seed)
    assert health["version"] == last_version


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    yield from throwaway_cluster()


@pytest.mark.postgres
async def test_acknowledged_injects_survive_a_postgresql_crash(pg_cluster, server_process):
    """PostgreSQL (not the server) crashes under injects and comes back: writes get 503 while
    it is down, and every acknowledged one is there after both restart."""
    seed = f"{SEED}-pgcrash"
    rng = random.Random(seed)
    srv = server_process(pg_cluster.url).start()
    await wait_healthy(srv.url)
    async with Client(srv.url, token="") as client:
        await client.add_storage(**STORAGE)
    attempts: list[Attempt] = []
    unexpected: list[Any] = []
    seen: list[int] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        tasks = [asyncio.create_task(injector(session, srv.url, random.Random(rng.random()),
                                              f"pgcrash/w{k}", 0, attempts, unexpected, stop))
                 for k in range(INJECTORS)]
        tasks.append(asyncio.create_task(version_poller(session, srv.url, seen)))
        async def acknowledged(more: int) -> None:
            """Until ``more`` writes more are acknowledged (a loaded machine is slow to send
            them: a fixed time would crash PostgreSQL under too few to tell anything)."""
            target = sum(a.acked is not None for a in attempts) + more
            for _ in range(1200):
                if sum(a.acked is not None for a in attempts) >= target:
                    return
                await asyncio.sleep(0.05)

        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            await acknowledged(10)
            await asyncio.to_thread(pg_cluster.stop, "immediate")
            await asyncio.sleep(rng.uniform(0.1, 0.5))
            await asyncio.to_thread(pg_cluster.start)
        await asyncio.sleep(0.5)
        await acknowledged(5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks[:-1]), 60)
        assert not unexpected, f"unexpected answers: {unexpected[:3]}"
        health = await wait_healthy(srv.url)
        memory = await everything(srv.url)
        srv.kill()
        await asyncio.wait_for(tasks[-1], 60)
    acked = sum(a.acked is not None for a in attempts)
    print(f"{acked} of {len(attempts)} requests acknowledged across 3 crashes of PostgreSQL")
    assert acked > 30
    srv = server_process(pg_cluster.url).start()
    restarted = await verify(srv.url, attempts, seed=seed)
    assert restarted["version"] >= max(seen)
    # Everything the running server had in memory was in the database, field for field.
    # (The database may hold more: a commit whose answer a crash swallowed; that memory must
    # then agree with the database is test_commit_failure.py::test_in_doubt_commit_..., made
    # deterministic there.)
    durable = await everything(srv.url)
    assert {name: durable.get(name) for name in memory} == memory
    assert restarted["items"] >= health["items"]


# ------------------------------------------------------------------------------ startup


def launch(srv: ServerProcess) -> None:
    """Start the server process without waiting for it (to kill it while it starts)."""
    with open(srv.log_path, "ab") as log:
        srv.proc = subprocess.Popen(srv.args, stdout=log, stderr=log, cwd=REPO)


async def time_to_healthy(srv: ServerProcess) -> float:
    started = time.monotonic()
    launch(srv)
    await wait_healthy(srv.url)
    return time.monotonic() - started


async def test_sigkill_during_startup_corrupts_nothing(db_url, server_process):
    rng = random.Random(f"{SEED}-startup-{db_url.split(':', 1)[0]}")
    # Killed while creating the schema of a new database (the first start), then while loading.
    for _ in range(3):
        srv = server_process(db_url)
        launch(srv)
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        srv.kill()
    srv = server_process(db_url).start()
    health = await wait_healthy(srv.url)
    assert health["db"]["schema_version"] >= 1
    async with Client(srv.url, token="") as client:
        await client.add_storage(**STORAGE)
        for start in range(0, 20_000, 5_000):
            await client.add_items(
                {"item_name": f"load/{i:06d}", "storage": "disk1", "size": i,
                 "checksum": f"{i:08x}", "metadata": {"i": i}} for i in range(start, start + 5_000))
    before = await everything(srv.url)
    health_before = await wait_healthy(srv.url)
    assert health_before["items"] == 20_000
    srv.kill()

    srv = server_process(db_url)
    ready = await time_to_healthy(srv)
    load = (await wait_healthy(srv.url))["load_seconds"]
    print(f"start to healthy: {ready:.2f} s, of which loading {load} s")
    srv.kill()
    # Spread the kills over the whole start (imports, connect, load) at seeded offsets.
    kills = 6
    for i in range(kills):
        srv = server_process(db_url)
        launch(srv)
        await asyncio.sleep(ready * (i + rng.random()) / kills)
        srv.kill()

    srv = server_process(db_url).start()
    health = await wait_healthy(srv.url)
    for key in ("items", "replicas", "storages", "version", "items_by_state"):
        assert health[key] == health_before[key], key
    assert await everything(srv.url) == before
    # The database is still writable, and what is written now survives too.
    async with Client(srv.url, token="") as client:
        item = await client.add_item(item_name="after/kills", storage="disk1", size=1)
    srv.kill()
    srv = server_process(db_url).start()
    await wait_healthy(srv.url)
    async with Client(srv.url, token="") as client:
        assert await client.item(item["oid"]) == item
        assert (await client.health())["version"] == health_before["version"] + 1
