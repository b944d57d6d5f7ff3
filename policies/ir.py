"""Checked conditions: the typed form the checker produces and the code generator consumes.

Every name is resolved, every literal converted to bytes, seconds, epoch time or a canonical state
name, every pattern compiled. What remains is plain data with one meaning, so the generator needs
no knowledge of units or spelling and cannot fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .schema import Attribute, Kind, Type


@dataclass(frozen=True, slots=True)
class Attr:
    """``item.size`` or ``item.metadata.instrument`` (``keys`` = ('instrument',))."""

    spec: Attribute
    keys: tuple[str, ...]
    type: Type

    @property
    def obj(self) -> str:
        return self.spec.obj

    @property
    def path(self) -> str:
        out = f"{self.spec.obj}.{self.spec.name}"
        for key in self.keys:
            out += f".{key}" if key.isidentifier() else f'["{key}"]'
        return out


@dataclass(frozen=True, slots=True)
class Const:
    """A literal, converted; ``is_now`` stands for the evaluation time passed in by the caller."""

    value: object
    type: Type
    text: str
    is_now: bool = False


Operand = Attr | Const


@dataclass(frozen=True, slots=True)
class Compare:
    op: str                      # == != < <= > >=
    left: Operand
    right: Operand


@dataclass(frozen=True, slots=True)
class InSet:
    operand: Attr
    values: frozenset
    negated: bool


@dataclass(frozen=True, slots=True)
class Match:
    """A glob (``matches "raw_*"``, translated to a regex) or a regex (``matches /^raw/``)."""

    operand: Attr
    regex: re.Pattern
    text: str
    negated: bool


@dataclass(frozen=True, slots=True)
class Age:
    """``item.created older_than 30d``: true when ``now - operand`` is over (older) or under
    (newer) ``seconds``; false when the time is none."""

    operand: Attr
    older: bool
    seconds: float


@dataclass(frozen=True, slots=True)
class Truth:
    """A boolean attribute (or a metadata value) used as a condition by itself."""

    operand: Attr


@dataclass(frozen=True, slots=True)
class Literal:
    """``true`` or ``false`` written as a whole condition."""

    value: bool


@dataclass(frozen=True, slots=True)
class Not:
    operand: Cond


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Cond, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Cond, ...]


Cond = Compare | InSet | Match | Age | Truth | Literal | Not | And | Or


@dataclass(frozen=True, slots=True)
class Condition:
    """A checked condition with where it came from: the text and line ``explain`` prints."""

    expr: Cond
    text: str
    line: int
    column: int
    objects: frozenset[str]      # which of item, replica, storage it reads


def attributes_of(expr: Cond) -> list[Attr]:
    """Every attribute a condition mentions, in source order (for summaries)."""
    out: list[Attr] = []

    def walk(node: Cond) -> None:
        if isinstance(node, Compare):
            out.extend(x for x in (node.left, node.right) if isinstance(x, Attr))
        elif isinstance(node, InSet | Match | Age | Truth):
            out.append(node.operand)
        elif isinstance(node, Not):
            walk(node.operand)
        elif isinstance(node, And | Or):
            for item in node.items:
                walk(item)

    walk(expr)
    return out


def is_enum(t: Type) -> bool:
    return t.kind is Kind.ENUM
