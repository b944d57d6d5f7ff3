"""Python client of the inventory server, used by the CLI, Detox, Dealer, Consistency and tests.

``Client`` is async; errors from the server arrive as the same ``DLMError`` subclasses the server
raised (matched on the HTTP status), with its message and field.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgpack

from inventory import errors

DEFAULT_URL = "http://127.0.0.1:8642"
_BY_STATUS: dict[int, type[errors.DLMError]] = {
    cls.status: cls for cls in errors.DLMError.__subclasses__()
}


def default_url() -> str:
    return os.environ.get("DLM_URL", DEFAULT_URL)


@dataclass(slots=True)
class Snapshot:
    """The whole inventory at one version, as wire records (lists in the ``fields`` order)."""

    version: int
    fields: dict[str, list[str]]
    storages: list[list[Any]] = field(default_factory=list)
    items: dict[str, list[Any]] = field(default_factory=dict)  # by oid
    replicas: dict[str, list[Any]] = field(default_factory=dict)  # by uid

    def apply(self, kind: str, record: list[Any]) -> None:
        """Apply one change-feed record (an upsert of the whole record)."""
        if kind == "item":
            self.items[record[0]] = record
        elif kind == "replica":
            self.replicas[record[0]] = record
        elif kind == "storage":
            self.storages = [s for s in self.storages if s[0] != record[0]] + [record]


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 300) -> None:
        self.url = (url or default_url()).rstrip("/")
        token = token if token is not None else os.environ.get("DLM_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None) -> Any:
        async with self._session.request(method, self.url + path, json=json,
                                         params=params) as resp:
            body = await resp.json(content_type=None)
            if resp.status >= 400:
                raise _error_from(resp.status, body)
            return body

    # ------------------------------------------------------------------ endpoints

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/health")

    async def add_storage(self, **spec: Any) -> dict[str, Any]:
        return await self.request("POST", "/v1/storages", json=spec)

    async def storages(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/storages"))["storages"]

    async def add_item(self, **spec: Any) -> dict[str, Any]:
        return await self.request("POST", "/v1/items", json=spec)

    async def add_items(self, specs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Register items in one transaction; returns oid, item_name, item_version of each."""
        return (await self.request("POST", "/v1/items", json=list(specs)))["items"]

    async def item(self, oid: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/items/{oid}")

    async def find_items(self, name: str, **params: Any) -> AsyncIterator[dict[str, Any]]:
        """Every item matching ``name`` (a glob), following the cursor page by page."""
        params = {"name": name, **{k: str(v) for k, v in params.items()}}
        while True:
            page = await self.request("GET", "/v1/items", params=params)
            for item in page["items"]:
                yield item
            if not page["cursor"]:
                return
            params["cursor"] = page["cursor"]

    async def changes(self, since: int, *, wait: int = 0, limit: int = 10_000) -> dict[str, Any]:
        return await self.request("GET", "/v1/changes",
                                  params={"since": since, "wait": wait, "limit": limit})

    async def snapshot(self) -> Snapshot:
        """The whole inventory, streamed and decoded incrementally."""
        async with self._session.get(self.url + "/v1/snapshot") as resp:
            if resp.status >= 400:
                raise _error_from(resp.status, await resp.json(content_type=None))
            unpacker = msgpack.Unpacker(use_list=True, raw=False, max_buffer_size=1 << 30)
            snap: Snapshot | None = None
            done = False
            async for chunk in resp.content.iter_any():
                unpacker.feed(chunk)
                for obj in unpacker:
                    if snap is None:
                        snap = Snapshot(obj["version"], obj["fields"])
                        continue
                    done = _snapshot_record(snap, obj) or done
            if snap is None or not done:
                raise errors.Unavailable("the snapshot stream ended early")
            return snap


def _snapshot_record(snap: Snapshot, obj: list[Any]) -> bool:
    kind, body = obj
    if kind == "storages":
        snap.storages.extend(body)
    elif kind == "items":
        snap.items.update((r[0], r) for r in body)
    elif kind == "replicas":
        snap.replicas.update((r[0], r) for r in body)
    elif kind == "changes":
        for _version, changes in body:
            for change_kind, record in changes:
                snap.apply(change_kind, record)
    elif kind == "end":
        snap.version = body["version"]
        return True
    elif kind == "error":
        raise errors.Unavailable(body["message"])
    return False


def _error_from(status: int, body: Any) -> errors.DLMError:
    info = body.get("error", {}) if isinstance(body, dict) else {}
    cls = _BY_STATUS.get(status, errors.DLMError)
    exc = cls(info.get("message", f"HTTP {status}"), info.get("field"))
    exc.status = status
    return exc
