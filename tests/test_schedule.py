"""Cycles the server launches itself from its config (`schedule:`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from inventory.client import Client
from tests.conftest import wait_healthy

POLICY = 'partition "all" { }\ndetox {\n    default protect\n}\n'


async def test_the_server_runs_detox_on_its_schedule_even_with_tokens(tmp_path,
                                                                      server_process):
    policy = tmp_path / "p.policy"
    policy.write_text(POLICY)
    config = tmp_path / "dlm.yaml"
    config.write_text(f"schedule:\n  - detox: {policy}\n    every: 1s\n"
                      "  - consistency: disk\n    every: 1s\n"
                      "fileops:\n  poll: 0.05\n  retry_base: 0.05\n")
    proc = server_process(None, "--config", str(config)).start()
    await wait_healthy(proc.url)
    async with Client(proc.url, token="") as c:
        (tmp_path / "disk").mkdir()
        await c.add_storage(name="disk", kind="posix", root=str(tmp_path / "disk"),
                            capacity=100)
        (tmp_path / "disk" / "old").write_bytes(b"x")
        item = await c.add_item(item_name="old", storage="disk", size=1,
                                expire_at="2001-01-01T00:00:00Z")
        made = await c.request("POST", "/v1/tokens", json={"name": "op", "role": "operator"})
    async with Client(proc.url, token=made["token"]) as c:  # tokens now required
        for _ in range(200):
            if (await c.item(item["oid"]))["state"] == "DELETED":
                break
            await asyncio.sleep(0.1)
        assert (await c.item(item["oid"]))["state"] == "DELETED"
        assert not (tmp_path / "disk" / "old").exists()
        cycles = (await c.request("GET", "/v1/history", params={"kind": "detox"}))["cycles"]
        assert cycles and cycles[0]["summary"]["policy"]["file"] == str(policy)
        for _ in range(100):
            checks = (await c.request("GET", "/v1/history",
                                      params={"kind": "consistency"}))["cycles"]
            if checks:
                break
            await asyncio.sleep(0.1)
        assert checks, "no scheduled consistency check ran"


@pytest.mark.parametrize(("content", "message"), [
    ("schedule: 5\n", "expected a list"),
    ("schedule:\n  - detox: /no/such.policy\n    every: 1h\n", "no policy file"),
    ("schedule:\n  - rebalance: x\n    every: 1h\n", "expected one of detox, dealer, consistency"),
    ("schedule:\n  - consistency: 5\n    every: 1h\n", "expected a storage name"),
    ("schedule:\n  - detox: {p}\n    every: often\n", "every: expected a duration"),
])
def test_bad_schedule_config(tmp_path, content, message):
    policy = tmp_path / "p.policy"
    policy.write_text(POLICY)
    config = tmp_path / "dlm.yaml"
    config.write_text(content.replace("{p}", str(policy)))
    result = subprocess.run([sys.executable, "-m", "inventory.cli", "serve", "--config",
                             str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr
