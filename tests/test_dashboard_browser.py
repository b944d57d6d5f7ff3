"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright's Python
package; Playwright's own browser downloads are never used).

One seeded server (tests/test_dashboard.py ``seed``), every page visited: the page loads with no
console error, the watermark bars show the policy's 90% and 70%, search finds an item, the
cycle's decisions filter, the forms reach the API with the signed-in role, and a screenshot
of each page lands in ``test-artifacts/``. Skipped without chromium, failed under CI=true.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import REPO, InProcessServer, missing_service
from tests.test_dashboard import FAST, seed

CHROMIUM = os.environ.get("DLM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture
async def browser() -> AsyncIterator:
    """Chromium with a fresh profile (Playwright gives each launch its own --user-data-dir)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing_service("the playwright package (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        missing_service(f"chromium at {CHROMIUM} (apt-get install -y chromium)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[InProcessServer, dict]]:
    srv = InProcessServer(f"sqlite:{tmp_path / 'inventory.sqlite'}", tmp_path, fileops=FAST)
    await srv.start()
    try:
        yield srv, await seed(srv, tmp_path)
    finally:
        await srv.stop()


class Tab:
    """A page that records console errors and uncaught exceptions, and waits for the
    dashboard's script to have loaded everything."""

    def __init__(self, page, base: str) -> None:
        self.page = page
        self.base = base.rstrip("/")
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"console: {m.text} ({m.location.get('url')})"))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("dialog", lambda d: d.accept())  # the drain form's confirm()

    async def open(self, path: str) -> None:
        await self.page.goto(self.base + path)
        await self.page.wait_for_selector("body[data-loaded]", timeout=15_000)

    async def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"dashboard-{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def text(self, selector: str) -> str:
        return (await self.page.inner_text(selector)).strip()


async def test_every_page_in_chromium(browser, site) -> None:
    srv, seeded = site
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    tab = Tab(page, srv.url)

    # overview: watermark bars with the policy's numbers, plots drawn
    await tab.open("/")
    disk1 = 'tr[data-storage="disk1"]'
    assert await tab.text(f"{disk1} .wm-high") == "high 90%"
    assert await tab.text(f"{disk1} .wm-low") == "low 70%"
    assert await tab.text(f"{disk1} .occ") == "60%"
    # placed by the script from data-left (the page's CSP allows no inline style)
    assert await page.eval_on_selector(f"{disk1} .wm.high", "n => n.style.left") == "90%"
    assert await page.eval_on_selector(f"{disk1} .wm.low", "n => n.style.left") == "70%"
    assert await page.locator("#plot-occupancy path.series").count() == 3
    assert await page.locator("#plot-occupancy line.wm-line").count() == 2
    assert await page.locator("#plot-bytes rect.bar-copied").count() == 1
    assert await page.locator("#plot-bytes rect.bar-deleted").count() == 1
    assert "open mode" in await tab.text("#who")
    await tab.shot("overview")

    # storages: the draining storage's progress, the actions of an operator
    await tab.open("/dashboard/storages")
    tape = 'tr[data-storage="tape1"]'
    assert "2.01 kB left" in await tab.text(f"{tape} .drain-info")
    assert await page.locator(f'{tape} button:has-text("Stop drain")').count() == 1
    assert await page.locator("#requests-table tbody tr").count() == 1
    await tab.shot("storages")

    # operations: the failed copy with its error
    await tab.open("/dashboard/operations")
    failed = page.locator("#ops-table tbody tr", has_text="broken/x")
    assert await failed.count() == 1 and await failed.locator("td.error").inner_text()
    await tab.shot("operations")

    # cycles: the list, then the Detox cycle with its decisions filtered and its policy
    await tab.open("/dashboard/cycles")
    await page.click(f'a[href="/dashboard/cycles/{seeded["cycle"]}"]')
    await page.wait_for_selector("body[data-loaded] #decisions-table")
    await page.select_option('form[data-slot="decisions"] select[name="outcome"]', "delete")
    # a function, not an expression: Playwright polls an expression with eval(), which the
    # page's Content-Security-Policy forbids
    await page.wait_for_function(
        "() => document.querySelectorAll('#decisions-table tbody tr').length === 4")
    assert "storage.occupancy > 90%" in await tab.text("pre.policy")
    assert "outcome=delete" in page.url
    await tab.shot("cycle")

    # consistency: the report of disk1 with its orphan
    await tab.open("/dashboard/consistency")
    latest = '#consistency-latest tr[data-storage="disk1"]'
    assert await tab.text(f"{latest} td.orphan") == "1 (9 B)"  # the stray file
    await tab.shot("consistency")
    async with page.context.expect_page() as opened:  # the full report, fetched with the token
        await page.click(f"{latest} a[data-authed]")
    report = await opened.value
    await report.wait_for_load_state()
    assert "stray.dat" in await report.content()
    await report.close()

    # search by glob, then the item page
    await tab.open("/dashboard/items")
    await page.fill("#item-search", "set/f[3-4]")
    await page.press("#item-search", "Enter")
    await page.wait_for_selector("#items-table")
    assert await page.locator("#items-table tbody tr").count() == 2
    await tab.shot("search")
    await page.click('#items-table a:has-text("set/f3")')
    await page.wait_for_selector("body[data-loaded] #item-state")
    assert await tab.text("#item-state") == "READY"
    assert await page.locator("#replicas-table tbody tr").count() == 1  # disk2 only now
    assert await page.locator("#item-decisions tbody tr", has_text="candidate").count() >= 1
    await tab.shot("item")

    # an operator's action through the form: drain disk2
    await tab.open("/dashboard/storages")
    await page.click('tr[data-storage="disk2"] button:has-text("Drain")')
    await page.wait_for_selector('tr[data-storage="disk2"] .status-draining')
    assert (await srv.client.request("GET", "/v1/storages/disk2"))["status"] == "draining"

    assert tab.errors == []


async def test_a_reader_sees_no_action(browser, site) -> None:
    """With tokens, the page works from the token kept in the session; a reader's forms are
    hidden (and the API would refuse them)."""
    srv, _ = site
    admin = await srv.client.request("POST", "/v1/tokens", json={"name": "admin",
                                                                  "role": "operator"})
    reader = await srv.client.request("POST", "/v1/tokens", json={"name": "eve",
                                                                   "role": "reader"},
                                      headers={"Authorization": f"Bearer {admin['token']}"})
    context = await browser.new_context()
    await context.add_init_script(
        f"sessionStorage.setItem('dlm-token', {reader['token']!r});")
    tab = Tab(await context.new_page(), srv.url)
    await tab.open("/dashboard/storages")
    assert await tab.text("#who") == "eve (reader)"
    assert await tab.text('tr[data-storage="disk1"] .wm-high') == "high 90%"
    assert await tab.page.locator("form.action:visible").count() == 0
    assert await tab.page.locator("form.action").count() > 0
    await tab.shot("storages-reader")
    assert tab.errors == []
    await context.close()


async def test_a_screenshot_as_docs_dashboard_md_takes_it_shows_the_data(site):
    """The command docs/dashboard.md gives for a report's screenshot waits for the page's
    fragments: the page it captures holds the overview, not "Loading…"."""
    import asyncio

    if not Path(CHROMIUM).exists():
        missing_service(f"chromium at {CHROMIUM} (apt-get install -y chromium)")
    srv, _seeded = site
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
        "--dump-dom", srv.url + "/", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    dom = out.decode()
    assert 'id="overview"' in dom
    overview = dom.split('id="overview"', 1)[1].split("</section>", 1)[0]
    assert "Loading" not in overview and "Storages" in dom
