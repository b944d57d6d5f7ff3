"""The column snapshot: the inventory as arrays, one per field, for planners that work on columns.

Why a second snapshot format: the record snapshot (``GET /v1/snapshot``) gives one tuple per
item and replica, which is what a mirror needs, but a Detox cycle over 10M replicas spent 37 s
building and decoding those tuples before it judged anything. The inventory already keeps its
fields column by column (``inventory.inventory``), so the column snapshot copies those columns
as they are (one memcpy each) and the client maps them into numpy arrays without a single
per-row Python object. Text (names) and metadata are sent only when asked for.

Consistency: every column is copied in one step of the event loop (no await between the
copies), so the snapshot is the inventory at exactly one version, with no change tail to apply.
The copy costs ~25 ms per million replicas of server time; the encoding and the stream run
after it, between awaits, like the record snapshot.

Layout of the stream (msgpack objects, one after the other):

1. ``{"format": "dlm-columns/1", "version", "counts", "columns", "names"}``: ``columns`` maps
   ``item`` and ``replica`` to ``{column: numpy dtype}`` of the fixed-width columns, ``counts``
   gives their row counts, ``names`` the owner and group tables their codes index;
2. ``["storages", [wire storage records]]``, then ``["pins", [[item row, storage id,
   pin_until, request id, requester], ...]]``: the copies copy requests pin (``inventory.pins``),
   each with the request that holds it longest, expired or not (the planner's clock decides);
3. ``["column", table, column, bytes]``: a chunk of a fixed-width column, in row order;
4. ``["text", "item", "name", bytes, lengths]``: a chunk of names as UTF-8, one after the
   other, and their lengths in bytes (``<i4``): the client keeps the bytes and decodes only the
   names a policy reads, instead of making 10M string objects; ``["sparse", table, column,
   [[row, value], ...]]`` (item metadata, replica expiry: set on few rows);
5. ``["end", {"version"}]``.

Rows are the server's row numbers: a replica row whose ``item`` is -1 is empty (a removed
replica's row waiting for reuse) and is dropped by the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inventory import model
from inventory.feed import STORAGE_HEX, WIRE_ITEM_FIELDS, WIRE_REPLICA_FIELDS
from inventory.pins import Pin, inventory_pins

FORMAT = "dlm-columns/1"
MEDIA_TYPE = "application/vnd.dlm-columns+msgpack"  # raw arrays inside: not JSON-able
CHUNK_BYTES = 8 << 20  # bytes of a fixed-width column per message
TEXT_CHUNK = 50_000  # strings or sparse entries per message
OID_CHUNK = 1 << 14  # oids per message (256 KiB, ~6 ms to convert; 8 MiB of them took ~200 ms)

# Fixed-width columns: name -> numpy dtype (little-endian, as the server's arrays are on
# every platform we run on; the header names them, so a reader on another byte order can
# tell). Times are float epoch seconds, NaN when unset; sizes -1 when unknown.
ITEM_COLUMNS: dict[str, str] = {
    "oid": "V16",  # the 128-bit oid, big-endian: sorts as its UUID text does
    "version": "<i4", "type": "u1", "state": "u1", "target_phase": "u1", "size": "<i8",
    "parent": "<i4", "created": "<f8", "expire_at": "<f8", "access_count": "<i8",
    "last_access": "<f8", "owner": "<u4", "group": "<u4",
}
REPLICA_COLUMNS: dict[str, str] = {
    "item": "<i4", "storage_id": "<u2", "state": "u1", "size": "<i8", "created": "<f8",
}
OPTIONAL = ("name", "metadata")  # sent when asked for: ?with=name,metadata


@dataclass(slots=True)
class ColumnSnapshot:
    """The inventory at ``version`` as numpy columns (``items[...]``, ``replicas[...]``: one
    row per item / live replica), the storages as wire records, the owner and group tables,
    and what was asked of the optional fields: the item names (``name(row)``; UTF-8 bytes
    and offsets, decoded when read) and ``metadata`` (item row -> dict, only items that have
    some), and the copies copy requests pin (``pins``: (item row, storage id) -> ``Pin``)."""

    version: int
    storages: list[Sequence[Any]]
    items: dict[str, np.ndarray]
    replicas: dict[str, np.ndarray]
    owners: list[str | None] = field(default_factory=lambda: [None])
    groups: list[str | None] = field(default_factory=lambda: [None])
    name_bytes: bytes | None = None
    name_offsets: np.ndarray | None = None  # item row -> start in name_bytes (one more: end)
    metadata: dict[int, Any] | None = None
    pins: dict[tuple[int, int], Pin] = field(default_factory=dict)

    @property
    def has_names(self) -> bool:
        return self.name_offsets is not None

    def names_of(self, rows: np.ndarray) -> list[str]:
        """The names of the items in ``rows``, decoded in one pass."""
        offsets, data = self.name_offsets, self.name_bytes
        assert offsets is not None and data is not None, "snapshot without names"
        return [str(data[start:end], "utf-8") for start, end in
                zip(offsets[rows].tolist(), offsets[rows + 1].tolist(), strict=True)]

    @property
    def names(self) -> list[str] | None:
        """Every name, decoded (tests and small inventories)."""
        if self.name_offsets is None:
            return None
        return self.names_of(np.arange(len(self.name_offsets) - 1))

    @property
    def item_count(self) -> int:
        return len(self.items["state"])

    @property
    def replica_count(self) -> int:
        return len(self.replicas["item"])

    def oid_texts(self, rows: np.ndarray) -> list[str]:
        """The UUID texts of the items in ``rows``, formatted from one hex string."""
        h = self.items["oid"][rows].tobytes().hex()
        return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-"
                f"{h[i + 20:i + 32]}" for i in range(0, len(h), 32)]

    def replica_uid_texts(self, indices: np.ndarray) -> list[str]:
        """The uid texts of the replicas at ``indices``: their items' oid texts with the
        storage id in the last four hex digits."""
        return [oid[:32] + STORAGE_HEX[sid] for oid, sid in zip(
            self.oid_texts(self.replicas["item"][indices]),
            self.replicas["storage_id"][indices].tolist(), strict=True)]


# --------------------------------------------------------------------------- server side

def copy_columns(inv: Any, optional: frozenset[str]) -> dict[str, Any]:
    """Everything the stream will send, copied from the live inventory in one synchronous step
    (the caller must not await before it returns): fixed-width columns as bytes, the lists
    of immutable values as shallow copies (the oids, which never change, not even that)."""
    n_items = len(inv.i_state)
    copied: dict[str, Any] = {
        "version": inv.version,
        "storages": [s.record() for s in inv.storages.values()],
        "pins": [[row, sid, pin.until, pin.request, pin.requester]
                 for (row, sid), pin in inventory_pins(inv).items()],
        "item": {
            # The oid list itself, not a copy: a row's oid never changes and rows are only
            # appended, so its first n_items rows stay these; encoded later, a chunk at a time.
            "oid": inv.i_oid,
            "version": inv.i_version.tobytes(), "type": bytes(inv.i_type),
            "state": bytes(inv.i_state), "target_phase": bytes(inv.i_target),
            "size": inv.i_size.tobytes(), "parent": inv.i_parent.tobytes(),
            "created": inv.i_created.tobytes(), "expire_at": inv.i_expire.tobytes(),
            "access_count": inv.i_access_count.tobytes(),
            "last_access": inv.i_last_access.tobytes(),
            "owner": inv.i_owner._codes.tobytes(), "group": inv.i_group._codes.tobytes(),
        },
        "replica": {
            "item": inv.r_item.tobytes(), "storage_id": inv.r_storage.tobytes(),
            "state": bytes(inv.r_state), "size": inv.r_size.tobytes(),
            "created": inv.r_created.tobytes(),
        },
        "replica_expire": list(inv.r_expire.items()),
        "owners": list(inv.i_owner._names), "groups": list(inv.i_group._names),
        "counts": {"items": n_items, "replicas": len(inv.r_item)},
    }
    if "name" in optional:
        copied["names"] = list(inv.i_name)
    if "metadata" in optional:
        # metadata dicts are replaced, never changed in place, by an item update
        copied["metadata"] = list(inv.i_metadata.items())
    return copied


async def encode_stream(copied: dict[str, Any], storage_wire: Callable[[Any], Any],
                        pack: Callable[[Any], bytes]) -> AsyncIterator[bytes]:
    """The messages of the stream, from what ``copy_columns`` took (an async generator: it
    yields to the loop between chunks, so other requests run while a large one streams)."""
    yield pack({
        "format": FORMAT, "version": copied["version"], "counts": copied["counts"],
        "columns": {"item": ITEM_COLUMNS, "replica": REPLICA_COLUMNS},
        "names": {"owner": copied["owners"], "group": copied["groups"]},
        "optional": [k for k in ("names", "metadata") if k in copied],
    })
    yield pack(["storages", [storage_wire(s) for s in copied["storages"]]])
    yield pack(["pins", copied["pins"]])
    oids, n_items = copied["item"]["oid"], copied["counts"]["items"]
    step = OID_CHUNK  # each oid is a Python int to convert: small steps keep the loop free
    for lo in range(0, n_items, step):
        yield pack(["column", "item", "oid", b"".join(
            [o.to_bytes(16, "big") for o in oids[lo:min(lo + step, n_items)]])])
        await asyncio.sleep(0)
    for table in ("item", "replica"):
        for name, data in copied[table].items():
            if name == "oid":
                continue
            view = memoryview(data)
            for lo in range(0, len(data), CHUNK_BYTES):
                yield pack(["column", table, name, view[lo:lo + CHUNK_BYTES]])
            await asyncio.sleep(0)
    expire = copied["replica_expire"]
    for lo in range(0, len(expire), TEXT_CHUNK):
        yield pack(["sparse", "replica", "expire_at", expire[lo:lo + TEXT_CHUNK]])
    names = copied.get("names")
    if names is not None:
        for lo in range(0, len(names), TEXT_CHUNK):
            encoded = [name.encode() for name in names[lo:lo + TEXT_CHUNK]]
            lengths = np.fromiter(map(len, encoded), dtype="<i4", count=len(encoded))
            yield pack(["text", "item", "name", b"".join(encoded), lengths.tobytes()])
            await asyncio.sleep(0)
    metadata = copied.get("metadata")
    if metadata is not None:
        for lo in range(0, len(metadata), TEXT_CHUNK):
            yield pack(["sparse", "item", "metadata", metadata[lo:lo + TEXT_CHUNK]])
            await asyncio.sleep(0)
    yield pack(["end", {"version": copied["version"]}])


# --------------------------------------------------------------------------- client side

class ColumnReader:
    """Assembles a column snapshot from the stream's messages, each fixed-width column written
    into one buffer allocated from the header's counts (no list of chunks, no join)."""

    def __init__(self) -> None:
        self.header: dict[str, Any] | None = None
        self._buffers: dict[tuple[str, str], bytearray] = {}
        self._filled: dict[tuple[str, str], int] = {}
        self.storages: list[Sequence[Any]] = []
        self.names: bytearray | None = None  # UTF-8, one name after the other
        self.name_lengths: list[np.ndarray] = []
        self.metadata: dict[int, Any] | None = None
        self.replica_expire: list[tuple[int, float]] = []
        self.pins: dict[tuple[int, int], Pin] = {}
        self.ended: int | None = None
        self.received = 0  # bytes of column data so far
        self.total = 0

    def feed(self, obj: Any) -> None:
        if self.header is None:
            if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
                raise ValueError("not a dlm column snapshot")
            self.header = obj
            counts = obj["counts"]
            for table, columns in obj["columns"].items():
                n = counts["items" if table == "item" else "replicas"]
                for name, dtype in columns.items():
                    size = n * np.dtype(dtype).itemsize
                    self._buffers[table, name] = bytearray(size)
                    self._filled[table, name] = 0
                    self.total += size
            if "names" in obj.get("optional", ()):
                self.names = bytearray()
            if "metadata" in obj.get("optional", ()):
                self.metadata = {}
            return
        kind = obj[0]
        if kind == "column":
            _, table, name, data = obj
            key = (table, name)
            at = self._filled[key]
            if at + len(data) > len(self._buffers[key]):  # a slice past the end would grow it
                raise ValueError(f"column {table}.{name}: more bytes than its rows hold")
            self._buffers[key][at:at + len(data)] = data
            self._filled[key] = at + len(data)
            self.received += len(data)
        elif kind == "text":
            self.names.extend(obj[3])  # type: ignore[union-attr]
            self.name_lengths.append(np.frombuffer(obj[4], dtype="<i4"))
        elif kind == "sparse":
            _, table, name, pairs = obj
            if table == "item":
                self.metadata.update(pairs)  # type: ignore[union-attr]
            else:
                self.replica_expire.extend(pairs)
        elif kind == "storages":
            self.storages.extend(obj[1])
        elif kind == "pins":
            self.pins.update(((row, sid), Pin(until, request, requester))
                             for row, sid, until, request, requester in obj[1])
        elif kind == "end":
            self.ended = obj[1]["version"]
        elif kind == "error":
            raise RuntimeError(obj[1].get("message", "snapshot failed"))

    def snapshot(self) -> ColumnSnapshot:
        if self.header is None or self.ended is None:
            raise ValueError("the column snapshot ended before its end record")
        for key, at in self._filled.items():
            if at != len(self._buffers[key]):
                raise ValueError(f"column {key[0]}.{key[1]}: {at} of "
                                 f"{len(self._buffers[key])} bytes received")
        columns = self.header["columns"]
        items = {name: np.frombuffer(self._buffers["item", name], dtype=dtype)
                 for name, dtype in columns["item"].items()}
        replicas = {name: np.frombuffer(self._buffers["replica", name], dtype=dtype)
                    for name, dtype in columns["replica"].items()}
        expire = np.full(len(replicas["item"]), np.nan)
        if self.replica_expire:
            rows, values = zip(*self.replica_expire, strict=True)
            expire[np.fromiter(rows, np.int64, len(rows))] = values
        replicas["expire_at"] = expire
        live = replicas["item"] >= 0
        if not live.all():  # rows removed replicas left empty
            replicas = {name: column[live] for name, column in replicas.items()}
        names = self.header["names"]
        offsets = None
        if self.names is not None:
            offsets = name_offsets(self.name_lengths)
            if len(offsets) != len(items["state"]) + 1 or offsets[-1] != len(self.names):
                raise ValueError("item names do not match the items")
        return ColumnSnapshot(self.ended, self.storages, items, replicas,
                              list(names["owner"]), list(names["group"]),
                              None if self.names is None else bytes(self.names), offsets,
                              self.metadata, self.pins)


def name_offsets(lengths: Sequence[np.ndarray]) -> np.ndarray:
    """Where each name starts, from the names' lengths (and where the last one ends)."""
    offsets = np.zeros(sum(len(x) for x in lengths) + 1, dtype=np.int64)
    if len(offsets) > 1:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return offsets


def from_records(version: int, storages: Sequence[Sequence[Any]],
                 items: Mapping[str, Sequence[Any]],
                 replicas: Sequence[Sequence[Any]],
                 pins: Mapping[tuple[str, int], Pin] | None = None) -> ColumnSnapshot:
    """A column snapshot of record-snapshot data (wire records, as ``inventory.client.
    Snapshot`` holds them, and its ``pins()``: (oid, storage id) -> ``Pin``): items in the
    mapping's order, replicas in the given order. What the tests compare the column planners
    against the record planners with."""
    fi = {name: i for i, name in enumerate(WIRE_ITEM_FIELDS)}
    fr = {name: i for i, name in enumerate(WIRE_REPLICA_FIELDS)}
    rows = {oid: row for row, oid in enumerate(items)}
    recs = list(items.values())
    owners: list[str | None] = [None]
    groups: list[str | None] = [None]

    def codes(table: list[str | None], values: list[str | None]) -> np.ndarray:
        index = {v: i for i, v in enumerate(table)}
        out = []
        for v in values:
            v = v or None
            if v not in index:
                index[v] = len(table)
                table.append(v)
            out.append(index[v])
        return np.array(out, dtype="<u4")

    def times(values: Sequence[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in values], dtype="<f8")

    def col(key: str) -> list[Any]:
        return [r[fi[key]] for r in recs]

    items_out = {
        "oid": np.array([model.parse_uuid(r[0]).to_bytes(16, "big") for r in recs],
                        dtype="V16").reshape(len(recs)),
        "version": np.array(col("item_version"), dtype="<i4"),
        "type": np.array([model.ITEM_TYPE[v] for v in col("item_type")], dtype="u1"),
        "state": np.array([model.ITEM_STATE[v] for v in col("state")], dtype="u1"),
        "target_phase": np.array([model.PHASE[v] for v in col("target_phase")], dtype="u1"),
        "size": np.array([-1 if v is None else v for v in col("size")], dtype="<i8"),
        "parent": np.array([-1 if v is None else rows.get(v, -1) for v in col("parent_oid")],
                           dtype="<i4"),
        "created": times(col("created")),
        "expire_at": times(col("expire_at")),
        "access_count": np.array(col("access_count"), dtype="<i8"),
        "last_access": times(col("last_access")),
        "owner": codes(owners, col("owner")),
        "group": codes(groups, col("group")),
    }
    live = [r for r in replicas if r[fr["oid"]] in rows]
    reps_out = {
        "item": np.array([rows[r[fr["oid"]]] for r in live], dtype="<i4"),
        "storage_id": np.array([r[fr["storage_id"]] for r in live], dtype="<u2"),
        "state": np.array([model.REPLICA_STATE[r[fr["state"]]] for r in live], dtype="u1"),
        "size": np.array([-1 if r[fr["size"]] is None else r[fr["size"]] for r in live],
                         dtype="<i8"),
        "created": times([r[fr["created"]] for r in live]),
        "expire_at": times([r[fr["expire_at"]] for r in live]),
    }
    metadata = {row: r[fi["metadata"]] for row, r in enumerate(recs) if r[fi["metadata"]]}
    encoded = [name.encode() for name in col("item_name")]
    return ColumnSnapshot(version, list(storages), items_out, reps_out, owners, groups,
                          b"".join(encoded),
                          name_offsets([np.array(list(map(len, encoded)), dtype=np.int64)]),
                          metadata, {(rows[oid], sid): pin for (oid, sid), pin in
                                     (pins or {}).items() if oid in rows})
