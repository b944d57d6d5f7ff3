"""The snapshot and the change feed: how Detox, Dealer and read-only mirrors see the inventory.

The snapshot is streamed without holding any lock, so a slow consumer never stalls writers:
rows are read chunk by chunk between awaits, and the stream ends with every change committed
since it began. Changes carry whole records (upserts), so applying that tail over the rows gives
exactly the inventory at the version of the ``end`` record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgpack
from aiohttp import web

from inventory import columns
from inventory.errors import BadRequest, Gone
from inventory.feed import (
    CHANGE_KINDS,
    WIRE_ITEM_FIELDS,
    WIRE_REPLICA_FIELDS,
    WIRE_STORAGE_FIELDS,
    item_rows_wire,
    object_wire,
    replica_rows_wire,
    storage_wire,
)
from inventory.objects import CopyRequest
from inventory.server import guards
from inventory.server.auth import IDENTITY
from inventory.server.bodies import MSGPACK, query_int, respond
from inventory.server.state import ServerState, state_of

routes = web.RouteTableDef()

SNAPSHOT_FORMAT = "dlm-snapshot/1"
# Rows per msgpack object, built straight from the columns: small enough that building one
# (~3 ms) never holds the loop long, nor many megabytes per stream, however many streams run.
CHUNK = 500


async def _open_stream(request: web.Request, content_type: str,
                       version: int) -> web.StreamResponse:
    """A prepared streaming answer for a snapshot at ``version`` (for HEAD: already ended)."""
    response = await guards.open_stream(request, content_type, {"X-DLM-Version": str(version)})
    if request.method == "HEAD":  # aiohttp sends what is written even here: the stream would
        await response.write_eof()  # land on the keep-alive connection as a bogus next answer
    return response


def _with_secrets(request: web.Request) -> bool:
    """Storage credentials go only to operators (Consistency needs them to list a storage)."""
    _name, role = request.get(IDENTITY, (None, None))
    return role == "operator"


@routes.get("/v1/snapshot")
async def snapshot(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    start = state.inventory.version
    if request.method == "HEAD":
        return await _open_stream(request, MSGPACK, start)
    with guards.unless_internal(guards.gates(request).snapshots, request):
        response = await _open_stream(request, MSGPACK, start)
        await guards.stream(request, response,
                            _records(state, start, _with_secrets(request)), "snapshot")
    return response


async def _records(state: ServerState, start: int, secrets: bool) -> AsyncIterator[bytes]:
    """The record snapshot's messages, a chunk of rows at a time, built only when the reader
    has taken the previous ones (the caller sends each before asking for the next)."""
    inv, feed = state.inventory, state.feed
    pack = msgpack.Packer(use_bin_type=True).pack
    yield pack({
        "format": SNAPSHOT_FORMAT,
        "version": start,
        "fields": {"storage": WIRE_STORAGE_FIELDS, "item": WIRE_ITEM_FIELDS,
                   "replica": WIRE_REPLICA_FIELDS, "request": CopyRequest.columns()},
        "counts": {"storages": len(inv.storages), "items": inv.counts.items,
                   "replicas": inv.counts.replicas},
    })
    yield pack(["storages", [storage_wire(s.record(), secrets=secrets)
                             for s in inv.storages.values()]])
    # the requests that pin copies: Detox keeps what they pin (inventory.pins)
    yield pack(["requests", [object_wire(r) for r in inv.requests.values()
                             if r.pin_until is not None]])
    total = len(inv.i_oid)
    for lo in range(0, total, CHUNK):
        yield pack(["items", item_rows_wire(inv, lo, min(total, lo + CHUNK))])
    total = len(inv.r_item)
    for lo in range(0, total, CHUNK):
        yield pack(["replicas", replica_rows_wire(inv, lo, min(total, lo + CHUNK))])
    try:
        tail, reached = feed.since(start, limit=1 << 62)
    except LookupError:
        yield pack(["error", {
            "code": "gone",
            "message": "the inventory changed faster than the snapshot was read; retry",
        }])
    else:
        yield pack(["changes", tail])
        yield pack(["end", {"version": reached}])


@routes.get("/v1/snapshot/columns")
async def column_snapshot(request: web.Request) -> web.StreamResponse:
    """The inventory as columns (``inventory.columns``): what Detox plans on."""
    state = state_of(request)
    wanted = frozenset(filter(None, request.query.get("with", "").split(",")))
    unknown = sorted(wanted - set(columns.OPTIONAL))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; expected a "
                         f"comma-separated list of {', '.join(columns.OPTIONAL)}", "with")
    if request.method == "HEAD":  # the headers only: no copy of every column for nothing
        return await _open_stream(request, columns.MEDIA_TYPE, state.inventory.version)
    with guards.unless_internal(guards.gates(request).snapshots, request):
        copied = columns.copy_columns(state.inventory, wanted)  # no await before this returns
        response = await _open_stream(request, columns.MEDIA_TYPE, copied["version"])
        secrets = _with_secrets(request)
        pack = msgpack.Packer(use_bin_type=True).pack
        await guards.stream(request, response, columns.encode_stream(
            copied, lambda s: storage_wire(s, secrets=secrets), pack), "column snapshot")
    return response


@routes.get("/v1/changes")
async def changes(request: web.Request) -> web.Response:
    """Committed changes after ``since``; with ``wait`` (seconds) a long poll for the next ones."""
    state = state_of(request)
    feed = state.feed
    since_text = request.query.get("since")
    if since_text is None:
        raise BadRequest("required: the version of your snapshot or of the last changes read",
                         "since")
    try:
        since = int(since_text)
    except ValueError:
        raise BadRequest(f"expected an integer version, got {since_text!r}", "since") from None
    if since > feed.version or since < 0:
        raise BadRequest(f"version {since} is not between 0 and the inventory's {feed.version}",
                         "since")
    wait = query_int(request, "wait", 0, 0, 300)
    limit = query_int(request, "limit", 10_000, 1, 1_000_000)
    kinds = None
    if "kinds" in request.query:
        kinds = frozenset(request.query["kinds"].split(","))
        unknown = sorted(kinds - set(CHANGE_KINDS))
        if unknown:
            raise BadRequest(f"unknown kind(s) {', '.join(map(repr, unknown))}; expected a "
                             f"comma-separated list of {', '.join(CHANGE_KINDS)}", "kinds")
    if wait and since >= feed.version:
        with guards.unless_internal(guards.gates(request).long_polls, request):
            await feed.wait(since, wait)
    try:
        transactions, reached = feed.since(since, limit, kinds)
    except LookupError:
        raise Gone(f"changes after version {since} are no longer kept (oldest kept: "
                   f"{feed.base_version}); take a new snapshot", "since") from None
    return respond(request, {"version": reached, "transactions": transactions})
