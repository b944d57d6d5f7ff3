"""Every error leaves the server as JSON: ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

import logging

from aiohttp import web

from inventory.errors import DLMError
from inventory.server.bodies import respond

log = logging.getLogger("dlm.server")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type"}


@web.middleware
async def errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DLMError as exc:
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        response = respond(request, exc.to_json(), status=exc.status)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="dlm"'
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        body = {"error": {"code": _HTTP_CODES.get(exc.status, "http_error"),
                          "message": exc.reason, "field": None}}
        response = respond(request, body, status=exc.status)
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "")
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"error": {"code": "internal", "message": "internal server error; see the log",
                          "field": None}}
        return respond(request, body, status=500)
