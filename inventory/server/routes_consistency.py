"""Consistency reports: stored (and with ``fix`` acted on) as one write, listed, and rendered.

A report is a ``Cycle(kind="consistency")`` whose summary is the report's header plus the
compressed rows of its findings (``cycle_report``), so reports need no table of their own and
appear in ``GET /v1/history`` with the Detox and Dealer cycles. The routes' OpenAPI entries are
registered here, beside the routes, in ``openapi.OPERATIONS``.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
from aiohttp import web

from consistency import report as reports
from inventory.errors import BadRequest, NotFound
from inventory.objects import Cycle
from inventory.server import openapi
from inventory.server.auth import requires
from inventory.server.bodies import decode, query_int, respond, sent
from inventory.server.routes_admin import cycle_json
from inventory.server.state import state_of
from inventory.writes_consistency import (
    BLOB_COLUMNS,
    ApplyConsistencyReport,
    ConsistencyReportIn,
    OrphanDeletionsIn,
    RecordOrphanDeletions,
)

routes = web.RouteTableDef()
KIND = "consistency"


@routes.post("/v1/consistency/reports")
@requires("operator")
async def add_report(request: web.Request) -> web.Response:
    """``dlm consistency`` hands in its report here; with ``fix`` the repairs are applied in
    the same write, and the orphan paths it may delete are in ``delete_orphans``."""
    body = await decode(request, ConsistencyReportIn)
    state = state_of(request)
    cycle, confirmed = await state.scheduler.write(ApplyConsistencyReport(body))
    response = await sent(request, respond(
        request, {**cycle_json(cycle), "delete_orphans": confirmed}, status=201))
    if state.engine is not None and cycle.summary["fix"] and \
            cycle.summary["fix"]["applied"].get("recopies"):
        state.engine.wake()  # once the answer is out
    return response


@routes.post("/v1/consistency/reports/{id}/deletions")
@requires("operator")
async def add_deletions(request: web.Request) -> web.Response:
    """``dlm consistency --fix`` says what became of each orphan the report confirmed (deleted,
    or kept and why), so the served report says what was really done."""
    body = await decode(request, OrphanDeletionsIn)
    state = state_of(request)
    cycle = _cycle(state, request.match_info["id"])
    rows = _rows(await state.store.cycle_decisions(cycle.id))
    cycle = await state.scheduler.write(RecordOrphanDeletions(cycle.id, body.outcomes, rows))
    return respond(request, cycle_json(cycle))


def _cycle(state: Any, text: str) -> Cycle:
    cycle = state.inventory.cycles.get(int(text)) if text.isdigit() and len(text) < 19 else None
    if cycle is None or cycle.kind != KIND:
        raise NotFound(f"no consistency report {text}", "id")
    return cycle


@routes.get("/v1/consistency/reports")
async def list_reports(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    name = request.query.get("storage")
    if name is not None and name not in inv.storage_by_name:
        raise BadRequest(f"no storage named {name!r}", "storage")
    limit = query_int(request, "limit", 100, 1, 10_000)
    found = [c for c in sorted(inv.cycles.values(), key=lambda c: -c.id)
             if c.kind == KIND and (name is None or _storage_name(c) == name)][:limit]
    return respond(request, {"reports": [cycle_json(c) for c in found]})


@routes.get("/v1/consistency/reports/{id}")
async def show_report(request: web.Request) -> web.Response:
    fmt = request.query.get("format", "json")
    if fmt not in reports.FORMATS:
        raise BadRequest(f"expected one of {', '.join(reports.FORMATS)}", "format")
    state = state_of(request)
    cycle = _cycle(state, request.match_info["id"])
    report = full_report(cycle, await state.store.cycle_decisions(cycle.id))
    if fmt == "json":
        return respond(request, report)
    return web.Response(text=reports.render(report, fmt), content_type=reports.content_type(fmt),
                        charset="utf-8")


def _storage_name(cycle: Cycle) -> str | None:
    storage = cycle.summary.get("storage")
    return storage.get("name") if isinstance(storage, dict) else None


def full_report(cycle: Cycle, blob: bytes | None) -> dict[str, Any]:
    """The report as ``consistency.report.build`` makes it: header from the cycle, rows from
    its blob."""
    header = {"id": cycle.id, **cycle.summary}
    rows = []
    for values in _rows(blob):
        record = dict(zip(BLOB_COLUMNS, values, strict=True))
        finding = [record["outcome"], *(record[c] for c in BLOB_COLUMNS[2:-1])]
        rows.append(reports.finding_row(finding, record["action"]))
    return reports.build(header, rows)


def _rows(blob: bytes | None) -> list[list[Any]]:
    if blob is None:
        return []
    try:
        data = msgpack.unpackb(zlib.decompress(blob), raw=False)
        if list(data["columns"]) == list(BLOB_COLUMNS):
            return data["rows"]
    except (zlib.error, ValueError, KeyError, TypeError, msgpack.UnpackException):
        pass
    return []


# ------------------------------------------------------------------------------- OpenAPI

_ID = openapi.path("id", {"type": "integer"}, "the report's id (its cycle id)")
openapi.OPERATIONS.update({
    ("POST", "/v1/consistency/reports"): openapi.Op(
        "Store a consistency report; with `fix`, apply its repairs", "operator",
        {201: dict[str, Any]}, (*openapi.WRITE_ERRORS,), body=dict[str, Any],
        tag="operations",
        description="Sent by `dlm consistency` (docs/consistency.md): the storage, the listing's "
                    "start and end, the inventory version, options, counts and the findings "
                    "per class as `[path, oid, expected_size, size, expected_checksum, "
                    "checksum, mtime, replica_created]`. Answers with the recorded cycle and "
                    "`delete_orphans`, the orphan paths confirmed unknown and old enough to "
                    "delete."),
    ("POST", "/v1/consistency/reports/{id}/deletions"): openapi.Op(
        "Record what became of a report's confirmed orphans", "operator",
        {200: dict[str, Any]}, (*openapi.WRITE_ERRORS, 404), (_ID,), body=dict[str, Any],
        tag="operations",
        description="Sent by `dlm consistency --fix` after it deleted (or, checking once more, "
                    "kept) the orphans the report confirmed: `{\"outcomes\": {path: "
                    "\"deleted\" or why not}}`. Each path must be an orphan the report "
                    "confirmed and not yet recorded (else 400, field `outcomes`); a report "
                    "stored without `fix` is 409. The stored report's rows then carry these "
                    "actions and `fix.orphans_deleted` counts the deletions."),
    ("GET", "/v1/consistency/reports"): openapi.Op(
        "Consistency reports, newest first", "reader", {200: dict[str, Any]}, (400,),
        (openapi.query("storage", {"type": "string"}, "only reports of this storage"),
         openapi.LIMIT), tag="operations"),
    ("GET", "/v1/consistency/reports/{id}"): openapi.Op(
        "One consistency report with every finding", "reader", {200: dict[str, Any]},
        (400, 404), (_ID, openapi.query("format", openapi.enum(reports.FORMATS),
                                        "json (default), html (a page for site admins) or csv")),
        tag="operations",
        description="`format=html` answers `text/html`, `format=csv` answers `text/csv`."),
})
