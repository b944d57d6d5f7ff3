"""The dashboard without a browser: the figures, the HTML fragments and the routes' roles.

``seed`` builds the site the browser tests (tests/test_dashboard_browser.py) look at too: three
storages, a Detox cycle with 90%/70% watermarks that deletes four replicas, a user copy, a copy
that fails, a copy request, a draining storage and a consistency report.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from detox.cycle import run_cycle
from inventory.dashboard import figures, fragments, markup
from inventory.dashboard.history import OccupancyHistory
from inventory.dashboard.routes import has_route
from inventory.fileops.engine import FileOpsLimits
from inventory.inventory import Inventory
from inventory.records import StorageRecord
from inventory.server.state import STATE
from policies import load_policy_text
from tests.conftest import InProcessServer, adler, settle

POLICY = """
partition "all" { }
detox {
    when  storage.occupancy > 90%
    until storage.occupancy < 70%
    ignore  "in flight" if replica.state != complete
    protect "keep"      if item.metadata.keep == true
    delete  "expired"   if item.state == EXPIRED
    default dismiss "candidate"
    order by item.popularity ascending, replica.size descending
}
"""
FAST = FileOpsLimits(workers=4, per_storage=4, retry_base=0.01, retry_max=0.02, max_attempts=2,
                     poll=0.05)
OLD = time.time() - 3 * 86400  # older than the consistency grace period


async def seed(srv: InProcessServer, tmp_path: Path) -> dict:
    """disk1 (1000 B) full with set/f0..f9 (f0..f5 also on disk2), Detox down to 600 B; a user
    copy of set/f7 to disk2; a copy of ``broken/x`` (no file) that fails; a copy request;
    tape1 draining with two items; a consistency report of disk1 with one orphan."""
    c = srv.client
    roots = {}
    for name, capacity in (("disk1", 1000), ("disk2", 100_000), ("tape1", 5000)):
        roots[name] = tmp_path / name
        roots[name].mkdir()
        await c.add_storage(name=name, kind="posix", root=str(roots[name]), capacity=capacity,
                            phase="GAS")
    oids = {}
    for i in range(10):
        data = os.urandom(100)
        name = f"set/f{i}"
        for disk in ("disk1", "disk2") if i <= 5 else ("disk1",):
            path = roots[disk] / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            os.utime(path, (OLD, OLD))
        item = await c.add_item(item_name=name, storage="disk1", size=100, checksum=adler(data),
                                target_phase="GAS", metadata={"keep": i == 0})
        if i <= 5:
            await c.request("PATCH", f"/v1/items/{item['oid']}", json={"storage": "disk2"})
        if i:
            await c.request("POST", f"/v1/items/{item['oid']}/accesses", json={"count": i})
        oids[name] = item["oid"]
    result = await run_cycle(c, load_policy_text(POLICY, "watermarks.policy"), POLICY)
    assert result.applied["summary"]["applied"]["deletions"] == 4
    await settle(c)
    await c.request("POST", "/v1/operations", json={"kind": "copy", "item": "set/f7",
                                                     "target": "disk2"})
    (roots["tape1"] / "broken").mkdir()
    (roots["tape1"] / "broken/x").write_bytes(b"0123456789")
    await c.add_item(item_name="broken/x", storage="tape1", size=10, checksum="00000001")
    (roots["tape1"] / "broken/x").unlink()  # lost after registration: its copy fails
    await c.request("POST", "/v1/operations", json={"kind": "copy", "item": "broken/x",
                                                     "target": "disk2"})
    for i in range(2):
        data = os.urandom(1000)
        (roots["tape1"] / "raw").mkdir(exist_ok=True)
        (roots["tape1"] / f"raw/t{i}").write_bytes(data)
        await c.add_item(item_name=f"raw/t{i}", storage="tape1", size=1000,
                         checksum=adler(data))
    await settle(c)
    await c.request("POST", "/v1/requests", json={"item": "set/f8", "storage": "disk2",
                                                  "comment": "for <analysis> & co"})
    await c.request("PATCH", "/v1/storages/tape1", json={"status": "draining"})
    stray = roots["disk1"] / "stray.dat"
    stray.write_bytes(b"dark data")
    os.utime(stray, (OLD, OLD))
    from consistency.cycle import Options, run_consistency  # the consistency part's own run
    await run_consistency(c, "disk1", Options(checksums="all"))
    return {"roots": roots, "oids": oids, "cycle": result.applied["id"]}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[InProcessServer, dict]]:
    srv = InProcessServer(f"sqlite:{tmp_path / 'inventory.sqlite'}", tmp_path, fileops=FAST)
    await srv.start()
    try:
        yield srv, await seed(srv, tmp_path)
    finally:
        await srv.stop()


# ------------------------------------------------------------------------------- pure pieces

@pytest.mark.parametrize(("when", "until", "expected"), [
    ("storage.occupancy > 90%", "storage.occupancy < 70%", (0.9, 0.7)),
    ("storage.occupancy >= 0.85", "storage.occupancy <= 60%", (0.85, 0.6)),
    ("95% < storage.occupancy", "0.5 > storage.occupancy", (0.95, 0.5)),
    ('storage.occupancy > 90% and storage.name == "disk1"', "storage.occupancy < 70%",
     (None, 0.7)),
])
def test_watermarks_from_simple_comparisons_only(when: str, until: str,
                                                  expected: tuple) -> None:
    text = (f'partition "all" {{ }}\ndetox {{\n when {when}\n until {until}\n'
            f' default dismiss "c"\n}}\n')
    assert figures.policy_watermarks(text) == expected


def test_no_watermarks_from_a_policy_that_does_not_parse() -> None:
    assert figures.policy_watermarks("detox {") == (None, None)
    assert figures.policy_watermarks('partition "all" { }\n') == (None, None)


def test_escaping_and_formats() -> None:
    assert markup.h('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert markup.h(None) == "\u2013"
    assert markup.size(999) == "999 B" and markup.size(1_234_000) == "1.23 MB"
    assert markup.pct(0.9) == "90%" and markup.pct(0.625) == "62.5%"
    assert markup.duration(3725) == "1 h 2 min"
    page = markup.page("A <b>", "", current="/", consistency=False)
    assert "<title>A &lt;b&gt; · DLM</title>" in page and "Consistency" not in page


def test_drain_rate_and_progress_from_samples() -> None:
    inv = Inventory()
    storage = inv.add_storage(StorageRecord(1, "tape1", "posix", "/t", 1000, 1, "draining",
                                            {}, {}, 0.0))
    history = OccupancyHistory(keep=10)
    for t, used in ((0, 800), (60, 700), (120, 600)):
        storage.used = used
        history.sample(inv, now=t)
    assert history.drain_start["tape1"] == (0, 800)
    assert history.drain_rate("tape1") == pytest.approx(200 / 120)
    drain = figures.drain_of(storage, history)
    assert drain.left == 600 and drain.progress == pytest.approx(0.25)
    assert drain.eta == pytest.approx(600 / (200 / 120))
    storage.status = "online"
    history.sample(inv, now=180)
    assert "tape1" not in history.drain_start and figures.drain_of(storage, history) is None
    for _ in range(20):
        history.sample(inv, now=200)
    assert len(history.samples) == 10  # a ring


# ------------------------------------------------------------------------------- on a server

async def test_figures_of_the_seeded_site(site) -> None:
    srv, _ = site
    inv = srv.app[STATE].inventory
    rows = {r.name: r for r in figures.storage_rows(inv)}
    assert (rows["disk1"].high, rows["disk1"].low) == (0.9, 0.7)
    assert rows["disk1"].occupancy == pytest.approx(0.6)
    assert rows["tape1"].drain is not None and rows["tape1"].drain.left == 2010
    today = figures.bytes_per_day(inv)[-1]
    assert today == {"day": figures.day_of(time.time()), "copied": 100, "deleted": 400}
    html = fragments.storages(list(rows.values()), actions=True, watermark_cycle=1)
    assert 'class="wm high" data-left="90.00%"' in html
    assert 'class="wm low" data-left="70.00%"' in html


async def test_pages_are_public_shells_and_data_needs_a_reader(site) -> None:
    srv, seeded = site
    c = srv.client
    admin = await c.request("POST", "/v1/tokens", json={"name": "admin", "role": "operator"})
    reader = await c.request("POST", "/v1/tokens", json={"name": "r", "role": "reader"},
                             headers={"Authorization": f"Bearer {admin['token']}"})
    auth = {"Authorization": f"Bearer {reader['token']}"}
    async with aiohttp.ClientSession(base_url=srv.url) as http:
        for path in ("/", "/dashboard/storages", "/dashboard/operations", "/dashboard/cycles",
                     "/dashboard/cycles/1", "/dashboard/items", "/dashboard/consistency",
                     f"/dashboard/items/{seeded['oids']['set/f3']}"):
            async with http.get(path) as resp:
                assert resp.status == 200, path
                assert resp.content_type == "text/html"
                text = await resp.text()
                assert "disk1" not in text and "set/f" not in text, path  # no data in shells
        for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            async with http.get(f"/dashboard/static/{name}") as resp:
                assert resp.status == 200 and resp.content_type == kind
        async with http.get("/dashboard/static/secret.py") as resp:
            assert resp.status == 404
        for path in ("/dashboard/fragments/storages", "/dashboard/data/plots",
                     "/dashboard/fragments/items?name=set/*"):
            async with http.get(path) as resp:
                assert resp.status == 401, path
            async with http.get(path, headers=auth) as resp:
                assert resp.status == 200, path
        async with http.get("/dashboard/data/whoami", headers=auth) as resp:
            assert await resp.json() == {"name": "r", "role": "reader", "open": False}
        async with http.patch("/v1/storages/disk2", json={"status": "draining"},
                              headers=auth) as resp:
            assert resp.status == 403  # the drain form's call, refused to a reader


async def test_fragments_escape_and_filter(site) -> None:
    srv, seeded = site
    c = srv.client
    await c.add_item(item_name='odd/<script>alert("x")</script>&', size=1)
    async with aiohttp.ClientSession(base_url=srv.url) as http:
        async with http.get("/dashboard/fragments/items", params={"name": "odd/*"}) as resp:
            text = await resp.text()
        assert "<script>" not in text and "&lt;script&gt;alert(&quot;x&quot;)" in text
        async with http.get("/dashboard/fragments/requests") as resp:
            assert "for &lt;analysis&gt; &amp; co" in await resp.text()
        cycle = seeded["cycle"]
        url = f"/dashboard/fragments/cycles/{cycle}/decisions"
        async with http.get(url, params={"outcome": "delete", "storage": "disk1"}) as resp:
            text = await resp.text()
        assert text.count('data-outcome="delete"') == 4
        async with http.get(url, params={"limit": "3"}) as resp:
            text = await resp.text()
        assert text.count("<tr data-outcome") == 3 and "cursor=3" in text
        async with http.get(f"/dashboard/fragments/cycles/{cycle}") as resp:
            text = await resp.text()
        assert "storage.occupancy &gt; 90%" in text  # the policy, escaped
        async with http.get(f"/dashboard/fragments/items/{seeded['oids']['set/f3']}") as resp:
            text = await resp.text()
        assert 'id="item-state">READY' in text and "candidate" in text  # deleted from disk1
        async with http.get("/dashboard/fragments/operations",
                            params={"state": "failed"}) as resp:
            text = await resp.text()
        assert "broken/x" in text and re.search(r'class="error">[^<]+', text)
        async with http.get("/dashboard/fragments/consistency") as resp:
            text = await resp.text()
        assert 'data-storage="disk1"' in text and "format=html" in text
        async with http.get("/dashboard/fragments/cycles/999") as resp:
            assert resp.status == 404
        async with http.get("/dashboard/data/plots") as resp:
            plots = await resp.json()
        assert plots["watermarks"] == {"high": 0.9, "low": 0.7, "cycle": cycle}
        assert plots["occupancy"]["disk1"][0][1] == 1.0  # before the Detox cycle
        assert plots["occupancy"]["disk1"][-1][1] == pytest.approx(0.6)


def test_consistency_page_only_with_its_route(tmp_path: Path) -> None:
    from aiohttp import web

    from inventory.dashboard import routes

    bare = web.Application()
    bare.add_routes(routes.routes)
    assert not has_route(bare, routes.CONSISTENCY_REPORTS)
    bare.router.add_get(routes.CONSISTENCY_REPORTS, routes.whoami)
    assert has_route(bare, routes.CONSISTENCY_REPORTS)
