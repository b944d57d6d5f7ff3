"""Health and storages."""

from __future__ import annotations

import time

from aiohttp import web

from inventory import model
from inventory.errors import NotFound
from inventory.server.auth import PUBLIC, requires
from inventory.server.bodies import decode, respond
from inventory.server.state import state_of
from inventory.server.views import storage_json
from inventory.specs import StoragePatch, StorageSpec
from inventory.writes import AddStorage, UpdateStorage

routes = web.RouteTableDef()


@routes.get("/v1/health")
@requires(PUBLIC)
async def health(request: web.Request) -> web.Response:
    state = state_of(request)
    inv = state.inventory
    counts = inv.counts
    broken = state.scheduler.broken
    return respond(request, {
        "status": "broken" if broken else "ok",
        "problem": broken,
        "version": inv.version,
        "storages": len(inv.storages),
        "items": counts.items,
        "replicas": counts.replicas,
        "items_by_state": dict(zip(model.ITEM_STATES, counts.items_by_state, strict=True)),
        "db": {"backend": state.store.backend, "url": state.store.describe(),
               "schema_version": state.schema_version},
        "uptime": round(time.time() - state.started, 3),
        "load_seconds": round(state.load_seconds, 3),
        "auth": "open" if state.open_mode and not inv.tokens else "tokens",
        "read_workers": [] if state.read_workers is None else state.read_workers.describe(),
    }, status=503 if broken else 200)


# ------------------------------------------------------------------------------- storages

@routes.post("/v1/storages")
@requires("operator")
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


@routes.patch("/v1/storages/{name}")
@requires("operator")
async def change_storage(request: web.Request) -> web.Response:
    patch = await decode(request, StoragePatch)
    write = UpdateStorage(request.match_info["name"], patch)
    await state_of(request).scheduler.write(write)
    storage = state_of(request).inventory.storage_by_name[request.match_info["name"]]
    return respond(request, storage_json(storage))
