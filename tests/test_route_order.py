"""Routes are registered one resource per path (``app.by_path``): the lookup by name is found
by the first resource aiohttp asks, with the same answers for every method as before."""

from __future__ import annotations

from aiohttp import web

from inventory.server.app import ServerConfig, by_path, make_app
from inventory.store import open_store


async def handler(request: web.Request) -> web.Response:
    return web.Response()


def test_by_path_puts_each_paths_methods_together_in_first_come_order():
    table = web.RouteTableDef()
    table.post("/a")(handler)
    table.patch("/a/{x}")(handler)
    table.get("/b")(handler)
    table.get("/a")(handler)
    table.delete("/a/{x}")(handler)
    table.static("/files", "/tmp")
    got = [(r.method, r.path) if isinstance(r, web.RouteDef) else ("static", r.prefix)
           for r in by_path(table)]
    assert got == [("POST", "/a"), ("GET", "/a"), ("PATCH", "/a/{x}"), ("DELETE", "/a/{x}"),
                   ("GET", "/b"), ("static", "/files")]
    assert by_path([]) == []


def test_the_lookup_by_name_is_the_first_resource_of_its_path(tmp_path):
    app = make_app(ServerConfig(store=open_store(f"sqlite:{tmp_path}/db.sqlite", str(tmp_path))))
    resources = app.router._resource_index["/v1/items"]
    first = resources[0]
    assert first.canonical == "/v1/items"
    assert {route.method for route in first} >= {"GET", "POST", "PATCH"}
    assert len([r for r in resources if r.canonical == "/v1/items"]) == 1
