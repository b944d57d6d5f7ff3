"""Verified ingest, the request handler's side: look at the payloads before the write.

A registration with a storage (POST /v1/items, single or bulk; a PATCH that sets a location) is
acknowledged only once its payload was seen there with the stated size, and with ``verify:
checksum`` its adler32 computed from the bytes; without a size, the storage's is taken. The
looking happens here, before the write is queued, because the writer must never wait for a disk:
the paths of one request are stat'ed per storage in batches (one thread-pool call per 2,048
POSIX paths, concurrent HEADs on S3), checksums one streamed read per payload, a few at a time.
The first item (in request order) that fails refuses the whole request, naming it and its
field: nothing of the request is registered. What was found goes into the write as a
``Payload`` per item, which the writer re-checks (``inventory.ingest.recheck``); a stale one
(its version was taken meanwhile) makes this module look again, ``ATTEMPTS`` times in all.

Storages with ``verify_ingest: false`` in their config are not looked at: registrations there
are taken on trust, as before, and need a size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from inventory import model, validate
from inventory.errors import BadRequest, Conflict, DLMError, Unavailable
from inventory.fileops.engine import Backends
from inventory.ingest import Payload, StalePayload, verifies_ingest
from inventory.inventory import Inventory, Storage
from inventory.server.state import ServerState
from inventory.specs import ItemPatch, ItemSpec
from inventory.storage.base import ObjectInfo
from inventory.storage.errors import InvalidPath, StorageError
from inventory.storage.errors import NotFound as StorageNotFound
from inventory.storage.paths import VERSION_MARK, default_path, path_of_uri, uri_of
from inventory.storage.posix import PosixBackend

ATTEMPTS = 3  # looks at the payloads before a stale one is answered with 409
CHECKSUM_CONCURRENCY = 4  # payloads read at once for verify: checksum
T = TypeVar("T")


@dataclass(slots=True)
class Job:
    """One payload to look at, and what the request says about it."""

    index: int
    where: str  # "items[3]." or ""
    name: str
    storage: Storage
    path: str
    version: int | None  # for a default path
    size: int | None
    checksum: str | None
    verify: str
    uri_given: bool


async def with_payloads(find: Callable[[], Awaitable[list[Payload | None]]],
                        write: Callable[[list[Payload | None]], Awaitable[T]]) -> T:
    """Look at the payloads, then write with what was found; again if the writer found it
    stale (a version taken by a concurrent registration meanwhile)."""
    for attempt in range(ATTEMPTS):
        payloads = await find()
        try:
            return await write(payloads)
        except StalePayload:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def payloads_of_items(state: ServerState, specs: Sequence[ItemSpec], batch: bool
                            ) -> list[Payload | None]:
    """Payloads of new items with a storage, by index; None where nothing is looked at (no
    storage, a container, a storage not verified or not accepting: the write refuses those)."""
    inv = state.inventory
    jobs: list[Job] = []
    claimed: dict[str, int] = {}  # the versions this request gives a name, as the writer will
    verified: dict[str, Storage | None] = {}
    for index, spec in enumerate(specs):
        where = f"items[{index}]." if batch else ""
        version = spec.item_version
        if version is None:
            row = inv.row_of_name(spec.item_name)
            latest = max(0 if row is None else inv.i_version[row],
                         claimed.get(spec.item_name, 0))
            version = latest + 1
        claimed[spec.item_name] = max(claimed.get(spec.item_name, 0), version)
        if spec.item_type == "container" or spec.storage is None:
            continue
        if spec.storage not in verified:  # one lookup per storage of the request
            verified[spec.storage] = _verified(inv, spec.storage, False)
        storage = verified[spec.storage]
        if storage is None:
            continue
        if VERSION_MARK in spec.item_name:  # the one rule check_name has not: name@vN
            validate.item_name(spec.item_name, where + "item_name")
        checksum = None
        if spec.verify == "checksum":  # else only the writer needs it (and checks it)
            checksum, _ = validate.checksum(spec.checksum, spec.checksum_method, where)
        jobs.append(_job(index, where, spec.item_name, storage, spec.uri,
                         None if spec.uri is not None else version, spec.size, checksum,
                         spec.verify))
    return await _look(state, jobs, len(specs))


async def payloads_of_patches(state: ServerState, patches: Sequence[tuple[str, ItemPatch]],
                              batch: bool) -> list[Payload | None]:
    """Payloads of the locations that PATCHes register, by index (None: nothing to look at)."""
    inv = state.inventory
    unset = msgspec.UNSET
    jobs: list[Job] = []
    for index, (oid_text, patch) in enumerate(patches):
        if patch.storage is unset:
            continue
        where = f"items[{index}]." if batch else ""
        try:
            row = inv.row_of_oid(validate.uuid_value(oid_text, where + "oid"))
        except BadRequest:
            continue  # the write says so
        if row is None:
            continue
        storage = _verified(inv, patch.storage, inv.i_type[row] == model.CONTAINER)
        if storage is None:
            continue
        rec = inv.item_record(row)
        size = rec.size if patch.size is unset else patch.size
        given = rec.checksum if patch.checksum is unset else patch.checksum
        method = rec.checksum_method if patch.checksum_method is unset else patch.checksum_method
        checksum, _ = validate.checksum(given, method, where)
        uri = None if patch.uri is unset else patch.uri
        jobs.append(_job(index, where, rec.item_name, storage, uri,
                         None if uri is not None else rec.item_version, size, checksum,
                         patch.verify))
    return await _look(state, jobs, len(patches))


def _verified(inv: Inventory, name: str | None, container: bool) -> Storage | None:
    storage = None if name is None or container else inv.storage_by_name.get(name)
    if (storage is None or storage.status not in ("online", "draining")
            or not verifies_ingest(storage.config)):
        return None
    return storage


def _job(index: int, where: str, name: str, storage: Storage, uri: str | None,
         version: int | None, size: int | None, checksum: str | None, verify: str) -> Job:
    try:
        if uri is not None:
            path = path_of_uri(storage.kind, storage.root, uri)
        else:
            assert version is not None
            path = default_path(name, version)
    except InvalidPath as exc:
        field = "uri" if uri is not None else "item_name"
        raise BadRequest(f"{name!r}: {exc.message}", where + field) from None
    return Job(index, where, name, storage, path, version, size, checksum, verify,
               uri is not None)


async def _look(state: ServerState, jobs: list[Job], count: int) -> list[Payload | None]:
    payloads: list[Payload | None] = [None] * count
    if not jobs:
        return payloads
    by_storage: dict[int, list[Job]] = {}
    for job in jobs:
        by_storage.setdefault(job.storage.id, []).append(job)
    backends = state.backends
    answers = await _stat(backends, list(by_storage.values()))
    failures: dict[int, DLMError] = {}
    to_sum: list[tuple[Job, ObjectInfo]] = []
    make = tuple.__new__  # Payload(...) without its keyword-handling __new__: per item
    for group, infos in zip(by_storage.values(), answers, strict=True):
        s = group[0].storage
        sid, kind, root = s.id, s.kind, s.root
        for job, info in zip(group, infos, strict=True):
            if isinstance(info, StorageError):
                failures[job.index] = _refusal(job, info)
            elif job.size is not None and info.size != job.size:
                failures[job.index] = _size_refusal(job, info.size)
            elif job.verify == "checksum":
                to_sum.append((job, info))
            else:
                payloads[job.index] = make(Payload, (sid, kind, root, job.path, job.version,
                                                     info.size, None))
    if to_sum and not failures:  # reading payloads is only worth it for a request that passes
        gate = asyncio.Semaphore(CHECKSUM_CONCURRENCY)

        async def summed(job: Job) -> None:
            async with gate:
                try:
                    result = await backends.get(job.storage).checksum(job.path)
                except StorageError as exc:
                    failures[job.index] = _refusal(job, exc)
                    return
            if job.size is not None and result.size != job.size:
                failures[job.index] = _size_refusal(job, result.size)
            elif job.checksum is not None and result.checksum != job.checksum:
                failures[job.index] = Conflict(
                    f"{_label(job)}: the payload's adler32 is {result.checksum}, not "
                    f"{job.checksum}; nothing was registered", job.where + "checksum",
                    expected=job.checksum, actual=result.checksum)
            else:
                payloads[job.index] = _payload(job, result.size, result.checksum)

        await asyncio.gather(*(summed(job) for job, _ in to_sum))
    if failures:
        raise failures[min(failures)]
    return payloads


async def _stat(backends: Backends, groups: list[list[Job]]
                ) -> list[list[ObjectInfo | StorageError]]:
    """The stats of each group's paths (one group per storage): every POSIX storage's in one
    thread-pool call, the others' (S3: HEADs) concurrently with it."""
    mine = [(group, backends.get(group[0].storage)) for group in groups]
    posix = [(backend, [j.path for j in group]) for group, backend in mine
             if isinstance(backend, PosixBackend)]
    others = [backend.stat_many([j.path for j in group]) for group, backend in mine
              if not isinstance(backend, PosixBackend)]
    local, *remote = await asyncio.gather(PosixBackend.stat_groups(posix), *others)
    found = iter(local)
    rest = iter(remote)
    return [next(found) if isinstance(backend, PosixBackend) else next(rest)
            for _, backend in mine]


def _payload(job: Job, size: int, checksum: str | None) -> Payload:
    s = job.storage
    return Payload(s.id, s.kind, s.root, job.path, job.version, size, checksum)


def _label(job: Job) -> str:
    return f"{job.where.rstrip('.') + ' ' if job.where else ''}{job.name!r}"


def _where(job: Job) -> str:
    return f"{uri_of(job.storage.kind, job.storage.root, job.path)} on storage " \
           f"{job.storage.name!r}"


def _size_refusal(job: Job, actual: int) -> DLMError:
    return Conflict(f"{_label(job)}: the payload at {_where(job)} has {actual} bytes, not "
                    f"{job.size}; nothing was registered", job.where + "size",
                    expected=job.size, actual=actual)


def _refusal(job: Job, exc: StorageError) -> DLMError:
    """A storage failure as the client's error: what is missing names the item's location."""
    field = job.where + ("uri" if job.uri_given else "storage")
    if isinstance(exc, StorageNotFound):
        return Conflict(f"{_label(job)}: no payload at {_where(job)}; nothing was registered",
                        field)
    if isinstance(exc, InvalidPath):  # the path of a name or uri the storage refuses
        if not job.uri_given:
            try:  # a bad name is refused in the writer's words (the happy path skips this)
                validate.item_name(job.name, job.where + "item_name")
            except BadRequest as refused:
                return refused
        return BadRequest(f"{_label(job)}: {exc.message}",
                          job.where + ("uri" if job.uri_given else "item_name"))
    if exc.retryable:
        return Unavailable(f"{_label(job)}: storage {job.storage.name!r} cannot be checked "
                           f"now ({exc.message}); nothing was registered (a storage the "
                           f"server cannot reach needs config verify_ingest: false)",
                           job.where + "storage")
    return Conflict(f"{_label(job)}: cannot check the payload at {_where(job)}: "
                    f"{exc.message}; nothing was registered", field)
