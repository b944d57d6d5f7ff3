"""The engine and Dealer with a real S3 storage (rclone serve s3): posix -> s3 -> posix copies,
verified, and deletions on S3, all through the server."""

from __future__ import annotations

import os

import pytest

from dealer.cycle import run_cycle
from inventory.fileops.engine import FileOpsLimits
from policies import load_policy_text
from tests.conftest import InProcessServer, adler
from tests.s3server import BUCKET, RcloneS3, own_s3_server, s3_server  # noqa: F401
from tests.test_fileops import operation, queue

FAST = FileOpsLimits(workers=4, per_storage=2, max_attempts=2, retry_base=0.05, poll=0.05,
                     unreachable_after=100)



@pytest.fixture
async def mixed(tmp_path, s3_server: RcloneS3):  # noqa: F811
    srv = InProcessServer(f"sqlite:{tmp_path / 'db.sqlite'}", tmp_path, fileops=FAST)
    await srv.start()
    prefix = f"fileops-{os.urandom(4).hex()}"
    for name in ("disk", "back"):
        (tmp_path / name).mkdir()
        await srv.client.add_storage(name=name, kind="posix", root=str(tmp_path / name),
                                     capacity=10**9, phase="GAS")
    await srv.client.add_storage(name="bucket", kind="s3", root=f"{BUCKET}/{prefix}",
                                 capacity=10**9, phase="LIQUID", config=s3_server.config())
    srv.tmp, srv.objects = tmp_path, s3_server.directory / BUCKET / prefix
    try:
        yield srv
    finally:
        await srv.stop()


# a buffered PUT, a streaming PUT (over part_size) and multipart (over multipart_threshold)
@pytest.mark.parametrize("size", [0, 1000, 7 * 1024 * 1024, 11 * 1024 * 1024])
async def test_posix_to_s3_to_posix_and_delete_on_s3(mixed, size):
    c = mixed.client
    data = os.urandom(size)
    name = "run 7/ünï file.bin"
    (mixed.tmp / "disk" / "run 7").mkdir()
    (mixed.tmp / "disk" / name).write_bytes(data)
    item = await c.add_item(item_name=name, storage="disk", size=size, checksum=adler(data),
                            target_phase="GAS")
    up = await operation(c, (await queue(c, "copy", item["oid"], "bucket"))["id"])
    assert up["state"] == "done", up
    assert (mixed.objects / name).read_bytes() == data  # rclone keeps objects as files
    down = await operation(c, (await queue(c, "copy", item["oid"], "back", "bucket"))["id"])
    assert down["state"] == "done", down
    assert (mixed.tmp / "back" / name).read_bytes() == data
    where = {r["storage"]: r for r in (await c.item(item["oid"]))["replicas"]}
    assert {k: v["state"] for k, v in where.items()} == {"disk": "complete",
                                                          "bucket": "complete",
                                                          "back": "complete"}
    assert where["bucket"]["checksum"] == adler(data)
    gone = await operation(c, (await queue(c, "delete", item["oid"], "bucket"))["id"])
    assert gone["state"] == "done"
    assert not (mixed.objects / name).exists()


async def test_dealer_places_a_liquid_item_on_s3(mixed):
    c = mixed.client
    data = os.urandom(5000)
    (mixed.tmp / "disk" / "l.bin").write_bytes(data)
    item = await c.add_item(item_name="l.bin", storage="disk", size=5000, checksum=adler(data),
                            target_phase="SOLID")
    policy = ('partition "all" { }\ndealer {\n    phase SOLID copies 2 to storage.kind == s3 '
              "or storage.name == \"back\"\n}\n")
    result = await run_cycle(c, load_policy_text(policy, "p"), policy)
    assert len(result.plan.copies) == 2
    for op in (await c.request("GET", "/v1/operations"))["operations"]:
        assert (await operation(c, op["id"]))["state"] == "done"
    full = await c.item(item["oid"])
    assert full["current_phase"] == "SOLID"  # GAS + LIQUID (s3) + GAS
    assert (mixed.objects / "l.bin").read_bytes() == data


async def test_a_storage_that_stops_answering_is_left_alone_then_retried(tmp_path,
                                                                        own_s3_server):  # noqa: F811
    limits = FileOpsLimits(workers=2, per_storage=2, max_attempts=10, retry_base=0.05,
                           retry_max=0.1, unreachable_after=2, unreachable_pause=1.0,
                           poll=0.05)
    srv = InProcessServer(f"sqlite:{tmp_path / 'db.sqlite'}", tmp_path, fileops=limits)
    await srv.start()
    try:
        c = srv.client
        (tmp_path / "disk").mkdir()
        await c.add_storage(name="disk", kind="posix", root=str(tmp_path / "disk"),
                            capacity=10**9)
        await c.add_storage(name="down", kind="s3", root=f"{BUCKET}/x", capacity=10**9,
                            config=own_s3_server.config(connect_timeout=0.5))
        (tmp_path / "disk" / "f").write_bytes(b"payload")
        item = await c.add_item(item_name="f", storage="disk", size=7,
                                checksum=adler(b"payload"))
        own_s3_server.kill()
        op = await queue(c, "copy", item["oid"], "down")
        for _ in range(200):
            storage = await c.request("GET", "/v1/storages/down")
            if storage["reliability"]["unreachable_until"]:
                break
            await __import__("asyncio").sleep(0.05)
        assert storage["reliability"]["unreachable_until"], storage
        assert (await c.health())["status"] == "ok"  # everything else is served
        own_s3_server.start()
        done = await operation(c, op["id"], timeout=30)
        assert done["state"] == "done" and done["attempts"] >= 2
        assert (own_s3_server.directory / BUCKET / "x" / "f").read_bytes() == b"payload"
    finally:
        await srv.stop()
