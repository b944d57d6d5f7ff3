"""Storing a consistency report, and with ``fix`` applying its repairs: one write.

The consistency process (``dlm consistency``) listed a storage and diffed it with a snapshot; by
the time its report arrives the inventory may have moved. So every repair is re-judged here,
inside the single writer, against the inventory as it is now, as ``ApplyDetoxPlan`` does:

- a **missing** or **mismatched** replica is repaired only if it is still ``complete`` and is the
  same registration the report judged (same ``created``); anything else is dropped as changed.
  With a complete copy elsewhere (and the item READY or CORRUPTED, the storage online) the
  replica becomes ``pending`` and a copy from a good replica is queued (origin
  ``consistency``: the engine copies over the bad object, verified, as for any copy). Without
  one, the replica is marked ``missing`` or ``corrupt`` and a READY item with no complete copy
  left becomes CORRUPTED: it is **lost**, and the report says so.
- an **orphan** is not a replica, so nothing here deletes it: the write *confirms* each orphan
  path that is still unknown (no replica of any version of that name on the storage, no replica
  registered at that uri, no copy queued or running to it) and older than the grace period, and
  the answer lists the confirmed paths for the consistency process to delete through the
  backend, after it checked once more that the object is the one it listed.

Safety limit: when more than ``max_missing`` of the storage looks missing, the storage is far
more likely unmounted or misconfigured than emptied: the report is stored, nothing is repaired.
The limit is checked here too (not only by the client), against the storage's replica count.

The cycle (``kind="consistency"``, ``GET /v1/history``) carries the report's header; every
finding with the action taken is the cycle's compressed blob (``cycle_report``), in the columns
``GET /v1/history/{id}/decisions`` reads, so ``?outcome=missing`` works there too.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections import Counter
from typing import Annotated, Any, Literal

import msgpack
import msgspec

from consistency.diff import link_targets, reached_by_symlink
from inventory import model, validate
from inventory.errors import BadRequest, Conflict, NotFound
from inventory.inventory import NONE, Inventory, Storage
from inventory.objects import Cycle, Operation
from inventory.records import ItemRecord, ReplicaRecord
from inventory.storage.errors import StorageError
from inventory.storage.paths import check_name, default_owners, replica_path
from inventory.store.generic import upsert
from inventory.store.ops import DbOp, UpsertRows
from inventory.writes import Pending, Prepared, Write
from inventory.writes_ops import PENDING, persisted

Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Time = Annotated[float, msgspec.Meta(ge=validate.MIN_TIME, le=validate.MAX_TIME)]
Path = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Text = Annotated[str, msgspec.Meta(max_length=64)]
# path, oid, expected size, size, expected checksum, checksum, mtime, replica created
FindingIn = tuple[Path, Text | None, Count | None, Count | None, Text | None, Text | None,
                  Time | None, Time | None]
CLASSES = ("missing", "orphan", "size_mismatch", "checksum_mismatch")
BLOB_COLUMNS = ("outcome", "storage_id", "path", "oid", "expected_size", "size",
                "expected_checksum", "checksum", "mtime", "replica_created", "action")
COPYABLE = (model.READY, model.CORRUPTED)
ACTIVE = ("queued", "running")
MISSING_STATE = model.REPLICA_STATE["missing"]
CORRUPT_STATE = model.REPLICA_STATE["corrupt"]


class Tally(msgspec.Struct, forbid_unknown_fields=True):
    count: Count
    bytes: Count


class CountsIn(msgspec.Struct, forbid_unknown_fields=True):
    """The run's counts per class (``consistency.diff.DiffResult.summary``)."""

    missing: Tally
    orphan: Tally
    size_mismatch: Tally
    checksum_mismatch: Tally
    ok: Tally
    listed: Tally
    expected: Count
    skipped: dict[Literal["young", "in_flight", "not_complete", "new_replica", "symlink"],
                  Count]
    checksums_read: Count
    missing_fraction: Annotated[float, msgspec.Meta(ge=0, le=1)]


class ConsistencyReportIn(msgspec.Struct, forbid_unknown_fields=True):
    """A consistency run's report, sent by ``dlm consistency`` (msgpack or JSON)."""

    storage: str
    started: Time  # the listing's start and end
    ended: Time
    snapshot_version: Count
    inventory_version: Count  # the diff is against the inventory at this version
    grace: Annotated[float, msgspec.Meta(ge=0, le=10 * 365 * 86400)]
    max_missing: Annotated[float, msgspec.Meta(ge=0, le=1)]
    checksums: Literal["none", "sample", "all"]
    counts: CountsIn
    fix: bool = False
    duration: Annotated[float, msgspec.Meta(ge=0, le=10 * 365 * 86400)] = 0.0
    missing: list[FindingIn] = msgspec.field(default_factory=list)
    orphan: list[FindingIn] = msgspec.field(default_factory=list)
    size_mismatch: list[FindingIn] = msgspec.field(default_factory=list)
    checksum_mismatch: list[FindingIn] = msgspec.field(default_factory=list)
    truncated: dict[Literal["missing", "orphan", "size_mismatch", "checksum_mismatch"], Count] \
        = msgspec.field(default_factory=dict)  # rows of a class left out of the body
    # POSIX: the symlinks listed under the root, [path, target under the root or None]. They
    # are kept in the stored report, and no orphan one of them reaches is confirmed: the
    # consistency process would keep it, and the stored report must say so, not "deleted".
    symlinks: list[tuple[Path, Path | None]] = msgspec.field(default_factory=list)


def encode_blob(rows: list[list[Any]]) -> bytes:
    body = {"columns": BLOB_COLUMNS, "rows": rows}
    return zlib.compress(msgpack.packb(body, use_bin_type=True), 6)


def safety_reason(report: ConsistencyReportIn, replica_count: int) -> str | None:
    """Why the report must not be acted on, or None: too much of the storage looks missing."""
    missing = max(report.counts.missing.count,
                  len(report.missing) + report.truncated.get("missing", 0))
    fraction = max(report.counts.missing_fraction, missing / max(replica_count, 1))
    if missing and fraction > report.max_missing:
        return (f"{missing} of {max(report.counts.expected, replica_count)} replicas "
                f"({fraction:.1%}) look missing, more than the limit of "
                f"{report.max_missing:.1%}: is the storage mounted and configured right? "
                "Nothing was repaired")
    return None


class ApplyConsistencyReport(Write):
    def __init__(self, report: ConsistencyReportIn) -> None:
        self.report = report

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        rep = self.report
        storage = inv.storage_by_name.get(rep.storage)
        if storage is None:
            raise BadRequest(f"no storage named {rep.storage!r}", "storage")
        if rep.ended < rep.started:
            raise BadRequest("the listing ends before it starts", "ended")
        for kind in CLASSES:
            for index, finding in enumerate(getattr(rep, kind)):
                _check_text(finding, f"{kind}[{index}]")
        for index, link in enumerate(rep.symlinks):
            _check_text(link, f"symlinks[{index}]")
        targets = link_targets(dict(rep.symlinks))
        sid = storage.id
        now = model.now()
        safety = safety_reason(rep, storage.replica_count)
        acting = rep.fix and safety is None
        state = _Repairs(inv, pending, sid, now)
        blob: list[list[Any]] = []
        for kind, new_state in (("missing", MISSING_STATE), ("size_mismatch", CORRUPT_STATE),
                                ("checksum_mismatch", CORRUPT_STATE)):
            for index, f in enumerate(getattr(rep, kind)):
                action = None
                if acting:
                    oid = validate.uuid_value(f[1] or "", f"{kind}[{index}][1]")
                    action = state.repair(oid, f[7], new_state, storage.status)
                blob.append([kind, sid, *f, action])
        confirmed: list[str] = []
        for f in rep.orphan:
            action = None
            if acting:
                action = state.confirm_orphan(f[0], f[6], rep.grace, storage, targets)
                if action == CONFIRMED:
                    confirmed.append(f[0])
            blob.append(["orphan", sid, *f, action])
        pending.new_replicas.update(state.claimed)
        pending.items.update(state.items)
        fix = None
        if rep.fix:
            fix = {"applied": dict(state.applied), "dropped": dict(state.dropped),
                   "orphans_confirmed": len(confirmed)}
        summary = {
            "storage": {"name": storage.name, "id": sid, "kind": storage.kind,
                        "root": storage.root},
            "listing": {"started": model.format_time(rep.started),
                        "ended": model.format_time(rep.ended),
                        "seconds": round(rep.ended - rep.started, 3)},
            "inventory_version": rep.inventory_version,
            "snapshot_version": rep.snapshot_version,
            "options": {"grace": rep.grace, "checksums": rep.checksums,
                        "max_missing": rep.max_missing, "fix": rep.fix},
            "counts": msgspec.to_builtins(rep.counts),
            "truncated": dict(rep.truncated),
            "safety": safety,
            "fix": fix,
            "duration": round(rep.duration, 3),
            "symlinks": [{"path": path, "target": target} for path, target in rep.symlinks],
        }
        cycle = Cycle(pending.next_id(inv, "cycle"), "consistency", rep.started, now,
                      None, summary)
        replicas = list(state.replicas.values())
        items = list(state.items.values())
        ops = state.ops

        def apply(inv: Inventory) -> tuple[Cycle, list[str]]:
            for r in replicas:
                inv.update_replica(inv.replica_row(r.oid, r.storage_id), r)
            inv.update_items(items)
            for op in ops:
                inv.put_object(op)
            inv.put_object(cycle)
            return cycle, confirmed

        db_ops: list[DbOp] = [upsert([cycle]), UpsertRows(
            "cycle_report", ("cycle_id", "decisions"), ("cycle_id",),
            [(cycle.id, encode_blob(blob))])]
        more, changes = persisted(items=items, replicas=replicas, objects=ops)
        db_ops.extend(more)
        changes.append(("cycle", cycle))
        return Prepared(db_ops, apply, changes, rows=1 + len(replicas) + len(ops))


CONFIRMED = "deletion confirmed: unknown to the inventory, older than the grace period"
DELETED = "deleted"
Outcome = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class OrphanDeletionsIn(msgspec.Struct, forbid_unknown_fields=True):
    """What ``dlm consistency --fix`` did with the orphans a report confirmed, path by path:
    ``deleted``, or why not (changed since the listing, gone already, a storage error...)."""

    outcomes: dict[Path, Outcome]


class RecordOrphanDeletions(Write):
    """Record in a stored report what became of its confirmed orphans: the server confirms,
    the consistency process deletes (or, having checked once more, keeps), so only it can say.
    Without this the served report would read "deletion confirmed" for a file still on disk
    and count confirmations as if they were deletions. ``rows`` is the report's blob, read by
    the route (it is not kept in memory); each path must be one the report confirmed and not
    yet recorded."""

    def __init__(self, cycle_id: int, outcomes: dict[str, str], rows: list[list[Any]]) -> None:
        self.cycle_id = cycle_id
        self.outcomes = outcomes
        self.rows = rows

    def prepare(self, inv: Inventory, pending: Pending) -> Prepared:
        cycle = inv.cycles.get(self.cycle_id)
        if cycle is None or cycle.kind != "consistency":
            raise NotFound(f"no consistency report {self.cycle_id}", "id")
        fix = cycle.summary.get("fix")
        if not fix:
            raise Conflict(f"report {self.cycle_id} was not a --fix run: it confirmed nothing",
                           "id")
        path_at, action_at = BLOB_COLUMNS.index("path"), BLOB_COLUMNS.index("action")
        rows = [list(r) for r in self.rows]
        confirmed = {r[path_at]: r for r in rows if r[0] == "orphan" and r[action_at] == CONFIRMED}
        for path, outcome in self.outcomes.items():
            _check_text((path, outcome), "outcomes")
            if path not in confirmed:
                raise BadRequest(f"{path!r} is not an orphan this report confirmed (or its "
                                 "outcome is recorded already)", "outcomes")
            confirmed[path][action_at] = outcome
        deleted = sum(1 for o in self.outcomes.values() if o == DELETED)
        summary = {**cycle.summary,
                   "fix": {**fix, "orphans_deleted": fix.get("orphans_deleted", 0) + deleted}}
        updated = dataclasses.replace(cycle, summary=summary)
        db_ops: list[DbOp] = [upsert([updated]), UpsertRows(
            "cycle_report", ("cycle_id", "decisions"), ("cycle_id",),
            [(updated.id, encode_blob(rows))])]

        def apply(inv: Inventory) -> Cycle:
            inv.put_object(updated)
            return updated

        return Prepared(db_ops, apply, [("cycle", updated)], rows=1)


class _Repairs:
    """The repairs of one report, accumulated while it is judged."""

    def __init__(self, inv: Inventory, pending: Pending, storage_id: int, now: float) -> None:
        self.inv = inv
        self.pending = pending
        self.sid = storage_id
        self.now = now
        self.replicas: dict[tuple[int, int], ReplicaRecord] = {}
        self.items: dict[int, ItemRecord] = {}
        self.ops: list[Operation] = []
        self.claimed: set[tuple[int, int]] = set()
        self.applied: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._known_paths: set[str] | None = None

    def repair(self, oid: int, created: float | None, new_state: int, status: str) -> str:
        inv, pending, sid = self.inv, self.pending, self.sid
        key = (oid, sid)
        row = inv.replica_row(oid, sid)
        if (row is None or inv.r_state[row] != model.COMPLETE or created is None
                or inv.r_created[row] != created or key in self.claimed
                or key in pending.new_replicas or key in pending.deleting):
            self.dropped["changed"] += 1
            return "none: the replica changed since the listing"
        self.claimed.add(key)
        item = self.items.get(oid) or pending.item(inv, oid)
        sources = [r for r in inv.replica_rows_of_item(inv.r_item[row])
                   if inv.r_storage[r] != sid and inv.r_state[r] == model.COMPLETE
                   and (oid, inv.r_storage[r]) not in pending.deleting]
        state_name = model.REPLICA_STATES[new_state]
        if sources and item.state in COPYABLE and item.item_type == model.FILE \
                and status == "online":
            op = Operation(self.pending.next_id(inv, "operation"), "copy", oid,
                           None, sid, "consistency", "queued", 0, None, self.now, self.now)
            self.ops.append(op)
            size = item.size if item.size is not None and item.size >= 0 else None
            # the re-copy goes where the replica is: its registered uri, if any
            self.replicas[key] = ReplicaRecord(oid, sid, inv.r_uri.get(row), PENDING, size,
                                               None, self.now, None, None)
            self.applied["recopies"] += 1
            return f"{state_name}: re-copy from a good replica queued (operation {op.id})"
        self.replicas[key] = inv.replica_record(row)._replace(state=new_state)
        self.applied[f"marked_{state_name}"] += 1
        if not sources and item.state == model.READY:
            self.items[oid] = item._replace(state=model.CORRUPTED)
            self.applied["lost"] += 1
            return f"marked {state_name}; LOST: no good copy left, the item is now CORRUPTED"
        if not sources:
            return f"marked {state_name}; no good copy left to copy from"
        why = (f"the storage is {status}" if status != "online"
               else f"the item is {model.ITEM_STATES[item.state]}")
        return f"marked {state_name}; not re-copied: {why}"

    def confirm_orphan(self, path: str, mtime: float | None, grace: float,
                       storage: Storage, targets: dict[str, str]) -> str:
        try:
            check_name(path)
        except StorageError as exc:
            self.dropped["orphan_invalid_name"] += 1
            return f"not deleted: {exc.message}; remove it by hand"
        link = reached_by_symlink(path, targets)
        if link is not None:  # the same words as ``consistency.cycle.delete_orphans``
            self.dropped["orphan_symlink"] += 1
            return f"not deleted: the symlink {link} reaches it"
        if mtime is None or mtime > self.now - grace:
            self.dropped["orphan_young"] += 1
            return "not deleted: younger than the grace period"
        if path in self._extra_paths(storage) or self._has_replica_at(path):
            self.dropped["orphan_known"] += 1
            return "not deleted: the inventory knows this path now"
        self.applied["orphans_confirmed"] += 1
        return CONFIRMED

    def _has_replica_at(self, path: str) -> bool:
        """Whether a replica on the storage names ``path``: at a registered uri, or as the
        default path of a version of an item (``name`` or ``name@vN``), or one claimed earlier
        in the same group."""
        inv, sid = self.inv, self.sid
        if inv.path_holder(sid, path) is not None:
            return True
        for name, version in default_owners(path):
            row = inv.row_of_name(name, version)
            if row is not None and (inv.i_oid[row], sid) in self.pending.new_replicas:
                return True
        return False

    def _extra_paths(self, storage: Storage) -> set[str]:
        """Paths on the storage the inventory accounts for besides item names with a replica
        there: replicas registered at a custom uri, and targets of copies queued or running
        (whose replica exists too, but the operation is the authority on where it writes)."""
        if self._known_paths is None:
            inv, sid = self.inv, self.sid
            known: set[str] = set()
            # the storage's uri index, not a walk over every replica with a uri: a uri that
            # is not in it names no path under the storage
            for row in inv.uri_index.get(sid, {}).values():
                if inv.r_item[row] != NONE:
                    try:
                        known.add(inv.replica_path(row))
                    except StorageError:
                        continue
            live = (inv.operations[i] for state in ACTIVE
                    for i in inv.operations_by_state[state])
            for op in live:
                if op.target_id == sid:
                    item_row = inv.row_of_oid(op.oid)
                    if item_row is not None:
                        row = inv.replica_row(op.oid, sid)
                        uri = None if row is None else inv.r_uri.get(row)
                        known.add(replica_path(storage, inv.i_name[item_row],
                                               inv.i_version[item_row], uri))
            self._known_paths = known
        return self._known_paths


def _check_text(finding: tuple, where: str) -> None:
    """Every string must survive the msgpack blob and the JSON answers (no lone surrogates,
    which a JSON body can carry)."""
    for index, value in enumerate(finding):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("not valid UTF-8 text", f"{where}[{index}]") from None
