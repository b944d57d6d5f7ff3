"""HTML building blocks: escaping, number formats, the page shell.

Plain f-strings with ``h()`` around every value that did not come from this file: the pages are
a few tables, and a template engine would add a dependency for no gain in safety. Attribute
values are always double-quoted and escaped with ``quote=True``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

STATIC = "/dashboard/static"
DASH = "\u2013"  # what a missing value shows
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def h(value: object) -> str:
    """Escaped text for HTML content or a double-quoted attribute; None shows as a dash."""
    return DASH if value is None else html.escape(str(value), quote=True)


def attr_json(value: Any) -> str:
    """A JSON value escaped for a double-quoted attribute (``data-body`` of action forms)."""
    return html.escape(json.dumps(value, separators=(",", ":")), quote=True)


def size(n: float | None) -> str:
    """Bytes in decimal units, three significant figures: 1.23 GB."""
    if n is None:
        return DASH
    value, unit = float(n), 0
    while abs(value) >= 1000 and unit < len(_UNITS) - 1:
        value /= 1000
        unit += 1
    if unit == 0:
        return f"{int(value)} B"
    return f"{value:.3g} {_UNITS[unit]}"


def pct(fraction: float | None, digits: int = 1) -> str:
    if fraction is None:
        return DASH
    text = f"{fraction * 100:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"


def when(ts: float | None) -> str:
    """A UTC time to the second; the ISO form goes in ``<time datetime>``."""
    if ts is None or ts != ts:
        return DASH
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def time_tag(ts: float | None) -> str:
    if ts is None or ts != ts:
        return DASH
    iso = datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    return f'<time datetime="{h(iso)}" data-sort="{ts:.3f}">{h(when(ts))}</time>'


def duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def rate(bytes_per_second: float | None) -> str:
    return DASH if bytes_per_second is None else f"{size(bytes_per_second)}/s"


def table(table_id: str, headers: Iterable[str], rows: Iterable[str], *,
          empty: str = "Nothing here.", caption: str = "") -> str:
    """A sortable table; ``rows`` are ready ``<tr>`` strings (their cells already escaped)."""
    body = "".join(rows)
    head = "".join(f'<th scope="col">{h(title)}</th>' for title in headers)
    cap = f"<caption>{h(caption)}</caption>" if caption else ""
    if not body:
        return f'<p class="empty" id="{h(table_id)}">{h(empty)}</p>'
    return (f'<table class="sortable" id="{h(table_id)}">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def td(content: str, sort: object = None, cls: str = "") -> str:
    """A cell of already-escaped ``content``; ``sort`` is the value sorting uses."""
    extra = f' data-sort="{h(sort)}"' if sort is not None else ""
    klass = f' class="{h(cls)}"' if cls else ""
    return f"<td{klass}{extra}>{content}</td>"


def filter_box(table_id: str, label: str = "Filter") -> str:
    return (f'<label class="filter">{h(label)} <input type="search" '
            f'data-filter-for="{h(table_id)}" placeholder="text in any column"></label>')


NAV = (("/", "Overview"), ("/dashboard/storages", "Storages"),
       ("/dashboard/operations", "Operations"), ("/dashboard/cycles", "Cycles"),
       ("/dashboard/consistency", "Consistency"), ("/dashboard/items", "Items"))


def page(title: str, body: str, *, current: str, consistency: bool) -> str:
    """The shell every page shares: navigation, the token box, the assets. It carries no
    inventory data (it is served without a token); ``body`` holds placeholders the script
    fills with fragments fetched with the token."""
    links = "".join(
        f'<a href="{h(href)}"{" aria-current=page" if href == current else ""}>{h(text)}</a>'
        for href, text in NAV if consistency or text != "Consistency")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{h(title)} · DLM</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{STATIC}/dashboard.css">
<script defer src="{STATIC}/dashboard.js"></script>
</head>
<body>
<header>
<a class="brand" href="/">DLM</a>
<nav>{links}</nav>
<form id="login" autocomplete="off">
<span id="who" aria-live="polite"></span>
<input type="password" id="token" name="token" placeholder="API token" aria-label="API token">
<button type="submit" id="sign-in">Use token</button>
<button type="button" id="sign-out" hidden>Forget token</button>
</form>
</header>
<main>
<h1>{h(title)}</h1>
<p id="notice" class="notice" role="status" hidden></p>
{body}
</main>
</body>
</html>
"""


def slot(slot_id: str, url: str, text: str = "Loading…") -> str:
    """A placeholder the script fills with the fragment at ``url``."""
    return f'<div id="{h(slot_id)}" class="slot" data-fragment="{h(url)}">{h(text)}</div>'
