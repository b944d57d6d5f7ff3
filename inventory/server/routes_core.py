"""Health and storages."""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import suppress

from aiohttp import web

from inventory import model, validate
from inventory.errors import BadRequest, Conflict, NotFound
from inventory.server.auth import PUBLIC, requires
from inventory.server.bodies import decode, respond
from inventory.server.state import state_of
from inventory.server.views import storage_json
from inventory.specs import StoragePatch, StorageSpec
from inventory.storage import posix
from inventory.writes import (
    AddStorage,
    RemoveStorage,
    UpdateStorage,
    check_storage_config,
    real_roots,
)

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
        # writes refused until the claim is back; looked at now (a file's inode for SQLite),
        # not only when a write tries it
        "claim_lost": state.scheduler.check_claim(),
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

ROOT_CHECK_SECONDS = 10.0  # a hung mount must not hold the request for ever


@routes.post("/v1/storages")
@requires("operator")
async def add_storage(request: web.Request) -> web.Response:
    """Register a storage; a POSIX root that does not exist is warned about (``warnings``),
    or created with ``create_root``: copies never create it (posix.py)."""
    spec = await decode(request, StorageSpec)
    spec.root = validate.storage_root(spec.kind, spec.root)
    check_storage_config(spec.kind, spec.root, spec.config)
    warnings, made = await _posix_root(spec)
    try:
        state = state_of(request)
        reals = None
        if spec.kind == "posix":  # a hung mount gives up on real paths, never on the check
            roots = [spec.root, *(s.root for s in state.inventory.storages.values()
                                  if s.kind == "posix")]
            with suppress(TimeoutError):
                reals = await asyncio.wait_for(asyncio.to_thread(real_roots, roots),
                                               ROOT_CHECK_SECONDS)
        storage = await state.scheduler.write(AddStorage(spec, reals or {}))
    except BaseException:
        if made:
            await asyncio.to_thread(posix.unmake_root, made)
        raise
    return respond(request, {**storage_json(storage), "warnings": warnings}, status=201)


async def _posix_root(spec: StorageSpec) -> tuple[list[str], list[str]]:
    """(warnings, directories made) for a new storage's root, as the server sees it."""
    if spec.kind != "posix":
        if spec.create_root:
            raise BadRequest("only a posix root is a directory the server can create",
                             "create_root")
        return [], []
    root = spec.root
    if not root.startswith("/"):
        return [], []  # AddStorage refuses it
    try:
        exists = await asyncio.wait_for(asyncio.to_thread(os.path.isdir, root),
                                        ROOT_CHECK_SECONDS)
    except TimeoutError:
        return [f"root {root} did not answer within {ROOT_CHECK_SECONDS:g} s (a hung "
                f"mount?); copies to it fail as unreachable until it does"], []
    if exists:
        return [], []
    if await asyncio.to_thread(os.path.exists, root):
        raise BadRequest(f"root {root} exists on the server and is not a directory", "root")
    if not spec.create_root:
        return [f"root {root} does not exist on the server: copies to this storage fail as "
                f"unreachable until it does (mount the volume, or have the server create it: "
                f"create_root, `dlm storage add --create-root`)"], []
    try:
        made = await asyncio.to_thread(posix.make_root, root)
    except OSError as exc:
        raise Conflict(f"cannot create root {root}: {exc.strerror or exc}", "root") from exc
    return [], made


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


@routes.delete("/v1/storages/{name}")
@requires("operator")
async def remove_storage(request: web.Request) -> web.Response:
    """Remove an empty storage: 409 naming the reason while anything still uses it."""
    result = await state_of(request).scheduler.write(RemoveStorage(request.match_info["name"]))
    return respond(request, result)


@routes.patch("/v1/storages/{name}")
@requires("operator")
async def change_storage(request: web.Request) -> web.Response:
    patch = await decode(request, StoragePatch)
    write = UpdateStorage(request.match_info["name"], patch)
    await state_of(request).scheduler.write(write)
    storage = state_of(request).inventory.storage_by_name[request.match_info["name"]]
    return respond(request, storage_json(storage))
