"""The command line as a careless or unlucky operator meets it (issue 16, "Start-up and
command-line errors"): every command runs as its own process, as typed in a shell, and every
failure is one line on stderr with the exit status docs/cli.md gives, never a traceback.

The exit rule, for every command: 0 done; 1 the server (or a storage) refused or could not be
reached; 2 the command line, a config or input file is wrong (nothing was sent), or ``dlm
serve`` could not start. Output into a closed pipe (``dlm ls | head``) ends quietly with 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from inventory.cli_ops import cycle_summary
from tests.conftest import REPO, free_port, pg_admin, wait_healthy

if TYPE_CHECKING:
    from tests.cli_fixtures import ThreadedServer

pytest_plugins = ["tests.cli_fixtures"]

POLICY = str(REPO / "policies" / "examples" / "physics.policy")


def dlm(*argv: str, cwd: Path, stdout: Any = subprocess.PIPE,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``dlm ARGV...`` in its own process, with the test's environment (client_env). The
    timeout only guards against a hang (a loaded machine starts Python slowly)."""
    return subprocess.run([sys.executable, "-m", "inventory.cli", *argv], cwd=cwd,
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout)


def error_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The one error line of a failed command (structured JSON log lines of ``dlm serve`` may
    come before it), after checking the exit status and that no traceback was printed."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1 and lines[0].startswith("dlm: error: "), result.stderr
    return lines[0].removeprefix("dlm: error: ")


@pytest.fixture
def served(cli_server: ThreadedServer, client_env: Path, tmp_path: Path) -> ThreadedServer:
    """The threaded server with a real POSIX storage (for consistency) and one item on it."""
    root = tmp_path / "disk1"
    (root / "obs").mkdir(parents=True)
    (root / "obs" / "a").write_bytes(b"a")  # on disk as registered: consistency finds all well
    cli_server.add_disk("disk1", root=str(root))
    cli_server.api(lambda c: c.add_item(item_name="obs/a", storage="disk1", size=1))
    return cli_server


# ------------------------------------------------------------------------ dlm serve start-up

@pytest.mark.parametrize("port", ["84636", "65536", "0", "-1"])
def test_serve_refuses_a_port_outside_1_to_65535(tmp_path, port):
    # 84636 used to be announced as is while the server listened on 84636 % 65536 = 19100
    result = dlm("serve", "--port", port, "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert error_line(result, 2) == f"--port: expected a TCP port from 1 to 65535, got {port}"
    assert not (tmp_path / "data").exists()


def test_serve_refuses_a_config_port_outside_1_to_65535(tmp_path):
    config = tmp_path / "dlm.yaml"
    config.write_text("port: 70000\n")
    result = dlm("serve", "--config", str(config), cwd=tmp_path)
    assert error_line(result, 2) == \
        f"{config}: port: expected a TCP port from 1 to 65535, got 70000"


def test_serve_says_the_data_dir_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data = blocker / "data"
    result = dlm("serve", "--data-dir", str(data), "--port", str(free_port()), cwd=tmp_path)
    message = error_line(result, 2)
    assert f"cannot create the data directory {data}" in message, message
    assert "Not a directory" in message and "listen" not in message


def test_serve_says_a_corrupt_sqlite_file_is_not_a_database(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "inventory.sqlite").write_bytes(bytes(range(256)) * 64)
    result = dlm("serve", "--data-dir", str(data), "--port", str(free_port()), cwd=tmp_path)
    message = error_line(result, 2)
    assert f"{data / 'inventory.sqlite'} is not a usable SQLite database" in message, message
    assert "move it away" in message


def _with(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}" if database
                                     else parts.path))


@pytest.mark.postgres
def test_serve_names_a_missing_postgres_database_and_creates_it_when_asked(
        tmp_path, pg_url, server_process):
    # pg_url proves the server is there (and fails under CI=true when it is not)
    name = f"dlm_test_new_{uuid.uuid4().hex[:10]}"
    url = _with(pg_url, database=name)
    try:
        result = dlm("serve", "--db", url, "--port", str(free_port()), cwd=tmp_path)
        message = error_line(result, 2)
        assert f'database "{name}" does not exist' in message, message
        assert f"`createdb {name}`" in message and "`dlm serve --create-db`" in message
        srv = server_process(url, "--create-db").start()
        health = asyncio.run(wait_healthy(srv.url))
        assert health["db"]["backend"] == "postgresql"
        srv.stop()
        # a second --create-db on the existing database is no error
        srv = server_process(url, "--create-db").start()
        asyncio.run(wait_healthy(srv.url))
        srv.stop()
    finally:
        pg_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                 name)
        pg_admin(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.mark.postgres
def test_serve_names_an_unknown_postgres_role(tmp_path, pg_url):
    url = _with(pg_url, user="dlm_no_such_role")
    for extra in ((), ("--create-db",)):
        result = dlm("serve", "--db", url, "--port", str(free_port()), *extra,
                     cwd=tmp_path)
        message = error_line(result, 2)
        assert 'role "dlm_no_such_role" does not exist' in message, message
        assert "`createuser dlm_no_such_role`" in message


# ------------------------------------------------------------------------ finding the server

# Every command family that talks to a server, with arguments that succeed on `served`.
TALKERS = {
    "ls": ["ls"],
    "show": ["show", "obs/a"],
    "storage ls": ["storage", "ls"],
    "history": ["history"],
    "ops": ["ops"],
    "token ls": ["token", "ls"],
    "detox": ["detox", "--policy", POLICY, "--dry-run"],
    "dealer": ["dealer", "--policy", POLICY, "--dry-run"],
    "policy explain": ["policy", "explain", "--policy", POLICY, "obs/a"],
    "consistency": ["consistency", "disk1", "--no-store"],
}


@pytest.mark.parametrize("command", TALKERS)
def test_a_url_without_scheme_means_http_for_every_command(served, tmp_path, command):
    host_port = served.url.removeprefix("http://")
    result = dlm(*TALKERS[command], "--url", host_port, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", TALKERS)
def test_a_url_that_is_not_http_is_a_usage_error_for_every_command(client_env, tmp_path,
                                                                   command):
    result = dlm(*TALKERS[command], "--url", "ftp://dlm.example.org", cwd=tmp_path)
    assert "expected http:// or https://" in error_line(result, 2)


# ------------------------------------------------------------------------ one exit rule

@pytest.mark.parametrize("command", TALKERS)
def test_an_unreachable_server_is_exit_1_for_every_command(client_env, tmp_path, command):
    # port 9 (discard): nobody serves it, whereas a port just found free may be taken again
    result = dlm(*TALKERS[command], "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert "cannot reach" in error_line(result, 1)


@pytest.mark.parametrize("command", TALKERS)
def test_a_refused_token_is_exit_1_for_every_command(served, tmp_path, command):
    served.api(lambda c: c.add_token("operator", name="admin"))  # open mode ends
    result = dlm(*TALKERS[command], "--url", served.url, "--token", "dlm_not_a_token",
                 cwd=tmp_path)
    message = error_line(result, 1)
    assert "token" in message, message


@pytest.mark.parametrize("command", ["detox", "dealer", "policy explain"])
def test_a_broken_policy_file_is_exit_2_and_nothing_is_sent(client_env, tmp_path, command):
    bad = tmp_path / "bad.policy"
    bad.write_text('partition "P" { members item.sise > 1 }\n')
    argv = [str(bad) if arg == POLICY else arg for arg in TALKERS[command]]
    # nothing listens at the URL: a status 2 proves the policy was judged before any request
    result = dlm(*argv, "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{bad}:1:") and "Traceback" not in result.stderr


# ------------------------------------------------------------------------ closed pipes

def into_closed_pipe(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe nobody reads any more: ``dlm ... | head`` once head has left."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return dlm(*argv, cwd=cwd, stdout=write_end)
    finally:
        os.close(write_end)


def test_policy_check_into_a_closed_pipe_exits_quietly(client_env, tmp_path):
    examples = sorted(str(p) for p in (REPO / "policies" / "examples").glob("*.policy"))
    result = into_closed_pipe("policy", "check", *examples, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("command", [*TALKERS, "ls --json", "consistency report"])
def test_every_command_into_a_closed_pipe_exits_quietly(served, tmp_path, command):
    argv = {"ls --json": ["ls", "--json"],
            "consistency report": ["consistency", "disk1", "--no-store", "--report", "-"]}
    result = into_closed_pipe(*argv.get(command) or TALKERS[command], "--url", served.url,
                              cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


# ------------------------------------------------------------------------ what commands print

def test_history_prints_a_readable_summary_per_cycle(served, tmp_path):
    (tmp_path / "disk1" / "obs" / "old").write_bytes(b"o")
    old = served.api(lambda c: c.add_item(item_name="obs/old", storage="disk1", size=1))
    served.api(lambda c: c.delete_item(old["oid"]))  # EXPIRED: Detox deletes its copy
    for argv in (["detox", "--policy", POLICY], ["dealer", "--policy", POLICY],
                 ["consistency", "disk1"]):
        result = dlm(*argv, "--url", served.url, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    result = dlm("history", "--url", served.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "KIND", "STARTED", "ENDED", "SUMMARY"]
    summaries = {line.split()[1]: line for line in lines[1:]}
    assert set(summaries) == {"detox", "dealer", "consistency"}
    for line in summaries.values():
        assert not any(c in line for c in "{}[]'"), line  # no Python dicts or lists
    assert "Physics: 1 deletions (1 B), 0 expirations" in summaries["detox"]
    assert "Physics: 0 copies (0 B), 0 requests done" in summaries["dealer"]
    assert "disk1: " in summaries["consistency"] and " ok" in summaries["consistency"]
    one = dlm("history", summaries["detox"].split()[0], "--url", served.url, cwd=tmp_path)
    summary = next(line for line in one.stdout.splitlines() if line.startswith("summary"))
    assert summary.split(None, 1)[1] == "Physics: 1 deletions (1 B), 0 expirations"


@pytest.mark.parametrize(("kind", "summary", "line"), [
    ("detox", None, "-"),
    ("detox", {}, "-"),
    ("detox", {"deletions": 2, "deleted_bytes": 2000, "expirations": 1,
               "unsatisfied": ["disk1"]},
     "2 deletions (2.0 kB), 1 expirations; unsatisfied: disk1; not applied"),
    ("dealer", {"copies": 3, "bytes": 3, "unmet": {"no space": 2}, "dropped": {"changed": 1},
                "applied": {"copies": 2, "bytes": 2, "requests_done": 0}},
     "2 copies (2 B), 0 requests done; 2 unmet; 1 dropped at apply"),
    ("consistency", {"storage": {"name": "s"}, "counts": {"ok": {"count": 5},
                                                           "missing": {"count": 2}},
                     "safety": "too much missing"},
     "s: 5 ok, 2 missing; safety limit held, nothing fixed"),
    ("consistency", {"counts": "garbage"}, "0 ok"),
    ("rebalance", {"moved": 4, "detail": {"x": 1}}, "moved=4"),
    ("detox", {"deleted": 3, "kept": 7, "by": {"x": 1}}, "deleted=3, kept=7"),  # other shape
])
def test_cycle_summaries_of_any_shape_are_one_plain_line(kind, summary, line):
    assert cycle_summary(kind, summary) == line


def test_show_finds_a_deleted_item_and_says_so(served, tmp_path):
    served.api(lambda c: c.add_item(item_name="obs/gone"))  # no replica: rm deletes at once
    result = dlm("rm", "obs/gone", "--url", served.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "is now DELETED; it had no replica" in result.stdout
    listed = dlm("ls", "--state", "DELETED", "--url", served.url, cwd=tmp_path)
    assert "obs/gone" in listed.stdout
    shown = dlm("show", "obs/gone", "--url", served.url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert any(line.split() == ["state", "DELETED"] for line in shown.stdout.splitlines())
    as_json = json.loads(dlm("show", "obs/gone", "--json", "--url", served.url,
                             cwd=tmp_path).stdout)
    assert (as_json["item_name"], as_json["state"]) == ("obs/gone", "DELETED")
    # a live version wins over a deleted one of the same name
    served.api(lambda c: c.add_item(item_name="obs/gone", storage="disk1", size=1))
    live = json.loads(dlm("show", "obs/gone", "--json", "--url", served.url,
                          cwd=tmp_path).stdout)
    assert (live["item_version"], live["state"]) == (2, "READY")
    missing = dlm("show", "obs/never", "--url", served.url, cwd=tmp_path)
    assert error_line(missing, 1) == "no item named 'obs/never'"


@pytest.mark.parametrize("fmt", ["html", "csv", "json"])
def test_consistency_format_without_report_writes_a_file_and_says_where(served, tmp_path, fmt):
    work = tmp_path / "work"
    work.mkdir()
    result = dlm("consistency", "disk1", "--format", fmt, "--url", served.url, cwd=work)
    assert result.returncode == 0, result.stderr
    written = list(work.glob(f"consistency-disk1-*.{fmt}"))
    assert len(written) == 1, list(work.iterdir())
    assert f"report written to {written[0].name}" in result.stdout
    text = written[0].read_text()
    if fmt == "html":
        assert "<html" in text.lower()
    elif fmt == "json":
        assert json.loads(text)["storage"]["name"] == "disk1"
    else:
        assert text.splitlines()[0].startswith("storage,")  # the header: no finding here
    # without --format and --report, no file: the summary (and the stored report) only
    again = dlm("consistency", "disk1", "--url", served.url, cwd=work)
    assert again.returncode == 0 and "report written" not in again.stdout
    assert len(list(work.iterdir())) == 1
