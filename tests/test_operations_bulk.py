"""Queueing many operations at once (issue 25): ``POST /v1/operations`` with a list is one
transaction, refused whole at its first bad entry with the field ``operations[i].item``...;
``Client.add_operations``; ``dlm ops queue --from FILE`` (JSON lines or CSV) in batches."""

from __future__ import annotations

import json

import pytest

from inventory import errors
from tests.conftest import InProcessServer

pytest_plugins = ["tests.cli_fixtures"]


@pytest.fixture
async def srv(tmp_path):
    """No engine: operations stay queued as the requests left them."""
    server = InProcessServer(f"sqlite:{tmp_path / 'db.sqlite'}", tmp_path, fileops=None)
    await server.start()
    c = server.client
    for name in ("disk1", "tape1", "tape2"):
        (tmp_path / name).mkdir()
        await c.add_storage(name=name, kind="posix", root=str(tmp_path / name), capacity=10**9)
    for i in range(5):
        (tmp_path / "disk1" / f"f{i}").write_bytes(b"x" * (i + 1))
    server.items = await c.add_items([{"item_name": f"f{i}", "storage": "disk1"}
                                      for i in range(5)])
    try:
        yield server
    finally:
        await server.stop()


async def queued(client) -> list[dict]:
    return (await client.request("GET", "/v1/operations"))["operations"]


async def test_a_list_is_queued_in_one_transaction_in_order(srv):
    c = srv.client
    specs = [{"kind": "copy", "item": f"f{i}", "target": "tape1"} for i in range(4)]
    specs.append({"kind": "copy", "item": srv.items[4]["oid"], "target": "tape2",
                  "source": "disk1"})
    body = await c.request("POST", "/v1/operations", json=specs)
    assert body["count"] == 5
    ops = body["operations"]
    assert [o["item_name"] for o in ops] == ["f0", "f1", "f2", "f3", "f4"]
    assert [o["target"] for o in ops] == ["tape1"] * 4 + ["tape2"]
    assert ops[4]["source"] == "disk1" and ops[0]["source"] is None
    assert {o["state"] for o in ops} == {"queued"} and {o["origin"] for o in ops} == {"user"}
    assert [o["id"] for o in await queued(c)] == [o["id"] for o in ops]
    # the Python client
    more = await c.add_operations([{"kind": "copy", "item": "f0", "target": "tape2"}])
    assert [(o["item_name"], o["target"]) for o in more] == [("f0", "tape2")]
    # one object still answers with the operation itself
    one = await c.add_operation("copy", "f1", "tape2")
    assert one["item_name"] == "f1" and "count" not in one


@pytest.mark.parametrize(("bad", "status", "field"), [
    ({"kind": "copy", "item": "nope", "target": "tape1"}, 404, "operations[2].item"),
    ({"kind": "copy", "item": "f3", "target": "nowhere"}, 400, "operations[2].target"),
    ({"kind": "copy", "item": "f3", "target": "tape1", "source": "tape2"}, 409,
     "operations[2].source"),
    ({"kind": "copy", "item": "f0", "target": "tape1"}, 409, "operations[2].target"),  # twice
    ({"kind": "delete", "item": "f3", "target": "disk1"}, 409, "operations[2].target"),  # last
    ({"kind": "move", "item": "f3", "target": "tape1"}, 400, "operations[2].kind"),
    ({"item": "f3", "target": "tape1"}, 400, "operations[2].kind"),
    ({"kind": "copy", "item": "f3", "target": "tape1", "extra": 1}, 400,
     "operations[2].extra"),
])
async def test_a_bad_entry_refuses_the_whole_list(srv, bad, status, field):
    c = srv.client
    specs = [{"kind": "copy", "item": "f0", "target": "tape1"},
             {"kind": "copy", "item": "f1", "target": "tape1"}, bad,
             {"kind": "copy", "item": "f4", "target": "tape1"}]
    with pytest.raises(errors.DLMError) as refused:
        await c.add_operations(specs)
    assert (refused.value.status, refused.value.field) == (status, field), refused.value
    assert await queued(c) == []  # nothing of the list was queued
    storage = await c.request("GET", "/v1/storages/tape1")
    assert storage["replica_count"] == 0  # and no pending replica either


async def test_list_bounds_and_single_fields(srv):
    c = srv.client
    with pytest.raises(errors.DLMError) as empty:
        await c.add_operations([])
    assert (empty.value.status, empty.value.field) == (400, "operations")
    many = [{"kind": "copy", "item": "f0", "target": "tape1"}] * 10_001
    with pytest.raises(errors.DLMError) as over:
        await c.add_operations(many)
    assert (over.value.status, over.value.field) == (400, "operations")
    assert "10000" in over.value.message and await queued(c) == []
    # a single object keeps its plain field names
    with pytest.raises(errors.DLMError) as single:
        await c.add_operation("copy", "nope", "tape1")
    assert (single.value.status, single.value.field) == (404, "item")
    with pytest.raises(errors.DLMError) as single:
        await c.add_operation("copy", "f0", "nowhere")
    assert (single.value.status, single.value.field) == (400, "target")


# ------------------------------------------------------------------------------ the CLI

@pytest.fixture
def items(dlm, cli_server):
    cli_server.add_disk()
    cli_server.add_disk("tape1", phase="SOLID")
    return [dlm.json("inject", f"obs/{i}", "--storage", "disk1", "--size", "10")
            for i in range(6)]


def test_ops_queue_from_json_lines_with_defaults(dlm, cli_server, items, tmp_path):
    path = tmp_path / "ops.jsonl"
    path.write_text(
        json.dumps({"item": "obs/0", "target": "tape1"}) + "\n\n"
        + json.dumps({"item": items[1]["oid"], "target": "tape1", "source": "disk1"}) + "\n"
        + "".join(json.dumps({"kind": "copy", "item": f"obs/{i}", "target": "tape1"}) + "\n"
                  for i in range(2, 6)))
    out = dlm("ops", "queue", "copy", "--from", str(path), "--batch-size", "2").out
    assert out.strip() == f"queued 6 operations from {path}"
    ops = dlm.json("ops", "--state", "queued")
    assert [o["item_name"] for o in ops] == [f"obs/{i}" for i in range(6)]
    assert {o["kind"] for o in ops} == {"copy"} and ops[1]["source"] == "disk1"


def test_ops_queue_from_csv_streams_json(dlm, cli_server, items, tmp_path):
    path = tmp_path / "ops.csv"
    path.write_text("kind,item,target,source\ncopy,obs/0,tape1,\ncopy,obs/1,tape1,disk1\n")
    ops = dlm.json("ops", "queue", "--from", str(path), "--no-progress")
    assert [(o["item_name"], o["source"]) for o in ops] == [("obs/0", None), ("obs/1", "disk1")]


def test_ops_queue_from_errors_name_the_line(dlm, cli_server, items, tmp_path):
    path = tmp_path / "ops.jsonl"
    lines = [{"kind": "copy", "item": f"obs/{i}", "target": "tape1"} for i in range(5)]
    lines[3]["item"] = "obs/none"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    err = dlm.error("ops", "queue", "--from", str(path), "--batch-size", "2")
    assert err.startswith(f"{path} line 4: item: no item 'obs/none'"), err
    assert "the 2 operations before it were" in err and "--start-line 3" in err
    assert len(dlm.json("ops", "--state", "queued")) == 2  # the first batch is committed
    lines[3]["item"] = "obs/3"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = dlm("ops", "queue", "--from", str(path), "--start-line", "3").out
    assert out.strip() == f"queued 3 operations from {path}"
    assert len(dlm.json("ops", "--state", "queued")) == 5
    # bad files and bad usage: one line, no traceback, nothing sent
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item": "obs/5", "target": "tape1"}\n[1]\n')
    assert dlm.error("ops", "queue", "copy", "--from", str(bad), status=2) == \
        f"{bad} line 2: expected a JSON object with item and target"
    csv_bad = tmp_path / "bad.csv"
    csv_bad.write_text("item,storage\nobs/5,tape1\n")
    assert "the header names the fields" in dlm.error("ops", "queue", "--from", str(csv_bad),
                                                      status=2)
    assert dlm.error("ops", "queue", "copy", "obs/5", "--from", str(path), status=2) \
        .startswith("--from FILE names the items")
    assert dlm.error("ops", "queue", "copy", "obs/5", status=2).startswith("give KIND ITEM")
    assert dlm.error("ops", "queue", "move", "obs/5", "tape1", status=2).startswith("KIND: ")
    assert dlm.error("ops", "queue", "--from", str(path), "--batch-size", "0",
                     status=2).startswith("--batch-size: ")
    assert dlm.error("ops", "queue", "--from", str(tmp_path / "missing.jsonl"),
                     status=2).startswith("cannot read ")
    nokind = tmp_path / "nokind.jsonl"
    nokind.write_text('{"item": "obs/5", "target": "tape1"}\n')
    assert dlm.error("ops", "queue", "--from", str(nokind)).startswith(
        f"{nokind} line 1: kind: ")
    assert len(dlm.json("ops", "--state", "queued")) == 5
