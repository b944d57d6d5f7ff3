"""A copy request closes when the copy it asked for completes, not at the next Dealer cycle."""

from __future__ import annotations

import os

from tests.conftest import adler, settle
from tests.test_fileops import fs, operation  # noqa: F401 - the fixture

PIN = "2031-01-01T00:00:00Z"


async def _file(srv, name: str, parent: str | None = None) -> dict:
    data = os.urandom(64)
    path = srv.roots["src"] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return await srv.client.add_item(item_name=name, storage="src", size=len(data),
                                     checksum=adler(data), parent_oid=parent)


async def _states(client) -> dict[int, str]:
    return {r["id"]: r["state"] for r in (await client.request("GET", "/v1/requests"))["requests"]}


async def test_a_file_request_is_done_when_its_copy_completes(fs):  # noqa: F811
    c = fs.client
    item = await _file(fs, "obs/a.ms")
    wanted = await c.request("POST", "/v1/requests",
                             json={"item": item["oid"], "storage": "dst", "pin_until": PIN})
    elsewhere = await c.request("POST", "/v1/requests", json={"item": item["oid"],
                                                              "storage": "arch"})
    op = await c.add_operation("copy", item["oid"], "dst")
    assert (await operation(c, op["id"]))["state"] == "done"
    states = await _states(c)
    assert states == {wanted["id"]: "done", elsewhere["id"]: "pending"}
    done = next(r for r in (await c.request("GET", "/v1/requests"))["requests"]
                if r["id"] == wanted["id"])
    assert done["pin_until"] == PIN  # a served request still pins its copy
    await fs.restart()
    assert await _states(fs.client) == states


async def test_a_container_request_is_done_when_its_last_member_arrives(fs):  # noqa: F811
    c = fs.client
    ds = await c.add_item(item_name="ds", item_type="container")
    members = [await _file(fs, f"ds/f{i}", ds["oid"]) for i in range(4)]
    request = await c.request("POST", "/v1/requests", json={"item": "ds", "storage": "dst"})
    for member in members[:3]:
        await c.add_operation("copy", member["oid"], "dst")
    await settle(c)
    assert (await _states(c))[request["id"]] == "pending"  # one member is still missing
    await c.add_operation("copy", members[3]["oid"], "dst")
    await settle(c)
    assert (await _states(c))[request["id"]] == "done"


async def test_a_failed_copy_leaves_the_request_open(fs):  # noqa: F811
    c = fs.client
    item = await _file(fs, "obs/b.ms")
    request = await c.request("POST", "/v1/requests", json={"item": "obs/b.ms",
                                                            "storage": "dst"})
    (fs.roots["src"] / "obs/b.ms").write_bytes(b"not what was registered")
    op = await c.add_operation("copy", item["oid"], "dst")
    assert (await operation(c, op["id"]))["state"] == "failed"
    assert (await _states(c))[request["id"]] == "pending"
