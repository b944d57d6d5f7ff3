"""Per-server bounds on what requests may hold at once, and streaming that waits for its reader.

Why: a snapshot holds a copy (or a cursor) of the inventory and a send buffer for as long as its
reader takes, and a long poll holds a connection and a waiter. Unbounded, a few clients that
open many and read nothing take the memory and the event loop from everyone else. So each kind
has a gate (``Gate``): past its limit the request is answered 503 with Retry-After at once,
before anything is copied. And a streamed answer (``stream``) goes out in small slices, each
waiting for the reader to take the previous ones (backpressure), never longer than
``limits.stall_timeout``; the loop runs other requests between slices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from aiohttp import web

from inventory.errors import Busy
from inventory.server.auth import IDENTITY
from inventory.server.limits import ServerLimits
from inventory.server.state import LIMITS

log = logging.getLogger("dlm.server")

SLICE = 256 << 10  # bytes handed to the socket per write: the loop runs others between them


class Gate:
    """At most ``limit`` holders at once; one more is refused (no queue: a queued snapshot
    would hold its connection and the client's patience for nothing)."""

    def __init__(self, what: str, setting: str, limit: int, retry_after: int) -> None:
        self.what, self.setting, self.limit, self.retry_after = what, setting, limit, retry_after
        self.held = 0
        self.refused = 0

    @contextlib.contextmanager
    def enter(self, request: web.Request) -> Iterator[None]:
        if self.held >= self.limit:
            self.refused += 1  # the refusal is logged as every 503 is (middleware)
            raise Busy(f"this server already serves {self.limit} {self.what} at once "
                       f"(limits.{self.setting}); retry in {self.retry_after} s",
                       None, retry_after=self.retry_after, limit=self.limit)
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1


@dataclass(slots=True)
class Gates:
    snapshots: Gate
    long_polls: Gate

    @classmethod
    def of(cls, limits: ServerLimits) -> Gates:
        return cls(Gate("snapshots", "max_snapshots", limits.max_snapshots, 5),
                   Gate("long polls", "max_long_polls", limits.max_long_polls, 1))


GATES = web.AppKey("gates", Gates)
TURN = web.AppKey("turn", asyncio.Lock)  # held while a stream builds its next message


def install(app: web.Application, limits: ServerLimits) -> None:
    app[LIMITS] = limits
    app[GATES] = Gates.of(limits)
    app[TURN] = asyncio.Lock()


def gates(request: web.Request) -> Gates:
    return request.app[GATES]


def is_internal(request: web.Request) -> bool:
    """The server's own clients (read workers following the feed, scheduled cycles): never
    refused by a gate, or a crowd of outside clients could cut a worker off the feed."""
    return request.get(IDENTITY, (None, None))[0] == "scheduler"


@contextlib.contextmanager
def unless_internal(gate: Gate, request: web.Request) -> Iterator[None]:
    if is_internal(request):
        yield
    else:
        with gate.enter(request):
            yield


async def open_stream(request: web.Request, content_type: str,
                      headers: dict[str, str]) -> web.StreamResponse:
    """A prepared streaming answer whose socket buffers at most ``limits.snapshot_buffer``
    bytes ahead of the reader (then every write waits for the reader to take some)."""
    response = web.StreamResponse(headers={"Content-Type": content_type, **headers})
    await response.prepare(request)
    transport = request.transport
    if transport is not None:
        high = request.app[LIMITS].snapshot_buffer
        transport.set_write_buffer_limits(high=high, low=high // 4)
    return response


async def stream(request: web.Request, response: web.StreamResponse,
                 messages: AsyncIterator[bytes], what: str, *, encoded: bool = True) -> None:
    """Send ``messages`` and end the answer. A reader that takes nothing for
    ``limits.stall_timeout`` seconds has its connection dropped (its buffered bytes freed);
    a reader that left is an info line: neither is the server's error.

    ``encoded``: the messages are built on the loop (CPU work, not I/O). Then streams take
    turns building one message each (``TURN``): a request arriving meanwhile waits behind one
    message's few milliseconds, not behind one of every stream."""
    stall = request.app[LIMITS].stall_timeout
    turn = request.app[TURN] if encoded else contextlib.nullcontext()
    sent = 0
    iterator = aiter(messages)
    try:
        while True:
            async with turn:
                try:
                    message = await anext(iterator)
                except StopAsyncIteration:
                    break
            view = memoryview(message)
            for lo in range(0, len(view), SLICE):
                piece = view[lo:lo + SLICE]
                async with asyncio.timeout(stall):
                    await response.write(piece)
                sent += len(piece)
                await asyncio.sleep(0)
        async with asyncio.timeout(stall):
            await response.write_eof()
    except TimeoutError:
        log.info("%s ended: the client read nothing for %g s", what, stall,
                 extra={"path": request.path, "sent_bytes": sent, "remote": request.remote})
        if request.transport is not None:
            request.transport.abort()  # frees what the socket still buffers
    except ConnectionError:
        _left(request, what, sent)
    except asyncio.CancelledError:  # servers that cancel a handler whose client left
        transport = request.transport
        if transport is None or transport.is_closing():
            _left(request, what, sent)
        raise
    finally:
        aclose = getattr(messages, "aclose", None)
        if aclose is not None:
            await aclose()


def _left(request: web.Request, what: str, sent: int) -> None:
    log.info("%s ended: the client left", what,
             extra={"path": request.path, "sent_bytes": sent, "remote": request.remote})
