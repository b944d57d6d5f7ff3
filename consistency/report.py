"""Consistency reports: one dict, three renderings (JSON for machines, HTML for site admins,
CSV for spreadsheets).

A report is a header (storage, listing start and end, inventory version, options, counts and
bytes per class, the safety verdict, what the fix did) plus one row per inconsistent path. The
same dict comes out of ``dlm consistency --report`` and ``GET /v1/consistency/reports/{id}``, so
a report read from the server renders exactly like the one the run wrote.

The HTML page is self-contained (inline CSS and script, nothing fetched), so it can be mailed to
a site or opened from a ticket years later: the summary first, then one sortable table per class
(click a column header; ``#sort=CLASS:COLUMN:asc|desc`` in the URL sorts on load).
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from consistency.diff import CLASSES, FINDING_COLUMNS, Finding
from inventory import model

FORMAT = "dlm-consistency/1"
FORMATS: tuple[str, ...] = ("json", "html", "csv")
ROW_COLUMNS: tuple[str, ...] = (*FINDING_COLUMNS, "action")
_TIME_COLUMNS = frozenset({"mtime", "replica_created"})
HTML_ROWS = 50_000  # per class: a browser stays usable; JSON and CSV carry every row
_TITLES = {"missing": "Missing (in the inventory, not on the storage)",
           "orphan": "Orphan / dark (on the storage, unknown to the inventory)",
           "size_mismatch": "Size mismatch",
           "checksum_mismatch": "Checksum mismatch"}


def finding_row(finding: Finding | tuple, action: str | None = None) -> dict[str, Any]:
    """One row of the report: a finding's fields by name, times as ISO-8601."""
    row: dict[str, Any] = {}
    for name, value in zip(FINDING_COLUMNS, finding, strict=True):
        row[name] = model.format_time(value) if name in _TIME_COLUMNS else value
    row["action"] = action
    return row


def build(header: Mapping[str, Any], rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The report dict: ``header`` fields, then ``findings`` grouped by class in path order."""
    findings: dict[str, list[dict[str, Any]]] = {kind: [] for kind in CLASSES}
    for row in rows:
        findings.setdefault(row["kind"], []).append(row)
    for kind_rows in findings.values():
        kind_rows.sort(key=lambda r: r["path"])
    return {"format": FORMAT, **header, "findings": findings}


def render(report: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return to_json(report)
    if fmt == "html":
        return to_html(report)
    if fmt == "csv":
        return to_csv(report)
    raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")


def content_type(fmt: str) -> str:
    return {"json": "application/json", "html": "text/html", "csv": "text/csv"}[fmt]


def to_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"


def to_csv(report: Mapping[str, Any]) -> str:
    """Every finding, one row each; the storage name repeated so files can be concatenated."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["storage", *ROW_COLUMNS])
    storage = report.get("storage", {}).get("name", "")
    for kind in _kinds(report):
        for row in report["findings"][kind]:
            writer.writerow([storage, *("" if row.get(c) is None else row.get(c)
                                        for c in ROW_COLUMNS)])
    return out.getvalue()


def _kinds(report: Mapping[str, Any]) -> list[str]:
    findings = report.get("findings", {})
    return [k for k in CLASSES if k in findings] + [k for k in findings if k not in CLASSES]


def human_bytes(n: float | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.15em;margin:1.6em 0 .4em}
table{border-collapse:collapse;margin:.3em 0} td,th{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top} th{background:#f2f2f2} td.n{text-align:right}
table.findings th{cursor:pointer;user-select:none} table.findings th:after{content:" \\2195";
color:#999} .bad{background:#fde8e8} .good{background:#e8f6e8} .warn{background:#fff4d6;
padding:.5em;border:1px solid #e0b400} .meta td:first-child{font-weight:600}
code{font-size:.95em}
"""

_SCRIPT = """
(function(){
  function key(cell, numeric){
    var t = cell.getAttribute('data-v'); if (t === null) t = cell.textContent;
    if (numeric) { var n = parseFloat(t); return isNaN(n) ? -Infinity : n; }
    return t;
  }
  function sortTable(table, col, dir){
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var numeric = table.tHead.rows[0].cells[col].getAttribute('data-type') === 'num';
    rows.sort(function(a, b){
      var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
      return (x < y ? -1 : x > y ? 1 : 0) * (dir === 'desc' ? -1 : 1);
    });
    rows.forEach(function(r){ body.appendChild(r); });
    table.setAttribute('data-sorted', table.tHead.rows[0].cells[col].getAttribute('data-col')
                       + ':' + dir);
  }
  document.querySelectorAll('table.findings').forEach(function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th, i){
      th.addEventListener('click', function(){
        var cur = table.getAttribute('data-sorted') || '';
        var dir = cur === th.getAttribute('data-col') + ':asc' ? 'desc' : 'asc';
        sortTable(table, i, dir);
      });
    });
  });
  var m = /#sort=([^:]+):([^:]+):(asc|desc)/.exec(location.hash);
  if (m) {
    var table = document.getElementById('t-' + m[1]);
    if (table) Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th, i){
      if (th.getAttribute('data-col') === m[2]) sortTable(table, i, m[3]);
    });
  }
})();
"""
# The page's inline blocks, for the Content-Security-Policy the server serves it with (by hash).
INLINE_STYLES = (_CSS,)
INLINE_SCRIPTS = (_SCRIPT,)

_NUMERIC = frozenset({"expected_size", "size"})
_NUM_ATTR = ' data-type="num"'


def to_html(report: Mapping[str, Any]) -> str:
    storage = report.get("storage", {})
    summary = report.get("counts", {})
    listing = report.get("listing", {})
    name = storage.get("name", "?")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Consistency of {_e(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Consistency of storage <code>{_e(name)}</code></h1>",
    ]
    if report.get("safety"):
        parts.append(f'<p class="warn" id="safety">Not fixed: {_e(report["safety"])}</p>')
    meta = [
        ("storage", f"{storage.get('name', '')} ({storage.get('kind', '')}: "
                    f"{storage.get('root', '')})"),
        ("report id", report.get("id")),
        ("listing started", listing.get("started")),
        ("listing ended", listing.get("ended")),
        ("duration", f"{report.get('duration', 0):.1f} s (listing "
                     f"{listing.get('seconds', 0):.1f} s)"),
        ("inventory version", report.get("inventory_version")),
        ("options", ", ".join(f"{k}={v}" for k, v in report.get("options", {}).items())),
    ]
    parts.append('<table class="meta" id="meta">')
    parts.extend(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in meta)
    parts.append("</table>")
    parts.append('<h2>Summary</h2><table id="summary"><thead><tr><th>class</th>'
                 "<th>paths</th><th>bytes</th></tr></thead><tbody>")
    for kind in (*CLASSES, "ok"):
        entry = summary.get(kind, {"count": 0, "bytes": 0})
        css = "good" if kind == "ok" else ("bad" if entry["count"] else "")
        parts.append(f'<tr class="{css}" data-class="{_e(kind)}"><td>{_e(kind)}</td>'
                     f'<td class="n">{entry["count"]}</td>'
                     f'<td class="n" data-v="{entry["bytes"]}">'
                     f"{_e(human_bytes(entry['bytes']))}</td></tr>")
    parts.append("</tbody></table>")
    skipped = summary.get("skipped", {})
    parts.append(
        f"<p>Listed {summary.get('listed', {}).get('count', 0)} objects "
        f"({_e(human_bytes(summary.get('listed', {}).get('bytes', 0)))}); "
        f"{summary.get('expected', 0)} complete replicas judged; checksums read: "
        f"{summary.get('checksums_read', 0)}; left alone as in flight: "
        + ", ".join(f"{_e(k)} {v}" for k, v in skipped.items()) + ".</p>")
    fix = report.get("fix")
    if fix:
        parts.append(f'<h2>Fix</h2><pre id="fix">{_e(json.dumps(fix, indent=2))}</pre>')
    links = report.get("symlinks")
    if links:  # POSIX: never objects, never deleted; what they reach is kept
        parts.append(f'<h2 id="h-symlinks">Symlinks (never deleted; what they reach is kept): '
                     f'{len(links)}</h2><table id="symlinks"><thead><tr><th>path</th>'
                     "<th>target</th></tr></thead><tbody>")
        parts.extend(f"<tr><td>{_e(link.get('path'))}</td><td>"
                     f"{_e(link.get('target') or '(outside the root or dangling)')}</td></tr>"
                     for link in links[:HTML_ROWS])
        parts.append("</tbody></table>")
    for kind in _kinds(report):
        rows = report["findings"][kind]
        parts.append(f'<h2 id="h-{_e(kind)}">{_e(_TITLES.get(kind, kind))}: {len(rows)}</h2>')
        if not rows:
            parts.append("<p>None.</p>")
            continue
        if len(rows) > HTML_ROWS:
            parts.append(f"<p>The first {HTML_ROWS} of {len(rows)} by path; the JSON and CSV "
                         "reports have all of them.</p>")
        head = "".join(f'<th data-col="{c}"{_NUM_ATTR if c in _NUMERIC else ""}>{c}</th>'
                       for c in ROW_COLUMNS)
        parts.append(f'<table class="findings" id="t-{_e(kind)}"><thead><tr>{head}</tr>'
                     "</thead><tbody>")
        for row in rows[:HTML_ROWS]:
            cells = "".join(
                f'<td class="n">{_e(row.get(c))}</td>' if c in _NUMERIC
                else f"<td>{_e(row.get(c))}</td>" for c in ROW_COLUMNS)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</tbody></table>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"
