"""Checks on single values that types cannot express: names, sizes with units, times."""

from __future__ import annotations

import re
from fractions import Fraction

from inventory import model
from inventory.errors import BadRequest
from inventory.storage import paths
from inventory.storage.checksum import normalize as normalize_adler32
from inventory.storage.errors import InvalidPath

MAX_NAME_LENGTH = 1024
_STORAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (U+0080-U+009F)
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
# Sizes, capacities and the sums over them are 64-bit signed columns and numpy int64 arrays:
# a value past this bound would overflow them (a 503 from the database, or a wrapped sum).
MAX_BYTES = 2**63 - 1
# Checksum methods something can verify: a copy checks the adler32 it computes while the bytes
# stream. Any other method would be stored and then never checked, so it is refused.
CHECKSUM_METHODS = (model.DEFAULT_CHECKSUM_METHOD,)


def item_name(name: str, field: str) -> str:
    """An item name is also a path under every storage root: it must not be able to leave it,
    and whatever a storage would refuse at the first copy (``storage.paths.check_name``: a
    backslash, a ``.dlm-`` segment, a segment over 255 bytes) is refused here, at registration.
    C1 controls and bidirectional overrides are refused as in ``check_name``: they make a name
    display as another one."""
    if not name:
        raise BadRequest("must not be empty", field)
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(f"longer than {MAX_NAME_LENGTH} characters", field)
    # Nearly every name passes check_name's few C-level scans: the rules one by one below only
    # run for the rest (a bad name, to say what is wrong, or a non-ASCII one). A bulk inject
    # checks each name twice, before the stat and in the writer.
    if not paths.fast_name(name):
        _name_rules(name, field)
    if paths.VERSION_MARK in name and paths.is_versioned_name(name):
        raise BadRequest(f"names ending in '{paths.VERSION_MARK}<N>' are where version N of "
                         f"another name is stored ({name!r} is version "
                         f"{paths.default_owners(name)[1][1]} of "
                         f"{paths.default_owners(name)[1][0]!r}): choose another name", field)
    return name


def _name_rules(name: str, field: str) -> None:
    """``item_name``'s rules one by one, in the words of the first one ``name`` breaks."""
    if _CONTROL.search(name):
        raise BadRequest("must not contain control characters (C0, DEL or C1)", field)
    if _BIDI.search(name):
        raise BadRequest("must not contain bidirectional override or isolate characters "
                         "(U+202A-U+202E, U+2066-U+2069)", field)
    if name.startswith("/"):
        raise BadRequest("must be relative (no leading '/')", field)
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise BadRequest(f"must not contain an empty, '.' or '..' path segment: {name!r}",
                             field)
    try:
        paths.check_name(name)
    except InvalidPath as exc:
        raise BadRequest(exc.message, field) from None


NUL_REFUSED = "must not contain a NUL character (U+0000): the database cannot store it"


def no_nul(value: str | None, field: str) -> None:
    """PostgreSQL text cannot hold U+0000: a NUL let through failed the commit of every write
    grouped with it (issue 16). A substring test, not a msgspec pattern: it runs on every item
    of a batch."""
    if value is not None and "\x00" in value:
        raise BadRequest(NUL_REFUSED, field)


def storage_root(kind: str, root: str, field: str = "root") -> str:
    """A storage root in its one normal form, or a 400: a root is compared with every other
    storage's (no two may overlap) and shown in tables and warnings, so ``/d/x/``, ``/d//x`` and
    ``/d/x`` must be one root, and a newline or NUL must not reach the file system or a log line.
    ``..`` is refused rather than resolved (a symlink on the way would change what it means), and
    so is ``/`` itself: the whole file system is never one storage."""
    if _CONTROL.search(root) or _BIDI.search(root):
        raise BadRequest("must not contain control or bidirectional override characters", field)
    if kind == "posix":
        if not root.startswith("/"):
            raise BadRequest("a posix root must be an absolute directory path", field)
        parts = [p for p in root.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise BadRequest(f"must not contain a '..' segment: {root!r}", field)
        if not parts:
            raise BadRequest("the file system root '/' cannot be a storage root: give the "
                             "directory the storage's files live in", field)
        return "/" + "/".join(parts)
    return root


def storage_name(name: str, field: str) -> str:
    if not _STORAGE_NAME.match(name):
        raise BadRequest("must be 1-64 characters of letters, digits, '_', '.', '-', "
                         "starting with a letter or digit", field)
    return name


def byte_size(value: int | str, field: str) -> int:
    """Bytes from an int or a string with a unit (``500 TB``, ``2 GiB``), exactly (no float
    rounding: ``1.1 PB`` is 1_100_000_000_000_000) and within int64."""
    if isinstance(value, int):
        count = value
    else:
        match = _SIZE.match(value)
        unit = match.group(2).upper() if match else None
        if not match or unit not in _UNITS:
            raise BadRequest(f"expected bytes as an integer or with a unit like '500 TB' or "
                             f"'2 GiB', got {value!r}", field)
        count = int(Fraction(match.group(1)) * _UNITS[unit])
    if not 0 <= count <= MAX_BYTES:
        raise BadRequest(f"must be 0 to {MAX_BYTES} bytes (a signed 64-bit integer), "
                         f"got {value!r}", field)
    return count


def checksum(value: str | None, method: str | None, where: str = ""
             ) -> tuple[str | None, str | None]:
    """A client's checksum and method, checked and in canonical form: the method is one that
    can be verified (``adler32``, the default when a checksum is given), the checksum is 1-8 hex
    digits, kept lowercase and zero-padded. Refused here, a malformed checksum cannot fail every
    later copy of the item. ``where`` prefixes the field (``items[3].``)."""
    if method is not None:
        method = method.strip().lower()
        if method not in CHECKSUM_METHODS:
            raise BadRequest(f"unsupported checksum method {method!r}; expected "
                             f"{', '.join(CHECKSUM_METHODS)}", where + "checksum_method")
    if value is None:
        return None, method
    try:
        value = normalize_adler32(value)
    except ValueError:
        raise BadRequest(f"not an adler32 checksum (1-8 hex digits): {value!r}",
                         where + "checksum") from None
    return value, method or model.DEFAULT_CHECKSUM_METHOD


# Times the server can write back as ISO-8601: years 1 to 9999. A time outside would be stored
# and then fail every answer that shows it, so it is refused on the way in.
MIN_TIME = -62135596800.0  # 0001-01-01T00:00:00Z
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z


def time_value(text: str, field: str) -> float:
    try:
        value = model.parse_time(text)
    except ValueError:
        raise BadRequest(f"expected an ISO-8601 time like '2026-12-31T00:00:00Z', got {text!r}",
                         field) from None
    if not MIN_TIME <= value <= MAX_TIME:
        raise BadRequest(f"must be between years 1 and 9999 UTC, got {text!r}", field)
    return value


def epoch_value(value: float, field: str) -> float:
    """Epoch seconds that can be shown as ISO-8601 (not NaN, not past year 9999)."""
    if not MIN_TIME <= value <= MAX_TIME:
        raise BadRequest(f"must be epoch seconds between years 1 and 9999, got {value!r}", field)
    return value


def expiry_after(now: float, lifetime: float, field: str) -> float:
    """The expiry ``lifetime`` seconds from ``now``, refused when past year 9999."""
    if not now + lifetime <= MAX_TIME:  # also refuses inf and NaN from msgpack
        raise BadRequest(f"a lifetime of {lifetime:g} seconds ends after year 9999", field)
    return now + lifetime


def uuid_value(text: str, field: str) -> int:
    try:
        return model.parse_uuid(text)
    except ValueError:
        raise BadRequest(f"expected a UUID, got {text!r}", field) from None
