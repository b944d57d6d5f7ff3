"""Syntax tree -> checked, compiled `Policy`, or every mistake found as a `PolicyError`.

The checker is where names meet meanings: it resolves ``item.size`` in the schema, converts
``500 TB`` to bytes next to a size attribute (and refuses it next to a duration), resolves state
and phase names, compiles patterns, and enforces the structure (one partition, a mandatory Detox
default, no rule after the default, no duplicated clause). Each problem is recorded with its
position and checking continues, so a file with three mistakes reports three lines.
"""

from __future__ import annotations

import fnmatch
import re

from . import ir, model
from . import syntax as s
from .errors import Diagnostic, PolicyError, did_you_mean, one_of
from .schema import ANY as ANY_TYPE
from .schema import ATTRIBUTES, OBJECTS, PHASES, Kind, Type
from .schema import NULL as NULL_TYPE
from .units import parse_date, parse_number, scaled, unit_factor, unit_kind

MAX_DEPTH = 32   # nesting of not / and / or / parentheses in one condition

# Which objects each kind of condition can see.
ITEM_REPLICA = frozenset({"item", "replica"})
STORAGE = frozenset({"storage"})
ITEM_STORAGE = frozenset({"item", "storage"})
ITEM = frozenset({"item"})
ALL = frozenset(OBJECTS)

_ORDER_OPS = ("<", "<=", ">", ">=")
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}

# Settings of the dealer sub-blocks: name -> (expected kind, description).
SETTINGS: dict[str, dict[str, str]] = {
    "popularity": {"half_life": "duration", "threshold": "number", "max_copies": "count"},
    "balance": {"spread": "fraction", "volume_per_cycle": "size"},
    "limits": {"target_occupancy": "fraction", "max_pending": "fraction",
               "volume_per_cycle": "size", "storage_volume_per_cycle": "size"},
}
_SETTING_WORDS = {"duration": "a duration such as 7d", "number": "a number",
                  "count": "a whole number", "fraction": "a percentage such as 85%",
                  "size": "a size such as 100 TB"}


class _Invalid(Exception):
    """Internal: this piece is wrong and already reported; skip what depends on it."""


class Checker:
    def __init__(self, tree: s.PolicyFile) -> None:
        self.tree = tree
        self.file = tree.filename
        self.diagnostics: list[Diagnostic] = []
        self._where = ""                   # what kind of condition is being checked
        self._objects: set[str] = set()    # objects it reads

    # --- reporting ---

    def error(self, span: s.Span, message: str, text: str = "", expected: str = "",
              suggestion: str = "") -> _Invalid:
        self.diagnostics.append(
            Diagnostic(self.file, span.line, span.column, message, text, expected, suggestion))
        return _Invalid()

    def text(self, node) -> str:
        return self.tree.text(node.span)

    # --- the whole file ---

    def check(self) -> model.Policy:
        partitions = [b for b in self.tree.blocks if isinstance(b, s.PartitionDecl)]
        detoxes = [b for b in self.tree.blocks if isinstance(b, s.DetoxDecl)]
        dealers = [b for b in self.tree.blocks if isinstance(b, s.DealerDecl)]
        for extra in (partitions[1:], detoxes[1:], dealers[1:]):
            for block in extra:
                first = {s.PartitionDecl: partitions, s.DetoxDecl: detoxes,
                         s.DealerDecl: dealers}[type(block)][0]
                self.error(block.span, f"a second {self._block_word(block)} block; a policy file "
                           f"has one (the first is at line {first.span.line})",
                           self._block_word(block))
        if not partitions:
            end = s.Span(1, 1, 0, 0)
            self.error(end, "no partition block", "",
                       'a file that starts with partition "NAME" { ... }')
            raise PolicyError(self.diagnostics)
        partition = self._partition(partitions[0], seen=set())
        detox = self._detox(detoxes[0], partition) if detoxes else None
        dealer = self._dealer(dealers[0], partition) if dealers else None
        if self.diagnostics:
            raise PolicyError(self.diagnostics)
        return model.Policy(partition.name, self.file, partition, detox, dealer, self.tree.source)

    @staticmethod
    def _block_word(block) -> str:
        return {s.PartitionDecl: "partition", s.DetoxDecl: "detox",
                s.DealerDecl: "dealer"}[type(block)]

    # --- partition ---

    def _partition(self, decl: s.PartitionDecl, seen: set[str]) -> model.Partition:
        name = decl.name.text
        if not name.strip():
            self.error(decl.name.span, "a partition needs a name", '""', "a non-empty name")
        elif name in seen:
            self.error(decl.name.span, f"partition '{name}' is defined twice", name)
        seen.add(name)
        members = storages = None
        quotas: dict[str, model.Quota] = {}
        default_quota = None
        children: list[model.Partition] = []
        first_line: dict[str, int] = {}
        for clause in decl.clauses:
            if isinstance(clause, s.PartitionDecl):
                children.append(self._partition(clause, seen))
                continue
            if isinstance(clause, s.Quota):
                quota = self._quota(clause)
                key = clause.storage.text if clause.storage is not None else None
                where = f'"{key}"' if key is not None else "default"
                if key in quotas or (key is None and default_quota is not None):
                    self.error(clause.span, f"a second quota for {where}", self.text(clause))
                elif quota is not None and key is None:
                    default_quota = quota
                elif quota is not None:
                    quotas[key] = quota
                continue
            keyword = "storages" if isinstance(clause, s.StorageNames) else clause.keyword
            if keyword in first_line:
                self.error(clause.span, f"a second '{keyword}' clause in partition '{name}' "
                           f"(the first is at line {first_line[keyword]})", keyword)
                continue
            first_line[keyword] = clause.span.line
            if isinstance(clause, s.StorageNames):
                storages = self._storage_names(clause)
            elif keyword == "members":
                members = self.condition(clause, ITEM_REPLICA, "a members condition")
            else:
                storages = self.condition(clause, STORAGE, "a storages condition")
        if members is None and children:
            members = self._union(children, decl)
        return model.Partition(name, decl.span.line, self.file, members, storages, quotas,
                               default_quota, children)

    def _union(self, children: list[model.Partition], decl: s.PartitionDecl) -> ir.Condition | None:
        """A group's membership: the `or` of its sub-partitions' (a child without members
        contains everything, and so does the group)."""
        exprs = []
        for child in children:
            if child.members is None:
                return None
            exprs.append(child.members.source)
        expr = exprs[0].expr if len(exprs) == 1 else ir.Or(tuple(c.expr for c in exprs))
        text = " or ".join(f"({c.text})" for c in exprs)
        objects = frozenset().union(*(c.objects for c in exprs))
        return ir.Condition(expr, text, decl.span.line, decl.span.column, objects)

    def _storage_names(self, clause: s.StorageNames) -> ir.Condition | None:
        names = clause.names.names
        if not names:
            self.error(clause.names.span, "an empty storage list", "{}",
                       'at least one storage name, e.g. {"disk-a"}')
            return None
        attr = ir.Attr(ATTRIBUTES["storage"]["name"], (), ATTRIBUTES["storage"]["name"].type)
        expr = ir.InSet(attr, frozenset(n.text for n in names), False)
        return ir.Condition(expr, f"storage.name in {self.text(clause.names)}",
                            clause.span.line, clause.span.column, STORAGE)

    def _quota(self, clause: s.Quota) -> model.Quota | None:
        amount = clause.amount
        if clause.storage is not None and not clause.storage.text.strip():
            self.error(clause.storage.span, "an empty storage name", '""', "a storage name")
            return None
        try:
            if amount.unit and unit_kind(amount.unit) == "size":
                return model.Quota(bytes=int(self._number(amount) * unit_factor(amount.unit)),
                                   line=clause.span.line)
            if amount.unit == "%":
                fraction = self._number(amount) / 100
                if not 0 < fraction <= 1:
                    self.error(amount.span, f"quota {self.text(amount)} is outside 0-100%",
                               self.text(amount), "a percentage of the capacity up to 100%")
                    return None
                return model.Quota(fraction=fraction, line=clause.span.line)
        except _Invalid:
            return None
        self.error(amount.span, f"quota '{self.text(amount)}' is not a size",
                   self.text(amount), "a size such as 500 TB, or a percentage of the capacity")
        return None

    # --- detox ---

    def _detox(self, decl: s.DetoxDecl, partition: model.Partition) -> model.DetoxPolicy | None:
        clauses: dict[str, ir.Condition | None] = {}
        first_line: dict[str, int] = {}
        rules: list[tuple[ir.Condition, model.Rule]] = []
        default: model.Rule | None = None
        default_decl: s.DefaultDecl | None = None
        order: list[model.OrderKey] = []
        labels: dict[str, int] = {}
        for clause in decl.clauses:
            if isinstance(clause, s.Clause | s.OrderDecl):
                keyword = clause.keyword if isinstance(clause, s.Clause) else "order by"
                if keyword in first_line:
                    self.error(clause.span, f"a second '{keyword}' clause in detox (the first "
                               f"is at line {first_line[keyword]})", keyword)
                    continue
                first_line[keyword] = clause.span.line
                if isinstance(clause, s.OrderDecl):
                    order = self._order(clause)
                else:
                    clauses[keyword] = self.condition(clause, STORAGE, f"an '{keyword}' condition"
                                                      if keyword in ("on", "until")
                                                      else "a 'when' condition")
                continue
            if default_decl is not None:
                where = "rule" if isinstance(clause, s.RuleDecl) else "default"
                self.error(clause.span, f"this {where} comes after the default (line "
                           f"{default_decl.span.line}) and is never reached",
                           self.text(clause)[:40], "the default as the last rule")
                continue
            label = self._label(clause, labels)
            if isinstance(clause, s.DefaultDecl):
                default_decl = clause
                default = model.Rule(clause.action, label, clause.span.line, clause.span.column,
                                     self.file, "", -1)
                continue
            condition = self.condition(clause, ALL, "a rule condition")
            rule = model.Rule(clause.action, label, clause.span.line, clause.span.column,
                              self.file, self.text(clause.condition), len(rules))
            if condition is not None:
                rules.append((condition, rule))
        if default_decl is None:
            self.error(decl.span, "the detox block has no default decision", "detox",
                       "a last rule such as 'default dismiss' or 'default protect'")
            return None
        if not order:
            order = [self._default_order()]
        if self.diagnostics:
            return None
        assert default is not None
        return model.DetoxPolicy(partition, self.file, decl.span.line, clauses.get("on"),
                                 clauses.get("when"), clauses.get("until"), rules, default,
                                 order)

    def _label(self, clause: s.RuleDecl | s.DefaultDecl, labels: dict[str, int]) -> str:
        if clause.label is None:
            return "default" if isinstance(clause, s.DefaultDecl) else \
                f"{clause.action} at line {clause.span.line}"
        label = clause.label.text
        if not label.strip():
            self.error(clause.label.span, "an empty rule label", '""',
                       "a short name for the rule, or no label at all")
        elif label in labels:
            self.error(clause.label.span, f"the label \"{label}\" is already used at line "
                       f"{labels[label]}", label, "a label unique within the file")
        labels[label] = clause.span.line
        return label

    def _default_order(self) -> model.OrderKey:
        spec = ATTRIBUTES["item"]["popularity"]
        return model.OrderKey(ir.Attr(spec, (), spec.type), False, "item.popularity ascending")

    def _order(self, clause: s.OrderDecl) -> list[model.OrderKey]:
        keys = []
        for key in clause.keys:
            try:
                attr = self.attribute(key.attribute, ALL, "an order by key")
            except _Invalid:
                continue
            kind = attr.type.kind
            if kind not in (Kind.NUMBER, Kind.BYTES, Kind.FRACTION, Kind.DURATION, Kind.TIME) \
                    and not attr.type.ordered:
                self.error(key.attribute.span, f"cannot order by {attr.path}, which is "
                           f"{attr.type.noun()}", attr.path,
                           "a number, size, fraction, duration, time or phase attribute")
                continue
            descending = key.direction in ("descending", "decreasing", "desc")
            keys.append(model.OrderKey(attr, descending, self.text(key)))
        return keys

    # --- dealer ---

    def _dealer(self, decl: s.DealerDecl, partition: model.Partition) -> model.DealerPolicy | None:
        phases: dict[str, model.Placement] = {}
        rules: list[model.Placement] = []
        sections: dict[str, int] = {}
        popularity = balance = None
        limits = model.Limits()
        labels: dict[str, int] = {}
        for clause in decl.clauses:
            if isinstance(clause, s.SettingsDecl):
                if clause.section in sections:
                    self.error(clause.span, f"a second '{clause.section}' block in dealer (the "
                               f"first is at line {sections[clause.section]})", clause.section)
                    continue
                sections[clause.section] = clause.span.line
                values, to = self._settings(clause)
                if clause.section == "popularity":
                    popularity = self._popularity(clause, values, to)
                elif clause.section == "balance":
                    balance = model.Balance(line=clause.span.line, **values)
                else:
                    limits = model.Limits(line=clause.span.line, **values)
                continue
            placement = self._placement(clause, labels)
            if placement is None:
                continue
            if placement.phase is not None:
                if placement.phase in phases:
                    self.error(clause.span, f"phase {placement.phase} already has copies at "
                               f"line {phases[placement.phase].line}", placement.phase)
                    continue
                phases[placement.phase] = placement
            else:
                rules.append(placement)
        if self.diagnostics:
            return None
        return model.DealerPolicy(partition, self.file, decl.span.line, phases, rules,
                                  popularity, balance, limits)

    def _placement(self, clause: s.PlacementDecl,
                   labels: dict[str, int]) -> model.Placement | None:
        phase = None
        condition = None
        ok = True
        if clause.phase is not None:
            phase = self._enum_name(clause.phase, PHASES, "a phase")
            ok = phase is not None
            label = f"phase {phase or clause.phase.text}"
        else:
            label = clause.label.text if clause.label is not None else \
                f"place at line {clause.span.line}"
            if clause.label is not None:
                if label in labels:
                    self.error(clause.label.span, f"the label \"{label}\" is already used at "
                               f"line {labels[label]}", label, "a label unique within the file")
                labels[label] = clause.span.line
            assert clause.condition is not None
            condition = self.condition(s.Clause(clause.condition.span, "if", clause.condition),
                                       ITEM, "a place condition")
            ok = condition is not None
        copies = self._count(clause.copies, "copies")
        to = self.condition(clause.to, ITEM_STORAGE, "a 'to' condition") if clause.to else None
        source = (self.condition(clause.source, ITEM_STORAGE, "a 'from' condition")
                  if clause.source else None)
        if not ok or copies is None:
            return None
        return model.Placement(label, clause.span.line, self.file, copies, phase, condition,
                               to, source)

    def _settings(
        self, clause: s.SettingsDecl,
    ) -> tuple[dict[str, float | int], ir.Condition | None]:
        allowed = SETTINGS[clause.section]
        values: dict[str, float | int] = {}
        to = None
        for setting in clause.settings:
            if isinstance(setting, s.Clause):
                if clause.section != "popularity":
                    self.error(setting.span, f"'to' is not a {clause.section} setting",
                               "to", one_of(allowed))
                    continue
                to = self.condition(setting, ITEM_STORAGE, "a 'to' condition")
                continue
            if setting.name not in allowed:
                self.error(setting.span, f"'{setting.name}' is not a {clause.section} setting",
                           setting.name, one_of(allowed),
                           did_you_mean(setting.name, allowed))
                continue
            if setting.name in values:
                self.error(setting.span, f"'{setting.name}' is set twice", setting.name)
                continue
            value = self._setting_value(setting, allowed[setting.name])
            if value is not None:
                values[setting.name] = value
        return values, to

    def _setting_value(self, setting: s.Setting, want: str) -> float | int | None:
        lit = setting.value
        text = self.text(lit)
        try:
            if want == "count":
                return self._count(lit, setting.name)
            number = self._number(lit)
            kind = unit_kind(lit.unit) if lit.unit else "number"
            if want == "fraction" and kind == "number" and 0 <= number <= 1:
                return number
            if kind != want:
                raise self.error(lit.span, f"{setting.name} {text}: wrong kind of value", text,
                                 _SETTING_WORDS[want])
            value = scaled(number, lit.unit) if lit.unit else number
            if value <= 0:
                raise self.error(lit.span, f"{setting.name} must be positive", text,
                                 _SETTING_WORDS[want])
            return int(value) if want == "size" else value
        except _Invalid:
            return None

    def _popularity(self, clause: s.SettingsDecl, values: dict,
                    to: ir.Condition | None) -> model.Popularity | None:
        missing = [k for k in SETTINGS["popularity"] if k not in values]
        if missing:
            present = {x.name for x in clause.settings if isinstance(x, s.Setting)}
            really = [k for k in missing if k not in present]  # not merely mistyped values
            if really:
                self.error(clause.span, "the popularity block lacks " + ", ".join(really),
                           "popularity", "half_life, threshold and max_copies")
            return None
        return model.Popularity(
            float(values["half_life"]), float(values["threshold"]), int(values["max_copies"]),
            model.Condition(to, self.file) if to is not None else None, clause.span.line)

    def _count(self, lit: s.Literal, what: str) -> int | None:
        text = self.text(lit)
        try:
            value = self._number(lit)
        except _Invalid:
            return None
        if lit.unit or not isinstance(value, int) or value < 0:
            self.error(lit.span, f"{what} must be a whole number", text,
                       "a count such as 2, without a unit")
            return None
        return value

    def _number(self, lit: s.Literal) -> int | float:
        try:
            return parse_number(lit.text)
        except (ValueError, OverflowError):
            raise self.error(lit.span, f"the number '{lit.text}' is too large", lit.text,
                             "a finite number") from None

    # --- conditions ---

    def condition(self, clause: s.Clause, scope: frozenset[str], where: str) -> ir.Condition | None:
        self._where = where
        self._objects: set[str] = set()
        try:
            expr = self.cond(clause.condition, scope, 0)
        except _Invalid:
            return None
        node = clause.condition
        return ir.Condition(expr, self.text(node), node.span.line, node.span.column,
                            frozenset(self._objects))

    def cond(self, node: s.Condition, scope: frozenset[str], depth: int) -> ir.Cond:
        if depth > MAX_DEPTH:
            raise self.error(node.span, f"this condition is nested more than {MAX_DEPTH} levels "
                             "deep", "", "a flatter condition")
        if isinstance(node, s.And | s.Or):
            items = []
            failed = False
            for item in node.items:
                try:
                    items.append(self.cond(item, scope, depth + 1))
                except _Invalid:
                    failed = True  # keep checking the siblings: report all their mistakes
            if failed:
                raise _Invalid()
            return (ir.And if isinstance(node, s.And) else ir.Or)(tuple(items))
        if isinstance(node, s.Not):
            return ir.Not(self.cond(node.operand, scope, depth + 1))
        if isinstance(node, s.Compare):
            return self._compare(node, scope)
        if isinstance(node, s.Member):
            return self._member(node, scope)
        if isinstance(node, s.Matches):
            return self._matches(node, scope)
        if isinstance(node, s.AgeTest):
            return self._age(node, scope)
        return self._truth(node, scope)

    def attribute(self, node: s.Attribute, scope: frozenset[str], where: str) -> ir.Attr:
        obj, *rest = node.parts
        if not rest:
            raise self.error(node.span, f"'{obj}' is not an attribute", obj,
                             "an attribute such as item.popularity",
                             f"{did_you_mean(obj, OBJECTS) or 'item'}.{obj}"
                             if obj not in OBJECTS else "")
        if obj not in ATTRIBUTES:
            raise self.error(node.part_spans[0], f"unknown object '{obj}' in '{self.text(node)}'",
                             obj, "item, replica or storage", did_you_mean(obj, OBJECTS))
        if obj not in scope:
            raise self.error(node.part_spans[0],
                             f"{obj}.* cannot be used in {where}", self.text(node),
                             f"only {', '.join(sorted(x + '.*' for x in scope))} there")
        table = ATTRIBUTES[obj]
        name = rest[0]
        if name not in table:
            raise self.error(node.part_spans[1], f"unknown {obj} attribute '{name}'",
                             f"{obj}.{name}", one_of(table, limit=20), did_you_mean(name, table))
        spec = table[name]
        keys = tuple(rest[1:])
        if keys and spec.type.kind is not Kind.MAP:
            raise self.error(node.part_spans[2], f"{obj}.{name} has no field '{keys[0]}'",
                             self.text(node), f"{obj}.{name} alone ({spec.type.noun()})")
        if spec.type.kind is Kind.MAP and not keys:
            raise self.error(node.span, f"{obj}.{name} is a map and cannot be used whole",
                             self.text(node),
                             f'a key, such as {obj}.{name}.KEY or {obj}.{name}["KEY"]')
        self._objects.add(obj)
        return ir.Attr(spec, keys, ANY_TYPE if keys else spec.type)

    def _side(self, node: s.Operand, scope: frozenset[str]) -> ir.Attr | s.Literal:
        if isinstance(node, s.Attribute):
            return self.attribute(node, scope, self._where)
        return node

    def _compare(self, node: s.Compare, scope: frozenset[str]) -> ir.Cond:
        op = node.op
        left, right = self._side(node.left, scope), self._side(node.right, scope)
        if isinstance(left, s.Literal) and isinstance(right, s.Literal):
            raise self.error(node.span, "this compares two constants", self.text(node),
                             "an attribute on one side, such as item.size > 1 TB",
                             self._word_hint(left) or self._word_hint(right))
        if isinstance(left, s.Literal):
            left, right = right, left
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        assert isinstance(left, ir.Attr)
        if isinstance(right, ir.Attr):
            self._compatible(node, left, right, op)
            return ir.Compare(op, left, right)
        const = self.literal(right, left)
        if op in _ORDER_OPS:
            if const.type.kind is Kind.NULL:
                raise self.error(right.span, f"none cannot be ordered with '{op}'", "none",
                                 "'==' or '!=' to test for none")
            self._orderable(node, left)
        return ir.Compare(op, left, const)

    def _orderable(self, node, attr: ir.Attr) -> None:
        t = attr.type
        if not t.is_ordered:
            raise self.error(node.op_span, f"'{node.op}' does not apply to {attr.path}, "
                             f"which is {t.noun()}", node.op,
                             "'==', '!=', 'in' or 'matches'" if t.kind is not Kind.BOOL
                             else "'==' or '!='")

    def _compatible(self, node: s.Compare, left: ir.Attr, right: ir.Attr, op: str) -> None:
        lt, rt = left.type, right.type
        same = lt.kind is rt.kind and (lt.kind is not Kind.ENUM or lt.names == rt.names)
        if not (same or Kind.ANY in (lt.kind, rt.kind)):
            raise self.error(node.span, f"cannot compare {left.path} ({lt.noun()}) with "
                             f"{right.path} ({rt.noun()})", self.text(node),
                             "two attributes of the same type")
        if op in _ORDER_OPS:
            self._orderable(node, left if lt.kind is not Kind.ANY else right)

    def _word_hint(self, lit: s.Literal) -> str:
        if lit.kind == "word":
            guess = did_you_mean(lit.text, OBJECTS)
            if guess:
                return f"{guess}.<attribute>"
        return ""

    # literals

    def literal(self, lit: s.Literal, attr: ir.Attr) -> ir.Const:
        """The literal converted for comparison with ``attr``, or an error saying what fits."""
        t = attr.type
        kind = t.kind
        text = self.text(lit)
        wanted = f"{t.describe()} for {attr.path}"
        if lit.kind == "none":
            if not t.nullable:
                raise self.error(lit.span, f"{attr.path} is never none", "none", t.describe())
            return ir.Const(None, NULL_TYPE, text)
        if lit.kind == "now":
            if kind is not Kind.TIME:
                raise self.error(lit.span, f"'now' is a time and {attr.path} is not", "now",
                                 wanted)
            return ir.Const(None, t, text, is_now=True)
        if lit.kind in ("true", "false"):
            if kind not in (Kind.BOOL, Kind.ANY):
                raise self.error(lit.span, f"'{text}' does not fit {attr.path}", text, wanted)
            return ir.Const(lit.kind == "true", t, text)
        if lit.kind == "date":
            if kind is not Kind.TIME:
                raise self.error(lit.span, f"the date {text} does not fit {attr.path}", text,
                                 wanted)
            return ir.Const(self._date(lit), t, text)
        if lit.kind in ("string", "word"):
            return self._name_literal(lit, attr, text, wanted)
        return self._number_literal(lit, attr, text, wanted)

    def _date(self, lit: s.Literal) -> float:
        try:
            return parse_date(lit.text)
        except (ValueError, OverflowError):
            raise self.error(lit.span, f"'{lit.text}' is not a valid date", lit.text,
                             "an ISO date such as 2024-06-30 or 2024-06-30T12:00:00Z") from None

    def _name_literal(self, lit: s.Literal, attr: ir.Attr, text: str, wanted: str) -> ir.Const:
        t = attr.type
        if t.kind is Kind.ENUM:
            name = self._enum_name(lit, t.names, t.label)
            if name is None:
                raise _Invalid()
            return ir.Const(name, t, text)
        if lit.kind == "word":
            hint = did_you_mean(lit.text, OBJECTS)
            if t.kind in (Kind.TEXT, Kind.ANY):
                raise self.error(lit.span, f"'{lit.text}' is a bare word; text must be quoted",
                                 lit.text, wanted, f'"{lit.text}"')
            raise self.error(lit.span, f"unexpected name '{lit.text}'", lit.text, wanted,
                             f"{hint}.<attribute>" if hint else "")
        if t.kind in (Kind.TEXT, Kind.ANY):
            return ir.Const(lit.text, t, text)
        raise self.error(lit.span, f"text {text} does not fit {attr.path}", text, wanted)

    def _enum_name(self, lit: s.Literal, names: tuple[str, ...], label: str) -> str | None:
        for name in names:
            if name.lower() == lit.text.lower():
                return name
        self.error(lit.span, f"unknown {label.split(' ', 1)[1]} '{lit.text}'", lit.text,
                   one_of(names), did_you_mean(lit.text, names))
        return None

    def _number_literal(self, lit: s.Literal, attr: ir.Attr, text: str,
                        wanted: str) -> ir.Const:
        t = attr.type
        kind = t.kind
        value = self._number(lit)
        unit = unit_kind(lit.unit) if lit.unit else "number"
        if unit != "number":
            value = scaled(value, lit.unit)
            if unit == "size" and isinstance(value, float) and value.is_integer():
                value = int(value)
        if kind is Kind.ANY:
            return ir.Const(value, t, text)
        fits = {
            Kind.NUMBER: unit == "number",
            Kind.BYTES: unit == "size" or (unit == "number" and value == 0),
            Kind.DURATION: unit == "duration",
            Kind.FRACTION: unit == "fraction" or (unit == "number" and 0 <= value <= 1),
        }.get(kind, False)
        if fits:
            return ir.Const(value, t, text)
        suggestion = ""
        if kind is Kind.FRACTION and unit == "number":
            suggestion = f"{lit.text}%"
            found = f"{text} is not a fraction"
        elif unit == "number" and kind in (Kind.BYTES, Kind.DURATION):
            found = f"{text} has no unit"
        elif unit == "number":
            found = f"the number {text} does not fit {attr.path}"
        else:
            word = {"size": "a size", "duration": "a duration", "fraction": "a percentage"}[unit]
            found = f"{text} is {word}"
        raise self.error(lit.span, found, text, wanted, suggestion)

    # other tests

    def _operand_attr(self, node: s.Operand, scope: frozenset[str], what: str) -> ir.Attr:
        side = self._side(node, scope)
        if isinstance(side, s.Literal):
            raise self.error(node.span, f"'{self.text(node)}' is a constant; {what} tests an "
                             "attribute", self.text(node),
                             "an attribute such as item.name", self._word_hint(side))
        return side

    def _member(self, node: s.Member, scope: frozenset[str]) -> ir.Cond:
        attr = self._operand_attr(node.operand, scope, "'in'")
        if not node.values:
            raise self.error(node.set_span, "an empty set", "{}",
                             f"at least one value, {attr.type.describe()}")
        if attr.type.kind is Kind.BOOL:
            raise self.error(node.span, f"'in' does not apply to {attr.path}, a boolean",
                             self.text(node), "'==' or '!='")
        values = []
        failed = False
        for lit in node.values:
            try:
                const = self.literal(lit, attr)
            except _Invalid:
                failed = True
                continue
            values.append(const.value)
        if failed:
            raise _Invalid()
        return ir.InSet(attr, frozenset(values), node.negated)

    def _matches(self, node: s.Matches, scope: frozenset[str]) -> ir.Cond:
        attr = self._operand_attr(node.operand, scope, "'matches'")
        if attr.type.kind not in (Kind.TEXT, Kind.ENUM, Kind.ANY):
            raise self.error(node.span, f"'matches' does not apply to {attr.path}, which is "
                             f"{attr.type.noun()}", self.text(node),
                             "a text attribute such as item.name")
        pattern = node.pattern
        text = self.text(pattern)
        try:
            if pattern.kind == "string":
                regex = re.compile(fnmatch.translate(pattern.text))
            else:
                body, _, flags = pattern.text[1:].rpartition("/")
                bits = 0
                for flag in flags:
                    bits |= _REGEX_FLAGS[flag]
                regex = re.compile(body.replace("\\/", "/"), bits)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise self.error(pattern.span, f"invalid pattern {text}: {exc}", text,
                             "a valid glob or regular expression") from None
        return ir.Match(attr, regex, text, node.negated)

    def _age(self, node: s.AgeTest, scope: frozenset[str]) -> ir.Cond:
        attr = self._operand_attr(node.operand, scope, f"'{node.op}'")
        older = node.op == "older_than"
        value = node.value
        kind = attr.type.kind
        if kind not in (Kind.TIME, Kind.DURATION):
            raise self.error(node.operand.span, f"'{node.op}' does not apply to {attr.path}, "
                             f"which is {attr.type.noun()}", attr.path,
                             "a time such as item.created or item.last_access")
        if isinstance(value, s.Literal) and value.kind == "date" and kind is Kind.TIME:
            return ir.Compare("<" if older else ">", attr, ir.Const(self._date(value),
                                                                    attr.type, value.text))
        if not (isinstance(value, s.Literal) and value.kind == "number" and value.unit
                and unit_kind(value.unit) == "duration"):
            raise self.error(value.span, f"'{node.op}' needs a duration or a date",
                             self.text(value), "a duration such as 30d"
                             + (" or a date such as 2024-06-30" if kind is Kind.TIME else ""))
        seconds = float(self._number(value) * unit_factor(value.unit))
        if kind is Kind.DURATION:
            return ir.Compare(">" if older else "<", attr, ir.Const(seconds, attr.type,
                                                                    value.text))
        return ir.Age(attr, older, seconds)

    def _truth(self, node: s.Truth, scope: frozenset[str]) -> ir.Cond:
        operand = node.operand
        if isinstance(operand, s.Literal):
            if operand.kind in ("true", "false"):
                return ir.Literal(operand.kind == "true")
            raise self.error(node.span, f"'{self.text(operand)}' is not a condition",
                             self.text(operand), "a comparison such as item.size > 1 TB",
                             self._word_hint(operand))
        attr = self.attribute(operand, scope, self._where)
        if attr.type.kind not in (Kind.BOOL, Kind.ANY):
            raise self.error(node.span, f"{attr.path} is {attr.type.noun()}, not a "
                             "condition", attr.path,
                             f"a comparison such as {attr.path} {_example(attr.type)}")
        return ir.Truth(attr)


def _example(t: Type) -> str:
    return {
        Kind.TEXT: '== "x"', Kind.NUMBER: "> 0", Kind.BYTES: "> 1 TB",
        Kind.FRACTION: "> 90%", Kind.DURATION: "> 7d", Kind.TIME: "older_than 30d",
        Kind.ENUM: f"== {t.names[0] if t.names else 'X'}",
    }.get(t.kind, "== x")


def check(tree: s.PolicyFile) -> model.Policy:
    """Check and compile a parsed file; PolicyError lists every problem found."""
    return Checker(tree).check()
