"""CEL conditions: parsed once with celpy's grammar, type-checked, compiled to one Python function.

A condition is compiled when its policy (or grant) is loaded, never per request: the celpy parse
tree is checked against the declared fact types and translated into the source of a single Python
``lambda f, c, m: ...`` expression, which is compiled once. Evaluating a condition is then one call
of plain Python code, with no tree walking — that is what makes ≥100k decisions/s possible. A
condition in which a side of ``||``/``&&`` other than the last can raise (see *Absent facts*) is
compiled into one function holding that plain expression in a ``try``, and a second, commutative
form run only when the plain one raised: a request that meets no absent value and no fault runs
exactly the plain expression.

Supported subset (anything else is rejected at validation, with its position):

- literals: int (``42``, ``0x2A``), uint (``42u``, treated as int), double (``1.5``), string
  (``"a"``, ``'a'``, raw ``r"..."``, triple-quoted), bool, ``null``, lists ``[a, b]``;
  ``timestamp("2024-01-01T00:00:00Z")`` and ``duration("1h30m")`` with literal arguments;
- fact identifiers, and ``context.name`` for the request's free-form context map (type ``dyn``);
- operators ``! - * / % + < <= > >= == != && || ?: in``;
- ``size(x)``/``x.size()``; ``s.startsWith(t)``, ``s.endsWith(t)``, ``s.contains(t)``,
  ``s.matches("regex")`` (literal pattern, searched anywhere in ``s``; RE2 syntax and semantics,
  as CEL specifies: linear time, no backreferences or lookaround — a pattern RE2 cannot compile is
  rejected when the condition is compiled);
- ``has(fact)`` (is an optional fact present?) and ``has(context.name)``;
- list macros ``list.exists(x, pred)`` and ``list.all(x, pred)``.

Semantics worth knowing:

- **Absent facts.** Reading an absent optional fact or context field is an error, as in CEL; a
  condition whose value depends on one is not true, so its rule does not match. Neither
  ``x == "a"`` nor ``x != "a"`` is true for an absent ``x``; test presence with ``has(x)`` (e.g.
  ``has(reason_code) && reason_code == "fraud"``). ``||`` and ``&&`` are commutative, as CEL
  specifies: ``a || b`` is true if either side is true, even when the other is absent or faults;
  false if both are false; otherwise the error. ``a && b`` is false if either side is false,
  whatever the other; true if both are true; otherwise the error. So ``reason_code == "fraud" ||
  amount > 400`` and ``amount > 400 || reason_code == "fraud"`` both hold for amount 450 without a
  reason code. ``list.exists(x, p)`` and ``list.all(x, p)`` are ``||`` and ``&&`` over the elements
  and absorb errors the same way. When neither side decides and one is a fault, the fault is
  reported (an ``error`` decision), whichever side it is on; ``?:`` and ``!`` pass errors on.
- **Decimals are exact.** Decimal facts are ``Decimal``; numeric literals compared or combined with
  a decimal become ``Decimal`` of their source text, so ``amount < 500`` with amount ``500.00`` is
  false and ``amount == 0.1`` means exactly one tenth. Decimal arithmetic uses a fixed context
  (34 significant digits), never the thread's ambient one.
- **Integers** are CEL's 64-bit ints: an operand or result of arithmetic outside that range, or an
  int outside it compared with a decimal, is a fault (integer overflow). They divide and take
  remainders truncating toward zero, as CEL does.
- **Run-time faults** (division by zero, overflow, a ``dyn`` context value of the wrong type)
  raise :class:`ConditionFault` with a reason in plain words (``decimal division by zero``); the
  evaluator records an ``error`` decision rather than guessing. A decisive other side of ``||``
  or ``&&`` absorbs a fault as it absorbs absence; nothing absorbs :class:`BudgetExceeded`.

Cost (STYLE §16). Facts are bounded, and so is a condition's text, but a condition can still
multiply them: list macros nest, and whatever a macro's predicate does repeats per element. So
every operation whose work grows with the *data* is metered: the compiled function takes a
:class:`Meter` (one per request, or per policy version a request runs) and charges it *before*
the work, raising :class:`BudgetExceeded` when the budget (``Limits.evaluation_cost``) is spent.
Like Kubernetes' CEL runtime cost, the charge is deterministic — counted from sizes and the
condition's static shape, never timed — so a replay reaches the same decision. A unit is at most
~0.1 µs of evaluator time (5-100 ns measured, whatever the predicate), so the default budget of
1,000,000 stops a request after ~0.1 s at most (a few tenths on a slow machine). A comparison
of two decimals counts as one operation: decimals are held to ``Limits.fact_decimal_digits``
where they arrive (:mod:`ledger.core.facts`), which keeps it near the cost of short ones:

- a list macro: its list's length times its predicate's *weight*, at least one, charged before it
  iterates (a nested macro is charged again on every iteration of the outer one). The weight is
  the predicate's operations counted when it is compiled: one for a comparison, ``!``, a step of
  ``||``/``&&``, a fact or context lookup, ``has``, ``size``, double arithmetic, membership in a
  literal list (eight for an int or ``dyn``, which hashes; one more per 8 elements of a list
  that cannot be hashed); three for a helper call (range-checked integer arithmetic, time
  arithmetic, a ``dyn`` as a bool); twelve for decimal arithmetic (fifteen on a ``dyn``);
  nothing for a nested macro or a metered operation below, which charge when they run. In the
  commutative form a side of ``||``/``&&``, and the element of a macro whose predicate can
  raise, weigh ten more (a thunk; an error raised and absorbed).
  ``l.exists(x, l.exists(y, y == "q0" || … || y == "q194"))`` weighs 389 per inner element: over
  990 elements it stops after three inner lists, where it used to run ~4 s within budget;
- ``contains``: one plus one per 16 characters of the receiver; ``startsWith``/``endsWith``: one
  plus one per 16 characters of the argument;
- ``matches``: 16 per call (the binding's overhead), plus one per 16 UTF-8 bytes of text times
  the pattern's weight (1 + RE2 program size / 8, fixed when compiled);
- ``x in list`` (a list that is not a literal), ``==``/``<``… between two values that are not
  literals, and ``+`` of strings or lists: one plus one per 16 characters or 8 list elements
  (plus one per element when a decimal is looked for in a ``dyn`` list). Texts of equal length
  compare character by character, so a text looked for in a list costs one more per 2,048 of
  its characters per element, and two lists of equal length compared one more per 2,048
  characters of the shorter one's texts;
- a decimal compared with a double: forty (the double is converted exactly, up to ~1,075
  digits, ~4 µs).

Outside macros everything else (fact lookups, arithmetic on numbers, comparisons with a literal,
membership in a literal list, ``size``) costs nothing: each is bounded by the condition's text
and the bounded facts (arithmetic on 34-digit decimals and 64-bit ints), and a condition without
macros or metered operations never touches the meter, which is what keeps the ordinary hot path
at a plain function call.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import functools
import operator
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    DivisionImpossible,
    DivisionUndefined,
    InvalidOperation,
    Overflow,
)
from typing import Any, Final

import re2

from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.errors import PolicyError, PolicyProblem

__all__ = [
    "BudgetExceeded",
    "CompiledCondition",
    "ConditionFault",
    "ConditionFn",
    "Meter",
    "alternatives",
    "compile_condition",
    "RESERVED_NAMES",
]

ConditionFn = Callable[[Mapping[str, Any], Mapping[str, Any], "Meter | None"], Any]
"""``fn(facts, context, meter)``; raises ``KeyError`` when its value depends on an absent fact or
context field (see module doc), the fault (``ArithmeticError``, ``TypeError``, ``ValueError``,
``AttributeError``) when it depends on one, and :class:`BudgetExceeded` when the meter runs out.
``meter`` may be ``None`` only for a condition that is not :attr:`CompiledCondition.metered`."""

# Static types are plain strings: "int", "double", "decimal", "string", "bool", "null",
# "timestamp", "duration", "list<T>", "dyn" (unknown until run time: context values).
_NUMERIC: Final = frozenset({"int", "double", "decimal"})

RESERVED_NAMES: Final = frozenset(
    {
        "context",
        "true",
        "false",
        "null",
        "in",
        "has",
        "size",
        "timestamp",
        "duration",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    }
)

# decimal128 precision, every setting stated so results never depend on the process's own
# decimal.DefaultContext (from which a bare Context takes whatever it does not name).
_DEC: Final = Context(
    prec=34,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    capitals=1,
    clamp=0,
    flags=[],
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


class ConditionFault(Exception):
    """A condition failed at run time on present values (not a policy problem, not absence)."""


class BudgetExceeded(ConditionFault):
    """Evaluating a request's conditions would spend more than its budget of work units."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the conditions needed more than the evaluation budget of {limit:,} work units "
            "(list macros, string and regular-expression work on these facts)"
        )
        self.limit = limit


class Meter:
    """The work units left to one request (or to one policy version it runs); see module doc.

    Charges only ever decrease ``left``; once it is negative, every further charge raises again.
    """

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    @property
    def exceeded(self) -> bool:
        """Has a charge gone past the budget?"""
        return self.left < 0


# Units per operation (see the module doc); C code scans text and lists far faster than the
# interpreter runs a macro's predicate, hence the divisors.
_CHARS_PER_UNIT: Final = 16
_ITEMS_PER_UNIT: Final = 8
_REGEX_CALL_UNITS: Final = 16
_RE2_INSTRUCTIONS_PER_WEIGHT: Final = 8

# Static weights (units per evaluation) of the operations in a macro's predicate; see the module
# doc. Set from measurements so that no predicate makes a unit cost more than ~0.1 µs.
_W_OP: Final = 1
"""A plain Python operation: a comparison, ``!``, a step of ``||``/``&&``/a macro, a fact or
context lookup, ``has``, ``size``, double arithmetic, membership in a literal list."""
_W_CALL: Final = 3
"""A call of a helper: integer arithmetic (range-checked), a decimal compared with an int, a
``dyn`` used as a bool, time arithmetic."""
_W_HASH: Final = 8
"""Membership of an int (or a ``dyn``) in a literal list: hashing an int of up to 4,300 digits
takes ~0.8 µs, where text and decimals keep their hash."""
_W_DECIMAL: Final = 12
"""Decimal arithmetic (operands checked to 34 digits, the fixed context), and any arithmetic on a
``dyn``, which may be decimal."""
_W_EXACT_FLOAT: Final = 40
"""A decimal compared with a double: Python converts the double to its exact decimal (up to
~1,075 digits for the smallest ones), ~4 µs."""
_COMPARED_CHARS_PER_UNIT: Final = 2_048
"""Characters of two equal-length texts compared: a memcmp, ~1.25 µs for 62,000 characters,
far faster than a scan (a unit per 2,048 is ~0.04 µs)."""
_W_COMMUTE: Final = 10
"""Per side of a commutative ``||``/``&&``, and per element of a macro whose predicate can raise,
in a condition's second form (see :func:`compile_condition`): a thunk, and an error raised and
absorbed."""

# RE2 options for ``matches``: only "is there a match" is asked, so no capture groups; errors are
# reported as policy problems, not logged to stderr by the C++ library; RE2's default memory
# budget, stated so a change of default does not change what compiles.
_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.never_capture = True
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 8 << 20


# ----------------------------------------------------------------------------- run-time helpers
# Referenced by name from generated code; kept tiny because they are on the hot path only when a
# condition actually uses the operator.


# Integers are CEL's: 64-bit, an operand or result outside that range is a fault. Python's ints
# are unbounded, and their cost grows with their digits: an int fact may have 4,300 of them, and
# n * n * n ... in a macro's predicate took minutes; a decimal compared with such an int converts
# it first, in time quadratic in its digits (~0.3 ms each).
_INT_MIN: Final = -(1 << 63)
_INT_MAX: Final = (1 << 63) - 1
_INT_OVERFLOW: Final = "integer overflow: a value or result outside the 64-bit range of CEL's int"


def _i64(a: int) -> int:
    if _INT_MIN <= a <= _INT_MAX:
        return a
    raise OverflowError(_INT_OVERFLOW)


def _iadd(a: int, b: int) -> int:
    if _INT_MIN <= a <= _INT_MAX and _INT_MIN <= b <= _INT_MAX:
        r = a + b
        if _INT_MIN <= r <= _INT_MAX:
            return r
    raise OverflowError(_INT_OVERFLOW)


def _isub(a: int, b: int) -> int:
    if _INT_MIN <= a <= _INT_MAX and _INT_MIN <= b <= _INT_MAX:
        r = a - b
        if _INT_MIN <= r <= _INT_MAX:
            return r
    raise OverflowError(_INT_OVERFLOW)


def _imul(a: int, b: int) -> int:
    if _INT_MIN <= a <= _INT_MAX and _INT_MIN <= b <= _INT_MAX:
        r = a * b
        if _INT_MIN <= r <= _INT_MAX:
            return r
    raise OverflowError(_INT_OVERFLOW)


def _idiv(a: int, b: int) -> int:
    if _INT_MIN <= a <= _INT_MAX and _INT_MIN <= b <= _INT_MAX:
        q = abs(a) // abs(b)  # b == 0: "integer division or modulo by zero"
        q = q if (a >= 0) == (b >= 0) else -q
        if q <= _INT_MAX:  # only _INT_MIN / -1 is out of range
            return q
    raise OverflowError(_INT_OVERFLOW)


def _imod(a: int, b: int) -> int:
    return a - b * _idiv(a, b)


def _numeric_pair(a: Any, b: Any) -> None:
    """Refuse a decimal next to an int outside the int range, before Python converts the int."""
    ta, tb = type(a), type(b)
    if (ta is Decimal and tb is int and not _INT_MIN <= b <= _INT_MAX) or (
        tb is Decimal and ta is int and not _INT_MIN <= a <= _INT_MAX
    ):
        raise OverflowError(_INT_OVERFLOW)


def _ncmp(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """A comparison of a dyn with a number that is not a literal (either may be a decimal)."""
    if type(a) is Decimal or type(b) is Decimal:
        _numeric_pair(a, b)
    return op(a, b)


# Decimal arithmetic (typed, and on decimals in dyn conditions) rounds its result to _DEC's 34
# digits. Its cost grows with the operands' digits, unmetered: two 65,536-digit facts take ~5 ms
# to multiply, once per macro element. So an operand must itself fit 34 significant digits
# (checked in time linear in its digits); a longer one is a fault (``condition_error``), never
# silently rounded: a - b of two long, close values must not become 0.
_MAX_DIGITS_REASON: Final = (
    "a decimal operand has more than 34 significant digits (arithmetic works at decimal128 "
    "precision)"
)


def _operand(x: Any) -> Decimal:
    if type(x) is int and not _INT_MIN <= x <= _INT_MAX:
        raise OverflowError(_INT_OVERFLOW)
    d = Decimal(x)
    short = _DEC.plus(d)  # the same value when it fits 34 digits
    if short != d:
        raise ValueError(_MAX_DIGITS_REASON)
    return short


# The decimal module reports a trapped signal as its list of condition classes
# ("[<class 'decimal.DivisionByZero'>]"): the reasons below are what a policy owner reads in the
# error decision instead.
_DECIMAL_REASONS: Final[tuple[tuple[type[ArithmeticError], str], ...]] = (
    (DivisionByZero, "decimal division by zero"),
    (DivisionUndefined, "decimal division by zero (0 / 0 is undefined)"),
    (
        DivisionImpossible,
        "decimal modulo: the integer quotient has more than 34 digits (decimal128 precision)",
    ),
    (
        Overflow,
        "decimal overflow: the result is beyond the decimal range (34 significant digits, "
        "exponent at most 999,999)",
    ),
)


def _decimal_fault(exc: DecimalException, op: str, b: Any) -> ArithmeticError:
    """The plain-words fault for a signal ``_DEC`` trapped in ``a <op> b``."""
    conditions = exc.args[0] if exc.args and isinstance(exc.args[0], list) else [type(exc)]
    if op == "%" and b == 0:
        return ZeroDivisionError("decimal modulo by zero")
    for kind, reason in _DECIMAL_REASONS:
        if kind in conditions or isinstance(exc, kind):
            if kind is Overflow:
                return OverflowError(reason)
            if kind is DivisionByZero or kind is DivisionUndefined:
                return ZeroDivisionError(reason)
            return ArithmeticError(reason)
    return ArithmeticError(f"invalid decimal operation {op}")


def _dadd(a: Any, b: Any) -> Decimal:
    try:
        return _DEC.add(_operand(a), _operand(b))
    except DecimalException as exc:
        raise _decimal_fault(exc, "+", b) from exc


def _dsub(a: Any, b: Any) -> Decimal:
    try:
        return _DEC.subtract(_operand(a), _operand(b))
    except DecimalException as exc:
        raise _decimal_fault(exc, "-", b) from exc


def _dmul(a: Any, b: Any) -> Decimal:
    try:
        return _DEC.multiply(_operand(a), _operand(b))
    except DecimalException as exc:
        raise _decimal_fault(exc, "*", b) from exc


def _ddiv(a: Any, b: Any) -> Decimal:
    try:
        return _DEC.divide(_operand(a), _operand(b))
    except DecimalException as exc:
        raise _decimal_fault(exc, "/", b) from exc


def _dmod(a: Any, b: Any) -> Decimal:
    try:
        return _DEC.remainder(_operand(a), _operand(b))
    except DecimalException as exc:
        raise _decimal_fault(exc, "%", b) from exc


_DECIMAL_OPS: Final[dict[str, Callable[[Any, Any], Decimal]]] = {
    "+": _dadd,
    "-": _dsub,
    "*": _dmul,
    "/": _ddiv,
    "%": _dmod,
}
_PLAIN_OPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}
_NEGATE: Final[dict[str, tuple[str, int]]] = {
    "int": ("_isub(0, {})", _W_CALL),
    "decimal": ("_dsub(0, {})", _W_DECIMAL),
    "dyn": ("_dyn('-', 0, {})", _W_CALL),
}
"""Unary minus by operand type: code (``{}`` the operand) and weight (see the cost model)."""
_INT_OPS: Final[dict[str, Callable[[int, int], int]]] = {
    "+": _iadd,
    "-": _isub,
    "*": _imul,
    "/": _idiv,  # CEL's: truncating, as for typed ints (Python's / is true division)
    "%": _imod,  # and its remainder (Python's % floors)
}
_DECIMAL_OPERANDS: Final = (Decimal, int)


def _dyn(op: str, a: Any, b: Any) -> Any:
    """A dyn arithmetic operator: on a decimal, the typed decimal operator (fixed context,
    bounded operands) with a decimal or an integer; on two integers, the typed integer one
    (64-bit, truncating division); anything else as Python does it."""
    if type(a) is Decimal or type(b) is Decimal:
        if type(a) not in _DECIMAL_OPERANDS or type(b) not in _DECIMAL_OPERANDS:
            raise TypeError(f"cannot {op} {type(a).__name__} and {type(b).__name__}")
        return _DECIMAL_OPS[op](a, b)
    if type(a) is int and type(b) is int:
        return _INT_OPS[op](a, b)
    return _PLAIN_OPS[op](a, b)


def _truth(v: Any) -> bool:
    # A dyn value used as a condition must really be a bool; CEL has no truthiness.
    if type(v) is bool:
        return v
    raise TypeError(f"expected a bool, got {type(v).__name__}")


def _num(v: Any) -> Any:
    # dyn * and %: Python would repeat text and lists ("x" * 10**12) or format text ("%999999d").
    if isinstance(v, (str, bytes, tuple, list, dict)):
        raise TypeError(f"expected a number, got {type(v).__name__}")
    return v


def _units(v: Any) -> int:
    """Units to scan or copy ``v`` once in C (0 for scalars)."""
    t = type(v)
    if t is str:
        return len(v) // _CHARS_PER_UNIT
    if t is tuple or t is list:
        return len(v) // _ITEMS_PER_UNIT
    return 0


def _each(m: Meter, items: Any, weight: int) -> Any:
    # ``weight``: the static weight of the macro's predicate (see _Compiler), at least one.
    m.left -= 1 + len(items) * weight
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return items


def _search_units(s: str, t: str) -> int:
    """Units to look for ``t`` in ``s``: CPython's substring search compares up to
    len(s) x len(t) characters for the texts a request may send (``"a" * 29_999`` searched for
    ``"a" * 96 + "baa"`` took 0.8 ms, against 1,875 units by the text's length alone), so the
    product counts too, with the needle's length capped where its search turns linear."""
    n = len(s)
    return 1 + n // _CHARS_PER_UNIT + (n * min(len(t), _SEARCH_NEEDLE_CAP)) // _SEARCH_PER_UNIT


_SEARCH_NEEDLE_CAP: Final = 2_048
_SEARCH_PER_UNIT: Final = 256  # characters compared per unit, measured at 0.28-0.42 ns each


def _contains(m: Meter, s: Any, t: Any) -> bool:
    if type(s) is str and type(t) is str:
        m.left -= _search_units(s, t)
    else:  # a list (or a fault to come: len() of an int raises as it always did)
        m.left -= 1 + len(s) // _CHARS_PER_UNIT
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return t in s


def _starts(m: Meter, s: Any, t: Any) -> bool:
    m.left -= 1 + len(t) // _CHARS_PER_UNIT
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return bool(s.startswith(t))


def _ends(m: Meter, s: Any, t: Any) -> bool:
    m.left -= 1 + len(t) // _CHARS_PER_UNIT
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return bool(s.endswith(t))


def _matches(m: Meter, pattern: Any, weight: int, s: Any) -> bool:
    # UTF-8 bytes in, so the binding skips mapping byte offsets back to characters (we only ask
    # whether there is a match): a third of the cost of searching the str.
    data = s.encode("utf-8")
    m.left -= _REGEX_CALL_UNITS + (len(data) // _CHARS_PER_UNIT) * weight
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return pattern.search(data) is not None


def _isin(m: Meter, a: Any, b: Any) -> bool:
    m.left -= _search_units(b, a) if type(a) is str and type(b) is str else 1 + _units(b)
    if type(a) is str and (type(b) is tuple or type(b) is list):
        # Each element of the same length is compared character by character: bounded by the
        # text's length per element (counted without reading the list).
        m.left -= (len(a) * len(b)) // _COMPARED_CHARS_PER_UNIT
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    ta = type(a)
    if ta is Decimal or (ta is int and not _INT_MIN <= a <= _INT_MAX):
        # Each element is compared with a number that may need converting: look first, and pay
        # for looking (a step per element in Python).
        m.left -= len(b)
        if m.left < 0:
            raise BudgetExceeded(m.limit)
        for x in b:
            _numeric_pair(a, x)
    return a in b


def _inset(m: Meter, a: Any, s: frozenset[Any]) -> bool:
    # Python keeps no hash of a tuple: looking a list up hashes every item again, so a list fact
    # of 500,000 items in a macro over 10,000 others was ~10^10 steps for 8 units each time.
    # A text keeps its hash: it costs what it did.
    ta = type(a)
    m.left -= _W_HASH + (len(a) // _ITEMS_PER_UNIT if ta is tuple or ta is list else 0)
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return a in s


def _cmp(m: Meter, op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    m.left -= 1 + min(_units(a), _units(b))
    ta, tb = type(a), type(b)
    if (ta is tuple or ta is list) and (tb is tuple or tb is list) and len(a) == len(b):
        m.left -= min(_text(a), _text(b)) // _COMPARED_CHARS_PER_UNIT  # element by element
    elif (ta is Decimal and tb is float) or (ta is float and tb is Decimal):
        m.left -= _W_EXACT_FLOAT
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    if ta is Decimal or tb is Decimal:
        _numeric_pair(a, b)
    return op(a, b)


def _text(items: Any) -> int:
    """Characters of the texts among ``items``."""
    return sum(len(x) for x in items if type(x) is str)


def _cat(m: Meter, a: Any, b: Any) -> Any:
    m.left -= 1 + _units(a) + _units(b)
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return _dyn("+", a, b)


def _lcat(m: Meter, a: Any, b: Any) -> tuple[Any, ...]:
    m.left -= 1 + _units(a) + _units(b)
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return tuple(a) + tuple(b)


# ----------------------------------------------------------------------------- commutative logic
# CEL's ``||`` and ``&&`` (and the ``exists``/``all`` macros built on them) are commutative: a
# decisive side (true for ||, false for &&) wins even if the other side errs; only when neither
# side decides is the result an error. Here an error is absence (KeyError: the rule does not
# match) or a fault on present values; BudgetExceeded is neither and is never absorbed.
# Used only by a condition's second, commutative form (see compile_condition), with the sides as
# thunks so that each is evaluated at most once and only when needed.

_ABSORBED: Final = (KeyError, ArithmeticError, TypeError, ValueError, AttributeError)


def _worse(first: BaseException, second: BaseException) -> BaseException:
    """The error a non-decisive pair reports: a fault on present values over an absence, so the
    answer does not depend on which side was written first (and an error decision is never
    traded for a skipped rule)."""
    if isinstance(first, KeyError) and not isinstance(second, KeyError):
        return second
    return first


def _commutative(decisive: bool, sides: Iterable[Callable[[], Any]]) -> bool:
    """CEL's ``||`` (``decisive`` true) and ``&&`` (false), and ``exists``/``all`` over their
    elements: ``decisive`` as soon as a side gives it, whatever the others raised; else the worst
    error raised (see :func:`_worse`); else the other value."""
    error: BaseException | None = None
    for side in sides:
        try:
            if bool(side()) is decisive:
                return decisive
        except _ABSORBED as exc:
            error = exc if error is None else _worse(error, exc)
    if error is not None:
        raise error
    return not decisive


def _or(*sides: Callable[[], bool]) -> bool:
    return _commutative(True, sides)


def _and(*sides: Callable[[], bool]) -> bool:
    return _commutative(False, sides)


_OTHER_MACROS: Final = frozenset({"exists_one", "map", "filter", "transformList", "transformMap"})
"""CEL's macros outside the subset, named as such (their variable is not an undeclared fact)."""


def _exists(pred: Callable[[Any], bool], items: Any) -> bool:
    return _commutative(True, (functools.partial(pred, item) for item in items))


def _all(pred: Callable[[Any], bool], items: Any) -> bool:
    return _commutative(False, (functools.partial(pred, item) for item in items))


_HELPERS: Final[dict[str, Any]] = {
    "_i64": _i64,
    "_iadd": _iadd,
    "_isub": _isub,
    "_imul": _imul,
    "_idiv": _idiv,
    "_ncmp": _ncmp,
    "_imod": _imod,
    "_dadd": _dadd,
    "_dsub": _dsub,
    "_dmul": _dmul,
    "_ddiv": _ddiv,
    "_dmod": _dmod,
    "_truth": _truth,
    "_num": _num,
    "_dyn": _dyn,
    "_each": _each,
    "_or": _or,
    "_and": _and,
    "_exists": _exists,
    "_all": _all,
    "_ABSORBED": _ABSORBED,
    "_contains": _contains,
    "_starts": _starts,
    "_ends": _ends,
    "_matches": _matches,
    "_isin": _isin,
    "_inset": _inset,
    "_cmp": _cmp,
    "_cat": _cat,
    "_lcat": _lcat,
    "_eq": operator.eq,
    "_ne": operator.ne,
    "_lt": operator.lt,
    "_le": operator.le,
    "_gt": operator.gt,
    "_ge": operator.ge,
    "__builtins__": {"len": len, "any": any, "all": all},
}
_OP_FN: Final = {"==": "_eq", "!=": "_ne", "<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge"}


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

    def evaluate(
        self,
        facts: Mapping[str, Any],
        context: Mapping[str, Any],
        *,
        meter: Meter | None = None,
    ) -> bool:
        """True when the condition holds; false when it is false or its value depends on an
        absent fact or context field (see the module doc).

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


class _Problem(Exception):
    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


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
_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    '"': '"',
    "'": "'",
    "\\": "\\",
    "`": "`",
    "?": "?",
}
_ESCAPE_RE: Final = re.compile(
    r"\\(?:([abfnrtv\"'\\`?])|([0-3][0-7]{2})|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))"
)
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)")
_DURATION_UNITS: Final[dict[str, int | Decimal]] = {
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
    "us": 1,
    "ns": Decimal("0.001"),
}


def _decode_string(token: str) -> str:
    raw = token[0] in "rR"
    body = token[1:] if raw else token
    quote = 3 if body[:3] in ('"""', "'''") else 1
    body = body[quote:-quote]
    if raw:
        return body

    def repl(m: re.Match[str]) -> str:
        simple, octal, hex2, u4, u8 = m.groups()
        if simple is not None:
            return _ESCAPES[simple]
        code = int(octal, 8) if octal else int(hex2 or u4 or u8, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"escape {m.group(0)} is not a Unicode character")
        return chr(code)

    return _ESCAPE_RE.sub(repl, body)


def parse_duration(text: str) -> _dt.timedelta:
    """CEL duration text (``"1h30m"``, ``"-2.5s"``, ``"90m"``) → timedelta."""
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in "+-" else text
    pos, micros = 0, Decimal(0)
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    for m in _DURATION_RE.finditer(body):
        if m.start() != pos:
            raise ValueError(f"invalid duration {text!r}")
        micros += Decimal(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(body):
        raise ValueError(f"invalid duration {text!r}")
    try:
        return _dt.timedelta(microseconds=int(micros) * sign)
    except OverflowError:  # timedelta holds at most 999,999,999 days
        raise ValueError(
            f"duration {text!r} is longer than any timestamp arithmetic can use "
            "(at most 999,999,999 days)"
        ) from None


def parse_timestamp(text: str) -> _dt.datetime:
    """RFC 3339 text with a zone (``Z`` or offset) → aware UTC datetime."""
    value = _dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone (add Z or an offset)")
    return value.astimezone(_dt.UTC)


class _Compiler:
    def __init__(
        self,
        text: str,
        facts: Mapping[str, str] | None,
        enums: Mapping[str, tuple[str, ...]],
        limits: Limits,
        optional: Collection[str] | None,
        new_document: bool = True,
    ) -> None:
        self.text = text
        self.new_document = new_document  # false: the checks that came later are left out
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
                    return self.const(-operand.const, operand.type, lit)  # type: ignore[operator]
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

    def literal(self, token: Any) -> _Expr:
        kind, text = token.type, str(token)
        try:
            if kind == "INT_LIT":
                neg = text.startswith("-")
                digits = text[1:] if neg else text
                value = int(digits[2:], 16) if digits[:2].lower() == "0x" else int(digits, 10)
                return self.const(-value if neg else value, "int", str(-value if neg else value))
            if kind == "UINT_LIT":
                digits = text[:-1]
                value = int(digits[2:], 16) if digits[:2].lower() == "0x" else int(digits, 10)
                return self.const(value, "int", str(value))
            if kind == "FLOAT_LIT":
                return self.const(float(text), "double", text)
        except ValueError as exc:
            raise self.fail(token, f"invalid number {text!r}") from exc
        if kind in ("STRING_LIT", "MLSTRING_LIT"):
            try:
                return self.const(_decode_string(text), "string")
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
            meant = _did_you_mean(name, self.facts)
            raise self.fail(token, f"undeclared fact {name!r}{meant}")
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
            if op == "+":
                return self.charged(f"_cat(m, {a.code}, {b.code})", "dyn", a, b, fallible=True)
            # Decimal arithmetic, perhaps, after a dispatch on the operands' types.
            weight = _W_DECIMAL + _W_CALL
            if op in ("*", "%"):
                return self.op(
                    f"_dyn({op!r}, _num({a.code}), _num({b.code}))",
                    "dyn",
                    a,
                    b,
                    weight=weight,
                    fallible=True,
                )
            return self.op(
                f"_dyn({op!r}, {a.code}, {b.code})", "dyn", a, b, weight=weight, fallible=True
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
        raise self.fail(node, f"unsupported method {name}()")

    def regex(self, node: Any, text: str) -> tuple[Any, int]:
        """Compile a ``matches`` pattern with RE2: (pattern, cost weight per 16 bytes of text)."""
        limit = self.limits.regex_chars
        if len(text) > limit:
            raise self.fail(
                node,
                f"regular expression of {len(text):,} characters; at most {limit:,} are accepted "
                "(limit regex_chars): shorten it or split the test",
            )
        try:
            pattern = re2.compile(text, _RE2_OPTIONS)
        except UnicodeEncodeError:
            raise self.fail(
                node, "regular expression is not Unicode text (it holds a lone surrogate)"
            ) from None
        except re2.error as exc:
            detail = exc.args[0] if exc.args else "cannot compile"
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise self.fail(
                node,
                f"invalid regular expression for RE2 (CEL's dialect: no backreferences, no "
                f"lookaround, \\z not \\Z): {detail}",
            ) from None
        return pattern, 1 + pattern.programsize // _RE2_INSTRUCTIONS_PER_WEIGHT

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
            try:
                value: object = (
                    parse_timestamp(args[0].const)
                    if name == "timestamp"
                    else parse_duration(args[0].const)
                )
            except (ValueError, OverflowError) as exc:
                raise self.fail(node, str(exc)) from exc
            return self.const(value, name)
        raise self.fail(node, f"unsupported function {name}()")


_LONE_EQUALS: Final = re.compile(r"(?<![=!<>])=(?!=)")
_WORD_OPERATORS: Final = re.compile(r"\b(and|or|not)\b")
_CURLY_QUOTES: Final = "\u201c\u201d\u2018\u2019\u00ab\u00bb"


def _did_you_mean(name: str, declared: Mapping[str, str]) -> str:
    """`` (did you mean 'receipts'?)`` for a misspelt fact, or nothing. Bounded: a proposal may
    name hundreds of long facts, and difflib compares each pair in quadratic time."""
    if len(name) > _HINT_NAME_CHARS:
        return ""
    near = [f for f in declared if len(f) <= _HINT_NAME_CHARS and abs(len(f) - len(name)) <= 2]
    close = difflib.get_close_matches(name, near[:_HINT_CANDIDATES], n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


_HINT_NAME_CHARS: Final = 64
_HINT_CANDIDATES: Final = 100


def _syntax_hint(text: str) -> str | None:
    """What a condition's author most likely meant, for the mistakes people make most."""
    curly = sorted({c for c in text if c in _CURLY_QUOTES})
    if curly:
        return f"curly quotes {''.join(curly)}: write text in straight quotes, \"…\" or '…'"
    bare = _strip_strings(text)
    if _LONE_EQUALS.search(bare):
        return "use == to compare (= is not an operator)"
    word = _WORD_OPERATORS.search(bare)
    if word:
        return (
            f"CEL writes {word.group(1)!r} as "
            + {"and": "&&", "or": "||", "not": "!"}[word.group(1)]
        )
    return None


def _strip_strings(text: str) -> str:
    """``text`` with its string literals blanked, so a hint never reads inside one."""
    return re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'", '""', text)


def _quoted(a: _Expr, b: _Expr) -> str:
    """A hint when a number was written in quotes: ``amount <= "100"``."""
    for number, text in ((a, b), (b, a)):
        if (
            number.type in ("int", "decimal", "double")
            and text.type == "string"
            and isinstance(text.const, str)
            and _NUMBER.fullmatch(text.const.strip())
        ):
            return f": write the number without quotes, {text.const.strip()} not {text.const!r}"
    return ""


_NUMBER: Final = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


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
    as it did when it was accepted.

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
    compiler = _Compiler(text, facts, enums or {}, limits, optional, new_document)
    try:
        tree = _parse(text)
        result = compiler.walk(tree)
        if result.type not in ("bool", "dyn"):
            raise _Problem(f"a condition must be a bool, this one is a {result.type}", 1, 1)
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
    )


def alternatives(text: str) -> tuple[frozenset[str], ...]:
    """A condition as the alternatives it joins with ``||`` at its top level, each the set of
    terms it joins with ``&&`` (both through parentheses): ``a && (b || c)`` is one alternative
    of two terms, ``(a && b) || c`` two alternatives. A term is in a form that ignores layout
    (``a>1`` and ``a > 1`` are one term); ``true`` terms are left out, so an alternative that
    always holds is empty. For finding rules an earlier rule shadows (:mod:`ledger.core.policy
    .lint`): the condition holds when all the terms of one alternative do. The text must compile
    (:func:`compile_condition`)."""
    from lark import Token, Tree

    def key(node: Any) -> str:
        if isinstance(node, Token):
            return str(node)
        while node.data in _UNWRAP and len(node.children) == 1:
            node = node.children[0]  # a precedence level with one operand is that operand
            if isinstance(node, Token):
                return str(node)
        return f"{node.data}({','.join(key(c) for c in node.children)})"

    def bare(node: Any) -> Any:
        # Through one-operand precedence levels and parentheses to what the node really is.
        while isinstance(node, Tree) and len(node.children) == 1:
            if node.data not in _UNWRAP and node.data != "paren_expr":
                break
            node = node.children[0]
        return node

    def flat(node: Any, kind: str) -> list[Any]:
        node = bare(node)
        if isinstance(node, Tree) and node.data == kind:
            return [part for child in node.children for part in flat(child, kind)]
        return [node]

    return tuple(
        frozenset(k for k in map(key, flat(alt, "conditionaland")) if k != "literal(true)")
        for alt in flat(_parse(text), "conditionalor")
    )
