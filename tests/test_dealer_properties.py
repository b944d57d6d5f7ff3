"""Properties of the Dealer planner over random inventories and random limits (hypothesis):
no plan pushes a storage past its target occupancy or the partition quota, and every READY item
reaches its target phase whenever enough eligible space exists."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dealer.planner import plan_cycle
from inventory import model
from policies import StorageView, load_policy_text
from tests.conftest import fuzz_budget

NOW = 1_800_000_000.0
PHASES = list(model.PHASES)


@st.composite
def grids(draw):
    n = draw(st.integers(1, 5))
    storages = [[sid, f"s{sid}", "posix", f"/s{sid}", draw(st.integers(500, 5000)),
                 draw(st.sampled_from(["GAS", "GAS", "LIQUID", "SOLID"])),
                 draw(st.sampled_from(["online"] * 4 + ["draining", "offline"])), {}, {}, 0.0]
                for sid in range(1, n + 1)]
    items, replicas = {}, []
    for i in range(draw(st.integers(0, 15))):
        oid = model.format_uuid(model.new_oid())
        size = draw(st.integers(1, 400))
        items[oid] = [oid, f"f{i}", 1, "file", "READY",
                      draw(st.sampled_from(PHASES)), size, None, None, None, None, NOW - 10,
                      None, draw(st.integers(0, 40)), NOW - 5, None, None]
        for sid in draw(st.sets(st.integers(1, n), min_size=1, max_size=n)):
            replicas.append([model.format_uuid(model.parse_uuid(oid) | sid), oid, sid, None,
                             "complete", size, None, NOW - 100, None, None])
    target = draw(st.integers(30, 100))
    quota = draw(st.sampled_from(["", "    quota default 2 kB\n"]))
    popularity = draw(st.sampled_from(["", "    popularity { half_life 7d threshold 10 "
                                           "max_copies 3 }\n"]))
    text = (f'partition "all" {{\n{quota}}}\ndealer {{\n    phase GAS copies 1\n'
            f"    phase LIQUID copies 2\n    phase SOLID copies 2\n{popularity}"
            f"    limits {{ target_occupancy {target}% }}\n}}\n")
    return storages, items, replicas, load_policy_text(text, "random.policy"), target / 100


def used_by_storage(replicas):
    used = defaultdict(int)
    for r in replicas:
        used[r[2]] += r[5]
    return used


@settings(max_examples=fuzz_budget(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(grids())
def test_no_plan_overfills_a_storage_or_its_quota(grid):
    storages, items, replicas, policy, target = grid
    plan = plan_cycle(policy, storages, items, replicas, NOW)
    used = used_by_storage(replicas)
    added = defaultdict(int)
    for copy in plan.copies:
        added[copy.target_id] += copy.size
    capacity = {s[0]: s[4] for s in storages}
    status = {s[0]: s[6] for s in storages}
    quota = policy.partition.quota_for
    for sid, extra in added.items():
        assert status[sid] == "online", "a copy to a storage that is not online"
        limit = target * capacity[sid]
        assert used[sid] + extra <= limit + 1e-9, (sid, used[sid], extra, limit)
        q = quota(StorageView.build(f"s{sid}", capacity=capacity[sid]))
        if q:
            assert used[sid] + extra <= q
    held = {(r[1], r[2]) for r in replicas}
    for copy in plan.copies:
        assert (copy.oid, copy.target_id) not in held, "a second copy on one storage"
        held.add((copy.oid, copy.target_id))


@settings(max_examples=fuzz_budget(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(grids())
def test_items_reach_their_target_phase_when_space_allows(grid):
    storages, items, replicas, policy, _target = grid
    plan = plan_cycle(policy, storages, items, replicas, NOW)
    weight = {s[0]: model.PHASE_WEIGHT[model.PHASE[s[5]]] for s in storages}
    where = defaultdict(set)
    for r in replicas:
        where[r[1]].add(r[2])
    for copy in plan.copies:
        where[copy.oid].add(copy.target_id)
    if plan.unmet:
        return  # some item found no room: the report says so
    for oid, item in items.items():
        phase = model.phase_of_weights(sum(weight[s] for s in where[oid]))
        assert phase >= model.PHASE[item[5]], (item, where[oid])
