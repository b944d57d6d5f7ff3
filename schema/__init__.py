"""SQL schema files and their order.

Each dialect has ordered migration files ``NNN_description.sql``; a database records the highest
applied number in ``schema_version``. The store applies the missing ones at start and refuses to
run against a number it does not know (a newer dlm wrote it).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import NamedTuple

DIALECTS = ("sqlite", "postgresql")
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """Every migration of ``dialect``, in order."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    found = []
    for entry in resources.files(__package__).joinpath(dialect).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort()
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(f"schema/{dialect}: migration {expected:03d} is missing")
    return found


def latest_version(dialect: str) -> int:
    return len(migrations(dialect))
