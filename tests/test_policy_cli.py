"""``dlm policy check`` and ``dlm policy explain`` through ``inventory.cli.main``, and the pure
REST JSON -> views conversion explain relies on."""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from inventory import cli
from policies import load_policy
from policies.remote import RemoteDataError, item_views, storage_view
from policies.units import parse_date

EXAMPLES = Path(__file__).resolve().parents[1] / "policies" / "examples"
PHYSICS = str(EXAMPLES / "physics.policy")
NOW_TEXT = "2025-06-30T12:00:00Z"
NOW = parse_date(NOW_TEXT)
OID = "0b7e1c52-3f4a-4d2e-9c1b-5a6f7e8d0000"
PARENT_OID = "1c8f2d63-4a5b-4e3f-8d2c-6b7a8f9e0000"

STORAGES = [
    {"id": 1, "name": "T2_CH_CERN", "kind": "posix", "root": "/data/cern", "capacity": 10**15,
     "phase": "LIQUID", "status": "online", "attributes": {"tier": "T2"},
     "used": 95 * 10**13, "free": 5 * 10**13, "replica_count": 10},
    {"id": 2, "name": "T1_US_FNAL_Disk", "kind": "s3", "root": "bucket/prefix",
     "capacity": 10**15, "phase": "SOLID", "status": "online", "attributes": {"tier": "T1"},
     "used": 10**14, "free": 9 * 10**14, "replica_count": 3},
]
ITEM = {
    "oid": OID, "item_name": "store/data/Run2024/AOD/1.root", "item_version": 2,
    "item_type": "file", "parent_oid": PARENT_OID, "size": 10**10, "checksum": "0a1b2c3d",
    "checksum_method": "adler32", "metadata": {"custodial": False},
    "target_phase": "SOLID", "current_phase": "SOLID", "state": "READY",
    "created": "2024-01-01T00:00:00Z", "expire_at": None, "access_count": 1,
    "last_access": "2025-03-01T00:00:00Z", "owner": "ops", "group": "analysis",
    "replicas": [
        {"uid": OID[:-4] + "0001", "storage": "T2_CH_CERN", "storage_id": 1,
         "uri": "/data/cern/1.root", "state": "complete", "size": 10**10, "checksum": "0a1b2c3d",
         "created": "2025-01-01T00:00:00Z", "expire_at": None, "last_verified": None},
        {"uid": OID[:-4] + "0002", "storage": "T1_US_FNAL_Disk", "storage_id": 2,
         "uri": "s3://bucket/prefix/1.root", "state": "complete", "size": 10**10,
         "checksum": "0a1b2c3d", "created": "2025-06-29T00:00:00Z", "expire_at": None,
         "last_verified": "2025-06-29T01:00:00Z"},
    ],
}


@pytest.fixture(autouse=True)
def policy_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure `dlm policy` is registered, whether or not inventory/cli.py lists it yet."""
    if "policies.cli" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "policies.cli"))
    monkeypatch.delenv("DLM_URL", raising=False)
    monkeypatch.delenv("DLM_TOKEN", raising=False)


# --- check -----------------------------------------------------------------------------------

def test_check_valid_files_prints_summaries(capsys: pytest.CaptureFixture) -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*.policy"))
    assert cli.main(["policy", "check", *files]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert 'partition "Physics"' in out and 'partition "SKA-Low"' in out
    assert "cleans a storage when storage.occupancy > 90% or storage.status == draining, " \
           "until storage.occupancy < 85%" in out
    assert 'line 24   protect "last copy": replica.is_last_copy' in out
    assert 'line 31   dismiss "candidate": everything else' in out
    assert "deletion order: item.popularity ascending, replica.size descending" in out
    assert "target phase SOLID: 2 copies" in out
    assert "popularity: half-life 7d, one extra copy per 10 of popularity, at most 5 copies" in out
    assert f"{len(files)} of {len(files)} policies valid" in out


def test_check_reports_errors_one_per_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.policy"
    bad.write_text('partition "P" {}\ndetox {\n  protect if item.sise > 1 TB\n'
                   "  dismiss if item.state == REDY\n}\n")
    assert cli.main(["policy", "check", "-q", PHYSICS, str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"{bad}:2:1: the detox block has no default decision")
    assert lines[1].startswith(f"{bad}:3:19: unknown item attribute 'sise'")
    assert lines[1].endswith("did you mean 'size'?")
    assert lines[2].startswith(f"{bad}:4:28: unknown item state 'REDY'")
    assert len(lines) == 3 and "Traceback" not in err


def test_check_syntax_error_and_missing_file(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "syntax.policy"
    bad.write_text('partition "P" {}\ndetox {\n  protcet if item.size > 1 TB\n}\n')
    missing = tmp_path / "nope.policy"
    assert cli.main(["policy", "check", str(bad), str(missing)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{bad}:3:3: syntax error: unexpected 'protcet'; expected one of 'default', 'delete', "
        "'dismiss', 'ignore', 'on', 'order', 'protect', 'until', 'when', '}'; "
        "did you mean 'protect'?",
        f"{missing}:1:1: cannot read the file: No such file or directory",
    ]
    assert "0 of 2 policies valid" in out


# --- REST JSON -> views ------------------------------------------------------------------------

def test_item_views_from_fixture_json() -> None:
    policy = load_policy(PHYSICS)
    remote = item_views(ITEM, STORAGES, NOW, partition=policy.partition, parent_name="run2024")
    item = remote.view
    assert (item.name, item.version, item.type, item.state) == (
        "store/data/Run2024/AOD/1.root", 2, "file", "READY")
    assert (item.phase, item.target_phase, item.size, item.copies) == ("SOLID", "SOLID",
                                                                        10**10, 2)
    assert item.created == parse_date("2024-01-01") and item.expire_at is None
    assert item.last_access == parse_date("2025-03-01") and item.parent == "run2024"
    assert (item.owner, item.group, item.metadata) == ("ops", "analysis", {"custodial": False})
    # popularity: the access count decayed with the default 7-day half-life since last access
    assert 0 < item.popularity < 1e-5
    assert remote.oid == OID
    first, second = remote.replicas
    assert (first.view.storage, first.view.state, first.view.is_last_copy) == (
        "T2_CH_CERN", "complete", False)
    assert first.view.created == parse_date("2025-01-01") and first.uri == "/data/cern/1.root"
    cern = first.storage
    assert (cern.kind, cern.status, cern.phase, cern.attributes) == (
        "posix", "online", "LIQUID", {"tier": "T2"})
    assert cern.quota == 1.5e15 and cern.occupancy == pytest.approx(0.95e15 / 1.5e15)
    assert second.storage.quota == 0.8e15 and second.storage.kind == "s3"


def test_item_views_edge_cases() -> None:
    one = copy.deepcopy(ITEM)
    one["replicas"][1]["state"] = "copying"
    one["replicas"][0]["storage"] = "unknown-storage"
    one["replicas"][0]["storage_id"] = 99
    one["popularity"] = 3.5
    one["metadata"] = None
    remote = item_views(one, STORAGES, NOW)
    assert remote.view.copies == 1 and remote.view.popularity == 3.5
    assert remote.view.metadata == {} and remote.view.parent == PARENT_OID
    assert remote.replicas[0].view.is_last_copy
    assert not remote.replicas[1].view.is_last_copy
    assert remote.replicas[0].storage.name == "unknown-storage"
    assert storage_view(STORAGES[0]).occupancy == 0.95
    for broken in ({"item_name": 5}, {**ITEM, "created": "yesterday"}, {**ITEM, "size": "big"},
                   {**ITEM, "replicas": "x"}, {**ITEM, "metadata": [1]}):
        with pytest.raises(RemoteDataError):
            item_views(broken, STORAGES, NOW)
    with pytest.raises(RemoteDataError):
        storage_view({"name": None})


# --- explain against a (fake) running server ----------------------------------------------------

class FakeServer:
    """The three endpoints explain uses, answering with the fixture JSON, in a thread."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        self.url = ""

    def app(self) -> web.Application:
        async def items(request: web.Request) -> web.Response:
            self._seen(request)
            name = request.query.get("name")
            found = [ITEM] if name == ITEM["item_name"] else []
            return web.json_response({"items": found})

        async def one(request: web.Request) -> web.Response:
            self._seen(request)
            oid = request.match_info["oid"]
            if oid == OID:
                return web.json_response(ITEM)
            if oid == PARENT_OID:
                return web.json_response({**ITEM, "oid": PARENT_OID, "item_name": "run2024",
                                          "replicas": []})
            return web.json_response({"error": {"code": "not_found", "message": "no"}},
                                     status=404)

        async def storages(request: web.Request) -> web.Response:
            self._seen(request)
            return web.json_response({"storages": STORAGES})

        app = web.Application()
        app.router.add_get("/v1/items", items)
        app.router.add_get("/v1/items/{oid}", one)
        app.router.add_get("/v1/storages", storages)
        return app

    def _seen(self, request: web.Request) -> None:
        self.requests.append((request.path, request.query_string,
                              request.headers.get("Authorization")))


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    runner = web.AppRunner(fake.app())
    loop.run_until_complete(runner.setup())
    site = web.SockSite(runner, sock)
    loop.run_until_complete(site.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_explain_by_name(server: FakeServer, capsys: pytest.CaptureFixture,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLM_URL", server.url)
    monkeypatch.setenv("DLM_TOKEN", "s3cret")
    status = cli.main(["policy", "explain", "--policy", PHYSICS, "--now", NOW_TEXT,
                       ITEM["item_name"]])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.splitlines()[0] == f"item store/data/Run2024/AOD/1.root v2 ({OID})"
    assert "  partition: AnalysisOps" in out
    # The CERN copy: old and cold, a deletion candidate; the storage is 95% full but holds 63%
    # of the partition's 1.5 PB quota there, and occupancy follows the quota: not triggered.
    cern = out.split("replica on T2_CH_CERN")[1].split("replica on")[0]
    assert 'decided by line 30: dismiss "old and cold"' in cern
    assert "storage.occupancy = 63.33%" in cern
    assert "the storage is not triggered: kept for now" in cern
    assert 'line 25 protect "fresh": no match  [replica.age < 14d]' in cern
    assert "      replica.age = 180d 12h" in cern
    assert "      item.created = 2024-01-01T00:00:00Z (1y 181d ago)" in cern
    fnal = out.split("replica on T1_US_FNAL_Disk")[1]
    assert 'decided by line 25: protect "fresh" if replica.age < 14d' in fnal
    assert "effect: kept (protected)" in fnal
    assert 'decided by line 41 "AOD for analysis": 3 copies' in out
    paths = [(p, q) for p, q, _ in server.requests]
    assert paths[0] == ("/v1/items", "name=store/data/Run2024/AOD/1.root")
    assert ("/v1/storages", "") in paths and (f"/v1/items/{PARENT_OID}", "") in paths
    assert {auth for _, _, auth in server.requests} == {"Bearer s3cret"}


def test_explain_by_oid_with_flags(server: FakeServer, capsys: pytest.CaptureFixture) -> None:
    status = cli.main(["policy", "explain", "--policy", PHYSICS, OID, "--url", server.url,
                       "--token", "t", "--now", NOW_TEXT])
    out, _ = capsys.readouterr()
    assert status == 0 and "replica on T1_US_FNAL_Disk" in out
    assert server.requests[0][0] == f"/v1/items/{OID}"
    assert server.requests[0][2] == "Bearer t"


def test_explain_errors(server: FakeServer, capsys: pytest.CaptureFixture,
                        tmp_path: Path) -> None:
    assert cli.main(["policy", "explain", "--policy", PHYSICS, "--url", server.url,
                     "no/such/item"]) == 1
    assert capsys.readouterr().err == "dlm: error: no item named 'no/such/item'\n"
    missing = "ffffffff-ffff-4fff-bfff-ffffffff0000"
    assert cli.main(["policy", "explain", "--policy", PHYSICS, "--url", server.url,
                     missing]) == 1
    assert capsys.readouterr().err == f"dlm: error: no item with oid {missing}\n"
    bad = tmp_path / "bad.policy"
    bad.write_text('partition "P" { members item.sise > 1 }')
    assert cli.main(["policy", "explain", "--policy", str(bad), "--url", server.url, OID]) == 2
    assert capsys.readouterr().err.startswith(f"{bad}:1:30: unknown item attribute 'sise'")
    assert cli.main(["policy", "explain", "--policy", PHYSICS, "--url", server.url,
                     "--now", "someday", OID]) == 2
    assert "--now: not an ISO-8601 time" in capsys.readouterr().err


def test_explain_unreachable_server(capsys: pytest.CaptureFixture) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()   # nothing listens there now
    status = cli.main(["policy", "explain", "--policy", PHYSICS, "--url",
                       f"http://127.0.0.1:{port}", "x"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith(f"dlm: error: cannot reach the server at http://127.0.0.1:{port}")
    assert "Traceback" not in err


def test_explain_without_detox_section() -> None:
    from policies import load_policy_text
    from policies.cli import explain_json

    policy = load_policy_text('partition "P" {}\ndealer { phase SOLID copies 2 }', "p.policy")
    lines = explain_json(policy, ITEM, STORAGES, NOW)
    assert lines.count("  the policy has no detox section: never deleted by it") == 2
    assert any("decided by line 2 \"phase SOLID\": 2 copies" in line for line in lines)
