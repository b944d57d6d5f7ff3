"""The Dealer's column planner plans what the record planner plans: the same copies (item,
destination, source, size, rule), requests done, unmet counts and storage projections, on random
inventories, copy requests and policies (hypothesis). Both run ``dealer.dealing.Dealing``; what
differs is how the per-item facts are read (records one by one, or arrays), which is what these
tests hold equal."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dealer.columns import needed_fields, plan_columns, supports
from dealer.planner import plan_cycle
from inventory import columns, model
from policies import load_policy_text
from tests.conftest import fuzz_budget

NOW = 1_800_000_000.0
DAY = 86400.0
PHASES = list(model.PHASES)

PLACES = [
    'place "raw" if item.metadata.kind == "raw" copies 2',
    'place "big" if item.size > 300 B copies 3 to storage.phase >= LIQUID',
    'place "eu" if item.name matches "^data/" copies 2 to storage.attributes.region == "eu"',
    'place "hot" if item.popularity > 2 copies 3 from storage.kind == "posix"',
    'place "kids" if item.parent != none copies 1',
    'place "team" if item.group in {"ska", "cms"} and item.copies < 2 copies 2',
    'place "gas" if item.phase == GAS or item.version > 2 copies 2 '
    "to storage.occupancy < 60% and storage.name != \"s1\"",
]
PHASE_ENTRIES = [
    "phase GAS copies 1",
    "phase LIQUID copies 2",
    "phase LIQUID copies 2 to storage.phase >= GAS",
    "phase SOLID copies 2",
    "phase SOLID copies 3 from storage.phase == SOLID",
    'phase SOLID copies 2 to storage.kind == "s3" or item.size < 100 B',
]
LIMITS = ["", "target_occupancy 80%", "target_occupancy 95%", "max_pending 10%",
          "volume_per_cycle 3 kB", "storage_volume_per_cycle 1 kB"]


@st.composite
def inventories(draw):
    n_storages = draw(st.integers(1, 6))
    storages = [[sid, f"s{sid}", draw(st.sampled_from(["posix", "s3"])), f"/s{sid}",
                 draw(st.sampled_from([0, 1500, *range(3000, 30000, 1700)])),
                 draw(st.sampled_from(PHASES[1:])),
                 draw(st.sampled_from(["online"] * 5 + ["draining", "offline", "disabled"])),
                 draw(st.sampled_from([{}, {"region": "eu"}, {"region": "us"}])), {}, 0.0]
                for sid in range(1, n_storages + 1)]
    items, replicas = {}, []
    for i in range(draw(st.integers(0, 30))):
        oid = model.format_uuid(model.new_oid())
        state = draw(st.sampled_from(["READY"] * 7 + ["EXPIRED", "INITIALISED"]))
        size = draw(st.sampled_from([None, 0, *range(1, 900, 41)]))
        metadata = draw(st.sampled_from([None, None, {}, {"kind": "raw"}, {"kind": 3}]))
        access = draw(st.integers(0, 12))
        last = draw(st.sampled_from([None, NOW - 5, NOW - 3 * DAY, NOW + 10]))
        parent = draw(st.sampled_from([None, None, *list(items)[-3:]]))
        items[oid] = [oid, draw(st.sampled_from(["junk/", "data/", "data/1"])) + str(i),
                      draw(st.integers(1, 3)),
                      draw(st.sampled_from(["file"] * 5 + ["container"])),
                      state, draw(st.sampled_from(PHASES)), size, None, None, metadata, parent,
                      NOW - draw(st.integers(0, 90)) * DAY, None, access, last,
                      draw(st.sampled_from([None, "user1"])),
                      draw(st.sampled_from([None, "ska", "cms", "lofar"]))]
        for sid in draw(st.permutations(range(1, n_storages + 1)))[
                :draw(st.integers(0, n_storages))]:
            rstate = draw(st.sampled_from(["complete"] * 6 + ["pending", "copying", "corrupt",
                                                               "missing", "deleting"]))
            rsize = draw(st.sampled_from([size, size, None, 0]))
            replicas.append([model.format_uuid(model.parse_uuid(oid) | sid), oid, sid, None,
                             rstate, rsize, None, NOW - DAY, None, None])
    oids = list(items)
    requests = [{"id": n + 1, "oid": draw(st.sampled_from(oids)),
                 "storage": f"s{draw(st.integers(1, n_storages + 1))}"}
                for n in range(draw(st.integers(0, 3)) if oids else 0)]
    reliability = {f"s{sid}": {"success_rate": draw(st.sampled_from([None, 1.0, 0.5])),
                               "throughput": draw(st.sampled_from([None, 1e6, 5e6]))}
                   for sid in range(1, n_storages + 1)}
    return storages, items, replicas, requests, reliability


@st.composite
def policies(draw):
    places = draw(st.lists(st.sampled_from(PLACES), max_size=3, unique=True))
    phases = {}
    for entry in draw(st.lists(st.sampled_from(PHASE_ENTRIES), min_size=1, max_size=5)):
        phases.setdefault(entry.split()[1], entry)
    members = draw(st.sampled_from(["", 'members item.group in {"ska", "cms"}',
                                    "members item.size > 50 B"]))
    quota = draw(st.sampled_from(["", "quota default 60%", 'quota "s1" 500 B']))
    uses = draw(st.sampled_from(["", 'storages storage.name != "s2"']))
    popularity = draw(st.sampled_from([
        "", "popularity { half_life 1d threshold 3 max_copies 3 }",
        'popularity { half_life 2d threshold 2 max_copies 4 to storage.kind == "posix" }']))
    balance = draw(st.sampled_from(["", "balance { spread 10% volume_per_cycle 2 kB }",
                                    "balance { spread 5% }"]))
    limits = {}
    for entry in draw(st.lists(st.sampled_from(LIMITS), max_size=2)):
        limits.setdefault(entry.split(" ")[0], entry)
    text = (f'partition "all" {{\n    {members}\n    {uses}\n    {quota}\n}}\ndealer {{\n    '
            + "\n    ".join([*places, *phases.values(), popularity, balance])
            + "\n    limits {\n        " + "\n        ".join(limits.values()) + "\n    }\n}\n")
    return load_policy_text(text, "random.policy")


def both(policy, storages, items, replicas, requests, reliability):
    expected = plan_cycle(policy, storages, items, replicas, NOW, reliability=reliability,
                          requests=requests)
    snap = columns.from_records(1, storages, items, replicas)
    got = plan_columns(policy, snap, NOW, reliability=reliability, requests=requests)
    return expected, got


def copies(plan):
    return [(c.oid, c.target_id, c.source_id, c.size, c.reason, c.line) for c in plan.copies]


@settings(max_examples=fuzz_budget(500), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(inventories(), policies())
def test_the_column_planner_plans_what_the_record_planner_plans(inventory, policy):
    assert supports(policy)
    expected, got = both(policy, *inventory)
    assert copies(got) == copies(expected)
    assert got.requests_done == expected.requests_done
    assert got.unmet == expected.unmet
    assert got.storages == expected.storages
    assert got.summary() == expected.summary()


def test_the_benchmark_policy_is_planned_on_columns_without_optional_fields():
    policy = load_policy_text('partition "all" { }\ndealer {\n    phase GAS copies 1\n'
                              "    phase SOLID copies 2\n    limits { target_occupancy 90% }\n}\n",
                              "bench.policy")
    assert supports(policy)
    assert needed_fields(policy) == []


def test_names_and_metadata_are_asked_for_when_a_condition_reads_them():
    policy = load_policy_text(
        'partition "all" { }\ndealer {\n'
        '    place "raw" if item.metadata.kind == "raw" copies 2\n'
        '    phase SOLID copies 2 to storage.name != "s1" and item.parent != "x"\n}\n',
        "fields.policy")
    assert needed_fields(policy) == ["name", "metadata"]


def test_policies_the_columns_cannot_express_go_to_the_record_planner():
    for place in ('place "a" if item.version > item.access_count copies 2',  # two attributes
                  'place "b" if item.name == "x" copies 2'):
        policy = load_policy_text(f'partition "all" {{ }}\ndealer {{\n    {place}\n}}\n',
                                  "r.policy")
        assert supports(policy) is ("b" in place)
    members = load_policy_text('partition "all" {\n    members replica.state == complete\n}\n'
                               "dealer {\n    phase SOLID copies 2\n}\n", "m.policy")
    assert not supports(members)
    assert not supports(load_policy_text('partition "all" { }\n', "none.policy"))


def test_an_empty_inventory_plans_nothing():
    policy = load_policy_text('partition "all" { }\ndealer {\n    phase SOLID copies 2\n}\n',
                              "p.policy")
    storages = [[1, "s1", "posix", "/s1", 1000, "GAS", "online", {}, {}, 0.0]]
    plan = plan_columns(policy, columns.from_records(1, storages, {}, []), NOW)
    assert plan.copies == [] and plan.unmet == {}
    assert plan.storages[0]["occupancy_after"] == 0.0


def test_a_huge_popularity_still_asks_for_its_extra_copies():
    """The column table's bound on popularity extras is capped before it becomes an integer
    (a quotient past 2**63 turned negative and left the item out of the popularity stage)."""
    policy = load_policy_text(
        'partition "all" { }\ndealer {\n    phase SOLID copies 1\n'
        "    popularity { half_life 1d threshold 0.001 max_copies 3 }\n}\n", "hot.policy")
    storages = [[sid, f"s{sid}", "posix", f"/s{sid}", 10_000, "SOLID", "online", {}, {}, 0.0]
                for sid in (1, 2, 3)]
    oid = model.format_uuid(model.new_oid())
    items = {oid: [oid, "hot", 1, "file", "READY", "SOLID", 10, None, None, None, None,
                   NOW - DAY, None, 10**16, NOW - 5, None, None]}
    replicas = [[model.format_uuid(model.parse_uuid(oid) | 1), oid, 1, None, "complete", 10,
                 None, NOW - DAY, None, None]]
    expected, got = both(policy, storages, items, replicas, [], {})
    assert copies(got) == copies(expected) and len(expected.copies) == 2
