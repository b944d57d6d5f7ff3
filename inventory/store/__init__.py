"""Durable stores behind the in-memory inventory: SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import os

from inventory.store.base import (
    ClaimRefused,
    ClaimStale,
    SchemaError,
    Store,
    StoreConflict,
    StoreError,
    StoreInDoubt,
    StoreRefused,
    StoreUnavailable,
)

__all__ = ["ClaimRefused", "ClaimStale", "SchemaError", "Store", "StoreConflict", "StoreError",
           "StoreInDoubt", "StoreRefused", "StoreUnavailable", "open_store"]


def open_store(db_url: str | None, data_dir: str) -> Store:
    """The store for a ``--db`` URL: ``postgresql://...``, ``sqlite:PATH``, or the default file."""
    if db_url is None or db_url == "":
        from inventory.store.sqlite import SQLiteStore

        return SQLiteStore(os.path.join(data_dir, "inventory.sqlite"))
    if db_url.startswith(("postgresql://", "postgres://")):
        from inventory.store.postgres import PostgresStore

        return PostgresStore(db_url)
    if db_url.startswith("sqlite:"):
        from inventory.store.sqlite import SQLiteStore

        return SQLiteStore(db_url.removeprefix("sqlite:").removeprefix("//"))
    raise ValueError(f"unsupported --db URL {db_url!r}: use postgresql://... or sqlite:PATH")
