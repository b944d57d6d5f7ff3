"""Errors a client can act on, each mapped to one HTTP status and a stable code.

The table is the whole hierarchy (asyncpg generates its exceptions from a table the same way);
``field`` names the offending input (``items[3].item_name``) so a client can point at it.
"""

from __future__ import annotations


class DLMError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, field: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_json(self) -> dict:
        body: dict = {"code": self.code, "message": self.message, "field": self.field}
        body.update(self.details)
        return {"error": body}


def _error(name: str, status: int, code: str, doc: str) -> type[DLMError]:
    return type(name, (DLMError,), {"status": status, "code": code, "__doc__": doc})


BadRequest = _error("BadRequest", 400, "bad_request", "The input is malformed or invalid.")
Unauthorized = _error("Unauthorized", 401, "unauthorized", "No valid token was presented.")
Forbidden = _error("Forbidden", 403, "forbidden", "The token's role may not do this.")
NotFound = _error("NotFound", 404, "not_found", "The named thing does not exist.")
Conflict = _error("Conflict", 409, "conflict", "The change contradicts the inventory.")
Gone = _error("Gone", 410, "gone", "The asked-for history is no longer kept.")
PayloadTooLarge = _error("PayloadTooLarge", 413, "payload_too_large", "The request is too big.")
RequestTimeout = _error("RequestTimeout", 408, "request_timeout",
                        "The request body did not arrive in time.")
UnsupportedMediaType = _error("UnsupportedMediaType", 415, "unsupported_media_type",
                              "The request body is neither JSON nor msgpack.")
Unavailable = _error("Unavailable", 503, "unavailable", "The database cannot commit right now.")
# A kind of Unavailable (not a direct DLMError): clients map a 503 to Unavailable whatever it says.
Busy = type("Busy", (Unavailable,), {
    "code": "busy",
    "__doc__": "The server already serves as many of these as its limits allow; retry later."})
