"""SQL for the generic operations (upserts and deletes by key), one function per database.

The store-specific modules keep the bulk paths (COPY, executemany of inserts); everything that
changes an existing row goes through here, so both databases run the same statements.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from inventory import model
from inventory.objects import TABLES, Operation
from inventory.store.ops import DeleteRows, InsertRows, UpsertRows


def _names(columns: tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def upsert_sql(op: UpsertRows, placeholder) -> str:
    values = ", ".join(placeholder(i) for i in range(1, len(op.columns) + 1))
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in op.columns if c not in op.key)
    conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return (f'INSERT INTO "{op.table}" ({_names(op.columns)}) VALUES ({values}) '
            f"ON CONFLICT ({_names(op.key)}) {conflict}")


def insert_sql(op: InsertRows, placeholder) -> str:
    values = ", ".join(placeholder(i) for i in range(1, len(op.columns) + 1))
    return f'INSERT INTO "{op.table}" ({_names(op.columns)}) VALUES ({values})'


def delete_sql(op: DeleteRows, placeholder) -> str:
    where = " AND ".join(f'"{c}" = {placeholder(i)}' for i, c in enumerate(op.key, 1))
    return f'DELETE FROM "{op.table}" WHERE {where}'


def apply_sqlite(conn: sqlite3.Connection, op: Any) -> None:
    match op:
        case InsertRows():
            conn.executemany(insert_sql(op, lambda i: "?"), op.rows)
        case UpsertRows():
            conn.executemany(upsert_sql(op, lambda i: "?"), op.rows)
        case DeleteRows():
            conn.executemany(delete_sql(op, lambda i: "?"), op.rows)
        case _:
            raise TypeError(f"unknown database operation {op!r}")


# Past this many rows an upsert goes through COPY into a temporary table and one set-based
# INSERT ... SELECT ... ON CONFLICT (NOTES.md: ~130k rows/s against ~10-20k with executemany).
COPY_UPSERT_ROWS = 500


async def apply_postgres(conn: Any, op: Any) -> None:
    match op:
        case InsertRows() if len(op.rows) >= COPY_UPSERT_ROWS:
            await conn.copy_records_to_table(op.table, records=op.rows, columns=op.columns)
        case InsertRows():
            await conn.executemany(insert_sql(op, lambda i: f"${i}"), op.rows)
        case UpsertRows() if len(op.rows) >= COPY_UPSERT_ROWS:
            await _copy_upsert(conn, op)
        case UpsertRows() if len(op.rows) == 1:
            # one row (a cycle's record, its 100 MB decisions): one bind, not executemany's
            # pipeline, which copied a large value through its growing buffers (~1 s at 100 MB)
            await conn.execute(upsert_sql(op, lambda i: f"${i}"), *op.rows[0])
        case UpsertRows():
            await conn.executemany(upsert_sql(op, lambda i: f"${i}"), op.rows)
        case DeleteRows():
            await conn.executemany(delete_sql(op, lambda i: f"${i}"), op.rows)
        case _:
            raise TypeError(f"unknown database operation {op!r}")


async def _copy_upsert(conn: Any, op: UpsertRows) -> None:
    staging = f"dlm_upsert_{op.table}"
    names = _names(op.columns)
    await conn.execute(
        f'CREATE TEMPORARY TABLE IF NOT EXISTS "{staging}" '
        f'(LIKE "{op.table}" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS')
    await conn.copy_records_to_table(staging, records=op.rows, columns=op.columns)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in op.columns if c not in op.key)
    conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    await conn.execute(f'INSERT INTO "{op.table}" ({names}) SELECT {names} FROM "{staging}" '
                       f"ON CONFLICT ({_names(op.key)}) {conflict}")


def insert(objects: list, uuid_out=None) -> InsertRows:
    """The InsertRows writing these new objects (all of one ``objects.Row`` class)."""
    cls = type(objects[0])
    rows = [o.db_row() if uuid_out is None else o.db_row(uuid_out) for o in objects]
    return InsertRows(cls.table, cls.columns(), rows)


def upsert(objects: list, uuid_out=None) -> UpsertRows:
    """The UpsertRows writing these objects (all of one ``objects.Row`` class)."""
    cls = type(objects[0])
    rows = [o.db_row() if uuid_out is None else o.db_row(uuid_out) for o in objects]
    return UpsertRows(cls.table, cls.columns(), cls.key, rows)


# The finished states, spelled as in the partial index operation_finished (migration 010):
# both databases use a partial index only for a query that repeats its condition.
FINISHED = "state IN ('done', 'failed', 'cancelled')"


def _queries(cls: type, inventory: Any, placeholder) -> list[tuple[str, tuple]]:
    """The SELECTs loading table ``cls``: operations without those that finished more than the
    inventory's retention ago (they stay in the database, read by the history queries), and
    a query that says whether any was left out."""
    select = f'SELECT {_names(cls.columns())} FROM "{cls.table}"'
    if cls is not Operation or inventory.retention is None:
        return [(select, ())]
    cutoff = (model.now() - inventory.retention,)
    return [(f"{select} WHERE state IN ('queued', 'running')", ()),
            (f"{select} WHERE {FINISHED} AND updated >= {placeholder(1)}", cutoff),
            (f"SELECT 1 FROM operation WHERE {FINISHED} AND updated < {placeholder(1)} LIMIT 1",
             cutoff)]


def load_sqlite_rows(conn: sqlite3.Connection, inventory: Any, uuid_in,
                     tables: tuple[type, ...] = TABLES) -> None:
    """Load the small tables (tokens, requests, operations, cycles) into memory."""
    for cls in tables:
        for index, (sql, args) in enumerate(_queries(cls, inventory, lambda i: "?")):
            if index == 2:
                inventory.operations_in_db_only = conn.execute(sql, args).fetchone() is not None
                continue
            inventory.load_objects(cls.from_db(row, uuid_in) for row in conn.execute(sql, args))


async def load_postgres_rows(conn: Any, inventory: Any, tables: tuple[type, ...] = TABLES
                             ) -> None:
    for cls in tables:
        for index, (sql, args) in enumerate(_queries(cls, inventory, lambda i: f"${i}")):
            if index == 2:
                inventory.operations_in_db_only = await conn.fetchval(sql, *args) is not None
                continue
            inventory.load_objects(cls.from_db(row, _pg_uuid)
                                   for row in await conn.fetch(sql, *args))


def operations_query(placeholder, *, states: tuple[str, ...] = (), kind: str | None = None,
                     storage_id: int | None = None, oid: int | None = None, after: int = 0,
                     before: int | None = None, limit: int = 100, newest_first: bool = False,
                     uuid_out=str) -> tuple[str, list]:
    """A page of operations in id order (``newest_first``: descending), read-only: with the
    indexes of migration 010 a page by state costs time in proportion to the page."""
    args: list = []

    def arg(value: Any) -> str:
        args.append(value)
        return placeholder(len(args))

    where = [f"id > {arg(after)}"]
    if before is not None:
        where.append(f"id < {arg(before)}")
    if states:
        where.append(f"state IN ({', '.join(arg(s) for s in states)})")
    if kind is not None:
        where.append(f"kind = {arg(kind)}")
    if storage_id is not None:
        p = arg(storage_id)
        where.append(f"(target_id = {p} OR source_id = {p})")
    if oid is not None:
        where.append(f"oid = {arg(uuid_out(oid))}")
    order = "DESC" if newest_first else "ASC"
    return (f'SELECT {_names(Operation.columns())} FROM operation WHERE {" AND ".join(where)} '
            f"ORDER BY id {order} LIMIT {arg(limit)}", args)


def _pg_uuid(value: Any) -> int:
    return value.int
