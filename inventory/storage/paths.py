"""Item names to storage paths, safely.

An item name is relative and ``/``-separated, like an S3 key: it must not be able to name
anything outside the storage root. Rather than resolve and compare afterwards (which a symlink
or a ``..`` in the right place defeats), a name is checked segment by segment before it is
joined: no empty, ``.`` or ``..`` segments, no leading ``/``, no NUL or control characters (C0,
DEL and C1), no bidirectional override or isolate characters (they make a listed name read as
another: U+202A-U+202E, U+2066-U+2069), no backslashes (a separator elsewhere), no segment longer
than 255 bytes (the POSIX limit), and no segment in the ``.dlm-`` namespace that backends use for
temporary files. Spaces and any other printable Unicode are fine.
"""

from __future__ import annotations

import re
from typing import Protocol

from inventory.storage.errors import InvalidPath

RESERVED_PREFIX = ".dlm-"
MAX_NAME_BYTES = 1024  # the S3 key limit; POSIX limits each segment to 255 bytes
MAX_SEGMENT_BYTES = 255


# C0 controls, DEL, C1 controls (U+0080-U+009F), bidi embeddings/overrides and isolates, and
# the backslash. One pattern: a C-level search instead of a Python loop per character.
FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\\]")


def _bad_char(name: str) -> str | None:
    match = FORBIDDEN_CHARS.search(name)
    return None if match is None else match.group()


# An empty, '.' or '..' segment, or one in the reserved namespace, anywhere in a name.
_BAD_SEGMENT = re.compile(r"(?:^|/)(?:\.{0,2}(?:/|$)|" + re.escape(RESERVED_PREFIX) + ")")


def fast_name(name: str) -> bool:
    """Whether ``name`` is a safe item path, in a few C-level scans instead of a Python loop
    over its segments: ``check_name``'s fast path (a bulk ingest checks every name twice,
    before the stat and in the writer). Never True for a name ``check_name`` refuses; False
    for non-ASCII names, which take the full check."""
    if (type(name) is not str or not name or name[0] == "/"
            or FORBIDDEN_CHARS.search(name) is not None or _BAD_SEGMENT.search(name) is not None
            or not name.isascii()):
        return False  # non-ASCII names take the full check (encoding, bytes per segment)
    if len(name) <= MAX_SEGMENT_BYTES:
        return True
    return len(name) <= MAX_NAME_BYTES and all(
        len(segment) <= MAX_SEGMENT_BYTES for segment in name.split("/"))


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe relative item path, else raise ``InvalidPath``."""
    if fast_name(name):  # nearly every name: the full check below only says what is wrong
        return name
    return _check_name_fully(name)


def _check_name_fully(name: str) -> str:
    """``check_name`` rule by rule, naming the first one ``name`` breaks."""
    if not isinstance(name, str) or not name:
        raise InvalidPath("item path is empty", path=str(name))
    if name.startswith("/"):
        raise InvalidPath("item path must be relative (starts with '/')", path=name)
    if (ch := _bad_char(name)) is not None:
        raise InvalidPath(f"item path contains a forbidden character {ch!r}", path=name)
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath("item path is not valid Unicode", path=name) from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidPath(f"item path is longer than {MAX_NAME_BYTES} bytes", path=name)
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidPath(f"item path has an empty, '.' or '..' segment: {segment!r}",
                              path=name)
        if segment.startswith(RESERVED_PREFIX):
            raise InvalidPath(f"segments starting with {RESERVED_PREFIX!r} are reserved",
                              path=name)
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidPath(f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes",
                              path=name)
    return name


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a safe listing prefix ('' lists everything).

    A prefix is a string prefix of item paths (S3 semantics): ``"run1/"`` or ``"run1/file-0"``.
    Every complete segment follows the item-name rules; a partial last segment may be anything
    printable.
    """
    if prefix == "":
        return prefix
    head, _, _last = prefix.rpartition("/")
    if prefix.startswith("/") or _bad_char(prefix) is not None:
        raise InvalidPath("listing prefix must be relative and printable", path=prefix)
    if head:
        check_name(head)
    if _last in (".", ".."):
        raise InvalidPath("listing prefix ends in '.' or '..'", path=prefix)
    return prefix


def join_key(prefix: str, name: str) -> str:
    """The S3 key of ``name`` under a bucket prefix ('' or 'a/b')."""
    return f"{prefix}/{check_name(name)}" if prefix else check_name(name)


# --- where a replica lives ---------------------------------------------------------------------
# Version 1 of a name keeps the bare name (the layout every existing storage has); version N >= 2
# lives at ``{name}@v{N}``, so two versions of one name never share a file. A name that itself
# ends in ``@v<digits>`` could still meet another item's default path: the writer refuses that
# registration (inventory/writes.py), it is not silently shared.

VERSION_MARK = "@v"
# ``{name}@v{N}`` with N >= 2 written the way default_path writes it (no leading zero)
_VERSIONED = re.compile(r"(.+)@v([2-9]|[1-9][0-9]+)")


def default_path(name: str, version: int) -> str:
    """The path of an item's copy relative to a storage root when no uri was registered."""
    return name if version == 1 else f"{name}{VERSION_MARK}{version}"


def storage_prefix(kind: str, root: str) -> str:
    """The text every uri of a storage starts with: ``/root/`` for POSIX, ``s3://bucket/p/``
    for S3 (a uri is what users and other tools see; a path is relative to the root)."""
    root = root.rstrip("/")
    return f"s3://{root}/" if kind == "s3" else f"{root}/"


def uri_of(kind: str, root: str, path: str) -> str:
    return storage_prefix(kind, root) + path


def path_of_uri(kind: str, root: str, uri: str) -> str:
    """The checked relative path of ``uri`` on a storage; a relative uri is taken as relative
    to the root. Raises ``InvalidPath`` for a uri outside the root or bucket prefix, or a path
    the backends would refuse (``check_name``)."""
    prefix = storage_prefix(kind, root)
    if uri.startswith(prefix):
        relative = uri[len(prefix):]
    elif uri.startswith("/") or "://" in uri:
        raise InvalidPath(f"uri is outside the storage root {prefix!r}", path=uri)
    else:
        relative = uri
    return check_name(relative)


class Located(Protocol):
    """What ``replica_path`` needs of a storage (``Storage``, ``StorageRecord``, a snapshot's
    storage)."""

    kind: str
    root: str


def replica_path(storage: Located, name: str, version: int, uri: str | None) -> str:
    """Where a replica lives, relative to its storage root: its registered uri, else the
    default path of (name, version). The one answer every user of a replica's location (copies,
    deletions, consistency listings, the API and the dashboard) shares. Raises ``InvalidPath``
    for a uri outside the storage (a registration older than uri validation)."""
    if uri is None:
        return default_path(name, version)
    return path_of_uri(storage.kind, storage.root, uri)


def replica_uri(storage: Located, name: str, version: int, uri: str | None) -> str:
    """The uri users see for a replica: as registered, else the default path's uri."""
    if uri is not None:
        return uri
    return uri_of(storage.kind, storage.root, default_path(name, version))


def default_owners(path: str) -> list[tuple[str, int]]:
    """Every (name, version) whose default path is ``path``: the layout is invertible, so a
    path has at most two: ``(path, 1)``, and ``(X, N)`` when the path reads ``X@vN`` (N >= 2).
    New names of that form are refused (``is_versioned_name``), so the second is the only one
    but for items registered before the layout existed."""
    owners = [(path, 1)]
    match = _VERSIONED.fullmatch(path) if VERSION_MARK in path else None
    if match is not None and not match.group(1).endswith("/"):
        owners.append((match.group(1), int(match.group(2))))
    return owners


def is_versioned_name(name: str) -> bool:
    """Whether ``name`` reads like the default path of another name's version N >= 2
    (``X@v2``): such an item would share its default path with version 2 of ``X``."""
    return len(default_owners(name)) > 1
