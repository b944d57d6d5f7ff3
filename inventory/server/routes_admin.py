"""Tokens, copy requests, operations and cycle history."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from inventory import metadata, model, validate
from inventory.decisions import HEADER_ALLOWANCE, expanded_size, plan_bound, read_bound
from inventory.decisions import decode as decode_decisions
from inventory.errors import BadRequest, Conflict, DLMError, NotFound, PayloadTooLarge
from inventory.inventory import Inventory
from inventory.objects import (
    CYCLE_KINDS,
    OPERATION_KINDS,
    OPERATION_STATES,
    REQUEST_STATES,
    CopyRequest,
    Cycle,
    Operation,
    Token,
)
from inventory.retention import find_operation, find_operations
from inventory.server import guards
from inventory.server.auth import actor, requester, requires
from inventory.server.bodies import decode, query_int, respond, sent
from inventory.server.state import PLAN_LIMIT, state_of
from inventory.specs import (
    CyclePlanIn,
    DealerPlanIn,
    DetoxPlanIn,
    OperationRequest,
    RequestSpec,
    TokenSpec,
)
from inventory.writes import MAX_BATCH, AddRequest, AddToken, CancelRequest, DeleteToken, Write
from inventory.writes_cycles import ApplyDealerPlan, ApplyDetoxPlan
from inventory.writes_ops import CancelOperation, OperationSpec, QueueOperations

routes = web.RouteTableDef()
_time = model.format_time


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise BadRequest(f"expected one of {', '.join(allowed)}", name)
    return value


def _storage_id(request: web.Request, inv: Inventory) -> int | None:
    name = request.query.get("storage")
    if name is None:
        return None
    storage = inv.storage_by_name.get(name)
    if storage is None:
        raise BadRequest(f"no storage named {name!r}", "storage")
    return storage.id


def _int_path(request: web.Request, name: str) -> int:
    try:
        return int(request.match_info[name])
    except ValueError:
        raise BadRequest(f"expected an integer, got {request.match_info[name]!r}", name) \
            from None


# ------------------------------------------------------------------------------- tokens

def token_json(token: Token) -> dict[str, Any]:
    return {"name": token.name, "role": token.role, "created": _time(token.created),
            "expires_at": _time(token.expires_at)}


@routes.post("/v1/tokens")
@requires("operator")
async def add_token(request: web.Request) -> web.Response:
    spec = await decode(request, TokenSpec)
    token, secret = await state_of(request).scheduler.write(AddToken(spec))
    return respond(request, {**token_json(token), "token": secret}, status=201)


@routes.get("/v1/tokens")
@requires("operator")
async def list_tokens(request: web.Request) -> web.Response:
    tokens = sorted(state_of(request).inventory.tokens.values(), key=lambda t: t.name)
    return respond(request, {"tokens": [token_json(t) for t in tokens]})


@routes.delete("/v1/tokens/{name}")
@requires("operator")
async def delete_token(request: web.Request) -> web.Response:
    await state_of(request).scheduler.write(DeleteToken(request.match_info["name"]))
    return web.Response(status=204)


# ------------------------------------------------------------------------------- requests

def request_json(inv: Inventory, req: CopyRequest) -> dict[str, Any]:
    row = inv.row_of_oid(req.oid)
    return {
        "id": req.id, "oid": model.format_uuid(req.oid),
        "item_name": None if row is None else inv.i_name[row],
        "storage": inv.storages[req.storage_id].name, "state": req.state,
        "pin_until": _time(req.pin_until), "created": _time(req.created),
        "updated": _time(req.updated), "requester": req.requester, "comment": req.comment,
    }


@routes.post("/v1/requests")
@requires("producer")
async def add_request(request: web.Request) -> web.Response:
    spec = await decode(request, RequestSpec)
    req = await state_of(request).scheduler.write(AddRequest(spec, requester(request)))
    return respond(request, request_json(state_of(request).inventory, req), status=201)


@routes.get("/v1/requests")
async def list_requests(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    state = _choice(request, "state", REQUEST_STATES)
    storage_id = _storage_id(request, inv)
    found = [r for r in sorted(inv.requests.values(), key=lambda r: r.id)
             if (state is None or r.state == state)
             and (storage_id is None or r.storage_id == storage_id)]
    return respond(request, {"requests": [request_json(inv, r) for r in found]})


@routes.delete("/v1/requests/{id}")
@requires("producer")
async def cancel_request(request: web.Request) -> web.Response:
    req = await state_of(request).scheduler.write(
        CancelRequest(_int_path(request, "id"), actor(request)))
    return respond(request, request_json(state_of(request).inventory, req))


# ------------------------------------------------------------------------------- operations

def operation_json(inv: Inventory, op: Operation) -> dict[str, Any]:
    row = inv.row_of_oid(op.oid)
    return {
        "id": op.id, "kind": op.kind, "oid": model.format_uuid(op.oid),
        "item_name": None if row is None else inv.i_name[row],
        "source": None if op.source_id is None else inv.storages[op.source_id].name,
        "target": inv.storages[op.target_id].name, "origin": op.origin, "state": op.state,
        "attempts": op.attempts, "last_error": op.last_error,
        "created": _time(op.created), "updated": _time(op.updated),
    }


@routes.get("/v1/operations")
async def list_operations(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    state = _choice(request, "state", OPERATION_STATES)
    kind = _choice(request, "kind", OPERATION_KINDS)
    storage_id = _storage_id(request, inv)
    limit = query_int(request, "limit", 100, 1, 10_000)
    after = query_int(request, "cursor", 0, 0, 2**62)  # the last id of the previous page
    # memory holds the live operations and the recently finished ones; older finished ones
    # are read from the database (inventory.retention)
    found = await find_operations(inv, state_of(request).store,
                                  states=(state,) if state else (), kind=kind,
                                  storage_id=storage_id, after=after, limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return respond(request, {"operations": [operation_json(inv, o) for o in found],
                             "cursor": str(found[-1].id) if more else None})


@routes.post("/v1/operations")
@requires("operator")
async def queue_operations(request: web.Request) -> web.Response:
    """One operation (its JSON back), or a list of up to ``MAX_BATCH`` queued in one
    transaction: refused whole at the first bad entry, named ``operations[i].field``."""
    body = await decode(request, OperationRequest | list[OperationRequest], root="operations")
    single = isinstance(body, OperationRequest)
    requests = [body] if single else body
    if len(requests) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} operations per request, got {len(requests)}",
                         "operations")
    if not requests:
        raise BadRequest("expected at least one operation", "operations")
    state = state_of(request)
    inv = state.inventory
    specs = [_operation_spec(inv, spec, "" if single else f"operations[{i}].")
             for i, spec in enumerate(requests)]
    try:
        ops = await state.scheduler.write(QueueOperations(specs, origin="user"))
    except DLMError as exc:
        if single and exc.field:
            exc.field = exc.field.removeprefix("operations[0].")
        raise
    if state.engine is not None:
        state.engine.wake()
    if single:
        return respond(request, operation_json(inv, ops[0]), status=201)
    return respond(request, {"count": len(ops),
                             "operations": [operation_json(inv, o) for o in ops]}, status=201)


def _operation_spec(inv: Inventory, spec: OperationRequest, where: str) -> OperationSpec:
    """The request with its item and storages resolved; a name that is none is refused with
    its field (``where`` is ``operations[i].`` in a list)."""
    row = _item_by_oid_or_name(inv, spec.item, where + "item")
    target = inv.storage_by_name.get(spec.target)
    if target is None:
        raise BadRequest(f"no storage named {spec.target!r}", where + "target")
    source_id = None
    if spec.source is not None:
        source = inv.storage_by_name.get(spec.source)
        if source is None:
            raise BadRequest(f"no storage named {spec.source!r}", where + "source")
        source_id = source.id
    return OperationSpec(spec.kind, inv.i_oid[row], target.id, source_id)


@routes.get("/v1/operations/{id}")
async def show_operation(request: web.Request) -> web.Response:
    state = state_of(request)
    op_id = _int_path(request, "id")
    op = await find_operation(state.inventory, state.store, op_id)
    if op is None:
        raise NotFound(f"no operation {op_id}", "id")
    return respond(request, operation_json(state.inventory, op))


@routes.delete("/v1/operations/{id}")
@requires("operator")
async def cancel_operation(request: web.Request) -> web.Response:
    state = state_of(request)
    op_id = _int_path(request, "id")
    if op_id not in state.inventory.operations:
        # finished long ago (memory dropped it): say so, not "no operation"
        op = await find_operation(state.inventory, state.store, op_id)
        if op is not None:
            raise Conflict(f"operation {op_id} is {op.state}", "id")
    op = await state.scheduler.write(CancelOperation(op_id))
    return respond(request, operation_json(state.inventory, op))


def _item_by_oid_or_name(inv: Inventory, text: str, field: str) -> int:
    try:
        row = inv.row_of_oid(model.parse_uuid(text))
    except ValueError:
        row = inv.row_of_name(text)
    if row is None:
        raise NotFound(f"no item {text!r} (give an oid or an item name)", field)
    return row


# ------------------------------------------------------------------------------- history

def cycle_json(cycle: Cycle, *, policy: bool = False) -> dict[str, Any]:
    out = {"id": cycle.id, "kind": cycle.kind, "started": _time(cycle.started),
           "ended": _time(cycle.ended), "summary": cycle.summary}
    if policy:
        out["policy"] = cycle.policy
    return out


@routes.get("/v1/history")
async def list_cycles(request: web.Request) -> web.Response:
    inv = state_of(request).inventory
    kind = _choice(request, "kind", CYCLE_KINDS)
    limit = query_int(request, "limit", 100, 1, 10_000)
    cycles = [c for c in sorted(inv.cycles.values(), key=lambda c: -c.id)
              if kind is None or c.kind == kind][:limit]
    return respond(request, {"cycles": [cycle_json(c) for c in cycles]})


@routes.post("/v1/cycles/detox")
@requires("operator")
async def apply_detox_plan(request: web.Request) -> web.Response:
    """Detox sends its plan here; it is applied as one write (see inventory/writes_cycles.py)."""
    return await _apply_plan(request, DetoxPlanIn, ApplyDetoxPlan)


@routes.post("/v1/cycles/dealer")
@requires("operator")
async def apply_dealer_plan(request: web.Request) -> web.Response:
    """Dealer sends its plan here; it is applied as one write (see inventory/writes_cycles.py)."""
    return await _apply_plan(request, DealerPlanIn, ApplyDealerPlan)


async def _apply_plan(request: web.Request, spec: type[CyclePlanIn],
                      write: Callable[[Any], Write]) -> web.Response:
    plan = await decode(request, spec, limit=request.app[PLAN_LIMIT])
    validate.epoch_value(plan.started, "started")  # else stored, and /v1/history a 500
    # stored as JSON and read by every history page: bytes in it failed its whole commit group,
    # nesting kept a PostgreSQL server from loading (issue 16)
    metadata.check(plan.summary, "summary", metadata.SUMMARY_LIMITS, "the summary")
    state = state_of(request)
    await _check_decisions(request, plan, state.inventory)
    cycle = await state.scheduler.write(write(plan))
    response = await sent(request, respond(request, cycle_json(cycle), status=201))
    if state.engine is not None:
        state.engine.wake()  # the plan queued operations: started once the answer is out
    return response


async def _check_decisions(request: web.Request, plan: CyclePlanIn, inv: Any) -> None:
    """Refuse a plan whose ``decisions`` expand past what its decisions can take (else every
    read of them would expand it: a 1 MB blob can hold 1 GiB). Measured in a thread, a step
    at a time, given up at the bound."""
    per_decision = request.app[guards.LIMITS].max_decision_bytes
    lists = sum(len(getattr(plan, name, ())) for name in
                ("expirations", "deletions", "copies", "requests_done"))
    bound = plan_bound(per_decision, len(inv.i_oid) + len(inv.r_item), lists)
    try:
        size = await asyncio.to_thread(expanded_size, plan.decisions, bound)
    except ValueError as exc:
        raise BadRequest(f"expected zlib-compressed msgpack: {exc}", "decisions") from None
    if size > bound:
        raise PayloadTooLarge(
            f"decisions expand past {bound} bytes: {per_decision} bytes for each of the "
            f"inventory's {len(inv.i_oid) + len(inv.r_item)} rows and the plan's {lists} "
            f"entries (limits.max_decision_bytes) and {HEADER_ALLOWANCE} more",
            "decisions", limit=bound)


@routes.get("/v1/history/{id}/decisions")
async def cycle_decisions(request: web.Request) -> web.Response:
    """Every decision of a cycle, filtered by storage, rule (label) and outcome."""
    state = state_of(request)
    cycle = state.inventory.cycles.get(_int_path(request, "id"))
    if cycle is None:
        raise NotFound(f"no cycle {request.match_info['id']}", "id")
    blob = await state.store.cycle_decisions(cycle.id)
    columns, rows = decode_decisions(blob, read_bound(
        request.app[guards.LIMITS].max_decision_bytes, state.inventory))
    limit = query_int(request, "limit", 1000, 1, 100_000)
    offset = query_int(request, "cursor", 0, 0, 2**62)
    wanted = {k: request.query[k] for k in ("storage", "rule", "outcome") if k in request.query}
    inv = state.inventory
    out = []
    next_cursor = None
    for index in range(offset, len(rows)):
        record = dict(zip(columns, rows[index], strict=True))
        storage_id = record.get("storage_id")
        storage = inv.storages.get(storage_id) if isinstance(storage_id, int) else None
        record["storage"] = None if storage is None else storage.name
        if any(record.get(k) != v for k, v in wanted.items()):
            continue
        if len(out) == limit:
            next_cursor = str(index)
            break
        out.append(record)
    return respond(request, {"decisions": out, "cursor": next_cursor})


@routes.get("/v1/history/{id}")
async def show_cycle(request: web.Request) -> web.Response:
    cycle = state_of(request).inventory.cycles.get(_int_path(request, "id"))
    if cycle is None:
        raise NotFound(f"no cycle {request.match_info['id']}", "id")
    return respond(request, cycle_json(cycle, policy=True))
