"""The server's outer layer: request ids, latency, and every error as JSON
(``{"error": {"code", "message", "field"}}``)."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from aiohttp import web

from inventory.errors import DLMError
from inventory.logs import REQUEST_ID
from inventory.server import connections, metrics
from inventory.server.bodies import respond

log = logging.getLogger("dlm.server")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type"}


RETRY_AFTER = "1"  # seconds, on every 503 (RFC 9110, 10.2.3)
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PREFIX = os.urandom(4).hex()
_SERIAL = itertools.count(1)


def _new_id() -> str:
    """Unique per process run and cheap (uuid4 was ~3% of a lookup's server time)."""
    return f"{_PREFIX}{next(_SERIAL):08x}"


@web.middleware
async def front(request: web.Request, handler) -> web.StreamResponse:
    """The one outer layer every request passes (each layer costs every request a little):
    an id for the request (the client's X-Request-Id if sane) echoed in the answer and carried
    into the logs written meanwhile, its latency for /metrics, and every error as JSON."""
    started = time.perf_counter()
    given = request.headers.get("X-Request-Id", "")
    request_id = given if given and _REQUEST_ID_OK.match(given) else _new_id()
    token = REQUEST_ID.set(request_id)
    connections.request_started(request)  # not to be closed to make room for another
    try:
        response = await handler(request)
    except DLMError as exc:
        abort_if_streaming(request, exc)
        response = error_response(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers["X-Request-Id"] = request_id
            raise
        response = http_error_response(request, exc)
    except Exception as exc:
        abort_if_streaming(request, exc)
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"error": {"code": "internal", "message": "internal server error; see the log",
                          "field": None}}
        response = respond(request, body, status=500)
    finally:
        connections.request_ended(request)
        REQUEST_ID.reset(token)
        metrics.observe(request, started)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


def abort_if_streaming(request: web.Request, exc: Exception) -> None:
    """When a streamed answer's status line and part of its body are out, an error answer
    written now would land inside that body (a "500" status line in the middle of a chunked
    200). Drop the connection instead, before the body's last chunk: the client sees a body
    that did not end (a payload error), never a complete answer. Raises ConnectionResetError
    (aiohttp then closes the connection without writing anything more)."""
    writer = request.writer if request.transport is not None else None
    if writer is None or not writer.output_size:
        return
    log.error("error while streaming %s %s; connection aborted", request.method, request.path,
              exc_info=exc, extra={"error": str(exc)})
    request.transport.abort()
    raise ConnectionResetError(f"the answer to {request.path} was aborted") from exc


def error_response(request: web.Request, exc: DLMError) -> web.Response:
    if exc.status >= 500:
        log.warning("%s %s: %s", request.method, request.path, exc.message)
    response = respond(request, exc.to_json(), status=exc.status)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="dlm"'
    elif exc.status == 503:  # the database or the write claim is away for now: come back
        response.headers["Retry-After"] = str(exc.details.get("retry_after", RETRY_AFTER))
    elif exc.status == 408:  # the rest of the body is not worth waiting for
        response.force_close()
    return response


def http_error_response(request: web.Request, exc: web.HTTPException) -> web.Response:
    body = {"error": {"code": _HTTP_CODES.get(exc.status, "http_error"),
                      "message": exc.reason, "field": None}}
    response = respond(request, body, status=exc.status)
    if exc.status == 405:
        response.headers["Allow"] = exc.headers.get("Allow", "")
    return response
