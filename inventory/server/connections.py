"""Client connections: how many a server process keeps, and how long one may take to ask.

Why: aiohttp has no request-head timeout and no connection bound of its own, so a client sending
a byte a second kept its connection for ever, and a few thousand such connections exhausted the
process's file descriptors (then nobody, health checks included, got in). Three bounds:

- ``limits.header_timeout``: a connection must send a complete request head within this many
  seconds of opening or of its previous answer, else it is closed. aiohttp's keep-alive timer
  does exactly this (it starts at the connection's opening and again after each answer, a
  request head arriving in pieces does not restart it, and it closes a connection still waiting
  for a whole head), so it is that timer, set to the bound.
- ``limits.body_timeout``: the server's body reads (``bodies.read_body``) end in 408.
- ``limits.max_connections``: at the bound a new connection takes the place of the oldest one
  that is between requests (idle, or still sending its head); when every connection is inside
  a request it is answered 503 and closed. Slow clients thus cannot lock others out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from typing import Any

from aiohttp import web

from inventory.server.limits import ServerLimits

log = logging.getLogger("dlm.server")

FD_RESERVE = 256  # descriptors kept for the database, log files, workers' pipes, storages
_BUSY: set[Any] = set()  # the connections (aiohttp protocols) inside a request right now
_FULL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s")
_FULL_BODY = (b'{"error": {"code": "busy", "message": "this server holds as many connections as '
              b'limits.max_connections allows, all inside requests; retry", "field": null}}')


def request_started(request: web.Request) -> None:
    _BUSY.add(request.protocol)


def request_ended(request: web.Request) -> None:
    _BUSY.discard(request.protocol)


def runner_options(limits: ServerLimits) -> dict[str, Any]:
    """``web.AppRunner`` keyword arguments that carry the limits aiohttp itself applies."""
    return {"keepalive_timeout": limits.header_timeout}


def raise_file_limit(wanted: int) -> int:
    """Raise this process's open-file limit to its hard limit (the soft one is often 1024) and
    answer how many connections it allows: ``wanted``, or less when the limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = wanted + FD_RESERVE if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
            soft = max(soft, target)
    allowed = max(16, soft - FD_RESERVE)
    if allowed < wanted:
        log.warning("fewer connections than limits.max_connections: the open-file limit is "
                    "lower", extra={"max_connections": wanted, "allowed": allowed,
                                    "open_file_limit": soft})
    return min(wanted, allowed)


class _Refused(asyncio.Protocol):
    """What a connection gets when every connection is inside a request: 503, closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(_FULL % (len(_FULL_BODY), _FULL_BODY))  # type: ignore[attr-defined]
        transport.close()


class GuardedSite(web.TCPSite):
    """A TCP site whose accepted connections pass ``admit`` first (see the module doc)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 max_connections: int, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.max_connections = max_connections
        self.evicted = 0
        self.refused = 0

    def admit(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        connections = server.connections  # oldest first
        if len(connections) >= self.max_connections:
            victim = next((c for c in connections
                           if c not in _BUSY and c.transport is not None), None)
            if victim is None:
                self.refused += 1
                if self.refused & (self.refused - 1) == 0:  # 1st, 2nd, 4th...: no log flood
                    log.warning("connection refused: every connection is inside a request",
                                extra={"max_connections": self.max_connections,
                                       "refused": self.refused})
                return _Refused()
            victim.force_close()
            self.evicted += 1
            if self.evicted & (self.evicted - 1) == 0:
                log.info("idle connection closed to make room",
                         extra={"max_connections": self.max_connections,
                                "evicted": self.evicted})
        return server()

    async def start(self) -> None:
        # TCPSite.start, with ``admit`` as the protocol factory instead of the server itself
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.admit, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
