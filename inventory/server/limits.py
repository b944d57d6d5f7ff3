"""Bounds that keep one client from taking the server from the others (the ``limits:`` settings).

Kept apart from the aiohttp side (``guards``, ``connections``) so reading a config stays cheap.
Every bound is documented in docs/operator-guide.md (Resource limits) and its refusal in
docs/api.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ServerLimits:
    # Snapshots (GET /v1/snapshot, /v1/snapshot/columns) streaming at once; each holds a copy
    # or a cursor of the inventory and a send buffer. Beyond: 503 with Retry-After.
    max_snapshots: int = 4
    # Bytes of encoded snapshot a stream may queue ahead of its reader (the socket's write
    # buffer high-water mark): a stream waits for its reader beyond it.
    snapshot_buffer: int = 1 << 20
    # Seconds a streamed answer may wait for its reader to take anything; then it is ended
    # (a client that stops reading must not hold its buffers for ever).
    stall_timeout: float = 60.0
    # Long polls of the change feed (GET /v1/changes?wait=...) waiting at once; beyond: 503.
    # The server's own read workers are not counted.
    max_long_polls: int = 256
    # Seconds a connection has to send a complete request head, counted from its opening or
    # from its previous answer (so also how long an idle keep-alive connection is kept).
    header_timeout: float = 30.0
    # Seconds a request body may take to arrive in full; then 408 and the connection closes.
    body_timeout: float = 120.0
    # Open client connections per server process. When full, the oldest connection that is
    # between requests is closed to make room; if every one is inside a request, the new
    # one is answered 503 and closed. Never above the open-file limit less a reserve.
    max_connections: int = 4096
    # Bytes one decision of a Detox or Dealer plan may take once decompressed: a plan's
    # `decisions` may expand to at most this times the decisions it can hold (the replicas
    # and items of the inventory plus the plan's own lists), else 413 naming `decisions`.
    max_decision_bytes: int = 512

    def check(self) -> list[str]:
        """What is wrong with these values, one phrase per setting (empty when nothing)."""
        wrong = []
        for name in ("max_snapshots", "max_long_polls", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                wrong.append(f"{name}: expected a whole number of at least 1")
        for name in ("snapshot_buffer", "max_decision_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 64:
                wrong.append(f"{name}: expected bytes, at least 64")
        for name in ("stall_timeout", "header_timeout", "body_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                wrong.append(f"{name}: expected seconds, more than 0")
        return wrong
