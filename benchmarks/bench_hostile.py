"""Hostile clients against a running ``dlm serve``: does the server still answer everyone else?

Two attacks from issue 16 (Resources), each measured as ``/v1/health`` latency while it runs:

1. **Snapshots**: ``--snapshots`` (10) record snapshots at once, half of them read to the end,
   half never read past the status line (a tiny receive buffer, then nothing). Also measured:
   the server's RSS before, at its peak and after, how long the readers took, and how many more
   snapshots past ``limits.max_snapshots`` were refused (503).
2. **Slow clients**: ``--slow`` (2,000) connections, each sending its request head a byte a
   second, held for ``--slow-seconds``.

Target (issue 16): health p99 < 100 ms, RSS growth bounded by the settings. Not a test: it prints
a table. Example (the figures in docs/benchmarks.md)::

    nice -n 10 .venv/bin/python benchmarks/bench_hostile.py --replicas 1000000

The inventory is generated once into ``--workdir`` (SQLite, ``benchmarks/generate.py``) and
reused by later runs of the same size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import socket
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from benchmarks.generate import Spec, write_sqlite
from benchmarks.serving import dlm_server


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Health:
    """Polls /v1/health every ``every`` seconds on one keep-alive connection; latencies in ms
    (run in its own process: see Poller)."""

    def __init__(self, url: str, pid: int, every: float = 0.02) -> None:
        self.url, self.pid, self.every = url, pid, every
        self.latencies: list[float] = []
        self.failures = 0
        self.peak_rss = 0.0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    async with http.get(self.url + "/v1/health") as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    self.latencies.append((time.perf_counter() - started) * 1000)
                else:
                    self.failures += 1
                self.peak_rss = max(self.peak_rss, rss_mib(self.pid))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.every)

    def stop(self) -> None:
        self._stop.set()

    def row(self) -> dict[str, float]:
        lat = sorted(self.latencies) or [float("nan")]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return {"requests": len(self.latencies), "failed": self.failures,
                "p50_ms": statistics.median(lat), "p99_ms": p99, "max_ms": lat[-1]}


class Poller:
    """A ``Health`` in a process of its own (``--poll``), so what this process does meanwhile
    (reading snapshots, dripping bytes) does not delay its requests."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.proc: asyncio.subprocess.Process | None = None
        self.result: dict[str, float] = {}

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--poll", self.url, str(self.pid),
            stdout=asyncio.subprocess.PIPE)
        await self.proc.stdout.readline()  # "polling"

    async def stop(self) -> dict[str, float]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = await self.proc.communicate()
        self.result = json.loads(out)
        return self.result


async def poll_until_signalled(url: str, pid: int) -> None:
    health = Health(url, pid)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, health.stop)
    print("polling", flush=True)
    await health.run()
    print(json.dumps({**health.row(), "peak_rss": health.peak_rss}), flush=True)


async def measure(url: str, pid: int, seconds: float) -> dict[str, float]:
    poller = Poller(url, pid)
    await poller.start()
    await asyncio.sleep(seconds)
    return await poller.stop()


def stalled(port: int, path: str) -> socket.socket | int:
    """A snapshot request that reads the status line and then nothing; or the status code."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    sock.settimeout(60)
    status = int(sock.recv(12)[9:12])
    if status != 200:
        sock.close()
        return status
    return sock


async def read_snapshot(http: aiohttp.ClientSession, url: str) -> tuple[int, int]:
    async with http.get(url + "/v1/snapshot") as resp:
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
        return resp.status, size


async def snapshots(url: str, port: int, pid: int, count: int, extra: int) -> dict:
    baseline = await measure(url, pid, 3)
    rss_before = rss_mib(pid)
    poller = Poller(url, pid)
    await poller.start()
    started = time.perf_counter()
    unread = [await asyncio.to_thread(stalled, port, "/v1/snapshot") for _ in range(count // 2)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as http:
        readers = [asyncio.create_task(read_snapshot(http, url))
                   for _ in range(count - len(unread))]
        await asyncio.sleep(0.5)
        refused = [await asyncio.to_thread(stalled, port, "/v1/snapshot") for _ in range(extra)]
        results = await asyncio.gather(*readers)
    read_seconds = time.perf_counter() - started
    during = await poller.stop()
    rss_peak = during["peak_rss"]
    for sock in unread + refused:
        if isinstance(sock, socket.socket):
            sock.close()
    await asyncio.sleep(2)
    return {"baseline": baseline, "during": during, "rss_before": rss_before,
            "rss_peak": rss_peak, "rss_after": rss_mib(pid), "read_seconds": read_seconds,
            "read": [r for r in results if r[0] == 200],
            "unread_held": sum(isinstance(s, socket.socket) for s in unread),
            "refused": sum(s == 503 for s in refused), "extra": extra}


async def slow_clients(url: str, port: int, pid: int, count: int, seconds: float) -> dict:
    def connect(n: int) -> list[socket.socket]:
        out = []
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.setblocking(False)
            out.append(sock)
        return out

    socks: list[socket.socket] = []
    for lo in range(0, count, 100):  # in batches: the listen backlog is 128
        socks += await asyncio.to_thread(connect, min(100, count - lo))
    head = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 10_000
    poller = Poller(url, pid)
    await poller.start()
    closed = 0
    for step in range(int(seconds)):
        for sock in socks:
            if sock.fileno() < 0:
                continue
            try:
                sock.send(head[step:step + 1])  # a byte a second per connection
            except (BrokenPipeError, ConnectionResetError):
                sock.close()
                closed += 1
            except BlockingIOError:
                pass
        await asyncio.sleep(1)
    during = await poller.stop()
    for sock in socks:
        sock.close()
    return {"during": during, "connections": count, "closed_by_server": closed,
            "rss_peak": during["peak_rss"]}


def config(workdir: Path, args: argparse.Namespace) -> Path:
    path = workdir / "hostile.yaml"
    limits = {"max_snapshots": args.max_snapshots,
              "max_connections": max(args.slow + 200, 4096)}
    path.write_text("limits:\n" + "".join(f"  {k}: {v}\n" for k, v in limits.items()))
    return path


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    items = args.replicas // 2
    db = workdir / f"hostile-{items}.sqlite"
    if not db.exists():
        print(f"generating {items} items x 2 replicas into {db} ...", file=sys.stderr)
        await asyncio.to_thread(write_sqlite, str(db), Spec(items=items))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this side holds --slow sockets
    async with dlm_server(f"sqlite:{db}", workdir, "--config",
                          str(config(workdir, args))) as server:
        pid = server.proc.pid
        port = int(server.url.rsplit(":", 1)[1])
        snap = await snapshots(server.url, port, pid, args.snapshots, args.extra)
        slow = await slow_clients(server.url, port, pid, args.slow, args.slow_seconds)
    rows = [("idle", snap["baseline"]), (f"{args.snapshots} snapshots, half unread",
                                         snap["during"]),
            (f"{args.slow} slow connections", slow["during"])]
    print(f"\n{args.replicas:,} replicas; limits.max_snapshots={args.max_snapshots}; "
          f"{len(snap['read'])} read in {snap['read_seconds']:.1f} s "
          f"({snap['read'][0][1] / 2**20:.0f} MiB each); {snap['unread_held']} unread held; "
          f"{snap['refused']} of {snap['extra']} more refused 503")
    print(f"{'/v1/health while':34} {'requests':>8} {'failed':>6} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8}")
    for name, r in rows:
        print(f"{name:34} {r['requests']:8d} {r['failed']:6d} {r['p50_ms']:8.1f} "
              f"{r['p99_ms']:8.1f} {r['max_ms']:8.1f}")
    print(f"server RSS MiB: before snapshots {snap['rss_before']:.0f}, peak "
          f"{snap['rss_peak']:.0f}, 2 s after {snap['rss_after']:.0f}; during slow clients "
          f"peak {slow['rss_peak']:.0f}; slow connections closed by the server within "
          f"{args.slow_seconds:g} s: {slow['closed_by_server']}")
    if args.json:
        print(json.dumps({"snapshots": snap, "slow": slow}, default=str))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--poll"]:  # the health poller's own process (Poller)
        asyncio.run(poll_until_signalled(sys.argv[2], int(sys.argv[3])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", type=int, default=100_000, help="2 per item (100000)")
    p.add_argument("--snapshots", type=int, default=10, help="at once, half unread (10)")
    p.add_argument("--max-snapshots", type=int, default=10,
                   help="the server's limits.max_snapshots (10: every snapshot streams)")
    p.add_argument("--extra", type=int, default=2, help="snapshots past the bound (2)")
    p.add_argument("--slow", type=int, default=2000, help="slow connections (2000)")
    p.add_argument("--slow-seconds", type=float, default=10, help="held this long (10)")
    p.add_argument("--workdir", default="/tmp/dlm-bench-hostile")
    p.add_argument("--json", action="store_true", help="also print the raw figures")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
