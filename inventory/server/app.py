"""The inventory server application: open the store, load memory, start the writer, serve."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from inventory.feed import ChangeFeed
from inventory.inventory import Inventory
from inventory.scheduler import Scheduler
from inventory.server import routes_core, routes_feed
from inventory.server.middleware import errors_as_json
from inventory.server.state import STATE, ServerState
from inventory.store import Store

log = logging.getLogger("dlm.server")

MAX_BODY = 64 * 1024 * 1024


@dataclass(slots=True)
class ServerConfig:
    """Everything ``make_app`` needs; the CLI and the YAML config fill it."""

    store: Store
    feed_max_changes: int = 1_000_000
    max_body: int = MAX_BODY


def make_app(config: ServerConfig) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=config.max_body)
    app.add_routes(routes_core.routes)
    app.add_routes(routes_feed.routes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = config.store
        await store.open()
        try:
            schema_version = await store.schema_version()
            inventory = Inventory()
            started = time.perf_counter()
            await store.load(inventory)
            load_seconds = time.perf_counter() - started
            log.info("inventory loaded", extra={
                "items": inventory.counts.items, "replicas": inventory.counts.replicas,
                "storages": len(inventory.storages), "version": inventory.version,
                "seconds": round(load_seconds, 3), "db": store.describe(),
            })
            feed = ChangeFeed(inventory.version, config.feed_max_changes)
            scheduler = Scheduler(inventory, store, feed)
            await scheduler.start()
            app[STATE] = ServerState(inventory, store, feed, scheduler, schema_version,
                                     load_seconds=load_seconds)
            try:
                yield
            finally:
                await scheduler.stop()
        finally:
            await store.close()

    app.cleanup_ctx.append(lifecycle)
    return app
