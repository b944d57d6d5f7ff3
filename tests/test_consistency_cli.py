"""``dlm consistency`` on the command line, and its HTML report in a real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from consistency import report as reports
from consistency.diff import DiffOptions, Known, apply_checksums, diff
from inventory.cli import main
from inventory.storage.base import Entry
from tests.test_consistency import FAST, make_site, plant

CI = os.environ.get("CI") == "true"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict]:
    """A site (tests/test_consistency.py) served from its own thread, for the CLI to call."""
    ready = threading.Event()
    holder: dict = {}

    async def serve() -> None:
        srv = await make_site(tmp_path, fileops=FAST)
        holder.update(url=srv.url, site=srv)
        ready.set()
        while not holder.get("stop"):
            await asyncio.sleep(0.02)
        await srv.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(30)
        yield holder
    finally:
        holder["stop"] = True
        thread.join(30)


def test_cli_writes_every_format_and_exits_zero(served, tmp_path, capsys):
    plant(served["site"])
    out = tmp_path / "disk1.csv"
    code = main(["consistency", "disk1", "--url", served["url"], "--checksums", "all",
                 "--max-missing", "50%", "--report", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "missing                    2" in captured.out and "report written to" in captured.out
    rows = out.read_text().splitlines()
    assert len(rows) == 6 and rows[0].startswith("storage,kind,path")
    code = main(["consistency", "disk1", "--url", served["url"], "--max-missing", "0.5",
                 "--checksums", "none", "--report", "-", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["path"] for r in report["findings"]["orphan"]] == ["stray/old.dat"]
    assert report["options"]["checksums"] == "none" and report["id"] == 2


def test_cli_safety_limit_exits_3_with_the_reason(served, tmp_path, capsys):
    for i in range(10):
        (served["site"].roots["disk1"] / f"set/f{i}").unlink()
    code = main(["consistency", "disk1", "--url", served["url"], "--fix",
                 "--report", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code == 3
    [line] = captured.err.splitlines()
    assert "safety limit" in line and "10 of 10 replicas" in line
    stored = json.loads((tmp_path / "r.json").read_text())
    assert stored["safety"] and len(stored["findings"]["missing"]) == 10


@pytest.mark.parametrize("argv, status, message", [
    (["nope"], 1, "no storage named 'nope'"),
    (["disk1", "--grace", "soon"], 2, "--grace"),
    (["disk1", "--max-missing", "150%"], 2, "--max-missing"),
    (["disk1", "--fix", "--no-store"], 2, "--no-store"),
    (["disk1", "--report", "/no/such/dir/r.html"], 2, "--report"),
])
def test_cli_errors_are_one_line(served, capsys, argv, status, message):
    assert main(["consistency", *argv, "--url", served["url"]]) == status
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_unmounted_storage_and_unreachable_server(served, capsys):
    root = served["site"].roots["disk1"]
    root.rename(root.with_name("moved"))
    assert main(["consistency", "disk1", "--url", served["url"]]) == 1
    err = capsys.readouterr().err
    assert "missing (not mounted?)" in err and len(err.splitlines()) == 1
    assert main(["consistency", "disk1", "--url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the DLM server" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- the pure diff

def test_diff_rules_in_isolation():
    old, started = 1_000.0, 10_000.0
    entries = [Entry("a", 10, old), Entry("b", 5, old), Entry("c", 7, old),
               Entry("dark", 1, old), Entry("young", 1, started - 60),
               Entry("moving", 3, old), Entry("v", 4, old)]
    known = [
        Known("a", "oid-a", "complete", 10, "00000001", 1.0),  # ok
        Known("b", "oid-b", "complete", 6, None, 1.0),  # size mismatch
        Known("c", "oid-c", "complete", None, None, 1.0),  # unknown size: ok
        Known("gone", "oid-g", "complete", 3, None, 1.0),  # missing
        Known("late", "oid-l", "complete", 3, None, started + 1),  # created after: skipped
        Known("pending", "oid-p", "pending", 3, None, 1.0),  # not complete: skipped
        Known("moving", "oid-m", "complete", 9, None, 1.0),  # in flight: skipped
        Known("v", "oid-v1", "complete", 4, None, 1.0),  # two versions of one name:
        Known("v", "oid-v2", "complete", 4, None, 1.0),  # one object, both fine
    ]
    result = diff(entries, known, DiffOptions(started, grace=3600, in_flight={"moving"}))
    found = {k: [f.path for f in rows] for k, rows in result.findings.items()}
    assert found == {"missing": ["gone"], "orphan": ["dark"], "size_mismatch": ["b"],
                     "checksum_mismatch": []}
    assert result.ok == 4 and result.expected == 6
    assert result.skipped == {"young": 1, "in_flight": 1, "not_complete": 1,
                              "new_replica": 1, "symlink": 0}
    assert [r.path for r in result.verifiable] == ["a"]
    apply_checksums(result, {e.path: e for e in entries}, [(result.verifiable[0], "0000ffff")])
    assert [f.path for f in result.findings["checksum_mismatch"]] == ["a"] and result.ok == 3
    assert result.summary()["missing_fraction"] == round(1 / 6, 6)


# ----------------------------------------------------------------------------- HTML in Chromium

def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if CI:
        pytest.fail("chromium is required under CI=true (apt-get install -y chromium)")
    pytest.skip("chromium not installed (apt-get install -y chromium)")
    return None


def dump_dom(url: str, tmp_path: Path) -> str:
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=2000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_html_report_in_a_headless_browser(served, tmp_path, capsys):
    plant(served["site"])
    page = tmp_path / "report.html"
    assert main(["consistency", "disk1", "--url", served["url"], "--checksums", "all",
                 "--max-missing", "50%", "--report", str(page)]) == 0
    capsys.readouterr()
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    dom = dump_dom(page.as_uri() + "#sort=missing:expected_size:desc", tmp_path)
    # the summary, rendered, at the top
    assert dom.index('id="summary"') < dom.index('id="t-missing"')
    for kind, count in (("missing", 2), ("orphan", 1), ("size_mismatch", 1),
                        ("checksum_mismatch", 1), ("ok", 6)):
        assert f'data-class="{kind}"><td>{kind}</td><td class="n">{count}</td>' in dom
    # one table per class with its rows, and the script sorted the missing table on load
    for kind, names in (("missing", ["set/f7", "set/f1"]), ("orphan", ["stray/old.dat"]),
                        ("size_mismatch", ["set/f2"]), ("checksum_mismatch", ["set/f3"])):
        table = dom[dom.index(f'id="t-{kind}"'):]
        table = table[:table.index("</table>")]
        assert [n for n in names if n in table] == names
        assert [table.index(n) for n in names] == sorted(table.index(n) for n in names)
    assert 'data-sorted="expected_size:desc"' in dom  # set/f7 (1007 B) before set/f1


def test_html_escapes_hostile_paths():
    row = reports.finding_row(("orphan", "<script>alert(1)</script>", None, None, 1, None,
                               None, 0.0, None))
    page = reports.to_html(reports.build({"storage": {"name": "s<1>"}, "counts": {}}, [row]))
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
