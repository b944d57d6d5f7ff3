"""Storage backends (POSIX directories, S3 buckets) behind one interface, and verified copies.

The file-operations engine needs only these names::

    backend = backend_for(storage.kind, storage.root, storage.config)
    await copy(src_backend, src_path, dst_backend, dst_path,
               expected_size=item.size, expected_checksum=item.checksum)
    await backend.delete(path); await backend.stat(path); backend.list(prefix)

Errors are ``StorageError`` subclasses (``errors``); see docs/storage.md.
"""

from inventory.storage.base import Backend, Entry, ObjectInfo, Reader, Space, WriteResult
from inventory.storage.checksum import ALGORITHM, Adler32, adler32_of
from inventory.storage.errors import (
    BucketMissing,
    ChecksumMismatch,
    ConfigError,
    IntegrityError,
    InvalidPath,
    NotFound,
    PathConflict,
    PermissionDenied,
    SizeMismatch,
    StorageError,
    StorageFull,
    Unreachable,
    UploadLost,
)
from inventory.storage.factory import backend_for
from inventory.storage.paths import check_name
from inventory.storage.posix import PosixBackend
from inventory.storage.s3 import S3Backend
from inventory.storage.s3client import S3Settings
from inventory.storage.transfer import CopyResult, copy

__all__ = [
    "ALGORITHM", "Adler32", "Backend", "BucketMissing", "ChecksumMismatch", "ConfigError",
    "CopyResult", "Entry",
    "IntegrityError", "InvalidPath", "NotFound", "ObjectInfo", "PathConflict",
    "PermissionDenied", "PosixBackend", "Reader", "S3Backend", "S3Settings", "SizeMismatch",
    "Space", "StorageError", "StorageFull", "Unreachable", "UploadLost", "WriteResult",
    "adler32_of",
    "backend_for", "check_name", "copy",
]
