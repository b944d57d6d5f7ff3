"""What the running server holds, reachable from handlers through a typed app key."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from inventory import metadata
from inventory.feed import ChangeFeed
from inventory.inventory import Inventory
from inventory.scheduler import Scheduler
from inventory.server.limits import ServerLimits
from inventory.store import Store


@dataclass(slots=True)
class ServerState:
    inventory: Inventory
    store: Store
    feed: ChangeFeed
    scheduler: Scheduler
    schema_version: int
    open_mode: bool = False  # no token needed while none exists (loopback servers only)
    started: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    engine: Any = None  # the FileOpsEngine, when this server runs one
    internal_token_hash: str | None = None  # of the token scheduled cycles and workers use
    read_workers: Any = None  # workers.ReadWorkers, when ``dlm serve --workers N`` runs some
    backends: Any = None  # fileops.engine.Backends: the storages as this server reaches them


STATE = web.AppKey("state", ServerState)
PLAN_LIMIT = web.AppKey("plan_limit", int)  # bytes a Detox or Dealer plan may have
LIMITS = web.AppKey("limits", ServerLimits)  # what one client may hold (the limits: settings)
METADATA_LIMITS = web.AppKey("metadata_limits", metadata.Limits)  # of one item's metadata


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE]
