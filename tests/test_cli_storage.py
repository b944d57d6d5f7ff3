"""``dlm storage add|ls|show|set`` against a real server: tables, JSON, and the server's errors
as one line naming the field."""

from __future__ import annotations

import re

pytest_plugins = ["tests.cli_fixtures"]


def test_storage_add_prints_the_storage_and_json_round_trips(dlm):
    out = dlm("storage", "add", "disk1", "--kind", "posix", "--root", "/data/disk1",
              "--capacity", "10 TB", "--phase", "LIQUID", "--attr", "region=eu",
              "--attr", "tier=1").out
    assert re.search(r"^name\s+disk1$", out, re.M)
    assert re.search(r"^capacity\s+10\.0 TB$", out, re.M)
    assert re.search(r"^attributes\s+region=eu, tier=1$", out, re.M)
    storage = dlm.json("storage", "show", "disk1")
    assert storage["capacity"] == 10 * 10**12 and storage["phase"] == "LIQUID"
    assert storage["attributes"] == {"region": "eu", "tier": 1}  # tier=1 stays a number
    assert storage["status"] == "online"


def test_storage_ls_is_an_aligned_table_sorted_by_name(dlm, cli_server):
    cli_server.add_disk("tape1", kind="posix", capacity=5_000_000, phase="SOLID")
    cli_server.add_disk("disk1")
    lines = dlm("storage", "ls").out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "PHASE", "STATUS", "CAPACITY", "USED", "FREE",
                                "USE%", "REPLICAS", "ROOT"]
    assert [line.split()[0] for line in lines[1:]] == ["disk1", "tape1"]
    # Every column starts at the same offset on every line.
    root_at = lines[0].index("ROOT")
    assert {line.index("/data/") for line in lines[1:]} == {root_at}
    assert "5.0 MB" in lines[2] and "0.0%" in lines[2]
    assert [s["name"] for s in dlm.json("storage", "ls")] == ["disk1", "tape1"]


def test_storage_add_errors_name_the_field(dlm, cli_server):
    cli_server.add_disk()
    message = dlm.error("storage", "add", "disk2", "--kind", "posix", "--root", "/x",
                        "--capacity", "ten bytes")
    assert message.startswith("capacity: ")
    message = dlm.error("storage", "add", "../bad", "--kind", "posix", "--root", "/x",
                        "--capacity", "1")
    assert message.startswith("name: ")


def test_storage_add_duplicate_is_a_conflict(dlm, cli_server):
    cli_server.add_disk()
    message = dlm.error("storage", "add", "disk1", "--kind", "posix", "--root", "/x",
                        "--capacity", "1")
    assert "disk1" in message


def test_storage_show_unknown_is_one_line(dlm):
    message = dlm.error("storage", "show", "nowhere")
    assert message == "name: no storage named 'nowhere'"


def test_storage_set_changes_status_and_merges_attributes(dlm, cli_server):
    cli_server.add_disk(attributes={"region": "eu", "tier": 1})
    out = dlm("storage", "set", "disk1", "--status", "draining", "--capacity", "20TB",
              "--attr", "cost=0.5", "--unset-attr", "tier").out
    assert re.search(r"^status\s+draining$", out, re.M)
    storage = dlm.json("storage", "show", "disk1")
    assert storage["status"] == "draining" and storage["capacity"] == 20 * 10**12
    assert storage["attributes"] == {"region": "eu", "cost": 0.5}
    storage = dlm.json("storage", "set", "disk1", "--phase", "SOLID")
    assert storage["phase"] == "SOLID"


def test_storage_set_without_changes_is_a_usage_error(dlm, cli_server):
    cli_server.add_disk()
    assert dlm.error("storage", "set", "disk1", status=2).startswith("nothing to change")


def test_storage_set_bad_status_from_the_server_names_the_field(dlm, cli_server):
    cli_server.add_disk()
    assert dlm.error("storage", "set", "disk1", "--capacity", "lots").startswith("capacity: ")
    assert dlm.error("storage", "set", "nowhere", "--status", "offline").startswith("name: ")


def test_retiring_a_storage_with_last_copies_is_refused_with_the_count(dlm, cli_server):
    cli_server.add_disk()
    dlm("inject", "obs/a", "--storage", "disk1", "--size", "10")
    dlm("inject", "obs/b", "--storage", "disk1", "--size", "10")
    message = dlm.error("storage", "set", "disk1", "--status", "retired")
    assert "last_copies: 2" in message
    assert dlm.json("storage", "show", "disk1")["status"] == "online"
