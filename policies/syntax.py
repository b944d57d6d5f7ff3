"""The syntax tree of a policy file, as parsed and before any checking.

Plain frozen dataclasses with a `Span` each, so the checker can point at any piece of text.
Nothing here knows about types or units: a ``Literal`` keeps its token kind and text, and the
checker decides what it means next to the attribute it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    line: int
    column: int
    start: int      # character offsets into the source, for quoting the text
    end: int


@dataclass(frozen=True, slots=True)
class Attribute:
    span: Span
    parts: tuple[str, ...]          # ('item', 'metadata', 'obs id')
    part_spans: tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class Literal:
    """kind: number, string, regex, date, true, false, none, now, or word (a bare name)."""

    span: Span
    kind: str
    text: str
    unit: str = ""
    unit_span: Span | None = None


Operand = Attribute | Literal


@dataclass(frozen=True, slots=True)
class Compare:
    span: Span
    op: str
    left: Operand
    right: Operand
    op_span: Span


@dataclass(frozen=True, slots=True)
class Member:
    span: Span
    operand: Operand
    values: tuple[Literal, ...]
    negated: bool
    set_span: Span


@dataclass(frozen=True, slots=True)
class Matches:
    span: Span
    operand: Operand
    pattern: Literal                 # a string (glob) or a regex
    negated: bool


@dataclass(frozen=True, slots=True)
class AgeTest:
    span: Span
    op: str                          # older_than | newer_than
    operand: Operand
    value: Operand


@dataclass(frozen=True, slots=True)
class Truth:
    span: Span
    operand: Operand


@dataclass(frozen=True, slots=True)
class Not:
    span: Span
    operand: Condition


@dataclass(frozen=True, slots=True)
class And:
    span: Span
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Or:
    span: Span
    items: tuple[Condition, ...]


Condition = Compare | Member | Matches | AgeTest | Truth | Not | And | Or


# --- clauses ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Clause:
    """A keyword clause holding one condition: members, storages, on, when, until, to, from."""

    span: Span
    keyword: str
    condition: Condition


@dataclass(frozen=True, slots=True)
class NameSet:
    span: Span
    names: tuple[Literal, ...]


@dataclass(frozen=True, slots=True)
class StorageNames:
    """``storages {"a", "b"}``: sugar for ``storages storage.name in {"a", "b"}``."""

    span: Span
    names: NameSet


@dataclass(frozen=True, slots=True)
class Quota:
    span: Span
    storage: Literal | None          # None for `quota default`
    amount: Literal


@dataclass(frozen=True, slots=True)
class PartitionDecl:
    span: Span
    name: Literal
    clauses: tuple[Clause | StorageNames | Quota | PartitionDecl, ...]


@dataclass(frozen=True, slots=True)
class RuleDecl:
    span: Span
    action: str
    action_span: Span
    label: Literal | None
    condition: Condition


@dataclass(frozen=True, slots=True)
class DefaultDecl:
    span: Span
    action: str
    action_span: Span
    label: Literal | None


@dataclass(frozen=True, slots=True)
class OrderKey:
    span: Span
    attribute: Attribute
    direction: str                   # '' when not written


@dataclass(frozen=True, slots=True)
class OrderDecl:
    span: Span
    keys: tuple[OrderKey, ...]


@dataclass(frozen=True, slots=True)
class DetoxDecl:
    span: Span
    clauses: tuple[Clause | RuleDecl | DefaultDecl | OrderDecl, ...]


@dataclass(frozen=True, slots=True)
class PlacementDecl:
    """``phase SOLID copies 2 to ... from ...`` (phase set) or ``place "x" if ... copies ...``."""

    span: Span
    phase: Literal | None
    label: Literal | None
    condition: Condition | None
    copies: Literal
    to: Clause | None
    source: Clause | None


@dataclass(frozen=True, slots=True)
class Setting:
    span: Span
    name: str
    value: Literal


@dataclass(frozen=True, slots=True)
class SettingsDecl:
    span: Span
    section: str                     # popularity | balance | limits
    settings: tuple[Setting | Clause, ...]


@dataclass(frozen=True, slots=True)
class DealerDecl:
    span: Span
    clauses: tuple[PlacementDecl | SettingsDecl, ...]


Block = PartitionDecl | DetoxDecl | DealerDecl


@dataclass(frozen=True, slots=True)
class PolicyFile:
    filename: str
    source: str
    blocks: tuple[Block, ...]

    def text(self, span: Span) -> str:
        return self.source[span.start:span.end]
