"""Tokens and roles: 401 without a valid token, 403 when the role is too low, open mode."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import aiohttp
import pytest

from inventory import errors
from inventory.client import Client
from tests.conftest import free_port, wait_healthy


async def make_tokens(client):
    """An operator token made in open mode (which it ends), then the others with it."""
    first = await client.request("POST", "/v1/tokens", json={"name": "t-operator",
                                                             "role": "operator"})
    out = {"operator": first["token"]}
    for role in ("reader", "producer"):
        status, answer, _ = await status_of(client.url, "POST", "/v1/tokens", first["token"],
                                            {"name": f"t-{role}", "role": role})
        assert status == 201 and answer["token"].startswith("dlm_") and answer["role"] == role
        out[role] = answer["token"]
    return out


async def status_of(url, method, path, token=None, json=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.request(method, url + path, headers=headers,
                                                       json=json) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def test_open_mode_until_the_first_token(sqlite_server):
    url = sqlite_server.url
    assert (await sqlite_server.client.health())["auth"] == "open"
    status, _, _ = await status_of(url, "POST", "/v1/items", json={"item_name": "free"})
    assert status == 201
    await make_tokens(sqlite_server.client)
    assert (await sqlite_server.client.health())["auth"] == "tokens"
    status, body, headers = await status_of(url, "GET", "/v1/items")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")


ROLE_CASES = [
    ("GET", "/v1/items", None, {"reader": 200, "producer": 200, "operator": 200}),
    ("GET", "/v1/storages", None, {"reader": 200, "producer": 200, "operator": 200}),
    ("POST", "/v1/items", {"item_name": "x"}, {"reader": 403, "producer": 201}),
    ("POST", "/v1/storages", {"name": "s", "kind": "posix", "root": "/s", "capacity": 1},
     {"reader": 403, "producer": 403, "operator": 201}),
    ("POST", "/v1/tokens", {"name": "n", "role": "reader"},
     {"reader": 403, "producer": 403, "operator": 201}),
    ("GET", "/v1/tokens", None, {"reader": 403, "producer": 403, "operator": 200}),
]


@pytest.mark.parametrize(("method", "path", "body", "expected"), ROLE_CASES)
async def test_roles(sqlite_server, method, path, body, expected):
    tokens = await make_tokens(sqlite_server.client)
    for role, status in expected.items():
        got, answer, _ = await status_of(sqlite_server.url, method, path, tokens[role], body)
        assert got == status, (role, answer)
        if got == 403:
            assert answer["error"]["code"] == "forbidden"
            assert f"has role {role}" in answer["error"]["message"]


async def test_unknown_and_malformed_tokens_are_401(sqlite_server):
    await make_tokens(sqlite_server.client)
    for header in ("Bearer nope", "Basic abc", "Bearer ", "token"):
        async with aiohttp.ClientSession() as s, s.get(
                sqlite_server.url + "/v1/items", headers={"Authorization": header}) as resp:
            assert resp.status == 401, header


async def test_health_is_public_and_tokens_never_leak(sqlite_server):
    tokens = await make_tokens(sqlite_server.client)
    status, _, _ = await status_of(sqlite_server.url, "GET", "/v1/health")
    assert status == 200
    status, listing, _ = await status_of(sqlite_server.url, "GET", "/v1/tokens",
                                         tokens["operator"])
    text = str(listing)
    assert all(secret not in text for secret in tokens.values())
    assert "sha256" not in text
    async with Client(sqlite_server.url, token=tokens["reader"]) as reader:
        version = (await reader.health())["version"]
        feed = await reader.changes(0)
    assert version > 0 and all(k != "token" for t in feed["transactions"] for k, _ in t[1])


async def test_tokens_survive_restart_and_can_be_revoked(server):
    tokens = await make_tokens(server.client)
    await server.restart()
    async with Client(server.url, token=tokens["operator"]) as op:
        assert len((await op.request("GET", "/v1/tokens"))["tokens"]) == 3
        await op.request("DELETE", "/v1/tokens/t-reader")
        with pytest.raises(errors.Conflict):
            await op.request("POST", "/v1/tokens", json={"name": "t-producer",
                                                         "role": "reader"})
    async with Client(server.url, token=tokens["reader"]) as revoked:
        with pytest.raises(errors.Unauthorized):
            await revoked.request("GET", "/v1/items")


async def test_expired_token_is_refused(sqlite_server):
    import asyncio
    import time

    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    made = await sqlite_server.client.request(
        "POST", "/v1/tokens", json={"name": "old", "role": "operator", "expires_at": soon})
    await asyncio.sleep(2.5)
    status, body, _ = await status_of(sqlite_server.url, "GET", "/v1/items", made["token"])
    assert status == 401 and "expired" in body["error"]["message"]


async def test_no_token_change_locks_the_operators_out(sqlite_server):
    """Found from outside: a token created already expired, or a reader's as the first token,
    ended open mode with nobody able to act as operator. Both are refused, as is deleting the
    last operator token while others remain; nothing changes."""
    c = sqlite_server.client
    with pytest.raises(errors.BadRequest) as info:
        await c.request("POST", "/v1/tokens", json={"name": "old", "role": "operator",
                                                    "expires_at": "1999-01-01T00:00:00Z"})
    assert info.value.field == "expires_at"
    with pytest.raises(errors.Conflict) as info:
        await c.request("POST", "/v1/tokens", json={"name": "r", "role": "reader"})
    assert info.value.field == "role" and "operator token first" in str(info.value)
    assert (await c.health())["auth"] == "open"
    admin = await c.request("POST", "/v1/tokens", json={"name": "admin", "role": "operator"})
    from inventory.client import Client

    async with Client(sqlite_server.url, token=admin["token"]) as c:
        await c.request("POST", "/v1/tokens", json={"name": "r", "role": "reader"})
        with pytest.raises(errors.Conflict) as info:
            await c.request("DELETE", "/v1/tokens/admin")
        assert "last operator token" in str(info.value)
        await c.request("DELETE", "/v1/tokens/r")
        await c.request("DELETE", "/v1/tokens/admin")  # the last token of all: open again
        assert (await c.health())["auth"] == "open"


async def test_copy_request_records_the_requester(sqlite_server):
    c = sqlite_server.client
    await c.request("POST", "/v1/storages", json={"name": "d", "kind": "posix", "root": "/d",
                                                 "config": {"verify_ingest": False},
                                                 "capacity": 9})
    await c.add_item(item_name="i", storage="d", size=1)
    await c.request("POST", "/v1/storages", json={"name": "e", "kind": "posix", "root": "/e",
                                                 "capacity": 9})
    tokens = await make_tokens(c)  # after the setup: open mode ends here
    async with Client(sqlite_server.url, token=tokens["producer"]) as producer:
        req = await producer.request("POST", "/v1/requests", json={"item": "i", "storage": "e"})
    assert req["requester"] == "t-producer"


def test_non_loopback_without_tokens_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "inventory.cli", "serve", "--host", "0.0.0.0",
         "--port", str(free_port()), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 with no API token" in result.stderr
    assert "Traceback" not in result.stderr


async def test_config_tokens_allow_a_non_loopback_server(tmp_path, server_process):
    secret = "dlm_from_config_file"
    config = tmp_path / "dlm.yaml"
    config.write_text(f"tokens:\n  - name: ops\n    role: operator\n"
                      f"    sha256: {hashlib.sha256(secret.encode()).hexdigest()}\n")
    proc = server_process(None, "--config", str(config), "--host", "0.0.0.0")
    proc.start()
    await wait_healthy(proc.url)
    status, _, _ = await status_of(proc.url, "GET", "/v1/items")
    assert status == 401
    status, _, _ = await status_of(proc.url, "GET", "/v1/items", secret)
    assert status == 200
    # a config token cannot be deleted through the API (it would come back at the next start)
    status, body, _ = await status_of(proc.url, "DELETE", "/v1/tokens/ops", secret)
    assert status == 409 and "config file" in body["error"]["message"], body
    status, _, _ = await status_of(proc.url, "GET", "/v1/items", secret)
    assert status == 200


@pytest.mark.parametrize(("content", "message"), [
    ("tokens: 5\n", "expected a list"),
    ("tokens:\n  - name: a\n    role: admin\n    sha256: " + "0" * 64 + "\n", "role"),
    ("tokens:\n  - name: a\n    role: reader\n    sha256: abc\n", "64 hex digits"),
    ("tokens:\n  - name: a\n    role: reader\n", "exactly the keys"),
])
def test_bad_token_config(tmp_path, content, message):
    config = tmp_path / "dlm.yaml"
    config.write_text(content)
    result = subprocess.run([sys.executable, "-m", "inventory.cli", "serve", "--config",
                             str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr


async def test_storage_credentials_reach_operators_only(sqlite_server):
    c = sqlite_server.client
    await c.add_storage(name="s3a", kind="s3", root="bucket/p", capacity=10,
                        config={"endpoint_url": "http://x", "access_key": "AK",
                                "secret_key": "SK", "session_token": "ST"})
    tokens = await make_tokens(c)
    async with Client(sqlite_server.url, token=tokens["reader"]) as reader:
        listed = (await reader.storages())[0]["config"]
        snap = await reader.snapshot()
        feed = await reader.changes(0)
    assert listed == {"endpoint_url": "http://x"}  # an access key is a credential too (#16)
    assert "access_key" not in str(snap.storages)
    assert "SK" not in str(snap.storages) and "ST" not in str(snap.storages)
    assert "SK" not in str(feed)
    async with Client(sqlite_server.url, token=tokens["operator"]) as operator:
        config = (await operator.snapshot()).storages[0][8]
    assert config["secret_key"] == "SK" and config["access_key"] == "AK"
