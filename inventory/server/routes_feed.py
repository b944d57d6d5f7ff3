"""The snapshot and the change feed: how Detox, Dealer and read-only mirrors see the inventory.

The snapshot is streamed without holding any lock, so a slow consumer never stalls writers:
rows are read chunk by chunk between awaits, and the stream ends with every change committed
since it began. Changes carry whole records (upserts), so applying that tail over the rows gives
exactly the inventory at the version of the ``end`` record.
"""

from __future__ import annotations

import asyncio

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
from inventory.server.auth import IDENTITY
from inventory.server.bodies import MSGPACK, query_int, respond
from inventory.server.state import state_of

routes = web.RouteTableDef()

SNAPSHOT_FORMAT = "dlm-snapshot/1"
CHUNK = 20_000  # rows per msgpack object; built straight from the columns
SEND_AHEAD = 64 << 20  # bytes of encoded snapshot buffered ahead of a slower reader


async def _open_stream(request: web.Request, content_type: str,
                       version: int) -> web.StreamResponse:
    """A prepared streaming answer for a snapshot at ``version`` (for HEAD: already ended)."""
    response = web.StreamResponse(headers={"Content-Type": content_type,
                                           "X-DLM-Version": str(version)})
    await response.prepare(request)
    transport = request.transport
    if transport is not None:
        # Let the encoder run up to ~64 MiB ahead of the reader: with the default 64 KiB the
        # two sides take turns (the reader decodes a chunk while the writer waits for room),
        # and a snapshot takes the sum of their CPU times instead of the larger one.
        transport.set_write_buffer_limits(high=SEND_AHEAD)
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
    inv, feed = state.inventory, state.feed
    start = inv.version
    response = await _open_stream(request, MSGPACK, start)
    if request.method == "HEAD":
        return response
    pack = msgpack.Packer(use_bin_type=True).pack
    await response.write(pack({
        "format": SNAPSHOT_FORMAT,
        "version": start,
        "fields": {"storage": WIRE_STORAGE_FIELDS, "item": WIRE_ITEM_FIELDS,
                   "replica": WIRE_REPLICA_FIELDS, "request": CopyRequest.columns()},
        "counts": {"storages": len(inv.storages), "items": inv.counts.items,
                   "replicas": inv.counts.replicas},
    }))
    secrets = _with_secrets(request)
    await response.write(pack(["storages", [storage_wire(s.record(), secrets=secrets)
                                            for s in inv.storages.values()]]))
    # the requests that pin copies: Detox keeps what they pin (inventory.pins)
    await response.write(pack(["requests", [object_wire(r) for r in inv.requests.values()
                                            if r.pin_until is not None]]))
    total = len(inv.i_oid)
    for lo in range(0, total, CHUNK):
        await response.write(pack(["items", item_rows_wire(inv, lo, min(total, lo + CHUNK))]))
        await asyncio.sleep(0)
    total = len(inv.r_item)
    for lo in range(0, total, CHUNK):
        await response.write(pack(["replicas",
                                   replica_rows_wire(inv, lo, min(total, lo + CHUNK))]))
        await asyncio.sleep(0)
    try:
        tail, reached = feed.since(start, limit=1 << 62)
    except LookupError:
        await response.write(pack(["error", {
            "code": "gone",
            "message": "the inventory changed faster than the snapshot was read; retry",
        }]))
    else:
        await response.write(pack(["changes", tail]))
        await response.write(pack(["end", {"version": reached}]))
    await response.write_eof()
    return response


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
    copied = columns.copy_columns(state.inventory, wanted)  # no await before this returns
    response = await _open_stream(request, columns.MEDIA_TYPE, copied["version"])
    secrets = _with_secrets(request)
    pack = msgpack.Packer(use_bin_type=True).pack
    async for message in columns.encode_stream(
            copied, lambda s: storage_wire(s, secrets=secrets), pack):
        await response.write(message)
    await response.write_eof()
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
    if wait:
        await feed.wait(since, wait)
    try:
        transactions, reached = feed.since(since, limit, kinds)
    except LookupError:
        raise Gone(f"changes after version {since} are no longer kept (oldest kept: "
                   f"{feed.base_version}); take a new snapshot", "since") from None
    return respond(request, {"version": reached, "transactions": transactions})
