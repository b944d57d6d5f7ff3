"""Shared fixtures: real databases (a fresh PostgreSQL database per test), in-process and
subprocess servers. Under CI=true a missing PostgreSQL fails the test instead of skipping it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import uvloop
from aiohttp.test_utils import TestServer

from inventory.client import Client
from inventory.server.app import ServerConfig, make_app
from inventory.store import open_store

CI = os.environ.get("CI") == "true"
# Fuzz and property tests judge a quarter of their examples in the everyday run (developers and
# CI: the suite's time is in the README); DLM_FUZZ_LONG=1 runs the full counts, for a change to
# the policy language, the planners or the inventory model (docs/contributing.md).
FUZZ_LONG = os.environ.get("DLM_FUZZ_LONG") == "1"
PG_ADMIN_URL = os.environ.get("DLM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parent.parent


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}


def fuzz_budget(long: int) -> int:
    """How many examples a fuzz or property test runs: ``long`` under DLM_FUZZ_LONG=1, else a
    quarter of it (at least 20). Seeds stay fixed, so an everyday run is the long run's start."""
    return long if FUZZ_LONG else max(20, long // 4)


def missing_service(what: str) -> None:
    """Skip on a laptop without the service; fail in CI, where it must be there."""
    if CI:
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} not available")


def _pg_url_for(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def _admin(sql: str, *args: object) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


def pg_admin(sql: str, *args: object) -> None:
    """Run one statement on the admin database (outside any test's event loop)."""
    asyncio.run(_admin(sql, *args))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"dlm_test_{uuid.uuid4().hex[:12]}"
    try:
        pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        missing_service(f"PostgreSQL at {PG_ADMIN_URL} ({exc})")
    try:
        yield _pg_url_for(name)
    finally:
        pg_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                 name)
        pg_admin(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A database URL for each backend: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'inventory.sqlite'}"
    return request.getfixturevalue("pg_url")


class InProcessServer:
    """The real application on a loopback port, restartable against the same database."""

    def __init__(self, db_url: str, data_dir: Path, **config: object) -> None:
        self.db_url = db_url
        self.data_dir = data_dir
        self.config = config  # ServerConfig fields, e.g. fileops=FileOpsLimits(...)
        self._server: TestServer | None = None
        self.client: Client | None = None

    async def start(self) -> InProcessServer:
        store = open_store(self.db_url, str(self.data_dir))
        self._server = TestServer(make_app(ServerConfig(store=store, **self.config)),
                                  host="127.0.0.1")
        await self._server.start_server()
        self.client = Client(str(self._server.make_url("")), token="")
        return self

    @property
    def url(self) -> str:
        return str(self._server.make_url(""))

    @property
    def app(self):
        return self._server.app

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def restart(self) -> InProcessServer:
        await self.stop()
        return await self.start()


@pytest.fixture
async def server(db_url, tmp_path) -> AsyncIterator[InProcessServer]:
    """A running server on each backend; ``server.client`` talks to it."""
    srv = InProcessServer(db_url, tmp_path)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def sqlite_server(tmp_path) -> AsyncIterator[InProcessServer]:
    """A running server on the embedded default only, for tests of the API surface."""
    srv = InProcessServer(f"sqlite:{tmp_path / 'inventory.sqlite'}", tmp_path)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def http(sqlite_server) -> AsyncIterator[aiohttp.ClientSession]:
    """A raw HTTP session on the SQLite server, for malformed requests."""
    async with aiohttp.ClientSession(base_url=sqlite_server.url) as session:
        yield session


# ----------------------------------------------------------------------- subprocess servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """``dlm serve`` as its own process, so tests can kill it with SIGKILL."""

    args: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it while it runs
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, cwd=REPO)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n"
                                   + self.log_path.read_text()[-4000:])
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                       timeout=0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("server did not start:\n" + self.log_path.read_text()[-4000:])

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server_process(tmp_path) -> Iterator:
    """Factory: ``server_process(db_url)`` starts ``dlm serve`` in a subprocess."""
    started: list[ServerProcess] = []

    def make(db_url: str | None = None, *extra: str) -> ServerProcess:
        port = free_port()
        args = [sys.executable, "-m", "inventory.cli", "serve", "--port", str(port),
                "--data-dir", str(tmp_path / "data"), *extra]
        if db_url:
            args += ["--db", db_url]
        proc = ServerProcess(args, port, tmp_path / f"server-{port}.log")
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.kill()


async def wait_healthy(url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + "/v1/health") as resp:
                    if resp.status == 200:
                        return await resp.json()
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not healthy after {timeout}s")
            await asyncio.sleep(0.05)


async def settle(client: Client, timeout: float = 30) -> list[dict]:
    """Wait until no operation is queued or running; the operations, finished."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        ops = await client.request("GET", "/v1/operations", params={"limit": "10000"})
        if all(o["state"] in ("done", "failed", "cancelled") for o in ops["operations"]):
            return ops["operations"]
        assert asyncio.get_running_loop().time() < deadline, ops
        await asyncio.sleep(0.05)


def adler(data: bytes) -> str:
    """The adler32 of ``data`` as DLM records it (8 lowercase hex digits)."""
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
