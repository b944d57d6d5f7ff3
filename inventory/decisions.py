"""The stored decisions of a cycle: the two encodings a planner sends and the one decoder.

A cycle's decisions are one blob, zlib-compressed msgpack, stored as sent and decoded only when
someone reads them (``GET /v1/history/{id}/decisions``, the dashboard):

- rows: ``{"columns": [...], "rows": [[uid, storage_id, outcome, rule, line, size], ...]}``,
  what the record planners and Consistency write;
- columns: ``{"format": "columns", "columns": [...], "kinds": [[outcome, rule, line], ...],
  "oids": 16 bytes per item, "item": <i4, "storage_id": <u2, "code": <i4, "size": <i8}``, what
  the column planner writes: a decision is its item (an index into ``oids``), its storage, its
  kind and its size, 18 bytes instead of a ~90-byte msgpack row, built without a Python object
  per decision (10M decisions encode in well under a second).
"""

from __future__ import annotations

import zlib
from array import array
from typing import Any

import msgpack

from inventory import model
from inventory.feed import STORAGE_HEX

DECISION_COLUMNS = ("uid", "storage_id", "outcome", "rule", "line", "size")
# Bytes a plan's decisions may take beyond its per-decision share: the map's keys, the column
# names and the table of decision kinds (a few dozen rule labels per cycle).
HEADER_ALLOWANCE = 2 << 20
_STEP = 1 << 20  # bytes decompressed per step when measuring a blob
_WIDTH = {"item": ("i", 4), "storage_id": ("H", 2), "code": ("i", 4), "size": ("q", 8)}


def decode(blob: bytes | None, max_size: int | None = None) -> tuple[list[str], list[list[Any]]]:
    """The decisions as columns and rows, whichever encoding was stored; nothing when absent
    or unreadable (the blob comes from a client: a malformed one must not fail every read),
    nor when it expands past ``max_size`` bytes (a plan stored before POST measured them:
    never expanded further than that)."""
    if not blob:
        return [], []
    try:
        if max_size is None:
            raw = zlib.decompress(blob)
        else:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(blob, max_size + 1)
            if len(raw) > max_size or inflater.unconsumed_tail:
                return [], []
        data = msgpack.unpackb(raw, raw=False)
        if isinstance(data, dict) and data.get("format") == "columns":
            return list(DECISION_COLUMNS), _rows_of_columns(data)
        columns, rows = list(data["columns"]), data["rows"]
    except (zlib.error, ValueError, KeyError, TypeError, IndexError, msgpack.UnpackException):
        return [], []
    if not isinstance(rows, list) or not all(isinstance(c, str) for c in columns) or not all(
            isinstance(r, list) and len(r) == len(columns) for r in rows):
        return [], []
    return columns, rows


def plan_bound(per_decision: int, inventory_rows: int, plan_lists: int) -> int:
    """Bytes a plan's decisions may expand to: a cycle decides at most once per replica or
    item it judged (``inventory_rows``) and per entry of its own lists (``plan_lists``)."""
    return per_decision * (inventory_rows + plan_lists) + HEADER_ALLOWANCE


def read_bound(per_decision: int, inv: Any) -> int:
    """The most a stored plan's decisions may expand to when read: the POST bound, the plan's
    own lists counted as large as the inventory (they never hold more)."""
    rows = len(inv.i_oid) + len(inv.r_item)
    return plan_bound(per_decision, rows, rows)


def expanded_size(blob: bytes, limit: int) -> int:
    """The size of ``blob`` decompressed, measured a step at a time and given up past ``limit``
    (then ``limit + 1``): a blob that expands a thousandfold is never expanded in full, and
    nothing of it is kept. ValueError when it is not one whole zlib stream."""
    inflater = zlib.decompressobj()
    total = 0
    pending = blob
    try:
        while pending:
            total += len(inflater.decompress(pending, _STEP))
            if total > limit:
                return limit + 1
            pending = inflater.unconsumed_tail
        while not inflater.eof:  # what the last input step left inside the inflater
            out = inflater.decompress(b"", _STEP)
            if not out:
                break
            total += len(out)
            if total > limit:
                return limit + 1
    except zlib.error as exc:
        raise ValueError(f"not zlib-compressed data: {exc}") from None
    if not inflater.eof:
        raise ValueError("the zlib stream is cut short")
    if inflater.unused_data:
        raise ValueError("bytes follow the end of the zlib stream")
    return total


def _rows_of_columns(data: dict[str, Any]) -> list[list[Any]]:
    arrays = {}
    for name, (code, width) in _WIDTH.items():
        raw = data[name]
        if len(raw) % width:
            raise ValueError(f"column {name}: {len(raw)} bytes")
        arrays[name] = array(code, raw)
    n = len(arrays["code"])
    if any(len(a) != n for a in arrays.values()):
        raise ValueError("columns of different lengths")
    oids = data["oids"]
    texts = [model.format_uuid(int.from_bytes(oids[i:i + 16], "big"))[:-4]
             for i in range(0, len(oids), 16)]
    kinds = [tuple(k) for k in data["kinds"]]
    return [[texts[item] + STORAGE_HEX[sid], sid, *kinds[code], size]
            for item, sid, code, size in
            zip(arrays["item"], arrays["storage_id"], arrays["code"], arrays["size"],
                strict=True)]
