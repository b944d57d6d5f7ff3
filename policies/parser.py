"""Text -> syntax tree: the Lark LALR parser, built once per process, and its error messages.

Lark's own exceptions are translated here into `PolicyError` with the position, the token found,
the tokens that would have been accepted (in words an operator knows) and a suggestion when the
found word is close to an accepted keyword or unit.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from . import syntax as s
from .errors import Diagnostic, PolicyError, did_you_mean, one_of
from .units import ALL_UNITS, UNIT_WORDS

GRAMMAR_PATH = Path(__file__).with_name("grammar.lark")

# Terminals matched by a pattern, in the words an error message uses.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": "a quoted string",
    "NUMBER": "a number",
    "DATE": "a date",
    "UNIT": "a unit",
    "REGEX": "a /regex/",
    "$END": "end of file",
}
_WORD = re.compile(r"[A-Za-z_%][A-Za-z0-9_]*|[=!<>&|]+|\S")
# Operators from other languages, and what this one spells them as.
_SYMBOL_TYPOS = {"=": "==", "<>": "!=", "=<": "<=", "=>": ">=", "&&": "and", "&": "and",
                 "||": "or", "|": "or", "!": "not", "===": "=="}


class _WholeWords:
    """A pass-through post-lexer whose only job is ``always_accept``: it puts NAME in every state
    of the contextual lexer, so a keyword is only ever matched as a whole word. Without it,
    ``ascendng`` lexes as the keyword ``asc`` followed by garbage, and ``7days`` as ``7d`` and
    ``ays``; with it they arrive as one unexpected name the error message can quote and correct."""

    always_accept = ("NAME",)

    def process(self, stream):
        return stream


@functools.cache
def parser() -> Lark:
    """The policy parser. LALR with a contextual lexer: ~4 ms to build from Lark's cache, ~1 ms
    per 100 lines to parse (NOTES.md), so it is built once and shared."""
    return Lark(
        GRAMMAR_PATH.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        postlex=_WholeWords(),
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,
    )


def parse(text: str, filename: str = "<policy>") -> s.PolicyFile:
    """Parse a policy; raise PolicyError (never a Lark exception) on a syntax error."""
    try:
        tree = parser().parse(text)
    except UnexpectedInput as exc:
        raise PolicyError([_syntax_error(exc, text, filename)]) from None
    try:
        blocks = _Builder().transform(tree).children
    except RecursionError:
        raise PolicyError(
            [Diagnostic(filename, 1, 1, "conditions are nested too deeply to read")]
        ) from None
    return s.PolicyFile(filename, text, tuple(blocks))


# --- errors ----------------------------------------------------------------------------------

def _terminal_text(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    term = parser().get_terminal(name)
    if isinstance(term.pattern, PatternStr):
        return f"'{term.pattern.value}'"
    return name.lower()


def _keywords(names: set[str]) -> list[str]:
    words = []
    for name in names:
        if name in _TERMINAL_WORDS:
            continue
        pattern = parser().get_terminal(name).pattern
        if isinstance(pattern, PatternStr) and pattern.value[:1].isalpha():
            words.append(pattern.value)
    return words


def _expected(names: set[str]) -> str:
    texts = sorted({_terminal_text(n) for n in names}, key=lambda t: (not t.startswith("'"), t))
    return one_of(texts, quote=False, limit=16)


def _accepted(exc: UnexpectedInput, fallback) -> set[str]:
    """Terminals that really continue the text here. LALR merges look-ahead sets, so the set
    Lark reports can hold tokens valid only in other contexts; asking the interactive parser to
    try each one gives the exact list."""
    interactive = getattr(exc, "interactive_parser", None)
    if interactive is not None:
        try:
            return set(interactive.accepts())
        except UnexpectedInput:  # pragma: no cover - accepts() only probes
            pass
    return set(fallback or ())


def _suggest(found: str, names: set[str]) -> str:
    if found in _SYMBOL_TYPOS:
        return _SYMBOL_TYPOS[found]
    if not found[:1].isalpha() and found != "%":
        return ""
    candidates = _keywords(names)
    if "UNIT" in names:
        if found.lower() in UNIT_WORDS:
            return UNIT_WORDS[found.lower()]
        candidates += ALL_UNITS
    return did_you_mean(found, candidates)


def _syntax_error(exc: UnexpectedInput, text: str, filename: str) -> Diagnostic:
    if isinstance(exc, UnexpectedCharacters):
        match = _WORD.match(text, exc.pos_in_stream)
        found = match.group() if match else text[exc.pos_in_stream:exc.pos_in_stream + 1]
        if found == '"':
            return Diagnostic(filename, exc.line, exc.column,
                              "syntax error: unterminated string", found,
                              'a closing " on the same line')
        names = _accepted(exc, exc.allowed)
        return Diagnostic(
            filename, exc.line, exc.column, f"syntax error: unexpected '{found}'", found,
            _expected(names), _suggest(found, names),
        )
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        token = exc.token
        names = _accepted(exc, exc.expected)
        found = str(token)
        return Diagnostic(
            filename, token.line, token.column, f"syntax error: unexpected '{found}'", found,
            _expected(names), _suggest(found, names),
        )
    # End of file in the middle of something (UnexpectedEOF, or UnexpectedToken at $END).
    expected = _accepted(exc, getattr(exc, "expected", ()))
    line = text.count("\n") + 1
    column = len(text) - (text.rfind("\n") + 1) + 1
    return Diagnostic(
        filename, line, column, "syntax error: unexpected end of file", "",
        _expected(expected) if expected else "",
    )


# --- parse tree -> syntax tree -----------------------------------------------------------------

def _span(meta) -> s.Span:
    return s.Span(meta.line, meta.column, meta.start_pos, meta.end_pos)


def _tspan(token: Token) -> s.Span:
    return s.Span(token.line, token.column, token.start_pos, token.end_pos)


def _unquote(token: Token) -> str:
    """Body of a "..." string: \\" and \\\\ and \\n, \\t are escapes; any other backslash stays,
    so a glob or pattern keeps its backslashes."""
    body = token[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({'"': '"', "\\": "\\", "n": "\n", "t": "\t"}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _string(token: Token) -> s.Literal:
    return s.Literal(_tspan(token), "string", _unquote(token))


def _literal(node) -> s.Literal:
    if isinstance(node, s.Literal):
        return node
    if isinstance(node, Token):
        if node.type == "STRING":
            return _string(node)
        if node.type == "REGEX":
            return s.Literal(_tspan(node), "regex", str(node))
    raise TypeError(node)  # pragma: no cover - the grammar produces no other literal


def _operand(node) -> s.Operand:
    if isinstance(node, s.Attribute):
        if len(node.parts) == 1:  # a bare word: READY, draining, SOLID
            return s.Literal(node.span, "word", node.parts[0])
        return node
    return _literal(node)


def _word(tree: Tree) -> tuple[str, s.Span]:
    token = tree.children[0]
    return str(token), _tspan(token)


@v_args(meta=True)
class _Builder(Transformer):
    """Builds `syntax` nodes bottom-up; never raises for any tree the grammar can produce."""

    # literals
    def quantity(self, meta, children):
        number, unit = children
        return s.Literal(_span(meta), "number", str(number), str(unit or ""),
                         _tspan(unit) if unit is not None else None)

    def date(self, meta, children):
        return s.Literal(_span(meta), "date", str(children[0]))

    def true(self, meta, children):
        return s.Literal(_span(meta), "true", "true")

    def false(self, meta, children):
        return s.Literal(_span(meta), "false", "false")

    def none(self, meta, children):
        return s.Literal(_span(meta), "none", "none")

    def now(self, meta, children):
        return s.Literal(_span(meta), "now", "now")

    def word(self, meta, children):
        return s.Literal(_span(meta), "word", str(children[0]))

    def attribute(self, meta, children):
        parts = tuple(_unquote(c) if c.type == "STRING" else str(c) for c in children)
        return s.Attribute(_span(meta), parts, tuple(_tspan(c) for c in children))

    def value_set(self, meta, children):
        return s.NameSet(_span(meta), tuple(_literal(c) for c in children if c is not None))

    name_set = value_set

    # conditions
    def compare(self, meta, children):
        left, op, right = children
        text, op_span = _word(op)
        return s.Compare(_span(meta), text, _operand(left), _operand(right), op_span)

    def member(self, meta, children):
        operand, negated, values = children
        return s.Member(_span(meta), _operand(operand), values.names, negated is not None,
                        values.span)

    def matches(self, meta, children):
        operand, negated, pattern = children
        return s.Matches(_span(meta), _operand(operand), _literal(pattern), negated is not None)

    def age_test(self, meta, children):
        operand, op, value = children
        return s.AgeTest(_span(meta), _word(op)[0], _operand(operand), _operand(value))

    def truth(self, meta, children):
        return s.Truth(_span(meta), _operand(children[0]))

    def negation(self, meta, children):
        return s.Not(_span(meta), children[0])

    def and_cond(self, meta, children):
        return s.And(_span(meta), tuple(children))

    def or_cond(self, meta, children):
        return s.Or(_span(meta), tuple(children))

    # partition
    def partition(self, meta, children):
        name, *clauses = children
        return s.PartitionDecl(_span(meta), _string(name), tuple(clauses))

    def members(self, meta, children):
        return s.Clause(_span(meta), "members", children[0])

    def storages(self, meta, children):
        value = children[0]
        if isinstance(value, s.NameSet):
            return s.StorageNames(_span(meta), value)
        return s.Clause(_span(meta), "storages", value)

    def quota(self, meta, children):
        target, amount = children
        return s.Quota(_span(meta), target, amount)

    def quota_target(self, meta, children):
        return _string(children[0])

    def default_target(self, meta, children):
        return None

    # detox
    def detox(self, meta, children):
        return s.DetoxDecl(_span(meta), tuple(children))

    def on(self, meta, children):
        return s.Clause(_span(meta), "on", children[0])

    def when(self, meta, children):
        return s.Clause(_span(meta), "when", children[0])

    def until(self, meta, children):
        return s.Clause(_span(meta), "until", children[0])

    def action(self, meta, children):
        return children[0]

    def rule(self, meta, children):
        action, label, condition = children
        return s.RuleDecl(_span(meta), str(action), _tspan(action),
                          _string(label) if label is not None else None, condition)

    def default(self, meta, children):
        action, label = children
        return s.DefaultDecl(_span(meta), str(action), _tspan(action),
                             _string(label) if label is not None else None)

    def direction(self, meta, children):
        return children[0]

    def order_key(self, meta, children):
        attribute, direction = children
        return s.OrderKey(_span(meta), attribute, str(direction or ""))

    def order(self, meta, children):
        return s.OrderDecl(_span(meta), tuple(children))

    # dealer
    def dealer(self, meta, children):
        return s.DealerDecl(_span(meta), tuple(children))

    def placement_where(self, meta, children):
        return children

    def phase(self, meta, children):
        name, copies, (to, source) = children
        return s.PlacementDecl(_span(meta), s.Literal(_tspan(name), "word", str(name)), None,
                               None, copies, *_where(to, source))

    def place(self, meta, children):
        label, condition, copies, (to, source) = children
        return s.PlacementDecl(_span(meta), None,
                               _string(label) if label is not None else None,
                               condition, copies, *_where(to, source))

    def setting_name(self, meta, children):
        return children[0]

    def setting(self, meta, children):
        name, value = children
        return s.Setting(_span(meta), str(name), value)

    def setting_to(self, meta, children):
        return s.Clause(_span(meta), "to", children[0])

    def popularity(self, meta, children):
        return s.SettingsDecl(_span(meta), "popularity", tuple(children))

    def balance(self, meta, children):
        return s.SettingsDecl(_span(meta), "balance", tuple(children))

    def limits(self, meta, children):
        return s.SettingsDecl(_span(meta), "limits", tuple(children))


def _where(to, source) -> tuple[s.Clause | None, s.Clause | None]:
    def clause(keyword: str, cond):
        if cond is None:
            return None
        return s.Clause(cond.span, keyword, cond)

    return clause("to", to), clause("from", source)
