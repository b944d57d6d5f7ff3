"""A producer changes only the items it registered, an operator any (as a Rucio account changes
only its own DIDs and root any); items no token registered are the operators'. Every field a
PATCH takes can destroy another producer's data (a fake location plus a lower phase lets Detox
delete the genuine copy; a wrong size or checksum gets the good copy marked corrupt; a state
undoes an operator's ``dlm rm``), so every one is refused: 403 naming the rule and the field,
nothing changed, a batch refused whole. Copy requests are cancelled only by their requester or
an operator, and a pin that already ended is refused. Through REST with tokens, on SQLite and
PostgreSQL (the ``server`` fixture)."""

from __future__ import annotations

import pytest

from inventory import errors
from inventory.server.state import STATE
from inventory.specs import ItemPatch
from inventory.writes import Actor, Pending, UpdateItems
from tests.test_auth import status_of
from tests.test_expiry_rule import item_of, register, setup_tokens

pytest_plugins = ["tests.cli_fixtures"]

RULE = "producer_changes_own_items"
REQUEST_RULE = "requester_cancels_own_requests"
SIZE = 4


async def add_storages(server, token: str, root) -> None:
    """``d``: no payload checks; ``v``: a real directory the server verifies payloads on."""
    for spec in ({"name": "d", "kind": "posix", "root": "/d", "capacity": 10**6,
                  "config": {"verify_ingest": False}},
                 {"name": "v", "kind": "posix", "root": str(root), "capacity": 10**6}):
        status, body, _ = await status_of(server.url, "POST", "/v1/storages", token, spec)
        assert status == 201, body


async def version_of(server) -> int:
    status, health, _ = await status_of(server.url, "GET", "/v1/health")
    assert status == 200
    return health["version"]


async def refused(server, token: str, method: str, path: str, body, field: str,
                  rule: str = RULE) -> dict:
    """The request is 403 naming ``rule`` and ``field``, and the inventory did not move."""
    before = await version_of(server)
    status, answer, _ = await status_of(server.url, method, path, token, body)
    assert status == 403, (body, answer)
    error = answer["error"]
    assert (error["code"], error["rule"], error["field"]) == ("forbidden", rule, field), error
    assert "ask an operator" in error["message"]
    assert await version_of(server) == before
    return error


# the attacks an outside tester showed, with the field each refusal names
FOREIGN_PATCHES = [
    pytest.param({"storage": "v", "uri": "fake/a4", "target_phase": "PLASMA"}, "target_phase",
                 id="fake-location-and-lower-phase"),
    pytest.param({"storage": "v", "uri": "fake/a4"}, "storage", id="fake-location"),
    pytest.param({"target_phase": "PLASMA"}, "target_phase", id="lower-phase"),
    pytest.param({"size": SIZE + 1}, "size", id="size"),
    pytest.param({"checksum": "1a2b3c4d"}, "checksum", id="checksum"),
    pytest.param({"checksum": None, "checksum_method": None}, "checksum", id="checksum-none"),
    pytest.param({"state": "CORRUPTED"}, "state", id="corrupted"),
    pytest.param({"metadata": {"owner": "me"}}, "metadata", id="metadata"),
    pytest.param({"expire_at": None}, "expire_at", id="longer-life"),
    pytest.param({"lifetime": 10**6}, "lifetime", id="lifetime"),
    pytest.param({}, "oid", id="empty"),
]


@pytest.mark.parametrize(("patch", "field"), FOREIGN_PATCHES)
async def test_a_producer_changes_no_field_of_anothers_item(server, tmp_path, patch, field):
    tokens = await setup_tokens(server)
    root = tmp_path / "v"
    (root / "fake").mkdir(parents=True)
    (root / "fake" / "a4").write_bytes(b"x" * SIZE)  # a fake payload of the right size
    await add_storages(server, tokens["operator"], root)
    theirs = await register(server, tokens["other"], "b/a4", storage="d", size=SIZE,
                            checksum="00000001", target_phase="LIQUID")
    before = await item_of(server, tokens["reader"], theirs["oid"])
    path = f"/v1/items/{theirs['oid']}"
    error = await refused(server, tokens["producer"], "PATCH", path, patch, field)
    assert error["registered_by"] == "t-other"
    assert "'b/a4' v1 was registered by token 't-other', not 't-producer'" in error["message"]
    error = await refused(server, tokens["producer"], "PATCH", "/v1/items",
                          [{"oid": theirs["oid"], **patch}], "items[0]." + field)
    assert await item_of(server, tokens["reader"], theirs["oid"]) == before
    # its registering producer, and an operator, may make the same change
    status, body, _ = await status_of(server.url, "PATCH", path, tokens["other"], patch)
    assert status == 200, body
    again = {k: v for k, v in patch.items() if k not in ("storage", "uri")}  # placed already
    status, body, _ = await status_of(server.url, "PATCH", path, tokens["operator"], again)
    assert status == 200, body


async def test_a_batch_with_one_foreign_item_is_refused_whole(server, tmp_path):
    tokens = await setup_tokens(server)
    await add_storages(server, tokens["operator"], tmp_path)
    mine = await register(server, tokens["producer"], "a/mine", storage="d", size=SIZE)
    theirs = await register(server, tokens["other"], "b/theirs", storage="d", size=SIZE)
    before = [await item_of(server, tokens["reader"], i["oid"]) for i in (mine, theirs)]
    await refused(server, tokens["producer"], "PATCH", "/v1/items", [
        {"oid": mine["oid"], "size": 9, "metadata": {"k": 1}},
        {"oid": theirs["oid"], "size": 9}], "items[1].size")
    assert [await item_of(server, tokens["reader"], i["oid"]) for i in (mine, theirs)] == before
    # the same batch of the producer's own items, and an operator's of both, pass
    status, body, _ = await status_of(server.url, "PATCH", "/v1/items", tokens["producer"], [
        {"oid": mine["oid"], "size": 9, "metadata": {"k": 1}}])
    assert status == 200 and body["count"] == 1, body
    status, body, _ = await status_of(server.url, "PATCH", "/v1/items", tokens["operator"], [
        {"oid": mine["oid"], "state": "CORRUPTED"}, {"oid": theirs["oid"], "size": 9}])
    assert status == 200 and body["count"] == 2, body
    assert (await item_of(server, tokens["reader"], mine["oid"]))["state"] == "CORRUPTED"
    assert (await item_of(server, tokens["reader"], theirs["oid"]))["size"] == 9


async def test_a_producer_changes_every_field_of_its_own_items(server, tmp_path):
    tokens = await setup_tokens(server)
    root = tmp_path / "v"
    (root / "a").mkdir(parents=True)
    (root / "a" / "own").write_bytes(b"y" * SIZE)
    await add_storages(server, tokens["operator"], root)
    mine = await register(server, tokens["producer"], "a/own", storage="d", size=SIZE)
    path = f"/v1/items/{mine['oid']}"
    for patch in ({"storage": "v", "uri": "a/own", "target_phase": "PLASMA"},
                  {"metadata": {"run": 7}, "lifetime": 3600},
                  {"checksum": "1a2b3c4d", "size": SIZE},
                  {"state": "CORRUPTED"}, {"state": "READY", "expire_at": None}):
        status, body, _ = await status_of(server.url, "PATCH", path, tokens["producer"], patch)
        assert status == 200, (patch, body)
    item = await item_of(server, tokens["reader"], mine["oid"])
    assert (item["state"], item["target_phase"], item["checksum"], item["metadata"],
            item["expire_at"]) == ("READY", "PLASMA", "1a2b3c4d", {"run": 7}, None)
    assert sorted(r["storage"] for r in item["replicas"]) == ["d", "v"]


async def test_items_no_token_registered_are_the_operators(server, tmp_path):
    """Items registered in open mode (``registered_by`` null): no producer may change them."""
    open_item = await server.client.add_item(item_name="o/open", size=SIZE)
    assert open_item["registered_by"] is None
    tokens = await setup_tokens(server)
    await add_storages(server, tokens["operator"], tmp_path)
    path = f"/v1/items/{open_item['oid']}"
    status, body, _ = await status_of(server.url, "PATCH", path, tokens["operator"],
                                      {"storage": "d"})
    assert status == 200 and body["state"] == "READY", body
    before = await item_of(server, tokens["reader"], open_item["oid"])
    for patch, field in (({"size": 1}, "size"), ({"checksum": "1a2b3c4d"}, "checksum"),
                         ({"state": "CORRUPTED"}, "state")):
        error = await refused(server, tokens["producer"], "PATCH", path, patch, field)
        assert error["registered_by"] is None
        assert "registered by no token (only operators may change it)" in error["message"]
    assert await item_of(server, tokens["reader"], open_item["oid"]) == before
    status, body, _ = await status_of(server.url, "PATCH", path, tokens["operator"],
                                      {"state": "CORRUPTED"})
    assert status == 200 and body["state"] == "CORRUPTED", body


async def test_a_producer_cannot_undo_an_operators_rm(server, tmp_path):
    tokens = await setup_tokens(server)
    await add_storages(server, tokens["operator"], tmp_path)
    theirs = await register(server, tokens["other"], "b/removed", storage="d", size=SIZE)
    path = f"/v1/items/{theirs['oid']}"
    status, body, _ = await status_of(server.url, "DELETE", path, tokens["operator"])
    assert status == 202 and body["state"] == "EXPIRED", body
    before = await item_of(server, tokens["reader"], theirs["oid"])
    await refused(server, tokens["producer"], "PATCH", path,
                  {"state": "READY", "expire_at": None}, "state")
    assert await item_of(server, tokens["reader"], theirs["oid"]) == before


async def test_reading_rights_stay_as_they_were(server, tmp_path):
    """Accesses (popularity) stay open to every producer; a reader changes nothing."""
    tokens = await setup_tokens(server)
    theirs = await register(server, tokens["other"], "b/read")
    oid = theirs["oid"]
    status, body, _ = await status_of(server.url, "POST", f"/v1/items/{oid}/accesses",
                                      tokens["producer"], {"count": 2})
    assert status == 200 and body["access_count"] == 2, body
    status, body, _ = await status_of(server.url, "POST", "/v1/accesses", tokens["producer"],
                                      [{"oid": oid}])
    assert status == 200 and body["count"] == 1, body
    for method, path, body in (("PATCH", f"/v1/items/{oid}", {"metadata": {}}),
                               ("PATCH", "/v1/items", [{"oid": oid, "metadata": {}}]),
                               ("POST", "/v1/accesses", [{"oid": oid}])):
        status, answer, _ = await status_of(server.url, method, path, tokens["reader"], body)
        assert status == 403 and "has role reader" in answer["error"]["message"], answer


async def request_copy(server, token: str, item: str, **fields) -> tuple[int, dict]:
    status, body, _ = await status_of(server.url, "POST", "/v1/requests", token,
                                      {"item": item, "storage": "d", **fields})
    return status, body


async def requests_of(server, token: str) -> list[dict]:
    status, body, _ = await status_of(server.url, "GET", "/v1/requests", token)
    assert status == 200
    return body["requests"]


async def test_only_the_requester_or_an_operator_cancels_a_copy_request(server, tmp_path):
    await server.client.request("POST", "/v1/storages", json={
        "name": "d", "kind": "posix", "root": "/d", "capacity": 10**6,
        "config": {"verify_ingest": False}})
    await server.client.add_item(item_name="c/item")
    open_request = await server.client.request("POST", "/v1/requests", json={
        "item": "c/item", "storage": "d", "pin_until": "2999-01-01T00:00:00Z"})
    assert open_request["requester"] is None
    tokens = await setup_tokens(server)
    status, theirs = await request_copy(server, tokens["other"], "c/item",
                                        pin_until="2999-01-01T00:00:00Z")
    assert status == 201 and theirs["requester"] == "t-other", theirs
    status, mine = await request_copy(server, tokens["producer"], "c/item")
    assert status == 201, mine
    before = await requests_of(server, tokens["reader"])
    error = await refused(server, tokens["producer"], "DELETE", f"/v1/requests/{theirs['id']}",
                          None, "id", REQUEST_RULE)
    assert error["requester"] == "t-other"
    assert "made by token 't-other', not 't-producer'" in error["message"]
    error = await refused(server, tokens["producer"], "DELETE",
                          f"/v1/requests/{open_request['id']}", None, "id", REQUEST_RULE)
    assert error["requester"] is None and "made by no token" in error["message"]
    assert await requests_of(server, tokens["reader"]) == before  # pending, pins kept
    status, body, _ = await status_of(server.url, "DELETE", f"/v1/requests/{mine['id']}",
                                      tokens["producer"])
    assert status == 200 and body["state"] == "cancelled", body
    for request in (theirs, open_request):
        status, body, _ = await status_of(server.url, "DELETE", f"/v1/requests/{request['id']}",
                                          tokens["operator"])
        assert status == 200 and body["state"] == "cancelled", body


@pytest.mark.parametrize("until", ["1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
                                   "2001-01-01T00:00:00Z"])
async def test_a_pin_that_already_ended_is_refused(server, until):
    tokens = await setup_tokens(server)
    await status_of(server.url, "POST", "/v1/storages", tokens["operator"], {
        "name": "d", "kind": "posix", "root": "/d", "capacity": 10**6,
        "config": {"verify_ingest": False}})
    await register(server, tokens["producer"], "p/item")
    before = await version_of(server)
    for who in ("producer", "operator"):
        status, body = await request_copy(server, tokens[who], "p/item", pin_until=until)
        assert status == 400, body
        assert body["error"]["field"] == "pin_until"
        assert "must be in the future" in body["error"]["message"]
    assert await version_of(server) == before
    assert await requests_of(server, tokens["reader"]) == []
    status, body = await request_copy(server, tokens["producer"], "p/item",
                                      pin_until="2999-01-01T00:00:00Z")
    assert status == 201 and body["pin_until"] == "2999-01-01T00:00:00Z", body


def test_cli_says_which_rule_refused_and_refuses_a_past_pin(dlm, cli_server, monkeypatch):
    cli_server.add_disk()  # in open mode, which the tokens end
    tokens = cli_server.call(setup_tokens(cli_server._server))
    monkeypatch.setenv("DLM_TOKEN", tokens["operator"])
    dlm("inject", "c/item", "--storage", "disk1", "--size", "1", "--token", tokens["other"])
    theirs = dlm.json("copy", "c/item", "disk1", "--pin-until", "2999-01-01T00:00:00Z",
                      "--token", tokens["other"])
    message = dlm.error("requests", "cancel", str(theirs["id"]), "--token", tokens["producer"])
    assert message.startswith("id: a producer may cancel only the copy requests it made")
    assert "rule: requester_cancels_own_requests" in message
    assert "role may not do this" not in message  # the role is right; the request is not its
    assert dlm.error("copy", "c/item", "disk1", "--pin-until", "1970-01-01T00:00:00Z",
                     "--token", tokens["producer"]).startswith("pin_until: must be in the future")
    assert [r["state"] for r in dlm.json("requests")] == ["pending"]



async def test_the_writer_refuses_on_its_own(sqlite_server):
    """``UpdateItems`` (Python API of ``inventory.writes``) enforces the rule itself, whatever
    the handler checked before: the writer is the authority."""
    tokens = await setup_tokens(sqlite_server)
    theirs = await register(sqlite_server, tokens["other"], "w/theirs")
    inv = sqlite_server.app[STATE].inventory
    patch = [(theirs["oid"], ItemPatch(metadata={"k": 1}))]
    with pytest.raises(errors.Forbidden) as caught:
        UpdateItems(patch, actor=Actor("t-producer", "producer")).prepare(inv, Pending())
    assert (caught.value.field, caught.value.details["rule"]) == ("items[0].metadata", RULE)
    for who in (Actor("t-other", "producer"), Actor("t-operator", "operator")):
        UpdateItems(patch, actor=who).prepare(inv, Pending())
