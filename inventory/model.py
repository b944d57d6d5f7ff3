"""Names, states and small value helpers of the data model (DESIGN.md), shared by every layer.

States and phases are small ints in memory (one byte in a column) and names on the wire and in the
database, so the tables below are the single place where the two meet.
"""

from __future__ import annotations

import functools
import math
import os
import time
import uuid
from datetime import UTC, datetime

# --- enumerations: code <-> name ------------------------------------------------------------

ITEM_TYPES: tuple[str, ...] = ("file", "container")
ITEM_STATES: tuple[str, ...] = ("INITIALISED", "READY", "EXPIRED", "DELETED", "CORRUPTED")
PHASES: tuple[str, ...] = ("PLASMA", "GAS", "LIQUID", "SOLID")
REPLICA_STATES: tuple[str, ...] = (
    "pending", "copying", "complete", "deleting", "deleted", "missing", "corrupt",
)
STORAGE_KINDS: tuple[str, ...] = ("posix", "s3")
STORAGE_STATUSES: tuple[str, ...] = ("online", "draining", "offline", "retired")

ITEM_TYPE = {name: code for code, name in enumerate(ITEM_TYPES)}
ITEM_STATE = {name: code for code, name in enumerate(ITEM_STATES)}
PHASE = {name: code for code, name in enumerate(PHASES)}
REPLICA_STATE = {name: code for code, name in enumerate(REPLICA_STATES)}

FILE, CONTAINER = ITEM_TYPE["file"], ITEM_TYPE["container"]
INITIALISED, READY, EXPIRED, DELETED, CORRUPTED = range(len(ITEM_STATES))
COMPLETE = REPLICA_STATE["complete"]

# SKA DLM phase arithmetic: each complete copy adds its storage's weight; the sum is capped at 4
# and 3 counts as LIQUID, so two GAS copies make LIQUID and two LIQUID copies make SOLID.
PHASE_WEIGHT: tuple[int, ...] = (0, 1, 2, 4)
_WEIGHT_TO_PHASE: tuple[int, ...] = (PHASE["PLASMA"], PHASE["GAS"], PHASE["LIQUID"],
                                     PHASE["LIQUID"], PHASE["SOLID"])

DEFAULT_CHECKSUM_METHOD = "adler32"

# Item state changes a client may ask for (DELETED is reached through deletion, see writes.py).
ITEM_TRANSITIONS: dict[int, frozenset[int]] = {
    INITIALISED: frozenset({READY}),
    READY: frozenset({EXPIRED, CORRUPTED}),
    EXPIRED: frozenset({READY}),
    CORRUPTED: frozenset({READY, EXPIRED}),
    DELETED: frozenset(),
}


def phase_of_weights(total_weight: int) -> int:
    """Current phase code of an item whose complete copies sum to ``total_weight``."""
    return _WEIGHT_TO_PHASE[min(total_weight, 4)]


# --- identifiers -------------------------------------------------------------------------
# An oid is a random UUID whose low 16 bits are zero; a replica's uid is its item's oid with the
# storage id in those 16 bits. A replica is "the copy of item X on storage S" (one per pair, as
# in Rucio and Dynamo), so its uid names both and needs no index of its own: that saves about
# 100 bytes per replica in memory and makes lookups by uid O(1). 106 random bits remain per oid.

UID_STORAGE_BITS = 16
MAX_STORAGE_ID = (1 << UID_STORAGE_BITS) - 1
_LOW_MASK = MAX_STORAGE_ID
_V4_MASK = ~(0xF << 76) & ~(0x3 << 62) & ((1 << 128) - 1)
_V4_BITS = (0x4 << 76) | (0x2 << 62)


def new_oid() -> int:
    """A fresh oid: a version-4 UUID as an int, low 16 bits clear."""
    return ((int.from_bytes(os.urandom(16)) & _V4_MASK) | _V4_BITS) & ~_LOW_MASK


def replica_uid(oid: int, storage_id: int) -> int:
    return oid | storage_id


def split_uid(uid: int) -> tuple[int, int]:
    """(oid, storage_id) of a replica uid."""
    return uid & ~_LOW_MASK, uid & _LOW_MASK


def format_uuid(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_uuid(text: str) -> int:
    """Int value of a UUID string; ValueError when it is not one.

    The canonical form (8-4-4-4-12 hex digits) is read directly: a plan names hundreds of
    thousands of items, and ``uuid.UUID`` cost 1.5 us each of the server's apply. Any other
    form ``uuid.UUID`` accepts (braces, ``urn:uuid:``, no dashes) goes through it."""
    digits = text.replace("-", "")
    if len(digits) == 32 and len(text) == 36 and \
            text[8] == text[13] == text[18] == text[23] == "-" and \
            digits.isascii() and digits.isalnum():  # int() then takes hex digits only
        return int(digits, 16)
    return uuid.UUID(text).int


def is_oid(value: int) -> bool:
    return value & _LOW_MASK == 0


# --- time ----------------------------------------------------------------------------------
# Times are float epoch seconds in memory (NaN for "none" in columns) and ISO-8601 UTC on the wire.

NO_TIME = math.nan


def now() -> float:
    return time.time()


def format_time(ts: float | None) -> str | None:
    if ts is None or ts != ts:  # NaN means "not set"
        return None
    return _format_time(ts)


@functools.lru_cache(maxsize=1 << 16)
def _format_time(ts: float) -> str:
    # Items of one bulk inject share their creation time, and answers repeat the same few
    # times: formatting through datetime was ~5% of a lookup's server time.
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO-8601 time; a time without a zone is taken as UTC."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def opt_time(ts: float) -> float | None:
    """None for the NaN column marker, else the time."""
    return None if ts != ts else ts
