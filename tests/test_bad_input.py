"""Bad input to every endpoint: a 4xx with a JSON body naming the field, and nothing changes."""

from __future__ import annotations

import json

import pytest

from inventory.writes import MAX_BATCH


async def snapshot_state(http):
    async with http.get("/v1/health") as resp:
        health = await resp.json()
    return health["version"], health["items"], health["replicas"], health["storages"]


async def post(http, path, body, *, raw=False, headers=None):
    data = body if raw else json.dumps(body)
    headers = {"Content-Type": "application/json", **(headers or {})}
    async with http.post(path, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def with_disk(http):
    # verify_ingest off: these tests are about malformed input, not payloads
    status, _ = await post(http, "/v1/storages", {"name": "disk1", "kind": "posix",
                                                  "root": "/data/disk1", "capacity": 1000,
                                                  "config": {"verify_ingest": False}})
    assert status == 201
    return http


STORAGE_CASES = [
    ({"kind": "posix", "root": "/d", "capacity": 1}, "name", "missing required field"),
    ({"name": "d", "kind": "tape9", "root": "/d", "capacity": 1}, "kind",
     "expected one of posix, s3"),
    ({"name": "d", "kind": "posix", "root": "/d", "capacity": -1}, "capacity", ">= 0"),
    ({"name": "d", "kind": "posix", "root": "/d", "capacity": "12 parsecs"}, "capacity", "unit"),
    ({"name": "d", "kind": "posix", "root": "relative", "capacity": 1}, "root", "absolute"),
    ({"name": "d", "kind": "s3", "root": "/bucket", "capacity": 1}, "root", "bucket"),
    ({"name": "d", "kind": "posix", "root": "/", "capacity": 1}, "root", "file system root"),
    ({"name": "d", "kind": "posix", "root": "//./", "capacity": 1}, "root", "file system root"),
    ({"name": "d", "kind": "posix", "root": "/d/../etc", "capacity": 1}, "root", "'..'"),
    ({"name": "d", "kind": "posix", "root": "/d/q\u0000x", "capacity": 1}, "root", "control"),
    ({"name": "d", "kind": "posix", "root": "/d/nl\nx", "capacity": 1}, "root", "control"),
    ({"name": "d", "kind": "s3", "root": "bucket/p\u202ex", "capacity": 1}, "root", "control"),
    ({"name": "d", "kind": "posix", "root": "/dev/null", "capacity": 1}, "root",
     "not a directory"),
    ({"name": "../x", "kind": "posix", "root": "/d", "capacity": 1}, "name", "letters"),
    ({"name": "d", "kind": "posix", "root": "/d", "capacity": 1, "phase": "HOT"}, "phase",
     "expected one of PLASMA, GAS, LIQUID, SOLID"),
    ({"name": "d", "kind": "posix", "root": "/d", "capacity": 1, "colour": "red"}, "colour",
     "unknown field"),
    ({"name": "disk1", "kind": "posix", "root": "/d", "capacity": 1}, "name", "exists"),
    ([], "body", "Expected `object`"),
    # a config the backend would refuse: 400 now, not an internal error at the first inject
    ({"name": "d", "kind": "s3", "root": "bucket", "capacity": 1,
      "config": {"endpoint": "http://127.0.0.1:9"}}, "config", "unknown s3 config keys"),
    ({"name": "d", "kind": "s3", "root": "bucket", "capacity": 1,
      "config": {"part_size": 5}}, "config", "part_size must be at least"),
    ({"name": "d", "kind": "posix", "root": "/d", "capacity": 1,
      "config": {"threads": "many"}}, "config", "must be int"),
    ({"name": "d", "kind": "posix", "root": "/d", "capacity": 1,
      "config": {"endpoint_url": "http://x"}}, "config", "unknown posix config key"),
    ({"name": "d", "kind": "posix", "root": "/d", "capacity": 1,
      "config": {"copy_method": "magic"}}, "config", "'kernel' or 'read'"),
    ({"name": "d", "kind": "posix", "root": "/d", "capacity": 1,
      "config": {"threads": 0}}, "config", "at least 1"),
    ({"name": "d", "kind": "s3", "root": "bucket", "capacity": 1,
      "config": {"part_size": "16 MiB"}}, "config", "must be an integer"),
    ({"name": "d", "kind": "s3", "root": "bucket", "capacity": 1,
      "config": {"endpoint_url": 123}}, "config", "must be a string"),
    ({"name": "d", "kind": "s3", "root": "bucket", "capacity": 1,
      "config": {"endpoint_url": "notaurl"}}, "config", "http:// or https://"),
    ({"name": "d", "kind": "s3", "root": "bucket", "capacity": 1,
      "config": {"addressing_style": "weird"}}, "config", "addressing_style"),
    ({"name": "d", "kind": "s3", "root": "bucket", "capacity": 1,
      "config": {"connect_timeout": "x"}}, "config", "seconds"),
    ({"name": "d", "kind": "s3", "root": "bucket", "capacity": 1,
      "config": {"content_md5": "no"}}, "config", "true or false"),
    ({"name": "d", "kind": "s3", "root": "bucket", "capacity": 1,
      "config": {"list_page_size": 0}}, "config", "integer >= 1"),
]


async def test_a_storage_config_patch_the_backend_would_refuse_is_400(with_disk):
    http = with_disk
    before = await snapshot_state(http)
    async with http.patch("/v1/storages/disk1",
                          data=json.dumps({"config": {"thread": 4}}),
                          headers={"Content-Type": "application/json"}) as resp:
        answer = await resp.json()
    assert resp.status == 400 and answer["error"]["field"] == "config", answer
    assert "unknown posix config key 'thread'" in answer["error"]["message"]
    assert await snapshot_state(http) == before
    async with http.get("/v1/storages/disk1") as resp:
        assert "thread" not in (await resp.json())["config"]


@pytest.mark.parametrize(("body", "field", "text"), STORAGE_CASES)
async def test_bad_storage(with_disk, body, field, text):
    http = with_disk
    before = await snapshot_state(http)
    status, answer = await post(http, "/v1/storages", body)
    assert 400 <= status < 500, answer
    assert answer["error"]["field"] == field, answer
    assert text in answer["error"]["message"], answer
    assert await snapshot_state(http) == before


ITEM_CASES = [
    ({}, "item_name", "missing required field"),
    ({"item_name": 5}, "item_name", "Expected `str`"),
    ({"item_name": ""}, "item_name", "empty"),
    ({"item_name": "/abs/path"}, "item_name", "relative"),
    ({"item_name": "a/../../etc/passwd"}, "item_name", "'..'"),
    ({"item_name": "a\x00b"}, "item_name", "control"),
    ({"item_name": "x" * 2000}, "item_name", "longer than"),
    ({"item_name": "a", "size": "big"}, "size", "Expected `int | null`"),
    ({"item_name": "a", "size": -5}, "size", ">= 0"),
    ({"item_name": "a", "item_version": 0}, "item_version", ">= 1"),
    ({"item_name": "a", "item_type": "folder"}, "item_type", "one of file, container"),
    ({"item_name": "a", "target_phase": "STEAM"}, "target_phase", "one of PLASMA"),
    ({"item_name": "a", "storage": "nowhere", "size": 1}, "storage", "no storage named"),
    ({"item_name": "a", "storage": "disk1"}, "size", "required when storage"),
    ({"item_name": "a", "uri": "/x"}, "uri", "needs a storage"),
    ({"item_name": "a", "expire_at": "tomorrow"}, "expire_at", "ISO-8601"),
    ({"item_name": "a", "expire_at": "2030-01-01T00:00:00Z", "lifetime": 5}, "lifetime",
     "not both"),
    ({"item_name": "a", "lifetime": -1}, "lifetime", "> 0"),
    ({"item_name": "a", "parent_oid": "not-a-uuid"}, "parent_oid", "UUID"),
    ({"item_name": "a", "parent_oid": "00000000-0000-4000-8000-000000000000"}, "parent_oid",
     "no item"),
    ({"item_name": "a", "metadata": []}, "metadata", "Expected `object | null`"),
    ({"item_name": "a", "flavour": 1}, "flavour", "unknown field"),
    ({"item_name": "c", "item_type": "container", "storage": "disk1", "size": 1}, "storage",
     "container"),
]


@pytest.mark.parametrize(("body", "field", "text"), ITEM_CASES)
async def test_bad_single_item(with_disk, body, field, text):
    http = with_disk
    before = await snapshot_state(http)
    status, answer = await post(http, "/v1/items", body)
    assert 400 <= status < 500, answer
    assert answer["error"]["field"] == field, answer
    assert text in answer["error"]["message"], answer
    assert await snapshot_state(http) == before


@pytest.mark.parametrize(("body", "field", "text"), ITEM_CASES[:12])
async def test_bad_item_in_a_batch_names_its_index_and_refuses_the_batch(with_disk, body, field,
                                                                        text):
    http = with_disk
    before = await snapshot_state(http)
    batch = [{"item_name": "good/1"}, {"item_name": "good/2"}, body]
    status, answer = await post(http, "/v1/items", batch)
    assert 400 <= status < 500
    assert answer["error"]["field"] == f"items[2].{field}", answer
    assert await snapshot_state(http) == before


async def test_parent_must_be_a_container(with_disk):
    http = with_disk
    status, plain = await post(http, "/v1/items", {"item_name": "plain"})
    assert status == 201
    status, answer = await post(http, "/v1/items", {"item_name": "m", "parent_oid": plain["oid"]})
    assert status == 400 and answer["error"]["field"] == "parent_oid"
    assert "not a container" in answer["error"]["message"]


async def test_storage_not_accepting_data(with_disk):
    http = with_disk
    await post(http, "/v1/storages", {"name": "old", "kind": "posix", "root": "/old",
                                      "capacity": 1, "status": "retired"})
    status, answer = await post(http, "/v1/items", {"item_name": "a", "storage": "old",
                                                    "size": 1})
    assert status == 409 and answer["error"]["field"] == "storage"
    assert "retired" in answer["error"]["message"]


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"item_name": "a",}', b"\xff\xfe"])
async def test_invalid_json(with_disk, raw):
    http = with_disk
    before = await snapshot_state(http)
    status, answer = await post(http, "/v1/items", raw, raw=True)
    assert status == 400 and answer["error"]["field"] == "body"
    assert "invalid JSON" in answer["error"]["message"]
    assert await snapshot_state(http) == before


async def test_empty_body_and_empty_batch(with_disk):
    http = with_disk
    status, answer = await post(http, "/v1/items", b"", raw=True)
    assert status == 400 and answer["error"]["field"] == "body"
    status, answer = await post(http, "/v1/items", [])
    assert status == 400 and answer["error"]["field"] == "items"


async def test_oversized_batch(with_disk):
    http = with_disk
    before = await snapshot_state(http)
    status, answer = await post(http, "/v1/items",
                                [{"item_name": f"b/{i}"} for i in range(MAX_BATCH + 1)])
    assert status == 400 and answer["error"]["field"] == "items"
    assert str(MAX_BATCH) in answer["error"]["message"]
    assert await snapshot_state(http) == before


async def test_body_over_the_size_limit_is_413(sqlite_server, http):
    sqlite_server.app._client_max_size = 1000
    status, answer = await post(http, "/v1/items", {"item_name": "x" * 5000})
    assert status == 413 and answer["error"]["code"] == "payload_too_large"


async def test_msgpack_body_and_answer(with_disk):
    import msgpack

    http = with_disk
    body = msgpack.packb([{"item_name": "mp/1", "storage": "disk1", "size": 3}])
    async with http.post("/v1/items", data=body, headers={
        "Content-Type": "application/msgpack", "Accept": "application/msgpack"}) as resp:
        assert resp.status == 201
        assert resp.content_type == "application/msgpack"
        answer = msgpack.unpackb(await resp.read())
    assert answer["count"] == 1


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/items/not-a-uuid", "oid"),
    ("/v1/items/00000000-0000-4000-8000-000000000000", "oid"),
    ("/v1/items?storage=nope", "storage"),
    ("/v1/items?phase=HOT", "phase"),
    ("/v1/items?type=folder", "type"),
    ("/v1/items?expired_before=soon", "expired_before"),
    ("/v1/items?parent=xyz", "parent"),
    ("/v1/items?parent=00000000-0000-4000-8000-000000000000", "parent"),
    ("/v1/items?meta.=1", "meta."),
    ("/v1/items/exists", "name"),
    ("/v1/items/exists?name=a&version=x", "version"),
    ("/v1/items/not-a-uuid/storages", "oid"),
    ("/v1/items/00000000-0000-4000-8000-000000000000/children", "oid"),
    ("/v1/operations?state=sleeping", "state"),
    ("/v1/operations?kind=move", "kind"),
    ("/v1/operations?storage=nope", "storage"),
    ("/v1/requests?state=maybe", "state"),
    ("/v1/history?kind=cleanup", "kind"),
    ("/v1/history/abc", "id"),
    ("/v1/history/99", "id"),
    ("/v1/items?name=a&limit=0", "limit"),
    ("/v1/items?name=a&limit=ten", "limit"),
    ("/v1/items?name=a&version=newest", "version"),
    ("/v1/items?name=a&state=SLEEPING", "state"),
    ("/v1/items?name=a&cursor=garbage", "cursor"),
    ("/v1/storages/nope", "name"),
    ("/v1/changes", "since"),
    ("/v1/changes?since=abc", "since"),
    ("/v1/changes?since=99", "since"),
    ("/v1/changes?since=0&wait=9999", "wait"),
])
async def test_bad_queries(http, path, field):
    async with http.get(path) as resp:
        answer = await resp.json()
        assert 400 <= resp.status < 500, answer
    assert answer["error"]["field"] == field, answer


async def test_unknown_route_and_method_are_json(http):
    async with http.get("/v1/nothing") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    async with http.delete("/v1/storages") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_a_posix_root_is_stored_in_its_normal_form(with_disk, tmp_path):
    """``/d/x/``, ``/d//x`` and ``/d/./x`` are one root: stored as ``/d/x``, so the overlap
    check and every table see one root, and a twin is refused as the same root."""
    http = with_disk
    root = tmp_path / "r"
    root.mkdir()
    status, answer = await post(http, "/v1/storages", {
        "name": "norm", "kind": "posix", "root": f"/{root}//./", "capacity": 1})
    assert status == 201 and answer["root"] == str(root), answer
    assert answer["warnings"] == []
    status, answer = await post(http, "/v1/storages", {
        "name": "twin", "kind": "posix", "root": f"{root}/", "capacity": 1})
    assert status == 409 and answer["error"]["field"] == "root", answer


async def test_a_root_not_made_yet_under_a_symlink_to_another_root_overlaps_it(with_disk,
                                                                             tmp_path):
    """``alias/q`` with ``alias`` a symlink to storage a's root and ``q`` not made yet is a's
    ``q``: resolved as far as it exists, it overlaps a (a deletion on one would remove the
    other's payload)."""
    http = with_disk
    (tmp_path / "a").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "a")
    status, answer = await post(http, "/v1/storages", {
        "name": "a", "kind": "posix", "root": str(tmp_path / "a"), "capacity": 1})
    assert status == 201, answer
    before = await snapshot_state(http)
    for root in (tmp_path / "alias" / "q", tmp_path / "alias" / "nx" / "y"):
        status, answer = await post(http, "/v1/storages", {
            "name": "y5", "kind": "posix", "root": str(root), "capacity": 1})
        assert status == 409 and answer["error"]["field"] == "root", answer
    assert await snapshot_state(http) == before
