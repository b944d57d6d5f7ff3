"""Pins: the copies that users' copy requests ask to keep until a time (``pin_until``).

One rule for every place that reads them, so that they cannot disagree: the server when it applies
a Detox plan, the snapshots it sends Detox (records and columns), and both Detox planners. A
request pins while it is open or served (``pending``, ``done``) and has a ``pin_until``; a
container's request pins its members' copies. Whether a pin still holds is decided against the
reader's clock (``Pin.holds``): snapshots carry every pin with its time, expired or not.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from inventory import model
from inventory.objects import CopyRequest

PINNING_STATES = frozenset({"pending", "done"})
K = TypeVar("K", bound=Hashable)  # how the caller names an item (oid, oid text, row)
# a request as the readers have it: (id, item, storage id, state, pin_until, requester)
RequestFields = tuple[int, object, int, str, float | None, str | None]


@dataclass(frozen=True, slots=True)
class Pin:
    """Why a copy is kept: copy request ``request`` (by ``requester``) pins it until ``until``."""

    until: float
    request: int
    requester: str | None = None

    def holds(self, now: float) -> bool:
        return self.until > now

    @property
    def reason(self) -> str:
        """The decision's rule label in Detox's report and history."""
        return f"pinned by copy request {self.request} until {model.format_time(self.until)}"

    def to_json(self) -> dict[str, object]:
        return {"request": self.request, "requester": self.requester,
                "until": model.format_time(self.until)}


def request_fields(request: CopyRequest) -> RequestFields:
    return (request.id, request.oid, request.storage_id, request.state, request.pin_until,
            request.requester)


def wire_request_fields(record: tuple) -> RequestFields:
    """A request's wire record (``feed.object_wire``: the CopyRequest columns in order)."""
    return (record[_ID], record[_OID], record[_SID], record[_STATE], record[_UNTIL],
            record[_REQUESTER])


_COLUMNS = CopyRequest.columns()
_ID, _OID, _SID, _STATE, _UNTIL, _REQUESTER = (
    _COLUMNS.index(name) for name in ("id", "oid", "storage_id", "state", "pin_until",
                                      "requester"))


def pins_of(requests: Iterable[RequestFields], files_of: Callable[[object], Iterable[K]]
            ) -> dict[tuple[K, int], Pin]:
    """Per copy ``(file, storage id)``, the pin that holds it longest (the lowest request id of
    equal ones). ``files_of(item)`` names the files a request's item covers (a container's
    members, a file itself; nothing for an unknown item)."""
    out: dict[tuple[K, int], Pin] = {}
    for request_id, item, storage_id, state, until, requester in sorted(
            requests, key=lambda r: r[0]):
        if state not in PINNING_STATES or until is None:
            continue
        pin = Pin(until, request_id, requester)
        for file in files_of(item):
            key = (file, storage_id)
            held = out.get(key)
            if held is None or held.until < until:
                out[key] = pin
    return out


def inventory_pins(inv: Any) -> dict[tuple[int, int], Pin]:
    """The pins of an ``inventory.Inventory``, per (item row, storage id)."""
    def files_of(oid: Any) -> Iterable[int]:
        row = inv.row_of_oid(oid)
        if row is None:
            return ()
        return inv.child_rows(row) if inv.i_type[row] == model.CONTAINER else (row,)

    # the index of pinning requests, not every request ever made (Inventory.pinning_requests)
    return pins_of(map(request_fields, inv.pinning_requests.values()), files_of)
