"""Units of the policy language and their inverse, the human formatting used in summaries.

Sizes are decimal (kB, MB, GB, TB, PB, EB = powers of 1000; KB is read as kB) or binary (KiB ...
EiB = powers of 1024); durations are s, min, h, d, w and y (365 days); ``%`` makes a fraction
(``90%`` is 0.9). Everything is converted once, at load time, to bytes, seconds or a fraction, so
evaluation never sees a unit.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15, "EB": 10**18,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50, "EiB": 2**60,
}
DURATION_UNITS: dict[str, int] = {
    "s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400,
}
PERCENT = "%"
ALL_UNITS: tuple[str, ...] = (*SIZE_UNITS, *DURATION_UNITS, PERCENT)

# Spelled-out units people type, mapped to the unit to suggest in an error message.
UNIT_WORDS: dict[str, str] = {
    "second": "s", "seconds": "s", "sec": "s", "secs": "s", "m": "min", "mins": "min",
    "minute": "min", "minutes": "min", "hour": "h", "hours": "h", "hr": "h", "hrs": "h",
    "day": "d", "days": "d", "week": "w", "weeks": "w", "year": "y", "years": "y",
    "percent": "%", "pct": "%", "bytes": "B", "byte": "B",
}


def unit_kind(unit: str) -> str:
    """'size', 'duration' or 'fraction'; KeyError for anything else."""
    if unit in SIZE_UNITS:
        return "size"
    if unit in DURATION_UNITS:
        return "duration"
    if unit == PERCENT:
        return "fraction"
    raise KeyError(unit)


def unit_factor(unit: str) -> float:
    if unit == PERCENT:
        return 0.01
    return SIZE_UNITS.get(unit) or DURATION_UNITS[unit]


def scaled(value: float, unit: str) -> float:
    """``value`` in base units. Percentages divide by 100 rather than multiply by 0.01, so that
    70% is exactly 0.7 (70 * 0.01 is 0.7000000000000001, and `occupancy < 70%` would then hold
    at 70.0%)."""
    if unit == PERCENT:
        return value / 100
    return value * unit_factor(unit)


def parse_number(text: str) -> int | float:
    """Value of a NUMBER token (``1_000``, ``2.5``, ``1e3``); ValueError when not finite."""
    clean = text.replace("_", "")
    if all(c.isdigit() for c in clean.lstrip("-")):
        return int(clean)
    value = float(clean)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def format_bytes(n: float) -> str:
    """1500000000000 -> '1.5 TB' (decimal units: the ones operators write most)."""
    if n is None:
        return "none"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("EB", "PB", "TB", "GB", "MB", "kB"):
        factor = SIZE_UNITS[unit]
        if n >= factor:
            return f"{sign}{_trim(n / factor)} {unit}"
    return f"{sign}{_trim(n)} B"


def format_duration(seconds: float) -> str:
    """694800 -> '8d 1h': the two largest units, enough to read an age at a glance."""
    if seconds is None:
        return "none"
    sign = "-" if seconds < 0 else ""
    left = abs(seconds)
    parts: list[str] = []
    for unit in ("y", "d", "h", "min", "s"):
        size = DURATION_UNITS[unit]
        if left >= size:
            count = int(left // size)
            parts.append(f"{count}{unit}")
            left -= count * size
        if len(parts) == 2:
            break
    if not parts:
        return f"{sign}{_trim(left)}s"
    return sign + " ".join(parts)


def format_fraction(value: float) -> str:
    return f"{_trim(value * 100)}%"


def format_time(epoch: float | None) -> str:
    """ISO-8601 UTC, second precision, or 'none'."""
    if epoch is None or epoch != epoch:
        return "none"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_date(text: str) -> float:
    """Epoch seconds of an ISO date or date-time; a time without a zone is UTC. ValueError if
    the date does not exist (2024-02-30)."""
    dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _trim(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"
