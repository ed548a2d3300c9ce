"""Type checking and translation of a parsed condition to the source of one Python function:
:func:`compile_condition`, its :class:`CompiledCondition`, and the diagnostics of its type
errors."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import re2

from ledger.core.cel.lexical import (
    _decode_string,
    parse_duration,
    parse_timestamp,
    timestamp_example,
)
from ledger.core.cel.runtime import (
    _HELPERS,
    _ITEMS_PER_UNIT,
    _RE2_INSTRUCTIONS_PER_WEIGHT,
    _W_CALL,
    _W_COMMUTE,
    _W_DECIMAL,
    _W_EXACT_FLOAT,
    _W_HASH,
    _W_OP,
    INT64_MAX,
    INT64_MIN,
    ConditionFault,
    ConditionFn,
    Meter,
)
from ledger.core.cel.syntax import _UNWRAP, _parse, _Problem, layout_form
from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.errors import PolicyError, PolicyProblem

__all__ = ["CompiledCondition", "RegexBudget", "compile_condition"]

# Static types are plain strings: "int", "double", "decimal", "string", "bool", "null",
# "timestamp", "duration", "list<T>", "dyn" (unknown until run time: context values).
_NUMERIC: Final = frozenset({"int", "double", "decimal"})


# RE2 options for ``matches``: only "is there a match" is asked, so no capture groups; errors are
# reported as policy problems, not logged to stderr by the C++ library; RE2's default memory
# budget, stated so a change of default does not change what compiles.
_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.never_capture = True
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 8 << 20
_RE2_NEW: Final = re2.Options()
_RE2_NEW.never_capture = True
_RE2_NEW.log_errors = False
_RE2_NEW.max_mem = 256 << 10
"""A new pattern's (a proposal's, a grant's being admitted): RE2 builds a large class's
program slowly (~0.3 µs per instruction: ``\\pL{400}``, 478,000 instructions, took 150-220 ms,
and ``\\pL{1000}`` ~50 ms to fail at 8 MiB), and a red team's proposals of 101 such patterns
held the command processor ~7 s each. At 256 KiB, ~16,000 instructions (``\\pL{13}``,
``.{1000}`` is 8,000): ~4 ms to compile at most, ~1.3 ms to fail. A recorded version's and a
grant's a replay compiles again keep 8 MiB: they load as they were accepted."""
_NEW_FAILURE_CHARGE: Final = (256 << 10) // 16
"""What a new pattern RE2 found too large is charged to :class:`RegexBudget` (about the
instructions 256 KiB holds: its compile did that much work before it failed)."""
_UNICODE_CLASS_CHARGE: Final = 64
"""What each ``\\p``/``\\P`` class of a new pattern is charged beside its program: RE2 parses
the class (~0.05 ms for ``\\pL``) even where the program drops it (``{0}``). A review: 256
refused a policy of 12 name patterns of six classes each, compiled in ~14 ms."""
_FOLDED_CLASS_CHARGE: Final = 128
"""The same in a pattern that folds case (``(?i)``): RE2 folds each class, ~0.23 ms for
``(?i)\\PL`` (a red team's hundred of them, 4 instructions, took 15-23 ms), far less for most
(a second review: 256 refused twelve case-folding name patterns that compile in ~7 ms)."""
_REPEAT_CHARGE_PER: Final = 16
"""A counted repetition of a new pattern is charged its bound over this (a red team's
``(?:a{0,1000}){0}`` sixty times, 4 instructions, took ~3 ms to compile: RE2's simplifier
expands the inner repetition before the outer ``{0}`` drops it)."""
_FOLDS: Final = re.compile(r"(?<!\\)\(\?[a-zA-Z]*i")  # not an escaped paren: `\(?item`
_COUNTED: Final = re.compile(r"\{([0-9]{1,6})(?:,([0-9]{0,6}))?\}")


def _parse_charge(text: str) -> int:
    """What a new pattern's parse costs RE2 beyond its program (see the charges above)."""
    classes = text.count("\\p") + text.count("\\P")
    per = _FOLDED_CLASS_CHARGE if _FOLDS.search(text) else _UNICODE_CLASS_CHARGE
    repeats = sum(int(hi or lo) for lo, hi in _COUNTED.findall(text))
    return classes * per + repeats // _REPEAT_CHARGE_PER


class RegexBudget:
    """The RE2 instructions the new ``matches`` patterns of one policy document (or one grant
    condition) may compile to together (``limits.regex_program``), and the patterns compiled so
    far, by text (one written in several rules is compiled once, and charged once)."""

    __slots__ = ("compiled", "left")

    def __init__(self, instructions: int) -> None:
        self.left = instructions
        self.compiled: dict[str, tuple[Any, int]] = {}


_NEGATE: Final[dict[str, tuple[str, int]]] = {
    "int": ("_isub(0, {})", _W_CALL),
    "decimal": ("_dsub(0, {})", _W_DECIMAL),
    "dyn": ("_dneg({})", _W_CALL),
}
"""Unary minus by operand type: code (``{}`` the operand) and weight (see the cost model)."""
_OP_FN: Final = {"==": "_eq", "!=": "_ne", "<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge"}
"""CEL's comparison operators (:mod:`.runtime`), for operands of which one may be a dyn."""
_BOOL_OR_NUMBER: Final = frozenset({"bool", "int", "double", "decimal"})
"""What a dyn compared for equality with may be taken for the other by Python (``true == 1``):
such a comparison is CEL's own; ``context.channel == "web"`` stays Python's, as fast as ever."""


def _double_literal(e: _Expr) -> _Expr | None:
    """``e`` if it is a double literal written in the condition (its digits known), else None."""
    return e if e.type == "double" and e.literal is not None and e.const is not _NO_CONST else None


_OTHER_MACROS: Final = frozenset({"exists_one", "map", "filter", "transformList", "transformMap"})
"""CEL's macros outside the subset, named as such (their variable is not an undeclared fact)."""


# ----------------------------------------------------------------------------- compiled result


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledCondition:
    """A checked, compiled condition.

    ``fn(facts, context)`` is the raw compiled function (raises ``KeyError`` on absence);
    :meth:`evaluate` applies the documented semantics and is what non-hot-path callers use.
    """

    source: str
    fn: ConditionFn = field(repr=False, compare=False)
    references: frozenset[str]
    """Fact names the condition reads (``has(x)`` counts)."""
    context_fields: frozenset[str] = frozenset()
    python: str = field(default="", repr=False, compare=False)
    metered: bool = False
    """Does the condition charge a :class:`Meter` (macros, string or regex work)? If not, ``fn``
    may be called with ``meter=None``."""
    form: str | None = field(default=None, repr=False, compare=False)
    """The condition in a form that ignores layout and redundant parentheses
    (:func:`~ledger.core.cel.layout_free`; equal forms mean the same), worked out from the tree
    compiled; ``None`` when it could not be (too deep for its walk)."""

    def evaluate(
        self,
        facts: Mapping[str, Any],
        context: Mapping[str, Any],
        *,
        meter: Meter | None = None,
    ) -> bool:
        """True when the condition holds; false when it is false or its value depends on an
        absent fact or context field (see the package doc).

        Raises :class:`ConditionFault` for run-time faults on present values, and its subclass
        :class:`BudgetExceeded` when ``meter`` (default: a fresh one with the default budget)
        runs out.
        """
        if meter is None:
            meter = Meter(DEFAULT_LIMITS.evaluation_cost)
        try:
            return bool(self.fn(facts, context, meter))
        except KeyError:
            return False
        except (ArithmeticError, TypeError, ValueError, AttributeError) as exc:
            raise ConditionFault(f"{self.source!r}: {exc}") from exc


_NO_CONST: Final = object()


@dataclass(frozen=True, slots=True)
class _Expr:
    code: str
    type: str
    const: object = _NO_CONST
    literal: str | None = None  # numeric literal source text, so it can become an exact Decimal
    enum_fact: str | None = None  # set when the expression is an enum fact
    fact: str | None = None  # set when the expression reads a declared fact
    weight: int = 0
    """Static cost of evaluating it once, in work units (what a macro charges per element)."""
    fallible: bool = False
    """Can evaluating it raise absence (KeyError) or a fault? Decided from the condition's shape:
    it reads an optional fact or a context field, or has an operation that can fault."""


def _compatible(a: str, b: str) -> bool:
    if a == "dyn" or b == "dyn" or a == b:
        return True
    if a in _NUMERIC and b in _NUMERIC:
        return True
    if a.startswith("list<") and b.startswith("list<"):
        return _compatible(a[5:-1], b[5:-1])
    return False


_REL_OPS: Final = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
}
_ARITH_OPS: Final = {
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
}


class _Compiler:
    def __init__(
        self,
        text: str,
        facts: Mapping[str, str] | None,
        enums: Mapping[str, tuple[str, ...]],
        limits: Limits,
        optional: Collection[str] | None,
        new_document: bool = True,
        new_grant: bool = False,
        regex_budget: RegexBudget | None = None,
    ) -> None:
        self.text = text
        self.new_document = new_document  # false: the checks that came later are left out
        # Literals held to the rules added since (2026-12-07): a new policy's, a grant's being
        # admitted; not a recorded version's, nor a grant a replay compiles again (a review:
        # grant conditions got none of it).
        self.exact_literals = new_grant or (new_document and facts is not None)
        # New patterns are held to a smaller RE2 program, together (a red team's).
        self.regex_budget = (
            (regex_budget or RegexBudget(limits.regex_program)) if self.exact_literals else None
        )
        self.patterns: dict[str, tuple[Any, int]] = {}  # both walks of one condition: once
        self.facts = facts  # None: dynamic mode (grant conditions), every identifier is a dyn fact
        self.enums = enums
        self.limits = limits
        self.optional = optional  # facts that may be absent; None: any of them
        self.namespace: dict[str, Any] = dict(_HELPERS)
        self.refs: set[str] = set()
        self.context_fields: set[str] = set()
        self.scopes: list[dict[str, tuple[str, str]]] = []
        self.metered = False  # set when the generated code charges the meter
        self.commutative = False  # the second walk: CEL's commutative ||, &&, exists(), all()
        self.commuted = False  # set when that walk emitted one (its code differs from the first)
        self._n = 0

    def op(
        self, code: str, type_: str, *kids: _Expr, weight: int = _W_OP, fallible: bool = False
    ) -> _Expr:
        """An operation of ``weight`` units on ``kids``: it weighs what they do plus itself, and
        is fallible if it can fault itself or any of them can."""
        return _Expr(
            code,
            type_,
            weight=weight + sum(k.weight for k in kids),
            fallible=fallible or any(k.fallible for k in kids),
        )

    def charged(self, code: str, type_: str, *kids: _Expr, fallible: bool = False) -> _Expr:
        """An operation that charges the meter itself, at run time, for its data-sized work."""
        self.metered = True
        return self.op(code, type_, *kids, weight=0, fallible=fallible)

    # -- helpers
    def _pos(self, node: Any) -> tuple[int | None, int | None]:
        meta = getattr(node, "meta", None)
        if meta is not None and not getattr(meta, "empty", True):
            return meta.line, meta.column
        return getattr(node, "line", None), getattr(node, "column", None)

    def _meant(self, name: str) -> str:
        """A hint for an undeclared name: a value of an enum fact written without quotes
        (``category == meals``: the likeliest slip, since test files write it bare), a fact
        the condition cannot see (``action``, ``resource``, ``principal``), else a near name."""
        holders = [fact for fact, values in self.enums.items() if name in values][:3]
        if holders:
            return (
                f" ({name!r} is a value of {', '.join(holders)}: write it as text, "
                f'{holders[0]} == "{name}")'
            )
        if name.lower() in ("true", "false", "null", "none") and name != name.lower():
            meant = "null" if name.lower() == "none" else name.lower()
            return f" (did you mean {meant}? CEL writes it in lower case)"
        if name in _REQUEST_NAMES:
            return (
                f" (a condition sees the facts and context.*, not the request's {name}: a rule "
                "for one action of several belongs in a policy of its own, or pass it as a fact)"
            )
        if name in _CLOCK_NAMES:
            return (
                " (a condition has no clock: the agent sends the time as a fact, say a "
                "timestamp requested_at, and the rule compares that: requested_at < "
                'timestamp("2027-01-01T00:00:00Z"))'
            )
        meant = _did_you_mean(name, self.facts or {})
        if meant or len(name) > _HINT_NAME_CHARS:
            return meant
        # A policy owner's walkthrough: `context.channel == phone` said only "undeclared fact".
        return f' (if it is a text value, quote it: "{name}")'

    def fail(self, node: Any, message: str) -> _Problem:
        line, column = self._pos(node)
        return _Problem(message, line, column)

    def const(self, value: object, type_: str, literal: str | None = None) -> _Expr:
        if type(value) in (int, str, bool) or value is None:
            code = repr(value)
        else:
            self._n += 1
            name = f"_k{self._n}"
            self.namespace[name] = value
            code = name
        return _Expr(code, type_, value, literal)

    def as_decimal(self, e: _Expr) -> _Expr:
        # A numeric literal next to a decimal becomes the exact Decimal of its source text.
        if e.literal is not None and e.type in ("int", "double"):
            return self.const(Decimal(e.literal), "decimal", e.literal)
        return e

    def coerce_pair(self, a: _Expr, b: _Expr) -> tuple[_Expr, _Expr]:
        if a.type == "decimal":
            b = self.as_decimal(b)
        if b.type == "decimal":
            a = self.as_decimal(a)
        return a, b

    def boolean(self, e: _Expr, node: Any, what: str) -> _Expr:
        if e.type == "bool":
            return e
        if e.type == "dyn":
            return self.op(f"_truth({e.code})", "bool", e, weight=_W_CALL, fallible=True)
        raise self.fail(node, f"{what} must be a bool, got {e.type}")

    # -- the walk
    def walk(self, node: Any) -> _Expr:
        data = node.data
        kids = node.children
        if data in _UNWRAP and len(kids) == 1:
            return self.walk(kids[0])
        if data == "expr":
            cond = self.boolean(self.walk(kids[0]), kids[0], "the condition of ?:")
            a, b = self.coerce_pair(self.walk(kids[1]), self.walk(kids[2]))
            if not _compatible(a.type, b.type):
                raise self.fail(
                    node, f"both branches of ?: must have one type, got {a.type} and {b.type}"
                )
            # Either branch dyn, the result is dyn: used as a condition it must still be a
            # bool (typed by the other branch, a "no" from the context passed for a match).
            t = "dyn" if "dyn" in (a.type, b.type) else a.type
            return self.op(f"({a.code} if {cond.code} else {b.code})", t, cond, a, b)
        if data in ("conditionalor", "conditionaland"):
            # A chain a || b || c (or of &&), walked from this frame (deep conditions reach
            # Python's recursion limit): plain Python or/and, except in the commutative walk
            # when a side other than the last can raise (see _or).
            side_nodes = []
            while node.data == data and len(node.children) == 2:
                side_nodes.append(node.children[1])
                node = node.children[0]
            side_nodes.append(node)
            sides: list[_Expr] = []
            for side_node in reversed(side_nodes):
                sides.append(self.boolean(self.walk(side_node), side_node, "an operand of ||/&&"))
            if self.commutative and any(side.fallible for side in sides[:-1]):
                # Every side a thunk: evaluated in order, each at most once, none after a
                # decisive one; one call however long the chain, so no deeper than the plain form.
                self.commuted = True
                fn = "_or" if data == "conditionalor" else "_and"
                thunks = ", ".join(f"lambda: {side.code}" for side in sides)
                return self.op(f"{fn}({thunks})", "bool", *sides, weight=_W_COMMUTE * len(sides))
            op = "or" if data == "conditionalor" else "and"
            code = sides[0].code
            for side in sides[1:]:
                code = f"({code} {op} {side.code})"
            return self.op(code, "bool", *sides, weight=_W_OP * (len(sides) - 1))
        if data == "relation":
            op_node = kids[0]
            return self.relation(
                _REL_OPS[op_node.data], self.walk(op_node.children[0]), self.walk(kids[1]), node
            )
        if data in ("addition", "multiplication"):
            op_node = kids[0]
            return self.arith(
                _ARITH_OPS[op_node.data], self.walk(op_node.children[0]), self.walk(kids[1]), node
            )
        if data == "unary":
            operand = self.walk(kids[1])
            if kids[0].data == "unary_not":
                b = self.boolean(operand, kids[1], "the operand of !")
                return self.op(f"(not {b.code})", "bool", b)
            if operand.type in _NUMERIC or operand.type in ("duration", "dyn"):
                if operand.const is not _NO_CONST and operand.literal is not None:
                    lit = (
                        operand.literal[1:]
                        if operand.literal.startswith("-")
                        else "-" + operand.literal
                    )
                    return self.const(-operand.const, operand.type, lit)  # type: ignore[operator]  # a literal of a numeric type or a duration: it negates
                # Negation is arithmetic like any other: 64-bit ints, decimals in the fixed
                # context (Python's unary minus rounds to the thread's), dyn by its value;
                # a double cannot fault, -duration.min overflows.
                negate = _NEGATE.get(operand.type)
                if negate is not None:
                    code, weight = negate
                    return self.op(
                        code.format(operand.code),
                        operand.type,
                        operand,
                        weight=weight,
                        fallible=True,
                    )
                return self.op(
                    f"(-{operand.code})",
                    operand.type,
                    operand,
                    fallible=operand.type == "duration",
                )
            raise self.fail(node, f"cannot negate a {operand.type}")
        if data == "literal":
            return self.literal(kids[0])
        if data == "ident":
            return self.ident(kids[0])
        if data == "paren_expr":
            return self.walk(kids[0])
        if data == "list_lit":
            return self.list_lit(node)
        if data == "member_dot":
            return self.member_dot(node)
        if data == "member_dot_arg":
            return self.method(node)
        if data == "ident_arg":
            return self.function(node)
        if data == "member_index":
            raise self.fail(node, "indexing (x[i]) is not supported")
        if data in ("map_lit", "member_object"):
            raise self.fail(node, "map and message literals are not supported")
        if data in ("dot_ident", "dot_ident_arg"):
            raise self.fail(node, "leading-dot identifiers are not supported")
        raise self.fail(node, f"unsupported expression ({data})")

    def check_int(self, token: Any, value: int, text: str, lowest: int, highest: int) -> None:
        """An integer literal within CEL's 64 bits (``lowest`` to ``highest``). In a policy
        proposed now; a recorded version loads as it was accepted, and grant conditions, which a
        replay compiles again, are not held to it (the run time still faults on such values)."""
        if lowest <= value <= highest or not self.new_document or self.facts is None:
            return
        kind = "uint" if lowest == 0 else "int"
        raise self.fail(
            token,
            f"the integer {text} is outside the 64-bit range of CEL's {kind} ({lowest} to "
            f"{highest}): write a number within it, or a double (e.g. 1e29) to compare with a "
            "number beyond it",
        )

    def literal(self, token: Any) -> _Expr:
        kind, text = token.type, str(token)
        try:
            if kind == "INT_LIT":
                neg = text.startswith("-")
                digits = text[1:] if neg else text
                value = int(digits[2:], 16) if digits[:2].lower() == "0x" else int(digits, 10)
                self.check_int(token, -value if neg else value, text, INT64_MIN, INT64_MAX)
                return self.const(-value if neg else value, "int", str(-value if neg else value))
            if kind == "UINT_LIT":
                digits = text[:-1]
                value = int(digits[2:], 16) if digits[:2].lower() == "0x" else int(digits, 10)
                self.check_int(token, value, text, 0, 2 * INT64_MAX + 1)
                return self.const(value, "int", str(value))
            if kind == "FLOAT_LIT":
                return self.const(float(text), "double", text)
        except ValueError as exc:
            raise self.fail(token, f"invalid number {text!r}") from exc
        if kind in ("STRING_LIT", "MLSTRING_LIT"):
            try:
                strict = self.exact_literals  # as for a timestamp
                return self.const(_decode_string(text, strict=strict), "string")
            except ValueError as exc:
                raise self.fail(token, f"invalid string literal: {exc}") from None
        if kind == "BOOL_LIT":
            return self.const(text == "true", "bool")
        if kind == "NULL_LIT":
            return self.const(None, "null")
        raise self.fail(token, "bytes literals are not supported")

    def lookup_var(self, name: str) -> tuple[str, str] | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def ident(self, token: Any) -> _Expr:
        name = str(token)
        var = self.lookup_var(name)
        if var is not None:
            return _Expr(var[0], var[1])
        if name == "context":
            raise self.fail(token, "use context.<field> to read the request context")
        if self.facts is None:
            self.refs.add(name)
            return _Expr(f"f[{name!r}]", "dyn", weight=_W_OP, fallible=True)
        if name not in self.facts:
            raise self.fail(token, f"undeclared fact {name!r}{self._meant(name)}")
        self.refs.add(name)
        return _Expr(
            f"f[{name!r}]",
            self.facts[name],
            enum_fact=name if name in self.enums else None,
            fact=name,
            weight=_W_OP,
            fallible=self.optional is None or name in self.optional,
        )

    def member_dot(self, node: Any) -> _Expr:
        target, name_tok = node.children
        base = target
        while base.data == "member" and len(base.children) == 1:
            base = base.children[0]
        while base.data == "primary" and len(base.children) == 1:
            base = base.children[0]
        if (
            base.data == "ident"
            and str(base.children[0]) == "context"
            and self.lookup_var("context") is None
        ):
            self.context_fields.add(str(name_tok))
            return _Expr(f"c[{str(name_tok)!r}]", "dyn", weight=_W_OP, fallible=True)
        inner = self.walk(target)
        if inner.type == "dyn":
            raise self.fail(node, "nested field selection is not supported")
        raise self.fail(node, f"a {inner.type} has no field {str(name_tok)!r}")

    def args(self, node: Any) -> list[Any]:
        for kid in node.children:
            if getattr(kid, "data", None) == "exprlist":
                return list(kid.children)
        return []

    def list_lit(self, node: Any) -> _Expr:
        items = [self.walk(k) for k in self.args(node)]
        types = {e.type for e in items if e.type != "dyn"}
        if len(types) > 1 and not types <= _NUMERIC:
            raise self.fail(
                node, f"list elements must have one type, got {', '.join(sorted(types))}"
            )
        elem = types.pop() if len(types) == 1 else ("double" if types else "dyn")
        if items and all(e.const is not _NO_CONST for e in items):
            return self.const(tuple(e.const for e in items), f"list<{elem}>")
        return self.op("(" + "".join(e.code + ", " for e in items) + ")", f"list<{elem}>", *items)

    def relation(self, op: str, a: _Expr, b: _Expr, node: Any) -> _Expr:
        if op == "in":
            return self.membership(a, b, node)
        a, b = self.coerce_pair(a, b)
        if op in ("==", "!="):
            if not (_compatible(a.type, b.type) or "null" in (a.type, b.type)):
                raise self.fail(node, f"cannot compare {a.type} with {b.type}{_quoted(a, b)}")
            self.check_null(a, b, op, node)
            self.check_null(b, a, op, node)
            self.check_enum(a, b, node)
            self.check_enum(b, a, node)
        else:
            ok = (
                _compatible(a.type, b.type)
                and a.type not in ("bool", "null")
                and not a.type.startswith("list")
            )
            if not ok:
                raise self.fail(
                    node, f"cannot order {a.type} and {b.type} with {op}{_quoted(a, b)}"
                )
        dyn = "dyn" in (a.type, b.type)  # "a" < 1 and the like raise TypeError
        if a.const is _NO_CONST and b.const is _NO_CONST:
            if _sized(a.type) and _sized(b.type):
                # Two values from the request: comparing them is as long as they are.
                return self.charged(
                    f"_cmp(m, {_OP_FN[op]}, {a.code}, {b.code})", "bool", a, b, fallible=dyn
                )
            # A decimal and an int from the request: the int must be in range (_numeric_pair).
            types = {a.type, b.type}
            if types == {"decimal", "int"}:
                ac = f"_i64({a.code})" if a.type == "int" else a.code
                bc = f"_i64({b.code})" if b.type == "int" else b.code
                return self.op(f"({ac} {op} {bc})", "bool", a, b, weight=_W_CALL, fallible=True)
            if dyn and types & {"decimal", "int"}:
                return self.op(
                    f"_ncmp({_OP_FN[op]}, {a.code}, {b.code})",
                    "bool",
                    a,
                    b,
                    weight=_W_EXACT_FLOAT if "decimal" in types else _W_CALL,
                    fallible=True,
                )
        # A decimal next to a double (or a dyn that may be either): an exact conversion.
        decimal_side = {a.type, b.type} & {"decimal", "dyn"}
        double_side = {a.type, b.type} & {"double", "dyn"}
        exact = bool(decimal_side and double_side and decimal_side | double_side != {"dyn"})
        weight = _W_EXACT_FLOAT if exact else _W_OP
        other = {a.type, b.type} - {"dyn"}  # empty: both are dyn
        literal = _double_literal(b) if a.type == "dyn" else None
        literal = literal or (_double_literal(a) if b.type == "dyn" else None)
        if literal is not None:
            # A dyn (a context value) that is a decimal meets the literal's written digits, as
            # a decimal fact does (as_decimal): a policy owner's context.risk >= 0.8 was false
            # for the 0.8 `ledger evaluate --context` sends, exact, and true for the SDK's float.
            exact_literal = self.const(Decimal(literal.literal or ""), "decimal", literal.literal)
            code = (
                f"_dlit({_OP_FN[op]}, {a.code}, {b.code}, {exact_literal.code})"
                if literal is b
                else f"_dlitl({_OP_FN[op]}, {a.code}, {exact_literal.code}, {b.code})"
            )
            return self.op(code, "bool", a, b, weight=weight, fallible=True)
        if dyn and (op not in ("==", "!=") or not other or other & _BOOL_OR_NUMBER):
            # A dyn may be a bool where the other side is a number (or the reverse), which
            # Python's operators take for one: CEL's own (runtime._eq and the rest) do not.
            # Its weight is the operator's, as before: the cost model did not change.
            code = f"{_OP_FN[op]}({a.code}, {b.code})"
            return self.op(code, "bool", a, b, weight=weight, fallible=True)
        return self.op(f"({a.code} {op} {b.code})", "bool", a, b, weight=weight, fallible=dyn)

    def check_null(self, e: _Expr, other: _Expr, op: str, node: Any) -> None:
        """``fact == null`` is never true (a declared fact sent is never null: null is refused;
        one not sent makes the rule not match), and ``fact != null`` is ``has(fact)`` in
        disguise: a rule meant to fire when the fact is missing would silently never fire."""
        if not self.new_document:  # a recorded version: it loads as it was accepted
            return
        if e.fact is not None and other.type == "null" and e.type != "null":
            meant = f"!has({e.fact})" if op == "==" else f"has({e.fact})"
            raise self.fail(
                node,
                f"fact {e.fact!r} is never null: a {e.type} fact that is sent has a value, and one "
                f"that is not makes the rule not match; write {meant} to test whether it was sent",
            )

    def check_enum(self, e: _Expr, other: _Expr, node: Any) -> None:
        if e.enum_fact is not None and isinstance(other.const, str):
            values = self.enums[e.enum_fact]
            if other.const not in values:
                raise self.fail(
                    node,
                    f"{other.const!r} is not a value of enum fact {e.enum_fact!r} ({', '.join(values)})",
                )

    def membership(self, a: _Expr, b: _Expr, node: Any) -> _Expr:
        if b.type == "dyn":
            return self.charged(f"_isin(m, {a.code}, {b.code})", "bool", a, b, fallible=True)
        if not b.type.startswith("list<"):
            raise self.fail(node, f"the right side of 'in' must be a list, got {b.type}")
        elem = b.type[5:-1]
        if not _compatible(a.type, elem):
            raise self.fail(node, f"cannot look for a {a.type} in a {b.type}")
        if isinstance(b.const, tuple):
            items = b.const
            if a.type == "decimal":
                items = tuple(Decimal(str(v)) if type(v) in (int, float) else v for v in items)
            if a.enum_fact is not None:
                for v in items:
                    if isinstance(v, str) and v not in self.enums[a.enum_fact]:
                        raise self.fail(node, f"{v!r} is not a value of enum fact {a.enum_fact!r}")
            # Hashing a dyn (or list) value can fault: a list is unhashable.
            unhashable = a.type == "dyn" or a.type.startswith("list<")
            hashing = _W_HASH if a.type in ("int", "dyn") else _W_OP
            try:
                # A frozenset makes membership one hash lookup.
                fs = self.const(frozenset(items), b.type)
                if a.type == "dyn" and any(type(v) is float for v in items):
                    # A decimal dyn meets the doubles by their written digits, as in _dlit.
                    exact = frozenset(
                        Decimal(str(v)) if type(v) in (int, float) else v for v in items
                    )
                    ds = self.const(exact, b.type)
                    return self.charged(
                        f"_insetd(m, {a.code}, {fs.code}, {ds.code})", "bool", a, fallible=True
                    )
                if unhashable:  # perhaps a list, whose hash reads every item, every time
                    return self.charged(f"_inset(m, {a.code}, {fs.code})", "bool", a, fallible=True)
                return self.op(
                    f"({a.code} in {fs.code})", "bool", a, weight=hashing, fallible=unhashable
                )
            except TypeError:
                pass
        if isinstance(b.const, tuple):
            # A literal list: bounded by its text, scanned in C.
            scan = _W_OP + len(b.const) // _ITEMS_PER_UNIT
            return self.op(f"({a.code} in {b.code})", "bool", a, weight=scan)
        return self.charged(
            f"_isin(m, {a.code}, {b.code})", "bool", a, b, fallible="dyn" in (a.type, b.type)
        )

    def arith(self, op: str, a: _Expr, b: _Expr, node: Any) -> _Expr:
        a, b = self.coerce_pair(a, b)
        ta, tb = a.type, b.type
        if "dyn" in (ta, tb):
            left, right = a.code, b.code
            if op in ("*", "%"):
                left = f"_num({left}, {op!r})"
            literal = _double_literal(b) if ta == "dyn" else _double_literal(a)
            if literal is not None:
                # Beside a dyn that is a decimal, the number's written digits (runtime._lit), as
                # a decimal fact takes them and as comparisons with a dyn already did.
                exact = self.const(Decimal(literal.literal or ""), "decimal", literal.literal)
                if op == "+":
                    code = (
                        f"_catlit(m, {left}, {right}, {exact.code})"
                        if literal is b
                        else f"_catlitl(m, {left}, {exact.code}, {right})"
                    )
                    return self.charged(code, "dyn", a, b, fallible=True)
                code = (
                    f"_dynlit({op!r}, {left}, {right}, {exact.code})"
                    if literal is b
                    else f"_dynlitl({op!r}, {left}, {exact.code}, {right})"
                )
                return self.op(code, "dyn", a, b, weight=_W_DECIMAL + _W_CALL, fallible=True)
            if op == "+":
                return self.charged(f"_cat(m, {left}, {right})", "dyn", a, b, fallible=True)
            # Decimal arithmetic, perhaps, after a dispatch on the operands' types.
            return self.op(
                f"_dyn({op!r}, {left}, {right})",
                "dyn",
                a,
                b,
                weight=_W_DECIMAL + _W_CALL,
                fallible=True,
            )
        if ta in _NUMERIC and tb in _NUMERIC:
            if "decimal" in (ta, tb):
                if "double" in (ta, tb):
                    raise self.fail(
                        node, "cannot mix decimal and double in arithmetic (use a decimal literal)"
                    )
                fn = {"+": "_dadd", "-": "_dsub", "*": "_dmul", "/": "_ddiv", "%": "_dmod"}[op]
                return self.op(
                    f"{fn}({a.code}, {b.code})", "decimal", a, b, weight=_W_DECIMAL, fallible=True
                )
            if ta == tb == "int":
                fn = {"+": "_iadd", "-": "_isub", "*": "_imul", "/": "_idiv", "%": "_imod"}[op]
                return self.op(
                    f"{fn}({a.code}, {b.code})", "int", a, b, weight=_W_CALL, fallible=True
                )
            if op == "%":
                raise self.fail(node, "% needs integers or decimals")
            # Python's float division by zero raises (CEL's gives an infinity), and so does an
            # int too large for a float: faults.
            return self.op(
                f"({a.code} {op} {b.code})",
                "double",
                a,
                b,
                fallible=op == "/" or "int" in (ta, tb),
            )
        if op == "+":
            if ta == tb and (ta == "string" or ta.startswith("list<")):
                if ta.startswith("list<"):
                    return self.charged(f"_lcat(m, {a.code}, {b.code})", ta, a, b)
                return self.charged(f"_cat(m, {a.code}, {b.code})", ta, a, b)
            # Time arithmetic can overflow the datetime/timedelta range (OverflowError).
            if {ta, tb} == {"timestamp", "duration"}:
                return self.op(
                    f"({a.code} + {b.code})", "timestamp", a, b, weight=_W_CALL, fallible=True
                )
            if ta == tb == "duration":
                return self.op(
                    f"({a.code} + {b.code})", "duration", a, b, weight=_W_CALL, fallible=True
                )
        if op == "-":
            if ta == tb == "timestamp":
                return self.op(f"({a.code} - {b.code})", "duration", a, b, weight=_W_CALL)
            if ta == "timestamp" and tb == "duration":
                return self.op(
                    f"({a.code} - {b.code})", "timestamp", a, b, weight=_W_CALL, fallible=True
                )
            if ta == tb == "duration":
                return self.op(
                    f"({a.code} - {b.code})", "duration", a, b, weight=_W_CALL, fallible=True
                )
        raise self.fail(node, f"cannot apply {op} to {ta} and {tb}")

    def string_arg(self, node: Any, e: _Expr, what: str) -> None:
        if e.type not in ("string", "dyn"):
            raise self.fail(node, f"{what} needs a string, got {e.type}")

    def method(self, node: Any) -> _Expr:
        target, name_tok = node.children[0], node.children[1]
        name = str(name_tok)
        arg_nodes = self.args(node)
        if name in ("exists", "all"):
            return self.macro(node, name, target, arg_nodes)
        if name in _OTHER_MACROS:  # before its arguments: its variable is no fact to report
            raise self.fail(
                node,
                f"the {name}() macro is not supported (of CEL's macros, exists() and all() are)",
            )
        recv = self.walk(target)
        args = [self.walk(a) for a in arg_nodes]
        if name == "size" and not args:
            return self.size(node, recv)
        if name in ("startsWith", "endsWith", "contains", "matches"):
            if len(args) != 1:
                raise self.fail(node, f"{name}() takes exactly one argument")
            if name == "contains" and recv.type.startswith("list<"):
                raise self.fail(node, f"{name}() is for text{_method_hint(name, recv.type)}")
            self.string_arg(node, recv, f"{name}()")
            self.string_arg(node, args[0], f"the argument of {name}()")
            s, t = recv.code, args[0].code
            dyn = "dyn" in (recv.type, args[0].type)  # not a string: AttributeError, TypeError
            if name == "startsWith":
                return self.charged(f"_starts(m, {s}, {t})", "bool", recv, args[0], fallible=dyn)
            if name == "endsWith":
                return self.charged(f"_ends(m, {s}, {t})", "bool", recv, args[0], fallible=dyn)
            if name == "contains":
                return self.charged(f"_contains(m, {s}, {t})", "bool", recv, args[0], fallible=dyn)
            if not isinstance(args[0].const, str):
                raise self.fail(node, "matches() needs a literal pattern")
            pattern, weight = self.regex(arg_nodes[0], args[0].const)
            p = self.const(pattern, "dyn")
            return self.charged(
                f"_matches(m, {p.code}, {weight}, {s})", "bool", recv, fallible=recv.type == "dyn"
            )
        raise self.fail(node, f"unsupported method {name}(){_method_hint(name, recv.type)}")

    def regex(self, node: Any, text: str) -> tuple[Any, int]:
        """Compile a ``matches`` pattern with RE2: (pattern, cost weight per 16 bytes of text)."""
        limit = self.limits.regex_chars
        if len(text) > limit:
            raise self.fail(
                node,
                f"regular expression of {len(text):,} characters; at most {limit:,} are accepted "
                "(limit regex_chars): shorten it or split the test",
            )
        known = self.patterns.get(text)
        if known is not None:  # the commutative walk compiles nothing again
            return known
        budget = self.regex_budget
        if budget is not None and text in budget.compiled:
            self.patterns[text] = budget.compiled[text]
            return budget.compiled[text]
        if budget is not None and budget.left <= 0:
            raise self.fail(
                node,
                "regular expression not compiled: the patterns before it take the "
                f"{self.limits.regex_program:,} RE2 instructions a document's patterns may "
                "take together (limit regex_program); use fewer or simpler ones",
            )
        parse = 0 if budget is None else _parse_charge(text)
        if budget is not None and parse > budget.left:  # known before compiling it
            budget.left = 0
            raise self._over_budget(node, parse)
        try:
            pattern = re2.compile(text, _RE2_OPTIONS if budget is None else _RE2_NEW)
        except UnicodeEncodeError:
            raise self.fail(
                node, "regular expression is not Unicode text (it holds a lone surrogate)"
            ) from None
        except re2.error as exc:
            detail = exc.args[0] if exc.args else "cannot compile"
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            if budget is not None and "too large" in str(detail):
                budget.left -= _NEW_FAILURE_CHARGE
                raise self.fail(
                    node,
                    "regular expression too large for RE2 (at most ~16,000 instructions; "
                    "\\pL{100} takes 120,000): repeat a large class less (\\pL+, with size() "
                    "for the length) or use a smaller one ([A-Za-z])",
                ) from None
            raise self.fail(
                node,
                f"invalid regular expression for RE2 (CEL's dialect: no backreferences, no "
                f"lookaround, \\z not \\Z): {detail}",
            ) from None
        weight = 1 + pattern.programsize // _RE2_INSTRUCTIONS_PER_WEIGHT
        if budget is not None:
            # A red team: `(?i)\PL{0}` a hundred times compiles to 4 instructions in 15 ms,
            # RE2's time going to parsing the Unicode classes it then drops: each is charged.
            charged = pattern.programsize + parse
            if charged > budget.left:  # a red team: the last pattern went past the limit
                budget.left = 0
                raise self._over_budget(node, charged)
            # Matched with the memory a recorded one has (a review: RE2's smaller memory for
            # a new pattern left its matching little room, 10-100x slower where it was kept).
            pattern = re2.compile(text, _RE2_OPTIONS)
        compiled = pattern, weight
        self.patterns[text] = compiled
        if budget is not None:
            budget.left -= charged
            budget.compiled[text] = compiled
        return compiled

    def _over_budget(self, node: Any, charged: int) -> _Problem:
        return self.fail(
            node,
            f"regular expression not accepted: it takes {charged:,} of the "
            f"{self.limits.regex_program:,} RE2 instructions a document's patterns may take "
            "together (limit regex_program; each \\p or \\P class counts "
            f"{_UNICODE_CLASS_CHARGE}, {_FOLDED_CLASS_CHARGE} under (?i), and a counted "
            f"repetition its bound / {_REPEAT_CHARGE_PER}), past what the patterns before it "
            "left; use fewer or simpler ones",
        )

    def size(self, node: Any, e: _Expr) -> _Expr:
        if e.type in ("string", "dyn") or e.type.startswith("list<"):
            return self.op(f"len({e.code})", "int", e, fallible=e.type == "dyn")
        raise self.fail(node, f"size() needs a string or a list, got {e.type}")

    def macro(self, node: Any, name: str, target: Any, arg_nodes: list[Any]) -> _Expr:
        if len(arg_nodes) != 2:
            raise self.fail(
                node, f"{name}() takes a variable and a predicate: list.{name}(x, pred)"
            )
        var_node = arg_nodes[0]
        while getattr(var_node, "data", None) in _UNWRAP and len(var_node.children) == 1:
            var_node = var_node.children[0]
        if getattr(var_node, "data", None) != "ident":
            raise self.fail(node, f"the first argument of {name}() must be a variable name")
        var = str(var_node.children[0])
        if var == "context" or (self.facts is not None and var in self.facts):
            raise self.fail(var_node, f"variable {var!r} would hide a fact")
        recv = self.walk(target)
        if not (recv.type == "dyn" or recv.type.startswith("list<")):
            raise self.fail(node, f"{name}() needs a list, got {recv.type}")
        elem = "dyn" if recv.type == "dyn" else recv.type[5:-1]
        self._n += 1
        py = f"_v{self._n}"
        self.scopes.append({var: (py, elem)})
        try:
            pred = self.boolean(self.walk(arg_nodes[1]), arg_nodes[1], f"the predicate of {name}()")
        finally:
            self.scopes.pop()
        # Charged at run time, before it iterates: per element, the predicate's static weight,
        # at least one (a nested macro inside it charges again for its own list).
        weight = max(_W_OP, pred.weight)
        # Iterating a dyn that is not a list faults; so does a predicate that can.
        fallible = recv.type == "dyn"
        if self.commutative and pred.fallible:
            # CEL's exists/all are ||/&& over the elements: a decisive element wins over errors.
            self.commuted = True
            fn = "_exists" if name == "exists" else "_all"
            items = f"_each(m, {recv.code}, {weight + _W_COMMUTE})"
            return self.charged(
                f"{fn}(lambda {py}: {pred.code}, {items})", "bool", recv, fallible=True
            )
        fn = "any" if name == "exists" else "all"
        return self.charged(
            f"{fn}({pred.code} for {py} in _each(m, {recv.code}, {weight}))",
            "bool",
            recv,
            fallible=fallible or pred.fallible,
        )

    def function(self, node: Any) -> _Expr:
        name = str(node.children[0])
        arg_nodes = self.args(node)
        if name == "has":
            if len(arg_nodes) != 1:
                raise self.fail(node, "has() takes one argument")
            arg = arg_nodes[0]
            while getattr(arg, "data", None) in _UNWRAP and len(arg.children) == 1:
                arg = arg.children[0]
            if getattr(arg, "data", None) == "ident":
                inner = self.ident(arg.children[0])
                if not inner.code.startswith("f["):
                    raise self.fail(node, "has() needs a fact or context.<field>")
                return _Expr(f"({inner.code[2:-1]} in f)", "bool", weight=_W_OP)
            if getattr(arg, "data", None) == "member_dot":
                inner = self.member_dot(arg)
                return _Expr(f"({inner.code[2:-1]} in c)", "bool", weight=_W_OP)
            raise self.fail(node, "has() needs a fact or context.<field>")
        args = [self.walk(a) for a in arg_nodes]
        if name == "size":
            if len(args) != 1:
                raise self.fail(node, "size() takes one argument")
            return self.size(node, args[0])
        if name in ("timestamp", "duration"):
            if len(args) != 1 or not isinstance(args[0].const, str):
                raise self.fail(node, f"{name}() needs one literal string")
            # Finer than a microsecond: refused in a policy proposed now; a recorded version and
            # a grant's condition (compiled again by a replay) are read as they were accepted.
            exact = self.exact_literals
            try:
                value: object = (
                    parse_timestamp(args[0].const, exact=exact)
                    if name == "timestamp"
                    else parse_duration(args[0].const, exact=exact)
                )
            except (ValueError, OverflowError) as exc:
                raise self.fail(node, str(exc)) from exc
            return self.const(value, name)
        raise self.fail(node, f"unsupported function {name}()")


_METHODS: Final = ("size", "startsWith", "endsWith", "contains", "matches", "exists", "all")
# What other languages call CEL's methods: a close spelling would not find these.
_METHOD_ALIASES: Final = {
    "includes": "contains",
    "startswith": "startsWith",
    "endswith": "endsWith",
    "length": "size",
    "len": "size",
    "count": "size",
    "match": "matches",
    "test": "matches",
    "any": "exists",
    "some": "exists",
    "every": "all",
}


_CLOCK_METHODS = frozenset(
    {
        "getHours",
        "getMinutes",
        "getSeconds",
        "getDayOfWeek",
        "getDayOfMonth",
        "getDayOfYear",
        "getDate",
        "getMonth",
        "getFullYear",
        "getMilliseconds",
    }
)
"""CEL's timestamp accessors, which the ledger's CEL leaves out (it reads no clock or zone)."""


def _method_hint(name: str, receiver: str) -> str:
    """What to write instead of a method CEL (as the product runs it) does not have: membership
    in a list is ``x in list``, and names from other languages map to CEL's own."""
    if receiver.startswith("list<") and name in ("contains", "includes", "has", "indexOf"):
        return ": a list's membership is written `x in list`"
    if name in _CLOCK_METHODS:  # a policy owner's walkthrough: `requested_at.getHours() >= 22`
        return (
            ": a condition cannot read a time of day; declare an int fact the agent sends, "
            "e.g. hour_utc, and compare it: hour_utc >= 22"
        )
    meant = _METHOD_ALIASES.get(name) or _METHOD_ALIASES.get(name.lower())
    if meant is None:
        close = difflib.get_close_matches(name[:_HINT_NAME_CHARS], _METHODS, n=1, cutoff=0.75)
        meant = close[0] if close else None
    if meant is not None:
        return f" (did you mean {meant}()?)"
    return f": the methods are {', '.join(m + '()' for m in _METHODS)}"


def _did_you_mean(name: str, declared: Mapping[str, str]) -> str:
    """`` (did you mean 'receipts'?)`` for a misspelt fact, or nothing. Bounded: a proposal may
    name hundreds of long facts, and difflib compares each pair in quadratic time."""
    if len(name) > _HINT_NAME_CHARS:
        return ""
    near = [f for f in declared if len(f) <= _HINT_NAME_CHARS and abs(len(f) - len(name)) <= 2]
    close = difflib.get_close_matches(name, near[:_HINT_CANDIDATES], n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


_CLOCK_NAMES: Final = frozenset({"now", "today", "time", "clock"})
"""What an author reaching for the current time writes (conditions have no clock)."""

_REQUEST_NAMES: Final = frozenset({"action", "resource", "principal"})
"""What a request names beside its facts, which conditions do not see."""

_HINT_NAME_CHARS: Final = 64
_HINT_CANDIDATES: Final = 100


def _article(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def _quoted(a: _Expr, b: _Expr) -> str:
    """A hint when a number or a bool was written in quotes (``amount <= "100"``, ``vip ==
    "true"``), a time as bare text (``at < "2025-01-01T00:00:00Z"``), or ``true`` compared with
    text."""
    for number, text in ((a, b), (b, a)):
        if (
            number.type in ("int", "decimal", "double")
            and text.type == "string"
            and isinstance(text.const, str)
            and len(text.const) <= _HINTED_CHARS
            and _NUMBER.fullmatch(text.const.strip())
        ):
            return f": write the number without quotes, {text.const.strip()} not {text.const!r}"
        if number.type == "int" and text.type == "string" and isinstance(text.const, str):
            # A policy owner's walkthrough: `hour_utc < "06:00"` was told nothing of what to
            # write instead.
            hours, colon, minutes = text.const.strip().partition(":")
            if colon and hours.isdigit() and minutes.isdigit() and len(hours) <= 2:
                return (
                    f": compare the whole number, {int(hours)} not {text.const!r} (a time of day "
                    "is an int fact such as an hour)"
                )
        if number.type == "timestamp" and text.type == "string":
            # As a timestamp that parses (a policy owner's walkthrough: `"2026-01-01"` was
            # told timestamp("2026-01-01"), then to add a zone, then an isoformat error).
            shown = text.const if isinstance(text.const, str) and len(text.const) <= 40 else ""
            return f": write a timestamp as {timestamp_example(shown)}"
        if number.type == "duration" and text.type == "string":
            shown = text.const if isinstance(text.const, str) and len(text.const) <= 40 else "…"
            return f': write a duration as duration("{shown}")'
        if number.type == "bool" and text.type == "string":
            if isinstance(text.const, str) and text.const.strip().lower() in ("true", "false"):
                word = text.const.strip().lower()
                return f": write {word} without quotes, {word} not {text.const!r}"
            if isinstance(number.const, bool):
                word = str(number.const).lower()
                return f': text is compared with text in quotes, "{word}" not {word}'
    return ""


_NUMBER: Final = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
r"""A number as text, for the hint. Linear: the former ``\d+\.?\d*`` split a run of digits in
every way before failing, 0.44 s on 4,000 digits and an ``x`` (a red team)."""
_HINTED_CHARS: Final = 40
"""Longer text in quotes gets no number hint: nobody writes such a number, and the hint's
message quotes it."""


def _sized(type_: str) -> bool:
    """Can a value of this static type be long (so that comparing two of them costs)?"""
    return type_ in ("string", "dyn") or type_.startswith("list<")


def compile_condition(
    text: str,
    *,
    facts: Mapping[str, str] | None,
    enums: Mapping[str, tuple[str, ...]] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    optional: Collection[str] | None = None,
    new_document: bool = True,
    new_grant: bool = False,
    regex_budget: RegexBudget | None = None,
) -> CompiledCondition:
    """Parse, check and compile one CEL condition.

    ``facts`` maps each declared fact to its CEL type (``int``, ``decimal``, ``double``,
    ``string``, ``bool``, ``timestamp``, ``list<string>``); ``None`` means dynamic mode (grant
    conditions): any identifier is a request fact of unknown type. ``enums`` names the string
    facts whose values are a closed set, so a comparison with a value outside it is reported.
    ``optional`` names the facts that may be absent from a request (the others are checked
    present before any condition runs); ``None`` means any of them may be. ``new_document``
    false (a recorded version read back) leaves out the checks added after versions could have
    been accepted (a declared fact compared with ``null``): such a version loads, and decides,
    as it did when it was accepted. ``new_grant``: a grant's condition being admitted (not one
    a replay compiles again): its literals are held to the rules of a new policy's (times to
    the microsecond, string escapes CEL knows), and so are the ``matches`` patterns of both: to
    a smaller RE2 program each, and all those sharing ``regex_budget`` (one policy document's;
    by default the condition's own) to ``limits.regex_program`` instructions together.

    The result's function is the plain, left-to-right Python form of the condition. When a side
    of ``||``/``&&`` (or a macro's predicate) other than the last can raise, a second,
    commutative form is compiled too, and run only if the plain one raised: whenever the plain
    form returns, its answer is CEL's, so requests that meet no absence or fault pay nothing.

    Raises :class:`~ledger.errors.PolicyError` with one problem (``field="when"``, CEL line and
    column) if the condition is longer than ``limits.condition_chars``, does not parse, uses
    something outside the subset, references an undeclared fact, is ill-typed, or has a
    ``matches`` pattern RE2 cannot compile (or longer than ``limits.regex_chars``).
    """
    if not isinstance(text, str) or not text.strip():
        raise PolicyError([PolicyProblem(message="condition is empty", field="when")])
    if len(text) > limits.condition_chars:
        raise PolicyError(
            [
                PolicyProblem(
                    message=f"condition of {len(text):,} characters; at most "
                    f"{limits.condition_chars:,} are accepted (limit condition_chars): split it "
                    "into several rules",
                    field="when",
                )
            ]
        )
    compiler = _Compiler(
        text, facts, enums or {}, limits, optional, new_document, new_grant, regex_budget
    )
    try:
        tree = _parse(text)
        result = compiler.walk(tree)
        if result.type not in ("bool", "dyn"):
            raise _Problem(
                f"a condition must be a bool, this one is {_article(result.type)} {result.type}",
                1,
                1,
            )
        body = result.code if result.type == "bool" else f"_truth({result.code})"
        python = f"lambda f, c, m: {body}"
        slow = None
        if result.fallible:
            compiler.commutative = True
            second = compiler.walk(tree)
            if compiler.commuted:
                slow = second.code if second.type == "bool" else f"_truth({second.code})"
        if slow is None:
            fn = eval(compile(python, "<cel>", "eval"), compiler.namespace)
        else:
            # The plain form first; only if it raised (absence or a fault, never the budget:
            # BudgetExceeded is not absorbed), the commutative form decides. Both forms charge
            # the meter for the work they do.
            compiler.namespace["_slow"] = eval(
                compile(f"lambda f, c, m: {slow}", "<cel>", "eval"), compiler.namespace
            )
            python = (
                f"def _cel(f, c, m):\n    try:\n        return {body}\n"
                "    except _ABSORBED:\n        pass\n    return _slow(f, c, m)\n"
            )
            exec(compile(python, "<cel>", "exec"), compiler.namespace)
            fn = compiler.namespace["_cel"]
            python += f"_slow = lambda f, c, m: {slow}\n"
    except _Problem as p:
        raise PolicyError(
            [PolicyProblem(message=p.message, field="when", line=p.line, column=p.column)]
        ) from None
    except (RecursionError, MemoryError, SyntaxError):
        # Python's own compiler limits (nesting depth) on absurd input: still a policy problem.
        raise PolicyError(
            [
                PolicyProblem(
                    message="condition is nested too deeply to compile (about 200 levels: "
                    "parentheses, or a chain of || or && counts one per term): split it "
                    "across rules or simplify it",
                    field="when",
                )
            ]
        ) from None
    return CompiledCondition(
        source=text,
        fn=fn,
        references=frozenset(compiler.refs),
        context_fields=frozenset(compiler.context_fields),
        python=python,
        metered=compiler.metered,
        form=_form(tree),
    )


def _form(tree: Any) -> str | None:
    """The tree's :func:`layout_form`, or ``None`` when it is too deep to walk."""
    try:
        return layout_form(tree)
    except RecursionError:
        return None
