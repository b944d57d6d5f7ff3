"""The OpenAPI 3.1 description of the REST API, served at ``GET /openapi.json``.

Request bodies are described from the very msgspec Structs the handlers decode with
(``inventory.specs``), so a body the server accepts and the schema a client reads cannot drift
apart. Responses are described by the Structs below, written to match ``views.py`` and the
``routes_*`` modules field for field (nullable where the server sends ``null``) and closed
(``additionalProperties: false``) so that a field added to an answer without its schema is a
test failure, not a silent divergence. ``undocumented(app)`` lists the routes the application
registers that have no entry here; the tests require it to be empty.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from inventory import model, specs
from inventory.columns import MEDIA_TYPE as COLUMNS_MEDIA_TYPE
from inventory.objects import (
    CYCLE_KINDS,
    OPERATION_KINDS,
    OPERATION_STATES,
    REQUEST_STATES,
    ROLES,
)
from inventory.specs import (
    AccessSpec,
    AccessWithOid,
    DealerPlanIn,
    DetoxPlanIn,
    ItemPatch,
    ItemPatchWithOid,
    ItemSpec,
    RequestSpec,
    StoragePatch,
    StorageSpec,
    TokenSpec,
)

log = logging.getLogger("dlm.server")

JSON = "application/json"
MSGPACK = "application/msgpack"
COLUMNS = COLUMNS_MEDIA_TYPE
REF = "#/components/schemas/{name}"

# ----------------------------------------------------------------------- response shapes

Time = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
Uuid = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uuid"})]
Count = Annotated[int, msgspec.Meta(ge=0)]
ItemState = Literal["INITIALISED", "READY", "EXPIRED", "DELETED", "CORRUPTED"]
ReplicaState = Literal["pending", "copying", "complete", "deleting", "deleted", "missing",
                       "corrupt"]
Phase = Literal["PLASMA", "GAS", "LIQUID", "SOLID"]
StorageStatus = Literal["online", "draining", "offline", "retired"]
Role = Literal["reader", "producer", "operator"]
RequestState = Literal["pending", "done", "failed", "cancelled"]
OperationState = Literal["queued", "running", "done", "failed", "cancelled"]
OperationKind = Literal["copy", "delete"]
CycleKind = Literal["detox", "dealer", "consistency"]

# The Literals above repeat the model's tables because msgspec needs them at class creation;
# these asserts keep the two from drifting.
assert ItemState.__args__ == model.ITEM_STATES
assert ReplicaState.__args__ == model.REPLICA_STATES
assert Phase.__args__ == model.PHASES
assert StorageStatus.__args__ == model.STORAGE_STATUSES
assert Role.__args__ == ROLES
assert RequestState.__args__ == REQUEST_STATES
assert OperationState.__args__ == OPERATION_STATES
assert OperationKind.__args__ == OPERATION_KINDS
assert CycleKind.__args__ == CYCLE_KINDS


class Closed(msgspec.Struct, forbid_unknown_fields=True):
    """An answer object with exactly these fields (``additionalProperties: false``)."""


class Replica(Closed):
    """A copy of an item on a storage (``views.replica_json``)."""

    uid: Uuid
    oid: Uuid
    storage: str
    storage_id: int
    uri: str
    state: ReplicaState
    size: Count | None
    checksum: str | None
    created: Time
    expire_at: Time | None
    last_verified: Time | None


class Item(Closed):
    """A data item with its replicas (``views.item_json``)."""

    oid: Uuid
    item_name: str
    item_version: int
    item_type: Literal["file", "container"]
    parent_oid: Uuid | None
    size: Count | None
    checksum: str | None
    checksum_method: str | None  # null while the item has no checksum
    metadata: dict[str, Any]
    target_phase: Phase
    current_phase: Phase
    state: ItemState
    created: Time
    expire_at: Time | None
    access_count: Count
    last_access: Time | None
    owner: str | None
    group: str | None
    registered_by: str | None  # the token that registered it: producers expire only theirs
    replicas: list[Replica]


class ItemRef(Closed):
    oid: Uuid
    item_name: str
    item_version: int


class ItemsAdded(Closed):
    """The answer to a batch ``POST /v1/items``: the new items in the order sent."""

    count: Count
    items: list[ItemRef]


class ItemPage(Closed):
    """One page of items; ``cursor`` is null on the last page."""

    items: list[Item]
    cursor: str | None


class Counted(Closed):
    """How many records a batch changed."""

    count: Count


class AccessRecorded(Closed):
    oid: Uuid
    access_count: Count
    last_access: Time | None


class Exists(Closed):
    exists: bool
    ready: bool
    oid: Uuid | None


class ItemLocation(Closed):
    name: str
    state: ReplicaState
    uri: str


class ItemLocations(Closed):
    storages: list[ItemLocation]


class Reliability(Closed):
    """What the file operations engine measured on a storage since the server started."""

    copies_ok: Count
    copies_failed: Count
    deletions_ok: Count
    deletions_failed: Count
    success_rate: float | None
    throughput: float | None
    unreachable_until: Time | None


class Storage(Closed):
    """A storage with its usage (``views.storage_json``); config keys with "secret" are cut."""

    id: int
    name: str
    kind: Literal["posix", "s3"]
    root: str
    capacity: Count
    used: int
    free: Count
    occupancy: float | None
    replica_count: Count
    phase: Phase
    status: StorageStatus
    attributes: dict[str, Any]
    config: dict[str, Any]
    created: Time
    # Optional while the file operations engine that measures it is being brought in; make it
    # required once every server sends it.
    reliability: Reliability | msgspec.UnsetType = msgspec.UNSET
    # in the answer of POST /v1/storages only: what may be wrong (a posix root that is missing)
    warnings: list[str] | msgspec.UnsetType = msgspec.UNSET


class StorageRemoved(Closed):
    """DELETE /v1/storages/{name}: the storage, and the finished operations and copy requests
    that named it, are gone."""

    name: str
    id: int
    operations_removed: Count
    requests_removed: Count


class StorageList(Closed):
    storages: list[Storage]


class DbInfo(Closed):
    backend: str
    url: str
    schema_version: int


class ReadWorker(Closed):
    """A read worker process of ``dlm serve --workers N``."""

    worker: int
    pid: int | None
    running: bool
    serving: bool
    starts: int
    last_exit: int | None


class Health(Closed):
    status: Literal["ok", "broken"]
    problem: str | None  # why writes are refused until a restart (status "broken", HTTP 503)
    claim_lost: str | None  # why writes are refused until the write claim is held again
    version: int
    storages: Count
    items: Count
    replicas: Count
    items_by_state: dict[str, int]
    db: DbInfo
    uptime: float
    load_seconds: float
    auth: Literal["open", "tokens"]
    read_workers: list[ReadWorker] = []  # with ``--workers N``: the N-1 read worker processes


class TokenInfo(Closed):
    name: str
    role: Role
    created: Time
    expires_at: Time | None


class NewToken(Closed):
    """A created token: ``token`` is the secret, shown in this answer only."""

    name: str
    role: Role
    created: Time
    expires_at: Time | None
    token: str


class TokenList(Closed):
    tokens: list[TokenInfo]


class CopyRequestInfo(Closed):
    id: int
    oid: Uuid
    item_name: str | None
    storage: str
    state: RequestState
    pin_until: Time | None
    created: Time
    updated: Time
    requester: str | None
    comment: str | None


class CopyRequestList(Closed):
    requests: list[CopyRequestInfo]


class OperationInfo(Closed):
    id: int
    kind: OperationKind
    oid: Uuid
    item_name: str | None
    source: str | None
    target: str
    origin: str
    state: OperationState
    attempts: Count
    last_error: str | None
    created: Time
    updated: Time


class OperationPage(Closed):
    """One page of operations; ``cursor`` (null on the last page) asks for the next."""

    operations: list[OperationInfo]
    cursor: str | None


class OperationsQueued(Closed):
    """The answer to ``POST /v1/operations`` with a list: the queued operations in the order
    sent."""

    count: Count
    operations: list[OperationInfo]


class CycleInfo(Closed):
    id: int
    kind: CycleKind
    started: Time
    ended: Time | None
    summary: dict[str, Any]


class CycleDetail(Closed):
    id: int
    kind: CycleKind
    started: Time
    ended: Time | None
    summary: dict[str, Any]
    policy: str | None


class CycleList(Closed):
    cycles: list[CycleInfo]


class DecisionPage(Closed):
    """One page of a cycle's decisions: the planner's columns per decision, plus ``storage``
    (the name of its ``storage_id``, null when that storage is gone)."""

    decisions: list[dict[str, Any]]
    cursor: str | None


Pair = Annotated[list[Any], msgspec.Meta(min_length=2, max_length=2)]


class Changes(Closed):
    """Committed transactions after ``since``: ``[version, [[kind, row], ...]]`` each."""

    version: int
    # [version, [[kind, row], ...]] pairs. Described as arrays of two rather than as tuples
    # (prefixItems), which schemathesis' 3.1 support rejects in responses.
    transactions: list[Pair]


class SnapshotCounts(Closed):
    storages: Count
    items: Count
    replicas: Count


class SnapshotFields(Closed):
    storage: list[str]
    item: list[str]
    replica: list[str]
    request: list[str]


class SnapshotHeader(Closed):
    """The first object of the snapshot stream."""

    format: Literal["dlm-snapshot/1"]
    version: int
    fields: SnapshotFields
    counts: SnapshotCounts


# The stream's later objects are [tag, payload] pairs: ["storages"|"requests"|"items"|"replicas",
# [rows]] (requests: those with a pin_until),
# ["changes", [transactions]], ["end", {"version"}] or ["error", {"code", "message"}]. Described
# without prefixItems, which schemathesis' 3.1 support rejects in responses.
SnapshotChunk = Annotated[
    list[Literal["storages", "requests", "items", "replicas", "changes", "end", "error"]
         | list[Any] | dict[str, Any]],
    msgspec.Meta(min_length=2, max_length=2)]
Snapshot = Annotated[list[SnapshotHeader | SnapshotChunk], msgspec.Meta(
    min_length=1, description="The msgpack objects of the stream, in order: the header, the "
                              "chunks, then `end` (or `error`).")]


class ErrorDetail(msgspec.Struct):
    """What went wrong; some errors add details (``last_copies`` for a refused retirement)."""

    code: str
    message: str
    field: str | None
    last_copies: Count | msgspec.UnsetType = msgspec.UNSET
    rule: str | msgspec.UnsetType = msgspec.UNSET  # the rule a 403 enforces
    registered_by: str | msgspec.UnsetType | None = msgspec.UNSET
    reason: str | msgspec.UnsetType = msgspec.UNSET  # why a storage cannot be removed


class Error(Closed):
    error: ErrorDetail


# The body of POST /v1/operations arrives with the file operations engine; until then the
# operation is not described (and not served).
OperationRequest: Any = getattr(specs, "OperationRequest", None)

REQUEST_TYPES: tuple[Any, ...] = (
    ItemSpec, list[ItemSpec], ItemPatch, list[ItemPatchWithOid], StorageSpec, StoragePatch,
    AccessSpec, list[AccessWithOid], TokenSpec, RequestSpec, DetoxPlanIn, DealerPlanIn,
    *((OperationRequest, list[OperationRequest]) if OperationRequest is not None else ()))
RESPONSE_TYPES: tuple[Any, ...] = (
    Item, ItemsAdded, ItemPage, Counted, AccessRecorded, Exists, ItemLocations, Storage,
    StorageList, StorageRemoved, Health, NewToken, TokenList, CopyRequestInfo, CopyRequestList,
    OperationInfo, OperationPage, OperationsQueued, CycleInfo, CycleList, CycleDetail,
    DecisionPage, Changes, Snapshot, Error)

# ----------------------------------------------------------------------- operations


@dataclass(frozen=True, slots=True)
class Op:
    """One documented operation: the role it needs, its inputs and every status it answers."""

    summary: str
    role: str  # "public", "reader", "producer" or "operator"
    ok: dict[int, Any]  # success status -> response type (None: no body)
    errors: tuple[int, ...] = ()
    params: tuple[dict[str, Any], ...] = ()
    body: Any = None
    body_required: bool = True
    tag: str = "items"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def query(name: str, schema: dict[str, Any], description: str,
          required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}


def path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema}


def enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def integer(lo: int, hi: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": lo, "maximum": hi}


OID = path("oid", {"type": "string", "format": "uuid"}, "the item's oid")
STORAGE_NAME = path("name", {"type": "string"}, "the storage's name")
LIMIT = query("limit", integer(1, 10_000), "page size (default 100)")
CURSOR = query("cursor", {"type": "string"}, "the `cursor` of the previous page")
STORAGE_FILTER = query("storage", {"type": "string"}, "only those on this storage (by name)")
WRITE_ERRORS = (400, 409, 413, 503)

CHANGE_RULE_TEXT = ("A producer may change (any field) only the items its token registered "
                    "(`registered_by`); otherwise 403 with `rule: producer_changes_own_items` "
                    "and the first field it would change, and a list is refused whole. "
                    "Operators may change any item; only operators change items no token "
                    "registered.")

OPERATIONS: dict[tuple[str, str], Op] = {
    ("GET", "/openapi.json"): Op(
        "This document", "public", {200: dict[str, Any]}, tag="meta"),
    ("GET", "/metrics"): Op(
        "Prometheus metrics", "reader", {200: "text"}, (503,), tag="meta",
        description="The Prometheus text exposition format (`text/plain; version=0.0.4`)."),
    ("GET", "/v1/health"): Op(
        "Server status and inventory counts", "public", {200: Health, 503: Health}, tag="meta"),
    # --------------------------------------------------------------- storages
    ("POST", "/v1/storages"): Op(
        "Register a storage", "operator", {201: Storage}, WRITE_ERRORS, body=StorageSpec,
        tag="storages",
        description="A posix `root` that does not exist on the server is registered with a "
                    "warning in `warnings` (copies to it fail as unreachable until it exists: "
                    "a copy never creates a root); `create_root: true` creates it."),
    ("DELETE", "/v1/storages/{name}"): Op(
        "Remove an empty storage", "operator", {200: StorageRemoved}, (404, 409, 503),
        (STORAGE_NAME,), tag="storages",
        description="409 with `reason` (`replicas`, `operations` or `requests`) while a "
                    "replica, a queued or running operation or a pending copy request names "
                    "it. Finished operations and requests that named it are removed with it."),
    ("GET", "/v1/storages"): Op(
        "All storages, sorted by name", "reader", {200: StorageList}, tag="storages"),
    ("GET", "/v1/storages/{name}"): Op(
        "One storage", "reader", {200: Storage}, (404,), (STORAGE_NAME,), tag="storages"),
    ("PATCH", "/v1/storages/{name}"): Op(
        "Change a storage's status, capacity, phase, attributes or config", "operator",
        {200: Storage}, (*WRITE_ERRORS, 404), (STORAGE_NAME,), body=StoragePatch,
        tag="storages",
        description="Retiring a storage that holds the last complete copy of a live item is "
                    "409 with `last_copies` in the error."),
    # --------------------------------------------------------------- items: writes
    ("POST", "/v1/items"): Op(
        "Register one item, or a list of items in one transaction", "producer",
        {201: Item | ItemsAdded}, (*WRITE_ERRORS, 404), body=ItemSpec | list[ItemSpec],
        description="One object answers with the item; a list (at most 10,000) answers with "
                    "`{count, items: [{oid, item_name, item_version}]}`."),
    ("PATCH", "/v1/items"): Op(
        "Change many items in one transaction", "producer", {200: Counted},
        (*WRITE_ERRORS, 404), body=list[ItemPatchWithOid], description=CHANGE_RULE_TEXT),
    ("PATCH", "/v1/items/{oid}"): Op(
        "Change one item", "producer", {200: Item}, (*WRITE_ERRORS, 404), (OID,),
        body=ItemPatch, description=CHANGE_RULE_TEXT),
    ("DELETE", "/v1/items/{oid}"): Op(
        "Mark an item for deletion (Detox removes the payloads)", "operator", {202: Item},
        (400, 404, 409, 503), (OID,)),
    ("POST", "/v1/items/{oid}/accesses"): Op(
        "Record reads of an item", "producer", {200: AccessRecorded}, (*WRITE_ERRORS, 404),
        (OID,), body=AccessSpec, body_required=False),
    ("POST", "/v1/accesses"): Op(
        "Record reads of many items", "producer", {200: Counted}, (*WRITE_ERRORS, 404),
        body=list[AccessWithOid]),
    # --------------------------------------------------------------- items: reads
    ("GET", "/v1/items"): Op(
        "Query items; pages in registration order", "reader", {200: ItemPage}, (400,), (
            query("name", {"type": "string"}, "exact name or glob (`*`, `?`, `[...]`)"),
            query("prefix", {"type": "string"}, "names starting with this"),
            query("version", {"anyOf": [enum(("latest", "all")), {"type": "integer"}]},
                  "`latest` (default), `all` or a version number"),
            query("state", enum(model.ITEM_STATES), "only items in this state (DELETED items "
                  "are hidden unless asked for)"),
            query("phase", enum(model.PHASES), "current phase"),
            query("target_phase", enum(model.PHASES), "target phase"),
            query("type", enum(model.ITEM_TYPES), "file or container"),
            query("storage", {"type": "string"}, "has a replica on this storage"),
            query("parent", {"type": "string", "format": "uuid"}, "members of this container"),
            query("expired_before", {"type": "string", "format": "date-time"},
                  "expiry before this time"),
            LIMIT, CURSOR),
        description="Also `meta.KEY=VALUE`: metadata equality (string compare); OpenAPI cannot "
                    "name a family of parameters, so it is described here only."),
    ("GET", "/v1/items/exists"): Op(
        "Whether an item exists (and is READY)", "reader", {200: Exists}, (400,), (
            query("name", {"type": "string", "minLength": 1}, "the exact name", required=True),
            query("version", integer(1, 2**31 - 1), "a version; default the latest"),
            query("ready", {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
                  "only a READY item counts")),
    ),
    ("GET", "/v1/items/{oid}"): Op(
        "One item with its replicas", "reader", {200: Item}, (400, 404), (OID,)),
    ("GET", "/v1/items/{oid}/storages"): Op(
        "The storages holding an item", "reader", {200: ItemLocations}, (400, 404), (OID,)),
    ("GET", "/v1/items/{oid}/children"): Op(
        "Members of a container", "reader", {200: ItemPage}, (400, 404),
        (OID, LIMIT, CURSOR)),
    # --------------------------------------------------------------- tokens
    ("POST", "/v1/tokens"): Op(
        "Create a token (the secret is shown once)", "operator", {201: NewToken},
        WRITE_ERRORS, body=TokenSpec, tag="tokens"),
    ("GET", "/v1/tokens"): Op(
        "All tokens (never their secrets)", "operator", {200: TokenList}, tag="tokens"),
    ("DELETE", "/v1/tokens/{name}"): Op(
        "Delete a token", "operator", {204: None}, (404, 409, 503),
        (path("name", {"type": "string"}, "the token's name"),), tag="tokens"),
    # --------------------------------------------------------------- requests, ops, history
    ("POST", "/v1/requests"): Op(
        "Ask for a copy of an item (or a container's members) on a storage", "producer",
        {201: CopyRequestInfo}, (*WRITE_ERRORS, 404), body=RequestSpec, tag="requests",
        description="`pin_until`, when given, must be in the future (400 otherwise)."),
    ("GET", "/v1/requests"): Op(
        "Copy requests", "reader", {200: CopyRequestList}, (400,), (
            query("state", enum(REQUEST_STATES), "only requests in this state"),
            STORAGE_FILTER), tag="requests"),
    ("DELETE", "/v1/requests/{id}"): Op(
        "Cancel a copy request", "producer", {200: CopyRequestInfo}, (400, 404, 409, 503),
        (path("id", {"type": "integer"}, "the request's id"),), tag="requests",
        description="Only the token that made the request (`requester`) or an operator may "
                    "cancel it; otherwise 403 with `rule: requester_cancels_own_requests`."),
    ("GET", "/v1/operations"): Op(
        "Copy and delete operations, oldest first", "reader", {200: OperationPage}, (400,), (
            query("state", enum(OPERATION_STATES), "only operations in this state"),
            query("kind", enum(OPERATION_KINDS), "copy or delete"),
            query("storage", {"type": "string"}, "source or target storage (by name)"),
            LIMIT,
            query("cursor", integer(0, 2**62), "the `cursor` of the previous page (operations "
                  "with a larger id)")), tag="operations",
        description="Queued and running operations are in memory; finished ones stay there "
                    "for `dlm serve --ops-retention` (1h) and are read from the database "
                    "after it: one listing either way, each operation once."),
    ("GET", "/v1/operations/{id}"): Op(
        "One operation, live or finished (finished ones past the retention from the "
        "database)", "reader", {200: OperationInfo}, (400, 404, 503),
        (path("id", {"type": "integer"}, "the operation's id"),), tag="operations"),
    ("DELETE", "/v1/operations/{id}"): Op(
        "Cancel a queued operation", "operator", {200: OperationInfo}, (400, 404, 409, 503),
        (path("id", {"type": "integer"}, "the operation's id"),), tag="operations",
        description="409 naming the state for an operation that is running or finished "
                    "(also one past the retention, read from the database)."),
    ("GET", "/v1/history"): Op(
        "Detox, Dealer and Consistency cycles, newest first", "reader", {200: CycleList},
        (400,), (query("kind", enum(CYCLE_KINDS), "only cycles of this kind"), LIMIT),
        tag="operations"),
    ("POST", "/v1/cycles/detox"): Op(
        "Apply a Detox cycle's plan (sent by `dlm detox`)", "operator", {201: CycleInfo},
        WRITE_ERRORS, body=DetoxPlanIn, tag="operations",
        description="Expirations and deletions still valid against the inventory are applied "
                    "in one write; the others are counted under `summary.dropped`."),
    ("POST", "/v1/cycles/dealer"): Op(
        "Apply a Dealer cycle's plan (sent by `dlm dealer`)", "operator", {201: CycleInfo},
        WRITE_ERRORS, body=DealerPlanIn, tag="operations"),
    ("GET", "/v1/history/{id}/decisions"): Op(
        "Every decision of a cycle", "reader", {200: DecisionPage}, (400, 404), (
            path("id", {"type": "integer"}, "the cycle's id"),
            query("storage", {"type": "string"}, "only decisions on this storage (by name)"),
            query("rule", {"type": "string"}, "only decisions of this rule (label)"),
            query("outcome", {"type": "string"}, "only decisions with this outcome"),
            query("limit", integer(1, 100_000), "page size (default 1,000)"),
            query("cursor", integer(0, 2**62), "the `cursor` of the previous page")),
        tag="operations"),
    ("GET", "/v1/history/{id}"): Op(
        "One cycle with its policy text", "reader", {200: CycleDetail}, (400, 404),
        (path("id", {"type": "integer"}, "the cycle's id"),), tag="operations"),
    # --------------------------------------------------------------- feed
    ("GET", "/v1/snapshot"): Op(
        "The whole inventory as a msgpack stream", "reader", {200: Snapshot}, tag="feed",
        description="A stream of msgpack objects: a header, `storages`, `items` and "
                    "`replicas` chunks, the `changes` committed meanwhile and `end` (see the "
                    "REST API document)."),
    ("GET", "/v1/snapshot/columns"): Op(
        "The whole inventory as columns, a msgpack stream", "reader", {200: "columns"},
        (400,), (query("with", {"type": "string"}, "optional fields, comma-separated: name "
                       "(item names), metadata (item metadata)"),), tag="feed",
        description="One version of the inventory, every fixed-width column copied at once "
                    "and sent as raw little-endian arrays (what Detox plans on; see the REST "
                    "API document)."),
    ("GET", "/v1/changes"): Op(
        "Committed changes after a version (long poll with `wait`)", "reader",
        {200: Changes}, (400, 410), (
            query("since", {"type": "integer", "minimum": 0}, "the version already seen",
                  required=True),
            query("wait", integer(0, 300), "seconds to wait for a change (long poll)"),
            query("limit", integer(1, 1_000_000), "about this many records (default 10,000)"),
            query("kinds", {"type": "string"}, "only these kinds of records, comma-separated "
                  "(item, replica, storage, request, operation, cycle)")),
        tag="feed"),
}

if OperationRequest is not None:
    OPERATIONS[("POST", "/v1/operations")] = Op(
        "Order a copy of an item to a storage, or its deletion from one; or many in one "
        "transaction", "operator",
        {201: OperationInfo | OperationsQueued}, (*WRITE_ERRORS, 404),
        body=OperationRequest | list[OperationRequest], tag="operations",
        description="One object answers with the operation; a list (at most 10,000) queues "
                    "them all in one transaction and answers with `{count, operations}`, in "
                    "the order sent. A list is refused whole at its first bad entry, the "
                    "error's field naming it (`operations[3].item`).")

_STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted: marked, removal follows",
                204: "No content", 400: "Invalid input", 401: "No valid token",
                403: "The token's role may not do this, or `rule` in the error names "
                     "the rule that refuses it, or a cross-site request (`field` Origin or "
                     "Host)", 404: "Not found",
                409: "Conflicts with the inventory", 410: "History no longer kept",
                413: "Body too large",
                415: "The body is neither JSON nor msgpack (a form, text/plain: what a web page "
                     "of another site could send)",
                503: "The database cannot commit; nothing changed"}


# ----------------------------------------------------------------------- the document

class UndocumentedRoute(LookupError):
    """A route the application serves that has no entry in ``OPERATIONS``."""


def app_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route the application registers, HEAD included."""
    out = []
    for route in app.router.routes():
        if getattr(route.handler, "dlm_dashboard", False):
            continue  # the dashboard's pages and fragments are not the REST API
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        if template is not None and route.method != "*":
            out.append((route.method, template))
    return out


def undocumented(app: web.Application) -> list[tuple[str, str]]:
    """Routes of ``app`` without a description; HEAD is covered by its GET."""
    return [(method, template) for method, template in app_routes(app)
            if (("GET" if method == "HEAD" else method), template) not in OPERATIONS]


def _schemas() -> tuple[dict[type, dict[str, Any]], dict[str, Any]]:
    types = REQUEST_TYPES + RESPONSE_TYPES
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    return dict(zip(types, refs, strict=True)), components


def _schema_of(tp: Any, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    if tp in refs:
        return refs[tp]
    args = getattr(tp, "__args__", None)
    if args and type(tp).__name__ == "UnionType":  # A | B of Structs: msgspec wants tags
        return {"anyOf": [_schema_of(a, refs) for a in args]}
    if tp == dict[str, Any]:
        return {"type": "object"}
    raise KeyError(f"no schema for {tp!r}: add it to REQUEST_TYPES or RESPONSE_TYPES")


def _operation(method: str, template: str, op: Op, refs: dict[Any, dict[str, Any]]
               ) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, tp in op.ok.items():
        answer: dict[str, Any] = {"description": _STATUS_TEXT[status]}
        if tp == "text":
            answer["content"] = {"text/plain": {"schema": {"type": "string"}}}
        elif tp == "columns":  # msgpack objects carrying raw arrays: binary, not JSON-able
            answer["content"] = {COLUMNS: {"schema": {
                "type": "string", "format": "binary",
                "description": "msgpack objects: a header (format dlm-columns/1, version, "
                               "counts, column dtypes, owner and group tables), storages, "
                               "column chunks as bytes, names and metadata when asked, end"}}}
            answer["headers"] = {"X-DLM-Version": {
                "description": "the inventory version of the snapshot",
                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
        elif tp is Snapshot:  # msgpack only, a stream of objects
            answer["content"] = {MSGPACK: {"schema": refs[Snapshot]}}
            answer["headers"] = {"X-DLM-Version": {
                "description": "the inventory version the snapshot starts at",
                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
        elif tp is not None:
            schema = _schema_of(tp, refs)
            answer["content"] = {JSON: {"schema": schema}, MSGPACK: {"schema": schema}}
        responses[str(status)] = answer
    errors = set(op.errors)
    if op.role != "public":
        errors |= {401, 403}
    if op.body is not None:
        errors |= {400, 413, 415}
    for status in sorted(errors):
        responses[str(status)] = {"description": _STATUS_TEXT[status],
                                  "content": {JSON: {"schema": refs[Error]},
                                              MSGPACK: {"schema": refs[Error]}}}
    out: dict[str, Any] = {
        "operationId": f"{method.lower()}_{template.strip('/').replace('/', '_')}"
                       .replace("{", "").replace("}", "").replace(".", "_"),
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
    }
    description = op.description
    if op.role == "public":
        out["security"] = []
    else:
        description = (f"{description}\n\n" if description else "") + f"Role: `{op.role}`."
    if description:
        out["description"] = description
    if op.params:
        out["parameters"] = list(op.params)
    if op.body is not None:
        schema = _schema_of(op.body, refs)
        out["requestBody"] = {"required": op.body_required,
                              "content": {JSON: {"schema": schema},
                                          MSGPACK: {"schema": schema}}}
    return out


def _head(get: dict[str, Any]) -> dict[str, Any]:
    """HEAD answers like GET without a body."""
    head = {k: v for k, v in get.items() if k != "responses"}
    head["operationId"] = "head" + get["operationId"].removeprefix("get")
    head["summary"] = f"{get['summary']} (headers only)"
    head["responses"] = {status: {k: v for k, v in answer.items() if k != "content"}
                         for status, answer in get["responses"].items()}
    return head


@functools.cache
def _base_document() -> dict[str, Any]:
    refs, components = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for (method, template), op in OPERATIONS.items():
        paths.setdefault(template, {})[method.lower()] = _operation(method, template, op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DLM inventory",
            "version": "1",
            "description": "The data lifecycle manager's inventory: storages, items, "
                           "replicas, copy requests, operations and the change feed. Bodies "
                           "are JSON, or msgpack with `Content-Type`/`Accept: "
                           "application/msgpack`. Every error is "
                           "`{\"error\": {\"code\", \"message\", \"field\"}}`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": t} for t in ("meta", "storages", "items", "tokens", "requests",
                                        "operations", "feed")],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "A token from `dlm token create`. A loopback server with no "
                               "token at all runs in open mode and needs none."}},
        },
    }


def document(app: web.Application, *, strict: bool = False) -> dict[str, Any]:
    """The OpenAPI document of ``app``. A route without a description is UndocumentedRoute
    when ``strict`` (the tests), else left out with a warning: clients reading the document
    should not lose all of it to one forgotten entry."""
    missing = undocumented(app)
    if missing:
        text = ", ".join(f"{m} {p}" for m, p in missing)
        if strict:
            raise UndocumentedRoute(text)
        log.warning("routes without an OpenAPI description: %s", text)
    base = _base_document()
    served = {(m, p) for m, p in app_routes(app)}
    paths: dict[str, dict[str, Any]] = {}
    for template, methods in base["paths"].items():
        for method, operation in methods.items():
            if (method.upper(), template) in served:
                paths.setdefault(template, {})[method] = operation
            if method == "get" and ("HEAD", template) in served:
                paths.setdefault(template, {})["head"] = _head(operation)
    return {**base, "paths": paths}
