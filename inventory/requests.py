"""Copy requests a completed copy serves: closed when the copy they asked for arrives.

Without this a request stays ``pending`` until the next Dealer cycle notices it is satisfied,
which users read as "not done". A request is served when every file it covers (the item, or a
container's members) has a complete copy on its storage; a container's request is checked from
the first member not yet seen complete, so closing it costs its members once in all, not once
per arriving copy.
"""

from __future__ import annotations

import dataclasses

from inventory import model
from inventory.inventory import NONE, Inventory
from inventory.objects import CopyRequest


def requests_served(inv: Inventory, oid: int, storage_id: int, now: float
                    ) -> list[CopyRequest]:
    """The pending requests on item ``oid`` (or a container above it) and ``storage_id`` that
    the copy of ``oid`` now arriving on ``storage_id`` satisfies, as ``done``."""
    row = inv.row_of_oid(oid)
    served = []
    while row is not None and row != NONE:
        for request_id in sorted(inv.open_requests.get(inv.i_oid[row], ())):
            request = inv.requests[request_id]
            if request.storage_id == storage_id and _covered(inv, request, row, oid):
                served.append(dataclasses.replace(request, state="done", updated=now))
        row = inv.i_parent[row]
    return served


def _covered(inv: Inventory, request: CopyRequest, row: int, arrived: int) -> bool:
    """Whether every file of ``request`` (on item ``row``) has a complete copy on its storage,
    the copy of ``arrived`` counted as complete."""
    if inv.i_type[row] != model.CONTAINER:
        return True  # the arriving copy is the request's own file
    members = inv.child_rows(row)
    start = inv.request_scan.get(request.id, 0)
    for index in (*range(start, len(members)), *range(start)):
        member = members[index]
        if inv.i_oid[member] != arrived and not _complete_on(inv, member, request.storage_id):
            inv.request_scan[request.id] = index  # resume here at the next arrival
            return False
    inv.request_scan.pop(request.id, None)
    return True


def _complete_on(inv: Inventory, row: int, storage_id: int) -> bool:
    return any(inv.r_storage[r] == storage_id and inv.r_state[r] == model.COMPLETE
               for r in inv.replica_rows_of_item(row))
