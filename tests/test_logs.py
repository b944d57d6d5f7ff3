"""Structured logs: JSON lines with the record's fields and the request id."""

from __future__ import annotations

import json
import logging

import aiohttp

from inventory import logs


def test_json_lines_carry_extra_fields_and_the_request_id(capsys):
    logs.setup("info", json_lines=True)
    token = logs.REQUEST_ID.set("abc123")
    try:
        logging.getLogger("dlm.test").info("copied", extra={"item": "a/b", "bytes": 5})
    finally:
        logs.REQUEST_ID.reset(token)
    logging.getLogger("dlm.test").warning("later")
    first, second = capsys.readouterr().err.strip().splitlines()
    record = json.loads(first)
    assert record["msg"] == "copied" and record["item"] == "a/b" and record["bytes"] == 5
    assert record["request_id"] == "abc123" and record["level"] == "info"
    assert "request_id" not in json.loads(second)
    logging.getLogger().handlers.clear()


def test_text_lines_on_a_terminal(capsys):
    logs.setup("info", json_lines=False)
    logging.getLogger("dlm.test").info("hello", extra={"storage": "disk1"})
    assert "hello storage=disk1" in capsys.readouterr().err
    logging.getLogger().handlers.clear()


async def test_every_answer_has_a_request_id(sqlite_server):
    async with aiohttp.ClientSession() as s:
        async with s.get(sqlite_server.url + "/v1/health") as resp:
            generated = resp.headers["X-Request-Id"]
            assert len(generated) == 16
        async with s.get(sqlite_server.url + "/v1/items/nope",
                         headers={"X-Request-Id": "client-7"}) as resp:
            assert resp.status == 400 and resp.headers["X-Request-Id"] == "client-7"
        async with s.get(sqlite_server.url + "/v1/health",
                         headers={"X-Request-Id": "not ok; <script>"}) as resp:
            assert resp.headers["X-Request-Id"] != "not ok; <script>"  # replaced, not echoed
