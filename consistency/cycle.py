"""One consistency run of one storage, as ``dlm consistency`` does it. All the I/O is here; the
judgement is ``consistency.diff``.

1. Take a snapshot of the inventory (version V). It also gives the storage's backend settings.
2. List the storage (streamed; POSIX fast walk, S3 pages), from ``started`` to ``ended``.
3. Read the changes committed since V, so the inventory side is as of a version W after the
   listing, and every replica of the storage that changed meanwhile is known: its path is in
   flight and judged neither way (a copy that landed, a deletion that went through). If the
   server no longer keeps that history, a second snapshot is taken and compared instead.
4. Diff; read the checksums of all, a sample, or none of the objects that look fine.
5. Send the report to the server, which stores it and, with ``fix``, re-judges and applies the
   repairs as one write (``inventory/writes_consistency.py``). Unless the safety limit holds:
   more than ``max_missing`` of the storage looking missing means a storage down or
   mis-mounted, and nothing is fixed.
6. Delete the orphans the server confirmed (still unknown to it, older than the grace period),
   each only if it is still the very object listed (same size and mtime) and still old, and
   no symlink on the storage reaches it (a replica registered through the link may name it).

Symlinks on a POSIX storage are never objects (``consistency.listing``): they are listed in
the report (``symlinks``), never deleted, and replicas whose path goes through one are not
judged (``skipped.symlink``).
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from tqdm import tqdm

from consistency import listing
from consistency import report as reports
from consistency.diff import (
    CLASSES,
    DEFAULT_GRACE,
    ORPHAN,
    DiffOptions,
    DiffResult,
    Known,
    apply_checksums,
    diff,
    link_targets,
    reached_by_symlink,
)
from inventory import errors, model
from inventory.client import Client, Snapshot
from inventory.feed import WIRE_ITEM_FIELDS, WIRE_REPLICA_FIELDS, WIRE_STORAGE_FIELDS
from inventory.storage import checksum as adler
from inventory.storage.base import Backend, Entry
from inventory.storage.errors import NotFound, StorageError
from inventory.storage.factory import backend_for
from inventory.storage.paths import replica_path

_I = {name: i for i, name in enumerate(WIRE_ITEM_FIELDS)}
_R = {name: i for i, name in enumerate(WIRE_REPLICA_FIELDS)}
_S = {name: i for i, name in enumerate(WIRE_STORAGE_FIELDS)}
CHECKSUM_MODES = ("sample", "all", "none")
REPORTS = "/v1/consistency/reports"


@dataclass(slots=True)
class Options:
    grace: float = DEFAULT_GRACE  # seconds; younger objects are never orphans
    checksums: str = "sample"  # "all", "sample" (see below) or "none"
    max_missing: float = 0.05  # the safety limit, a fraction of the complete replicas
    fix: bool = False
    store: bool = True  # send the report to the server
    sample_fraction: float = 0.01  # "sample": this share of the fine-looking objects...
    sample_min: int = 100  # ...but at least this many (all of a small storage)
    max_rows: int = 100_000  # findings per class sent to the server (all are in the local report)
    read_concurrency: int = 8  # checksum reads at once


@dataclass(slots=True)
class RunResult:
    report: dict[str, Any]  # the full report (header, counts, every finding with its action)
    result: DiffResult
    safety: str | None
    stored: dict[str, Any] | None  # the server's answer to the report
    deleted: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    symlinks: dict[str, str | None] = field(default_factory=dict)  # POSIX: path -> target


class StorageNotFound(errors.NotFound):
    """The storage named on the command line is not in the inventory."""


async def run_consistency(client: Client, storage_name: str, options: Options) -> RunResult:
    clock = time.perf_counter
    t0 = clock()
    snap = await client.snapshot()
    record = next((s for s in snap.storages if s[_S["name"]] == storage_name), None)
    if record is None:
        raise StorageNotFound(f"no storage named {storage_name!r}", "storage")
    storage = SimpleNamespace(**{name: record[i] for name, i in _S.items()})
    backend = backend_for(storage.kind, storage.root, storage.config)
    try:
        t1 = clock()
        started = time.time()
        symlinks: dict[str, str | None] = {}
        # A progress line on a terminal (tqdm stays silent when stderr is not one).
        with tqdm(desc=f"listing {storage_name}", unit=" files", file=sys.stderr,
                  disable=None, leave=False) as bar:
            entries = await listing.collect(storage.kind, storage.root, backend, bar.update,
                                            symlinks=symlinks)
        ended = time.time()
        t2 = clock()
        snapshot_version = snap.version
        snap, touched = await catch_up(client, snap, storage.id)
        known, in_flight = inventory_side(snap, storage, touched)
        result = diff(entries, known, DiffOptions(started, options.grace, in_flight,
                                                  symlinks))
        t3 = clock()
        listed = {e[0]: e for e in entries} if result.verifiable or options.fix else {}
        apply_checksums(result, listed, await read_checksums(
            backend, _to_read(result.verifiable, options), options.read_concurrency))
        t4 = clock()
        safety = None
        if result.findings["missing"] and result.missing_fraction > options.max_missing:
            safety = (f"{len(result.findings['missing'])} of {result.expected} replicas "
                      f"({result.missing_fraction:.1%}) look missing, more than the limit of "
                      f"{options.max_missing:.1%}: is the storage mounted and configured "
                      "right? Nothing was repaired")
        body = report_body(storage, snapshot_version, snap.version, started, ended, result,
                           options, fix=options.fix, duration=clock() - t0)
        body["symlinks"] = [[_text(path), None if target is None else _text(target)]
                            for path, target in sorted(symlinks.items())]
        stored = None
        report: dict[str, Any]
        if options.store:
            stored = await client.post_msgpack(REPORTS, body)
            report = await client.request("GET", f"{REPORTS}/{stored['id']}")
            safety = safety or stored["summary"].get("safety")
            for kind, left_out in body["truncated"].items():  # the file gets every row
                report["findings"][kind].extend(
                    reports.finding_row(f) for f in result.findings[kind][-left_out:])
        else:
            report = local_report(storage, body, result, safety)
        report["symlinks"] = [{"path": _text(path), "target": None if target is None
                               else _text(target)} for path, target in sorted(symlinks.items())]
        deleted = 0
        confirmed = stored.get("delete_orphans", []) if stored else []
        if confirmed:
            outcomes = await delete_orphans(backend, confirmed, listed, options.grace,
                                            link_targets(symlinks))
            deleted = sum(1 for o in outcomes.values() if o == DELETED)
            if stored:  # the stored report says what was done, not only what was confirmed
                await client.request("POST", f"{REPORTS}/{stored['id']}/deletions",
                                     json={"outcomes": {_text(p): o
                                                        for p, o in outcomes.items()}})
            for row in report["findings"][ORPHAN]:
                if row["path"] in outcomes:
                    row["action"] = outcomes[row["path"]]
            if report.get("fix") is not None:
                report["fix"]["orphans_deleted"] = deleted
        t5 = clock()
    finally:
        await backend.close()
    return RunResult(report, result, safety, stored, deleted, {
        "snapshot": t1 - t0, "listing": t2 - t1, "diff": t3 - t2, "checksums": t4 - t3,
        "report": t5 - t4}, symlinks)


async def catch_up(client: Client, snap: Snapshot, storage_id: int
                   ) -> tuple[Snapshot, list[list[Any]]]:
    """Bring ``snap`` up to the current version; the replica records of the storage that
    changed on the way (before and after the change) are returned: their paths are in flight.
    """
    touched: list[list[Any]] = []
    sid, uid = _R["storage_id"], _R["uid"]
    version = snap.version
    while True:
        try:
            answer = await client.changes(version, limit=100_000)
        except errors.Gone:
            return await _resnapshot(client, snap, storage_id)
        for _version, changes in answer["transactions"]:
            for kind, rec in changes:
                if kind == "replica" and rec[sid] == storage_id:
                    before = snap.replicas.get(rec[uid])
                    if before is not None:
                        touched.append(before)
                    touched.append(rec)
                snap.apply(kind, rec)
        if answer["version"] == version or not answer["transactions"]:
            snap.version = answer["version"]
            return snap, touched
        version = answer["version"]


async def _resnapshot(client: Client, old: Snapshot, storage_id: int
                      ) -> tuple[Snapshot, list[list[Any]]]:
    """The change history is gone: a new snapshot, and every replica of the storage that
    differs between the two counts as touched."""
    new = await client.snapshot()
    sid = _R["storage_id"]
    touched = []
    for uid in {u for u, r in old.replicas.items() if r[sid] == storage_id} | {
            u for u, r in new.replicas.items() if r[sid] == storage_id}:
        before, after = old.replicas.get(uid), new.replicas.get(uid)
        if before != after:
            touched.extend(r for r in (before, after) if r is not None)
    return new, touched


def inventory_side(snap: Snapshot, storage: SimpleNamespace, touched: Iterable[list[Any]]
                   ) -> tuple[list[Known], set[str]]:
    """The storage's replicas as the diff takes them, and the paths in flight."""
    items = snap.items
    i_name, i_version = _I["item_name"], _I["item_version"]
    i_type, i_size = _I["item_type"], _I["size"]
    i_sum, i_method = _I["checksum"], _I["checksum_method"]
    r_oid, r_sid, r_uri, r_state = _R["oid"], _R["storage_id"], _R["uri"], _R["state"]
    r_size, r_sum, r_created = _R["size"], _R["checksum"], _R["created"]
    sid = storage.id
    known: list[Known] = []
    for rec in snap.replicas.values():
        if rec[r_sid] != sid or rec[r_state] == "deleted":
            continue
        item = items.get(rec[r_oid])
        if item is None or item[i_type] == "container":
            continue
        path = _path(storage, item[i_name], item[i_version], rec[r_uri])
        if path is None:
            continue
        size = rec[r_size]
        if size is None and item[i_size] is not None and item[i_size] >= 0:
            size = item[i_size]
        expected = rec[r_sum] or (item[i_sum] if item[i_method] in (None, adler.ALGORITHM)
                                  else None)
        known.append(Known(path, rec[r_oid], rec[r_state], size, _adler(expected),
                           rec[r_created]))
    in_flight: set[str] = set()
    for rec in touched:
        item = items.get(rec[r_oid])
        if item is not None:
            path = _path(storage, item[i_name], item[i_version], rec[r_uri])
            if path is not None:
                in_flight.add(path)
    return known, in_flight


def _path(storage: SimpleNamespace, name: str, version: int, uri: str | None) -> str | None:
    try:
        return replica_path(storage, name, version, uri)  # type: ignore[arg-type]
    except StorageError:
        return None  # registered at a uri outside the root: not this listing's business


def _adler(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return adler.normalize(value)
    except ValueError:
        return None


def _to_read(verifiable: list[Known], options: Options) -> list[Known]:
    if options.checksums == "none" or not verifiable:
        return []
    if options.checksums == "all":
        return verifiable
    k = min(len(verifiable), max(options.sample_min,
                                 math.ceil(len(verifiable) * options.sample_fraction)))
    return random.sample(verifiable, k)


async def read_checksums(backend: Backend, replicas: list[Known], concurrency: int
                         ) -> list[tuple[Known, str | None]]:
    """The adler32 of each replica's object, read in full (None: it is gone meanwhile)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(rep: Known) -> tuple[Known, str | None]:
        async with gate:
            digest = adler.Adler32()
            try:
                async with backend.open_read(rep.path) as reader:
                    async for chunk in reader:
                        digest.update(chunk)
            except NotFound:
                return rep, None
            return rep, digest.hexdigest()

    return list(await asyncio.gather(*(one(r) for r in replicas)))


DELETED = "deleted"


async def delete_orphans(backend: Backend, paths: list[str], listed: dict[str, Entry],
                         grace: float, targets: dict[str, str] | None = None
                         ) -> dict[str, str]:
    """Delete what the server confirmed, path by path, each only if the object is still the one
    listed (same size and mtime: a copy that landed since would have a new mtime), still
    older than the grace period, and reached by no symlink on the storage (``targets``,
    ``link_targets``: a replica's path may name it through the link). The outcome per path,
    for the report."""
    out: dict[str, str] = {}
    for path in paths:
        entry = listed.get(path)
        if entry is None:
            out[path] = "not deleted: not in this run's listing"
            continue
        link = reached_by_symlink(path, targets or {})
        if link is not None:
            out[path] = f"not deleted: the symlink {_text(link)} reaches it"
            continue
        try:
            info = await backend.stat(path)
        except NotFound:
            out[path] = "gone already"
            continue
        except StorageError as exc:
            out[path] = f"not deleted: {exc.code}: {exc.message}"
            continue
        # S3's HEAD gives Last-Modified to the second, its listing to the millisecond
        if info.size != entry.size or abs(info.mtime - entry.mtime) >= 1.0:
            out[path] = "not deleted: changed since the listing"
        elif info.mtime > time.time() - grace:
            out[path] = "not deleted: younger than the grace period"
        else:
            try:
                await backend.delete(path)
            except StorageError as exc:
                out[path] = f"not deleted: {exc.code}: {exc.message}"
                continue
            out[path] = DELETED
    return out


def _text(value: str) -> str:
    """A path as valid UTF-8 (an undecodable file name shows its bytes as escapes)."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def report_body(storage: SimpleNamespace, snapshot_version: int, version: int, started: float,
                ended: float, result: DiffResult, options: Options, *, fix: bool,
                duration: float) -> dict[str, Any]:
    """What ``POST /v1/consistency/reports`` takes (``ConsistencyReportIn``)."""
    body: dict[str, Any] = {
        "storage": storage.name, "started": started, "ended": ended,
        "snapshot_version": snapshot_version, "inventory_version": version,
        "grace": options.grace, "max_missing": options.max_missing,
        "checksums": options.checksums, "counts": result.summary(), "fix": fix,
        "duration": duration, "truncated": {},
    }
    for kind in CLASSES:
        rows = result.findings[kind]
        body[kind] = [[_text(f.path), *f[2:]] for f in rows[:options.max_rows]]
        if len(rows) > options.max_rows:
            body["truncated"][kind] = len(rows) - options.max_rows
    return body


def local_report(storage: SimpleNamespace, body: dict[str, Any], result: DiffResult,
                 safety: str | None) -> dict[str, Any]:
    """The report of a run that was not stored, in the shape the server gives stored ones."""
    header = {
        "id": None,
        "storage": {"name": storage.name, "id": storage.id, "kind": storage.kind,
                    "root": storage.root},
        "listing": {"started": model.format_time(body["started"]),
                    "ended": model.format_time(body["ended"]),
                    "seconds": round(body["ended"] - body["started"], 3)},
        "inventory_version": body["inventory_version"],
        "snapshot_version": body["snapshot_version"],
        "options": {"grace": body["grace"], "checksums": body["checksums"],
                    "max_missing": body["max_missing"], "fix": False},
        "counts": body["counts"], "truncated": {}, "safety": safety, "fix": None,
        "duration": round(body["duration"], 3),
    }
    rows = [reports.finding_row(f) for kind in CLASSES for f in result.findings[kind]]
    return reports.build(header, rows)
