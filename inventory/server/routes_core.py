"""Health, storages and items: the REST endpoints of the inventory core."""

from __future__ import annotations

import base64
import json
import time

from aiohttp import web

from inventory import model, validate
from inventory.errors import BadRequest, NotFound
from inventory.server.bodies import decode, query_int, respond
from inventory.server.state import state_of
from inventory.server.views import item_json, storage_json
from inventory.specs import ItemSpec, StorageSpec
from inventory.writes import AddItems, AddStorage

routes = web.RouteTableDef()


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    state = state_of(request)
    inv = state.inventory
    counts = inv.counts
    return respond(request, {
        "status": "ok",
        "version": inv.version,
        "storages": len(inv.storages),
        "items": counts.items,
        "replicas": counts.replicas,
        "items_by_state": dict(zip(model.ITEM_STATES, counts.items_by_state, strict=True)),
        "db": {"backend": state.store.backend, "url": state.store.describe(),
               "schema_version": state.schema_version},
        "uptime": round(time.time() - state.started, 3),
        "load_seconds": round(state.load_seconds, 3),
    })


# ------------------------------------------------------------------------------- storages

@routes.post("/v1/storages")
async def add_storage(request: web.Request) -> web.Response:
    spec = await decode(request, StorageSpec)
    storage = await state_of(request).scheduler.write(AddStorage(spec))
    return respond(request, storage_json(storage), status=201)


@routes.get("/v1/storages")
async def list_storages(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    storages = sorted(inv.storages.values(), key=lambda s: s.name)
    return respond(request, {"storages": [storage_json(s) for s in storages]})


@routes.get("/v1/storages/{name}")
async def show_storage(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    storage = state_of(request).inventory.storage_by_name.get(name)
    if storage is None:
        raise NotFound(f"no storage named {name!r}", "name")
    return respond(request, storage_json(storage))


# ------------------------------------------------------------------------------- items

@routes.post("/v1/items")
async def add_items(request: web.Request) -> web.Response:
    body = await decode(request, ItemSpec | list[ItemSpec], root="items")
    single = isinstance(body, ItemSpec)
    write = AddItems([body] if single else body, batch=not single)
    records = await state_of(request).scheduler.write(write)
    inv = state_of(request).inventory
    if single:
        return respond(request, item_json(inv, inv.by_oid[records[0].oid]), status=201)
    fmt = model.format_uuid
    return respond(request, {
        "count": len(records),
        "items": [{"oid": fmt(r.oid), "item_name": r.item_name, "item_version": r.item_version}
                  for r in records],
    }, status=201)


@routes.get("/v1/items/{oid}")
async def show_item(request: web.Request) -> web.Response:
    oid = validate.uuid_value(request.match_info["oid"], "oid")
    inv = state_of(request).inventory
    row = inv.row_of_oid(oid)
    if row is None:
        raise NotFound(f"no item with oid {request.match_info['oid']}", "oid")
    return respond(request, item_json(inv, row))


@routes.get("/v1/items")
async def find_items(request: web.Request) -> web.Response:
    """Items by name (exact or glob), latest version unless ``version`` is a number or ``all``."""
    inv = state_of(request).inventory
    query = request.query
    name = query.get("name")
    if not name:
        raise BadRequest("required (an item name or a glob such as 'run42/*')", "name")
    limit = query_int(request, "limit", 100, 1, 10_000)
    version_text = query.get("version", "latest")
    state_text = query.get("state")
    state = None
    if state_text is not None:
        if state_text not in model.ITEM_STATE:
            raise BadRequest(f"expected one of {', '.join(model.ITEM_STATES)}", "state")
        state = model.ITEM_STATE[state_text]
    after = decode_cursor(query.get("cursor"))
    if version_text == "latest":
        rows = inv.rows_matching_name(name)
    elif version_text == "all":
        rows = inv.rows_matching_name(name, latest_only=False)
    else:
        try:
            version = int(version_text)
        except ValueError:
            raise BadRequest("expected 'latest', 'all' or a version number", "version") from None
        rows = (r for r in (inv.row_of_name(inv.i_name[x], version)
                            for x in inv.rows_matching_name(name)) if r is not None)
    # Results come in (name, newest version first) order; the cursor is the last key returned.
    out: list[dict] = []
    next_cursor = None
    last: tuple[str, int] = ("", 0)
    for row in rows:
        key = (inv.i_name[row], -inv.i_version[row])
        if after is not None and key <= after:
            continue
        if state is not None and inv.i_state[row] != state:
            continue
        if len(out) == limit:
            next_cursor = encode_cursor(last)
            break
        out.append(item_json(inv, row))
        last = key
    return respond(request, {"items": out, "cursor": next_cursor})


def encode_cursor(key: tuple[str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def decode_cursor(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    try:
        name, neg_version = json.loads(base64.urlsafe_b64decode(text.encode()))
        if isinstance(name, str) and isinstance(neg_version, int):
            return name, neg_version
    except (ValueError, TypeError):
        pass
    raise BadRequest("not a cursor returned by this endpoint", "cursor")
