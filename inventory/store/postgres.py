"""The production store: PostgreSQL through asyncpg; COPY to write, binary fetches to load."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from operator import attrgetter
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

import schema
from inventory import model
from inventory.inventory import Inventory
from inventory.objects import Operation, Token
from inventory.store import generic
from inventory.store.base import (
    ENCODING_ERRORS,
    ITEM_COLUMNS,
    PATH_REPAIRS,
    REPLICA_COLUMNS,
    STORAGE_COLUMNS,
    Store,
    StoreConflict,
    StoreError,
    StoreInDoubt,
    StoreRefused,
    StoreUnavailable,
    check_schema_version,
    item_db_row,
    item_records,
    loading,
    log_path_repairs,
    replica_db_row,
    replica_records,
    storage_db_row,
    storage_from_db,
)
from inventory.store.claim import PgClaim, connect_problem
from inventory.store.ops import DbOp, InsertItems, InsertReplicas, InsertStorage


def _q(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


log = logging.getLogger("dlm.store")
_FETCH = 10_000  # rows per fetch: small batches leave fewer holes in the heap
_uuid_int = attrgetter("int")  # asyncpg's UUID to the int the inventory keys on
_ITEM_QUERIES = (
    f"SELECT {_q(ITEM_COLUMNS)} FROM data_item WHERE parent_oid IS NULL",
    f"SELECT {_q(ITEM_COLUMNS)} FROM data_item WHERE parent_oid IS NOT NULL ORDER BY created",
)
# Connection-level failures: the transaction did not commit and the client may retry.
_UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
                TimeoutError)
# A connection whose session was killed in the middle of an operation can be left in a protocol
# state asyncpg does not expect (seen with pg_terminate_backend under writes): it is dropped, so
# that the write claim it carried is taken again on a new one (issue 15).
_CONFUSED = (asyncpg.exceptions.InternalClientError,)
# A value of the transaction refused: by PostgreSQL (class 22 data exceptions such as a NUL in
# text, class 54 such as an index entry past its size limit), by asyncpg encoding an argument
# (its own DataError), or by our encoding of a row. The same transaction would fail again.
_REFUSED = (asyncpg.DataError, asyncpg.exceptions.ProgramLimitExceededError,
            asyncpg.exceptions._base.DataError, *ENCODING_ERRORS)
# What a client is told when the connection broke: the driver's own words ("cannot switch to
# state 15 ...") say nothing to it and are logged instead.
CONNECTION_LOST = "the database connection was lost; retry"


def _lost(exc: BaseException, what: str = "postgresql") -> StoreUnavailable:
    """A StoreUnavailable a client may read: PostgreSQL's own error messages pass (they say
    what the database refused), a dropped connection or the driver's state errors do not."""
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(
            exc, asyncpg.PostgresConnectionError | asyncpg.exceptions.AdminShutdownError):
        return StoreUnavailable(f"{what}: {exc}")
    log.warning("database connection lost", extra={"error": f"{type(exc).__name__}: {exc}"})
    return StoreUnavailable(CONNECTION_LOST)


def _abandoned_driver_waiter(loop: asyncio.AbstractEventLoop, context: dict) -> bool:
    """Whether ``context`` is asyncpg's own waiter left behind by a connection that broke.

    When PostgreSQL ends a session (``pg_terminate_backend``) between two statements, asyncpg
    is left consuming the error; the next statement fails at once ("another operation is in
    progress", which the commit treats as a lost connection) but leaves the waiter asyncpg
    made for it, which the connection's loss then fails with nobody to read it (asyncpg's
    internals; no public way to reach it). It is a dropped connection already handled: logged
    at debug level, not as an error with a traceback."""
    exc = context.get("exception")
    return (context.get("message", "").startswith("Future exception was never retrieved")
            and isinstance(exc, asyncpg.ConnectionDoesNotExistError | asyncpg.InterfaceError))


def _quiet_abandoned_waiters() -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    if getattr(previous, "dlm_abandoned_waiters", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if _abandoned_driver_waiter(loop, context):
            log.debug("abandoned driver waiter", extra={"error": str(context["exception"])})
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.dlm_abandoned_waiters = True
    loop.set_exception_handler(handler)


async def create_database(url: str, where: str) -> bool:
    """Create the database ``url`` names unless it exists (``dlm serve --create-db``); True if
    it was created. Connects to the same server's ``postgres`` maintenance database, as
    ``createdb`` does; ``where`` is the URL to print (no password)."""
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise StoreError(f"{where}: the URL names no database to create")
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        pass  # what --create-db is for
    except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
        raise StoreUnavailable(connect_problem(where, exc)) from exc
    else:
        await conn.close()
        return False
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    try:
        conn = await asyncpg.connect(maintenance, timeout=10)
    except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
        raise StoreUnavailable(f"cannot create database {name!r}: "
                               f"{connect_problem('its postgres database', exc)}") from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
    except asyncpg.DuplicateDatabaseError:
        return False  # created meanwhile by someone else: as good
    except asyncpg.PostgresError as exc:
        raise StoreError(f"cannot create database {name!r} on {where}: {exc}") from exc
    finally:
        await conn.close()
    log.info("database created", extra={"db": where})
    return True


class PostgresStore(Store):
    backend = "postgresql"
    dialect = "postgresql"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._sizes = (min_size, max_size)
        self._claim = PgClaim(url, self.describe())
        # Every use of the claim's connection (take, commit, release) holds this: asyncpg
        # runs one operation at a time on a connection, and a second one started beside it
        # breaks both ("another operation is in progress").
        self._claim_lock = asyncio.Lock()

    def describe(self) -> str:
        # Never print a password.
        head, _, tail = self.url.partition("@")
        if tail and ":" in head.split("//", 1)[-1]:
            user = head.split("//", 1)[-1].split(":", 1)[0]
            return f"postgresql://{user}:***@{tail}"
        return self.url

    async def claim(self) -> None:
        _quiet_abandoned_waiters()
        async with self._claim_lock:
            await self._claim.take()

    def holds_claim(self) -> bool:
        return self._claim.held()

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self._sizes[0], max_size=self._sizes[1], command_timeout=300,
            )
        except (*_UNAVAILABLE, asyncpg.InvalidCatalogNameError,
                asyncpg.InvalidAuthorizationSpecificationError) as exc:
            raise StoreUnavailable(connect_problem(self.describe(), exc)) from exc
        async with self._pool.acquire() as conn, conn.transaction():
            # One migrator at a time, even if two servers start against one database.
            await conn.execute("SELECT pg_advisory_xact_lock(864200)")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
            )
            found = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            known = schema.migrations("postgresql")
            check_schema_version(found, len(known), self.describe())
            for migration in known[found:]:
                await conn.execute(migration.sql)
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version VALUES ($1)", migration.version)
            if found < len(known) and await conn.fetchval(
                    "SELECT to_regclass('path_repair') IS NOT NULL"):
                # what migration 008 moved: logged, then forgotten
                log_path_repairs(await conn.fetch(PATH_REPAIRS))
                await conn.execute("DELETE FROM path_repair")

    async def close(self) -> None:
        async with self._claim_lock:
            await self._claim.release()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def schema_version(self) -> int:
        async with self._pool.acquire() as conn:
            return await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")

    async def cycle_decisions(self, cycle_id: int) -> bytes | None:
        async with self._pool.acquire() as conn:
            return await conn.fetchval(
                "SELECT decisions FROM cycle_report WHERE cycle_id = $1", cycle_id)

    async def operations(self, **filters: Any) -> list[Operation]:
        sql, args = generic.operations_query(lambda i: f"${i}", uuid_out=model.format_uuid,
                                             **filters)
        try:
            async with self._pool.acquire(timeout=10) as conn:
                rows = await conn.fetch(sql, *args, timeout=60)
        except (*_UNAVAILABLE, *_CONFUSED, asyncpg.PostgresError) as exc:
            raise _lost(exc) from exc
        return [Operation.from_db(row, _uuid_int) for row in rows]

    async def committed_version(self) -> int:
        try:
            async with self._pool.acquire(timeout=10) as conn:
                return await conn.fetchval("SELECT version FROM inventory_state", timeout=10)
        except (*_UNAVAILABLE, *_CONFUSED, asyncpg.PostgresError) as exc:
            raise _lost(exc) from exc

    async def stored_tokens(self) -> list[Token]:
        found = Inventory()
        async with self._pool.acquire(timeout=10) as conn:
            await generic.load_postgres_rows(conn, found, (Token,))
        return list(found.tokens.values())

    # ------------------------------------------------------------------ load

    async def load(self, inv: Inventory) -> None:
        with loading():
            await self._load(inv)

    async def _load(self, inv: Inventory) -> None:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                                 readonly=True):
            inv.version = await conn.fetchval("SELECT version FROM inventory_state")
            for row in await conn.fetch(f"SELECT {_q(STORAGE_COLUMNS)} FROM storage ORDER BY id"):
                inv.add_storage(storage_from_db(tuple(row)))
            shared: dict = {}  # equal strings of the load made one object
            inv.defer_indexes()  # sorted once at the end (settle_indexes), not row by row
            await self._load_items(conn, inv, shared)
            await self._load_replicas(conn, inv, shared)
            inv.settle_indexes()
            await generic.load_postgres_rows(conn, inv)

    async def _load_items(self, conn: asyncpg.Connection, inv: Inventory,
                          shared: dict | None = None) -> None:
        # Items without a parent first, then members in creation order (a parent always exists
        # before its members), so that no sort of the whole table is needed.
        for query in _ITEM_QUERIES:
            cursor = await conn.cursor(query)
            while rows := await cursor.fetch(_FETCH):
                inv.add_items(item_records(rows, _uuid_int, shared))

    async def _load_replicas(self, conn: asyncpg.Connection, inv: Inventory,
                             shared: dict | None = None) -> None:
        cursor = await conn.cursor(f"SELECT {_q(REPLICA_COLUMNS[1:])} FROM replica")
        while rows := await cursor.fetch(_FETCH):
            inv.add_replicas(replica_records(rows, _uuid_int, shared))

    # ------------------------------------------------------------------ commit

    async def commit(self, ops: Sequence[DbOp], version: int) -> None:
        """Commit on the claim's connection: the session that holds the claim is the only one
        that writes, so a write without the claim cannot happen."""
        if self._pool is None:
            raise StoreUnavailable("the database is closed")
        await self.claim_for(version)
        conn = None
        try:
            async with self._claim_lock:
                conn = self._claim.conn
                if conn is None or conn.is_closed():
                    raise StoreUnavailable(CONNECTION_LOST)
                await self._commit_on(conn, ops, version)
        except StoreInDoubt:
            raise
        except StoreUnavailable:
            if conn is not None and not conn.is_closed():
                raise
            # The claim's session was gone before COMMIT was sent (PostgreSQL restarted, the
            # connection dropped, pg_terminate_backend): nothing of this transaction happened.
            # Take the claim again (checking nobody wrote meanwhile) and try once more, so one
            # dead connection does not fail a write the database could take (issue 15).
            log.warning("the write claim's connection is gone; taking the claim again")
            await self.claim_for(version)
            async with self._claim_lock:
                conn = self._claim.conn
                if conn is None or conn.is_closed():
                    raise StoreUnavailable(CONNECTION_LOST) from None
                await self._commit_on(conn, ops, version)

    async def _commit_on(self, conn: asyncpg.Connection, ops: Sequence[DbOp],
                         version: int) -> None:
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                for op in ops:
                    await _apply(conn, op)
                await conn.execute("UPDATE inventory_state SET version = $1", version)
            except BaseException:
                with contextlib.suppress(Exception):
                    await transaction.rollback()
                raise
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise StoreConflict(f"database constraint: {exc}") from exc
        except _REFUSED as exc:  # before _UNAVAILABLE: the driver's DataError is an InterfaceError
            raise StoreRefused(f"postgresql refused a value: {exc}") from exc
        except _CONFUSED as exc:
            conn.terminate()
            raise _lost(exc) from exc
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise _lost(exc) from exc
        try:
            await transaction.commit()
        except (*_UNAVAILABLE, asyncpg.PostgresError, *_CONFUSED) as exc:
            if isinstance(exc, _CONFUSED):
                conn.terminate()
            # COMMIT was sent; whether it happened only the database knows now
            log.warning("database connection lost during COMMIT",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
            raise StoreInDoubt("the database connection was lost during COMMIT") from exc


async def _apply(conn: asyncpg.Connection, op: DbOp) -> None:
    out = model.format_uuid
    match op:
        case InsertItems(records):
            await conn.copy_records_to_table(
                "data_item", columns=ITEM_COLUMNS, records=[item_db_row(r, out) for r in records]
            )
        case InsertReplicas(records):
            await conn.copy_records_to_table(
                "replica", columns=REPLICA_COLUMNS,
                records=[replica_db_row(r, out) for r in records],
            )
        case InsertStorage(record):
            await conn.execute(
                f"INSERT INTO storage ({_q(STORAGE_COLUMNS)}) VALUES "
                f"({', '.join(f'${i}' for i in range(1, len(STORAGE_COLUMNS) + 1))})",
                *storage_db_row(record),
            )
        case _:
            await generic.apply_postgres(conn, op)
