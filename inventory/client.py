"""Python client of the inventory server, used by the CLI, Detox, Dealer, Consistency and tests.

``Client`` is async and has one method per endpoint of ``docs/api.md``; errors from the server
arrive as the same ``DLMError`` subclasses the server raised (matched on the HTTP status), with its
message, field and any extra details of the error body (``last_copies``). A server that cannot be
reached raises ``ServerUnreachable``, so callers tell "the server said no" from "no server".

``SyncClient`` runs a ``Client`` on a private event loop, for scripts and the CLI, which have no
loop of their own.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any
from urllib.parse import quote

import aiohttp
import msgpack
import yarl

from inventory import errors
from inventory.pins import Pin, pins_of, wire_request_fields

DEFAULT_URL = "http://127.0.0.1:8642"
_BY_STATUS: dict[int, type[errors.DLMError]] = {
    cls.status: cls for cls in errors.DLMError.__subclasses__()
}


class ServerUnreachable(errors.DLMError):
    """No HTTP answer at all: connection refused, reset, or no reply in time.

    Not in ``_BY_STATUS`` (status 0 is no HTTP status): the server never said anything. A write
    whose connection broke after it was sent may or may not have been applied.
    """

    status = 0
    code = "unreachable"

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


def default_url() -> str:
    return os.environ.get("DLM_URL", DEFAULT_URL)


def server_url(text: str) -> str:
    """The server's base URL from what a user typed: ``localhost:8642`` (no scheme, the most
    common slip) means ``http://localhost:8642``; anything that is not an http(s) URL with a
    host is a ValueError saying what is expected, not a traceback from deep in aiohttp."""
    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parsed = yarl.URL(url)
        host = parsed.host
    except ValueError:
        host = None
    else:
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"server URL {text!r}: expected http:// or https://, "
                             f"got {parsed.scheme}://")
        if parsed.query_string or parsed.fragment or parsed.user or parsed.password:
            raise ValueError(f"server URL {text!r}: give it without a query, a fragment or "
                             f"credentials (the token goes in --token or DLM_TOKEN)")
    if not host:
        raise ValueError(f"server URL {text!r} is not a URL like http://127.0.0.1:8642")
    return url.rstrip("/")


class Snapshot:
    """The whole inventory at one version, as wire records: tuples in the ``fields`` order
    (decoded with ``use_list=False``: tuples are ~3x cheaper to decode than lists; arrays
    inside metadata and attributes are tuples too).

    ``items`` is a dict by oid, ``requests`` the copy requests that pin copies, by id (their
    pins: ``pins()``). ``replicas`` (a dict by uid) is built on first use: the stream's
    replica records are kept as a list until then, and ``replica_records()`` gives them without
    ever building it (10M inserts into a dict of 10M cost seconds and ~0.5 GiB)."""

    __slots__ = ("_changed", "_replicas", "_rows", "fields", "items", "requests", "storages",
                 "version")

    def __init__(self, version: int, fields: dict[str, list[str]],
                 storages: list[tuple[Any, ...]] | None = None,
                 items: dict[str, tuple[Any, ...]] | None = None,
                 replicas: dict[str, tuple[Any, ...]] | None = None) -> None:
        self.version = version
        self.fields = fields
        self.storages = [] if storages is None else storages
        self.items = {} if items is None else items  # by oid
        self._replicas = replicas  # by uid, once built
        self._rows: list[tuple[Any, ...]] = []  # replica records as streamed, until then
        self._changed: dict[str, tuple[Any, ...]] = {}  # change-feed upserts over _rows
        self.requests: dict[int, tuple[Any, ...]] = {}  # wire records (feed.object_wire)

    def __repr__(self) -> str:
        return (f"Snapshot(version={self.version}, {len(self.storages)} storages, "
                f"{len(self.items)} items)")

    @property
    def replicas(self) -> dict[str, tuple[Any, ...]]:
        """Replica records by uid."""
        if self._replicas is None:
            replicas = dict(zip(map(_first, self._rows), self._rows, strict=True))
            replicas.update(self._changed)
            self._replicas, self._rows, self._changed = replicas, [], {}
        return self._replicas

    @replicas.setter
    def replicas(self, value: dict[str, tuple[Any, ...]]) -> None:
        self._replicas, self._rows, self._changed = value, [], {}

    def replica_records(self) -> Collection[tuple[Any, ...]]:
        """Every replica record once (the values of ``replicas``, in the same order), without
        building ``replicas`` when it is not built yet."""
        if self._replicas is not None:
            return self._replicas.values()
        if not self._changed:
            return self._rows
        changed = dict(self._changed)
        pop = changed.pop
        records = [pop(r[0], r) for r in self._rows]
        records.extend(changed.values())
        return records

    def add_replicas(self, records: Sequence[tuple[Any, ...]]) -> None:
        """Replica records from the stream (upserts by uid, like ``apply``)."""
        if self._replicas is None and not self._changed:
            self._rows.extend(records)
        else:
            self.replicas.update(zip(map(_first, records), records, strict=True))

    def apply(self, kind: str, record: Sequence[Any]) -> None:
        """Apply one change-feed record (an upsert of the whole record)."""
        record = tuple(record)
        if kind == "item":
            self.items[record[0]] = record
        elif kind == "replica":
            if self._replicas is None:
                self._changed[record[0]] = record
            else:
                self._replicas[record[0]] = record
        elif kind == "storage":
            self.storages = [s for s in self.storages if s[0] != record[0]]
            status = self.fields["storage"].index("status")
            if record[status] != "removed":  # feed.REMOVED_STORAGE: the storage is gone
                self.storages.append(record)
        elif kind == "request":
            self.requests[record[0]] = record

    def pins(self) -> dict[tuple[str, int], Pin]:
        """The copies the snapshot's copy requests pin (``inventory.pins``), per (oid, storage
        id); a container's request pins its members."""
        if not self.requests:
            return {}
        requests = [wire_request_fields(r) for r in self.requests.values()]
        items = self.items
        type_at = self.fields["item"].index("item_type")
        parent_at = self.fields["item"].index("parent_oid")
        containers = {r[1] for r in requests
                      if r[1] in items and items[r[1]][type_at] == "container"}
        members: dict[str, list[str]] = {oid: [] for oid in containers}
        if containers:
            for oid, item in items.items():
                if item[parent_at] in members:
                    members[item[parent_at]].append(oid)

        def files_of(oid: Any) -> Iterable[str]:
            if oid not in items:
                return ()
            return members.get(oid, (oid,))

        return pins_of(requests, files_of)


def query_params(**params: Any) -> dict[str, str]:
    """Query parameters as the server reads them: ``None`` dropped, booleans as ``true``/``false``,
    and ``metadata={"k": "v"}`` spelled ``meta.k=v`` (the metadata-equality filter)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if key == "metadata":
            out.update((f"meta.{k}", str(v)) for k, v in value.items())
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 300) -> None:
        self.url = server_url(url or default_url())
        token = token if token is not None else os.environ.get("DLM_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
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
                      params: dict[str, Any] | None = None, data: Any = None,
                      headers: dict[str, str] | None = None) -> Any:
        """One call; the decoded answer (JSON, or msgpack when the server sends it; ``None``
        for an empty one, such as a 204). Errors become DLMErrors, an unreachable server
        ServerUnreachable."""
        try:
            async with self._session.request(method, self.url + path, json=json, data=data,
                                             params=params, headers=headers) as resp:
                raw = await resp.read()
                if resp.content_type == MSGPACK:
                    body = msgpack.unpackb(raw, raw=False)
                else:
                    body = _json_or_none(raw)
                if resp.status >= 400:
                    raise _error_from(resp.status, body)
                return body
        except aiohttp.ClientConnectorError:
            raise ServerUnreachable(f"cannot reach the DLM server at {self.url}",
                                    self.url) from None
        except TimeoutError:  # before ClientConnectionError: aiohttp's timeouts are both
            raise ServerUnreachable(f"no answer from the DLM server at {self.url} within "
                                    f"{self._timeout:g}s", self.url) from None
        except aiohttp.ClientConnectionError as exc:
            raise ServerUnreachable(f"lost the connection to the DLM server at {self.url} "
                                    f"({exc or type(exc).__name__}); a write may or may not "
                                    f"have been applied", self.url) from None

    async def post_msgpack(self, path: str, body: Any) -> Any:
        """POST a msgpack body (large or binary payloads, such as a Detox plan). A map's large
        binary values are sent from where they are, not copied into one packed body (a 10M
        replica plan's decisions are ~100 MB)."""
        if isinstance(body, dict) and any(_large_binary(v) for v in body.values()):
            data: Any = _packed_parts(body)
        else:
            data = msgpack.packb(body, use_bin_type=True)
        return await self.request("POST", path, data=data, headers={"Content-Type": MSGPACK})

    async def _pages(self, path: str, key: str,
                     params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Every entry of a cursor-paginated list, fetching the next page only when needed."""
        params = dict(params)
        while True:
            page = await self.request("GET", path, params=params)
            for entry in page[key]:
                yield entry
            cursor = page.get("cursor")
            if not cursor:
                return
            if cursor == params.get("cursor"):  # a server ignoring it would loop forever
                raise errors.DLMError(f"GET {path} answered the same cursor twice")
            params["cursor"] = cursor

    # ------------------------------------------------------------------ health

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/health")

    # ------------------------------------------------------------------ storages

    async def add_storage(self, **spec: Any) -> dict[str, Any]:
        return await self.request("POST", "/v1/storages", json=spec)

    async def storages(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/storages"))["storages"]

    async def storage(self, name: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/storages/{_seg(name)}")

    async def patch_storage(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change status, capacity, phase, attributes (merged; ``None`` removes a key), config.

        Retiring a storage that holds last copies raises ``Conflict`` whose
        ``details["last_copies"]`` counts them."""
        return await self.request("PATCH", f"/v1/storages/{_seg(name)}", json=changes)

    async def remove_storage(self, name: str) -> dict[str, Any]:
        """Remove an empty storage; ``Conflict`` (``details["reason"]``: ``replicas``,
        ``operations`` or ``requests``) while something still uses it."""
        return await self.request("DELETE", f"/v1/storages/{_seg(name)}")

    # ------------------------------------------------------------------ items: register, change

    async def add_item(self, **spec: Any) -> dict[str, Any]:
        return await self.request("POST", "/v1/items", json=spec)

    async def add_items(self, specs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Register items in one transaction; returns oid, item_name, item_version of each."""
        return (await self.request("POST", "/v1/items", json=list(specs)))["items"]

    async def patch_item(self, oid: str, **changes: Any) -> dict[str, Any]:
        """Change one item (state, target_phase, expiry, metadata, checksum, size, location)."""
        return await self.request("PATCH", f"/v1/items/{_seg(oid)}", json=changes)

    async def patch_items(self, changes: Iterable[dict[str, Any]]) -> int:
        """Change many items in one transaction (each dict has an ``oid``); returns the count."""
        return (await self.request("PATCH", "/v1/items", json=list(changes)))["count"]

    async def delete_item(self, oid: str) -> dict[str, Any]:
        """Mark an item for deletion (EXPIRED now); Detox removes its payloads later."""
        return await self.request("DELETE", f"/v1/items/{_seg(oid)}")

    async def record_access(self, oid: str, count: int = 1,
                            at: str | None = None) -> dict[str, Any]:
        """Record reads of one item; returns its oid, access_count and last_access."""
        return await self.request("POST", f"/v1/items/{_seg(oid)}/accesses",
                                  json={"count": count, "at": at})

    async def record_accesses(self, accesses: Iterable[dict[str, Any]]) -> int:
        """Record reads of many items (``{"oid", "count", "at"}`` each); returns the count."""
        return (await self.request("POST", "/v1/accesses", json=list(accesses)))["count"]

    # ------------------------------------------------------------------ items: read

    async def item(self, oid: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/items/{_seg(oid)}")

    async def find_items(self, name: str | None = None,
                         **filters: Any) -> AsyncIterator[dict[str, Any]]:
        """Every item matching the filters, following the cursor page by page.

        Filters are the query parameters of ``GET /v1/items``: ``name`` (exact or glob),
        ``prefix``, ``version`` (``latest``, ``all`` or a number), ``state``, ``phase``,
        ``target_phase``, ``type``, ``storage``, ``parent``, ``expired_before``, ``metadata``
        (a dict, sent as ``meta.KEY=VALUE``) and ``limit`` (the page size, not a total).
        """
        async for item in self._pages("/v1/items", "items", query_params(name=name, **filters)):
            yield item

    async def exists(self, name: str, version: int | None = None,
                     ready: bool = False) -> dict[str, Any]:
        """``{"exists", "ready", "oid"}`` for a name (latest version unless one is given)."""
        return await self.request("GET", "/v1/items/exists",
                                  params=query_params(name=name, version=version,
                                                      ready=ready or None))

    async def item_storages(self, oid: str) -> list[dict[str, Any]]:
        """Where an item is: ``{"name", "state", "uri"}`` per storage holding a replica."""
        return (await self.request("GET", f"/v1/items/{_seg(oid)}/storages"))["storages"]

    async def children(self, oid: str, **params: Any) -> AsyncIterator[dict[str, Any]]:
        """The members of a container, following the cursor."""
        async for item in self._pages(f"/v1/items/{_seg(oid)}/children", "items",
                                      query_params(**params)):
            yield item

    # ------------------------------------------------------------------ tokens

    async def add_token(self, role: str, name: str | None = None,
                        expires_at: str | None = None) -> dict[str, Any]:
        """A new bearer token; its secret is in ``["token"]`` of this answer only."""
        spec: dict[str, Any] = {"role": role, "expires_at": expires_at}
        if name is not None:
            spec["name"] = name
        return await self.request("POST", "/v1/tokens", json=spec)

    async def list_tokens(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/tokens"))["tokens"]

    async def delete_token(self, name: str) -> None:
        await self.request("DELETE", f"/v1/tokens/{_seg(name)}")

    # ------------------------------------------------------------------ copy requests

    async def add_request(self, item: str, storage: str, *, pin_until: str | None = None,
                          comment: str | None = None) -> dict[str, Any]:
        """Ask for ``item`` (an oid or an item name; a container covers its members) to have a
        copy on ``storage``, pinned there until ``pin_until``."""
        spec: dict[str, Any] = {"item": item, "storage": storage, "pin_until": pin_until}
        if comment is not None:
            spec["comment"] = comment
        return await self.request("POST", "/v1/requests", json=spec)

    async def requests(self, state: str | None = None,
                       storage: str | None = None) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/requests",
                                   params=query_params(state=state, storage=storage)))["requests"]

    async def cancel_request(self, request_id: int | str) -> dict[str, Any] | None:
        """Cancel a copy request; the request as it now is, if the server sends it."""
        return await self.request("DELETE", f"/v1/requests/{_seg(str(request_id))}")

    # ------------------------------------------------------------------ operations and history

    async def operations(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        """Queued, running and finished copies and deletions (``state``, ``kind``, ``storage``
        filters), following the cursor."""
        async for op in self._pages("/v1/operations", "operations", query_params(**filters)):
            yield op

    async def operation(self, op_id: int | str) -> dict[str, Any]:
        """One operation, live or finished (old finished ones come from the database)."""
        return await self.request("GET", f"/v1/operations/{_seg(str(op_id))}")

    async def add_operation(self, kind: str, item: str, target: str,
                            source: str | None = None) -> dict[str, Any]:
        """Queue a copy of ``item`` (an oid or a name) to ``target``, or its deletion from
        ``target``, at once (operator); ``source`` picks the replica a copy reads."""
        spec = {"kind": kind, "item": item, "target": target}
        if source is not None:
            spec["source"] = source
        return await self.request("POST", "/v1/operations", json=spec)

    async def add_operations(self, specs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Queue many operations in one transaction (operator): each dict has ``kind``,
        ``item``, ``target`` and optionally ``source``, as ``add_operation``. At most 10,000
        per call; one bad entry refuses them all (the error's field is
        ``operations[i].item`` and so on). Returns the queued operations, in order."""
        return (await self.request("POST", "/v1/operations", json=list(specs)))["operations"]

    async def cancel_operation(self, op_id: int | str) -> dict[str, Any]:
        """Cancel a queued operation; the operation as it now is."""
        return await self.request("DELETE", f"/v1/operations/{_seg(str(op_id))}")

    async def history(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Detox, Dealer and Consistency cycles with their summaries."""
        return (await self.request("GET", "/v1/history",
                                   params=query_params(kind=kind)))["cycles"]

    async def cycle(self, cycle_id: int | str) -> dict[str, Any]:
        """One cycle with its decisions and the policy text it ran."""
        return await self.request("GET", f"/v1/history/{_seg(str(cycle_id))}")

    # ------------------------------------------------------------------ feed

    async def changes(self, since: int, *, wait: int = 0, limit: int = 10_000,
                      kinds: Sequence[str] | None = None) -> dict[str, Any]:
        """Committed transactions after ``since`` (``kinds``: only those record kinds), read
        as msgpack: a catch-up can be hundreds of thousands of records."""
        params = {"since": str(since), "wait": str(wait), "limit": str(limit)}
        if kinds is not None:
            params["kinds"] = ",".join(kinds)
        return await self.request("GET", "/v1/changes", params=params,
                                  headers={"Accept": MSGPACK})

    async def catch_up(self, snap: Snapshot, limit: int = 100_000) -> bool:
        """Bring ``snap`` to the server's current version through the change feed (what a
        long-running Detox or Dealer does instead of a new snapshot per cycle). False when the
        server no longer keeps the changes it would need: take a new snapshot then."""
        while True:
            try:
                page = await self.changes(snap.version, limit=limit, kinds=SNAPSHOT_KINDS)
            except errors.Gone:
                return False
            for _version, changes in page["transactions"]:
                for kind, record in changes:
                    snap.apply(kind, record)
            if page["version"] == snap.version:
                return True
            snap.version = page["version"]

    async def snapshot(self, progress: Callable[[int, int], None] | None = None) -> Snapshot:
        """The whole inventory, streamed and decoded incrementally; ``progress(done, total)``
        is told how many item and replica records have arrived (for a progress bar)."""
        async with self._session.get(self.url + "/v1/snapshot") as resp:
            if resp.status >= 400:
                raise _error_from(resp.status, await resp.json(content_type=None))
            unpacker = msgpack.Unpacker(use_list=False, raw=False, max_buffer_size=1 << 30)
            snap: Snapshot | None = None
            done = False
            received = total = 0
            # Millions of new tuples, none of them garbage: the cyclic collector would walk
            # the growing snapshot again and again (seconds at 10M replicas).
            collecting = gc.isenabled()
            gc.disable()
            try:
                async for chunk in resp.content.iter_any():
                    unpacker.feed(chunk)
                    for obj in unpacker:
                        if snap is None:
                            snap = Snapshot(obj["version"],
                                            {k: list(v) for k, v in obj["fields"].items()})
                            counts = obj.get("counts", {})
                            total = counts.get("items", 0) + counts.get("replicas", 0)
                            continue
                        done = _snapshot_record(snap, obj) or done
                        if progress is not None and obj[0] in ("items", "replicas"):
                            received += len(obj[1])
                            progress(received, total)
            finally:
                if collecting:
                    gc.enable()
            if snap is None or not done:
                raise errors.Unavailable("the snapshot stream ended early")
            return snap

    async def column_snapshot(self, with_: Collection[str] = (),
                              progress: Callable[[int, int], None] | None = None) -> Any:
        """The inventory as numpy columns (``inventory.columns.ColumnSnapshot``), with the
        optional fields in ``with_`` (``name``, ``metadata``); ``progress(done, total)`` is told
        the bytes of columns received."""
        from inventory.columns import ColumnReader  # numpy: only for the processes that plan

        query = f"?with={','.join(with_)}" if with_ else ""
        async with self._session.get(self.url + "/v1/snapshot/columns" + query) as resp:
            if resp.status >= 400:
                raise _error_from(resp.status, await resp.json(content_type=None))
            reader = ColumnReader()
            unpacker = msgpack.Unpacker(use_list=False, raw=False, max_buffer_size=1 << 30)
            async for chunk in resp.content.iter_any():
                unpacker.feed(chunk)
                for obj in unpacker:
                    try:
                        reader.feed(obj)
                    except (RuntimeError, ValueError) as e:
                        raise errors.Unavailable(str(e)) from None
                    if progress is not None and isinstance(obj, tuple) and obj[0] == "column":
                        progress(reader.received, reader.total)
            try:
                return reader.snapshot()
            except ValueError as e:
                raise errors.Unavailable(f"the column snapshot is incomplete: {e}") from None


class SyncClient:
    """The ``Client`` for code without an event loop: every coroutine method becomes a blocking
    call, every async iterator (``find_items``, ``operations``...) a plain iterator.

    It owns a private event loop, so it must not be used from inside a running loop (that loop
    would block on itself), nor from several threads at once. Methods are looked up on
    ``Client``, so both stay in step without a second list of endpoints to maintain.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 300) -> None:
        url = server_url(url or default_url())  # a bad URL fails before a loop is made
        self._loop = asyncio.new_event_loop()
        # The session binds to the loop running when it is made: make it on ours.
        self._client: Client = self._loop.run_until_complete(
            _make_client(url, token, timeout))

    @property
    def url(self) -> str:
        return self._client.url

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._loop.run_until_complete(self._client.close())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)
        if inspect.isasyncgenfunction(method):
            def iterate(*args: Any, **kwargs: Any) -> Iterator[Any]:
                return self._iterate(method(*args, **kwargs))
            iterate.__doc__ = method.__doc__
            return iterate
        if inspect.iscoroutinefunction(method):
            def call(*args: Any, **kwargs: Any) -> Any:
                return self._loop.run_until_complete(method(*args, **kwargs))
            call.__doc__ = method.__doc__
            return call
        raise AttributeError(name)

    def _iterate(self, agen: AsyncIterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            # A caller that stops early (``--limit``) must not leave the page request open.
            if not self._loop.is_closed():
                self._loop.run_until_complete(agen.aclose())  # type: ignore[attr-defined]


async def _make_client(url: str | None, token: str | None, timeout: float) -> Client:
    return Client(url, token, timeout=timeout)


def _seg(value: str) -> str:
    """One path segment, quoted: item oids are safe, but storage and token names are the
    user's and must not be read as more of the path."""
    return quote(value, safe="")


def _snapshot_record(snap: Snapshot, obj: Sequence[Any]) -> bool:
    kind, body = obj
    if kind == "storages":
        snap.storages.extend(body)
    elif kind == "items":
        snap.items.update(zip(map(_first, body), body, strict=True))
    elif kind == "replicas":
        snap.add_replicas(body)
    elif kind == "requests":
        snap.requests.update(zip(map(_first, body), body, strict=True))
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


_LARGE = 1 << 20


def _large_binary(value: Any) -> bool:
    return isinstance(value, bytes | bytearray | memoryview) and len(value) >= _LARGE


def _bin_header(n: int) -> bytes:
    """The msgpack header of a bin of ``n`` bytes (bin 8, 16 or 32; msgpack's Packer has no
    method for it)."""
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


async def _packed_parts(body: dict[str, Any]) -> AsyncIterator[bytes | memoryview]:
    """``body`` as msgpack, a part at a time: small values packed together, each large binary
    value as its header followed by the value itself."""
    packer = msgpack.Packer(use_bin_type=True)
    pending = bytearray(packer.pack_map_header(len(body)))
    for key, value in body.items():
        pending += packer.pack(key)
        if _large_binary(value):
            pending += _bin_header(len(value))
            yield bytes(pending)
            pending.clear()
            yield memoryview(value)
        else:
            pending += packer.pack(value)
    if pending:
        yield bytes(pending)


_first = itemgetter(0)
MSGPACK = "application/msgpack"
SNAPSHOT_KINDS = ("item", "replica", "storage", "request")  # what a Snapshot holds of the feed


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:  # not JSON: a proxy's error page, say
        return None


def _error_from(status: int, body: Any) -> errors.DLMError:
    info = body.get("error", {}) if isinstance(body, dict) else {}
    if not isinstance(info, dict):
        info = {}
    cls = _BY_STATUS.get(status, errors.DLMError)
    details = {k: v for k, v in info.items() if k not in ("code", "message", "field")}
    exc = cls(info.get("message") or f"HTTP {status}", info.get("field"), **details)
    exc.status = status
    exc.code = info.get("code", cls.code)
    return exc
