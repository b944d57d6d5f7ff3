"""Consistency benchmarks (issue 8), in one run:

1. **diff**: ``consistency.diff.diff`` of a listing of N entries against N replicas of the same
   storage (default 1,000,000 each), excluding the listing I/O. Paths are the synthetic
   inventory's names (``benchmarks/generate.py``: SKA and CMS style, ~75 characters), built as
   separate string objects on each side as a real listing and a real snapshot give them, with
   0.1% missing, 0.1% orphans and 0.05% size mismatches planted. Target: under 5 s.
2. **listing**: a POSIX tree of F files (default 100,000 in 1,000 directories) listed by
   ``consistency.listing.walk_posix`` (path, size, mtime of every file) and by ``find`` of the
   same tree in the same run: ``find -type f -printf '%s %T@ %p\\n'`` (the same information) and
   plain ``find -type f`` (names only: no stat per file). ``PosixBackend.list`` (sorted, checked
   paths) is timed too, for reference. Target: >= 0.5x find's speed.

Contenders take turns in each of ``--repeat`` rounds and the best round of each is reported: the
machine is shared and noisy, and taking turns spreads other load evenly. Wall and CPU time are
both given, with the load average, so a slow run on a busy machine can be told from a slow diff.

    .venv/bin/python benchmarks/bench_consistency.py [--entries 1000000] [--files 100000]
        [--repeat 3] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.generate import _name
from consistency.diff import DiffOptions, Known, diff
from consistency.listing import walk_posix
from inventory.storage.base import Entry
from inventory.storage.posix import PosixBackend

OLD = 1.7e9  # every object is older than the grace period
STARTED = 1.8e9


def build_inputs(n: int, seed: int = 8) -> tuple[list[Entry], list[Known], dict[str, int]]:
    rng = random.Random(seed)
    names = [_name(rng, i, f"2025{1 + i % 12:02d}{1 + i % 28:02d}") for i in range(n)]
    sizes = [rng.randrange(1, 50 << 30) for _ in range(n)]
    missing = set(rng.sample(range(n), n // 1000))
    wrong = set(rng.sample(range(n), n // 2000)) - missing
    entries = []
    for i, (name, size) in enumerate(zip(names, sizes, strict=True)):
        if i in missing:
            continue
        # a new string object per side, as a listing and a snapshot each make their own
        entries.append(Entry("".join(name), size + (1 if i in wrong else 0), OLD))
    for j in range(n // 1000):
        entries.append(Entry(f"dark/{j:07d}/stray.bin", 1234, OLD))
    rng.shuffle(entries)
    known = [Known(name, f"{i:032x}", "complete", size, "0a0b0c0d", OLD)
             for i, (name, size) in enumerate(zip(names, sizes, strict=True))]
    return entries, known, {"missing": len(missing), "orphan": n // 1000,
                            "size_mismatch": len(wrong)}


def bench_diff(n: int, repeat: int) -> dict[str, Any]:
    t = time.perf_counter()
    entries, known, planted = build_inputs(n)
    build = time.perf_counter() - t
    runs = []
    for _ in range(repeat):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        result = diff(entries, known, DiffOptions(STARTED))
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
        found = {k: len(v) for k, v in result.findings.items() if k != "checksum_mismatch"}
        assert found == planted, (found, planted)
        del result
    best = min(runs)
    return {"entries": len(entries), "replicas": len(known), "planted": planted,
            "build_inputs_s": round(build, 2), "wall_s": round(best[0], 3),
            "cpu_s": round(best[1], 3), "all_runs_wall_s": [round(w, 3) for w, _ in runs],
            "target_s": 5.0, "meets_target": best[0] < 5.0}


def make_tree(root: Path, files: int, per_dir: int = 100) -> None:
    marker = root / f".complete-{files}"
    if marker.exists():
        return
    for d in range((files + per_dir - 1) // per_dir):
        directory = root / f"run{d // 100:03d}" / f"block{d:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        for f in range(min(per_dir, files - d * per_dir)):
            with open(directory / f"file{f:03d}.dat", "wb") as fh:
                fh.write(b"x" * (f % 13))
    marker.write_text("")


def _find(root: Path, *extra: str) -> Callable[[], int]:
    def run() -> int:
        out = subprocess.run(["find", str(root), "-type", "f", *extra],
                             capture_output=True, check=True).stdout
        return out.count(b"\n")
    return run


def _walk(root: Path) -> Callable[[], int]:
    def run() -> int:
        return sum(len(batch) for batch in walk_posix(str(root)))
    return run


def _backend_list(root: Path) -> Callable[[], int]:
    async def go() -> int:
        backend = PosixBackend(str(root))
        try:
            return sum([1 async for _ in backend.list("")])
        finally:
            await backend.close()
    return lambda: asyncio.run(go())


def bench_listing(root: Path, files: int, repeat: int) -> dict[str, Any]:
    make_tree(root, files)
    contenders = {
        "walk_posix": _walk(root),
        "find -printf '%s %T@ %p'": _find(root, "-printf", "%s %T@ %p\n"),
        "find (names only)": _find(root),
        "PosixBackend.list": _backend_list(root),
    }
    best: dict[str, float] = {}
    for run in contenders.values():  # warm the dentry and inode caches once
        run()
    for _ in range(repeat):
        for name, run in contenders.items():
            t = time.perf_counter()
            count = run()
            took = time.perf_counter() - t
            assert count == files + 1, (name, count)  # the files and the tree's marker
            best[name] = min(best.get(name, took), took)
    walk = best["walk_posix"]
    same_info = best["find -printf '%s %T@ %p'"]
    names_only = best["find (names only)"]
    return {
        "files": files,
        "seconds": {k: round(v, 4) for k, v in best.items()},
        "files_per_s": {k: round(files / v) for k, v in best.items()},
        "speed_vs_find_printf": round(same_info / walk, 2),
        "speed_vs_find_names_only": round(names_only / walk, 2),
        "target": ">= 0.5x find",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", help="where to build the tree (kept; default a temporary "
                                      "directory, removed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                           "load_average_before": os.getloadavg()}
    out["diff"] = bench_diff(args.entries, args.repeat)
    tmp = None
    root = Path(args.dir) if args.dir else Path(tmp := tempfile.mkdtemp(prefix="dlm-bench-"))
    try:
        out["listing"] = bench_listing(root, args.files, args.repeat)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    out["load_average_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    d, listing = out["diff"], out["listing"]
    print(f"diff: {d['entries']:,} listed vs {d['replicas']:,} replicas: {d['wall_s']:.2f} s wall,"
          f" {d['cpu_s']:.2f} s CPU (target < 5 s: {'met' if d['meets_target'] else 'MISSED'});"
          f" planted {d['planted']} found")
    print(f"listing of {listing['files']:,} files (best of {args.repeat}):")
    for name, seconds in listing["seconds"].items():
        print(f"  {name:<28} {seconds:8.3f} s  {listing['files_per_s'][name]:>10,} files/s")
    print(f"  walk_posix speed: {listing['speed_vs_find_printf']:.2f}x find -printf (same "
          f"information), {listing['speed_vs_find_names_only']:.2f}x plain find (names only)")
    print(f"load average before {out['load_average_before']}, after {out['load_average_after']}"
          f", {out['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
