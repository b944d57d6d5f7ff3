"""A failed copy is charged to the side that failed (issue 25), against a real S3 server
(rclone serve s3): a target bucket that does not exist is the target's fault, retried with
back-off until it exists, and never lowers the healthy source's reliability nor holds up its
other copies; a multipart upload that vanishes mid-copy (aborted behind DLM's back, as a server
restart loses it) starts over instead of failing for good."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from inventory.fileops.engine import FileOpsLimits
from tests.conftest import InProcessServer, adler
from tests.s3server import BUCKET, KEY, PART, SECRET, RcloneS3, own_s3_server  # noqa: F401
from tests.test_fileops import operation, queue

# the target is left alone after 3 failures in a row, for a short while; copies retry fast
LIMITS = FileOpsLimits(workers=8, per_storage=8, max_attempts=500, retry_base=0.05,
                       retry_max=0.3, unreachable_after=3, unreachable_pause=0.5, poll=0.05)


def s3_client(server: RcloneS3):
    return get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=server.endpoint,
        aws_access_key_id=KEY, aws_secret_access_key=SECRET)


@pytest.fixture
async def srv(tmp_path, own_s3_server: RcloneS3):  # noqa: F811
    server = InProcessServer(f"sqlite:{tmp_path / 'db.sqlite'}", tmp_path, fileops=LIMITS)
    await server.start()
    for name in ("disk", "other"):
        (tmp_path / name).mkdir()
        await server.client.add_storage(name=name, kind="posix", root=str(tmp_path / name),
                                        capacity=10**9)
    server.tmp, server.s3 = tmp_path, own_s3_server
    try:
        yield server
    finally:
        await server.stop()


async def place(srv, name: str, data: bytes) -> dict:
    (srv.tmp / "disk" / name).write_bytes(data)
    return await srv.client.add_item(item_name=name, storage="disk", size=len(data),
                                     checksum=adler(data))


async def reliability(client, name: str) -> dict:
    return (await client.request("GET", f"/v1/storages/{name}"))["reliability"]


async def ops_of(client, ids: set[int]) -> list[dict]:
    page = await client.request("GET", "/v1/operations", params={"limit": "10000"})
    return [o for o in page["operations"] if o["id"] in ids]


async def test_a_missing_target_bucket_is_the_targets_fault_and_is_retried(srv):
    c = srv.client
    await c.add_storage(name="nobucket", kind="s3", root="later/x", capacity=10**9,
                        config=srv.s3.config())
    items = [await place(srv, f"f{i}", os.urandom(1000 + i)) for i in range(8)]
    ids = {(await queue(c, "copy", it["oid"], "nobucket"))["id"] for it in items}
    # every copy has failed at least once (and the target has been left alone)
    for _ in range(600):
        ops = await ops_of(c, ids)
        if all(o["attempts"] >= 1 and o["last_error"] for o in ops):
            break
        await asyncio.sleep(0.02)
    for op in ops:
        assert op["state"] in ("queued", "running"), op  # retried, not failed for good
        assert "on nobucket" in op["last_error"] and "NoSuchBucket" in op["last_error"], op
        assert "on disk" not in op["last_error"], op
    target = await reliability(c, "nobucket")
    assert target["copies_failed"] >= 8 and target["success_rate"] == 0, target
    # the healthy source is charged nothing, and its unrelated copy runs while the 8 wait
    source = await reliability(c, "disk")
    assert source["copies_failed"] == 0 and source["success_rate"] is None, source
    assert source["unreachable_until"] is None, source
    other = await place(srv, "unrelated", os.urandom(1000))
    done = await operation(c, (await queue(c, "copy", other["oid"], "other"))["id"])
    assert done["state"] == "done" and done["attempts"] == 1, done
    assert not any(o["state"] == "done" for o in await ops_of(c, ids))  # no bucket yet
    source = await reliability(c, "disk")
    assert source["copies_failed"] == 0 and source["unreachable_until"] is None, source
    # once the bucket exists, the retried copies complete
    async with s3_client(srv.s3) as s3:
        await s3.create_bucket(Bucket="later")
    for op_id in ids:
        finished = await operation(c, op_id, timeout=60)
        assert finished["state"] == "done", finished
    for i in range(8):
        assert (srv.s3.directory / "later" / "x" / f"f{i}").stat().st_size == 1000 + i
    target = await reliability(c, "nobucket")
    assert target["copies_ok"] == 8, target


async def multipart_uploads(s3, prefix: str) -> list[dict]:
    try:
        listed = await s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    except ClientError as exc:  # rclone answers NoSuchUpload when there is none
        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise
        return []
    return listed.get("Uploads", [])


async def test_a_copy_whose_multipart_upload_vanishes_starts_over(srv):
    c = srv.client
    await c.add_storage(name="bucket", kind="s3", root=f"{BUCKET}/mp", capacity=10**9,
                        config=srv.s3.config(multipart_threshold=0, max_concurrency=1))
    data = os.urandom(12 * PART + 1234)  # 13 parts, sent one at a time
    item = await place(srv, "big", data)
    aborted: list[str] = []
    async with s3_client(srv.s3) as s3:
        op = await queue(c, "copy", item["oid"], "bucket")
        # abort the first upload behind DLM's back, as a server restart loses it
        for _ in range(5000):
            uploads = await multipart_uploads(s3, "mp/")
            if uploads:
                upload = uploads[0]
                await s3.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"],
                                                UploadId=upload["UploadId"])
                aborted.append(upload["UploadId"])
                break
            await asyncio.sleep(0.002)
    assert aborted, "the multipart upload was never seen"
    done = await operation(c, op["id"], timeout=60)
    assert done["state"] == "done", done
    assert done["attempts"] == 2, done  # the first upload lost, the second completed
    assert (srv.s3.directory / BUCKET / "mp" / "big").read_bytes() == data
    assert (await reliability(c, "disk"))["copies_failed"] == 0
