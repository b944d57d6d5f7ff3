"""Items record the token that registered them; a producer may expire, or shorten the life of,
only those (issue 15, item 8), as it may make any other change only to those
(tests/test_change_rule.py). Operators may change any item. Through REST with tokens, on
SQLite and PostgreSQL."""

from __future__ import annotations

import re

from inventory.client import Client
from inventory.feed import WIRE_ITEM_FIELDS
from inventory.inventory import Names
from tests.test_auth import make_tokens, status_of

pytest_plugins = ["tests.cli_fixtures"]

FUTURE = "2999-01-01T00:00:00Z"


async def setup_tokens(server) -> dict[str, str]:
    """Operator, reader and producer (``t-producer``), plus a second producer ``t-other``."""
    tokens = await make_tokens(server.client)
    status, made, _ = await status_of(server.url, "POST", "/v1/tokens", tokens["operator"],
                                      {"name": "t-other", "role": "producer"})
    assert status == 201
    tokens["other"] = made["token"]
    return tokens


async def add_disk(server, token: str) -> None:
    status, body, _ = await status_of(server.url, "POST", "/v1/storages", token, {
        "name": "d", "kind": "posix", "root": "/d", "capacity": 100,
        "config": {"verify_ingest": False}})  # no payloads: the expiry rule is under test
    assert status == 201, body


async def register(server, token: str, name: str, **fields) -> dict:
    status, item, _ = await status_of(server.url, "POST", "/v1/items", token,
                                      {"item_name": name, **fields})
    assert status == 201, item
    return item


async def item_of(server, token: str, oid: str) -> dict:
    status, item, _ = await status_of(server.url, "GET", f"/v1/items/{oid}", token)
    assert status == 200
    return item


def assert_refused(status: int, body: dict, field: str) -> None:
    assert status == 403, body
    error = body["error"]
    assert error["code"] == "forbidden" and error["rule"] == "producer_changes_own_items"
    assert error["field"] == field
    assert "may change only the items it registered" in error["message"]


async def test_producer_cannot_expire_or_shorten_anothers_item(server):
    tokens = await setup_tokens(server)
    await add_disk(server, tokens["operator"])
    mine = await register(server, tokens["producer"], "a/mine", expire_at=FUTURE,
                          storage="d", size=1)
    theirs = await register(server, tokens["other"], "b/theirs", expire_at=FUTURE,
                            storage="d", size=1)
    assert (mine["registered_by"], theirs["registered_by"]) == ("t-producer", "t-other")
    path = f"/v1/items/{theirs['oid']}"
    for patch, field in ([{"state": "EXPIRED"}, "state"],
                         [{"expire_at": "2001-01-01T00:00:00Z"}, "expire_at"],
                         [{"expire_at": "2998-01-01T00:00:00Z"}, "expire_at"],  # earlier
                         [{"lifetime": 60}, "lifetime"]):
        status, body, _ = await status_of(server.url, "PATCH", path, tokens["producer"], patch)
        assert_refused(status, body, field)
    # a batch is refused whole: the producer's own item in it does not change either
    status, body, _ = await status_of(server.url, "PATCH", "/v1/items", tokens["producer"], [
        {"oid": mine["oid"], "state": "EXPIRED"}, {"oid": theirs["oid"], "state": "EXPIRED"}])
    assert_refused(status, body, "items[1].state")
    for oid in (mine["oid"], theirs["oid"]):
        item = await item_of(server, tokens["reader"], oid)
        assert item["state"] == "READY"
        assert item["expire_at"] == "2999-01-01T00:00:00Z"
    # DELETE stays operator-only
    status, body, _ = await status_of(server.url, "DELETE", path, tokens["producer"])
    assert status == 403 and "has role producer" in body["error"]["message"]
    # nor may it lengthen the life of another's item (every change is its owner's)
    status, body, _ = await status_of(server.url, "PATCH", path, tokens["producer"],
                                      {"expire_at": None, "metadata": {"seen": True}})
    assert_refused(status, body, "expire_at")
    assert (await item_of(server, tokens["reader"], theirs["oid"]))["expire_at"] == FUTURE


async def test_producer_expires_its_own_and_operator_any(server):
    tokens = await setup_tokens(server)
    mine = await register(server, tokens["producer"], "a/mine")
    later = await register(server, tokens["producer"], "a/later", expire_at=FUTURE)
    theirs = await register(server, tokens["other"], "b/theirs")
    status, body, _ = await status_of(server.url, "PATCH", f"/v1/items/{later['oid']}",
                                      tokens["producer"], {"lifetime": 60})
    assert status == 200 and body["expire_at"] < FUTURE, body
    status, body, _ = await status_of(server.url, "PATCH", "/v1/items", tokens["producer"],
                                      [{"oid": mine["oid"], "expire_at": "2001-01-01T00:00:00Z"}])
    assert status == 200, body
    assert (await item_of(server, tokens["reader"], mine["oid"]))["expire_at"] == \
        "2001-01-01T00:00:00Z"
    status, body, _ = await status_of(server.url, "PATCH", f"/v1/items/{theirs['oid']}",
                                      tokens["operator"], {"expire_at": "2001-01-01T00:00:00Z"})
    assert status == 200 and body["registered_by"] == "t-other", body


async def test_ready_item_expired_by_its_producer_only(server):
    """The state path: READY -> EXPIRED (what makes Detox delete every copy)."""
    tokens = await setup_tokens(server)
    await add_disk(server, tokens["operator"])
    theirs = await register(server, tokens["other"], "b/ready", storage="d", size=1)
    mine = await register(server, tokens["producer"], "a/ready", storage="d", size=1)
    status, body, _ = await status_of(server.url, "PATCH", f"/v1/items/{theirs['oid']}",
                                      tokens["producer"], {"state": "EXPIRED"})
    assert_refused(status, body, "state")
    assert body["error"]["registered_by"] == "t-other"
    assert (await item_of(server, tokens["reader"], theirs["oid"]))["state"] == "READY"
    status, body, _ = await status_of(server.url, "PATCH", f"/v1/items/{mine['oid']}",
                                      tokens["producer"], {"state": "EXPIRED"})
    assert status == 200 and body["state"] == "EXPIRED"
    status, body, _ = await status_of(server.url, "PATCH", f"/v1/items/{theirs['oid']}",
                                      tokens["operator"], {"state": "EXPIRED"})
    assert status == 200 and body["state"] == "EXPIRED"


async def test_registered_by_survives_a_restart_and_open_mode_items_are_operators(server):
    open_item = await server.client.add_item(item_name="o/open")  # open mode: no token
    assert open_item["registered_by"] is None
    tokens = await setup_tokens(server)
    theirs = await register(server, tokens["other"], "b/kept")
    await server.restart()
    item = await item_of(server, tokens["reader"], theirs["oid"])
    assert item["registered_by"] == "t-other"
    status, body, _ = await status_of(server.url, "PATCH", f"/v1/items/{theirs['oid']}",
                                      tokens["producer"], {"lifetime": 5})
    assert_refused(status, body, "lifetime")  # still enforced from what the database kept
    status, body, _ = await status_of(server.url, "PATCH", f"/v1/items/{open_item['oid']}",
                                      tokens["producer"], {"lifetime": 1})
    assert_refused(status, body, "lifetime")
    assert "registered by no token" in body["error"]["message"]
    status, body, _ = await status_of(server.url, "PATCH", f"/v1/items/{theirs['oid']}",
                                      tokens["other"], {"lifetime": 5})
    assert status == 200, body


async def test_registered_by_in_the_feed_and_snapshot(sqlite_server):
    tokens = await setup_tokens(sqlite_server)
    item = await register(sqlite_server, tokens["producer"], "f/fed")
    at = WIRE_ITEM_FIELDS.index("registered_by")
    async with Client(sqlite_server.url, token=tokens["operator"]) as op:
        snap = await op.snapshot()
        feed = await op.changes(0)
    assert snap.items[item["oid"]][at] == "t-producer"
    fed = [rec for _, changes in feed["transactions"] for kind, rec in changes
           if kind == "item"]
    assert fed[-1][0] == item["oid"] and fed[-1][at] == "t-producer"


def test_dlm_show_prints_who_registered(dlm, cli_server, monkeypatch):
    tokens = cli_server.call(setup_tokens(cli_server._server))
    monkeypatch.setenv("DLM_TOKEN", tokens["producer"])
    made = dlm.json("inject", "cli/item")
    assert made["registered_by"] == "t-producer"
    out = dlm("show", made["oid"]).out
    assert re.search(r"^registered by\s+t-producer$", out, re.M), out


def test_names_column_widens_past_its_first_byte():
    """The registered_by column starts at one byte per item and grows with its table."""
    names = Names("B")
    names.extend([None, "a"])
    names.extend([f"t{i}" for i in range(300)])
    names.set(0, "t299")
    assert names._codes.typecode == "H"
    assert [names.get(r) for r in (0, 1, 2, 301)] == ["t299", "a", "t0", "t299"]
