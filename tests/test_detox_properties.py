"""Properties of the Detox planner over random inventories and random policies (hypothesis):
no last copy of a live item and no copy whose loss drops a live item below its target phase is
ever planned, no copy of a live item a copy request pins, every triggered storage ends under
`until` or is reported as unable to, and the column planner plans what the record planner plans
with pins too."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detox.planner import DELETED, KEPT, plan_cycle
from inventory import model
from inventory.feed import WIRE_ITEM_FIELDS, WIRE_REPLICA_FIELDS
from policies import load_policy_text
from tests.conftest import fuzz_budget
from tests.test_detox_columns import assert_same_plan, both, pins_of

NOW = 1_800_000_000.0
PHASES = list(model.PHASES)
RULES = [
    'protect "fresh" if replica.age < 1d',
    'protect "popular" if item.access_count > 5',
    'delete "junk" if item.name matches "junk/*"',
    'dismiss "big" if item.size > 500 B',
    'protect "solid" if item.target_phase == SOLID',
    'delete "old" if item.created older_than 30d',
    'ignore "busy" if replica.state != complete',
    'dismiss "cold" if item.access_count < 2',
]


@st.composite
def inventories(draw):
    n_storages = draw(st.integers(1, 4))
    storages = [[sid, f"s{sid}", "posix", f"/s{sid}", draw(st.integers(100, 3000)),
                 draw(st.sampled_from(PHASES)), "online", {}, {}, 0.0]
                for sid in range(1, n_storages + 1)]
    items, replicas = {}, []
    for i in range(draw(st.integers(0, 25))):
        oid = model.format_uuid(model.new_oid())
        state = draw(st.sampled_from(["READY"] * 6 + ["EXPIRED", "CORRUPTED"]))
        expire = draw(st.sampled_from([None, None, NOW - 10, NOW + 1000]))
        size = draw(st.integers(1, 900))
        items[oid] = [oid, draw(st.sampled_from(["junk/", "data/"])) + str(i), 1, "file",
                      state, draw(st.sampled_from(PHASES)), size, None, None, None, None,
                      NOW - draw(st.integers(0, 90 * 86400)), expire,
                      draw(st.integers(0, 10)), NOW - 5, None, None]
        for sid in draw(st.sets(st.integers(1, n_storages), max_size=n_storages)):
            rstate = draw(st.sampled_from(["complete"] * 5 + ["pending", "corrupt"]))
            replicas.append([model.format_uuid(model.parse_uuid(oid) | sid), oid, sid, None,
                             rstate, size, None, NOW - draw(st.integers(0, 5 * 86400)), None,
                             None])
    return storages, items, replicas, draw(pins_of(storages, items))


@st.composite
def policies(draw):
    high = draw(st.integers(10, 100))
    low = draw(st.integers(1, high))
    rules = draw(st.lists(st.sampled_from(RULES), max_size=5, unique=True))
    default = draw(st.sampled_from(["dismiss", "protect"]))
    order = draw(st.sampled_from(["item.access_count ascending", "replica.size descending",
                                  "item.created ascending"]))
    body = "\n    ".join(rules)
    text = (f'partition "all" {{ }}\ndetox {{\n    when storage.occupancy > {high}%\n'
            f"    until storage.occupancy < {low}%\n    {body}\n    default {default}\n"
            f"    order by {order}\n}}\n")
    return load_policy_text(text, "random.policy")


def phase_of(storage_phase: dict[int, str], sids) -> int:
    weight = sum(model.PHASE_WEIGHT[model.PHASE[storage_phase[s]]] for s in sids)
    return model.phase_of_weights(weight)


@settings(max_examples=fuzz_budget(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(inventories(), policies())
def test_no_live_item_loses_its_last_copy_or_drops_below_target(inventory, policy):
    storages, items, replicas, pins = inventory
    plan = plan_cycle(policy, storages, items, replicas, NOW, pins)
    storage_phase = {s[0]: s[5] for s in storages}
    planned = {(d.oid, d.storage_id) for d in plan.deletions}
    assert len(planned) == len(plan.deletions), "a replica planned twice"
    expired = set(plan.expirations) | {o for o, it in items.items()
                                       if it[WIRE_ITEM_FIELDS.index("state")] == "EXPIRED"}
    complete = defaultdict(set)
    for r in replicas:
        if r[WIRE_REPLICA_FIELDS.index("state")] == "complete":
            complete[r[1]].add(r[2])
    for oid, sids in complete.items():
        if oid in expired:
            continue
        gone = {sid for sid in sids if (oid, sid) in planned}
        if not gone:
            continue
        left = sids - gone
        assert left, f"the last copy of live item {oid} was planned for deletion"
        target = model.PHASE[items[oid][WIRE_ITEM_FIELDS.index("target_phase")]]
        assert phase_of(storage_phase, left) >= target, "planned below the target phase"


@settings(max_examples=fuzz_budget(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(inventories(), policies())
def test_triggered_storages_end_satisfied_or_report_why_not(inventory, policy):
    storages, items, replicas, pins = inventory
    plan = plan_cycle(policy, storages, items, replicas, NOW, pins)
    by_name = {s.name: s for s in plan.storages}
    sid_name = {s[0]: s[1] for s in storages}
    for outcome in plan.storages:
        if outcome.triggered and not outcome.satisfied:
            # unable: then no candidate on it was left undeleted as "not needed"
            for _uid, sid, result, rule, _line, _size in plan.decisions:
                if sid_name[sid] == outcome.name:
                    assert not (result == KEPT and rule.startswith("not needed")), rule
        if not outcome.triggered:
            assert outcome.satisfied
        assert outcome.used_after <= outcome.used_before
    # every deletion is counted on its storage
    deleted = defaultdict(int)
    for d in plan.deletions:
        deleted[sid_name[d.storage_id]] += d.size
    for name, total in deleted.items():
        assert by_name[name].deleted_bytes == total
    assert sum(1 for d in plan.decisions if d[2] == DELETED) == len(plan.deletions)


@settings(max_examples=fuzz_budget(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(inventories(), policies())
def test_a_pin_that_holds_keeps_a_live_items_copy_and_both_planners_agree(inventory, policy):
    storages, items, replicas, pins = inventory
    plan, on_columns = both(policy, storages, items, replicas, pins)
    assert_same_plan(plan, on_columns)
    expired = set(plan.expirations) | {o for o, it in items.items()
                                       if it[WIRE_ITEM_FIELDS.index("state")] == "EXPIRED"}
    for d in plan.deletions:
        pin = pins.get((d.oid, d.storage_id))
        assert d.oid in expired or pin is None or not pin.holds(NOW), (d, pin)
    # every copy a holding pin keeps is reported with the pin as its reason
    uid = {model.format_uuid(model.parse_uuid(oid) | sid): (oid, sid) for oid, sid in pins}
    kept = {}
    for rid, _sid, outcome, rule, _line, size in plan.decisions:
        if rule.startswith("pinned by"):
            pin = pins[uid[rid]]
            assert outcome == KEPT and pin.holds(NOW) and rule == pin.reason
            kept.setdefault(pin, [0, 0])
            kept[pin][0] += 1
            kept[pin][1] += size
    assert kept == plan.pinned
