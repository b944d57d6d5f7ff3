"""The OpenAPI document: complete, valid, public, and true of the server (schemathesis).

The fuzzing runs ``dlm serve`` in a subprocess on SQLite and checks every answer: no 5xx, every
status documented, every body matching its schema. In open mode (no token: auth hides nothing)
it runs all phases with many generated requests; with tokens from the config file a shorter run
checks the 401/403 answers of a reader and of no token at all, and fuzzes token creation (which
would end open mode). Set ``DLM_FUZZ_SEED`` to replay another seed, ``DLM_FUZZ_EXAMPLES`` for a
longer run.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import zlib
from pathlib import Path

import aiohttp
import msgpack
import pytest
from aiohttp import web
from yarl import URL

from inventory.server import openapi
from inventory.server.app import ServerConfig, make_app
from inventory.store import open_store
from tests.openapi_fixtures import (
    call,
    fuzz_document,
    must,
    run_schemathesis,
    seed,
    server_log_errors,
)

FUZZ_EXAMPLES = int(os.environ.get("DLM_FUZZ_EXAMPLES", "25"))
TOKENS = {"fuzz-reader": "reader", "fuzz-operator": "operator", "spare": "producer"}


def _app(tmp_path: Path) -> web.Application:
    return make_app(ServerConfig(store=open_store(f"sqlite:{tmp_path / 'x.sqlite'}",
                                                  str(tmp_path))))


# ----------------------------------------------------------------------- the document

def test_every_route_is_documented(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert openapi.undocumented(app) == []
    doc = openapi.document(app, strict=True)
    for method, path in openapi.app_routes(app):
        assert method.lower() in doc["paths"][path], f"{method} {path} missing"


def test_a_route_without_description_fails(tmp_path: Path) -> None:
    app = _app(tmp_path)
    before = openapi.undocumented(app)

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/v1/new-thing", handler)
    assert openapi.undocumented(app) == [*before, ("POST", "/v1/new-thing")]
    with pytest.raises(openapi.UndocumentedRoute, match="POST /v1/new-thing"):
        openapi.document(app, strict=True)
    assert "/v1/new-thing" not in openapi.document(app)["paths"]  # served without it


def test_document_shape(tmp_path: Path) -> None:
    """Roles, errors and public operations as the contract (docs/api.md) says."""
    doc = openapi.document(_app(tmp_path))
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    public = {(m, p) for p, ms in doc["paths"].items() for m, op in ms.items()
              if op.get("security") == []}
    assert public == {("get", "/v1/health"), ("head", "/v1/health"),
                      ("get", "/openapi.json"), ("head", "/openapi.json")}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            codes = set(op["responses"])
            if (method, path) not in public:
                assert {"401", "403"} <= codes, (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= codes, (method, path)
            assert any(c.startswith("2") for c in codes), (method, path)
    snapshot = doc["paths"]["/v1/snapshot"]["get"]["responses"]["200"]["content"]
    assert list(snapshot) == ["application/msgpack"]
    item = doc["components"]["schemas"]["Item"]
    assert item["additionalProperties"] is False
    assert {"type": "null"} in item["properties"]["parent_oid"]["anyOf"]
    params = {p["name"]: p for p in doc["paths"]["/v1/items"]["get"]["parameters"]}
    assert params["state"]["schema"]["enum"] == ["INITIALISED", "READY", "EXPIRED", "DELETED",
                                                 "CORRUPTED"]
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10_000}


async def test_served_without_token(http: aiohttp.ClientSession) -> None:
    """Public even once tokens exist (open mode over)."""
    async with http.post("/v1/tokens", json={"name": "op", "role": "operator"}) as resp:
        assert resp.status == 201
    async with http.get("/v1/storages") as resp:
        assert resp.status == 401
    async with http.get("/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert "/v1/items/{oid}" in doc["paths"]


# ----------------------------------------------------------------------- regressions
# Each was found by the fuzzer: a 500, or an answer that did not match the document.

@pytest.mark.parametrize("body", [
    {"item_name": "big", "lifetime": 3.2e307},
    {"item_name": "big", "expire_at": "9999-12-31T23:59:59.999999Z"},
    {"item_name": "big", "expire_at": "0001-01-01T00:00:00+01:00"},
])
async def test_expiry_past_year_9999_is_refused(http: aiohttp.ClientSession,
                                                body: dict) -> None:
    """An expiry the server cannot write as ISO-8601 was stored, then every answer showing the
    item was a 500 (POST itself, GET /v1/items) until the database was fixed by hand."""
    async with http.post("/v1/items", json=body) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["field"] == ("lifetime" if "lifetime" in body else "expire_at")
    async with http.post("/v1/items", json={"item_name": "ok"}) as resp:
        oid = (await resp.json())["oid"]
    async with http.patch(f"/v1/items/{oid}", json={"lifetime": 1e300}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "lifetime"
    async with http.post(f"/v1/items/{oid}/accesses", json={"at": "9999-12-31T23:59:59.9Z"}
                         ) as resp:
        assert resp.status == 400
    async with http.get("/v1/items") as resp:
        assert resp.status == 200
        assert [i["item_name"] for i in (await resp.json())["items"]] == ["ok"]


@pytest.mark.parametrize("batch", [False, True])
async def test_no_version_after_the_last(http: aiohttp.ClientSession, batch: bool) -> None:
    """The next version of a name at 2**31-1 overflowed the in-memory column after the commit:
    columns of different lengths, and every later write, listing and snapshot was a 500."""
    async with http.post("/v1/items", json={"item_name": "v", "item_version": 2**31 - 1}
                         ) as resp:
        assert resp.status == 201
    body = {"item_name": "v"}
    async with http.post("/v1/items", json=[body] if batch else body) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["field"] == \
            ("items[0].item_version" if batch else "item_version")
    async with http.post("/v1/items", json={"item_name": "v", "item_version": 7}) as resp:
        assert resp.status == 201
    async with http.get("/v1/items", params={"version": "all"}) as resp:
        assert resp.status == 200
        assert len((await resp.json())["items"]) == 2
    async with http.get("/v1/snapshot") as resp:
        assert resp.status == 200
        assert (await resp.read()).endswith(b"\xa3end\x81\xa7version\x02")


async def test_head_snapshot_sends_no_body(sqlite_server) -> None:
    """HEAD /v1/snapshot wrote the whole stream after the headers: on a keep-alive connection
    the client read it as the start of the next answer."""
    url = URL(sqlite_server.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"HEAD /v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                 b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"X-DLM-Version" in head
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), rest[:80]


def _plan(**fields: object) -> dict:
    text = "policy p\n"
    return {"policy_name": "p", "policy_file": "p.policy", "policy_text": text,
            "policy_sha256": hashlib.sha256(text.encode()).hexdigest(), "snapshot_version": 0,
            "started": 1.7e9, "expirations": [], "deletions": [], "summary": {},
            "decisions": _blob({"columns": ["storage_id", "outcome"], "rows": [[1, "kept"]]}),
            **fields}


def _blob(data: object) -> str:
    return base64.b64encode(zlib.compress(msgpack.packb(data))).decode()


@pytest.mark.parametrize("started", [1e300, -1e300])
async def test_cycle_start_past_year_9999_is_refused(http: aiohttp.ClientSession,
                                                     started: float) -> None:
    """A plan's ``started`` was stored as sent: the POST and then every /v1/history was a 500."""
    async with http.post("/v1/cycles/detox", json=_plan(started=started)) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "started"
    async with http.get("/v1/history") as resp:
        assert resp.status == 200


@pytest.mark.parametrize("decisions", [
    {"columns": ["storage_id"], "rows": [5, [1]]},
    {"columns": ["storage_id", "outcome"], "rows": [[1]]},
    {"columns": ["storage_id"], "rows": [[[1]]]},
    # the column planner's encoding: columns of different lengths, a code past the kinds,
    # an item index past the oids, a column not a whole number of values
    {"format": "columns", "kinds": [["keep", "x", 1]], "oids": b"\0" * 16,
     "item": b"\0" * 8, "storage_id": b"\1\0", "code": b"\0" * 4, "size": b"\0" * 8},
    {"format": "columns", "kinds": [["keep", "x", 1]], "oids": b"\0" * 16,
     "item": b"\0" * 4, "storage_id": b"\1\0", "code": b"\5\0\0\0", "size": b"\0" * 8},
    {"format": "columns", "kinds": [["keep", "x", 1]], "oids": b"\0" * 16,
     "item": b"\3\0\0\0", "storage_id": b"\1\0", "code": b"\0" * 4, "size": b"\0" * 8},
    {"format": "columns", "kinds": [["keep", "x", 1]], "oids": b"\0" * 16,
     "item": b"\0" * 5, "storage_id": b"\1\0", "code": b"\0" * 4, "size": b"\0" * 8},
])
async def test_malformed_decisions_are_an_empty_page(http: aiohttp.ClientSession,
                                                     decisions: dict) -> None:
    """Decisions that do not fit their columns (or an unhashable storage_id) made every page of
    GET /v1/history/{id}/decisions a 500; they read as no decisions, like an unreadable blob."""
    async with http.post("/v1/cycles/detox", json=_plan(decisions=_blob(decisions))) as resp:
        assert resp.status == 201, await resp.text()
        cycle = await resp.json()
    async with http.get(f"/v1/history/{cycle['id']}/decisions") as resp:
        assert resp.status == 200
        page = await resp.json()
    assert page["decisions"] in ([], [{"storage_id": [1], "storage": None}])


async def test_item_without_checksum_has_null_method(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/items", json={"item_name": "plain"}) as resp:
        item = await resp.json()
    assert item["checksum"] is None and item["checksum_method"] is None


# ----------------------------------------------------------------------- fuzzing

def _report(run, what: str) -> str:
    failures = json.dumps(run.report.get("failures"), indent=1)[:3000]
    return f"{what}: {run.summary()}\n{failures}\n{run.output[-12000:]}"


def test_fuzz_open_mode(server_process, tmp_path: Path) -> None:
    """Every operation, all phases, positive and negative data: zero failures."""
    server = server_process(f"sqlite:{tmp_path / 'inventory.sqlite'}").start()
    seeded = seed(server.url, tmp_path / "roots")
    doc = fuzz_document(server.url, seeded, drop=(("POST", "/v1/tokens"),))
    run = run_schemathesis(doc, server.url, tmp_path / "open", max_examples=FUZZ_EXAMPLES)
    print(f"open mode: {run.summary()}")
    assert run.generated >= 1000, _report(run, "too few test cases")
    assert run.report["operations"]["tested"] == sum(len(m) for m in doc["paths"].values())
    assert run.exit_code == 0 and run.with_failures == 0 and run.errored == 0, \
        _report(run, "open mode")
    assert server_log_errors(server.log_path) == []
    assert must(server.url, "GET", "/v1/health")["auth"] == "open"  # auth hid nothing


def test_fuzz_with_tokens(server_process, tmp_path: Path) -> None:
    """401 without a token, 403 for a reader's writes, token creation by an operator."""
    secrets = {name: f"secret-{name}" for name in TOKENS}
    config = tmp_path / "dlm.yaml"
    config.write_text("tokens:\n" + "".join(
        f"  - name: {name}\n    role: {role}\n"
        f"    sha256: {hashlib.sha256(secrets[name].encode()).hexdigest()}\n"
        for name, role in TOKENS.items()))
    server = server_process(f"sqlite:{tmp_path / 'inventory.sqlite'}",
                            "--config", str(config)).start()
    url = server.url
    seeded = seed(url, tmp_path / "roots", token=secrets["fuzz-operator"])
    doc = fuzz_document(url, seeded)
    assert call(url, "GET", "/v1/storages")[0] == 401
    assert call(url, "POST", "/v1/storages", {}, secrets["fuzz-reader"])[0] == 403

    reader = run_schemathesis(doc, url, tmp_path / "reader", max_examples=4,
                              token=secrets["fuzz-reader"], phases="examples,fuzzing")
    nobody = run_schemathesis(doc, url, tmp_path / "nobody", max_examples=2,
                              phases="examples,fuzzing")
    tokens_only = {**doc, "paths": {p: m for p, m in doc["paths"].items()
                                    if p.startswith("/v1/tokens")}}
    operator = run_schemathesis(tokens_only, url, tmp_path / "operator", max_examples=30,
                                token=secrets["fuzz-operator"])
    for what, run in (("reader", reader), ("no token", nobody), ("operator", operator)):
        print(f"{what}: {run.summary()}")
        assert run.exit_code == 0 and run.with_failures == 0 and run.errored == 0, \
            _report(run, what)
    assert server_log_errors(server.log_path) == []
    # (the operator run may have deleted any token by now, config ones included)
    assert must(url, "GET", "/v1/health")["auth"] == "tokens"
