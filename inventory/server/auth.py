"""Bearer tokens and roles: reader < producer < operator.

Handlers declare the role they need with ``@requires``; undeclared GETs need ``reader`` and
everything else ``operator`` (the safe default for a handler someone forgot to mark). While no
token exists, a server on a loopback address runs in open mode: every request acts as operator,
which is what a laptop or a test wants and what a shared host must never get.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable

from aiohttp import web

from inventory import model
from inventory.errors import Forbidden, Unauthorized
from inventory.server.state import state_of
from inventory.writes import Actor

ROLE_RANK = {"reader": 0, "producer": 1, "operator": 2}
PUBLIC = "public"
IDENTITY = web.RequestKey("identity", tuple)  # (token name or "open", role)
MALFORMED_TOKEN = "malformed token: a token is UTF-8 text (DLM's are ASCII)"


def requires(role: str) -> Callable:
    def mark(handler: Callable) -> Callable:
        handler.dlm_role = role
        return handler

    return mark


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def needed_role(request: web.Request, handler: Callable) -> str:
    role = getattr(handler, "dlm_role", None)
    if role is not None:
        return role
    return "reader" if request.method in ("GET", "HEAD") else "operator"


def bearer_digest(header: str) -> str:
    """The SHA-256 (hex) of the token in an ``Authorization: Bearer TOKEN`` header.
    Unauthorized when there is none, or when it is not text: aiohttp hands header bytes that
    are not UTF-8 over as surrogates, which no token can contain (and ``encode`` refuses)."""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("this needs a token: send 'Authorization: Bearer TOKEN'",
                           "Authorization")
    try:
        raw = secret.strip().encode()
    except UnicodeEncodeError:
        raise Unauthorized(MALFORMED_TOKEN, "Authorization") from None
    return hashlib.sha256(raw).hexdigest()


@web.middleware
async def authenticate(request: web.Request, handler: Callable) -> web.StreamResponse:
    needed = needed_role(request, handler)
    if needed == PUBLIC:
        return await handler(request)
    state = state_of(request)
    inv = state.inventory
    if not inv.tokens and state.open_mode:
        request[IDENTITY] = ("open", "operator")
        return await handler(request)
    digest = bearer_digest(request.headers.get("Authorization", ""))
    if state.internal_token_hash and digest == state.internal_token_hash:
        request[IDENTITY] = ("scheduler", "operator")  # the server's own scheduled cycles
        return await handler(request)
    token = inv.token_by_hash.get(digest)
    if token is None:
        raise Unauthorized("unknown token", "Authorization")
    if token.expires_at is not None and token.expires_at <= model.now():
        raise Unauthorized(f"token {token.name!r} expired", "Authorization")
    if ROLE_RANK[token.role] < ROLE_RANK[needed]:
        raise Forbidden(f"token {token.name!r} has role {token.role}; this needs {needed}",
                        "Authorization")
    request[IDENTITY] = (token.name, token.role)
    return await handler(request)


def actor(request: web.Request) -> Actor:
    """Who sent the request, for the rules that depend on it (writes.Actor)."""
    name, role = request.get(IDENTITY, (None, "operator"))
    return Actor(None if name == "open" else name, role)


def requester(request: web.Request) -> str | None:
    name, _role = request.get(IDENTITY, (None, None))
    return None if name == "open" else name
