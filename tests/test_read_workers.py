"""Read workers (``dlm serve --workers N``) and the mirror they keep through the change feed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

from inventory import model
from inventory.client import Client
from inventory.feed import item_rows_wire, replica_rows_wire, storage_wire
from inventory.inventory import Inventory
from inventory.mirror import apply_transactions
from inventory.server.state import STATE
from inventory.store import open_store
from inventory.writes_ops import CompleteOperation, OperationSpec, QueueOperations, StartOperation
from tests.conftest import REPO, InProcessServer, ServerProcess

# ----------------------------------------------------------------------------- the mirror


def _everything(inv: Inventory) -> tuple:
    """What a reader can see of an inventory, comparable across two of them."""
    items = sorted(item_rows_wire(inv, 0, len(inv.i_oid)))
    replicas = sorted(replica_rows_wire(inv, 0, len(inv.r_item)))
    storages = sorted(storage_wire(s.record()) for s in inv.storages.values())
    per_storage = sorted((s.id, s.used, s.replica_count) for s in inv.storages.values())
    objects = (sorted(map(repr, inv.requests.values())), sorted(map(repr, inv.operations.values())))
    return items, replicas, storages, per_storage, objects, inv.counts.items, inv.counts.replicas


async def _loaded(db_url: str, tmp_path) -> Inventory:
    """The inventory as a fresh load from the database gives it."""
    inv = Inventory()
    store = open_store(db_url, str(tmp_path / "mirror"))
    await store.open()
    try:
        await store.load(inv)
    finally:
        await store.close()
    return inv


@pytest.fixture
async def quiet_server(db_url, tmp_path):
    """A server without the file operations engine: the test plays the engine's part."""
    srv = InProcessServer(db_url, tmp_path, fileops=None)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_the_feed_applied_to_a_loaded_copy_gives_the_primary_inventory(quiet_server,
                                                                            tmp_path):
    server = quiet_server
    client = server.client
    # verify_ingest off: roots the server cannot reach; this test is about the feed
    await client.add_storage(name="disk1", kind="posix", root="/d1", capacity=10**12,
                             config={"verify_ingest": False})
    await client.add_storage(name="disk2", kind="posix", root="/d2", capacity=10**12,
                             phase="LIQUID", config={"verify_ingest": False})
    await client.add_items({"item_name": f"early/{i}", "storage": "disk1", "size": i + 1}
                           for i in range(20))
    copy = await _loaded(server.db_url, tmp_path)  # what a read worker loads at its start
    loaded_at = copy.version

    made = await client.add_items({"item_name": f"late/{i}", "storage": "disk1", "size": 7,
                                   "metadata": {"run": i}} for i in range(30))
    container = await client.request("POST", "/v1/items", json={"item_name": "set",
                                                                "item_type": "container"})
    await client.request("POST", "/v1/items", json={"item_name": "set/a", "storage": "disk2",
                                                    "parent_oid": container["oid"], "size": 3})
    await client.request("PATCH", f"/v1/items/{made[0]['oid']}", json={"target_phase": "LIQUID",
                                                                        "lifetime": 3600})
    await client.request("PATCH", "/v1/storages/disk2", json={"capacity": 5 * 10**12})
    await client.request("POST", "/v1/requests", json={"item": made[1]["oid"],
                                                       "storage": "disk2"})
    await client.request("DELETE", f"/v1/items/{made[2]['oid']}")
    # a payload deleted for real: the replica leaves the inventory
    state = server.app[STATE]
    disk1 = state.inventory.storage_by_name["disk1"].id
    [queued] = await state.scheduler.write(QueueOperations(
        [OperationSpec("delete", model.parse_uuid(made[2]["oid"]), disk1)], "detox"))
    await state.scheduler.write(StartOperation(queued.id))
    await state.scheduler.write(CompleteOperation(queued.id))
    freed = len(state.inventory.free_replica_rows)
    assert freed == 1
    await client.add_item(item_name="reuses/the/row", storage="disk2", size=5)
    assert len(state.inventory.free_replica_rows) == freed - 1

    page = await client.changes(loaded_at)
    assert page["transactions"], "the writes above are in the feed"
    applied = apply_transactions(copy, page["transactions"])
    assert applied >= 30
    assert copy.version == state.inventory.version
    assert _everything(copy) == _everything(state.inventory)
    # applying the same transactions again changes nothing (a worker may see them twice)
    assert apply_transactions(copy, page["transactions"]) == 0
    assert _everything(copy) == _everything(state.inventory)
    # and both are what the database holds (memory reused the removed replica's row)
    assert _everything(await _loaded(server.db_url, tmp_path)) == _everything(state.inventory)


# ----------------------------------------------------------------------------- the processes

def _serve(tmp_path, db_url: str, workers: int) -> ServerProcess:
    from tests.conftest import free_port

    port = free_port()
    args = [sys.executable, "-m", "inventory.cli", "serve", "--port", str(port), "--data-dir",
            str(tmp_path / "data"), "--db", db_url, "--workers", str(workers)]
    return ServerProcess(args, port, tmp_path / f"server-{port}.log").start()


async def _health(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url + "/v1/health") as resp:
        return await resp.json()


async def _until_serving(url: str, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        workers = (await _health(url))["read_workers"]
        if sum(w["serving"] for w in workers) >= count:
            return workers
        assert time.monotonic() < deadline, workers
        await asyncio.sleep(0.1)


async def _call(method: str, url: str, token: str | None = None, **kwargs) -> tuple[int, dict,
                                                                                    str | None]:
    """One request on a connection of its own: the kernel picks the process that answers."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, url, headers=headers, **kwargs) as resp:
        body = await resp.json() if resp.status != 204 else {}
        return resp.status, body, resp.headers.get("X-DLM-Worker")


@pytest.fixture
def served(db_url, tmp_path):
    started: list[ServerProcess] = []

    def start(workers: int = 3) -> ServerProcess:
        srv = _serve(tmp_path, db_url, workers)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


async def test_reads_from_workers_see_every_acknowledged_write(served):
    srv = served(3)
    await _until_serving(srv.url, 2)
    status, _, _ = await _call("POST", srv.url + "/v1/storages", json={
        "name": "disk1", "kind": "posix", "root": "/d1", "capacity": 10**12,
        "config": {"verify_ingest": False}})  # no payloads: reads are under test
    assert status == 201
    answered_by: set[str | None] = set()
    for i in range(60):
        status, item, _ = await _call("POST", srv.url + "/v1/items", json={
            "item_name": f"rw/{i}", "storage": "disk1", "size": i})
        assert status == 201, item
        # read on another connection at once: whichever process answers knows the item
        status, found, worker = await _call("GET", srv.url + "/v1/items",
                                            params={"name": f"rw/{i}"})
        assert status == 200 and [x["oid"] for x in found["items"]] == [item["oid"]], (i, worker)
        answered_by.add(worker)
        status, _, _ = await _call("PATCH", srv.url + f"/v1/items/{item['oid']}",
                                   json={"target_phase": "LIQUID"})
        assert status == 200
        status, shown, worker = await _call("GET", srv.url + f"/v1/items/{item['oid']}")
        assert status == 200 and shown["target_phase"] == "LIQUID", (i, worker)
        answered_by.add(worker)
    assert answered_by - {None}, "no read was answered by a read worker"
    # bad input through any process: the primary's clear 4xx, nothing changed
    for _ in range(6):
        status, body, _ = await _call("POST", srv.url + "/v1/items", json={"item_name": "../x"})
        assert status == 400 and body["error"]["field"] == "item_name"
        status, body, _ = await _call("GET", srv.url + "/v1/items", params={"state": "NOPE"})
        assert status == 400 and body["error"]["field"] == "state"
    status, body, _ = await _call("GET", srv.url + "/v1/items", params={"prefix": "rw/",
                                                                        "limit": "1000"})
    assert len(body["items"]) == 60
    # streamed answers (the snapshot) and msgpack bodies pass through a worker unchanged
    for _ in range(6):
        async with Client(srv.url, token="") as client:
            snap = await client.snapshot()
            assert len(snap.items) == 60 and len(snap.replica_records()) == 60
            await client.post_msgpack("/v1/accesses", [{"oid": item["oid"], "count": 1}])
    status, shown, _ = await _call("GET", srv.url + f"/v1/items/{item['oid']}")
    assert shown["access_count"] == 6


async def test_tokens_created_and_deleted_take_effect_on_every_process(served):
    srv = served(3)
    await _until_serving(srv.url, 2)
    status, made, _ = await _call("POST", srv.url + "/v1/tokens",
                                  json={"name": "boss", "role": "operator"})
    assert status == 201
    boss = made["token"]
    status, reader, _ = await _call("POST", srv.url + "/v1/tokens", token=boss,
                                    json={"name": "r", "role": "reader"})
    assert status == 201
    reader = reader["token"]
    for _ in range(10):  # open mode ended everywhere; roles hold everywhere
        status, body, _ = await _call("GET", srv.url + "/v1/items")
        assert status == 401, body
        status, _, _ = await _call("GET", srv.url + "/v1/items", token=reader)
        assert status == 200
        status, body, _ = await _call("POST", srv.url + "/v1/items", token=reader,
                                      json={"item_name": "x"})
        assert status == 403, body
    status, _, _ = await _call("DELETE", srv.url + "/v1/tokens/r", token=boss)
    assert status in (200, 204)
    for _ in range(10):
        status, body, _ = await _call("GET", srv.url + "/v1/items", token=reader)
        assert status == 401, body


async def test_a_killed_worker_is_started_again_and_a_killed_primary_takes_its_workers(served):
    srv = served(2)
    [worker] = await _until_serving(srv.url, 1)
    os.kill(worker["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        [again] = (await _health(srv.url))["read_workers"]
        if again["serving"] and again["starts"] == 2:
            break
        assert time.monotonic() < deadline, again
        await asyncio.sleep(0.1)
    assert again["last_exit"] == -signal.SIGKILL
    async with aiohttp.ClientSession() as session, session.get(srv.url + "/metrics") as resp:
        text = await resp.text()
    assert "dlm_read_workers_serving 1.0" in text and "dlm_read_worker_starts_total 2.0" in text
    srv.kill()  # SIGKILL: the worker must not outlive it (it would answer stale reads)
    deadline = time.monotonic() + 10
    while _alive(again["pid"]):
        assert time.monotonic() < deadline, "the read worker outlived its primary"
        await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_bad_worker_counts_are_refused(value, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "inventory.cli", "serve", "--data-dir",
                           str(tmp_path), "--workers", value], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode != 0
    assert "workers" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_worker_count_in_the_config_is_refused(tmp_path):
    config = tmp_path / "dlm.yaml"
    config.write_text("workers: many\n")
    proc = subprocess.run([sys.executable, "-m", "inventory.cli", "serve", "--config",
                           str(config)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode != 0
    assert "workers" in proc.stderr and "Traceback" not in proc.stderr
