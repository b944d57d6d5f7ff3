"""The dashboard's routes: public page shells and assets; fragments and plot data for readers.

Browsers do not send a Bearer header when they navigate, so a page is only a shell (navigation,
a token box, empty slots) and is public; its script fetches every fragment and figure with the
token kept in ``sessionStorage`` (none in open mode), and those routes need ``reader`` like any
GET of the API. Actions go straight to the API from the script (``PATCH /v1/storages/{name}``,
``POST /v1/requests``), so the API's roles decide them.

The handlers carry ``dlm_dashboard``: they are not part of the REST API the OpenAPI document
describes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from inventory import model
from inventory.dashboard import figures, fragments
from inventory.dashboard.history import history_of
from inventory.dashboard.markup import h, page, slot
from inventory.decisions import decode as decode_decisions
from inventory.decisions import read_bound
from inventory.errors import BadRequest, NotFound
from inventory.inventory import Inventory
from inventory.objects import Cycle
from inventory.retention import find_operations
from inventory.server.auth import IDENTITY, PUBLIC, requires
from inventory.server.bodies import query_int
from inventory.server.limits import ServerLimits
from inventory.server.state import LIMITS, state_of

routes = web.RouteTableDef()

CONSISTENCY_REPORTS = "/v1/consistency/reports"
SEARCH_LIMIT = 200
ITEM_DECISION_CYCLES = 5  # recent Detox cycles searched for an item's decisions
_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_HTML = "text/html"


def dashboard(handler: Callable) -> Callable:
    """Mark a handler as the dashboard's (not the API's)."""
    handler.dlm_dashboard = True
    return handler


def has_route(app: web.Application, path: str) -> bool:
    """Whether ``app`` serves a GET at ``path`` (the consistency reports come with another
    part of the server; the page shows once they exist)."""
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if route.method == "GET" and (info.get("path") or info.get("formatter")) == path:
            return True
    return False


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type=_HTML,
                        headers={"Cache-Control": "no-store"})


def _page(request: web.Request, title: str, body: str, current: str) -> web.Response:
    history_of(request.app)  # sampling starts with the first look at the dashboard
    return _html(page(title, body, current=current,
                      consistency=has_route(request.app, CONSISTENCY_REPORTS)))


# ------------------------------------------------------------------------------- pages

@routes.get("/")
@requires(PUBLIC)
@dashboard
async def overview(request: web.Request) -> web.Response:
    body = (
        slot("overview", "/dashboard/fragments/overview")
        + '<section class="plots"><h2>Trends</h2>'
        '<figure class="plot" id="plot-occupancy" data-plot="occupancy"><figcaption>Occupancy '
        'over time (Detox cycles and samples taken every minute while the server runs)'
        '</figcaption><div class="canvas">Loading…</div></figure>'
        '<figure class="plot" id="plot-bytes" data-plot="bytes"><figcaption>Bytes copied and '
        'deleted per day (finished operations, UTC days)</figcaption>'
        '<div class="canvas">Loading…</div></figure></section>')
    return _page(request, "Overview", body, "/")


@routes.get("/dashboard/storages")
@requires(PUBLIC)
@dashboard
async def storages_page(request: web.Request) -> web.Response:
    body = (slot("storages", "/dashboard/fragments/storages")
            + '<section><h2>Copy requests</h2>'
            + slot("requests", "/dashboard/fragments/requests") + "</section>")
    return _page(request, "Storages", body, "/dashboard/storages")


@routes.get("/dashboard/operations")
@requires(PUBLIC)
@dashboard
async def operations_page(request: web.Request) -> web.Response:
    return _page(request, "Operations", slot("operations", "/dashboard/fragments/operations"),
                 "/dashboard/operations")


@routes.get("/dashboard/cycles")
@requires(PUBLIC)
@dashboard
async def cycles_page(request: web.Request) -> web.Response:
    return _page(request, "Cycles", slot("cycles", "/dashboard/fragments/cycles"),
                 "/dashboard/cycles")


@routes.get("/dashboard/cycles/{id}")
@requires(PUBLIC)
@dashboard
async def cycle_page(request: web.Request) -> web.Response:
    cycle_id = _int(request, "id")
    return _page(request, f"Cycle #{cycle_id}",
                 slot("cycle", f"/dashboard/fragments/cycles/{cycle_id}"), "/dashboard/cycles")


@routes.get("/dashboard/consistency")
@requires(PUBLIC)
@dashboard
async def consistency_page(request: web.Request) -> web.Response:
    if not has_route(request.app, CONSISTENCY_REPORTS):
        raise NotFound("this server has no consistency reports")
    return _page(request, "Consistency",
                 slot("consistency", "/dashboard/fragments/consistency"),
                 "/dashboard/consistency")


@routes.get("/dashboard/items")
@requires(PUBLIC)
@dashboard
async def items_page(request: web.Request) -> web.Response:
    body = (
        '<form class="refine search" data-slot="items" role="search">'
        '<label>Name or glob <input type="search" name="name" id="item-search" '
        'placeholder="obs/2026-*/scan-?.ms" autofocus></label>'
        '<button type="submit">Search</button></form>'
        + slot("items", "/dashboard/fragments/items", ""))
    return _page(request, "Items", body, "/dashboard/items")


@routes.get("/dashboard/items/{oid}")
@requires(PUBLIC)
@dashboard
async def item_page(request: web.Request) -> web.Response:
    oid = _oid(request)
    return _page(request, "Item", slot("item", f"/dashboard/fragments/items/{oid}"),
                 "/dashboard/items")


@routes.get("/dashboard/static/{name}")
@requires(PUBLIC)
@dashboard
async def asset(request: web.Request) -> web.Response:
    """The script and the style sheet, from the package: nothing comes from the internet."""
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise NotFound(f"no asset {name!r}")
    data = resources.files("inventory.dashboard").joinpath("static", name).read_bytes()
    return web.Response(body=data, content_type=_ASSETS[name], charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


# ------------------------------------------------------------------------------- fragments

@routes.get("/dashboard/fragments/overview")
@requires("reader")
@dashboard
async def overview_fragment(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    marks = figures.watermarks(inv)
    rows = figures.storage_rows(inv, history_of(request.app))
    recent = sorted(inv.cycles.values(), key=lambda c: -c.id)[:5]
    cycle_rows = "".join(
        f'<li><a href="/dashboard/cycles/{c.id}">{h(c.kind)} #{c.id}</a> '
        f'{fragments.time_tag(c.started)}: {h(fragments.cycle_line(c))}</li>' for c in recent)
    counts = figures.operation_counts(inv)
    op_text = "; ".join(
        f"{kind}: " + ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
        for kind, by_state in sorted(counts.items()) if by_state) or "none yet"
    return _html(
        "<section><h2>Storages</h2>"
        + fragments.storages(rows, actions=False,
                             watermark_cycle=marks.cycle_id if marks else None)
        + '</section><section class="twocol"><div><h2>Recent cycles</h2>'
        + (f'<ul class="cycles">{cycle_rows}</ul>' if cycle_rows
           else '<p class="empty">No cycle has run yet.</p>')
        + '</div><div><h2>Operations</h2><p id="op-summary">' + h(op_text)
        + '</p><p><a href="/dashboard/operations">Operations in detail</a></p></div></section>')


@routes.get("/dashboard/fragments/storages")
@requires("reader")
@dashboard
async def storages_fragment(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    marks = figures.watermarks(inv)
    rows = figures.storage_rows(inv, history_of(request.app))
    return _html(fragments.storages(rows, actions=True,
                                    watermark_cycle=marks.cycle_id if marks else None)
                 + fragments.copy_request_form(inv))


@routes.get("/dashboard/fragments/requests")
@requires("reader")
@dashboard
async def requests_fragment(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    found = sorted(inv.requests.values(), key=lambda r: -r.id)[:500]
    return _html(fragments.requests_table(inv, found, "requests-table"))


@routes.get("/dashboard/fragments/operations")
@requires("reader")
@dashboard
async def operations_fragment(request: web.Request) -> web.Response:
    state = request.query.get("state") or "queued,running,failed"
    allowed = {"all", *("queued", "running", "done", "failed", "cancelled")}
    if not set(state.split(",")) <= allowed:
        raise BadRequest(f"unknown state in {state!r}", "state")
    server = state_of(request)
    wanted = () if state == "all" else tuple(state.split(","))
    listed = await find_operations(server.inventory, server.store, states=wanted, limit=500,
                                   newest_first=True)
    return _html(fragments.operations(server.inventory, state, listed))


@routes.get("/dashboard/fragments/cycles")
@requires("reader")
@dashboard
async def cycles_fragment(request: web.Request) -> web.Response:
    return _html(fragments.cycles(state_of(request).inventory))


@routes.get("/dashboard/fragments/cycles/{id}")
@requires("reader")
@dashboard
async def cycle_fragment(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    return _html(fragments.cycle(inv, _cycle(inv, request)))


@routes.get("/dashboard/fragments/cycles/{id}/decisions")
@requires("reader")
@dashboard
async def decisions_fragment(request: web.Request) -> web.Response:
    state = state_of(request)
    cycle = _cycle(state.inventory, request)
    wanted = {k: request.query[k] for k in ("storage", "rule", "outcome") if request.query.get(k)}
    limit = query_int(request, "limit", 500, 1, 10_000)
    offset = query_int(request, "cursor", 0, 0, 2**62)
    blob = await state.store.cycle_decisions(cycle.id)
    found, next_cursor = await asyncio.to_thread(
        select_decisions, blob, state.inventory, wanted, offset, limit,
        request.app[LIMITS].max_decision_bytes)
    return _html(fragments.decisions(state.inventory, cycle.id, found, next_cursor, wanted))


@routes.get("/dashboard/fragments/consistency")
@requires("reader")
@dashboard
async def consistency_fragment(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    found = sorted((c for c in inv.cycles.values() if c.kind == "consistency"),
                   key=lambda c: -c.id)
    return _html(fragments.consistency(found))


@routes.get("/dashboard/fragments/items")
@requires("reader")
@dashboard
async def items_fragment(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    pattern = request.query.get("name", "").strip()
    rows: list[int] = []
    if pattern:
        try:
            row = inv.row_of_oid(model.parse_uuid(pattern))
            rows = [] if row is None else [row]
        except ValueError:
            for row in inv.rows_matching_name(pattern):
                rows.append(row)
                if len(rows) >= SEARCH_LIMIT:
                    break
    return _html(fragments.item_search(inv, pattern, rows, SEARCH_LIMIT))


@routes.get("/dashboard/fragments/items/{oid}")
@requires("reader")
@dashboard
async def item_fragment(request: web.Request) -> web.Response:
    state = state_of(request)
    inv = state.inventory
    oid = model.parse_uuid(_oid(request))
    row = inv.row_of_oid(oid)
    if row is None:
        raise NotFound(f"no item {model.format_uuid(oid)}", "oid")
    recent = sorted((c for c in inv.cycles.values() if c.kind == "detox"),
                    key=lambda c: -c.id)[:ITEM_DECISION_CYCLES]
    found: list[tuple[Cycle, dict[str, Any]]] = []
    for cycle in recent:
        blob = await state.store.cycle_decisions(cycle.id)
        for record in await asyncio.to_thread(decisions_about, blob, inv, oid,
                                              request.app[LIMITS].max_decision_bytes):
            found.append((cycle, record))
    return _html(fragments.item(inv, row, found))


# ------------------------------------------------------------------------------- data

@routes.get("/dashboard/data/plots")
@requires("reader")
@dashboard
async def plot_data(request: web.Request) -> web.Response:
    """The numbers the overview's plots draw (JSON: the script turns them into SVG)."""
    inv = state_of(request).inventory
    marks = figures.watermarks(inv)
    series = figures.occupancy_series(inv, history_of(request.app))
    return web.json_response({
        "occupancy": {name: [[round(t, 3), round(o, 6)] for t, o in points]
                      for name, points in series.items()},
        "watermarks": None if marks is None else {"high": marks.high, "low": marks.low,
                                                  "cycle": marks.cycle_id},
        "bytes_per_day": figures.bytes_per_day(inv),
    }, headers={"Cache-Control": "no-store"})


@routes.get("/dashboard/data/whoami")
@requires("reader")
@dashboard
async def whoami(request: web.Request) -> web.Response:
    """Who the token is, so the script can hide the forms this role may not use."""
    name, role = request.get(IDENTITY, (None, "reader"))
    return web.json_response({"name": name, "role": role, "open": name == "open"},
                             headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------- helpers

def _int(request: web.Request, name: str) -> int:
    try:
        return int(request.match_info[name])
    except ValueError:
        raise BadRequest(f"expected an integer, got {request.match_info[name]!r}",
                         name) from None


def _oid(request: web.Request) -> str:
    text = request.match_info["oid"]
    try:
        return model.format_uuid(model.parse_uuid(text))
    except ValueError:
        raise BadRequest(f"not an oid: {text!r}", "oid") from None


def _cycle(inv: Inventory, request: web.Request) -> Cycle:
    cycle = inv.cycles.get(_int(request, "id"))
    if cycle is None:
        raise NotFound(f"no cycle {request.match_info['id']}", "id")
    return cycle


def _with_storage(inv: Inventory, record: dict[str, Any]) -> dict[str, Any]:
    storage_id = record.get("storage_id")
    storage = inv.storages.get(storage_id) if isinstance(storage_id, int) else None
    record["storage"] = None if storage is None else storage.name
    return record


def select_decisions(blob: bytes | None, inv: Inventory, wanted: dict[str, str], offset: int,
                     limit: int, per_decision: int = ServerLimits().max_decision_bytes,
                     ) -> tuple[list[dict[str, Any]], int | None]:
    """A page of a cycle's decisions matching ``wanted`` (storage name, rule, outcome), and
    the cursor of the next page. Run in a thread: a cycle may hold millions."""
    columns, rows = decode_decisions(blob, read_bound(per_decision, inv))
    out: list[dict[str, Any]] = []
    for index in range(offset, len(rows)):
        record = _with_storage(inv, dict(zip(columns, rows[index], strict=True)))
        if any(str(record.get(k)) != v for k, v in wanted.items()):
            continue
        if len(out) == limit:
            return out, index
        out.append(record)
    return out, None


def decisions_about(blob: bytes | None, inv: Inventory, oid: int,
                    per_decision: int = ServerLimits().max_decision_bytes) -> list[dict[str, Any]]:
    """The decisions of one cycle about the replicas of one item (a replica's uid is its
    item's oid with the storage id in the last 16 bits)."""
    columns, rows = decode_decisions(blob, read_bound(per_decision, inv))
    if "uid" not in columns:
        return []
    at = columns.index("uid")
    prefix = model.format_uuid(oid)[:-4]
    return [_with_storage(inv, dict(zip(columns, r, strict=True))) for r in rows
            if isinstance(r[at], str) and r[at][:-4] == prefix]
