"""``dlm inject --from FILE``: JSON lines and CSV in batches, the progress bar, and errors that
point at the file's line."""

from __future__ import annotations

import json

pytest_plugins = ["tests.cli_fixtures"]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_bulk_jsonl_in_batches_with_a_progress_bar(dlm, cli_server, tmp_path):
    cli_server.add_disk()
    records = [{"item_name": f"bulk/{i:05d}", "size": i, "metadata": {"i": i}}
               for i in range(2345)]
    records.insert(100, {})  # replaced below by a blank line
    path = tmp_path / "items.jsonl"
    path.write_text("".join("\n" if not r else json.dumps(r) + "\n" for r in records))
    result = dlm("inject", "--from", str(path), "--storage", "disk1", "--batch-size", "1000")
    assert result.out.strip() == f"registered 2,345 items from {path}"
    assert "inject" in result.err and "2345/2345" in result.err and "100%" in result.err
    health = cli_server.api(lambda c: c.health())
    assert health["items"] == 2345 and health["items_by_state"]["READY"] == 2345
    item = dlm.json("show", "bulk/00042")
    assert item["size"] == 42 and item["metadata"] == {"i": 42}
    assert item["replicas"][0]["storage"] == "disk1"  # --storage as the default


def test_bulk_json_output_lists_what_was_registered(dlm, tmp_path):
    path = write_jsonl(tmp_path / "few.jsonl", [{"item_name": "f/a"}, {"item_name": "f/b"}])
    answers = dlm.json("inject", "--from", path, "--no-progress")
    assert [a["item_name"] for a in answers] == ["f/a", "f/b"]
    assert all(a["item_version"] == 1 and len(a["oid"]) == 36 for a in answers)


def test_bulk_csv_with_a_header_converts_cells(dlm, cli_server, tmp_path):
    cli_server.add_disk()
    cli_server.add_disk("disk2")
    path = tmp_path / "items.csv"
    path.write_text(
        "item_name,size,checksum,storage,meta.run,metadata,lifetime\n"
        "csv/a,100,0a0b0c0d,,7,\"{\"\"band\"\": 2}\",3600\n"
        "csv/b,200,,disk2,8,,\n"
        "\n"
        "csv/c,0,,,,,\n"
    )
    result = dlm("inject", "--from", str(path), "--storage", "disk1")
    assert result.out.strip() == f"registered 3 items from {path}"
    assert "3/3" in result.err
    a = dlm.json("show", "csv/a")
    assert a["size"] == 100 and a["checksum"] == "0a0b0c0d"
    assert a["metadata"] == {"run": "7", "band": 2}
    assert a["expire_at"] is not None and a["replicas"][0]["storage"] == "disk1"
    b = dlm.json("show", "csv/b")
    assert b["replicas"][0]["storage"] == "disk2"  # the file's column over the default
    assert b["expire_at"] is None and b["metadata"] == {"run": "8"}


def test_format_is_sniffed_without_a_known_suffix(dlm, tmp_path):
    (tmp_path / "a.txt").write_text('{"item_name": "s/json"}\n')
    (tmp_path / "b.txt").write_text("item_name\ns/csv\n")
    dlm("inject", "--from", str(tmp_path / "a.txt"), "--no-progress")
    dlm("inject", "--from", str(tmp_path / "b.txt"), "--no-progress")
    assert sorted(i["item_name"] for i in dlm.json("ls", "s/*")) == ["s/csv", "s/json"]


def test_bad_csv_line_is_reported_with_its_line_number_and_nothing_sent(dlm, cli_server,
                                                                         tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("item_name,size\nok/a,1\nok/b,12x\n")
    assert dlm.error("inject", "--from", str(path), status=2) == \
        f"{path} line 3: size: expected an integer, got '12x'"
    path.write_text("item_name,size\nok/a,1\nok/b,2,3\n")
    assert dlm.error("inject", "--from", str(path), status=2) == \
        f"{path} line 3: 3 fields, the header has 2"
    path.write_text("name,size\nok/a,1\n")
    assert dlm.error("inject", "--from", str(path), status=2).startswith(
        f"{path} line 1: the header has no item_name column")
    assert cli_server.api(lambda c: c.health())["items"] == 0


def test_bad_json_line_is_reported_with_its_line_number(dlm, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"item_name": "a"}\n{"item_name": \n')
    assert dlm.error("inject", "--from", str(path), status=2).startswith(
        f"{path} line 2: not valid JSON")
    path.write_text('{"item_name": "a"}\n["b"]\n')
    assert dlm.error("inject", "--from", str(path), status=2) == \
        f"{path} line 2: expected a JSON object with item_name"


def test_server_error_in_a_batch_points_at_the_file_line(dlm, cli_server, tmp_path):
    records = [{"item_name": f"e/{i}"} for i in range(25)]
    records[17]["size"] = "big"
    path = write_jsonl(tmp_path / "e.jsonl", records)
    message = dlm.error("inject", "--from", path, "--batch-size", "10")
    assert message.startswith(f"{path} line 18: size: ")
    assert message.endswith("nothing from line 11 on was registered, the 10 items before it "
                            "were (fix the file, then rerun with --start-line 11)")
    assert cli_server.api(lambda c: c.health())["items"] == 10
    # Fixed and resumed: the first batch is not registered twice.
    records[17]["size"] = 1
    write_jsonl(tmp_path / "e.jsonl", records)
    dlm("inject", "--from", path, "--start-line", "11")
    assert cli_server.api(lambda c: c.health())["items"] == 25
    assert all(i["item_version"] == 1 for i in dlm.json("ls", "e/*", "--version", "all"))


def test_first_batch_error_says_nothing_was_registered(dlm, tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"item_name": "ok"}, {"item_name": "../up"}])
    message = dlm.error("inject", "--from", path)
    assert message.startswith(f"{path} line 2: item_name: ")
    assert message.endswith("; nothing was registered")


def test_unknown_storage_is_refused_before_reading_the_file(dlm, cli_server, tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [{"item_name": "u/a", "size": 1}])
    assert dlm.error("inject", "--from", path, "--storage", "nowhere") == \
        "unknown storage 'nowhere' (`dlm storage ls` lists them)"
    # A storage named in the file itself: the server's error, at the file's line.
    path = write_jsonl(tmp_path / "u.jsonl", [{"item_name": "u/a", "size": 1,
                                              "storage": "nowhere"}])
    assert dlm.error("inject", "--from", path).startswith(f"{path} line 1: storage: ")


def test_bulk_usage_errors(dlm, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"item_name": "a"}])
    assert dlm.error("inject", "--from", str(tmp_path / "missing.jsonl"), status=2) == \
        f"cannot read {tmp_path / 'missing.jsonl'}: No such file or directory"
    assert dlm.error("inject", "--from", path, "--batch-size", "20000", status=2) == \
        "--batch-size: expected 1 to 10,000"
    assert dlm.error("inject", "x", "--from", path, status=2).startswith("give an ITEM_NAME")
    assert dlm.error("inject", "--from", path, "--uri", "/x", status=2).startswith("--uri")


def test_bytes_that_are_not_utf8_are_reported_at_their_line(dlm, cli_server, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"item_name,size\nok/a,1\nb\xe9/b,2\n")
    assert dlm.error("inject", "--from", str(path), status=2) == \
        f"{path} line 3: not UTF-8 text (invalid continuation byte at byte 2)"
    assert cli_server.api(lambda c: c.health())["items"] == 0


def test_a_spreadsheet_csv_with_a_byte_order_mark_and_crlf(dlm, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffitem_name,meta.note\r\nx/a,\"two\r\nlines\"\r\nx/b,é\r\n"
                     .encode("utf-8"))
    dlm("inject", "--from", str(path), "--no-progress")
    assert dlm.json("show", "x/a")["metadata"] == {"note": "two\r\nlines"}
    assert dlm.json("show", "x/b")["metadata"] == {"note": "é"}
