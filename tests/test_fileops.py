"""The file operations engine end to end on POSIX storages: copies verified before they are
registered, deletions guarded by the last-copy rule, retries, and restarts mid-copy."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from inventory import errors
from inventory.client import Client
from inventory.fileops.engine import FileOpsLimits
from tests.conftest import InProcessServer, adler, wait_healthy

FAST = FileOpsLimits(workers=4, per_storage=2, max_attempts=3, retry_base=0.05, retry_max=0.2,
                     unreachable_after=100, poll=0.05)



@pytest.fixture
async def fs(db_url, tmp_path):
    """A server with a fast engine and three POSIX storages under tmp_path."""
    srv = InProcessServer(db_url, tmp_path, fileops=FAST)
    await srv.start()
    roots = {}
    for name, phase in (("src", "GAS"), ("dst", "GAS"), ("arch", "SOLID")):
        roots[name] = tmp_path / name
        roots[name].mkdir()
        await srv.client.add_storage(name=name, kind="posix", root=str(roots[name]),
                                     capacity=10**9, phase=phase)
    srv.roots = roots
    try:
        yield srv
    finally:
        await srv.stop()


async def place(srv, name: str, data: bytes, storage="src", checksum=None):
    path = srv.roots[storage] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return await srv.client.add_item(item_name=name, storage=storage, size=len(data),
                                     checksum=checksum or adler(data))


async def operation(client: Client, op_id: int, until=("done", "failed", "cancelled"),
                    timeout=30.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        ops = (await client.request("GET", "/v1/operations", params={"limit": "10000"}))
        op = next(o for o in ops["operations"] if o["id"] == op_id)
        if op["state"] in until:
            return op
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(op)
        await asyncio.sleep(0.02)


async def queue(client, kind, item, target, source=None):
    body = {"kind": kind, "item": item, "target": target}
    if source:
        body["source"] = source
    return await client.request("POST", "/v1/operations", json=body)


@pytest.mark.parametrize("size", [0, 1, 100_000, 3 * 1024 * 1024 + 7])
async def test_copy_is_verified_then_registered(fs, size):
    data = os.urandom(size)
    item = await place(fs, "run 1/ünïcode file.dat", data)
    op = await queue(fs.client, "copy", item["oid"], "dst")
    assert op["state"] == "queued" and op["origin"] == "user"
    pending = await fs.client.item(item["oid"])
    assert {r["storage"]: r["state"] for r in pending["replicas"]}["dst"] in ("pending",
                                                                           "copying",
                                                                           "complete")
    done = await operation(fs.client, op["id"])
    assert done["state"] == "done" and done["attempts"] == 1, done
    assert (fs.roots["dst"] / "run 1/ünïcode file.dat").read_bytes() == data
    after = await fs.client.item(item["oid"])
    dst = next(r for r in after["replicas"] if r["storage"] == "dst")
    assert dst["state"] == "complete" and dst["checksum"] == adler(data)
    assert dst["size"] == size and dst["last_verified"] is not None
    assert after["current_phase"] == "LIQUID"  # two GAS copies
    storage = await fs.client.request("GET", "/v1/storages/dst")
    assert storage["reliability"]["copies_ok"] == 1 and storage["used"] == size


async def test_a_source_that_does_not_match_its_checksum_is_never_copied(fs):
    item = await place(fs, "bad.dat", b"the real bytes", checksum="00000001")
    op = await queue(fs.client, "copy", item["oid"], "dst")
    done = await operation(fs.client, op["id"])
    assert done["state"] == "failed"
    assert "checksum" in done["last_error"]
    assert not (fs.roots["dst"] / "bad.dat").exists()
    after = await fs.client.item(item["oid"])
    assert {r["storage"]: r["state"] for r in after["replicas"]} == {"src": "corrupt"}
    assert after["state"] == "CORRUPTED"  # no good copy is left


async def test_missing_source_fails_with_a_clear_error_and_no_replica(fs):
    item = await place(fs, "gone.dat", b"abc")
    (fs.roots["src"] / "gone.dat").unlink()
    op = await queue(fs.client, "copy", item["oid"], "dst")
    done = await operation(fs.client, op["id"])
    assert done["state"] == "failed" and "not_found" in done["last_error"]
    after = await fs.client.item(item["oid"])
    assert [r["storage"] for r in after["replicas"]] == ["src"]


async def test_target_in_the_way_is_retried_then_failed(fs):
    item = await place(fs, "dir/file.dat", b"xyz")
    (fs.roots["dst"] / "dir").write_text("a file where a directory must be")
    op = await queue(fs.client, "copy", item["oid"], "dst")
    done = await operation(fs.client, op["id"])
    assert done["state"] == "failed" and done["last_error"]
    after = await fs.client.item(item["oid"])
    assert [r["storage"] for r in after["replicas"]] == ["src"]


async def test_deletion_of_the_last_copy_is_refused(fs):
    item = await place(fs, "only.dat", b"1")
    with pytest.raises(errors.Conflict) as info:
        await queue(fs.client, "delete", item["oid"], "src")
    assert "last complete copy" in str(info.value) and info.value.field == "target"
    assert (fs.roots["src"] / "only.dat").exists()


async def test_two_copies_cannot_both_be_deleted(fs):
    item = await place(fs, "two.dat", b"22")
    await fs.client.request("PATCH", f"/v1/items/{item['oid']}", json={"target_phase": "GAS"})
    await operation(fs.client, (await queue(fs.client, "copy", item["oid"], "dst"))["id"])
    first = await queue(fs.client, "delete", item["oid"], "src")
    with pytest.raises(errors.Conflict):
        await queue(fs.client, "delete", item["oid"], "dst")
    assert (await operation(fs.client, first["id"]))["state"] == "done"
    assert not (fs.roots["src"] / "two.dat").exists()
    assert (fs.roots["dst"] / "two.dat").read_bytes() == b"22"
    after = await fs.client.item(item["oid"])
    assert [r["storage"] for r in after["replicas"]] == ["dst"]


async def test_deletion_never_drops_an_item_below_its_target_phase(fs):
    item = await place(fs, "solid.dat", b"s")
    await operation(fs.client, (await queue(fs.client, "copy", item["oid"], "arch"))["id"])
    # SOLID from the archive alone: the GAS copy may go, the SOLID one may not
    with pytest.raises(errors.Conflict) as info:
        await queue(fs.client, "delete", item["oid"], "arch")
    assert "below its target SOLID" in str(info.value)
    assert (await operation(fs.client, (await queue(fs.client, "delete", item["oid"],
                                                    "src"))["id"]))["state"] == "done"


async def test_expired_item_loses_its_payloads_and_becomes_deleted(fs):
    item = await place(fs, "old.dat", b"old")
    await fs.client.request("DELETE", f"/v1/items/{item['oid']}")  # marks EXPIRED
    done = await operation(fs.client, (await queue(fs.client, "delete", item["oid"],
                                                   "src"))["id"])
    assert done["state"] == "done"
    assert not (fs.roots["src"] / "old.dat").exists()
    assert (await fs.client.item(item["oid"]))["state"] == "DELETED"
    assert (await fs.client.request("GET", "/v1/storages/src"))["used"] == 0


async def test_cancel_a_queued_operation(tmp_path, db_url):
    srv = InProcessServer(db_url, tmp_path, fileops=None)  # no engine: it stays queued
    await srv.start()
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            await srv.client.add_storage(name=name, kind="posix", root=str(tmp_path / name),
                                         capacity=10)
        (tmp_path / "a/x").write_bytes(b"x")
        item = await srv.client.add_item(item_name="x", storage="a", size=1)
        op = await queue(srv.client, "copy", "x", "b")
        cancelled = await srv.client.request("DELETE", f"/v1/operations/{op['id']}")
        assert cancelled["state"] == "cancelled"
        assert [r["storage"] for r in (await srv.client.item(item["oid"]))["replicas"]] == ["a"]
        with pytest.raises(errors.Conflict):
            await srv.client.request("DELETE", f"/v1/operations/{op['id']}")
    finally:
        await srv.stop()


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "move", "item": "x", "target": "dst"}, "kind"),
    ({"kind": "copy", "item": "nothing", "target": "dst"}, "item"),
    ({"kind": "copy", "item": "x.dat", "target": "nowhere"}, "target"),
    ({"kind": "copy", "item": "x.dat", "target": "src"}, "target"),
    ({"kind": "copy", "item": "x.dat", "target": "dst", "source": "arch"}, "source"),
    ({"kind": "delete", "item": "x.dat", "target": "dst"}, "target"),
])
async def test_bad_operation_requests(fs, body, field):
    await place(fs, "x.dat", b"x")
    with pytest.raises(errors.DLMError) as info:
        await fs.client.request("POST", "/v1/operations", json=body)
    assert 400 <= info.value.status < 500 and info.value.field == field


@pytest.mark.slow
async def test_sigkill_mid_copies_then_restart_finishes_them_correctly(tmp_path, db_url,
                                                                       server_process):
    """Copies are interrupted by SIGKILL at random moments; after each restart the engine
    resumes, and in the end every copy is complete, verified and byte-identical."""
    rng = random.Random(7)
    roots = {n: tmp_path / n for n in ("src", "dst")}
    for root in roots.values():
        root.mkdir()
    config = tmp_path / "dlm.yaml"
    config.write_text("fileops:\n  workers: 2\n  per_storage: 2\n  retry_base: 0.05\n"
                      "  poll: 0.05\n  max_attempts: 50\n")
    proc = server_process(db_url, "--config", str(config)).start()
    await wait_healthy(proc.url)
    files = {f"batch/{i:02d}.bin": os.urandom(rng.randint(1, 6) * 1024 * 1024)
             for i in range(16)}
    async with Client(proc.url) as c:
        for name, root in roots.items():
            await c.add_storage(name=name, kind="posix", root=str(root), capacity=10**10)
        for name, data in files.items():
            (roots["src"] / name).parent.mkdir(parents=True, exist_ok=True)
            (roots["src"] / name).write_bytes(data)
        await c.add_items({"item_name": n, "storage": "src", "size": len(d),
                           "checksum": adler(d)} for n, d in files.items())
        for name in files:
            await queue(c, "copy", name, "dst")
    for _ in range(4):
        await asyncio.sleep(rng.uniform(0.05, 0.4))
        proc.kill()
        proc.start()
        await wait_healthy(proc.url)
    async with Client(proc.url) as c:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            ops = (await c.request("GET", "/v1/operations", params={"limit": "1000"}))
            states = [o["state"] for o in ops["operations"]]
            if all(s == "done" for s in states):
                break
            assert "failed" not in states, ops
            assert asyncio.get_running_loop().time() < deadline, states
            await asyncio.sleep(0.1)
        for name, data in files.items():
            [item] = (await c.request("GET", "/v1/items", params={"name": name}))["items"]
            replicas = {r["storage"]: r for r in item["replicas"]}
            assert replicas["dst"]["state"] == "complete"
            assert replicas["dst"]["checksum"] == adler(data)
            assert (roots["dst"] / name).read_bytes() == data
    # no temporary leftovers registered or visible under the final names
    assert sorted(p.name for p in (roots["dst"] / "batch").iterdir()
                  if not p.name.startswith(".")) == sorted(n.split("/")[1] for n in files)
