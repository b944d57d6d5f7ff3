"""A read worker process (started by ``dlm serve --workers N``, see workers.py).

It loads the inventory from the database, follows the primary's change feed, and answers the
item queries (``GET /v1/items...``) from memory; every other request, and any read it cannot
answer as freshly as the primary, goes to the primary over its private Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable

import aiohttp
import msgpack
from aiohttp import web

from inventory.errors import Unauthorized, Unavailable
from inventory.feed import ChangeFeed
from inventory.inventory import Inventory
from inventory.logs import REQUEST_ID
from inventory.mirror import apply_transactions
from inventory.objects import Token
from inventory.server import crosssite, guards, routes_items
from inventory.server.auth import MALFORMED_TOKEN, authenticate
from inventory.server.bodies import MSGPACK
from inventory.server.connections import GuardedSite, raise_file_limit, runner_options
from inventory.server.limits import ServerLimits
from inventory.server.middleware import front
from inventory.server.state import STATE, ServerState
from inventory.server.workers import READY_LINE, WORKER_ENV, SharedVersion, WorkerSpec
from inventory.store import Store, open_store

log = logging.getLogger("dlm.read_worker")

FRESH_WAIT = 1.0  # seconds a read waits for the feed before the primary answers it instead
POLL_WAIT = 30  # seconds of each long poll of the primary's feed
POLL_LIMIT = 50_000  # records per feed answer
# Headers that describe one hop, not the message: never forwarded (RFC 9110, 7.6.1).
_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                  "trailer", "transfer-encoding", "upgrade", "host", "content-length"))
# The queries a worker answers itself: they read items and replicas only.
LOCAL_ROUTES: tuple[tuple[str, Callable], ...] = (
    ("/v1/items/exists", routes_items.exists),
    ("/v1/items", routes_items.find_items),
    ("/v1/items/{oid}", routes_items.show_item),
    ("/v1/items/{oid}/storages", routes_items.item_storages),
    ("/v1/items/{oid}/children", routes_items.item_children),
)


class Follower:
    """Keeps a worker's inventory equal to the primary's, a long poll of the feed at a time."""

    def __init__(self, state: ServerState, spec: WorkerSpec, session: aiohttp.ClientSession,
                 config_tokens: list[Token]) -> None:
        self.state = state
        self.spec = spec
        self.session = session
        self.shared = SharedVersion(spec.shared)
        self.config_tokens = config_tokens
        self.token_generation = self.shared.read()[1]  # read before the tokens are loaded
        self._advanced = asyncio.Event()
        self._token_reload: asyncio.Task | None = None

    @property
    def inventory(self) -> Inventory:
        return self.state.inventory

    def caught_up(self) -> bool:
        """``fresh()`` without waiting, for the common case (no coroutine per request): this
        worker has every version the primary acknowledged and holds its tokens."""
        version, tokens = self.shared.read()
        return tokens == self.token_generation and self.inventory.version >= version

    async def fresh(self) -> bool:
        """Whether this worker may answer now: it has applied every version the primary had
        acknowledged when the request arrived, and holds the primary's tokens."""
        version, tokens = self.shared.read()
        if tokens != self.token_generation:
            if self._token_reload is None or self._token_reload.done():
                self._token_reload = asyncio.create_task(self._reload_tokens(tokens))
            return False
        if self.inventory.version >= version:
            return True
        deadline = time.monotonic() + FRESH_WAIT
        while self.inventory.version < version:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), left)
        return True

    async def _reload_tokens(self, generation: int) -> None:
        try:
            stored = await self.state.store.stored_tokens()
        except Exception as exc:
            log.warning("cannot re-read tokens; forwarding meanwhile", extra={"error": str(exc)})
            return
        inv = self.inventory
        for name in list(inv.tokens):
            inv.remove_token(name)
        inv.load_objects([*stored, *self.config_tokens])
        self.token_generation = generation
        log.info("tokens re-read", extra={"tokens": len(inv.tokens)})

    async def run(self) -> None:
        """Follow the feed until the primary is gone for good (then the worker exits)."""
        failures = 0
        headers = {"Authorization": f"Bearer {self.spec.token}", "Accept": MSGPACK}
        while True:
            params = {"since": str(self.inventory.version), "wait": str(POLL_WAIT),
                      "limit": str(POLL_LIMIT)}
            try:
                async with self.session.get("http://primary/v1/changes", params=params,
                                            headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=POLL_WAIT + 30)
                                            ) as resp:
                    body = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                failures += 1
                if failures >= 10:
                    log.error("the primary does not answer; stopping",
                              extra={"error": str(exc)})
                    return
                await asyncio.sleep(min(0.1 * 2 ** failures, 5.0))
                continue
            failures = 0
            if status == 410:  # fell behind what the primary keeps: load the database again
                log.warning("fell behind the change feed; reloading the inventory")
                await self.reload()
                continue
            if status == 400:  # the database is ahead of the primary's memory for a moment
                await asyncio.sleep(0.05)
                continue
            if status != 200:
                log.error("the primary refused the feed", extra={"status": status})
                await asyncio.sleep(1.0)
                continue
            answer = msgpack.unpackb(body, raw=False)
            inv = self.inventory
            apply_transactions(inv, answer["transactions"])
            # Transactions without a record for the feed (a token created or deleted) are not
            # sent, but the primary's committed version counts them: without this the worker
            # never reached that version, and every read waited FRESH_WAIT then was forwarded.
            inv.version = max(inv.version, answer["version"])
            # finished operations the feed brought: nothing here reads them
            inv.drop_finished_operations(math.inf, len(inv.finished_operations))
            self._advanced.set()
            self._advanced = asyncio.Event()

    async def reload(self) -> None:
        self.token_generation = self.shared.read()[1]
        self.state.inventory = await load_inventory(self.state.store, self.config_tokens)


async def load_inventory(store: Store, config_tokens: list[Token]) -> Inventory:
    inventory = Inventory()
    inventory.retention = 0.0  # a worker answers no operation query: live ones only
    await store.load(inventory)
    inventory.load_objects(config_tokens)
    gc.collect()
    gc.freeze()  # as in the primary: the loaded inventory is not garbage
    return inventory


def forwardable_headers(request: web.Request) -> dict[str, str]:
    """The request's headers as the primary gets them: without hop-by-hop ones, and without
    values that were not UTF-8 on the wire (aiohttp's client cannot send such a value again;
    a bearer token that is not text is refused here, as the primary would)."""
    headers = {}
    for key, value in request.headers.items():
        if key.lower() in _HOP:
            continue
        try:
            value.encode()
        except UnicodeEncodeError:
            if key.lower() == "authorization":
                raise Unauthorized(MALFORMED_TOKEN, "Authorization") from None
            continue
        headers[key] = value
    return headers


def make_read_app(state: ServerState, follower: Follower, session: aiohttp.ClientSession,
                  limits: ServerLimits | None = None) -> web.Application:
    async def forward(request: web.Request) -> web.StreamResponse:
        """Send the request to the primary and stream its answer back unchanged."""
        headers = forwardable_headers(request)
        request_id = REQUEST_ID.get()
        if request_id:
            headers["X-Request-Id"] = request_id
        data = request.content if request.body_exists else None
        try:
            upstream = await session.request(
                request.method, "http://primary" + request.rel_url.raw_path_qs,
                headers=headers, data=data, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"the primary server does not answer: {exc}") from None
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP or key.lower() == "content-length":
                    response.headers.add(key, value)
            await response.prepare(request)
            # the primary's answer streams through as the client takes it, never faster
            await guards.stream(request, response, upstream.content.iter_chunked(256 << 10),
                                "forwarded answer", encoded=False)
            return response

    @web.middleware
    async def serve_or_forward(request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.match_info.handler is forward or not (follower.caught_up()
                                                         or await follower.fresh()):
            return await forward(request)
        try:
            response = await authenticate(request, handler)
        except Unauthorized:
            return await forward(request)  # its tokens may be newer: the primary decides
        response.headers["X-DLM-Worker"] = worker
        return response

    worker = str(follower.spec.index)
    # No body is read here: the item queries have none, everything else streams to the
    # primary, whose limits apply.
    app = web.Application(middlewares=[front, crosssite.guard, serve_or_forward])
    crosssite.install(app)
    app[STATE] = state
    guards.install(app, limits or ServerLimits())
    for path, handler in LOCAL_ROUTES:
        app.router.add_get(path, handler)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the primary dies, even by SIGKILL (prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


async def run(spec: WorkerSpec) -> int:
    from inventory.serve_cli import config_tokens, server_limits

    tokens = config_tokens(spec.config_tokens, "config")
    limits = server_limits(spec.limits, "config")
    store = open_store(spec.db, spec.data_dir)
    await store.open()
    connector = aiohttp.UnixConnector(path=spec.socket, limit=0)
    session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    runner = None
    try:
        started = time.perf_counter()
        state = ServerState(Inventory(), store, ChangeFeed(0), None, await store.schema_version(),
                            open_mode=spec.loopback)
        follower = Follower(state, spec, session, tokens)
        state.inventory = await load_inventory(store, tokens)
        state.load_seconds = time.perf_counter() - started
        state.internal_token_hash = hashlib.sha256(spec.token.encode()).hexdigest()
        runner = web.AppRunner(make_read_app(state, follower, session, limits),
                               access_log=None, handle_signals=False,
                               **runner_options(limits))
        await runner.setup()
        following = asyncio.create_task(follower.run())
        await GuardedSite(runner, spec.host, spec.port, reuse_port=True,
                          max_connections=raise_file_limit(limits.max_connections)).start()
        print(READY_LINE.decode(), flush=True)
        log.info("read worker serving", extra={
            "worker": spec.index, "version": state.inventory.version,
            "items": state.inventory.counts.items, "seconds": round(state.load_seconds, 3)})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (following, stopping):
            task.cancel()
        return 0 if stop.is_set() else 1
    finally:
        if runner is not None:
            await runner.cleanup()
        await session.close()
        await store.close()


def main() -> int:
    from inventory import logs

    text = os.environ.pop(WORKER_ENV, None)
    if text is None:
        print("inventory.server.read_worker is started by `dlm serve --workers N`",
              file=sys.stderr)
        return 2
    spec = WorkerSpec.from_env(text)
    logs.setup(spec.log_level)
    _die_with_parent()
    try:
        import uvloop
        return uvloop.run(run(spec))
    except Exception:
        log.exception("read worker failed", extra={"worker": spec.index})
        return 1


if __name__ == "__main__":
    sys.exit(main())
