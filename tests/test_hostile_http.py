"""Hostile HTTP (issue 16): what a web page, a malformed header or a token change must not do.

- Cross-site requests: bodies are JSON or msgpack only (415); an open-mode server answers only
  loopback Host names and its own Origin; with tokens, a foreign Origin may not write; every
  answer carries a CSP, frame denial, nosniff and a referrer policy. Checked over raw HTTP and
  from attacker pages in headless Chromium (another origin, and a DNS-rebound name).
- A bearer token that is not UTF-8 is a 401, on the primary and through a read worker.
- Token changes do not stop read workers from answering.
- Credentials in storage configs (S3 keys, a URL's user:password) never reach readers.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import aiohttp
import msgpack
import pytest
from aiohttp import web

from inventory.server import crosssite
from tests.conftest import InProcessServer, free_port
from tests.test_dashboard_browser import ARGS, CHROMIUM, browser, site  # noqa: F401 - fixtures
from tests.test_read_workers import _serve, _until_serving

STORAGE = {"name": "evil", "kind": "posix", "root": "/tmp/evil", "capacity": 10**12,
           "config": {"verify_ingest": False}}


def storage(name: str) -> dict:
    """Another storage body (roots of two storages may not overlap)."""
    return {**STORAGE, "name": name, "root": f"/tmp/evil-{name}"}


async def _state(http: aiohttp.ClientSession, *, headers: dict | None = None) -> tuple:
    """What an attack would change: the version, the storages, the tokens, the items."""
    async with http.get("/v1/health", headers=headers) as resp:
        health = await resp.json()
    async with http.get("/v1/storages", headers=headers) as resp:
        storages = [s["name"] for s in (await resp.json())["storages"]]
    async with http.get("/v1/tokens", headers=headers) as resp:
        tokens = [t["name"] for t in (await resp.json())["tokens"]]
    return health["version"], health["items"], storages, tokens


def _port(srv: InProcessServer) -> int:
    return int(srv.url.rstrip("/").rsplit(":", 1)[1])


async def _call(method: str, url: str, token: str | None = None, headers: dict | None = None,
                **kwargs) -> tuple[int, dict, str | None]:
    """One request on a connection of its own (the kernel picks the process that answers)."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.request(
            method, url, headers=headers, **kwargs) as resp:
        body = await resp.json() if resp.status != 204 else {}
        return resp.status, body, resp.headers.get("X-DLM-Worker")


async def _raw(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    """Send bytes as they are (aiohttp's client would encode or refuse them); status, head, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


# ------------------------------------------------------------------------- the pure decisions

@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("localhost:8642", True), ("LOCALHOST.:80", True),
    ("127.0.0.1", True), ("127.0.0.1:8642", True), ("127.9.8.7:1", True),
    ("[::1]", True), ("[::1]:8642", True), ("::1", True),
    ("evil.example", False), ("evil.example:8642", False), ("localhost.evil.example", False),
    ("0.0.0.0:8642", False), ("10.0.0.1:8642", False), ("[::2]:8642", False),
    ("127.0.0.1.nip.io:8642", False), ("", False), ("[::1", False),
])
def test_loopback_names(host, loopback):
    assert crosssite.is_loopback_name(host) is loopback


@pytest.mark.parametrize(("origin", "host", "same"), [
    ("http://127.0.0.1:8642", "127.0.0.1:8642", True),
    ("http://LOCALHOST:8642", "localhost:8642", True),
    ("http://localhost", "localhost:80", True),
    ("https://dlm.example.org", "dlm.example.org", True),  # behind a TLS-terminating proxy
    ("https://dlm.example.org", "dlm.example.org:80", False),
    ("http://localhost:8642", "localhost", True),
    ("http://evil.example", "localhost", False),
    ("http://[::1]:8642", "[::1]:8642", True),
    ("http://localhost:3000", "localhost:8642", False),
    ("http://127.0.0.1:8642", "localhost:8642", False),
    ("http://evil.example", "127.0.0.1:8642", False),
    ("null", "127.0.0.1:8642", False),
    ("http://127.0.0.1:8642/path", "127.0.0.1:8642", False),
])
def test_same_origin(origin, host, same):
    assert crosssite.same_origin(origin, host, "http") is same


@pytest.mark.parametrize(("method", "content_type", "has_body", "refused"), [
    ("POST", "application/json", True, False),
    ("POST", "Application/JSON; charset=utf-8", True, False),
    ("POST", "application/msgpack", True, False),
    ("POST", "application/x-msgpack", True, False),
    ("POST", "text/plain", True, True),
    ("POST", "text/plain;charset=UTF-8", True, True),
    ("POST", "application/x-www-form-urlencoded", True, True),
    ("POST", "multipart/form-data; boundary=x", True, True),
    ("POST", None, True, True),  # fetch() of an untyped Blob
    ("POST", "application/x-www-form-urlencoded", False, True),  # a form without fields
    ("POST", None, False, False),
    ("DELETE", None, False, False),
    ("GET", "text/plain", False, False),
    ("GET", "text/plain", True, True),
])
def test_body_types(method, content_type, has_body, refused):
    error = crosssite.body_refusal(method, content_type, has_body)
    assert (error is not None) is refused
    if refused:
        assert error.status == 415 and error.field == "Content-Type"


# ------------------------------------------------------------------------- over HTTP, open mode

async def test_bodies_that_are_not_json_or_msgpack_are_refused(http, sqlite_server):
    before = await _state(http)
    body = json.dumps(STORAGE)
    for content_type in ("text/plain", "text/plain; charset=utf-8",
                         "application/x-www-form-urlencoded", "multipart/form-data; boundary=b",
                         "application/octet-stream", None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        data = body.encode() if content_type is None else body  # bytes: no type added
        if content_type is None:
            headers["Content-Type"] = ""  # aiohttp adds octet-stream unless told not to
        async with http.post("/v1/storages", data=data, headers=headers) as resp:
            answer = await resp.json()
        assert resp.status == 415, (content_type, answer)
        assert answer["error"]["code"] == "unsupported_media_type"
        assert answer["error"]["field"] == "Content-Type"
        assert "application/json" in answer["error"]["message"]
    # an empty form: a type and no body (what `<form method=post>` without fields sends)
    async with http.post("/v1/tokens", data=b"",
                         headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert resp.status == 415
    # the README's `curl -d` without a type is refused the same way
    status, _, answer = await _raw(_port(sqlite_server), (
        b"POST /v1/storages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())))
    assert status == 415 and b"Content-Type" in answer
    assert await _state(http) == before


async def test_json_and_msgpack_bodies_are_accepted(http):
    async with http.post("/v1/storages", data=json.dumps(STORAGE),
                         headers={"Content-Type": "application/json; charset=utf-8"}) as resp:
        assert resp.status == 201, await resp.text()
    item = {"item_name": "packed", "storage": "evil", "size": 1}
    for content_type in ("application/msgpack", "application/x-msgpack"):
        item["item_name"] = content_type
        async with http.post("/v1/items", data=msgpack.packb(item),
                             headers={"Content-Type": content_type}) as resp:
            assert resp.status == 201, await resp.text()
    # no body and no type: as before
    async with http.delete("/v1/storages/nope") as resp:
        assert resp.status == 404


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8642", "127.0.0.1.nip.io",
                                  "0.0.0.0", "192.168.1.10:8642"])
async def test_open_mode_answers_only_loopback_host_names(http, host):
    """DNS rebinding: a page whose name now points at 127.0.0.1 sends its own name as Host."""
    before = await _state(http)
    for method, path, body in (("GET", "/v1/storages", None), ("POST", "/v1/storages", STORAGE),
                               ("POST", "/v1/tokens", {"name": "mine", "role": "operator"}),
                               ("GET", "/", None)):
        async with http.request(method, path, json=body, headers={"Host": host}) as resp:
            answer = await resp.json()
        assert resp.status == 403, (method, path, answer)
        assert answer["error"]["field"] == "Host" and host in answer["error"]["message"]
    assert await _state(http) == before


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2", "[::1]"])
async def test_loopback_host_names_are_served(http, sqlite_server, host):
    port = _port(sqlite_server)
    async with http.get("/v1/storages", headers={"Host": f"{host}:{port}"}) as resp:
        assert resp.status == 200
    async with http.post("/v1/storages", json=storage(f"s{len(host)}"),
                         headers={"Host": f"{host}:{port}",
                                  "Origin": f"http://{host}:{port}"}) as resp:
        assert resp.status == 201, await resp.text()


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:1",
                                    "http://127.0.0.1:1", "https://127.0.0.1"])
async def test_open_mode_refuses_other_origins(http, origin):
    before = await _state(http)
    for method, body in (("GET", None), ("POST", STORAGE)):
        async with http.request(method, "/v1/storages", json=body,
                                headers={"Origin": origin}) as resp:
            answer = await resp.json()
        assert resp.status == 403 and answer["error"]["field"] == "Origin", answer
    assert await _state(http) == before


async def test_with_tokens_a_foreign_origin_may_read_but_not_write(sqlite_server):
    client = sqlite_server.client
    boss = (await client.request("POST", "/v1/tokens", json={"name": "boss",
                                                             "role": "operator"}))["token"]
    auth = {"Authorization": f"Bearer {boss}"}
    async with aiohttp.ClientSession(base_url=sqlite_server.url) as http:
        before = await _state(http, headers=auth)
        evil = {**auth, "Origin": "http://evil.example"}
        async with http.post("/v1/storages", json=STORAGE, headers=evil) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["field"] == "Origin"
        async with http.delete("/v1/tokens/boss", headers=evil) as resp:
            assert resp.status == 403
        async with http.get("/v1/storages", headers=evil) as resp:
            assert resp.status == 200
        assert await _state(http, headers=auth) == before
        # with tokens the server may be named anything (a reverse proxy, a DNS name) ...
        async with http.get("/v1/storages", headers={**auth, "Host": "dlm.example.org"}) as r:
            assert r.status == 200
        # ... and a page of its own origin (its Host, or the proxy's X-Forwarded-Host) writes
        for host in ({"Host": "dlm.example.org"},
                     {"X-Forwarded-Host": "dlm.example.org", "Host": "127.0.0.1:1"}):
            async with http.post("/v1/storages", json=storage(f"s{len(host)}"),
                                 headers={**auth, **host,
                                          "Origin": "http://dlm.example.org"}) as resp:
                assert resp.status == 201, await resp.text()
        # bodies are JSON or msgpack with a token too
        async with http.post("/v1/storages", data=json.dumps(STORAGE),
                             headers={**auth, "Content-Type": "text/plain"}) as resp:
            assert resp.status == 415


async def test_every_answer_carries_the_security_headers(http):
    async def headers_of(method: str, path: str, **kwargs) -> tuple[int, dict]:
        async with http.request(method, path, **kwargs) as resp:
            await resp.read()
            return resp.status, resp.headers

    seen = [await headers_of("GET", "/v1/health"), await headers_of("GET", "/v1/nowhere"),
            await headers_of("POST", "/v1/storages", data="x"),
            await headers_of("GET", "/v1/snapshot"), await headers_of("GET", "/metrics"),
            await headers_of("GET", "/openapi.json"),
            await headers_of("GET", "/dashboard/static/dashboard.js"),
            await headers_of("GET", "/v1/storages", headers={"Origin": "http://evil.example"})]
    assert [s for s, _ in seen] == [200, 404, 415, 200, 200, 200, 200, 403]
    for _status, headers in seen:
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, page = await headers_of("GET", "/")
    assert status == 200 and page["Content-Type"].startswith("text/html")
    policy = page["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy and page["X-Frame-Options"] == "DENY"


# ------------------------------------------------------------------------- malformed bearer

async def test_a_bearer_token_that_is_not_text_is_a_401(sqlite_server, caplog):
    client = sqlite_server.client
    await client.request("POST", "/v1/tokens", json={"name": "boss", "role": "operator"})
    port = _port(sqlite_server)
    for value in (b"Bearer \xff\xfe", b"Bearer dlm_\xc3", b"bearer \xed\xa0\x80"):
        status, head, body = await _raw(port, b"GET /v1/items HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                        b"Authorization: " + value + b"\r\n"
                                        b"Connection: close\r\n\r\n")
        answer = json.loads(body)
        assert status == 401, body
        assert answer["error"]["field"] == "Authorization"
        assert "malformed token" in answer["error"]["message"]
        assert b"WWW-Authenticate" in head
    assert "unhandled error" not in caplog.text
    health = sqlite_server.url.rstrip("/") + "/v1/health"
    async with aiohttp.ClientSession() as http, http.get(health) as resp:
        assert resp.status == 200


# ------------------------------------------------------------------------- read workers

@pytest.fixture
def workers(db_url, tmp_path):
    started = []

    def start(count: int = 3):
        srv = _serve(tmp_path, db_url, count)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


async def test_token_changes_do_not_stop_read_workers(workers):
    """Reads with a valid token go on while tokens are created and deleted, and the workers
    (not only the primary) answer them after each change."""
    srv = workers(3)
    await _until_serving(srv.url, 2)
    status, made, _ = await _call("POST", srv.url + "/v1/tokens",
                                  json={"name": "boss", "role": "operator"})
    assert status == 201
    boss = made["token"]
    status, made, _ = await _call("POST", srv.url + "/v1/tokens", token=boss,
                                  json={"name": "reader", "role": "reader"})
    reader = made["token"]
    failures: list = []
    by_worker_after: list[set] = []
    stop = asyncio.Event()

    async def hammer() -> None:
        while not stop.is_set():
            status, body, _ = await _call("GET", srv.url + "/v1/items", token=reader)
            if status != 200:
                failures.append((status, body))

    async def worker_answers() -> set:
        """Reads until a worker answered one (at most 60 connections): who answered."""
        answered: set = set()
        for _ in range(60):
            status, body, worker = await _call("GET", srv.url + "/v1/items", token=reader)
            assert status == 200, body
            answered.add(worker)
            if worker is not None:
                break
        return answered

    tasks = [asyncio.create_task(hammer()) for _ in range(4)]
    try:
        for i in range(4):
            status, made, _ = await _call("POST", srv.url + "/v1/tokens", token=boss,
                                          json={"name": f"t{i}", "role": "reader"})
            assert status == 201
            # the new token works at once, whichever process answers
            status, _, _ = await _call("GET", srv.url + "/v1/items", token=made["token"])
            assert status == 200
            by_worker_after.append(await worker_answers())
            status, _, _ = await _call("DELETE", srv.url + f"/v1/tokens/t{i}", token=boss)
            assert status in (200, 204)
            status, _, _ = await _call("GET", srv.url + "/v1/items", token=made["token"])
            assert status == 401
            by_worker_after.append(await worker_answers())
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert failures == []
    assert all(answered - {None} for answered in by_worker_after), by_worker_after
    # a malformed bearer through a worker: a 401, never forwarded as garbage or a 500
    for _ in range(6):
        status, _, body = await _raw(srv.port, b"GET /v1/items HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Authorization: Bearer \xff\xfe\r\n"
                                     b"Connection: close\r\n\r\n")
        assert status == 401, body
        status, _, body = await _raw(srv.port, b"POST /v1/items HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Authorization: Bearer \xff\xfe\r\nX-Junk: \xff\r\n"
                                     b"Content-Type: application/json\r\nContent-Length: 2\r\n"
                                     b"Connection: close\r\n\r\n{}")
        assert status == 401, body


async def test_read_workers_apply_the_cross_site_rules(workers):
    srv = workers(2)
    await _until_serving(srv.url, 1)
    for _ in range(6):  # whichever process the kernel picks
        status, body, _ = await _call("GET", srv.url + "/v1/items",
                                      headers={"Origin": "http://evil.example"})
        assert status == 403 and body["error"]["field"] == "Origin"
        status, body, _ = await _call("GET", srv.url + "/v1/items",
                                      headers={"Host": "evil.example"})
        assert status == 403 and body["error"]["field"] == "Host"
        status, body, _ = await _call("GET", srv.url + "/v1/items")
        assert status == 200
        status, body, _ = await _call("POST", srv.url + "/v1/storages", data=json.dumps(STORAGE),
                                      headers={"Content-Type": "text/plain"})
        assert status == 415
    status, body, _ = await _call("GET", srv.url + "/v1/storages")
    assert body["storages"] == []


# ------------------------------------------------------------------------- in Chromium

ATTACK = """<!doctype html><html><body>
<iframe name="sink" id="sink"></iframe>
<form id="plain" method="POST" enctype="text/plain" target="sink" action="{dlm}/v1/items">
<input name='{{"item_name": "from-a-form", "x": "' value='"}}'></form>
<form id="urlenc" method="POST" target="sink" action="{dlm}/v1/tokens">
<input name="name" value="formtoken"><input name="role" value="operator"></form>
<script src="/attack.js"></script></body></html>"""

ATTACK_JS = """
(async () => {
  const dlm = document.body.dataset.dlm || DLM;
  const storage = JSON.stringify(%(storage)s);
  const token = JSON.stringify({name: "pwned", role: "operator"});
  const tries = [
    fetch(DLM + "/v1/storages", {method: "POST", mode: "no-cors", body: storage,
                                 headers: {"Content-Type": "text/plain"}}),
    fetch(DLM + "/v1/tokens", {method: "POST", mode: "no-cors", body: token}),
    fetch(DLM + "/v1/tokens", {method: "POST", mode: "no-cors", body: new Blob([token])}),
    fetch(DLM + "/v1/operations", {method: "POST", mode: "no-cors",
                                   body: new URLSearchParams({kind: "copy"})}),
    fetch(DLM + "/v1/storages", {method: "POST", body: storage,
                                 headers: {"Content-Type": "application/json"}}),
    fetch(DLM + "/v1/tokens", {method: "POST", body: token, credentials: "include",
                               headers: {"Content-Type": "application/json"}}),
    Promise.resolve(navigator.sendBeacon(DLM + "/v1/tokens", token)),
    new Promise((done) => {
      let left = 2;
      document.getElementById("sink").addEventListener("load", () => { if (--left === 0) done(); });
      document.getElementById("plain").submit();
      setTimeout(() => document.getElementById("urlenc").submit(), 300);
      setTimeout(done, 5000);
    }),
  ];
  const outcomes = await Promise.allSettled(tries);
  document.body.dataset.done = JSON.stringify(outcomes.map((o) => o.status));
})();
"""


async def _attacker_site(dlm_url: str) -> tuple[web.AppRunner, str]:
    """A page on another origin (another port of 127.0.0.1) that attacks the DLM server."""
    dlm = dlm_url.rstrip("/")
    script = f"const DLM = {json.dumps(dlm)};\n" + ATTACK_JS % {"storage": json.dumps(STORAGE)}

    async def page(_request):
        return web.Response(text=ATTACK.format(dlm=dlm), content_type="text/html")

    async def js(_request):
        return web.Response(text=script, content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/attack.js", js)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/"


async def test_a_page_of_another_origin_changes_nothing(browser, sqlite_server):  # noqa: F811
    """The attacks of the issue from a real browser: text/plain and untyped fetches, a form
    whose text/plain body is JSON, a urlencoded form, a JSON fetch (preflighted), a beacon."""
    async with aiohttp.ClientSession(base_url=sqlite_server.url) as http:
        before = await _state(http)
        runner, attacker = await _attacker_site(sqlite_server.url)
        try:
            page = await browser.new_page()
            await page.goto(attacker)
            await page.wait_for_selector("body[data-done]", timeout=20_000)
            outcomes = json.loads(await page.get_attribute("body", "data-done"))
            assert len(outcomes) == 8
            # the preflighted JSON fetches never got permission to be sent
            assert outcomes[4] == outcomes[5] == "rejected"
            await asyncio.sleep(0.5)  # a beacon is sent after the page asked for it
        finally:
            await runner.cleanup()
        assert await _state(http) == before
        async with http.get("/v1/items") as resp:
            assert (await resp.json())["items"] == []


async def test_a_dns_rebound_page_changes_nothing(sqlite_server):
    """A page at a name the attacker points at 127.0.0.1 is same-origin with the server:
    it may send JSON, but it names its own host."""
    from playwright.async_api import async_playwright

    port = _port(sqlite_server)
    rules = "--host-resolver-rules=MAP rebound.example 127.0.0.1"
    # Chromium's own Private Network Access checks would stop this page (it came from a
    # "public" address); other browsers have none: the server must refuse it by itself.
    no_pna = ("--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,"
              "PrivateNetworkAccessSendPreflights")
    async with async_playwright() as p, aiohttp.ClientSession(base_url=sqlite_server.url) as http:
        before = await _state(http)
        chromium = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=[*ARGS, rules, no_pna])
        try:
            page = await chromium.new_page()
            origin = f"http://rebound.example:{port}"
            # the server's own answer for that Host is a 403 (with a CSP that would stop
            # the script as well); the attacker served the page before the name was rebound
            async with aiohttp.ClientSession() as direct, direct.get(
                    sqlite_server.url, headers={"Host": f"rebound.example:{port}"}) as resp:
                assert resp.status == 403
            await page.route(origin + "/", lambda route: route.fulfill(
                body="<!doctype html><title>cats</title>", content_type="text/html"))
            await page.goto(origin + "/")
            statuses = await page.evaluate("""async (storage) => {
                const out = [];
                for (const [path, body] of [["/v1/storages", storage],
                                            ["/v1/tokens", {name: "x", role: "operator"}]]) {
                  const r = await fetch(path, {method: "POST", body: JSON.stringify(body),
                                              headers: {"Content-Type": "application/json"}});
                  out.push(r.status);
                }
                out.push((await fetch("/v1/storages")).status);
                return out;
            }""", STORAGE)
            assert statuses == [403, 403, 403]
        finally:
            await chromium.close()
        assert await _state(http) == before


async def test_the_dashboard_and_a_served_report_run_under_their_policy(browser,  # noqa: F811
                                                                         site):  # noqa: F811
    """No CSP violation (a console error) on the dashboard or on a consistency report served
    as HTML (its inline style and sorting script are allowed by hash)."""
    srv, _ = site
    page = await browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and not m.location.get(
        "url", "").endswith("/favicon.ico") and errors.append(f"{m.text} {m.location}"))
    page.on("pageerror", lambda e: errors.append(str(e)))
    for path in ("/dashboard/consistency", "/"):
        await page.goto(srv.url.rstrip("/") + path)
        await page.wait_for_selector("body[data-loaded]", timeout=15_000)
    # the bars are sized by the script (no inline style is allowed)
    assert await page.eval_on_selector('tr[data-storage="disk1"] .bar .fill',
                                       "n => n.style.width") == "60%"
    reports = await srv.client.request("GET", "/v1/consistency/reports")
    report_id = reports["reports"][0]["id"]
    await page.goto(srv.url.rstrip("/") + f"/v1/consistency/reports/{report_id}?format=html")
    assert "stray.dat" in await page.content()
    # the report's own script sorts its tables: it ran
    await page.click("table.findings thead th >> nth=0")
    assert await page.get_attribute("table.findings >> nth=0", "data-sorted")
    assert errors == []


# ------------------------------------------------------------------------- credentials

URL_USER, URL_PASSWORD = "AKIDINTHEURL", "PassInTheUrl42"
CREDENTIALS = {"endpoint_url": f"http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:9",
               "access_key": "AKIAEXAMPLEKEY77", "secret_key": "wJalrXUtnSecretKey",
               "session_token": "SessTok12345", "region": "eu-west-1", "max_attempts": 1,
               "connect_timeout": 1, "verify_ingest": False}
SECRETS = (URL_USER, URL_PASSWORD, "AKIAEXAMPLEKEY77", "wJalrXUtnSecretKey", "SessTok12345")


def _shows_no_secret(text: str | bytes, where: str) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    shown = [s for s in SECRETS if s in text]
    assert shown == [], f"{where} shows {shown}: {text[:2000]}"


def test_redaction_rules():
    from inventory.redact import public_config, redact_text, secrets_of

    public = public_config({**CREDENTIALS, "nested": {"password": "x", "url": "s3://u:p@h/b"},
                            "aws_access_key_id": "AKIA2", "part_size": 5 << 20})
    assert public == {"endpoint_url": "http://***@127.0.0.1:9", "region": "eu-west-1",
                      "max_attempts": 1, "connect_timeout": 1, "verify_ingest": False,
                      "nested": {"url": "s3://***@h/b"}, "part_size": 5 << 20}
    assert set(SECRETS) <= secrets_of(CREDENTIALS)
    text = ('Could not connect to the endpoint URL: "http://AKIDINTHEURL:PassInTheUrl42@'
            '127.0.0.1:9/b/k" (key AKIAEXAMPLEKEY77)')
    masked = redact_text(text, sorted(secrets_of(CREDENTIALS), key=len, reverse=True))
    assert masked == ('Could not connect to the endpoint URL: "http://***@127.0.0.1:9/b/k" '
                      '(key ***)')
    # what is not a credential stays: an address, an e-mail-like item name, short words
    assert redact_text("user@example.org at http://host:80/x") == \
        "user@example.org at http://host:80/x"
    assert redact_text("an error", ["an"]) == "an error"


async def test_storage_credentials_are_never_shown_to_readers(tmp_path, caplog):
    """Config views, snapshots, the feed, an operation's last_error and the logs."""
    from tests.test_dashboard import FAST

    srv = InProcessServer(f"sqlite:{tmp_path / 'inventory.sqlite'}", tmp_path, fileops=FAST)
    await srv.start()
    try:
        client = srv.client
        boss = (await client.request("POST", "/v1/tokens", json={"name": "boss",
                                                                 "role": "operator"}))["token"]
        operator = {"Authorization": f"Bearer {boss}"}
        made = await client.request("POST", "/v1/tokens", json={"name": "eve", "role": "reader"},
                                    headers=operator)
        reader = {"Authorization": f"Bearer {made['token']}"}
        disk = tmp_path / "disk1"
        (disk / "run").mkdir(parents=True)
        (disk / "run" / "a.dat").write_bytes(b"payload")
        await client.request("POST", "/v1/storages", headers=operator, json={
            "name": "disk1", "kind": "posix", "root": str(disk), "capacity": 10**9})
        added = await client.request("POST", "/v1/storages", headers=operator, json={
            "name": "s3x", "kind": "s3", "root": "bucket/prefix", "capacity": 10**12,
            "config": CREDENTIALS})
        _shows_no_secret(json.dumps(added), "the registration's answer")
        assert added["config"]["endpoint_url"] == "http://***@127.0.0.1:9"
        assert added["config"]["region"] == "eu-west-1"
        item = await client.request("POST", "/v1/items", headers=operator, json={
            "item_name": "run/a.dat", "storage": "disk1"})
        await client.request("POST", "/v1/operations", headers=operator, json={
            "kind": "copy", "item": item["oid"], "target": "s3x"})
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            ops = (await client.request("GET", "/v1/operations", headers=reader))["operations"]
            if ops and ops[0]["state"] == "failed":
                break
            assert asyncio.get_running_loop().time() < deadline, ops
            await asyncio.sleep(0.05)
        assert "127.0.0.1:9" in ops[0]["last_error"], ops  # the error still says where
        for who in (reader, operator):
            async with aiohttp.ClientSession(base_url=srv.url, headers=who) as http:
                for path in ("/v1/storages", "/v1/storages/s3x", "/v1/operations",
                             "/v1/snapshot" if who is reader else "/v1/storages",
                             "/v1/snapshot/columns" if who is reader else "/v1/storages",
                             "/v1/changes?since=0", "/dashboard/fragments/storages",
                             "/dashboard/fragments/operations"):
                    async with http.get(path) as resp:
                        assert resp.status == 200, path
                        _shows_no_secret(await resp.read(), path)
        # the CLI shows what the API gives
        env = {"DLM_URL": srv.url, "DLM_TOKEN": made["token"]}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from inventory.cli import main; "
            "sys.exit(main(['storage', 'show', 's3x']))",
            env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert b"***@127.0.0.1:9" in out
        _shows_no_secret(out + err, "dlm storage show")
    finally:
        await srv.stop()
    _shows_no_secret(caplog.text, "the logs")
    # the logs as a server writes them (JSON lines)
    from inventory import logs

    formatter = logs.JSONFormatter()
    lines = "\n".join(formatter.format(r) for r in caplog.records)
    assert "operation failed" in lines
    _shows_no_secret(lines, "the JSON logs")
