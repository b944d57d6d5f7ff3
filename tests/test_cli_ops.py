"""``dlm copy``, ``dlm requests``, ``dlm ops``, ``dlm history`` against a real server."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

pytest_plugins = ["tests.cli_fixtures"]


@pytest.fixture
def item(dlm, cli_server):
    cli_server.add_disk()
    cli_server.add_disk("tape1", phase="SOLID")
    return dlm.json("inject", "obs/a", "--storage", "disk1", "--size", "10")


def test_copy_by_name_and_by_oid_makes_pending_requests(dlm, item):
    out = dlm("copy", "obs/a", "tape1", "--pin-until", "2030-01-01T00:00:00Z",
              "--comment", "for the paper").out
    assert out.startswith("request ") and "obs/a to tape1, pending, pinned until 2030-01-01" \
        in out
    request = dlm.json("copy", item["oid"], "tape1")
    assert request["oid"] == item["oid"] and request["item_name"] == "obs/a"
    assert request["storage"] == "tape1" and request["state"] == "pending"
    assert request["pin_until"] is None


def test_requests_lists_filters_and_cancels(dlm, item):
    first = dlm.json("copy", "obs/a", "tape1", "--comment", "keep")
    second = dlm.json("copy", "obs/a", "disk1")
    lines = dlm("requests").out.splitlines()
    assert lines[0].split() == ["ID", "ITEM", "STORAGE", "STATE", "PIN", "UNTIL", "REQUESTER",
                                "CREATED", "COMMENT"]
    assert len(lines) == 3 and lines[1].rstrip().endswith("keep")
    assert [r["id"] for r in dlm.json("requests", "--storage", "tape1")] == [first["id"]]
    out = dlm("requests", "cancel", str(second["id"])).out
    assert out.strip() == f"request {second['id']} cancelled"
    assert [r["id"] for r in dlm.json("requests", "--state", "cancelled")] == [second["id"]]
    assert [r["id"] for r in dlm.json("requests", "--state", "pending")] == [first["id"]]
    # Options after the nested action reach the client too.
    dlm("requests", "cancel", str(first["id"]), "--json")
    assert dlm.json("requests", "--state", "pending") == []


def test_copy_and_request_errors(dlm, item):
    assert "nowhere" in dlm.error("copy", "obs/a", "nowhere")
    assert "obs/none" in dlm.error("copy", "obs/none", "tape1")
    assert dlm.error("copy", "obs/a", "tape1", "--pin-until", "soon").startswith("pin_until: ")
    assert dlm.error("requests", "cancel", "999").startswith("id: ")
    assert dlm.error("requests", "--storage", "nowhere").startswith("storage: ")


def test_ops_lists_nothing_yet_with_every_filter(dlm, item):
    assert dlm("ops").out.split() == ["ID", "KIND", "ITEM", "SOURCE", "TARGET", "ORIGIN",
                                      "STATE", "TRIES", "UPDATED", "LAST", "ERROR"]
    assert dlm.json("ops", "--state", "queued", "--kind", "copy", "--storage", "disk1") == []
    assert dlm.error("ops", "--storage", "nowhere").startswith("storage: ")
    assert dlm.error("ops", "--limit", "0", status=2).startswith("--limit: ")


def test_history_lists_nothing_yet(dlm):
    assert dlm("history").out.split() == ["ID", "KIND", "STARTED", "ENDED", "SUMMARY"]
    assert dlm.json("history", "--kind", "detox") == []
    assert dlm.error("history", "42") == "id: no cycle 42"


def seed(db_url: str, table: str, rows: list[dict]) -> None:
    """Rows as the file operations and the cycles leave them in the database."""
    with sqlite3.connect(db_url.removeprefix("sqlite:")) as db:
        for row in rows:
            columns = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})",
                       [json.dumps(v) if isinstance(v, dict) else v for v in row.values()])


def test_ops_and_history_show_what_the_database_holds(dlm, cli_server, item, monkeypatch):
    now = time.time()
    seed(cli_server.db_url, "operation", [
        {"id": i, "kind": "copy" if i % 2 else "delete", "oid": item["oid"],
         "source_id": 1, "target_id": 2, "origin": "dealer",
         # Finished states only: the server's file-operation workers leave them alone.
         "state": "failed" if i == 3 else "done", "attempts": 2 if i == 3 else 1,
         "last_error": "checksum mismatch" if i == 3 else None,
         "created": now, "updated": now} for i in range(1, 251)])
    seed(cli_server.db_url, "cycle", [
        {"id": 1, "kind": "detox", "started": now - 60, "ended": now,
         "policy": "partition all: true\n", "summary": {"deleted": 3, "kept": 7}},
        {"id": 2, "kind": "dealer", "started": now, "ended": None, "policy": None,
         "summary": {}}])
    cli_server.restart()
    monkeypatch.setenv("DLM_URL", cli_server.url)  # a new port

    every = dlm.json("ops")
    assert [o["id"] for o in every] == list(range(1, 251))  # three pages of 100
    assert [o["id"] for o in dlm.json("ops", "--kind", "copy", "--limit", "2")] == [1, 3]
    [failed] = dlm.json("ops", "--state", "failed")
    assert failed["item_name"] == "obs/a" and failed["source"] == "disk1"
    assert failed["target"] == "tape1" and failed["last_error"] == "checksum mismatch"
    row = dlm("ops", "--state", "failed").out.splitlines()[1]
    assert row.split()[:8] == ["3", "copy", "obs/a", "disk1", "tape1", "dealer", "failed", "2"]
    assert row.endswith("checksum mismatch")

    lines = dlm("history").out.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [["2", "dealer"], ["1", "detox"]]
    assert lines[2].endswith("deleted=3, kept=7")
    assert [c["id"] for c in dlm.json("history", "--kind", "detox")] == [1]
    out = dlm("history", "1").out
    assert "summary  deleted=3, kept=7" in out and out.endswith("\npartition all: true\n")
    assert dlm.json("history", "1")["policy"] == "partition all: true\n"


def test_ops_queue_and_cancel(dlm, cli_server, item):
    out = dlm("ops", "queue", "copy", "obs/a", "tape1", "--source", "disk1").out
    assert out.startswith("operation ") and out.rstrip().endswith(
        "copy obs/a disk1 to tape1, queued")
    assert dlm.error("ops", "queue", "delete", "obs/a", "disk1") == \
        "target: refused: it is the last complete copy of 'obs/a'"
    cli_server.add_disk("disk2")
    two = dlm.json("inject", "obs/b", "--storage", "disk1", "--size", "1", "--target-phase", "GAS")
    cli_server.api(lambda c: c.patch_item(two["oid"], storage="disk2"))
    op = dlm.json("ops", "queue", "delete", two["oid"], "disk1")
    assert (op["kind"], op["item_name"], op["target"], op["origin"], op["state"]) == \
        ("delete", "obs/b", "disk1", "user", "queued")
    assert [o["kind"] for o in dlm.json("ops", "--state", "queued")] == ["copy", "delete"]
    assert dlm("ops", "cancel", str(op["id"])).out.strip() == f"operation {op['id']} cancelled"
    assert [o["id"] for o in dlm.json("ops", "--state", "cancelled")] == [op["id"]]
    assert dlm.error("ops", "cancel", str(op["id"])).startswith("id: ")  # no longer queued
    assert dlm.error("ops", "queue", "copy", "obs/a", "nowhere").startswith("target: ")
    assert dlm.error("ops", "queue", "copy", "obs/none", "tape1").startswith("item: ")
