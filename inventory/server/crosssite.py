"""Requests a web page makes: what keeps a browser from driving the server for its user.

A browser lets any page send some requests to any address, ``localhost`` included, without
asking the server first (the Fetch standard's "simple" requests): a form POST, or a ``fetch()``
whose body is typed ``text/plain``, ``application/x-www-form-urlencoded`` or
``multipart/form-data`` (or not typed at all). The page reads nothing of the answer, but an
open-mode server (loopback, no token: every request is an operator) would obey it. So:

1. Bodies are JSON or msgpack only (415 otherwise). A page can send neither without a CORS
   preflight, which this server never grants (it answers no ``OPTIONS`` with permission).
2. In open mode the ``Host`` header must be a loopback name. A page that points its own DNS
   name at 127.0.0.1 (DNS rebinding) is same-origin with the server and may send JSON, but its
   requests still carry its own host name.
3. An ``Origin`` other than the server's own is refused: on every request in open mode, on
   writes in token mode (tokens travel in a header no page can make a browser add, so there it
   is a second fence, not the first).

Every answer also carries headers that stop pages from framing it, sniffing its type or
learning its address (``security_headers``). The decisions are pure functions of the request's
method and headers; ``guard`` and ``add_headers`` wire them into aiohttp.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import socket
from collections.abc import Callable, Mapping

from aiohttp import web

from inventory.errors import DLMError, Forbidden, UnsupportedMediaType
from inventory.server.state import STATE

# What a body may be: JSON (any charset parameter; JSON is UTF-8) and msgpack under both the
# registered name and the older one some clients send.
BODY_TYPES = frozenset({"application/json", "application/msgpack", "application/x-msgpack"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def media_type(header: str | None) -> str | None:
    """``application/json`` of ``Application/JSON; charset=utf-8``; None without a header."""
    if header is None:
        return None
    return header.split(";", 1)[0].strip().lower()


def body_refusal(method: str, content_type: str | None, has_body: bool) -> DLMError | None:
    """415 for a body that is not JSON or msgpack, or a typed request that is neither (a form
    POST without fields has a type and no body, and still reaches a handler)."""
    kind = media_type(content_type)
    if kind is None and not has_body:
        return None
    if method in SAFE_METHODS and not has_body:
        return None
    if kind in BODY_TYPES:
        return None
    said = "no Content-Type" if kind is None else f"Content-Type {kind!r}"
    return UnsupportedMediaType(
        f"request bodies are JSON or msgpack: send 'Content-Type: application/json' (or "
        f"application/msgpack); got {said}", "Content-Type")


def split_host(host: str) -> tuple[str, str | None]:
    """``("::1", "8642")`` of ``[::1]:8642``, ``("localhost", None)`` of ``localhost``."""
    host = host.strip().lower()
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", None  # malformed: names nothing
        return name, rest[1:] if rest else None
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port
    return host, None  # a bare IPv6 address (no brackets) or a name without a port


def is_loopback_name(host: str) -> bool:
    """Whether a Host header names this machine's loopback: ``localhost`` or a 127/8 or ::1
    address, with or without a port. Names that merely resolve there do not count: that is
    what DNS rebinding relies on."""
    name, _port = split_host(host)
    if name.endswith("."):
        name = name[:-1]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# The Host values a server meets are few (its own names); a client sending new ones only
# churns a bounded cache (ipaddress parsing costs microseconds on every request otherwise).
_loopback_seen = functools.lru_cache(maxsize=1024)(is_loopback_name)


def same_origin(origin: str, host: str, scheme: str) -> bool:
    """Whether an Origin header (``http://localhost:8642``) names the server the request was
    sent to (its Host header). A Host with a port must match the origin's (the origin's
    scheme gives its default); a Host without one names the default port of whatever scheme
    the browser used, which a TLS-terminating proxy in front hides from ``scheme``: the names
    must match."""
    their_scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or not rest or "/" in rest:
        return False  # "null" (a sandboxed frame, a file:// page) or garbage: not us
    their_name, their_port = split_host(rest)
    name, port = split_host(host)
    if not name or their_name.rstrip(".") != name.rstrip("."):
        return False
    return port is None or (their_port or _DEFAULT_PORTS.get(their_scheme, "")) == port


def origin_refusal(method: str, headers: Mapping[str, str], scheme: str,
                   open_mode: bool) -> DLMError | None:
    """403 for a request a page of another origin sent: any request in open mode, writes
    otherwise. The server's own origin is its Host (or the X-Forwarded-Host a reverse proxy
    sets: no page can make a browser send that header without a preflight)."""
    origin = headers.get("Origin")
    if origin is None or (not open_mode and method in SAFE_METHODS):
        return None
    hosts = [h for h in (headers.get("Host"), headers.get("X-Forwarded-Host")) if h]
    if any(same_origin(origin, h.split(",")[0], scheme) for h in hosts):
        return None
    return Forbidden(f"cross-site request refused: Origin {origin!r} is not this server's "
                     "origin (a web page of another site sent it)", "Origin")


def host_refusal(headers: Mapping[str, str], open_mode: bool) -> DLMError | None:
    """403 in open mode for a Host that is not a loopback name (DNS rebinding)."""
    host = headers.get("Host")
    if not open_mode or host is None or is_loopback_name(host):
        return None
    return Forbidden(f"Host {host!r} is not a loopback name: a server in open mode (no token) "
                     "answers only requests addressed to localhost, 127.0.0.1 or [::1]; "
                     "create a token to serve other names", "Host")


def refusal(method: str, headers: Mapping[str, str], has_body: bool, scheme: str,
            open_mode: bool) -> DLMError | None:
    """The first rule a request breaks (Host, then Origin, then the body's type), or None.
    Every request passes here: the common one (no Origin, no body, a Host seen before) costs
    three header lookups and a cache hit."""
    if open_mode:
        host = headers.get("Host")
        if host is not None and not _loopback_seen(host):
            return host_refusal(headers, open_mode)
    if "Origin" in headers:
        refused = origin_refusal(method, headers, scheme, open_mode)
        if refused is not None:
            return refused
    content_type = headers.get("Content-Type")
    if content_type is None and not has_body:
        return None
    return body_refusal(method, content_type, has_body)


def _private_socket(request: web.Request) -> bool:
    """A request on the primary's private Unix socket: a read worker forwarded it after its
    own guard passed it (the worker's forward names the host ``primary``)."""
    sock = request.get_extra_info("socket")
    return sock is not None and sock.family == socket.AF_UNIX


@web.middleware
async def guard(request: web.Request, handler: Callable) -> web.StreamResponse:
    state = request.app[STATE]
    if not _private_socket(request):
        open_mode = state.open_mode and not state.inventory.tokens
        refused = refusal(request.method, request.headers, request.body_exists,
                          request.scheme, open_mode)
        if refused is not None:
            raise refused
    return await handler(request)


# --------------------------------------------------------------------------- response headers

def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def html_policy(inline_scripts: tuple[str, ...] = (), inline_styles: tuple[str, ...] = ()) -> str:
    """The Content-Security-Policy of an HTML page: its own scripts, styles and fetches only
    (plus the inline blocks given, by hash), no frames, no plugins, no other site."""
    scripts = " ".join(["'self'", *map(_sha256, inline_scripts)])
    styles = " ".join(["'self'", *map(_sha256, inline_styles)])
    return (f"default-src 'none'; script-src {scripts}; style-src {styles}; "
            "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'")


# Anything else (JSON, msgpack, metrics, scripts): nothing runs, nothing frames it.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
FIXED_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                 "Referrer-Policy": "no-referrer"}


def _report_policy() -> str:
    # A consistency report in HTML carries its own style and script (it is also a file an
    # operator opens from disk); the dashboard opens a served one from a blob: URL, which
    # keeps the dashboard's policy: one policy with their hashes serves both.
    from consistency import report

    return html_policy(report.INLINE_SCRIPTS, report.INLINE_STYLES)


HTML_POLICY = _report_policy()


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer, streamed or not, error or not, gets them."""
    headers = response.headers
    for key, value in FIXED_HEADERS.items():
        headers.setdefault(key, value)
    html = response.content_type == "text/html"
    headers.setdefault("Content-Security-Policy", HTML_POLICY if html else API_POLICY)


def install(app: web.Application) -> None:
    """The response headers; ``guard`` goes in the middleware list (after the error layer)."""
    app.on_response_prepare.append(add_headers)
