"""Read workers: extra processes that answer item reads from their own copy of the inventory.

One Python process answers about 10k lookups a second on one core, whatever the machine has.
``dlm serve --workers N`` keeps the primary (the only writer) and starts N-1 read workers on the
same host and port (SO_REUSEPORT: the kernel spreads connections over the processes). A worker
loads the inventory from the database, follows the primary's change feed over a private Unix
socket, answers item queries itself and forwards everything else to the primary.

Reads stay read-your-writes across processes: the primary publishes its committed version in a
small shared file before it acknowledges a write; a worker answers only once it has applied at
least that version (it waits briefly for the feed, else forwards the request to the primary).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mmap
import os
import shutil
import signal
import struct
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("dlm.workers")

_LAYOUT = struct.Struct("<qq")  # committed version, token generation
WORKER_ENV = "DLM_READ_WORKER"  # the worker's settings (JSON), secrets included: not argv
READY_LINE = b"serving"  # what a worker prints on its stdout once it listens


class SharedVersion:
    """The primary's committed version and token generation, in a file both sides map.

    Two aligned 8-byte words written by one process: a reader sees each word whole. A reader
    may see a new version with an old generation or the reverse; both only make a worker
    forward a request it could have answered, never answer a stale one.
    """

    def __init__(self, path: str, *, create: bool = False) -> None:
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, _LAYOUT.size)
            self._map = mmap.mmap(fd, _LAYOUT.size)
        finally:
            os.close(fd)

    def publish(self, version: int, token_generation: int) -> None:
        _LAYOUT.pack_into(self._map, 0, version, token_generation)

    def read(self) -> tuple[int, int]:
        return _LAYOUT.unpack_from(self._map, 0)

    def close(self) -> None:
        self._map.close()


@dataclass(slots=True)
class WorkerSpec:
    """What a read worker needs to start, passed as JSON in its environment."""

    db: str | None
    data_dir: str
    host: str
    port: int
    socket: str  # the primary's private Unix socket (feed and forwarded requests)
    shared: str  # the SharedVersion file
    token: str  # the internal token the worker sends to the primary
    config_tokens: list[dict[str, Any]] = field(default_factory=list)
    loopback: bool = True
    log_level: str = "info"
    index: int = 1
    limits: dict[str, Any] = field(default_factory=dict)  # the primary's ``limits:``

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


class RuntimeDir:
    """A private directory (0700) for the primary's Unix socket and the shared version file."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="dlm-serve-")
        self.socket = os.path.join(self.path, "primary.sock")
        self.shared = os.path.join(self.path, "version")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass(slots=True)
class WorkerStatus:
    index: int
    pid: int | None = None
    serving: bool = False  # loaded and listening (the worker said so on its stdout)
    starts: int = 0
    last_exit: int | None = None


class ReadWorkers:
    """Starts the read workers and starts a worker again when it dies (with a growing pause,
    so a worker that cannot start does not spin)."""

    def __init__(self, count: int, spec: WorkerSpec) -> None:
        self.spec = spec
        self.status = [WorkerStatus(i) for i in range(1, count + 1)]
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(s)) for s in self.status]

    async def _keep(self, status: WorkerStatus) -> None:
        pause = 1.0
        while not self._stopping:
            spec = WorkerSpec(**{**asdict(self.spec), "index": status.index})
            env = {**os.environ, WORKER_ENV: spec.to_env()}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "inventory.server.read_worker", env=env,
                stdout=asyncio.subprocess.PIPE)
            self._procs[status.index] = proc
            status.pid, status.starts = proc.pid, status.starts + 1
            log.info("read worker started", extra={"worker": status.index, "pid": proc.pid})
            started = asyncio.get_running_loop().time()
            async for line in proc.stdout:
                if line.strip() == READY_LINE:
                    status.serving = True
            status.last_exit = await proc.wait()
            status.pid, status.serving = None, False
            if self._stopping:
                return
            ran = asyncio.get_running_loop().time() - started
            pause = 1.0 if ran > 60 else min(pause * 2, 30.0)
            log.warning("read worker exited; starting it again", extra={
                "worker": status.index, "exit_code": status.last_exit,
                "ran_seconds": round(ran, 1), "restart_in": pause})
            await asyncio.sleep(pause)

    def describe(self) -> list[dict[str, Any]]:
        return [{"worker": s.index, "pid": s.pid, "running": s.pid is not None,
                 "serving": s.serving, "starts": s.starts, "last_exit": s.last_exit}
                for s in self.status]

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self._procs.values():
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
