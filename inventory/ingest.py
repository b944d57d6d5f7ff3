"""Verified ingest, the writer's side: what the server found on a storage before a write, and
the check that it still describes what the write registers.

Registering a replica on a storage the server can reach (POST /v1/items with ``storage``, a
PATCH that sets a location) first looks at the payload there: the request handler stats it (in
batches, off the writer: ``inventory.server.ingest``) and hands one ``Payload`` per item to the
write. The write runs later, on the writer, and re-checks what could have changed meanwhile:
the storage (renamed, re-rooted, verification turned off or on) and, for an item given no
version, the version it gets, which decides its default path (``{name}@vN``). A payload that no
longer matches raises ``StalePayload``; the handler checks again, a few times, before it
answers 409.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from inventory.errors import Conflict

VERIFY_INGEST = "verify_ingest"  # storage config key; false: the server cannot reach it


def verifies_ingest(config: Mapping[str, Any]) -> bool:
    """Whether registrations on a storage with this config are checked on the storage (the
    default), or taken on trust (``verify_ingest: false``, for storages the server cannot
    reach: a remote site's disk, a tape front end)."""
    return config.get(VERIFY_INGEST, True) is not False


class Payload(NamedTuple):
    """A payload seen on a storage: where it was looked for, and what was there."""

    storage_id: int
    kind: str
    root: str
    path: str  # relative to the root
    version: int | None  # the item version the default path was computed for; None: a uri
    size: int
    checksum: str | None  # adler32 computed from the bytes (verify: checksum), else None


class StalePayload(Conflict):
    """The payload was checked for a storage or a version that is not the one the write now
    registers: check again."""


def recheck(payload: Payload | None, storage: Any, version: int, uri: str | None,
            field: str) -> Payload:
    """``payload`` if it was found for this storage (same id, kind and root) and, for a default
    path, for this ``version``; else ``StalePayload``."""
    if (payload is None or payload.storage_id != storage.id or payload.kind != storage.kind
            or payload.root != storage.root or (uri is None and payload.version != version)):
        raise StalePayload("the payload was checked for another version or storage setting "
                           "than the one registered (a concurrent registration?): retry",
                           field)
    return payload
