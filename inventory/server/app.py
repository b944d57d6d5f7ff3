"""The inventory server application: open the store, load memory, start the writer, serve."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from inventory import metadata, retention
from inventory.dashboard import routes as dashboard_routes
from inventory.dashboard.history import history_of
from inventory.feed import ChangeFeed
from inventory.fileops.engine import Backends, FileOpsEngine, FileOpsLimits
from inventory.inventory import Inventory
from inventory.objects import Token
from inventory.scheduler import Scheduler
from inventory.server import (
    crosssite,
    guards,
    metrics,
    routes_admin,
    routes_consistency,
    routes_core,
    routes_feed,
    routes_items,
    routes_openapi,
)
from inventory.server.auth import authenticate
from inventory.server.limits import ServerLimits
from inventory.server.middleware import front
from inventory.server.state import METADATA_LIMITS, PLAN_LIMIT, STATE, ServerState
from inventory.store import Store
from inventory.writes_ops import DeleteStuckItems

log = logging.getLogger("dlm.server")

MAX_BODY = 64 * 1024 * 1024
# A cycle plan carries every decision: ~18 bytes a replica judged (176 MB at 10M replicas).
MAX_PLAN_BODY = 1024 * 1024 * 1024


@dataclass(slots=True)
class ServerConfig:
    """Everything ``make_app`` needs; the CLI and the YAML config fill it."""

    store: Store
    feed_max_changes: int = 1_000_000
    max_body: int = MAX_BODY  # bytes of a request body
    max_plan_body: int = MAX_PLAN_BODY  # bytes of a Detox or Dealer plan (/v1/cycles/*)
    fileops: FileOpsLimits | None = field(default_factory=FileOpsLimits)  # None: no engine
    loopback: bool = True  # listening on a loopback address only: open mode allowed
    tokens: list[Token] = field(default_factory=list)  # from the config file, not stored
    limits: ServerLimits = field(default_factory=ServerLimits)  # what one client may hold
    metadata_limits: metadata.Limits = metadata.LIMITS  # bounds of one item's metadata
    # seconds a finished operation stays in memory (then in the database only); None: forever
    ops_retention: float | None = retention.DEFAULT_OPS_RETENTION


def by_path(routes: Iterable[web.AbstractRouteDef]) -> list[web.AbstractRouteDef]:
    """The routes with each path's methods side by side, paths in the order they first come.

    aiohttp makes one resource of consecutive routes of one path, and resolves a request by
    asking each resource of its path in turn: registered in handler order, ``GET /v1/items``
    (the lookup by name) was tried against 8 resources of other methods or longer paths
    first, a coroutine each."""
    routes = list(routes)
    # a RouteDef's path; a StaticDef's url prefix (its ``path`` is a directory)
    paths = [route.prefix if isinstance(route, web.StaticDef) else getattr(route, "path", index)
             for index, route in enumerate(routes)]
    first: dict[object, int] = {}
    for index, path in enumerate(paths):
        first.setdefault(path, index)
    order = sorted(range(len(routes)), key=lambda index: first[paths[index]])
    return [routes[index] for index in order]


def make_app(config: ServerConfig) -> web.Application:
    app = web.Application(middlewares=[front, crosssite.guard, authenticate],
                          client_max_size=config.max_body)
    crosssite.install(app)
    app[PLAN_LIMIT] = config.max_plan_body
    guards.install(app, config.limits)
    app[METADATA_LIMITS] = config.metadata_limits
    metrics.install(app, lambda: app.get(STATE))
    for module in (routes_core, routes_items, routes_admin, routes_feed, routes_openapi,
                   metrics, routes_consistency, dashboard_routes):
        app.add_routes(by_path(module.routes))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = config.store
        try:
            # Only one server writes a database: ClaimRefused here if another one does.
            await store.claim()
            await store.open()
            schema_version = await store.schema_version()
            inventory = Inventory()
            inventory.retention = config.ops_retention  # the load skips older finished ops
            started = time.perf_counter()
            await store.load(inventory)
            load_seconds = time.perf_counter() - started
            inventory.load_objects(config.tokens)
            # The loaded inventory lives as long as the server: keep the collector from walking
            # its millions of objects again on every full collection.
            gc.collect()
            gc.freeze()
            log.info("inventory loaded", extra={
                "items": inventory.counts.items, "replicas": inventory.counts.replicas,
                "storages": len(inventory.storages), "version": inventory.version,
                "seconds": round(load_seconds, 3), "db": store.describe(),
            })
            feed = ChangeFeed(inventory.version, config.feed_max_changes)
            scheduler = Scheduler(inventory, store, feed)
            await scheduler.start()
            # items a crash or an old writer left EXPIRED with no replica: DELETED, durably
            await scheduler.write(DeleteStuckItems())
            engine = None if config.fileops is None else FileOpsEngine(scheduler, config.fileops)
            # Ingest looks at payloads through the engine's backends (one thread pool or S3
            # client per storage), or its own when the server runs no engine.
            backends = Backends() if engine is None else engine.backends
            app[STATE] = ServerState(inventory, store, feed, scheduler, schema_version,
                                     open_mode=config.loopback, load_seconds=load_seconds,
                                     engine=engine, backends=backends)
            history_of(app)  # the dashboard's occupancy samples start with the server
            sweeping = retention.start(scheduler, config.ops_retention)
            try:
                if engine is not None:
                    await engine.start()
                yield
            finally:
                await retention.stop(sweeping)
                if engine is not None:
                    await engine.stop()
                else:
                    await backends.close()
                await scheduler.stop()
        finally:
            await store.close()

    async def end_long_polls(app: web.Application) -> None:
        if STATE in app:
            app[STATE].feed.close()
            # an ingest checksum of a huge file must not hold the shutdown for minutes
            app[STATE].backends.stop_long_reads()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(end_long_polls)
    return app
