"""The engine and Dealer with a real S3 storage (rclone serve s3): posix -> s3 -> posix copies,
verified, and deletions on S3, all through the server."""

from __future__ import annotations

import os
import zlib

import pytest

from dealer.cycle import run_cycle
from inventory.fileops.engine import FileOpsLimits
from policies import load_policy_text
from tests.conftest import InProcessServer
from tests.s3server import BUCKET, RcloneS3, s3_server  # noqa: F401 - fixture
from tests.test_fileops import operation, queue

FAST = FileOpsLimits(workers=4, per_storage=2, max_attempts=2, retry_base=0.05, poll=0.05,
                     unreachable_after=100)


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


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


@pytest.mark.parametrize("size", [0, 1000, 11 * 1024 * 1024])
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
