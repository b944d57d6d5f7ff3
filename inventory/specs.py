"""What clients ask to create: typed request bodies, decoded and checked in one pass by msgspec.

msgspec rejects a wrong type or a missing field with the path of the offending value
(``$[3].size``), which becomes the ``field`` of the 400 answer. Checks that need more than a type
(names, times, units) live in ``inventory.validate``; checks against the inventory in
``inventory.writes``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from inventory import model

Phase = Literal["PLASMA", "GAS", "LIQUID", "SOLID"]
# PostgreSQL text and jsonb cannot hold U+0000: a NUL refused here names its field (400); let
# through, it failed the database commit of every write grouped with it (issue 16).
NO_NUL = "^[^\\x00]*$"
Text = Annotated[str, msgspec.Meta(pattern=NO_NUL)]
NAME_TEXT = 256  # characters of an item's owner or group
Version = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
Size = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # validate.MAX_BYTES: int64 columns
# What a registration with a storage checks on it before it is acknowledged: that the payload
# exists with the stated size ("size"), or also that its adler32 matches ("checksum", which
# reads the whole payload). Storages with config verify_ingest=false are not looked at.
Verify = Literal["size", "checksum"]

assert tuple(Phase.__args__) == model.PHASES


class ItemSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One data item to register (SKA DLM ``init_data_item``, or the one-call ingest).

    With ``storage`` (and optionally ``uri``) the item is READY at once with a complete replica
    there; without, it is INITIALISED and a later call sets its location and state.
    """

    item_name: str
    item_version: Version | None = None
    item_type: Literal["file", "container"] = "file"
    parent_oid: str | None = None
    size: Size | None = None
    checksum: str | None = None
    checksum_method: str | None = None
    metadata: dict[str, Any] | None = None
    target_phase: Phase = "SOLID"
    expire_at: str | None = None
    lifetime: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # no NUL: checked by the handler (validate.no_nul), cheaper than a pattern on every item of
    # a 10,000-item batch; a length bound is cheap (a 3 MB owner made every answer 3 MB)
    owner: Annotated[str, msgspec.Meta(max_length=NAME_TEXT)] | None = None
    group: Annotated[str, msgspec.Meta(max_length=NAME_TEXT)] | None = None
    storage: str | None = None  # a name looked up: one with a NUL is not found (400)
    uri: str | None = None  # refused with control characters (writes.normal_uri)
    verify: Verify = "size"


class StorageSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A storage volume to register: a POSIX directory or an S3 bucket and prefix."""

    name: str
    kind: Literal["posix", "s3"]
    root: str
    capacity: Size | str
    phase: Phase = "GAS"
    status: Literal["online", "draining", "offline", "retired"] = "online"
    attributes: dict[Text, Text | int | float | bool] = msgspec.field(default_factory=dict)
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    # posix: create a missing root directory now (otherwise a missing root is only warned
    # about: copies never create it, an unmounted volume must not fill its parent)
    create_root: bool = False


class ItemBatch(msgspec.Struct, forbid_unknown_fields=True):
    items: list[ItemSpec]


class ItemPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Changes to one item (SKA DLM setters); a field left out is left alone."""

    state: Literal["INITIALISED", "READY", "EXPIRED", "DELETED", "CORRUPTED"] | \
        msgspec.UnsetType = msgspec.UNSET
    target_phase: Phase | msgspec.UnsetType = msgspec.UNSET
    expire_at: str | msgspec.UnsetType | None = msgspec.UNSET
    lifetime: Annotated[float, msgspec.Meta(gt=0)] | msgspec.UnsetType = msgspec.UNSET
    metadata: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    checksum: str | msgspec.UnsetType | None = msgspec.UNSET
    checksum_method: str | msgspec.UnsetType | None = msgspec.UNSET
    size: Size | msgspec.UnsetType | None = msgspec.UNSET
    storage: str | msgspec.UnsetType = msgspec.UNSET
    uri: str | msgspec.UnsetType = msgspec.UNSET
    verify: Verify = "size"


class ItemPatchWithOid(ItemPatch, forbid_unknown_fields=True, omit_defaults=True,
                       kw_only=True):
    oid: str


class AccessSpec(msgspec.Struct, forbid_unknown_fields=True):
    """Reads of an item to count for its popularity."""

    count: Annotated[int, msgspec.Meta(ge=1, le=10**9)] = 1
    at: str | None = None


class AccessWithOid(AccessSpec, forbid_unknown_fields=True, kw_only=True):
    oid: str


class StoragePatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    status: Literal["online", "draining", "offline", "retired"] | msgspec.UnsetType = \
        msgspec.UNSET
    capacity: Size | str | msgspec.UnsetType = msgspec.UNSET
    phase: Phase | msgspec.UnsetType = msgspec.UNSET
    attributes: dict[Text, Text | int | float | bool | None] | msgspec.UnsetType = \
        msgspec.UNSET
    config: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class TokenSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Text
    role: Literal["reader", "producer", "operator"]
    expires_at: str | None = None


class RequestSpec(msgspec.Struct, forbid_unknown_fields=True):
    """A user's request for a copy of an item (or of a container's members) on a storage."""

    item: str
    storage: str
    pin_until: str | None = None
    comment: Annotated[str, msgspec.Meta(max_length=1000, pattern=NO_NUL)] | None = None


class OperationRequest(msgspec.Struct, forbid_unknown_fields=True):
    """An operator's direct order to copy an item to, or delete it from, a storage."""

    kind: Literal["copy", "delete"]
    item: str
    target: str
    source: str | None = None


class CyclePlanIn(msgspec.Struct, forbid_unknown_fields=True):
    """What every cycle plan carries: which policy, which snapshot, when
    (``detox.cycle.plan_header``), its summary and its compressed decisions."""

    policy_name: Text
    policy_file: Text
    policy_text: Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=1 << 20)]
    policy_sha256: str
    snapshot_version: Annotated[int, msgspec.Meta(ge=0)]
    started: float
    summary: dict[str, Any]
    decisions: bytes  # zlib-compressed msgpack: {"columns": [...], "rows": [...]}


class DetoxPlanIn(CyclePlanIn):
    """A Detox cycle's plan, sent by the Detox process to be applied as one write."""

    expirations: list[str]
    deletions: list[tuple[str, int, str, int]]  # oid, storage id, rule label, rule line


class DealerPlanIn(CyclePlanIn):
    """A Dealer cycle's plan, sent by the Dealer process to be applied as one write."""

    copies: list[tuple[str, int, int | None, str, int]]  # oid, target, source, reason, line
    requests_done: list[int]
