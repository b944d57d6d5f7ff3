"""``GET /openapi.json``: the API's own description, public like ``/v1/health``.

Public because a client (or a fuzzer) needs the description before it has a token; it holds
nothing about the inventory itself.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from inventory.server.auth import PUBLIC, requires
from inventory.server.openapi import document

routes = web.RouteTableDef()


@routes.get("/openapi.json")
@requires(PUBLIC)
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=msgspec.json.encode(document(request.app)),
                        content_type="application/json")
