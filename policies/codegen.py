"""Checked conditions -> Python functions, generated as source and compiled once.

Why generated code rather than a tree of closures: a Detox cycle evaluates every rule of a policy
for millions of replicas, and a closure tree pays one Python call per node. Writing each policy out
as the function an engineer would have written by hand (one ``if`` per rule, attribute reads and
comparisons inline, constants folded by CPython) keeps the policy within a few percent of that
hand-written function (benchmarks/bench_policy.py).

Safety: the source is built only from checked IR. Attribute names come from the schema table,
literal values are emitted with ``repr`` (always a valid literal) and patterns are passed as
objects in the namespace, never as text; the code runs with no builtins at all.

In *explain* mode every attribute read is wrapped in ``_r(path, value)``, a recorder supplied by
the caller, so ``dlm policy explain`` shows exactly the values the rule looked at, from the same
code path that makes the decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import ir
from .schema import PHASE_RANK, Kind

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_MISSING = object()


def _dig(mapping: Any, keys: Sequence[str]) -> Any:
    """item.metadata.a.b: nested lookup that yields None for a missing key or a non-mapping."""
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _order(op: str, left: Any, right: Any) -> bool:
    """An ordering test on a metadata value, whose type is unknown until run time: numbers
    compare with numbers and text with text; anything else (none, a list, text against a number)
    is simply false rather than an error in the middle of a cycle."""
    if isinstance(left, bool) or isinstance(right, bool):
        return False
    numbers = (int, float)
    if not ((isinstance(left, numbers) and isinstance(right, numbers))
            or (isinstance(left, str) and isinstance(right, str))):
        return False
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


def _in_any(value: Any, values: frozenset) -> bool:
    """Set membership for a metadata value that may be unhashable (a list, a dict)."""
    try:
        return value in values
    except TypeError:
        return False


def _low(value: Any) -> float:
    """Sort-key helper: none sorts before every value."""
    return -math.inf if value is None else value


_HELPERS: dict[str, Any] = {
    "_RANK": PHASE_RANK, "_dig": _dig, "_order": _order, "_in_any": _in_any, "_low": _low,
    "_str": str,
}


class Emitter:
    """Writes the Python expression for one or more conditions; collects the namespace."""

    def __init__(self, explain: bool = False) -> None:
        self.explain = explain
        self.namespace: dict[str, Any] = {"__builtins__": {}, **_HELPERS}
        self._temps = 0

    def constant(self, value: object, prefix: str = "_k") -> str:
        name = f"{prefix}{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def _temp(self) -> str:
        self._temps += 1
        return f"_t{self._temps}"

    # --- operands ---

    def read(self, attr: ir.Attr) -> str:
        spec = attr.spec
        # item.age is derived from the time, so views need no clock
        expr = f"(now - {spec.obj}.{spec.age_of})" if spec.age_of else f"{spec.obj}.{spec.name}"
        if len(attr.keys) == 1:
            expr = f"{expr}.get({attr.keys[0]!r})"
        elif attr.keys:
            expr = f"_dig({expr}, {attr.keys!r})"
        if self.explain:
            expr = f"_r({attr.path!r}, {expr})"
        return expr

    def _operand(self, operand: ir.Operand, ranked: bool) -> str:
        if isinstance(operand, ir.Attr):
            expr = self.read(operand)
            return f"_RANK.get({expr}, -1)" if ranked else expr
        if operand.is_now:
            return "now"
        value = PHASE_RANK[operand.value] if ranked else operand.value
        return repr(value)

    # --- conditions ---

    def cond(self, node: ir.Cond) -> str:
        if isinstance(node, ir.Compare):
            return self._compare(node)
        if isinstance(node, ir.InSet):
            return self._in_set(node)
        if isinstance(node, ir.Match):
            return self._match(node)
        if isinstance(node, ir.Age):
            return self._age(node)
        if isinstance(node, ir.Truth):
            return f"({self.read(node.operand)})"
        if isinstance(node, ir.Literal):
            return repr(node.value)
        if isinstance(node, ir.Not):
            return f"(not {self.cond(node.operand)})"
        joiner = " and " if isinstance(node, ir.And) else " or "
        return "(" + joiner.join(self.cond(item) for item in node.items) + ")"

    def _compare(self, node: ir.Compare) -> str:
        left, right, op = node.left, node.right, node.op
        if isinstance(left, ir.Const):  # the checker keeps an attribute on the left
            left, right, op = right, left, _FLIP[op]
        assert isinstance(left, ir.Attr)
        kind = left.type.kind
        if op in ("==", "!="):
            # none by identity; a boolean metadata value by identity too, so that 1 == true
            # (Python's bool is an int) does not hold for a metadata value.
            if isinstance(right, ir.Const) and not right.is_now and (
                    right.value is None
                    or (isinstance(right.value, bool) and kind is Kind.ANY)):
                word = "is" if op == "==" else "is not"
                return f"({self.read(left)} {word} {right.value!r})"
            return f"({self._operand(left, False)} {op} {self._operand(right, False)})"
        if kind is Kind.ANY or (isinstance(right, ir.Attr) and right.type.kind is Kind.ANY):
            return f"_order({op!r}, {self._operand(left, False)}, {self._operand(right, False)})"
        ranked = kind is Kind.ENUM
        lhs, rhs = self._operand(left, ranked), self._operand(right, ranked)
        guards = []
        if left.type.nullable:
            temp = self._temp()
            guards.append(f"({temp} := {lhs}) is not None")
            lhs = temp
        if isinstance(right, ir.Attr) and right.type.nullable:
            temp = self._temp()
            guards.append(f"({temp} := {rhs}) is not None")
            rhs = temp
        return "(" + " and ".join([*guards, f"{lhs} {op} {rhs}"]) + ")"

    def _in_set(self, node: ir.InSet) -> str:
        value = self.read(node.operand)
        if node.operand.type.kind is Kind.ANY:
            test = f"_in_any({value}, {self.constant(node.values)})"
            return f"(not {test})" if node.negated else test
        members = sorted(node.values, key=repr)
        literal = "{" + ", ".join(repr(v) for v in members) + "}"
        return f"({value} {'not in' if node.negated else 'in'} {literal})"

    def _match(self, node: ir.Match) -> str:
        method = self.constant(node.regex.search if node.text.startswith("/")
                               else node.regex.match, "_m")
        value = self.read(node.operand)
        if node.operand.type.kind is Kind.TEXT and not node.operand.type.nullable:
            test = f"{method}({value}) is not None"
        else:
            temp = self._temp()
            test = f"({temp} := {value}).__class__ is _str and {method}({temp}) is not None"
        return f"(not ({test}))" if node.negated else f"({test})"

    def _age(self, node: ir.Age) -> str:
        op = ">" if node.older else "<"
        value = self.read(node.operand)
        if node.operand.type.nullable:
            temp = self._temp()
            return f"(({temp} := {value}) is not None and now - {temp} {op} {node.seconds!r})"
        return f"(now - {value} {op} {node.seconds!r})"

    def sort_key(self, keys: Sequence[tuple[ir.Attr, bool]]) -> str:
        parts = []
        for attr, descending in keys:
            expr = self.read(attr)
            if attr.type.kind is Kind.ENUM:
                expr = f"_RANK.get({expr}, -1)"
            elif attr.type.nullable:
                expr = f"_low({expr})"
            parts.append(f"-{expr}" if descending else expr)
        return "(" + "".join(f"{p}, " for p in parts) + ")"


SIGNATURE = "item, replica, storage, now"


def build(source: str, name: str, namespace: dict[str, Any], filename: str) -> Callable:
    """Compile generated ``source`` and return the function ``name`` it defines."""
    code = compile(source, f"<policy {filename}>", "exec")
    exec(code, namespace)
    return namespace[name]


def condition_function(condition: ir.Condition, filename: str,
                       explain: bool = False) -> Callable[..., bool]:
    """``f(item, replica, storage, now)`` -> bool; in explain mode a fifth argument, the
    recorder ``_r(path, value) -> value``."""
    emitter = Emitter(explain)
    params = SIGNATURE + (", _r" if explain else "")
    source = (f"def condition({params}):\n"
              f"    return True if {emitter.cond(condition.expr)} else False\n")
    return build(source, "condition", emitter.namespace, filename)


def decide_function(guard: ir.Condition | None, guard_result: object,
                    rules: Sequence[tuple[ir.Condition, object]], default: object,
                    filename: str) -> Callable[..., object]:
    """The first-match function: ``if not guard: return guard_result``, then one ``if`` per rule
    returning that rule's result, then the default."""
    emitter = Emitter()
    lines = [f"def decide({SIGNATURE}):"]
    if guard is not None:
        lines.append(f"    if not {emitter.cond(guard.expr)}:")
        lines.append(f"        return {emitter.constant(guard_result, '_rule')}")
    for condition, result in rules:
        lines.append(f"    if {emitter.cond(condition.expr)}:")
        lines.append(f"        return {emitter.constant(result, '_rule')}")
    lines.append(f"    return {emitter.constant(default, '_rule')}")
    return build("\n".join(lines) + "\n", "decide", emitter.namespace, filename)


def sort_key_function(keys: Sequence[tuple[ir.Attr, bool]], filename: str) -> Callable[..., tuple]:
    emitter = Emitter()
    source = f"def sort_key({SIGNATURE}):\n    return {emitter.sort_key(keys)}\n"
    return build(source, "sort_key", emitter.namespace, filename)
