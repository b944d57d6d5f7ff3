"""The example policies in policies/examples/: they load, and they decide what their comments
say they decide."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies import ItemView, ReplicaView, StorageView, load_policy
from policies.units import parse_date

EXAMPLES = Path(__file__).resolve().parents[1] / "policies" / "examples"
NOW = parse_date("2025-06-30T12:00:00Z")
DAY = 86400.0


def test_there_are_at_least_three_examples_and_all_load() -> None:
    files = sorted(EXAMPLES.glob("*.policy"))
    assert {"physics.policy", "ska-lifecycle.policy", "drain.policy"} <= {f.name for f in files}
    for path in files:
        policy = load_policy(path)
        assert policy.detox is not None and policy.dealer is not None


# --- physics: Dynamo-like, watermarks 90% / 85% ---------------------------------------------

@pytest.fixture(scope="module")
def physics():
    return load_policy(EXAMPLES / "physics.policy")


def t2(used: float, status: str = "online", name: str = "T2_X") -> StorageView:
    return StorageView.build(name, status=status, attributes={"tier": "T2"}, capacity=10**15,
                             used=int(used * 10**15))


def aod(**kw) -> ItemView:
    base = dict(group="analysis", created=NOW - 400 * DAY, access_count=0, popularity=0.1,
                copies=2, size=10**10)
    base.update(kw)
    return ItemView("store/data/Run2024/AOD/1.root", **base)


def test_physics_watermarks(physics) -> None:
    detox = physics.detox
    assert detox.triggered(t2(0.91)) and not detox.triggered(t2(0.89))
    assert detox.triggered(t2(0.10, status="draining"))
    assert not detox.satisfied(t2(0.86)) and detox.satisfied(t2(0.84))
    assert detox.applies_to(t2(0.5)) and not detox.applies_to(t2(0.5, status="offline"))


def test_physics_rules(physics) -> None:
    decide = physics.detox.decide
    s = t2(0.95)
    old = ReplicaView("T2_X", created=NOW - 100 * DAY)
    assert decide(aod(), old, s, NOW).label == "old and cold"
    assert decide(aod(), ReplicaView("T2_X", is_last_copy=True), s, NOW).label == "last copy"
    assert decide(aod(), ReplicaView("T2_X", created=NOW - DAY), s, NOW).label == "fresh"
    assert decide(aod(metadata={"custodial": True}), old, s, NOW).label == "custodial"
    assert decide(aod(state="EXPIRED"), old, s, NOW).action == "delete"
    assert decide(aod(last_access=NOW - DAY), old, s, NOW).label == "recently read"
    assert decide(aod(popularity=7.0), old, s, NOW).label == "popular"
    assert decide(aod(created=NOW - 10 * DAY), old, s, NOW).label == "candidate"
    user = ItemView("store/user/x", group="analysis")
    assert decide(user, old, s, NOW).index == -2   # outside the partition
    assert physics.partition.subpartition(aod()).name == "AnalysisOps"


def test_physics_quotas_and_dealer(physics) -> None:
    part = physics.partition
    assert part.quota_for(StorageView.build("T2_CH_CERN")) == 1.5e15
    assert part.quota_for(StorageView.build("T1_US_FNAL_Disk", capacity=10**15)) == 0.8e15
    assert part.quota_for(StorageView.build("other")) == 200e12
    dealer = physics.dealer
    assert dealer.requirement(aod(), NOW).label == "AOD for analysis"
    assert dealer.wanted_copies(aod(popularity=35.0), NOW) == 5   # 3 + 3, capped at 5
    assert dealer.limits.target_occupancy == 0.85


# --- SKA lifecycle: GAS / LIQUID / SOLID and expiry -------------------------------------------

@pytest.fixture(scope="module")
def ska():
    return load_policy(EXAMPLES / "ska-lifecycle.policy")


def site(phase: str = "GAS") -> StorageView:
    return StorageView.build("low-buffer", phase=phase, attributes={"facility": "site"},
                             capacity=10**15, used=10**14)


def vis(**kw) -> ItemView:
    base = dict(metadata={"telescope": "low", "product": "visibility"}, phase="SOLID",
                target_phase="SOLID", size=5 * 2**30, created=NOW - 30 * DAY, copies=3)
    base.update(kw)
    return ItemView("ska-low/eb-1/vis.ms", **base)


def test_ska_lifecycle(ska) -> None:
    decide = ska.detox.decide
    settled = ReplicaView("low-buffer", created=NOW - 3 * DAY)
    assert decide(vis(), settled, site(), NOW).label == "buffer after archive"
    assert decide(vis(phase="LIQUID"), settled, site(), NOW).label == "below target phase"
    assert decide(vis(expire_at=NOW - 1), settled, site(), NOW).label == "expired item"
    temp = ReplicaView("low-buffer", created=NOW - DAY, expire_at=NOW - 60)
    assert decide(vis(), temp, site(), NOW).label == "temporary copy"
    pending = ReplicaView("low-buffer", state="copying")
    assert decide(vis(), pending, site(), NOW).action == "ignore"
    archive = StorageView.build("archive", phase="SOLID", attributes={"facility": "archive"})
    assert decide(vis(), settled, archive, NOW).label == "archive copy"
    scratch = vis(metadata={"telescope": "low", "product": "scratch"},
                  created=parse_date("2023-05-01"))
    src = StorageView.build("src-1", phase="LIQUID", attributes={"facility": "src"})
    assert decide(scratch, settled, src, NOW).label == "old scratch"
    assert decide(vis(), settled, src, NOW).label == "default"
    assert ska.detox.triggered(site())   # the telescope buffer is always cleaned


def test_ska_dealer_phases(ska) -> None:
    dealer = ska.dealer
    assert dealer.requirement(vis(), NOW).label == "raw visibilities to the archive"
    small = vis(size=10, target_phase="LIQUID")
    liquid = dealer.requirement(small, NOW)
    assert (liquid.phase, liquid.copies) == ("LIQUID", 2)
    src = StorageView.build("src-1", phase="LIQUID", attributes={"facility": "src"})
    assert liquid.accepts_destination(small, src, NOW)
    assert not liquid.accepts_destination(small, site(), NOW)
    assert ska.partition.quota_for(StorageView.build("low-buffer", capacity=100)) == 90


# --- drain ---------------------------------------------------------------------------------

def test_drain(tmp_path) -> None:
    policy = load_policy(EXAMPLES / "drain.policy")
    detox = policy.detox
    old = StorageView.build("disk-old", status="draining", capacity=100, used=40)
    new = StorageView.build("disk-new-1", capacity=100, used=40)
    assert detox.applies_to(old) and not detox.applies_to(new)
    assert detox.triggered(old) and not detox.satisfied(old)
    assert detox.satisfied(StorageView.build("disk-old", status="draining", capacity=100))
    item = ItemView("x", copies=2)
    assert detox.decide(item, ReplicaView("disk-old"), old, NOW).label == "drained"
    last = ReplicaView("disk-old", is_last_copy=True)
    assert detox.decide(ItemView("y", copies=1), last, old, NOW).label == "wait for a copy"
    targets = policy.dealer.destinations(ItemView("y", target_phase="GAS"), [old, new], NOW)
    assert [s.name for s in targets] == ["disk-new-1"]
