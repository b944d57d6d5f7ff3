"""Item metadata: the bounds a client's metadata must keep, and stored metadata made servable.

Metadata is free-form JSON that every answer, snapshot, change feed and read worker encodes
again and again, and that PostgreSQL stores as jsonb. A value one of them cannot carry, once
stored, breaks every reader of it (even after a restart), and a value the database refuses fails
every write committed in the same group. So metadata is checked at input against bounds every
encoder and database can carry:

- integers within signed 64 bits: msgpack carries -2^63..2^64-1, the column snapshot and
  clients in typed languages int64; JSON and jsonb carry any integer. The one range all of
  them carry without loss in both directions is int64 (also the range of sizes);
- finite floats (JSON has no NaN or infinity; msgpack bodies can send them);
- strings without NUL (PostgreSQL text and jsonb refuse U+0000), keys strings;
- only JSON values: no msgpack binary, extension or timestamp values;
- nesting depth, key count, string length and total encoded size bounded (``Limits``): the
  encoders' recursion limits (~1000 levels, less the answer around the metadata) stay out of
  reach, and one item cannot cost every snapshot reader megabytes.

Metadata stored before these bounds (by an older version) is made servable when loaded
(``servable``): integers past int64 are served as floats (what PostgreSQL's jsonb gives back
for a float of 1e19 or more) or, past the float range, as their decimal text, and metadata
nested past ``MAX_STORED_DEPTH`` as its JSON text. The database row stays as it was until the item's
metadata is changed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from inventory.errors import BadRequest

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
# A setting may raise the depth up to this: far below the encoders' recursion limits.
MAX_DEPTH_SETTING = 100
MAX_STORED_DEPTH = MAX_DEPTH_SETTING  # deeper stored metadata is served as text
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one item's metadata (server settings, ``metadata:`` in the YAML file)."""

    max_bytes: int = 64 * 1024  # its compact JSON encoding, UTF-8
    max_depth: int = 32  # objects and arrays nested: the metadata object itself is depth 1
    max_keys: int = 1024  # keys of all its objects together
    max_string: int = 16 * 1024  # characters of one string value
    max_key: int = 256  # characters of one key


LIMITS = Limits()
SETTINGS = tuple(Limits.__dataclass_fields__)


class _Refused(Exception):
    """A value the bounds refuse; ``path`` grows from the value up to the metadata object."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


# A cycle plan's summary (Detox's and Dealer's own, but sent by a client like any body): the same
# JSON-only values, bounded for thousands of storages and rules, not for one item.
SUMMARY_LIMITS = Limits(max_bytes=4 << 20, max_depth=8, max_keys=200_000, max_string=16 * 1024,
                        max_key=1024)


def check(metadata: dict[str, Any], field: str, limits: Limits = LIMITS,
          what: str = "metadata") -> None:
    """BadRequest naming the offending value (``items[3].metadata.a.b[2]``) unless
    ``metadata`` keeps ``limits`` and holds only values every encoder and database carries."""
    try:
        _walk(metadata, 1, limits, [0])
    except _Refused as exc:
        raise BadRequest(exc.message, field + "".join(reversed(exc.path))) from None
    size = len(_encode(metadata))
    if size > limits.max_bytes:
        raise BadRequest(f"{what} is {size} bytes as JSON, more than the "
                         f"{limits.max_bytes} allowed", field)


def _walk(value: Any, depth: int, limits: Limits, keys: list[int]) -> None:
    kind = type(value)
    if kind is str:
        if len(value) > limits.max_string:
            raise _Refused(f"a string of {len(value)} characters; at most "
                           f"{limits.max_string} are allowed")
        if "\x00" in value:
            raise _Refused("must not contain a NUL character (U+0000): the database cannot "
                           "store it")
    elif kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise _Refused(f"integer {value} is outside the signed 64-bit range "
                           f"({INT_MIN} to {INT_MAX}); send larger numbers as strings")
    elif kind is float:
        if not math.isfinite(value):
            raise _Refused(f"{value} cannot be stored: JSON has no NaN or infinity")
    elif kind is dict or kind is list:
        if depth > limits.max_depth:
            raise _Refused(f"nested more than {limits.max_depth} levels deep")
        if kind is list:
            for index, item in enumerate(value):
                try:
                    _walk(item, depth + 1, limits, keys)
                except _Refused as exc:
                    exc.path.append(f"[{index}]")
                    raise
            return
        keys[0] += len(value)
        if keys[0] > limits.max_keys:
            raise _Refused(f"more than {limits.max_keys} keys in all its objects together")
        for key, item in value.items():
            try:
                _key(key, limits)
                _walk(item, depth + 1, limits, keys)
            except _Refused as exc:
                exc.path.append(f".{key}")
                raise
    elif value is not None and kind is not bool:
        what = "binary (bytes)" if kind is bytes else type(value).__name__
        raise _Refused(f"{what} values cannot be stored: only JSON values are kept "
                       f"(objects, arrays, strings, numbers, true, false, null)")


def _key(key: Any, limits: Limits) -> None:
    if type(key) is not str:
        raise _Refused(f"keys must be strings, got {type(key).__name__} {key!r}")
    if len(key) > limits.max_key:
        raise _Refused(f"a key of {len(key)} characters; at most {limits.max_key} are allowed")
    if "\x00" in key:
        raise _Refused("keys must not contain a NUL character (U+0000): the database cannot "
                       "store it")


def limits_from(settings: Any, where: str) -> Limits:
    """``Limits`` from the YAML ``metadata:`` mapping; ValueError saying what is wrong."""
    if settings is None:
        return LIMITS
    if not isinstance(settings, dict):
        raise ValueError(f"{where}: expected a mapping of {', '.join(SETTINGS)}")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(map(str, unknown))}; "
                         f"known: {', '.join(SETTINGS)}")
    for key, value in settings.items():
        top = MAX_DEPTH_SETTING if key == "max_depth" else 2**31
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise ValueError(f"{where}.{key}: expected an integer from 1 to {top}")
    return Limits(**settings)


# ------------------------------------------------------------------ metadata stored before

_SUSPECT = re.compile(r"\d{19}")  # an integer that may be past int64


def suspect(text: str) -> bool:
    """Whether stored metadata text may need ``servable`` (cheap: most metadata is not)."""
    return (text.count("[") + text.count("{") > MAX_STORED_DEPTH
            or _SUSPECT.search(text) is not None)


def servable(text: str) -> tuple[Any, str | None]:
    """Stored metadata ``text`` as it can be served, and why it was changed (None: unchanged,
    "": nothing worth saying). Metadata nested past ``MAX_STORED_DEPTH`` is served as its
    stored JSON text under the key ``TEXT_KEY``: it is not even decoded (the decoder's own
    recursion limit is in reach), and rebuilt as values every encoder would meet it again."""
    if _text_depth(text) > MAX_STORED_DEPTH:
        return ({TEXT_KEY: text}, f"nested past {MAX_STORED_DEPTH} levels: served as its JSON "
                                  f"text under the key {TEXT_KEY!r}")
    return _ints(json.loads(text))


TEXT_KEY = "stored_metadata_text"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _text_depth(text: str) -> int:
    """How deep JSON ``text`` nests, brackets inside strings left out."""
    deepest = depth = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _ints(value: Any) -> tuple[Any, str | None]:
    """Integers past int64 made servable; why ("" for a float PostgreSQL gave back as an
    integer, None when nothing changed)."""
    kind = type(value)
    if kind is int and not INT_MIN <= value <= INT_MAX:
        # jsonb keeps numbers as numerics and prints a float of 1e19 or more without a
        # decimal point or exponent: it comes back as an integer and is a float again here.
        # Past the float range, only text can carry it.
        if abs(value) < _FLOAT_LIMIT:
            return float(value), ""
        return str(value), "an integer past the float range is served as its decimal text"
    if kind is not dict and kind is not list:
        return value, None
    why = None
    out: Any = {} if kind is dict else []
    for key, item in (value.items() if kind is dict else enumerate(value)):
        item, reason = _ints(item)
        if reason is not None:
            why = why or reason
        if kind is dict:
            out[key] = item
        else:
            out.append(item)
    return (out, why) if why is not None else (value, None)


_FLOAT_LIMIT = 2**1024  # float(n) overflows from here on
