"""`dlm serve` as a user runs it: defaults, config file, and errors without tracebacks."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import aiohttp
import asyncpg
import pytest

import schema
from inventory.cli import main
from tests.conftest import free_port, wait_healthy


def run_dlm(*args, cwd, timeout=30):
    return subprocess.run([sys.executable, "-m", "inventory.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


async def test_serve_defaults_create_the_data_dir_and_print_the_url(tmp_path, server_process):
    port = free_port()
    proc = server_process(None)
    proc.args = [sys.executable, "-m", "inventory.cli", "serve", "--port", str(port)]
    proc.port = port
    # run in an empty directory: the default data dir is ./dlm-data
    proc.proc = subprocess.Popen(proc.args, cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
    line = proc.proc.stdout.readline()
    assert f"http://127.0.0.1:{port}" in line
    health = await wait_healthy(proc.url)
    assert health["db"]["backend"] == "sqlite"
    assert (tmp_path / "dlm-data" / "inventory.sqlite").exists()
    proc.stop()
    assert proc.proc.returncode == 0


async def test_config_file_sets_port_and_data_dir(tmp_path, server_process):
    port = free_port()
    config = tmp_path / "dlm.yaml"
    config.write_text(f"port: {port}\ndata_dir: {tmp_path / 'elsewhere'}\nlog_level: warning\n")
    proc = server_process(None)
    proc.args = [sys.executable, "-m", "inventory.cli", "serve", "--config", str(config)]
    proc.port = port
    proc.start()
    await wait_healthy(proc.url)
    assert (tmp_path / "elsewhere" / "inventory.sqlite").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("port: [1]\n", "port: expected an integer"),
    ("colour: red\n", "unknown setting(s) colour"),
    ("- a\n- b\n", "expected a mapping"),
    ("port: : :\n", "not valid YAML"),
    ("max_body: tiny\n", "max_body: expected bytes"),
    ("max_plan_body: 10\n", "max_plan_body: expected at least 1 KiB"),
    ("max_body: [1]\n", "max_body: expected bytes"),
    ("workers: 0\n", "workers: expected a number of processes"),
])
def test_bad_config_is_one_line_on_stderr(tmp_path, content, message):
    config = tmp_path / "dlm.yaml"
    config.write_text(content)
    result = run_dlm("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_and_bad_db_url(tmp_path, capsys):
    assert main(["serve", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    assert main(["serve", "--db", "mysql://x"]) == 2
    assert "unsupported --db URL" in capsys.readouterr().err


def test_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_dlm("serve", "--port", str(port), "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_postgresql_is_a_clear_error(tmp_path):
    port = free_port()
    result = run_dlm("serve", "--db", f"postgresql://postgres@127.0.0.1:{port}/x",
                     "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot connect" in result.stderr and "Traceback" not in result.stderr


def test_sqlite_newer_schema_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "inventory.sqlite") as conn:
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (99)")
    result = run_dlm("serve", "--data-dir", str(data), "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2
    known = schema.latest_version("sqlite")
    assert f"schema version 99, newer than the {known} this dlm knows" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.postgres
async def test_postgresql_newer_schema_is_refused(tmp_path, pg_url):
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
    await conn.execute("INSERT INTO schema_version VALUES (42)")
    await conn.close()
    result = run_dlm("serve", "--db", pg_url, "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2
    assert "schema version 42, newer than" in result.stderr
    assert "upgrade dlm" in result.stderr


def test_migrations_are_numbered_without_gaps_for_both_dialects():
    for dialect in schema.DIALECTS:
        found = schema.migrations(dialect)
        assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert schema.latest_version("sqlite") == schema.latest_version("postgresql")
    with pytest.raises(ValueError):
        schema.migrations("oracle")


def test_no_command_and_unknown_command_exit_non_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["frobnicate"])


async def test_body_limits_from_the_config(tmp_path, server_process):
    """``max_body`` bounds every request; ``max_plan_body`` only the cycle plans, which carry
    every decision of a cycle and outgrow the general limit past a few million replicas."""
    port = free_port()
    config = tmp_path / "dlm.yaml"
    config.write_text(f"port: {port}\ndata_dir: {tmp_path / 'data'}\nmax_body: 2 KiB\n"
                      f"max_plan_body: 100 KiB\n")
    proc = server_process(None)
    proc.args = [sys.executable, "-m", "inventory.cli", "serve", "--config", str(config)]
    proc.port = port
    proc.start()
    await wait_healthy(proc.url)
    junk = b"{" + b" " * 50_000 + b"}"
    async with aiohttp.ClientSession(proc.url) as http:
        async with http.post("/v1/items", data=junk,
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["field"] == "body"
        # the same body is within a plan's limit: decoded, and refused for what it is
        async with http.post("/v1/cycles/detox", data=junk,
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400, await resp.text()
        async with http.post("/v1/cycles/dealer", data=junk * 3,
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 413
            assert "102400 bytes" in (await resp.json())["error"]["message"]
        async with http.get("/v1/history") as resp:
            assert (await resp.json())["cycles"] == []
