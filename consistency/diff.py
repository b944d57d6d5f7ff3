"""The consistency diff: what a storage holds against what the inventory says it holds. Pure.

Inputs are a listing (``Entry(path, size, mtime)`` per object, any order) and the inventory's
replicas on that storage (``Known``), both as of one moment; the output sorts every path into
one class:

- **missing**: the inventory has a complete replica, the storage has nothing at its path
  (Rucio's "lost");
- **orphan**: the storage has an object no replica accounts for (Rucio's "dark");
- **size_mismatch**: both exist, the sizes differ;
- **checksum_mismatch**: both exist, same size, the bytes' adler32 differs (only for the paths
  whose checksum was read: ``apply_checksums``);
- **ok**: both exist and agree (counted, not listed).

What is in flight is never flagged, because flagging it would make ``--fix`` damage good data:
objects younger than the grace period are not orphans (an upload that will be registered in a
moment), replicas not ``complete`` (pending, copying, deleting: the file operations engine is at
work) are neither missing nor orphans, replicas created after the listing started are not
missing (the listing may have passed their directory before the file arrived), and paths whose
replica changed while the listing ran (``in_flight``) are left alone either way.

Symlinks on a POSIX storage (``symlinks``) are never objects: a replica whose path goes through
one is not judged (``symlink``: DLM refuses to reach a file through a link, issue 15, so it is
neither there nor missing; the operator resolves it), and the file a link reaches is judged on
its own: an orphan if no replica names it, but one that ``reached_by_symlink`` says
``--fix`` must not delete (a replica registered through the link may be its only name).

A hash join (one dict of the listing, one pass over the replicas) rather than a merge of two
sorted streams: it does not need the inventory sorted by path, and 1M against 1M takes about a
second (benchmarks/bench_consistency.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import eq, is_not, itemgetter, lt, ne, not_
from typing import Any, NamedTuple

from inventory.storage.base import Entry

MISSING = "missing"
ORPHAN = "orphan"
SIZE_MISMATCH = "size_mismatch"
CHECKSUM_MISMATCH = "checksum_mismatch"
CLASSES: tuple[str, ...] = (MISSING, ORPHAN, SIZE_MISMATCH, CHECKSUM_MISMATCH)
COMPLETE = "complete"
DEFAULT_GRACE = 24 * 3600.0

# Why a path was left out of the judgement (counted in the report).
YOUNG = "young"  # an object newer than the grace period: maybe an upload not yet registered
IN_FLIGHT = "in_flight"  # its replica changed while the listing ran
NOT_COMPLETE = "not_complete"  # pending, copying, deleting, or already missing/corrupt
NEW_REPLICA = "new_replica"  # created after the listing started
SYMLINK = "symlink"  # its path goes through a symlink on the storage
SKIP_REASONS: tuple[str, ...] = (YOUNG, IN_FLIGHT, NOT_COMPLETE, NEW_REPLICA, SYMLINK)


class Known(NamedTuple):
    """One replica on the storage as the inventory has it, reduced to what the diff needs."""

    path: str  # relative to the storage root, as the listing names objects
    oid: str
    state: str  # replica state name
    size: int | None  # what the object must weigh (the replica's verified size, else the item's)
    checksum: str | None  # the adler32 the bytes must have, when known
    created: float  # when the replica was registered


class Finding(NamedTuple):
    """One inconsistent path, a row of the report (the columns of ``FINDING_COLUMNS``)."""

    kind: str  # one of CLASSES
    path: str
    oid: str | None  # None for an orphan
    expected_size: int | None
    size: int | None  # as listed; None when missing
    expected_checksum: str | None
    checksum: str | None  # as read; only for checksum mismatches
    mtime: float | None  # of the object; None when missing
    replica_created: float | None  # of the replica; None for an orphan


FINDING_COLUMNS: tuple[str, ...] = Finding._fields
_PATH = itemgetter(0)  # of an Entry and of a Known
_SIZE = itemgetter(1)  # of an Entry
_STATE = itemgetter(2)
_EXPECTED_SIZE = itemgetter(3)
_CHECKSUM = itemgetter(4)
_CREATED = itemgetter(5)
_PATH_OF_FINDING = itemgetter(1)


@dataclass(slots=True)
class DiffOptions:
    listing_started: float  # epoch seconds
    grace: float = DEFAULT_GRACE  # objects modified after listing_started - grace are young
    in_flight: Collection[str] = frozenset()  # paths whose replica changed during the listing
    # symlinks on the storage: relative path -> what it reaches under the root (None: nothing)
    symlinks: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(slots=True)
class DiffResult:
    findings: dict[str, list[Finding]] = field(
        default_factory=lambda: {kind: [] for kind in CLASSES})
    ok: int = 0
    ok_bytes: int = 0
    expected: int = 0  # complete replicas judged (the denominator of the safety limit)
    listed: int = 0
    listed_bytes: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    verifiable: list[Known] = field(default_factory=list)  # ok, with a known checksum
    through_symlink: list[Known] = field(default_factory=list)  # not judged (SYMLINK)
    checksums_read: int = 0

    @property
    def missing_fraction(self) -> float:
        """Share of the complete replicas judged that look missing (the safety limit's input)."""
        return len(self.findings[MISSING]) / self.expected if self.expected else 0.0

    def summary(self) -> dict[str, Any]:
        """Counts and bytes per class: what a site admin reads first."""
        out: dict[str, Any] = {}
        for kind, rows in self.findings.items():
            size_of = (lambda f: f.expected_size or 0) if kind == MISSING else (
                lambda f: f.size or 0)
            out[kind] = {"count": len(rows), "bytes": sum(size_of(f) for f in rows)}
        out["ok"] = {"count": self.ok, "bytes": self.ok_bytes}
        out["listed"] = {"count": self.listed, "bytes": self.listed_bytes}
        out["expected"] = self.expected
        out["skipped"] = dict(self.skipped)
        out["checksums_read"] = self.checksums_read
        out["missing_fraction"] = round(self.missing_fraction, 6)
        return out


def diff(entries: Iterable[Entry], replicas: Iterable[Known], options: DiffOptions
         ) -> DiffResult:
    """Sort every listed object and every replica of one storage into the classes above.

    The per-path work runs in C (``map``, ``compress``, dict and set operations over whole
    columns); Python loops only over the findings, which are few on a healthy storage. A loop
    with one ``if`` chain per replica took three times as long for 1M paths.
    """
    result = DiffResult()
    entries = entries if isinstance(entries, list) else list(entries)
    reps = replicas if isinstance(replicas, list) else list(replicas)
    listed: dict[str, Entry] = dict(zip(map(_PATH, entries), entries, strict=True))
    everything = listed.copy()  # a copy costs no hashing; ``listed`` is consumed below
    result.listed = len(listed)
    result.listed_bytes = sum(map(_SIZE, listed.values()))
    started = options.listing_started
    in_flight = options.in_flight if isinstance(options.in_flight, (set, frozenset)) \
        else frozenset(options.in_flight)
    skipped = result.skipped

    # One pass takes every replica's object out of the listing: what is left afterwards is
    # what no replica accounts for (a path the inventory knows is never an orphan).
    got = list(map(listed.pop, map(_PATH, reps), repeat(None)))

    # which replicas are judged: complete, not changed during the listing, older than it
    mask = list(map(eq, map(_STATE, reps), repeat(COMPLETE)))
    judged, got = list(compress(reps, mask)), list(compress(got, mask))
    skipped[NOT_COMPLETE] += len(reps) - len(judged)
    if in_flight:
        mask = list(map(not_, map(in_flight.__contains__, map(_PATH, judged))))
        skipped[IN_FLIGHT] += len(judged) - sum(mask)
        judged, got = list(compress(judged, mask)), list(compress(got, mask))
    mask = list(map(lt, map(_CREATED, judged), repeat(started)))
    skipped[NEW_REPLICA] += len(judged) - sum(mask)
    judged, got = list(compress(judged, mask)), list(compress(got, mask))
    result.expected = len(judged)

    # missing: no object at the path (two replicas at one path, e.g. two versions of a name,
    # took it once: the second finds it in ``everything``)
    present = list(map(is_not, got, repeat(None)))
    reps_here = list(compress(judged, present))
    found = list(compress(got, present))
    missing = result.findings[MISSING]
    links = options.symlinks
    for r in compress(judged, map(not_, present)):
        entry = everything.get(r[0])
        if entry is None and links and symlink_on_path(r[0], links) is not None:
            skipped[SYMLINK] += 1
            result.through_symlink.append(r)
        elif entry is None:
            missing.append(Finding(MISSING, r[0], r[1], r[3], None, r[4], None, None, r[5]))
        else:
            reps_here.append(r)
            found.append(entry)

    # size mismatch: both there, sizes differ (an unknown expected size matches anything)
    differs = list(map(ne, map(_SIZE, found), map(_EXPECTED_SIZE, reps_here)))
    sizes = result.findings[SIZE_MISMATCH]
    for r, e in zip(compress(reps_here, differs), compress(found, differs), strict=True):
        if r[3] is None:
            continue
        sizes.append(Finding(SIZE_MISMATCH, r[0], r[1], r[3], e[1], r[4], None, e[2], r[5]))
    if sizes:
        bad = {f.path for f in sizes}
        keep = list(map(not_, map(bad.__contains__, map(_PATH, reps_here))))
        reps_here = list(compress(reps_here, keep))
        found = list(compress(found, keep))
    result.ok = len(reps_here)
    result.ok_bytes = sum(map(_SIZE, found))
    result.verifiable = list(compress(reps_here, map(is_not, map(_CHECKSUM, reps_here),
                                                     repeat(None))))

    # orphans: objects no replica accounts for, unless young or in flight
    young_after = started - options.grace
    orphans = result.findings[ORPHAN]
    for path, entry in listed.items():
        if path in in_flight:
            skipped[IN_FLIGHT] += 1
        elif entry[2] > young_after:
            skipped[YOUNG] += 1
        else:
            orphans.append(Finding(ORPHAN, path, None, None, entry[1], None, None, entry[2],
                                   None))
    for rows in result.findings.values():
        rows.sort(key=_PATH_OF_FINDING)
    return result


def symlink_on_path(path: str, symlinks: Mapping[str, str | None]) -> str | None:
    """The first symlink among ``path`` and its directories, or None."""
    end = -1
    while True:
        end = path.find("/", end + 1)
        head = path if end < 0 else path[:end]
        if head in symlinks:
            return head
        if end < 0:
            return None


def link_targets(symlinks: Mapping[str, str | None]) -> dict[str, str]:
    """What the symlinks reach (a file or directory under the root) -> one link reaching it."""
    return {target: link for link, target in symlinks.items() if target is not None}


def reached_by_symlink(path: str, targets: Mapping[str, str]) -> str | None:
    """A symlink on the storage through which ``path`` (a real file) can be reached: one that
    resolves to it or to a directory above it (``targets``: ``link_targets``). Such a file is
    never deleted as an orphan."""
    if not targets:
        return None
    head = path
    while True:
        if head in targets:
            return targets[head]
        head, sep, _ = head.rpartition("/")
        if not sep:
            return None


def apply_checksums(result: DiffResult, listed: dict[str, Entry],
                    read: Iterable[tuple[Known, str | None]]) -> None:
    """Move the ok replicas whose bytes did not match their checksum to checksum_mismatch.

    ``read`` pairs a replica of ``result.verifiable`` with the adler32 read from its object, or
    None when it could not be read (gone meanwhile: not judged). ``listed`` gives the mtime.
    """
    rows = result.findings[CHECKSUM_MISMATCH]
    for rep, actual in read:
        if actual is None:
            continue
        result.checksums_read += 1
        if actual != rep.checksum:
            entry = listed.get(rep.path)
            size = None if entry is None else entry[1]
            rows.append(Finding(CHECKSUM_MISMATCH, rep.path, rep.oid, rep.size, size,
                                rep.checksum, actual, None if entry is None else entry[2],
                                rep.created))
            result.ok -= 1
            result.ok_bytes -= size or 0
    rows.sort(key=_PATH_OF_FINDING)
