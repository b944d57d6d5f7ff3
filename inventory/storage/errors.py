"""Storage errors: what went wrong on a storage, in terms the file-operations engine acts on.

Every backend translates its native failures (``OSError`` errnos, S3 error codes, connection
errors) into this small hierarchy, so the engine decides with one ``except`` per case and never
looks at errnos or botocore codes. ``retryable`` says whether the same operation may succeed
later without anyone changing anything (a server coming back, space being freed); the engine
still chooses its own backoff and limits. The classes are generated from one table, as in
``inventory.errors``.
"""

from __future__ import annotations

from typing import Literal

Side = Literal["source", "target"]


class StorageError(Exception):
    """A storage operation failed; ``path`` is the item path on that storage when known."""

    code = "storage_error"
    retryable = False
    # Which storage of a copy raised it, when the code that called it knows (``tag``): the
    # engine names and charges that one (a symlink planted on the source is the source's).
    side: Side | None = None

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def to_json(self) -> dict[str, object]:
        """The error as recorded in an operation's ``last_error``."""
        return {"code": self.code, "message": self.message, "path": self.path,
                "retryable": self.retryable}


def tag(exc: StorageError, side: Side) -> StorageError:
    """Mark ``exc`` as raised by the ``side`` storage of a copy, unless already marked."""
    if exc.side is None:
        exc.side = side
    return exc


def _error(name: str, code: str, retryable: bool, doc: str,
           base: type[StorageError] = StorageError) -> type[StorageError]:
    return type(name, (base,), {"code": code, "retryable": retryable, "__doc__": doc})


NotFound = _error("NotFound", "not_found", False, "The object (or bucket) does not exist.")
StorageFull = _error("StorageFull", "storage_full", True,
                     "No space or quota left on the target; may succeed once space is freed.")
PermissionDenied = _error("PermissionDenied", "permission_denied", False,
                          "The storage refuses the operation: read-only, ACL, bad credentials.")
Unreachable = _error("Unreachable", "unreachable", True,
                     "The storage does not answer (connection refused or reset, timeout, "
                     "missing mount); nothing partial became visible.")
BucketMissing = _error("BucketMissing", "no_bucket", True,
                       "The bucket does not exist (not created yet, deleted, a wrong root). Like a "
                       "POSIX root that is not mounted it says nothing of the objects in it (so "
                       "it is no ``NotFound``), and a later attempt may succeed once it exists.",
                       Unreachable)
UploadLost = _error("UploadLost", "upload_lost", True,
                    "The multipart upload being written is gone (the server restarted and lost "
                    "it, or it was aborted): a new attempt starts the upload over.")
InvalidPath = _error("InvalidPath", "invalid_path", False,
                     "The item name cannot be mapped safely under the storage root.")
ThroughSymlink = _error("ThroughSymlink", "invalid_path", False,
                       "The path reaches the file through a symlink below the storage root "
                       "(the file or a directory on the way): a replica's file must be a "
                       "regular file reached without one, or a deletion or copy could act on "
                       "another item's file.", InvalidPath)
PathConflict = _error("PathConflict", "path_conflict", False,
                      "Something else is in the way of the path (a file where a directory "
                      "must be, or the reverse).")
ConfigError = _error("ConfigError", "config_error", False,
                     "The storage's kind, root or config cannot make a backend.")


class IntegrityError(StorageError):
    """Data did not match what was expected; nothing was made visible at the target.

    ``side`` says which copy is wrong: ``"source"`` when the bytes read from the source (or the
    source's recorded size/checksum) differ from the expected values, so the source replica is
    suspect; ``"target"`` when the target stored something other than what was sent.
    """

    code = "integrity"
    retryable = True

    def __init__(self, message: str, *, side: Side, expected: str | int,
                 actual: str | int, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.side = side
        self.expected = expected
        self.actual = actual

    def to_json(self) -> dict[str, object]:
        body = super().to_json()
        body.update(side=self.side, expected=self.expected, actual=self.actual)
        return body


SizeMismatch = _error("SizeMismatch", "size_mismatch", True,
                      "The size differs from the expected size.", IntegrityError)
ChecksumMismatch = _error("ChecksumMismatch", "checksum_mismatch", True,
                          "The checksum differs from the expected checksum.", IntegrityError)
