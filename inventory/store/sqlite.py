"""The embedded default store: one SQLite file in WAL mode, written from one dedicated thread.

SQLite calls block, so every call runs on a single worker thread (one connection, used by one
thread only); the event loop only awaits its futures. ``synchronous=FULL`` makes a commit durable
against power loss, not only against a killed process; NOTES.md measured no bulk-insert cost for it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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
from inventory.store.claim import FileClaim, make_directory
from inventory.store.ops import DbOp, InsertItems, InsertReplicas, InsertStorage

T = TypeVar("T")
_FETCH = 10_000  # rows per fetch: small batches leave fewer holes in the heap


def _q(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _uuid_in(text: str) -> int:
    return int(text.replace("-", ""), 16)


_INSERT_ITEM = (f"INSERT INTO data_item ({_q(ITEM_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(ITEM_COLUMNS))})")
_INSERT_REPLICA = (f"INSERT INTO replica ({_q(REPLICA_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(REPLICA_COLUMNS))})")
_INSERT_STORAGE = (f"INSERT INTO storage ({_q(STORAGE_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(STORAGE_COLUMNS))})")


class SQLiteStore(Store):
    backend = "sqlite"
    dialect = "sqlite"
    claim_lost_why = "its database file was replaced or removed"

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._claim = FileClaim(path, self.describe())
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlm-sqlite")

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # ------------------------------------------------------------------ claim / open / migrate

    async def claim(self) -> None:
        await self._run(self._claim.take)

    def holds_claim(self) -> bool:
        return self._claim.held()

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        make_directory(os.path.dirname(os.path.abspath(self.path)))
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:  # garbage, or another program's encrypted file
            conn.close()
            raise StoreError(f"{self.path} is not a usable SQLite database ({exc}): restore it "
                             f"from a backup, or move it away to start an empty one") from exc
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        found = self._schema_version()
        known = schema.migrations("sqlite")
        check_schema_version(found, len(known), self.path)
        for migration in known[found:]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(migration.sql):
                    conn.execute(statement)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version VALUES (?)", (migration.version,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if found < len(known):
            self._report_path_repairs()

    def _report_path_repairs(self) -> None:
        """Log and forget what migration 008 moved (``log_path_repairs``)."""
        conn = self._conn
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'path_repair'").fetchone():
            conn.execute("BEGIN IMMEDIATE")
            try:
                log_path_repairs(conn.execute(PATH_REPAIRS).fetchall())
                conn.execute("DELETE FROM path_repair")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _schema_version(self) -> int:
        row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return row[0] or 0

    async def schema_version(self) -> int:
        return await self._run(self._schema_version)

    async def cycle_decisions(self, cycle_id: int) -> bytes | None:
        def read() -> bytes | None:
            row = self._conn.execute("SELECT decisions FROM cycle_report WHERE cycle_id = ?",
                                     (cycle_id,)).fetchone()
            return None if row is None else bytes(row[0])

        return await self._run(read)

    async def operations(self, **filters: Any) -> list[Operation]:
        sql, args = generic.operations_query(lambda i: f"?{i}", uuid_out=model.format_uuid,
                                             **filters)

        def read() -> list[Operation]:
            try:
                return [Operation.from_db(row, _uuid_in)
                        for row in self._conn.execute(sql, args)]
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite: {exc}") from exc

        return await self._run(read)

    async def committed_version(self) -> int:
        def read() -> int:
            try:
                return self._conn.execute("SELECT version FROM inventory_state").fetchone()[0]
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite: {exc}") from exc

        return await self._run(read)

    async def stored_tokens(self) -> list[Token]:
        def read() -> list[Token]:
            found = Inventory()
            generic.load_sqlite_rows(self._conn, found, _uuid_in, (Token,))
            return list(found.tokens.values())

        return await self._run(read)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._thread.shutdown(wait=True)
        self._claim.release()  # after the last write

    # ------------------------------------------------------------------ load

    async def load(self, inventory: Inventory) -> None:
        with loading():
            await self._run(self._load, inventory)

    def _load(self, inv: Inventory) -> None:
        conn = self._conn
        inv.version = conn.execute("SELECT version FROM inventory_state").fetchone()[0]
        for row in conn.execute(f"SELECT {_q(STORAGE_COLUMNS)} FROM storage ORDER BY id"):
            inv.add_storage(storage_from_db(row))
        shared: dict = {}  # equal strings of the load made one object
        inv.defer_indexes()  # sorted once at the end (settle_indexes), not row by row
        # Items without a parent first, then members in creation order (a parent always exists
        # before its members).
        for where in ("parent_oid IS NULL", "parent_oid IS NOT NULL ORDER BY created"):
            cur = conn.execute(f"SELECT {_q(ITEM_COLUMNS)} FROM data_item WHERE {where}")
            while rows := cur.fetchmany(_FETCH):
                inv.add_items(item_records(rows, _uuid_in, shared))
        cur = conn.execute(f"SELECT {_q(REPLICA_COLUMNS[1:])} FROM replica ORDER BY rowid")
        while rows := cur.fetchmany(_FETCH):
            inv.add_replicas(replica_records(rows, _uuid_in, shared))
        inv.settle_indexes()
        generic.load_sqlite_rows(conn, inv, _uuid_in)

    # ------------------------------------------------------------------ commit

    async def commit(self, ops: Sequence[DbOp], version: int) -> None:
        await self.claim_for(version)
        try:
            await self._run(self._commit, ops, version)
        except _LockGone:
            # The database file at the path is not the one locked (nothing was written): take
            # the claim again (refused if the file was replaced) and try once more.
            await self.claim_for(version)
            await self._run(self._commit, ops, version)

    def _commit(self, ops: Sequence[DbOp], version: int) -> None:
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("the database is closed")
        if not self._claim.check():
            raise _LockGone(f"the database file {self._claim.db_path} was replaced or removed; "
                            f"writes wait until the claim is taken again")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    _apply(conn, op)
                conn.execute("UPDATE inventory_state SET version = ?", (version,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            raise StoreConflict(f"database constraint: {exc}") from exc
        except (sqlite3.DataError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
                *ENCODING_ERRORS) as exc:
            raise StoreRefused(f"sqlite refused a value: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc


class _LockGone(StoreUnavailable):
    """The database file at the claim's path is not the one this store locked."""


def _apply(conn: sqlite3.Connection, op: DbOp) -> None:
    out = model.format_uuid
    match op:
        case InsertItems(records):
            conn.executemany(_INSERT_ITEM, [item_db_row(r, out) for r in records])
        case InsertReplicas(records):
            conn.executemany(_INSERT_REPLICA, [replica_db_row(r, out) for r in records])
        case InsertStorage(record):
            conn.execute(_INSERT_STORAGE, storage_db_row(record))
        case _:
            generic.apply_sqlite(conn, op)


def _split_sql(script: str) -> list[str]:
    """Statements of a migration file (ours: no semicolons inside literals or bodies)."""
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
