"""``dlm serve`` as the benchmarks run it: a subprocess on a free loopback port, its output in a
log file, stopped with SIGTERM (then SIGKILL) whatever happens to the benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=out, cwd=REPO)


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def wait_healthy(url: str, proc: subprocess.Popen, log: Path,
                       timeout: float = 120) -> dict[str, Any]:
    """The server's ``/v1/health`` once it answers 200 (it loads the inventory first)."""
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n"
                                   + log.read_text()[-3000:])
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/v1/health") as resp:
                    if resp.status == 200:
                        return await resp.json()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not healthy after {timeout} s")
            await asyncio.sleep(0.1)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    health: dict[str, Any] = field(default_factory=dict)  # /v1/health when it became ready
    ready_seconds: float = 0.0  # from start to healthy


@contextlib.asynccontextmanager
async def dlm_server(db_url: str, workdir: Path, *extra: str,
                     timeout: float = 600) -> AsyncIterator[Server]:
    """``dlm serve --db DB_URL`` until the block ends; ``extra`` are more flags."""
    port = free_port()
    log = workdir / f"serve-{port}.log"
    started = time.perf_counter()
    proc = start([sys.executable, "-m", "inventory.cli", "serve", "--port", str(port),
                  "--data-dir", str(workdir / "data"), "--db", db_url, "--log-level", "warning",
                  *extra], log)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        server.health = await wait_healthy(server.url, proc, log, timeout)
        server.ready_seconds = time.perf_counter() - started
        yield server
    finally:
        stop(proc)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process now (``VmRSS`` in ``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


# The steady-state runs (``--cycles N``): the server runs no file operation (the queued ones
# stay queued until the benchmark ends them) and keeps finished ones in memory for a few seconds.
STEADY_RETENTION = 3.0


def steady_config(workdir: Path) -> list[str]:
    """``dlm serve`` flags of a steady-state run: no engine workers, a short ops retention."""
    config = workdir / "steady.yaml"
    config.write_text("fileops:\n  workers: 0\n")
    return ["--config", str(config), "--ops-retention", f"{STEADY_RETENTION:g}s"]


async def cancel_queued(client: Any, concurrency: int = 64) -> int:
    """Cancel every queued operation, ``concurrency`` at a time (the writer commits them in
    groups): what a cycle queued ends, its replicas go back to what they were, so the next
    cycle finds the same work again. Returns how many were cancelled."""
    ids = [op["id"] async for op in client.operations(state="queued", limit=10_000)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for op_id in ids:
        queue.put_nowait(op_id)

    async def worker() -> None:
        while not queue.empty():
            await client.cancel_operation(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(ids)


def print_steady(cycles: list[dict[str, Any]], work: str) -> None:
    """Each cycle's time and the server's RSS after it (``work``: what the cycle applied, as
    a column title), and the two steady-state ratios of issue 17."""
    print(f"\n| cycle | end to end | snapshot | plan | apply | server CPU apply | {work} "
          "| server RSS after |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, c in enumerate(cycles, 1):
        print(f"| {n} | {c['total']:.2f} s | {c['snapshot']:.2f} s | {c['plan']:.2f} s "
              f"| {c['apply']:.2f} s | {c['cpu_apply']:.1f} s | {c['work']:,} "
              f"| {c['rss'] / 2**20:,.0f} MiB |")
    first, last = cycles[0], cycles[-1]
    tenth = cycles[min(9, len(cycles) - 1)]
    print(f"\ncycle {min(10, len(cycles))} / cycle 1: {tenth['total'] / first['total']:.2f}x "
          f"(target <= 1.2x); RSS after cycle {len(cycles)} / after cycle 1: "
          f"{last['rss'] / first['rss']:.3f} (target <= 1.10); every cycle had work: "
          + ("yes" if all(c["work"] for c in cycles) else "NO"))
