"""Fuzz: thousands of mutated policy files, each must load or raise PolicyError, nothing else.

Mutations are seeded (reproducible) and mix character-level damage (deletions, insertions,
duplicated spans) with token-level damage (keywords, operators, units and values of the language
dropped in the wrong place), which reaches far deeper into the checker than random bytes alone.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest

from policies import (
    ItemView,
    Policy,
    PolicyError,
    ReplicaView,
    StorageView,
    load_policy_text,
)
from tests.conftest import fuzz_budget

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "policies" / "examples").glob("*.policy"))

VOCABULARY = [
    "partition", "members", "storages", "quota", "default", "detox", "on", "when", "until",
    "protect", "delete", "dismiss", "ignore", "if", "order", "by", "ascending", "desc",
    "dealer", "phase", "copies", "place", "to", "from", "popularity", "balance", "limits",
    "half_life", "threshold", "max_copies", "spread", "volume_per_cycle", "target_occupancy",
    "max_pending", "storage_volume_per_cycle", "and", "or", "not", "in", "matches",
    "older_than", "newer_than", "true", "false", "none", "now", "==", "!=", "<", "<=", ">",
    ">=", "{", "}", "(", ")", ",", ".", "[", "]", '"', '"x"', '"*"', "/a(/", "/^a$/i", "7d",
    "90%", "500 TB", "2 GiB", "12h", "-1", "0", "1e999", "1_000", "2024-02-30", "2024-06-30",
    "item", "replica", "storage", "item.size", "item.metadata.x", "item.metadata[\"k\"]",
    "storage.occupancy", "replica.is_last_copy", "item.state", "READY", "SOLID", "complete",
    "draining", "item.age", "item.expire_at", "item.phase", "storage.attributes.t", "#", "\n",
    "@", "\\", "é", "\x00", "%", "TBs", "days",
]


def random_views(rng: random.Random) -> tuple[ItemView, ReplicaView, StorageView]:
    """Views with odd but legal values: none where allowed, odd metadata, empty storages."""
    pick = rng.choice
    now = 1_750_000_000.0
    item = ItemView(
        pick(["run1/raw.ms", "", "tmp-1", "/store/user/x"]),
        state=pick(["READY", "EXPIRED", "CORRUPTED"]), phase=pick(["PLASMA", "GAS", "SOLID"]),
        target_phase=pick(["GAS", "SOLID"]), size=rng.randrange(0, 10**13),
        created=now - rng.uniform(0, 10**8), expire_at=pick([None, now - 5, now + 5]),
        metadata=pick([{}, {"x": 1}, {"x": "a", "k": [1]}, {"x": {"y": None}}, {"t": "low"}]),
        copies=rng.randrange(0, 4), popularity=rng.uniform(0, 20),
        last_access=pick([None, now - 100.0]), parent=pick([None, "p"]),
        owner=pick([None, "o"]), group=pick([None, "analysis", "production"]),
    )
    replica = ReplicaView(pick(["disk-old", "a"]), state=pick(["complete", "copying"]),
                          size=item.size, created=now - rng.uniform(0, 10**7),
                          is_last_copy=pick([True, False]), expire_at=pick([None, now - 1]))
    storage = StorageView.build(
        pick(["disk-old", "a", "T2_CH_CERN"]), kind=pick(["posix", "s3"]),
        status=pick(["online", "draining"]), phase=pick(["GAS", "SOLID"]),
        attributes=pick([{}, {"tier": "T2", "facility": "site"}, {"tier": 3}]),
        capacity=pick([0, 10**15]), used=rng.randrange(0, 10**15))
    return item, replica, storage


def exercise(policy: Policy, rng: random.Random) -> None:
    """Run every compiled function of a loaded policy: none may raise."""
    now = 1_750_000_000.0
    for _ in range(3):
        item, replica, storage = random_views(rng)
        policy.partition.subpartition(item, replica, now)
        policy.partition.uses(storage)
        policy.partition.quota_for(storage)
        if policy.detox is not None:
            detox = policy.detox
            detox.applies_to(storage), detox.triggered(storage), detox.satisfied(storage)
            rule = detox.decide(item, replica, storage, now)
            detox.sort_key(item, replica, storage, now)
            for condition in detox.conditions:
                condition.explain(item, replica, storage, now)
            if rule.index >= 0:
                assert detox.conditions[rule.index](item, replica, storage, now)
        if policy.dealer is not None:
            policy.dealer.wanted_copies(item, now)
            policy.dealer.destinations(item, [storage], now)


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        if not text:
            text = rng.choice(VOCABULARY)
        op = rng.random()
        pos = rng.randrange(len(text) + 1)
        if op < 0.25:  # delete a span
            text = text[:pos] + text[pos + rng.randint(1, 12):]
        elif op < 0.6:  # insert a token of the language
            text = text[:pos] + " " + rng.choice(VOCABULARY) + " " + text[pos:]
        elif op < 0.75:  # insert random characters
            junk = "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randint(1, 5)))
            text = text[:pos] + junk + text[pos:]
        elif op < 0.9:  # replace a word with a token
            words = text.split(" ")
            i = rng.randrange(len(words))
            words[i] = rng.choice(VOCABULARY)
            text = " ".join(words)
        else:  # duplicate a line
            lines = text.split("\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
    return text


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_policies_load_or_raise_policy_error(seed: int) -> None:
    rng = random.Random(seed)
    sources = [p.read_text() for p in EXAMPLES]
    assert len(sources) >= 3
    loaded = failed = 0
    cases = fuzz_budget(1200)
    for i in range(cases):
        text = mutate(rng.choice(sources), rng)
        try:
            policy = load_policy_text(text, f"fuzz-{seed}-{i}.policy")
            loaded += 1
            exercise(policy, rng)
        except PolicyError as exc:
            failed += 1
            assert exc.diagnostics, text
            for diagnostic in exc.diagnostics:
                assert diagnostic.line >= 1 and diagnostic.column >= 1, (text, diagnostic)
                assert str(diagnostic).startswith(f"fuzz-{seed}-{i}.policy:"), diagnostic
                assert "Traceback" not in str(diagnostic)
        except Exception as exc:  # pragma: no cover - the assertion below is the failure
            pytest.fail(f"seed {seed} case {i}: {type(exc).__name__}: {exc}\n--- policy ---\n"
                        f"{text}")
    # Both outcomes occur: the mutations are neither all harmless nor all fatal.
    assert loaded > cases // 60 and failed > cases * 5 // 12, (loaded, failed)


def test_deep_nesting_is_a_policy_error() -> None:
    head = 'partition "P" {}\ndetox {\n  protect if '
    for depth in (40, 3000):
        text = head + "not (" * depth + "item.copies > 1" + ")" * depth + "\n  default dismiss\n}"
        with pytest.raises(PolicyError) as info:
            load_policy_text(text, "deep.policy")
        assert "nested" in str(info.value)


def test_random_bytes() -> None:
    rng = random.Random(7)
    for _ in range(300):
        text = "".join(chr(rng.randrange(0, 0x250)) for _ in range(rng.randint(0, 80)))
        with contextlib.suppress(PolicyError):
            load_policy_text(text, "bytes.policy")
