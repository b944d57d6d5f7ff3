"""Policy evaluation speed: a 12-rule Detox policy over 1,000,000 replicas.

The compiled policy is timed against a hand-written Python function that makes the same checks in
the same order and returns the same Rule objects, over the same synthetic views, in the same run.
Both must agree on every replica. Targets (issue 4): under 2 s, within 1.5x of the hand-written
function.

    .venv/bin/python benchmarks/bench_policy.py [--replicas N] [--seed S] [--repeat R]
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies import ItemView, ReplicaView, StorageView, load_policy_text

POLICY = """
partition "Bench" {
    members item.group in {"analysis", "production"}
}
detox {
    when  storage.occupancy > 90%
    until storage.occupancy < 85%
    ignore  "in flight"      if replica.state != complete
    protect "last copy"      if replica.is_last_copy
    protect "fresh"          if replica.age < 7d
    protect "pinned"         if item.metadata.pinned == true
    delete  "expired"        if item.expire_at < now
    delete  "temporary"      if replica.expire_at < now
    protect "raw on archive" if item.metadata.kind == "raw" and storage.phase == SOLID
    protect "popular"        if item.popularity > 10
    dismiss "corrupted"      if item.state == CORRUPTED
    protect "recently read"  if item.last_access newer_than 30d
    dismiss "big and cold"   if item.size > 100 GB and item.access_count < 3
    dismiss "scratch"        if item.name matches "tmp-*" or item.name matches /^test_[0-9]+$/
    default protect "keep"
}
"""

DAY = 86400.0


def hand_written(policy):
    """The same policy as a Python programmer would write it, sharing the Rule objects."""
    import re

    r = policy.detox.rules
    outside, default = policy.detox.outside, policy.detox.default
    tmp = re.compile(r"tmp\-.*\Z", re.S).match
    test = re.compile(r"^test_[0-9]+$").search
    groups = {"analysis", "production"}

    def decide(item, replica, storage, now):
        if item.group not in groups:
            return outside
        if replica.state != "complete":
            return r[0]
        if replica.is_last_copy:
            return r[1]
        if now - replica.created < 7 * DAY:
            return r[2]
        if item.metadata.get("pinned") is True:
            return r[3]
        if item.expire_at is not None and item.expire_at < now:
            return r[4]
        if replica.expire_at is not None and replica.expire_at < now:
            return r[5]
        if item.metadata.get("kind") == "raw" and storage.phase == "SOLID":
            return r[6]
        if item.popularity > 10:
            return r[7]
        if item.state == "CORRUPTED":
            return r[8]
        if item.last_access is not None and now - item.last_access < 30 * DAY:
            return r[9]
        if item.size > 100e9 and item.access_count < 3:
            return r[10]
        if tmp(item.name) or test(item.name):
            return r[11]
        return default

    return decide


def make_rows(n: int, seed: int, now: float):
    """n (item, replica, storage) rows: ~3 replicas per item over 20 storages, a mix that sends
    replicas to every rule (so no rule short-circuits the whole run)."""
    rng = random.Random(seed)
    storages = [
        StorageView.build(f"disk-{i:02d}", phase=rng.choice(["GAS", "LIQUID", "SOLID"]),
                          capacity=10**15, used=rng.randrange(5 * 10**14, 10**15))
        for i in range(20)
    ]
    kinds = ["raw", "reco", "aod", "user"]
    states = ["READY"] * 30 + ["CORRUPTED", "EXPIRED"]
    rows = []
    while len(rows) < n:
        copies = rng.choice((1, 2, 3, 3, 4))
        name = rng.choice(("tmp-", "test_", "run", "run", "run")) + str(len(rows))
        meta = {"kind": rng.choice(kinds)}
        if rng.random() < 0.02:
            meta["pinned"] = True
        item = ItemView(
            name, state=rng.choice(states), size=rng.randrange(10**6, 2 * 10**11),
            created=now - rng.uniform(0, 400) * DAY, metadata=meta, copies=copies,
            expire_at=now + rng.uniform(-30, 300) * DAY if rng.random() < 0.1 else None,
            popularity=rng.expovariate(0.3), access_count=rng.randrange(0, 20),
            last_access=now - rng.uniform(0, 120) * DAY if rng.random() < 0.7 else None,
            group=rng.choice(("analysis", "analysis", "production", "user")),
        )
        for storage in rng.sample(storages, copies):
            replica = ReplicaView(
                storage.name, state="complete" if rng.random() < 0.97 else "copying",
                size=item.size, created=now - rng.uniform(0, 200) * DAY,
                is_last_copy=copies == 1,
                expire_at=now - DAY if rng.random() < 0.01 else None)
            rows.append((item, replica, storage))
    return rows[:n]


def run(fn, rows, now) -> tuple[float, list]:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        out = [fn(item, replica, storage, now) for item, replica, storage in rows]
        return time.perf_counter() - start, out
    finally:
        gc.enable()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="best of R runs")
    args = parser.parse_args()

    now = 1_760_000_000.0
    t0 = time.perf_counter()
    policy = load_policy_text(POLICY, "bench.policy")
    load_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    rows = make_rows(args.replicas, args.seed, now)
    build_s = time.perf_counter() - t0

    compiled = policy.detox.decide
    manual = hand_written(policy)
    best = {"compiled policy": float("inf"), "hand-written Python": float("inf")}
    for _ in range(args.repeat):
        for name, fn in (("compiled policy", compiled), ("hand-written Python", manual)):
            seconds, out = run(fn, rows, now)
            best[name] = min(best[name], seconds)
            if name == "compiled policy":
                decided = out
            elif out != decided:
                bad = next(i for i, (a, b) in enumerate(zip(out, decided, strict=True)) if a != b)
                print(f"MISMATCH at row {bad}: {decided[bad]} vs {out[bad]}", file=sys.stderr)
                return 1

    counts: dict[str, int] = {}
    for rule in decided:
        counts[rule.label] = counts.get(rule.label, 0) + 1
    print(f"python {platform.python_version()}, {platform.machine()}, "
          f"replicas {len(rows):,}, seed {args.seed}, best of {args.repeat}")
    print(f"policy load+compile: {load_ms:.1f} ms; building the views: {build_s:.1f} s")
    print(f"{'evaluator':<22}{'time (s)':>10}{'replicas/s':>14}")
    for name, seconds in best.items():
        print(f"{name:<22}{seconds:>10.3f}{len(rows) / seconds:>14,.0f}")
    ratio = best["compiled policy"] / best["hand-written Python"]
    print(f"ratio compiled / hand-written: {ratio:.2f}x")
    print("decisions: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    ok = best["compiled policy"] < 2.0 and ratio <= 1.5
    print("targets (< 2 s, <= 1.5x):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
