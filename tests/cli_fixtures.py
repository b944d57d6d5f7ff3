"""Fixtures for the ``dlm`` client commands: a real server in a background thread and a runner of
``inventory.cli.main`` that captures what a user would see.

``main()`` runs its own event loop (through ``SyncClient``), so the tests are plain sync functions
and the server cannot share their loop: it runs on a loop of its own in a daemon thread, which is
much faster to start than a ``dlm serve`` subprocess and still the real application on a real
port. Test modules load these with ``pytest_plugins = ["tests.cli_fixtures"]``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from inventory.cli import main
from inventory.client import Client
from tests.conftest import InProcessServer, free_port

T = TypeVar("T")


class ThreadedServer:
    """The in-process server on its own event loop in a background thread."""

    def __init__(self, db_url: str, data_dir: Path, **config: Any) -> None:
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="dlm-test-server")
        self._thread.start()
        self.db_url = db_url
        self._server = InProcessServer(db_url, data_dir, **config)
        self.call(self._server.start())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop (setup through the async client)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def api(self, fn: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
        """``server.api(lambda c: c.add_storage(...))``: one call of the async client."""
        return self.call(fn(self._server.client))

    def restart(self) -> None:
        """Stop and start on the same database: what is loaded at start (operations, cycles)
        can then be seeded in the database in between."""
        self.call(self._server.restart())

    def add_disk(self, name: str = "disk1", **spec: Any) -> dict[str, Any]:
        """A storage at /data/NAME, which the server cannot reach: ``verify_ingest`` is off,
        so the commands under test register items there without payloads (verified ingest has
        its own tests, tests/test_ingest.py and the ones giving a real ``root``)."""
        body = {"name": name, "kind": "posix", "root": f"/data/{name}", "capacity": "10 TB",
                "phase": "GAS", "config": {"verify_ingest": False}, **spec}
        return self.api(lambda c: c.add_storage(**body))

    @property
    def url(self) -> str:
        return self._server.url.rstrip("/")

    def stop(self) -> None:
        try:
            self.call(self._server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()


@pytest.fixture
def cli_server(tmp_path: Path) -> Iterator[ThreadedServer]:
    # No file-operation engine: operations stay as the commands leave them, so the tests of
    # `dlm ops` see exactly what they queued (the engine has its own tests).
    server = ThreadedServer(f"sqlite:{tmp_path / 'inventory.sqlite'}", tmp_path / "data",
                            fileops=None)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Result:
    status: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


class Runner:
    """``dlm(...)`` as a user types it; fails the test if the status is not the expected one,
    and checks that nothing ever prints a traceback."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *argv: str, status: int = 0) -> Result:
        self._capsys.readouterr()
        code = main(list(argv))
        out, err = self._capsys.readouterr()
        result = Result(code, out, err)
        assert "Traceback" not in err
        assert code == status, f"dlm {' '.join(argv)} exited {code}, wanted {status}:\n{err}"
        if status:  # one error line, last (a progress bar erased before it may precede it)
            assert err.endswith("\n") and err.splitlines()[-1].startswith("dlm: error: "), err
        return result

    def json(self, *argv: str) -> Any:
        return self(*argv, "--json").json

    def error(self, *argv: str, status: int = 1) -> str:
        """The one error line of a failing command."""
        err = self(*argv, status=status).err
        lines = [line for line in err.splitlines() if line.startswith("dlm: error: ")]
        assert len(lines) == 1, err
        return lines[0].removeprefix("dlm: error: ")


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No server settings leak in from the developer's environment or home directory."""
    home = tmp_path / "home"
    home.mkdir()
    for var in ("DLM_URL", "DLM_TOKEN", "DLM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home


@pytest.fixture
def dlm(cli_server: ThreadedServer, client_env: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Runner:
    """The CLI pointed at ``cli_server`` through DLM_URL."""
    monkeypatch.setenv("DLM_URL", cli_server.url)
    return Runner(capsys)


@pytest.fixture
def dlm_offline(client_env: Path, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> Runner:
    """The CLI pointed at a port where nothing listens."""
    monkeypatch.setenv("DLM_URL", f"http://127.0.0.1:{free_port()}")
    return Runner(capsys)
