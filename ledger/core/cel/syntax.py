"""A condition's text as celpy's parse tree: parsing (a syntax error as a positioned problem,
with a hint for the usual mistakes), and for the policy linter :func:`alternatives`, the
condition's ``||``/``&&`` shape read from the tree, and :func:`unguarded_reads`, the fields it
reads that may be absent without a ``has()`` guard."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Final

from ledger.core.text import clipped

__all__ = ["alternatives", "layout_free", "unguarded_reads"]


class _Problem(Exception):
    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


_UNWRAP: Final = frozenset(
    {
        "expr",
        "conditionalor",
        "conditionaland",
        "relation",
        "addition",
        "multiplication",
        "unary",
        "member",
        "primary",
    }
)


_LONE_EQUALS: Final = re.compile(r"(?<![=!<>])=(?!=)")
_SINGLE_AND_OR: Final = re.compile(r"(?<!&)&(?!&)|(?<!\|)\|(?!\|)")
_WORD_OPERATORS: Final = re.compile(r"\b(and|or|not)\b", re.IGNORECASE)
_CURLY_QUOTES: Final = "\u201c\u201d\u2018\u2019\u00ab\u00bb"


def _syntax_hint(text: str) -> str | None:
    """What a condition's author most likely meant, for the mistakes people make most."""
    curly = sorted({c for c in text if c in _CURLY_QUOTES})
    if curly:
        return f"curly quotes {''.join(curly)}: write text in straight quotes, \"…\" or '…'"
    bare = _strip_strings(text)
    for written, meant in (("=>", ">="), ("=<", "<=")):
        if written in bare:
            return f"{written} is not an operator: did you mean {meant}?"
    if _LONE_EQUALS.search(bare):
        return "use == to compare (= is not an operator)"
    single = _SINGLE_AND_OR.search(bare)
    if single:
        return f"a single {single.group(0)} is not an operator: write {single.group(0) * 2}"
    word = _WORD_OPERATORS.search(bare)
    if word:
        return (
            f"CEL writes {word.group(1)!r} as "
            + {"and": "&&", "or": "||", "not": "!"}[word.group(1).lower()]
        )
    for left, right, name in (("(", ")", "parenthesis"), ("[", "]", "bracket")):
        opened, closed = bare.count(left), bare.count(right)
        if opened != closed:
            return f"{opened} {left} but {closed} {right}: a {name} is not closed, or one too many"
    dangling = _DANGLING.search(bare)
    if dangling:
        return f"the condition ends with {dangling.group(1)!r}: something is missing after it"
    money = _MONEY.search(bare)
    if money:
        # A policy owner's walkthrough: `amount < 99,99`, `< $100`, `< 1,000.00` got no hint.
        return (
            f"{clipped(money.group(0).strip(), 40)!r}: write a number without a currency sign or thousands "
            "separators, with a point for the fraction: 99.99, 1000.00"
        )
    return None


# A currency sign before a number, or a comma inside one: not `f(a, 1)` (no space after it),
# nor a list's first items, `[1,2]`. Linear: a digit run is tried only from its start.
_MONEY: Final = re.compile(r"[$€£¥]\s*\d[\d,.]*|(?<![\[(,])\b\d+(?:,\d+)+(?:\.\d+)?")


# An operator with nothing after it (``a > 1 &&``): the parser's message names only the text.
_DANGLING: Final = re.compile(r"(&&|\|\||==|!=|<=|>=|<|>|!|\+|-|\*|/|%|\bin)\s*$")


def _strip_strings(text: str) -> str:
    """``text`` with its string literals blanked, so a hint never reads inside one. One pass
    left to right: a quote left open blanks the rest of the text (retrying the text after each
    such quote was quadratic, ~150 ms on a condition of escaped quotes)."""
    return _STRING.sub('""', text)


# A string to its closing quote, or to the end when none closes it; the loops are possessive,
# so a match never backtracks.
_STRING: Final = re.compile(
    r"\"(?:[^\"\\]|\\.)*+(?:\"|\\?\Z)|'(?:[^'\\]|\\.)*+(?:'|\\?\Z)", re.DOTALL
)


def _parse(text: str) -> Any:
    # Imported lazily: building the LALR parser is the slow part of loading a policy, and
    # modules that never see a condition (replay of grants only) should not pay for it.
    from celpy.celparser import CELParseError, CELParser
    from lark.exceptions import LarkError

    try:
        return CELParser().parse(text)
    except CELParseError as exc:
        first = str(exc).splitlines()[0] if str(exc).strip() else "syntax error"
        hint = _syntax_hint(text)
        raise _Problem(
            f"syntax error near {first.strip()!r}" + (f": {hint}" if hint else ""),
            exc.line,
            exc.column,
        ) from exc
    except LarkError as exc:
        raise _Problem(
            f"syntax error: {str(exc).splitlines()[0] if str(exc) else exc!r}", None, None
        ) from exc


def parses(text: str) -> bool:
    """Is ``text`` a condition by the grammar (names and types unchecked)? For hints."""
    try:
        _parse(text)
    except _Problem:
        return False
    return True


def layout_free(text: str) -> str:
    """The condition ``text`` in a form that ignores layout and redundant parentheses, and
    nothing else (``urgent==true`` and ``(urgent == true)`` are one form; ``a && b`` and ``b &&
    a`` are two): equal forms mean the same. The text must parse."""
    return layout_form(_parse(text))


def layout_form(tree: Any) -> str:
    """:func:`layout_free` of a condition already parsed (the compiler keeps it with what it
    compiles, so a grant's form costs no second parse)."""
    from lark import Token

    def key(node: Any) -> str:
        if isinstance(node, Token):
            return str(node)
        while (node.data in _UNWRAP or node.data == "paren_expr") and len(node.children) == 1:
            node = node.children[0]
            if isinstance(node, Token):
                return str(node)
        return f"{node.data}({','.join(key(c) for c in node.children)})"

    return key(tree)


def alternatives(text: str) -> tuple[frozenset[str], ...]:
    """A condition as the alternatives it joins with ``||`` at its top level, each the set of
    terms it joins with ``&&`` (both through parentheses): ``a && (b || c)`` is one alternative
    of two terms, ``(a && b) || c`` two alternatives. A term is in a form that ignores layout
    (``a>1`` and ``a > 1`` are one term); ``true`` terms are left out, so an alternative that
    always holds is empty. For finding rules an earlier rule shadows (:mod:`ledger.core.policy
    .lint`): the condition holds when all the terms of one alternative do. The text must compile
    (:func:`compile_condition`)."""
    from lark import Token

    def key(node: Any) -> str:
        if isinstance(node, Token):
            return str(node)
        while node.data in _UNWRAP and len(node.children) == 1:
            node = node.children[0]  # a precedence level with one operand is that operand
            if isinstance(node, Token):
                return str(node)
        return f"{node.data}({','.join(key(c) for c in node.children)})"

    return tuple(
        frozenset(k for k in map(key, _flat(alt, "conditionaland")) if k != "literal(true)")
        for alt in _flat(_parse(text), "conditionalor")
    )


def _bare(node: Any) -> Any:
    """Through one-operand precedence levels and parentheses to what a parse-tree node is."""
    from lark import Tree

    while isinstance(node, Tree) and len(node.children) == 1:
        if node.data not in _UNWRAP and node.data != "paren_expr":
            break
        node = node.children[0]
    return node


def _flat(node: Any, kind: str) -> list[Any]:
    """The operands of a chain of ``kind`` (``conditionaland``: ``a && b && c``), flattened."""
    from lark import Tree

    node = _bare(node)
    if isinstance(node, Tree) and node.data == kind:
        return [part for child in node.children for part in _flat(child, kind)]
    return [node]


def unguarded_reads(text: str, absent: Collection[str]) -> tuple[str, ...]:
    """The facts among ``absent`` (those a request may leave out) and the ``context.FIELD``s
    that the condition reads outside a ``has()`` guard, each once, in the order written. Such a
    read of a field the request left out makes the condition not true (see the package doc).

    A read is guarded where the condition says what absence means: beside ``has(x)`` in an
    ``&&`` (``has(x) && x > 1``: false without ``x``), beside ``!has(x)`` in an ``||``
    (``!has(x) || x > 1``: true without it), and in the branch of ``has(x) ? … : …`` that runs
    only with it (the other branch with ``!has(x)``); through parentheses and nesting. Any other
    form of guard is not recognised, and its reads are named. The text must compile
    (:func:`~ledger.core.cel.compile_condition`, which refuses a macro variable named as a fact
    or ``context``); a tree too deep to walk names nothing.
    """
    from lark import Token, Tree

    def field(node: Any) -> str | None:
        """``context.NAME`` when ``node`` (a ``member_dot``) reads the context's field NAME."""
        target, name = node.children
        target = _bare(target)
        is_context = isinstance(target, Tree) and target.data == "ident"
        if is_context and str(target.children[0]) == "context":
            return f"context.{name}"
        return None

    def has(node: Any) -> str | None:
        """What ``node`` tests the presence of, when it is ``has(x)``: x (or context.NAME)."""
        node = _bare(node)
        if not (isinstance(node, Tree) and node.data == "ident_arg" and len(node.children) == 2):
            return None
        if str(node.children[0]) != "has" or len(node.children[1].children) != 1:
            return None
        arg = _bare(node.children[1].children[0])
        if isinstance(arg, Tree) and arg.data == "ident":
            return str(arg.children[0])
        if isinstance(arg, Tree) and arg.data == "member_dot":
            return field(arg)
        return None

    def has_not(node: Any) -> str | None:
        """What ``node`` tests the absence of, when it is ``!has(x)``."""
        node = _bare(node)
        if isinstance(node, Tree) and node.data == "unary" and len(node.children) == 2:
            op, operand = node.children
            if isinstance(op, Tree) and op.data == "unary_not":
                return has(operand)
        return None

    found: dict[str, None] = {}

    def walk(node: Any, guarded: frozenset[str]) -> None:
        node = _bare(node)
        if isinstance(node, Token):
            return
        data, kids = node.data, node.children
        if data in ("conditionaland", "conditionalor"):
            sides = _flat(node, data)
            said = has if data == "conditionaland" else has_not  # what a side guards the others
            guards = {x for side in sides if (x := said(side)) is not None}
            for side in sides:
                walk(side, guarded | guards)
        elif data == "expr" and len(kids) == 3:  # cond ? a : b
            present, missing = has(kids[0]), has_not(kids[0])
            walk(kids[0], guarded)
            walk(kids[1], guarded | ({present} if present else set()))
            walk(kids[2], guarded | ({missing} if missing else set()))
        elif data == "ident_arg" and has(node) is not None:
            return  # has(x) reads nothing
        elif data == "ident":
            if str(kids[0]) in absent and str(kids[0]) not in guarded:
                found[str(kids[0])] = None
        elif data == "member_dot" and (read := field(node)) is not None:
            if read not in guarded:
                found[read] = None
        else:
            for kid in kids:
                walk(kid, guarded)

    try:
        walk(_parse(text), frozenset())
    except RecursionError:
        return ()
    return tuple(found)
