"""``dlm inject`` (one item), ``ls``, ``show``, ``rm``, ``access`` against a real server."""

from __future__ import annotations

import json
import re

pytest_plugins = ["tests.cli_fixtures"]


def inject(dlm, name, *flags):
    return dlm.json("inject", name, *flags)


def test_inject_one_item_with_flags_is_a_one_call_ingest(dlm, cli_server):
    cli_server.add_disk()
    item = inject(dlm, "obs/scan-1.ms", "--storage", "disk1", "--size", "1048576",
                  "--checksum", "0a1b2c3d", "--meta", "instrument=MID", "--meta", "band=2",
                  "--lifetime", "3600", "--owner", "alice", "--target-phase", "LIQUID")
    assert item["state"] == "READY" and item["size"] == 1048576
    assert item["metadata"] == {"instrument": "MID", "band": 2}
    assert item["owner"] == "alice" and item["target_phase"] == "LIQUID"
    assert item["expire_at"] is not None
    [replica] = item["replicas"]
    assert replica["storage"] == "disk1" and replica["uri"] == "/data/disk1/obs/scan-1.ms"


def test_inject_one_item_prints_it_for_people(dlm):
    out = dlm("inject", "raw/a", "--metadata", '{"run": 7}').out
    assert re.search(r"^state\s+INITIALISED$", out, re.M)
    assert re.search(r"^name\s+raw/a$", out, re.M)
    assert out.rstrip().endswith("no replicas")


def test_inject_errors_name_the_field(dlm, cli_server):
    cli_server.add_disk()
    assert dlm.error("inject", "/abs/path").startswith("item_name: ")
    assert dlm.error("inject", "x", "--parent", "not-a-uuid").startswith("parent_oid: ")
    assert dlm.error("inject", "x", "--storage", "nowhere", "--size", "1") == \
        "unknown storage 'nowhere' (`dlm storage ls` lists them)"
    assert dlm.error("inject", "x", "--metadata", "{oops", status=2).startswith("--metadata: ")
    assert dlm.error("inject", status=2).startswith("give an ITEM_NAME")


def test_show_by_name_and_by_oid_with_replicas_table(dlm, cli_server):
    cli_server.add_disk()
    first = inject(dlm, "obs/x", "--storage", "disk1", "--size", "2500000")
    second = inject(dlm, "obs/x", "--storage", "disk1", "--size", "10")
    assert second["item_version"] == 2
    assert dlm.json("show", "obs/x")["oid"] == second["oid"]
    assert dlm.json("show", "obs/x", "--version", "1")["oid"] == first["oid"]
    out = dlm("show", first["oid"]).out
    assert re.search(r"^size\s+2\.5 MB \(2500000 bytes\)$", out, re.M)
    assert re.search(r"^phase\s+GAS \(target SOLID\)$", out, re.M)
    header, row = out.split("\n\n")[1].splitlines()
    assert header.split() == ["STORAGE", "STATE", "SIZE", "VERIFIED", "URI"]
    assert row.split()[:2] == ["disk1", "complete"] and row.endswith("/data/disk1/obs/x")


def test_show_unknown_item(dlm):
    assert dlm.error("show", "obs/none") == "no item named 'obs/none'"
    assert dlm.error("show", "obs/none", "--version", "3") == "no item named 'obs/none' version 3"
    assert dlm.error("show", "3e5f0744-d792-470b-9517-5db025150000").startswith("oid: ")


def test_ls_table_with_human_sizes_and_aligned_columns(dlm, cli_server):
    cli_server.add_disk()
    for name, size in (("run/b", "1500"), ("run/a", "3000000000"), ("other/c", "5")):
        dlm("inject", name, "--storage", "disk1", "--size", size)
    lines = dlm("ls", "run/*").out.splitlines()
    assert lines[0].split() == ["NAME", "VER", "TYPE", "STATE", "PHASE", "TARGET", "SIZE",
                                "COPIES", "EXPIRES", "OID"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == ["run/a", "run/b"]
    assert "3.0 GB" in rows["run/a"] and "1.5 kB" in rows["run/b"]
    oid_at = lines[0].index("OID")
    assert all(re.match(r"[0-9a-f-]{36}$", line[oid_at:]) for line in lines[1:])


def test_ls_json_follows_cursors_and_honours_limit(dlm, cli_server):
    specs = [{"item_name": f"g/{i:04d}"} for i in range(2500)]
    cli_server.api(lambda c: c.add_items(specs))
    names = [i["item_name"] for i in dlm.json("ls", "g/*")]
    assert names == sorted(names) and len(names) == 2500  # three pages of 1,000
    assert [i["item_name"] for i in dlm.json("ls", "g/*", "--limit", "3")] == \
        ["g/0000", "g/0001", "g/0002"]
    assert dlm.json("ls", "nothing/*") == []
    assert dlm.error("ls", "--limit", "0", status=2).startswith("--limit: ")


def test_ls_filters_map_to_query_parameters(dlm, cli_server):
    cli_server.add_disk()
    cli_server.add_disk("disk2")
    dlm("inject", "a/1", "--storage", "disk1", "--size", "1", "--meta", "run=7")
    dlm("inject", "a/2", "--storage", "disk2", "--size", "1", "--meta", "run=8",
        "--target-phase", "GAS")
    dlm("inject", "b/1", "--expire-at", "2000-01-01T00:00:00Z")
    dlm("inject", "a/1", "--storage", "disk2", "--size", "1")  # version 2

    def names(*flags):
        return sorted(f"{i['item_name']}@{i['item_version']}" for i in dlm.json("ls", *flags))

    assert names() == ["a/1@2", "a/2@1", "b/1@1"]
    assert names("--version", "all", "--prefix", "a/") == ["a/1@1", "a/1@2", "a/2@1"]
    assert names("--version", "1", "a/1") == ["a/1@1"]
    assert names("--storage", "disk2") == ["a/1@2", "a/2@1"]
    assert names("--meta", "run=7", "--version", "all") == ["a/1@1"]
    assert names("--state", "INITIALISED") == ["b/1@1"]
    assert names("--phase", "GAS") == ["a/1@2", "a/2@1"]
    assert names("--target-phase", "GAS") == ["a/2@1"]
    assert names("--type", "container") == []
    assert names("--expired-before", "2001-01-01T00:00:00Z") == ["b/1@1"]
    assert dlm.error("ls", "--expired-before", "yesterday").startswith("expired_before: ")


def test_ls_parent_lists_the_members_of_a_container(dlm):
    box = inject(dlm, "box", "--type", "container")
    inject(dlm, "box/a", "--parent", box["oid"])
    inject(dlm, "box/b", "--parent", box["oid"])
    inject(dlm, "loose")
    assert sorted(i["item_name"] for i in dlm.json("ls", "--parent", box["oid"])) == \
        ["box/a", "box/b"]


def test_rm_marks_an_item_for_deletion(dlm, cli_server):
    cli_server.add_disk()
    item = inject(dlm, "obs/old", "--storage", "disk1", "--size", "5")
    out = dlm("rm", "obs/old").out
    assert out.strip() == f"obs/old v1 ({item['oid']}) is now EXPIRED; Detox removes its payloads"
    shown = dlm.json("show", item["oid"])
    assert shown["state"] == "EXPIRED" and shown["replicas"][0]["state"] == "complete"
    assert dlm.error("rm", "obs/never").startswith("no item named")


def test_access_records_reads(dlm):
    item = inject(dlm, "hot/a")
    result = dlm.json("access", "hot/a", "--count", "5")
    assert result["oid"] == item["oid"] and result["access_count"] == 5
    out = dlm("access", item["oid"], "--at", "2026-01-02T03:04:05Z").out
    assert out.startswith("hot/a v1: 6 accesses, last at ")
    assert dlm.json("show", "hot/a")["access_count"] == 6
    assert dlm.error("access", "hot/a", "--count", "0", status=2).startswith("--count")
    assert dlm.error("access", "hot/a", "--at", "noon").startswith("at: ")


def test_json_output_is_valid_json_for_every_read_command(dlm, cli_server):
    cli_server.add_disk()
    inject(dlm, "j/a", "--storage", "disk1", "--size", "1")
    for argv in (["ls"], ["show", "j/a"], ["storage", "ls"], ["storage", "show", "disk1"]):
        json.loads(dlm(*argv, "--json").out)


def test_item_names_with_glob_characters_are_taken_literally(dlm):
    odd = dlm.json("inject", "odd/a*[1]")
    dlm("inject", "odd/a-other[1]")
    assert dlm.json("show", "odd/a*[1]")["oid"] == odd["oid"]
    assert dlm.json("access", "odd/a*[1]")["oid"] == odd["oid"]
    assert dlm.error("show", "odd/*") == "no item named 'odd/*'"
