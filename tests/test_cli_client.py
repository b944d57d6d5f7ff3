"""What every client command shares: finding the server, errors as one line (never a traceback),
the config file; the sync client itself; and the real ``dlm`` process against ``dlm serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from inventory.cli import build_parser
from inventory.cli_common import settings
from inventory.client import ServerUnreachable, SyncClient
from inventory.errors import BadRequest, DLMError, NotFound
from tests.conftest import REPO, free_port

pytest_plugins = ["tests.cli_fixtures"]

CLIENT_COMMANDS = [
    ["storage", "ls"], ["storage", "show", "d"], ["ls"], ["show", "x"], ["rm", "x"],
    ["access", "x"], ["copy", "x", "d"], ["requests"], ["requests", "cancel", "1"], ["ops"],
    ["history"], ["token", "ls"], ["token", "rm", "t"], ["token", "create", "--role", "reader"],
    ["inject", "x"], ["storage", "set", "d", "--status", "offline"],
    ["storage", "add", "d", "--kind", "posix", "--root", "/d", "--capacity", "1"],
]


@pytest.mark.parametrize("argv", CLIENT_COMMANDS, ids=" ".join)
def test_every_command_says_when_the_server_is_down(dlm_offline, argv):
    message = dlm_offline.error(*argv)
    assert message.startswith("cannot reach the DLM server at http://127.0.0.1:")
    assert message.endswith("(is `dlm serve` running?)")


def test_url_flag_overrides_the_environment(dlm, cli_server):
    port = free_port()
    assert f":{port} " in dlm.error("storage", "ls", "--url", f"http://127.0.0.1:{port}")
    assert dlm.json("storage", "ls", "--url", cli_server.url) == []


def test_default_url_is_the_local_server(client_env):
    assert settings(build_parser().parse_args(["ls"])) == ("http://127.0.0.1:8642", "")


def test_config_file_errors_are_one_line(dlm, client_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DLM_CONFIG", str(tmp_path / "none.yaml"))
    assert dlm.error("ls", status=2) == f"config file {tmp_path / 'none.yaml'} does not exist"
    bad = tmp_path / "bad.yaml"
    bad.write_text("url: [unclosed\n")
    monkeypatch.setenv("DLM_CONFIG", str(bad))
    monkeypatch.delenv("DLM_URL")
    assert dlm.error("ls", status=2) == \
        f"{bad}:2:1: not valid YAML: expected ',' or ']', but got '<stream end>'"
    bad.write_text("url: http://x\npassword: y\n")
    assert dlm.error("ls", status=2) == f"{bad}: unknown setting(s) password; known: token, url"
    assert dlm.error("ls", "--config", str(tmp_path / "x.yaml"), status=2).startswith(
        "config file")


def test_argument_errors_are_argparse_usage_errors(dlm, capsys):
    with pytest.raises(SystemExit) as exc:
        dlm("ls", "--state", "SHINY")
    assert exc.value.code == 2
    assert "invalid choice: 'SHINY'" in capsys.readouterr().err


def test_help_of_every_subcommand(capsys):
    parser = build_parser()
    for argv in (["storage", "add"], ["storage", "set"], ["inject"], ["ls"], ["show"], ["rm"],
                 ["access"], ["copy"], ["requests"], ["requests", "cancel"], ["ops"],
                 ["history"], ["token", "create"], ["token", "ls"], ["token", "rm"]):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([*argv, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: dlm {' '.join(argv)}") and "--url URL" in out


def test_sync_client_calls_iterates_and_raises_server_errors(cli_server):
    with SyncClient(cli_server.url, token="") as client:
        assert client.health()["status"] == "ok"
        client.add_items({"item_name": f"s/{i}"} for i in range(250))
        assert len(list(client.find_items("s/*", limit=100))) == 250
        first = next(iter(client.find_items("s/*", limit=100)))  # left early: closed cleanly
        assert first["item_name"].startswith("s/")
        with pytest.raises(NotFound) as exc:
            client.storage("nowhere")
        assert exc.value.field == "name" and exc.value.status == 404
        with pytest.raises(BadRequest) as exc:
            client.add_item(item_name="/abs")
        assert exc.value.field == "item_name"
        with pytest.raises(AttributeError):
            client.no_such_endpoint  # noqa: B018
    client.close()  # twice is harmless


def test_sync_client_unreachable(client_env):
    with SyncClient(f"http://127.0.0.1:{free_port()}") as client, \
            pytest.raises(ServerUnreachable) as exc:
        client.health()
    assert exc.value.message.startswith("cannot reach the DLM server")


def run(*argv: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inventory.cli", *argv], cwd=REPO, env=env,
                          input=stdin, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_the_dlm_process_against_dlm_serve(server_process, client_env, tmp_path):
    server = server_process().start()
    env = {**os.environ, "DLM_URL": server.url}
    root = tmp_path / "d"
    (root / "p").mkdir(parents=True)
    for i in range(3000):  # the payloads: the server checks each one before registering
        (root / f"p/{i}").write_bytes(b"p" * i)
    done = run("storage", "add", "disk1", "--kind", "posix", "--root", str(root), "--capacity",
               "1 TB", env=env)
    assert done.returncode == 0, done.stderr
    lines = "".join(json.dumps({"item_name": f"p/{i}", "size": i}) + "\n" for i in range(3000))
    done = run("inject", "--from", "-", "--storage", "disk1", env=env, stdin=lines)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "registered 3,000 items from -"
    assert "3000" in done.stderr  # the bar counts items; no total is known for stdin
    done = run("ls", "p/*", "--limit", "5", "--json", env=env)
    assert len(json.loads(done.stdout)) == 5
    done = run("show", "p/none", env=env)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "dlm: error: no item named 'p/none'\n"
    server.stop()
    done = run("ls", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == (f"dlm: error: cannot reach the DLM server at {server.url} "
                           "(is `dlm serve` running?)\n")


def test_sync_client_covers_the_endpoints_the_commands_do_not(cli_server):
    """patch_item(s), record_accesses, exists, item_storages, children: the client's own API,
    which Detox, Dealer and Consistency use."""
    cli_server.add_disk()
    with SyncClient(cli_server.url, token="") as client:
        box = client.add_item(item_name="box", item_type="container")
        a = client.add_item(item_name="box/a", parent_oid=box["oid"], size=3)
        b = client.add_item(item_name="box/b", parent_oid=box["oid"], size=4)
        assert sorted(i["item_name"] for i in client.children(box["oid"])) == ["box/a", "box/b"]
        assert client.item(box["oid"])["size"] == 7

        assert client.exists("box/a") == {"exists": True, "ready": False, "oid": a["oid"]}
        assert client.exists("nothing")["exists"] is False

        done = client.patch_item(a["oid"], storage="disk1", metadata={"k": "v"})
        assert done["state"] == "READY" and done["metadata"] == {"k": "v"}
        assert client.item_storages(a["oid"]) == [
            {"name": "disk1", "state": "complete", "uri": "/data/disk1/box/a"}]
        assert client.exists("box/a", ready=True) == {"exists": True, "ready": True,
                                                      "oid": a["oid"]}
        with pytest.raises(DLMError) as exc:
            client.patch_item(b["oid"], state="DELETED")
        assert exc.value.status in (400, 409) and exc.value.field == "state"

        assert client.patch_items([{"oid": a["oid"], "target_phase": "GAS"},
                                   {"oid": b["oid"], "lifetime": 60}]) == 2
        assert client.item(a["oid"])["target_phase"] == "GAS"
        assert client.item(b["oid"])["expire_at"] is not None

        assert client.record_accesses([{"oid": a["oid"], "count": 2},
                                       {"oid": b["oid"], "count": 1}]) == 2
        assert client.item(a["oid"])["access_count"] == 2
        assert client.record_access(b["oid"], 4)["access_count"] == 5

        assert list(client.operations(kind="copy")) == []
        assert client.history(kind="dealer") == []


def test_a_server_url_without_scheme_works_and_a_bad_one_is_one_line(dlm, cli_server,
                                                                    monkeypatch):
    """``localhost:8642`` (no http://) is the commonest slip: it means http. A URL that is not
    http(s) is one error line and exit 2, never aiohttp's traceback."""
    bare = cli_server.url.removeprefix("http://")
    dlm("storage", "ls", "--url", bare)
    monkeypatch.setenv("DLM_URL", bare)
    dlm("storage", "ls")
    for bad in ("ftp://x", "http://[::1", "http://", " ", "", f"http://{bare}?x=1",
                f"http://{bare}#frag", f"http://user:pw@{bare}"):
        message = dlm.error("storage", "ls", "--url", bad, status=2)
        assert "server URL" in message and "--url, DLM_URL" in message, message
    with pytest.raises(ValueError, match="expected http:// or https://"):
        SyncClient("ftp://x")
