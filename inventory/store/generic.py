"""SQL for the generic operations (upserts and deletes by key), one function per database.

The store-specific modules keep the bulk paths (COPY, executemany of inserts); everything that
changes an existing row goes through here, so both databases run the same statements.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from inventory.objects import TABLES
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


def load_sqlite_rows(conn: sqlite3.Connection, inventory: Any, uuid_in,
                     tables: tuple[type, ...] = TABLES) -> None:
    """Load the small tables (tokens, requests, operations, cycles) into memory."""
    for cls in tables:
        sql = f'SELECT {_names(cls.columns())} FROM "{cls.table}"'
        inventory.load_objects(cls.from_db(row, uuid_in) for row in conn.execute(sql))


async def load_postgres_rows(conn: Any, inventory: Any, tables: tuple[type, ...] = TABLES
                             ) -> None:
    for cls in tables:
        sql = f'SELECT {_names(cls.columns())} FROM "{cls.table}"'
        inventory.load_objects(cls.from_db(row, _pg_uuid) for row in await conn.fetch(sql))


def _pg_uuid(value: Any) -> int:
    return value.int
