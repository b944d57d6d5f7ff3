"""Request bodies in (JSON or msgpack) and responses out, with input errors that name the field."""

from __future__ import annotations

import asyncio
import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from inventory import metadata, model, validate
from inventory.errors import BadRequest, PayloadTooLarge, RequestTimeout
from inventory.logs import REQUEST_ID
from inventory.server.state import LIMITS
from inventory.specs import NO_NUL

T = TypeVar("T")
MSGPACK = "application/msgpack"
MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack"})  # bodies: crosssite.BODY_TYPES
JSON = "application/json"
_PATH = re.compile(r" - at (?:`key` in )?`\$(.*)`$")
_ENUMS = {"kind": model.STORAGE_KINDS, "status": model.STORAGE_STATUSES,
          "phase": model.PHASES, "target_phase": model.PHASES, "item_type": model.ITEM_TYPES}
_NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`")
_NUL_REFUSED = f"Expected `str` matching regex {NO_NUL!r}"
_json_encode = msgspec.json.Encoder().encode
_msgpack_encode = msgspec.msgpack.Encoder().encode


def field_of(message: str, root: str | None) -> tuple[str, str | None]:
    """Split msgspec's "Expected `int`, got `str` - at `$[3].size`" into text and field."""
    match = _PATH.search(message)
    path, text = (match.group(1), message[: match.start()]) if match else ("", message)
    named = _NAMED.match(text)
    if named:  # the offending key is named in the text, not in the path
        path = f"{path}.{named.group(1)}"
    path = path.removeprefix(".")
    if text.startswith(_NUL_REFUSED):  # specs.Text: msgspec's words would show the regex
        text = validate.NUL_REFUSED
    elif text.startswith("Invalid enum value"):
        allowed = _ENUMS.get(path.rsplit(".", 1)[-1])
        if allowed:
            text = f"{text}; expected one of {', '.join(allowed)}"
    if root and path.startswith("["):
        path = root + path
    return text, path or (root if root and not path else "body")


async def decode(request: web.Request, kind: type[T], *, root: str | None = None,
                 limit: int | None = None) -> T:
    """The body decoded as ``kind``; BadRequest naming the field when it is not one.
    ``limit`` (bytes) replaces the server's request size limit for this route."""
    raw = await read_body(request, limit)
    if not raw:
        raise BadRequest("a request body is required", "body")
    msgpack_body = request.content_type in MSGPACK_TYPES
    try:
        if msgpack_body:
            return msgspec.msgpack.decode(raw, type=kind)
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        text, field = field_of(str(exc), root)
        raise BadRequest(text, field) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid {'msgpack' if msgpack_body else 'JSON'}: {exc}",
                         "body") from None
    except RecursionError:  # the decoder's nesting limit (~1000 less the stack in use)
        raise BadRequest("nested too deeply to decode (item metadata may nest "
                         f"{metadata.LIMITS.max_depth} levels by default)", "body") from None


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The whole body, refused with 413 past ``limit`` bytes (the server's limit when None)
    and with 408 when it takes longer than ``limits.body_timeout`` to arrive."""
    try:
        async with asyncio.timeout(request.app[LIMITS].body_timeout):
            return await _read_body(request, limit)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within "
                             f"{request.app[LIMITS].body_timeout:g} s (limits.body_timeout)",
                             "body") from None


async def _read_body(request: web.Request, limit: int | None) -> bytes:
    if limit is None:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"request body larger than {request.app._client_max_size} "
                                  f"bytes", "body") from None
    too_large = PayloadTooLarge(f"request body larger than {limit} bytes", "body")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def wants_msgpack(request: web.Request) -> bool:
    return MSGPACK in request.headers.get("Accept", "")


def respond(request: web.Request, body: Any, status: int = 200) -> web.Response:
    if wants_msgpack(request):
        return web.Response(body=_msgpack_encode(body), status=status, content_type=MSGPACK)
    return web.Response(body=_json_encode(body), status=status, content_type=JSON)


async def sent(request: web.Request, response: web.Response) -> web.Response:
    """``response`` written out now, before the handler goes on: for work that follows a
    write and must not delay its answer (a plan's 100k operations waking the file operations
    engine, whose first dispatch would otherwise run before the answer leaves)."""
    response.headers["X-Request-Id"] = REQUEST_ID.get() or ""
    await response.prepare(request)
    await response.write_eof()
    return response


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"expected an integer, got {text!r}", name) from None
    if not lo <= value <= hi:
        raise BadRequest(f"must be between {lo} and {hi}, got {value}", name)
    return value
