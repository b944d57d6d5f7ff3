"""Build the backend for a registered storage from its ``kind``, ``root`` and ``config``.

This is the only place that knows which class serves which kind, so the engine and the REST
layer (which can call it to validate a storage before registering it) stay kind-agnostic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from inventory.ingest import VERIFY_INGEST
from inventory.storage.base import Backend
from inventory.storage.errors import ConfigError
from inventory.storage.posix import PosixBackend
from inventory.storage.s3 import S3Backend
from inventory.storage.s3client import S3Settings

_POSIX_KEYS = {"fsync": bool, "threads": int, "chunk_size": int, "copy_method": str,
               "writeback": int}
_POSIX_MIN = {"threads": 1, "chunk_size": 1, "writeback": 0}


def _check_posix(root: str, config: Mapping[str, Any]) -> None:
    if not os.path.isabs(root):
        raise ConfigError(f"posix root must be an absolute directory path, not {root!r}")
    for key, value in config.items():
        kind = _POSIX_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"unknown posix config key {key!r}; allowed: {sorted(_POSIX_KEYS)}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"posix config {key!r} must be {kind.__name__}")
        if kind is int and value < _POSIX_MIN[key]:
            raise ConfigError(f"posix config {key!r} must be at least {_POSIX_MIN[key]}")
        if key == "copy_method" and value not in ("kernel", "read"):
            raise ConfigError(f"posix config 'copy_method' must be 'kernel' or 'read', "
                              f"not {value!r}")


def _posix(root: str, config: Mapping[str, Any]) -> PosixBackend:
    _check_posix(root, config)
    try:
        return PosixBackend(root, **config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_config(kind: str, root: str, config: Mapping[str, Any] | None) -> None:
    """Raise ``ConfigError`` for a config the backend would refuse, without building one: a
    storage registered with a typo (``endpoint`` for ``endpoint_url``) would otherwise be
    accepted and fail every later inject and copy with an internal error."""
    config = dict(config or {})
    if not isinstance(config.pop(VERIFY_INGEST, True), bool):
        raise ConfigError(f"{VERIFY_INGEST} must be true or false")
    if kind == "posix":
        _check_posix(root, config)
    elif kind == "s3":
        S3Settings.parse(root, config)
    else:
        raise ConfigError(f"unknown storage kind {kind!r}; expected 'posix' or 's3'")


def backend_for(kind: str, root: str, config: Mapping[str, Any] | None = None) -> Backend:
    """A new backend for the storage; the caller owns it and must ``await backend.close()``."""
    config = dict(config or {})
    # Not a backend setting: whether ingest looks at the payload (inventory.ingest).
    if not isinstance(config.pop(VERIFY_INGEST, True), bool):
        raise ConfigError(f"{VERIFY_INGEST} must be true or false")
    if kind == "posix":
        return _posix(root, config)
    if kind == "s3":
        return S3Backend.from_storage(root, config)
    raise ConfigError(f"unknown storage kind {kind!r}; expected 'posix' or 's3'")
