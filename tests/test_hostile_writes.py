"""Hostile writes (issue 16, "Writes"): no client's value can break the server for the others.

- a value the database cannot store (a NUL in any text, bytes, NaN or infinity, an integer past
  64 bits) is a 400 naming its field, and writes grouped with it in one commit all succeed;
- a value that passes the checks and is refused by the database all the same fails only its
  own write, with its own error: the group is re-run write by write;
- metadata is bounded (depth, integers, strings, keys, size) on every path that takes it;
  metadata an older version stored past the bounds does not stop the server from loading and
  serving it;
- a streamed answer that meets a value it cannot encode ends so that its client sees an error
  (the connection drops before the body's end), never a "500" inside a chunked 200.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import sys
from typing import Any

import aiohttp
import asyncpg
import msgpack
import pytest

from inventory import metadata as bounds
from inventory.errors import BadRequest
from inventory.server.state import STATE
from inventory.specs import ItemSpec
from inventory.writes import AddItems
from tests.conftest import InProcessServer, free_port, wait_healthy
from tests.test_commit_failure import WriteLock
from tests.test_serve_cli import run_dlm

STORAGE = {"name": "disk1", "kind": "posix", "root": "/data/disk1", "capacity": "1 PB",
           "phase": "GAS", "config": {"verify_ingest": False}}
MSGPACK = "application/msgpack"


def nested(depth: int) -> dict[str, Any]:
    """Metadata nested ``depth`` levels deep (the metadata object itself is level 1)."""
    value: Any = 1
    for _ in range(depth - 1):
        value = {"a": value}
    return {"a": value} if depth else value


async def send(session: aiohttp.ClientSession, method: str, url: str, body: Any,
               as_msgpack: bool = False) -> tuple[int, Any]:
    if as_msgpack:
        kw: dict[str, Any] = {"data": msgpack.packb(body, use_bin_type=True),
                              "headers": {"Content-Type": MSGPACK}}
    else:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit + 2000)  # nested(986) inside the body, in pytest's stack
        try:
            kw = {"data": json.dumps(body, allow_nan=False),
                  "headers": {"Content-Type": "application/json"}}
        finally:
            sys.setrecursionlimit(limit)
    async with session.request(method, url, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


def refused(status: int, body: Any, field: str, words: str) -> None:
    assert status == 400, body
    error = body["error"]
    assert error["code"] == "bad_request", body
    assert error["field"] == field, body
    assert words in error["message"], body


# ------------------------------------------------------------------- refused at validation

# (item fields, as msgpack?, field named, words of the message)
BAD_ITEMS = [
    ({"owner": "al\x00ice"}, False, "owner", "NUL"),
    ({"group": "\x00"}, True, "group", "NUL"),
    ({"storage": "disk1", "size": 1, "uri": "a\x00b"}, True, "uri", "forbidden character"),
    ({"storage": "d\x00", "size": 1}, False, "storage", "no storage named"),
    ({"metadata": {"k": "v\x00"}}, False, "metadata.k", "NUL"),
    ({"metadata": {"k\x00": 1}}, False, "metadata.k\x00", "NUL"),
    ({"metadata": {"list": [1, {"deep": "\x00"}]}}, True, "metadata.list[1].deep", "NUL"),
    ({"metadata": {"blob": b"\x00\x01"}}, True, "metadata.blob", "binary"),
    ({"metadata": {"x": float("nan")}}, True, "metadata.x", "NaN"),
    ({"metadata": {"x": float("inf")}}, True, "metadata.x", "infinity"),
    ({"metadata": {"x": [float("-inf")]}}, True, "metadata.x[0]", "infinity"),
    ({"metadata": {"n": 2**64}}, False, "metadata.n", "64-bit"),
    ({"metadata": {"n": 2**63}}, True, "metadata.n", "64-bit"),
    ({"metadata": {"n": -(2**63) - 1}}, False, "metadata.n", "64-bit"),
    ({"metadata": {"n": 10**40}}, False, "metadata.n", "64-bit"),
    ({"metadata": {1: "int key"}}, True, "metadata", "Expected `str`"),
    ({"metadata": {"m": {1: "int key"}}}, True, "metadata.m.1", "keys must be strings"),
    ({"metadata": nested(33)}, False, "metadata" + ".a" * 32, "nested more than 32"),
    ({"metadata": nested(900)}, False, "metadata" + ".a" * 32, "nested more than 32"),
    ({"metadata": nested(986)}, False, "body", "nested too deeply"),
    ({"metadata": {f"k{i}": i for i in range(1025)}}, False, "metadata", "1024 keys"),
    ({"metadata": {"s": "x" * (16 * 1024 + 1)}}, False, "metadata.s", "16384"),
    ({"metadata": {"k" * 257: 1}}, False, "metadata." + "k" * 257, "256"),
    ({"metadata": {f"k{i}": "x" * 10_000 for i in range(7)}}, False, "metadata",
     "65536 allowed"),
]


@pytest.mark.parametrize("fields,as_msgpack,field,words", BAD_ITEMS)
async def test_a_value_the_database_cannot_store_is_a_400_naming_it(sqlite_server, fields,
                                                                     as_msgpack, field, words):
    client = sqlite_server.client
    await client.add_storage(**STORAGE)
    item = await client.add_item(item_name="kept", metadata={"ok": 1})
    before = await client.health()
    url = sqlite_server.url
    in_batch = field if field == "body" else "items[1]." + field
    async with aiohttp.ClientSession() as session:
        # POST one item, POST a batch (the field carries the index), PATCH one, PATCH a batch
        status, body = await send(session, "POST", url + "/v1/items",
                                  {"item_name": "new", **fields}, as_msgpack)
        refused(status, body, field, words)
        status, body = await send(session, "POST", url + "/v1/items",
                                  [{"item_name": "ok"}, {"item_name": "new", **fields}],
                                  as_msgpack)
        refused(status, body, in_batch, words)
        if "metadata" in fields:
            status, body = await send(session, "PATCH", url + f"/v1/items/{item['oid']}",
                                      {"metadata": fields["metadata"]}, as_msgpack)
            refused(status, body, field, words)
            status, body = await send(session, "PATCH", url + "/v1/items",
                                      [{"oid": item["oid"], "metadata": {"fine": 1}},
                                       {"oid": item["oid"], "metadata": fields["metadata"]}],
                                      as_msgpack)
            refused(status, body, in_batch, words)
    assert (await client.health())["version"] == before["version"], "something was written"
    assert (await client.item(item["oid"]))["metadata"] == {"ok": 1}


@pytest.mark.parametrize("path,method,body,field", [
    ("/v1/storages", "POST", {**STORAGE, "name": "d2", "root": "/data/d2",
                              "attributes": {"site": "a\x00"}}, "attributes[...]"),
    ("/v1/storages", "POST", {**STORAGE, "name": "d2", "root": "/data/d2",
                              "attributes": {"n": 2**64}}, "attributes.n"),
    ("/v1/storages/disk1", "PATCH", {"attributes": {"\x00": "v"}}, "attributes"),
    ("/v1/storages/disk1", "PATCH", {"attributes": {"f": float("nan")}}, "attributes.f"),
    ("/v1/tokens", "POST", {"name": "t\x00", "role": "reader"}, "name"),
])
async def test_other_text_fields_refuse_a_nul_too(sqlite_server, path, method, body, field):
    await sqlite_server.client.add_storage(**STORAGE)
    before = (await sqlite_server.client.health())["version"]
    async with aiohttp.ClientSession() as session:
        status, answer = await send(session, method, sqlite_server.url + path, body,
                                    as_msgpack="n" not in body.get("attributes", {}))
    assert status == 400 and answer["error"]["field"] == field, answer
    assert (await sqlite_server.client.health())["version"] == before


async def test_metadata_at_the_bounds_is_stored_and_served_everywhere(server: InProcessServer):
    """Everything the bounds let through can be read back by every reader, also after a
    restart (the other side of the bounds: they must not refuse what is fine)."""
    client = server.client
    meta = {"deep": nested(31), "max": bounds.INT_MAX, "min": bounds.INT_MIN, "f": -1.5e308,
            "s": "x" * (16 * 1024), "k" * 256: [None, True, "ü€𝄞"]}
    item = await client.add_item(item_name="at/bounds", metadata=meta)
    assert item["metadata"] == meta
    async with aiohttp.ClientSession() as session:
        status, body = await send(session, "PATCH", server.url + f"/v1/items/{item['oid']}",
                                  {"metadata": {**meta, "again": 1}}, as_msgpack=True)
        assert status == 200, body
    for _ in range(2):
        assert (await client.item(item["oid"]))["metadata"] == {**meta, "again": 1}
        await read_everything(server.url)
        await server.restart()
        client = server.client


async def read_everything(url: str, since: int | None = None) -> None:
    """Every reader of metadata answers (JSON and msgpack, listings, feed, both snapshots);
    the change feed from ``since`` (default: the oldest version it keeps)."""
    async with aiohttp.ClientSession() as session:
        if since is None:
            async with session.get(url + "/v1/changes?since=0") as resp:
                body = await resp.json()
            since = 0 if resp.status == 200 else int(body["error"]["message"].split(
                "oldest kept: ")[1].split(")")[0])
        for path in ("/v1/items?name=*", f"/v1/changes?since={since}", "/v1/snapshot",
                     "/v1/snapshot/columns?with=name,metadata", "/v1/items?meta.max=1"):
            for accept in ("application/json", MSGPACK):
                async with session.get(url + path, headers={"Accept": accept}) as resp:
                    assert resp.status == 200, (path, await resp.text())
                    await resp.read()


async def test_dlm_inject_refuses_metadata_past_the_bounds_with_its_line(sqlite_server,
                                                                          tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_name": "a", "metadata": {"n": 9223372036854775807}}\n'
                     '{"item_name": "b", "metadata": {"n": 9223372036854775808}}\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inventory.cli", "inject", "--url", sqlite_server.url,
        "--from", str(items), "--no-progress", cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _out, err = await proc.communicate()
    assert proc.returncode == 1, err
    assert "line 2: metadata.n: integer 9223372036854775808 is outside the signed 64-bit" \
        in err.decode()
    assert "Traceback" not in err.decode()
    assert (await sqlite_server.client.health())["items"] == 0


# ------------------------------------------------------------------- one bad write, one group

def good_item(i: int) -> dict[str, Any]:
    return {"item_name": f"good/{i}", "storage": "disk1", "size": 1, "checksum": "1",
            "metadata": {"i": i}, "owner": "alice"}


async def test_bad_writes_among_300_good_ones_fail_alone(server: InProcessServer):
    """300 concurrent good writes and a few bad ones, grouped in one commit: each good write
    succeeds, each bad one is a 400 of its own, and no answer carries another one's text."""
    await server.client.add_storage(**STORAGE)
    url = server.url
    bad = [({"item_name": "bad/nul", "owner": "eve\x00"}, False),
           ({"item_name": "bad/bytes", "metadata": {"b": b"evil"}}, True),
           ({"item_name": "bad/nan", "metadata": {"x": float("nan")}}, True),
           ({"item_name": "bad/big", "metadata": {"x": 2**64}}, False),
           ({"item_name": "bad/key", "metadata": {"e\x00ve": 1}}, True)]
    # no per-session connection limit: all 300 requests are in flight at once
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with WriteLock(server.db_url):  # the writer waits: everything below queues
            primer = asyncio.create_task(send(session, "POST", url + "/v1/items",
                                              good_item(-1)))
            await asyncio.sleep(0.3)
            tasks = [asyncio.create_task(send(session, "POST", url + "/v1/items", good_item(i)))
                     for i in range(300)]
            bad_tasks = [asyncio.create_task(send(session, "POST", url + "/v1/items", body,
                                                  as_msgpack))
                         for body, as_msgpack in bad]
            await asyncio.sleep(0.5)
        assert (await primer)[0] == 201
        for task in tasks:
            status, body = await task
            assert status == 201, body
            assert "eve" not in json.dumps(body)
        for task in bad_tasks:
            status, body = await task
            assert status == 400, body
    found = {i["item_name"] async for i in server.client.find_items("*", limit=10_000)}
    assert found == {f"good/{i}" for i in range(-1, 300)}


async def test_a_write_the_database_refuses_after_the_checks_fails_alone(server: InProcessServer):
    """Defence in depth: a write that passed every check but that the database (here: the
    row encoding before it) refuses fails on its own with its own error; the writes grouped
    with it commit. Planted through the Python API, below the request checks."""
    await server.client.add_storage(**STORAGE)
    scheduler = server.app[STATE].scheduler
    url = server.url
    async with aiohttp.ClientSession() as session:
        async with WriteLock(server.db_url):
            primer = asyncio.create_task(send(session, "POST", url + "/v1/items",
                                              good_item(-1)))
            await asyncio.sleep(0.3)
            tasks = [asyncio.create_task(send(session, "POST", url + "/v1/items", good_item(i)))
                     for i in range(50)]
            planted = asyncio.create_task(scheduler.write(AddItems(
                [ItemSpec(item_name="planted", metadata={"b": b"\xffsecret-of-planted"})])))
            more = [asyncio.create_task(send(session, "POST", url + "/v1/items", good_item(i)))
                    for i in range(50, 100)]
            await asyncio.sleep(0.5)
        assert (await primer)[0] == 201
        for task in tasks + more:
            status, body = await task
            assert status == 201, body
        with pytest.raises(BadRequest) as refusal:
            await planted
    assert "refused a value" in refusal.value.message
    found = {i["item_name"] async for i in server.client.find_items("*", limit=10_000)}
    assert found == {f"good/{i}" for i in range(-1, 100)}
    # memory is the database's: a restart finds the same
    await server.restart()
    assert {i["item_name"] async for i in server.client.find_items("*", limit=10_000)} == found


def multibyte_path(rnd: random.Random, length: int) -> str:
    """CJK segments of 80 characters (240 bytes, under the 255-byte segment limit): text
    that does not compress, so its index entry is as large as its UTF-8."""
    segments = ("".join(chr(rnd.randrange(0x4E00, 0x9FFF)) for _ in range(80))
                for _ in range(length // 81 + 1))
    return "/".join(segments)[:length].rstrip("/")


@pytest.mark.postgres
async def test_a_value_postgresql_alone_refuses_fails_only_its_write(pg_url, tmp_path):
    """A real one: an explicit uri under a long multibyte root passes every check (and SQLite
    stores it), but its entry in PostgreSQL's unique (storage_id, uri) index is past the
    2704-byte btree limit. Grouped with 100 good writes, only it fails, with its own 400."""
    server = await InProcessServer(pg_url, tmp_path).start()
    try:
        rnd = random.Random(16)
        root = "/" + multibyte_path(rnd, 700)
        await server.client.add_storage(**{**STORAGE, "root": root})
        name = multibyte_path(rnd, 300)
        huge = {"item_name": name, "storage": "disk1", "size": 1, "uri": f"{root}/{name}"}
        url = server.url
        async with aiohttp.ClientSession() as session:
            async with WriteLock(pg_url):
                primer = asyncio.create_task(send(session, "POST", url + "/v1/items",
                                                  good_item(-1)))
                await asyncio.sleep(0.3)
                tasks = [asyncio.create_task(send(session, "POST", url + "/v1/items",
                                                  good_item(i))) for i in range(100)]
                bad = asyncio.create_task(send(session, "POST", url + "/v1/items", huge))
                await asyncio.sleep(0.5)
            assert (await primer)[0] == 201
            for task in tasks:
                status, body = await task
                assert status == 201, body
                assert "replica_storage_uri" not in json.dumps(body)
            status, body = await bad
        assert status == 400 and body["error"]["code"] == "bad_request", body
        assert "replica_storage_uri" in body["error"]["message"], body
        found = {i["item_name"] async for i in server.client.find_items("*", limit=10_000)}
        assert found == {f"good/{i}" for i in range(-1, 100)}
    finally:
        await server.stop()


# ------------------------------------------------------------------- metadata stored before

async def store_behind_the_back(db_url: str, oid: str, text: str) -> None:
    """Metadata written as an older version (without the bounds) could have stored it."""
    if db_url.startswith("sqlite:"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:"), timeout=30)
        try:
            with conn:
                conn.execute("UPDATE data_item SET metadata = ? WHERE oid = ?", (text, oid))
        finally:
            conn.close()
    else:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute("UPDATE data_item SET metadata = $1::jsonb WHERE oid = $2",
                               text, oid)
        finally:
            await conn.close()


async def test_metadata_stored_past_the_bounds_does_not_stop_the_server(server, caplog):
    client = server.client
    deep = await client.add_item(item_name="old/deep", metadata={"x": 1})
    big = await client.add_item(item_name="old/big", metadata={"x": 1})
    fine = await client.add_item(item_name="old/fine", metadata={"n": 12345678901234567890 // 2})
    await server.stop()
    deep_text = '{"a":' * 985 + "1" + "}" * 985  # nested(985), beyond json.dumps here
    await store_behind_the_back(server.db_url, deep["oid"], deep_text)
    await store_behind_the_back(server.db_url, big["oid"],
                                json.dumps({"n": 2**70, "l": [-(2**64), -(10**400)], "s": "kept"}))
    with caplog.at_level(logging.WARNING, logger="dlm.store"):
        await server.start()
    client = server.client
    warned = {r.item for r in caplog.records if "metadata bounds" in r.getMessage()}
    assert warned == {"old/deep", "old/big"}
    served = (await client.item(deep["oid"]))["metadata"]
    assert served[bounds.TEXT_KEY].replace(" ", "") == deep_text
    assert (await client.item(big["oid"]))["metadata"] == {
        "n": float(2**70), "l": [float(-(2**64)), str(-(10**400))], "s": "kept"}
    assert (await client.item(fine["oid"]))["metadata"] == {"n": 12345678901234567890 // 2}
    await read_everything(server.url)
    # the item can be changed, which stores metadata within the bounds again
    await client.patch_item(big["oid"], metadata={"n": 1})
    await server.restart()
    assert (await server.client.item(big["oid"]))["metadata"] == {"n": 1}


# ------------------------------------------------------------------- streams that fail

@pytest.mark.parametrize("path", ["/v1/snapshot", "/v1/snapshot/columns?with=metadata"])
async def test_a_stream_that_cannot_encode_a_value_ends_as_an_error(sqlite_server, path):
    """A value no encoder carries, planted in memory below every check: the stream's client
    sees a payload error (the body never ends), never a complete answer or a 500 inside it."""
    client = sqlite_server.client
    for i in range(3):
        await client.add_item(item_name=f"s/{i}", metadata={"i": i})
    inv = sqlite_server.app[STATE].inventory
    inv.i_metadata[1] = {"unencodable": 2**70}
    async with aiohttp.ClientSession() as session, session.get(sqlite_server.url + path) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    # the raw bytes: no second status line inside the body
    reader, writer = await asyncio.open_connection("127.0.0.1", int(sqlite_server.url.rsplit(
        ":", 1)[1].rstrip("/")))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 30)  # until the server drops the connection
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 500" not in raw
    assert not raw.endswith(b"0\r\n\r\n"), "the chunked body ended as if complete"
    # the server goes on serving
    assert (await client.health())["items"] == 3


# ------------------------------------------------------------------- the bounds as settings

@pytest.mark.parametrize(("content", "message"), [
    ("metadata: 5\n", "metadata: expected a mapping of max_bytes"),
    ("metadata: {max_depht: 3}\n", "unknown setting(s) max_depht"),
    ("metadata: {max_depth: 101}\n", "metadata.max_depth: expected an integer from 1 to 100"),
    ("metadata: {max_keys: '10'}\n", "metadata.max_keys: expected an integer"),
])
def test_bad_metadata_settings_are_one_line_on_stderr(tmp_path, content, message):
    config = tmp_path / "dlm.yaml"
    config.write_text(content)
    result = run_dlm("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


async def test_metadata_bounds_from_the_config(tmp_path, server_process):
    port = free_port()
    config = tmp_path / "dlm.yaml"
    config.write_text(f"port: {port}\ndata_dir: {tmp_path / 'data'}\n"
                      f"metadata: {{max_depth: 3, max_keys: 4, max_bytes: 100}}\n")
    proc = server_process(None)
    proc.args = [sys.executable, "-m", "inventory.cli", "serve", "--config", str(config)]
    proc.port = port
    proc.start()
    await wait_healthy(proc.url)
    async with aiohttp.ClientSession() as session:
        url = proc.url + "/v1/items"
        status, body = await send(session, "POST", url, {"item_name": "a",
                                                         "metadata": nested(3)})
        assert status == 201, body
        for meta, field, words in [(nested(4), "metadata.a.a.a", "more than 3"),
                                   ({f"k{i}": 1 for i in range(5)}, "metadata", "4 keys"),
                                   ({"k": "x" * 100}, "metadata", "100 allowed")]:
            status, body = await send(session, "POST", url, {"item_name": "b",
                                                             "metadata": meta})
            refused(status, body, field, words)


def bad_plan(summary: dict[str, Any]) -> dict[str, Any]:
    """A Detox plan (msgpack) that changes nothing, with ``summary`` as given."""
    import hashlib
    import time
    import zlib

    text = "partition \"all\" { }\n"
    return {"policy_name": "all", "policy_file": "p.policy", "policy_text": text,
            "policy_sha256": hashlib.sha256(text.encode()).hexdigest(), "snapshot_version": 0,
            "started": time.time(), "summary": summary, "expirations": [], "deletions": [],
            "decisions": zlib.compress(msgpack.packb({"columns": ["oid"], "rows": []}))}


async def test_bad_plan_summaries_among_300_good_writes_fail_alone(server: InProcessServer):
    """A cycle plan's summary is stored as JSON like metadata: bytes, extension values, NaN,
    integers past 64 bits, deep nesting or megabytes in it are a 400 naming ``summary`` and
    no good write grouped with it fails (found from outside: 291 of 300 good writes failed
    with "Object of type bytes is not JSON serializable", and a summary nested 980 levels kept
    a PostgreSQL server from starting again)."""
    await server.client.add_storage(**STORAGE)
    url = server.url
    summaries = [{"x": b"\x00"}, {"x": msgpack.ExtType(5, b"e")}, {"x": float("nan")},
                 {"x": 2**64 - 1}, nested(20), {"x": "s" * (5 << 20)}, {"e\x00": 1},
                 nested(980)]  # too deep for the decoder itself: a 400 naming the body
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with WriteLock(server.db_url):
            tasks = [asyncio.create_task(send(session, "POST", url + "/v1/items", good_item(i)))
                     for i in range(300)]
            plans = [asyncio.create_task(send(session, "POST", url + "/v1/cycles/detox",
                                              bad_plan(s), True)) for s in summaries]
            await asyncio.sleep(0.5)
        for task in tasks:
            status, body = await task
            assert status == 201, body
        for task in plans:
            status, body = await task
            assert status == 400, body
            assert body["error"]["field"].startswith("summary") or (
                task is plans[-1] and body["error"]["field"] == "body"), body
    assert await server.client.history() == []
    await server.restart()  # nothing stored that keeps it from loading
    assert await server.client.history() == []


async def test_owner_and_group_are_bounded(sqlite_server):
    """Metadata is bounded; owner and group were not (a 3 MB owner made each answer 3 MB)."""
    async with aiohttp.ClientSession() as session:
        for field in ("owner", "group"):
            status, body = await send(session, "POST", sqlite_server.url + "/v1/items",
                                      {"item_name": f"big/{field}", field: "o" * 257})
            assert status == 400 and body["error"]["field"] == field, body
            status, body = await send(session, "POST", sqlite_server.url + "/v1/items",
                                      {"item_name": f"ok/{field}", field: "o" * 256})
            assert status == 201, body
