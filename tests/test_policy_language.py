"""The policy language, construct by construct: every operator, unit and section, evaluated.

Every condition is checked twice, through the fast `decide` function and through the recording
`explain` code, and the two must agree.
"""

from __future__ import annotations

import pytest

from policies import ItemView, Policy, ReplicaView, StorageView, load_policy_text
from policies.units import DURATION_UNITS, SIZE_UNITS, parse_date

NOW = 1_750_000_000.0
DAY = 86400.0


def item(**kw) -> ItemView:
    kw.setdefault("created", NOW - 10 * DAY)
    return ItemView(kw.pop("name", "run1/raw.ms"), **kw)


def replica(**kw) -> ReplicaView:
    kw.setdefault("created", NOW - 5 * DAY)
    return ReplicaView(kw.pop("storage", "disk-a"), **kw)


def storage(**kw) -> StorageView:
    return StorageView.build(kw.pop("name", "disk-a"), **kw)


def compile_rule(cond: str) -> Policy:
    return load_policy_text(
        f'partition "T" {{}}\ndetox {{\n  protect "r" if {cond}\n  default dismiss\n}}\n',
        "t.policy")


def holds(cond: str, i: ItemView | None = None, r: ReplicaView | None = None,
          s: StorageView | None = None, now: float = NOW) -> bool:
    policy = compile_rule(cond)
    i, r, s = i or item(), r or replica(), s or storage()
    fast = policy.detox.decide(i, r, s, now).action == "protect"
    slow, _ = policy.detox.conditions[0].explain(i, r, s, now)
    assert fast == slow, cond
    return fast


# --- comparison operators ----------------------------------------------------------------------

@pytest.mark.parametrize(("op", "expected"), [
    ("==", [False, True, False]), ("!=", [True, False, True]), ("<", [True, False, False]),
    ("<=", [True, True, False]), (">", [False, False, True]), (">=", [False, True, True]),
])
def test_comparison_operators_on_numbers(op: str, expected: list[bool]) -> None:
    got = [holds(f"item.copies {op} 2", item(copies=n)) for n in (1, 2, 3)]
    assert got == expected


def test_constant_on_the_left_is_flipped() -> None:
    assert holds("2 < item.copies", item(copies=3))
    assert not holds("2 < item.copies", item(copies=2))
    assert holds("90% <= storage.occupancy", s=storage(capacity=100, used=90))


def test_text_equality_and_none() -> None:
    assert holds('item.name == "run1/raw.ms"')
    assert holds('item.owner != "alice"', item(owner=None))
    assert holds("item.owner == none", item(owner=None))
    assert not holds("item.owner != none", item(owner=None))
    assert holds("item.parent != none", item(parent="run1"))


def test_enum_names_bare_quoted_and_case_insensitive() -> None:
    assert holds("item.state == READY", item(state="READY"))
    assert holds('item.state == "ready"', item(state="READY"))
    assert holds("replica.state != complete", r=replica(state="copying"))
    assert holds("storage.status == draining", s=storage(status="draining"))
    assert holds("storage.kind == s3", s=storage(kind="s3"))
    assert holds("item.type == container", item(type="container"))


def test_phases_are_ordered() -> None:
    assert holds("storage.phase >= LIQUID", s=storage(phase="SOLID"))
    assert not holds("storage.phase >= LIQUID", s=storage(phase="GAS"))
    assert holds("item.phase < item.target_phase", item(phase="GAS", target_phase="SOLID"))
    assert not holds("item.phase < item.target_phase", item(phase="SOLID", target_phase="SOLID"))


def test_attribute_against_attribute() -> None:
    assert holds("replica.storage == storage.name", r=replica(storage="x"), s=storage(name="x"))
    assert holds("replica.size < item.size", item(size=10), replica(size=5))
    assert holds("storage.attributes.region == item.metadata.region",
                 item(metadata={"region": "eu"}), s=storage(attributes={"region": "eu"}))


def test_booleans() -> None:
    assert holds("replica.is_last_copy", r=replica(is_last_copy=True))
    assert not holds("replica.is_last_copy", r=replica(is_last_copy=False))
    assert holds("replica.is_last_copy == false", r=replica(is_last_copy=False))
    assert holds("true")
    assert not holds("false")


# --- units -----------------------------------------------------------------------------------

@pytest.mark.parametrize("unit", list(SIZE_UNITS))
def test_size_units(unit: str) -> None:
    factor = SIZE_UNITS[unit]
    assert holds(f"item.size == 3 {unit}", item(size=3 * factor))
    assert holds(f"item.size > 2.5 {unit}", item(size=3 * factor))
    assert not holds(f"item.size > 2.5 {unit}", item(size=2 * factor))


def test_binary_and_decimal_sizes_differ() -> None:
    assert holds("item.size > 1 GB", item(size=2**30))
    assert not holds("item.size > 1 GiB", item(size=2**30))
    assert holds("item.size == 1_000_000 B", item(size=10**6))


@pytest.mark.parametrize("unit", list(DURATION_UNITS))
def test_duration_units(unit: str) -> None:
    seconds = DURATION_UNITS[unit]
    assert holds(f"item.age > 2{unit}", item(created=NOW - 3 * seconds))
    assert not holds(f"item.age > 2{unit}", item(created=NOW - 1 * seconds))
    assert holds(f"replica.age < 2 {unit}", r=replica(created=NOW - seconds))


def test_percent_and_plain_fraction() -> None:
    full = storage(capacity=1000, used=950)
    assert holds("storage.occupancy > 90%", s=full)
    assert holds("storage.occupancy > 0.9", s=full)
    assert not holds("storage.occupancy > 96%", s=full)
    assert holds("storage.occupancy > 12.5%", s=storage(capacity=1000, used=130))


def test_dates_and_now() -> None:
    day = parse_date("2025-01-01")
    assert day == parse_date("2025-01-01T00:00:00Z") == parse_date("2025-01-01T01:00:00+01:00")
    assert holds("item.created < 2025-01-01", item(created=day - 1))
    assert holds("item.created >= 2025-01-01T00:00", item(created=day))
    assert holds("item.created < 2025-01-01T12:00:00Z", item(created=day + 3600))
    assert holds("item.expire_at < now", item(expire_at=NOW - 1))
    assert not holds("item.expire_at < now", item(expire_at=None))
    assert not holds("item.expire_at < now", item(expire_at=NOW + 1))


# --- sets, patterns, ages --------------------------------------------------------------------

def test_in_and_not_in() -> None:
    assert holds("item.state in {READY, EXPIRED}", item(state="EXPIRED"))
    assert holds("item.state not in {READY, EXPIRED}", item(state="CORRUPTED"))
    assert holds('item.group in {"a", "b",}', item(group="b"))
    assert holds("item.copies in {1, 3}", item(copies=3))
    assert holds('item.metadata.kind in {"raw", 3}', item(metadata={"kind": 3}))
    assert not holds('item.metadata.kind in {"raw"}', item(metadata={"kind": ["raw"]}))
    assert holds('item.metadata.kind not in {"raw"}', item(metadata={}))


def test_glob_and_regex_matching() -> None:
    assert holds('item.name matches "run*/*.ms"', item(name="run1/raw.ms"))
    assert not holds('item.name matches "run*.txt"', item(name="run1/raw.ms"))
    assert holds('item.name matches "run?/raw.[mn]s"', item(name="run1/raw.ms"))
    assert holds("item.name matches /raw/", item(name="run1/raw.ms"))       # search
    assert not holds("item.name matches /^raw/", item(name="run1/raw.ms"))
    assert holds("item.name matches /^RUN[0-9]+\\//i", item(name="run1/raw.ms"))
    assert holds('item.name not matches "tmp*"', item(name="run1"))
    assert not holds('item.owner matches "a*"', item(owner=None))
    assert not holds('item.metadata.x matches "a*"', item(metadata={"x": 5}))
    assert holds("item.state matches /^READ/", item(state="READY"))


def test_older_than_and_newer_than() -> None:
    assert holds("item.created older_than 30d", item(created=NOW - 31 * DAY))
    assert not holds("item.created older_than 30d", item(created=NOW - 29 * DAY))
    assert holds("item.last_access newer_than 12h", item(last_access=NOW - 3600))
    assert not holds("item.last_access newer_than 12h", item(last_access=None))
    assert not holds("item.last_access older_than 12h", item(last_access=None))
    assert holds("item.created older_than 2025-01-01", item(created=parse_date("2024-06-01")))
    assert holds("item.created newer_than 2025-01-01", item(created=parse_date("2025-06-01")))
    assert holds("item.age older_than 7d", item(created=NOW - 8 * DAY))
    assert holds("replica.age newer_than 7d", r=replica(created=NOW - DAY))


# --- metadata --------------------------------------------------------------------------------

def test_metadata_keys() -> None:
    meta = {"instrument": "MID", "obs id": 42, "nested": {"band": 2}, "flag": True, "one": 1}
    i = item(metadata=meta)
    assert holds('item.metadata.instrument == "MID"', i)
    assert holds('item.metadata["obs id"] == 42', i)
    assert holds("item.metadata.nested.band == 2", i)
    assert holds("item.metadata.nested.band > 1", i)
    assert not holds("item.metadata.nested.band.x == 2", i)
    assert holds("item.metadata.flag", i)
    assert holds("item.metadata.flag == true", i)
    assert not holds("item.metadata.one == true", i)      # 1 is not true for metadata
    assert holds("item.metadata.missing == none", i)
    assert not holds("item.metadata.missing", i)
    assert not holds('item.metadata.instrument > 5', i)     # text vs number: false, no error
    assert holds('item.metadata.instrument > "L"', i)
    assert holds("item.metadata.size > 1 GB", item(metadata={"size": 2 * 10**9}))
    assert holds('storage.attributes.tier == "T2"', s=storage(attributes={"tier": "T2"}))


def test_string_escapes() -> None:
    assert holds('item.name == "a \\"quoted\\" name"', item(name='a "quoted" name'))
    assert holds('item.name == "back\\\\slash"', item(name="back\\slash"))
    assert holds('item.name matches "a[*]"', item(name="a*"))   # glob: [*] is a literal star


# --- boolean logic ---------------------------------------------------------------------------

@pytest.mark.parametrize("copies", [0, 1, 2, 3])
@pytest.mark.parametrize("size", [1, 10])
def test_and_or_not_precedence(copies: int, size: int) -> None:
    i = item(copies=copies, size=size)
    a, b, c = copies == 0, copies > 1, size > 5
    assert holds("item.copies == 0 or item.copies > 1 and item.size > 5 B", i) == (a or (b and c))
    assert holds("(item.copies == 0 or item.copies > 1) and item.size > 5 B", i) == ((a or b) and c)
    assert holds("not item.copies == 0 and item.size > 5 B", i) == ((not a) and c)
    assert holds("not (item.copies == 0 or item.size > 5 B)", i) == (not (a or c))
    assert holds("not not item.copies == 0", i) == a


def test_comments_and_layout_carry_no_meaning() -> None:
    policy = load_policy_text(
        'partition "T" { } # a comment\n'
        "detox { protect if item.copies\n  >\n 1 # trailing\n"
        "  dismiss if item.copies == 1 default protect }", "t.policy")
    assert [r.line for r in policy.detox.rules] == [2, 5]


# --- detox: first match, default, labels, triggers, order -------------------------------------

DETOX = """partition "P" {
    members item.group == "physics"
}
detox {
    on    storage.status != retired
    when  storage.occupancy > 90%
    until storage.occupancy < 85%
    protect "last"  if replica.is_last_copy
    delete          if item.state == EXPIRED
    dismiss "small" if item.size < 1 GB
    ignore  "busy"  if replica.state != complete
    default protect "rest"
    order by item.popularity ascending, item.size descending
}
"""


def test_first_match_wins_and_decisions_carry_label_and_line() -> None:
    detox = load_policy_text(DETOX, "p.policy").detox
    s = storage()
    decide = detox.decide

    def d(**kw):
        kw.setdefault("group", "physics")
        return decide(item(**kw), replica(is_last_copy=kw.pop("last", False)), s, NOW)

    last = decide(item(group="physics", state="EXPIRED"), replica(is_last_copy=True), s, NOW)
    assert (last.action, last.label, last.line, last.file) == ("protect", "last", 8, "p.policy")
    expired = d(state="EXPIRED", size=1)
    assert (expired.action, expired.label, expired.line) == ("delete", "delete at line 9", 9)
    assert expired.condition == "item.state == EXPIRED"
    assert d(size=10).label == "small"
    rest = d(size=10**10)
    assert (rest.action, rest.label, rest.line, rest.is_default) == ("protect", "rest", 12, True)
    assert [r.index for r in detox.rules] == [0, 1, 2, 3]
    assert d(size=1) is d(size=2)   # one shared Rule object per rule: cheap to record
    outside = decide(item(group="other"), replica(), s, NOW)
    assert outside.action == "ignore" and outside.index == -2 and outside.line == 1


def test_on_when_until() -> None:
    detox = load_policy_text(DETOX, "p.policy").detox
    assert detox.applies_to(storage(status="online"))
    assert not detox.applies_to(storage(status="retired"))
    full, mid, low = (storage(capacity=100, used=u) for u in (95, 88, 80))
    assert detox.triggered(full) and not detox.triggered(mid)
    assert not detox.satisfied(full) and not detox.satisfied(mid) and detox.satisfied(low)


def test_defaults_without_when_until_and_on() -> None:
    policy = load_policy_text(
        'partition "P" { storages {"a"} }\ndetox { when storage.used > 10 B default dismiss }')
    detox = policy.detox
    assert detox.applies_to(storage(name="a")) and not detox.applies_to(storage(name="b"))
    assert detox.satisfied(storage(used=5)) and not detox.satisfied(storage(used=50))
    never = load_policy_text('partition "P" {}\ndetox { default dismiss }').detox
    assert not never.triggered(storage(used=10**9, capacity=1))
    assert never.order[0].text == "item.popularity ascending"


def test_sort_key_orders_candidates() -> None:
    detox = load_policy_text(DETOX, "p.policy").detox
    rows = [item(name=n, popularity=p, size=z)
            for n, p, z in (("a", 3.0, 1), ("b", 1.0, 5), ("c", 1.0, 9), ("d", 0.5, 1))]
    rows.sort(key=lambda i: detox.sort_key(i, replica(), storage(), NOW))
    assert [i.name for i in rows] == ["d", "c", "b", "a"]


def test_sort_key_with_none_and_phases() -> None:
    detox = load_policy_text(
        'partition "P" {}\ndetox { default dismiss\n'
        "order by item.last_access asc, storage.phase desc, replica.age decreasing }").detox
    key = detox.sort_key
    never = key(item(last_access=None), replica(), storage(phase="GAS"), NOW)
    recent = key(item(last_access=NOW), replica(), storage(phase="GAS"), NOW)
    assert never < recent
    assert key(item(last_access=1.0), replica(), storage(phase="SOLID"), NOW) < \
        key(item(last_access=1.0), replica(), storage(phase="GAS"), NOW)


def test_decide_all() -> None:
    detox = load_policy_text(DETOX, "p.policy").detox
    rows = [(item(group="physics", size=n), replica(), storage()) for n in (1, 10**12)]
    assert [r.label for r in detox.decide_all(rows, NOW)] == ["small", "rest"]


# --- partitions ------------------------------------------------------------------------------

PARTITION = """partition "Physics" {
    storages storage.attributes.tier in {"T1", "T2"}
    quota default 100 TB
    quota "big" 1.5 PB
    quota "half" 50%
    partition "Analysis" { members item.group == "analysis" }
    partition "Production" {
        members item.group == "production"
        partition "Raw" { members item.metadata.kind == "raw" }
    }
}
"""


def test_partition_membership_grouping_and_quotas() -> None:
    part = load_policy_text(PARTITION, "p.policy").partition
    assert part.contains(item(group="analysis")) and part.contains(item(group="production"))
    assert not part.contains(item(group="users"))
    assert part.subpartition(item(group="analysis")).name == "Analysis"
    assert part.subpartition(item(group="production", metadata={"kind": "raw"})).name == "Raw"
    assert part.subpartition(item(group="production")).name == "Production"
    assert part.subpartition(item(group="users")) is None
    assert [p.name for p in part.walk()] == ["Physics", "Analysis", "Production", "Raw"]
    assert part.uses(storage(attributes={"tier": "T2"}))
    assert not part.uses(storage(attributes={"tier": "T3"}))
    assert part.quota_for(storage(name="x")) == 100e12
    assert part.quota_for(storage(name="big")) == 1.5e15
    assert part.quota_for(storage(name="half", capacity=10**12)) == 0.5e12


def test_partition_storage_names_and_members_with_replica() -> None:
    part = load_policy_text('partition "P" {\n  storages {"a", "b"}\n'
                            '  members replica.storage != "scratch"\n}').partition
    assert part.uses(storage(name="a")) and not part.uses(storage(name="c"))
    assert part.contains(item(), replica(storage="a"))
    assert not part.contains(item(), replica(storage="scratch"))
    assert load_policy_text('partition "P" {}').partition.contains(item())
    assert load_policy_text('partition "P" {}').partition.quota_for(storage()) is None


def test_storage_view_occupancy_follows_quota() -> None:
    s = StorageView.build("a", capacity=1000, used=300, quota=400)
    assert (s.free, s.occupancy, s.quota) == (700, 0.75, 400)
    assert StorageView.build("b").occupancy == 0.0


# --- dealer ----------------------------------------------------------------------------------

DEALER = """partition "P" {}
dealer {
    phase GAS   copies 1
    phase SOLID copies 2 to storage.phase == SOLID from storage.status == online
    place "raw" if item.metadata.kind == "raw" copies 3 to storage.kind == s3
    place if item.size > 1 TB copies 1
    popularity { half_life 7d threshold 10 max_copies 5 to storage.status == online }
    balance { spread 10% volume_per_cycle 20 TB }
    limits {
        target_occupancy 85%
        max_pending 0.05
        volume_per_cycle 100 TB
        storage_volume_per_cycle 10 TiB
    }
}
"""


def test_dealer_requirements_first_match_then_phase() -> None:
    dealer = load_policy_text(DEALER, "d.policy").dealer
    raw = item(metadata={"kind": "raw"}, size=10**13, target_phase="SOLID")
    assert dealer.requirement(raw, NOW).label == "raw"
    big = dealer.requirement(item(size=10**13), NOW)
    assert (big.label, big.copies, big.line) == ("place at line 6", 1, 6)
    solid = dealer.requirement(item(target_phase="SOLID"), NOW)
    assert (solid.label, solid.copies, solid.phase) == ("phase SOLID", 2, "SOLID")
    assert dealer.requirement(item(target_phase="LIQUID"), NOW) is None
    assert solid.accepts_destination(item(), storage(phase="SOLID"), NOW)
    assert not solid.accepts_destination(item(), storage(phase="GAS"), NOW)
    assert solid.accepts_source(item(), storage(status="online"), NOW)
    assert not solid.accepts_source(item(), storage(status="offline"), NOW)
    targets = dealer.destinations(item(target_phase="SOLID"),
                                  [storage(name="a", phase="SOLID"), storage(name="b")], NOW)
    assert [s.name for s in targets] == ["a"]


def test_dealer_popularity_and_limits() -> None:
    dealer = load_policy_text(DEALER, "d.policy").dealer
    pop = dealer.popularity
    assert (pop.half_life, pop.threshold, pop.max_copies) == (7 * DAY, 10.0, 5)
    assert pop.decayed(8.0, 7 * DAY) == pytest.approx(4.0)
    assert pop.to(item(), None, storage(status="online"), NOW)
    assert dealer.wanted_copies(item(target_phase="SOLID", popularity=0), NOW) == 2
    assert dealer.wanted_copies(item(target_phase="SOLID", popularity=25), NOW) == 4
    assert dealer.wanted_copies(item(target_phase="SOLID", popularity=500), NOW) == 5
    assert dealer.wanted_copies(item(target_phase="LIQUID", popularity=15), NOW) == 1
    assert (dealer.balance.spread, dealer.balance.volume_per_cycle) == (0.1, 20 * 10**12)
    limits = dealer.limits
    assert limits.target_occupancy == 0.85 and limits.max_pending == 0.05
    assert limits.volume_per_cycle == 10**14 and limits.storage_volume_per_cycle == 10 * 2**40


def test_sections_are_optional() -> None:
    policy = load_policy_text('partition "Only" { members item.copies > 0 }')
    assert policy.name == "Only" and policy.detox is None and policy.dealer is None
    empty = load_policy_text('partition "P" {}\ndealer {}').dealer
    assert empty.requirement(item(), NOW) is None and empty.wanted_copies(item(), NOW) == 0


def test_schema_names_match_the_inventory_model() -> None:
    """The policy language spells states and phases exactly as the inventory does."""
    model = pytest.importorskip("inventory.model")
    from policies import schema

    assert schema.ITEM_TYPES == model.ITEM_TYPES
    assert schema.ITEM_STATES == model.ITEM_STATES
    assert schema.PHASES == model.PHASES
    assert schema.REPLICA_STATES == model.REPLICA_STATES
    assert schema.STORAGE_KINDS == model.STORAGE_KINDS
    assert schema.STORAGE_STATUSES == model.STORAGE_STATUSES


def test_percentages_are_exact_at_the_boundary():
    """70% is 0.7 exactly: `occupancy < 70%` must not hold at 70.0% (70 * 0.01 != 0.7)."""
    from policies import StorageView, load_policy_text

    policy = load_policy_text('partition "p" { }\ndetox {\n when storage.occupancy > 90%\n'
                              ' until storage.occupancy < 70%\n default dismiss\n}\n', "t")
    at = StorageView.build("d", capacity=1000, used=700)
    below = StorageView.build("d", capacity=1000, used=699)
    assert not policy.detox.satisfied(at) and policy.detox.satisfied(below)
    assert not policy.detox.triggered(StorageView.build("d", capacity=100, used=90))
