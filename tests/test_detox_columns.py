"""The column planner plans exactly what the record planner plans: the same expirations, the
same deletions in the same order, the same per-storage outcomes and the same decisions, on random
inventories and random policies (hypothesis), and on the golden cases the record planner has."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detox.columns import needed_fields, plan_columns, supports
from detox.planner import plan_cycle
from inventory import columns, model
from inventory.pins import Pin
from policies import load_policy_text
from tests.conftest import fuzz_budget

NOW = 1_800_000_000.0
DAY = 86400.0
PHASES = list(model.PHASES)
GROUPS = [None, "ska", "cms", "astro"]
RULES = [
    'protect "fresh" if replica.age < 1d',
    'protect "popular" if item.popularity > 3',
    'delete "junk" if item.name matches "junk/*"',
    'delete "regex" if item.name matches /^data\\/1[0-9]$/ and replica.storage != "s1"',
    'dismiss "big" if item.size > 500 B',
    'protect "solid" if item.target_phase == SOLID',
    'delete "old" if item.created older_than 30d',
    'ignore "busy" if replica.state != complete',
    'dismiss "cold" if item.access_count < 2',
    'protect "pinned" if item.metadata.pinned == true',
    'protect "raw" if item.metadata.kind == "raw" and storage.phase >= LIQUID',
    'dismiss "bad run" if item.metadata.run > 100 or item.metadata.run in {3, 4}',
    'protect "cms" if item.group in {"cms"}',
    'dismiss "no group" if item.group == none',
    'protect "read lately" if item.last_access newer_than 2d',
    'delete "temporary" if replica.expire_at < now',
    'protect "expiring later" if item.expire_at > now',
    'protect "single" if replica.is_last_copy',
    'dismiss "low phase" if item.phase < LIQUID',
    'protect "copies" if item.copies >= 3 and not (replica.size < 100 B)',
    'protect "region" if storage.attributes.region == "eu"',
    'dismiss "owned" if item.owner matches "user*"',
    'protect "corrupted" if item.state == CORRUPTED',
    'dismiss "versions" if item.version > 1',
    'protect "containers" if item.type == container',
    'protect "full" if storage.occupancy > 95%',
    'protect "child" if item.parent matches "data/*"',
    'dismiss "orphan" if item.parent == none and item.name matches /[3-5]$/',
]
ORDERS = ["item.access_count ascending", "replica.size descending", "item.created ascending",
          "item.popularity ascending, replica.size descending", "item.last_access descending",
          "item.target_phase descending, item.copies ascending", "storage.occupancy ascending",
          "item.expire_at ascending", "replica.age descending"]


@st.composite
def inventories(draw):
    n_storages = draw(st.integers(1, 5))
    storages = [[sid, f"s{sid}", draw(st.sampled_from(["posix", "s3"])), f"/s{sid}",
                 draw(st.integers(100, 4000)), draw(st.sampled_from(PHASES)), "online",
                 draw(st.sampled_from([{}, {"region": "eu"}, {"region": "us"}])), {}, 0.0]
                for sid in range(1, n_storages + 1)]
    items, replicas = {}, []
    for i in range(draw(st.integers(0, 30))):
        oid = model.format_uuid(model.new_oid())
        state = draw(st.sampled_from(["READY"] * 6 + ["EXPIRED", "CORRUPTED", "DELETED"]))
        expire = draw(st.sampled_from([None, None, NOW - 10, NOW + 1000]))
        size = draw(st.sampled_from([None, 0, *range(1, 900, 37)]))
        metadata = draw(st.sampled_from([
            None, None, {}, {"pinned": True}, {"pinned": 1}, {"kind": "raw"},
            {"run": 150, "kind": "raw"}, {"run": 3}, {"run": "x"}, {"run": [1, 2]},
            {"run": None}]))
        access = draw(st.integers(0, 10))
        last = draw(st.sampled_from([None, NOW - 5, NOW - 3 * DAY, NOW + 10]))
        parent = draw(st.sampled_from([None, None, *list(items)[-3:]]))
        items[oid] = [oid, draw(st.sampled_from(["junk/", "data/", "data/1"])) + str(i),
                      draw(st.integers(1, 3)), draw(st.sampled_from(["file", "container"])),
                      state, draw(st.sampled_from(PHASES)), size, None, None, metadata, parent,
                      NOW - draw(st.integers(0, 90)) * DAY, expire, access, last,
                      draw(st.sampled_from([None, "user1", "admin"])),
                      draw(st.sampled_from(GROUPS))]
        for sid in draw(st.permutations(range(1, n_storages + 1)))[
                :draw(st.integers(0, n_storages))]:
            rstate = draw(st.sampled_from(["complete"] * 5 + ["pending", "corrupt", "missing",
                                                               "deleting", "copying"]))
            rsize = draw(st.sampled_from([size, size, None]))
            replicas.append([model.format_uuid(model.parse_uuid(oid) | sid), oid, sid, None,
                             rstate, rsize, None, NOW - draw(st.integers(0, 5)) * DAY,
                             draw(st.sampled_from([None, None, NOW - 1, NOW + 1])), None])
    return storages, items, replicas, draw(pins_of(storages, items))


@st.composite
def pins_of(draw, storages, items):
    """Copies copy requests pin (``Snapshot.pins()``): some holding, some expired, a request
    often pinning several copies (one ``Pin`` for all, as a container's request does); copies
    with no replica too."""
    requests = [Pin(draw(st.sampled_from([NOW + 1000, NOW + 1000, NOW - 10, NOW])), request,
                    draw(st.sampled_from([None, "ann"]))) for request in range(1, 5)]
    pins = {}
    for oid in items:
        for s in storages:
            if draw(st.integers(0, 3)) == 0:
                pins[oid, s[0]] = draw(st.sampled_from(requests))
    return pins


@st.composite
def policies(draw):
    high = draw(st.integers(10, 100))
    low = draw(st.integers(1, high))
    rules = draw(st.lists(st.sampled_from(RULES), max_size=7, unique=True))
    default = draw(st.sampled_from(["dismiss", "protect", "ignore", "delete"]))
    order = draw(st.sampled_from(ORDERS))
    members = draw(st.sampled_from(["", 'members item.group in {"ska", "cms"}',
                                    "members replica.state != missing"]))
    quota = draw(st.sampled_from(["", "quota default 60%", 'quota "s1" 500 B']))
    on = draw(st.sampled_from(["", 'on storage.name != "s2"']))
    half_life = draw(st.sampled_from(["", "dealer {\n    popularity {\n        half_life 1d\n"
                                          "        threshold 5\n        max_copies 3\n"
                                          "    }\n}\n"]))
    body = "\n    ".join(rules)
    text = (f'partition "all" {{\n    {members}\n    {quota}\n}}\ndetox {{\n    {on}\n'
            f"    when storage.occupancy > {high}%\n"
            f"    until storage.occupancy < {low}%\n    {body}\n    default {default}\n"
            f"    order by {order}\n}}\n{half_life}")
    return load_policy_text(text, "random.policy")


def both(policy, storages, items, replicas, pins=None):
    expected = plan_cycle(policy, storages, items, replicas, NOW, pins)
    snap = columns.from_records(1, storages, items, replicas, pins)
    got = plan_columns(policy, snap, NOW)
    return expected, got


def assert_same_plan(expected, got) -> None:
    assert got.expirations == expected.expirations
    assert [(d.oid, d.storage_id, d.size, d.rule, d.line) for d in got.deletions] == \
        [(d.oid, d.storage_id, d.size, d.rule, d.line) for d in expected.deletions]
    assert [s.to_json() | {"protected": s.protected_bytes} for s in got.storages] == \
        [s.to_json() | {"protected": s.protected_bytes} for s in expected.storages]
    assert sorted(got.decisions) == sorted(expected.decisions)
    assert got.summary() == expected.summary()
    assert got.pinned == expected.pinned


@settings(max_examples=fuzz_budget(400), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(inventories(), policies())
def test_the_column_planner_plans_what_the_record_planner_plans(inventory, policy):
    assert supports(policy)
    expected, got = both(policy, *inventory)
    assert_same_plan(expected, got)


def test_the_benchmark_policy_is_planned_on_columns_and_asks_for_names_and_metadata():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_detox import POLICY

    policy = load_policy_text(POLICY, "bench.policy")
    assert supports(policy)
    assert needed_fields(policy) == ["name", "metadata"]


def test_policies_the_columns_cannot_express_go_to_the_record_planner():
    text = ('partition "all" { }\ndetox {\n    protect "x" if replica.size > item.size\n'
            '    default dismiss\n}\n')
    assert not supports(load_policy_text(text, "two-attributes.policy"))
    text = ('partition "all" { }\ndetox {\n    default dismiss\n}\n')
    policy = load_policy_text(text, "plain.policy")
    assert supports(policy) and needed_fields(policy) == []


def test_an_empty_inventory_plans_nothing():
    policy = load_policy_text('partition "all" { }\ndetox {\n    default dismiss\n}\n', "p")
    expected, got = both(policy, [[1, "s1", "posix", "/s1", 100, "GAS", "online", {}, {}, 0.0]],
                         {}, [])
    assert_same_plan(expected, got)
    assert len(got.decisions) == 0
