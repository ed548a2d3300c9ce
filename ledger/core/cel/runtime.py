"""What a compiled condition runs with: its faults, the :class:`Meter` of the evaluation budget
and the cost rates it is charged at, and the helpers the generated code calls by name.

:data:`_HELPERS` is the namespace every compiled function runs in (each compilation starts from
a copy of it): the generated source names these helpers, so they are bound here once and looked
up as globals, never as attributes of a module.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime, timedelta
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
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "BudgetExceeded",
    "ConditionFault",
    "ConditionFn",
    "Meter",
    "TYPE_NAMES_OF_PYTHON",
    "DECIMAL_DIGITS_REASON",
    "DECIMAL_EXPONENT_REASON",
    "INT64_MIN",
    "INT64_MAX",
]

ConditionFn = Callable[[Mapping[str, Any], Mapping[str, Any], "Meter | None"], Any]
"""``fn(facts, context, meter)``; raises ``KeyError`` when its value depends on an absent fact or
context field (see the package doc), the fault (``ArithmeticError``, ``TypeError``, ``ValueError``,
``AttributeError``) when it depends on one, and :class:`BudgetExceeded` when the meter runs out.
``meter`` may be ``None`` only for a condition that is not :attr:`CompiledCondition.metered`."""

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
    """The work units left to one request (or to one policy version it runs); see the package doc.

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


# Units per operation (see the package doc); C code scans text and lists far faster than the
# interpreter runs a macro's predicate, hence the divisors.
_CHARS_PER_UNIT: Final = 16
_ITEMS_PER_UNIT: Final = 8
_REGEX_CALL_UNITS: Final = 16
_RE2_INSTRUCTIONS_PER_WEIGHT: Final = 8

# Static weights (units per evaluation) of the operations in a macro's predicate; see the package
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
_W_ELEMENT_EQ: Final = 3
"""Per element of two lists compared in Python, one element at a time (:func:`_eq`: a list
holding a bool, a list or a map, where Python's equality is not CEL's), ~0.13-0.3 µs each."""
_FLAT: Final = frozenset({str, int, type(None), datetime, timedelta})
"""Elements two lists of which Python compares as CEL does, in C: no bool (``true == 1``), no
list or map (whose elements may be bools), no double or decimal (a NaN is unequal to itself,
which a tuple's comparison, taking one object for equal to itself, would not see)."""
_NESTED: Final = frozenset({tuple, list, dict, MappingProxyType})
"""The kinds of value that hold others."""
_W_COMMUTE: Final = 10
"""Per side of a commutative ``||``/``&&``, and per element of a macro whose predicate can raise,
in a condition's second form (see :func:`compile_condition`): a thunk, and an error raised and
absorbed."""


# ----------------------------------------------------------------------------- run-time helpers
# Referenced by name from generated code; kept tiny because they are on the hot path only when a
# condition actually uses the operator.


# Integers are CEL's: 64-bit, an operand or result outside that range is a fault. Python's ints
# are unbounded, and their cost grows with their digits: an int fact may have 4,300 of them, and
# n * n * n ... in a macro's predicate took minutes; a decimal compared with such an int converts
# it first, in time quadratic in its digits (~0.3 ms each).
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
_INT_OVERFLOW: Final = "integer overflow: a value or result outside the 64-bit range of CEL's int"


def _i64(a: int) -> int:
    if INT64_MIN <= a <= INT64_MAX:
        return a
    raise OverflowError(_INT_OVERFLOW)


def _iadd(a: int, b: int) -> int:
    if INT64_MIN <= a <= INT64_MAX and INT64_MIN <= b <= INT64_MAX:
        r = a + b
        if INT64_MIN <= r <= INT64_MAX:
            return r
    raise OverflowError(_INT_OVERFLOW)


def _isub(a: int, b: int) -> int:
    if INT64_MIN <= a <= INT64_MAX and INT64_MIN <= b <= INT64_MAX:
        r = a - b
        if INT64_MIN <= r <= INT64_MAX:
            return r
    raise OverflowError(_INT_OVERFLOW)


def _imul(a: int, b: int) -> int:
    if INT64_MIN <= a <= INT64_MAX and INT64_MIN <= b <= INT64_MAX:
        r = a * b
        if INT64_MIN <= r <= INT64_MAX:
            return r
    raise OverflowError(_INT_OVERFLOW)


def _idiv(a: int, b: int) -> int:
    if INT64_MIN <= a <= INT64_MAX and INT64_MIN <= b <= INT64_MAX:
        q = abs(a) // abs(b)  # b == 0: "integer division or modulo by zero"
        q = q if (a >= 0) == (b >= 0) else -q
        if q <= INT64_MAX:  # only INT64_MIN / -1 is out of range
            return q
    raise OverflowError(_INT_OVERFLOW)


def _imod(a: int, b: int) -> int:
    return a - b * _idiv(a, b)


def _numeric_pair(a: Any, b: Any) -> None:
    """Refuse a decimal next to an int outside the int range, before Python converts the int."""
    ta, tb = type(a), type(b)
    if (ta is Decimal and tb is int and not INT64_MIN <= b <= INT64_MAX) or (
        tb is Decimal and ta is int and not INT64_MIN <= a <= INT64_MAX
    ):
        raise OverflowError(_INT_OVERFLOW)


# ----------------------------------------------------------------------------- CEL's overloads
# A dyn value (a context field, a grant condition's fact) meets Python's operators, which know
# nothing of CEL's types: Python's bool is an int, so ``true == 1``, ``false < 0.3`` and
# ``true + 1 == 2`` all held, and a context ``{"risk": false}`` passed a ``context.risk < 0.3``
# rule. CEL has no overload between bool and a number: ordering them or doing arithmetic on
# them is a fault (``no such overload``), and equality is CEL's heterogeneous equality, false
# between values of different kinds, as ``1 == "1"`` already was.

_CEL_NAMES: Final[dict[type, str]] = {
    bool: "bool",
    int: "int",
    float: "double",
    Decimal: "decimal",
    str: "string",
    tuple: "list",
    list: "list",
    type(None): "null",
    datetime: "timestamp",
    timedelta: "duration",
    dict: "map",
    MappingProxyType: "map",
}
"""The CEL type a run-time value is (the names the compiler's static types use)."""

TYPE_NAMES_OF_PYTHON: Final[dict[str, str]] = {
    **{t.__name__: name for t, name in _CEL_NAMES.items()},
    **{f"{t.__module__}.{t.__qualname__}": name for t, name in _CEL_NAMES.items()},
}
"""Python's names of those types, as its own messages wrote them (``str``, ``decimal.Decimal``),
to the CEL names: what a fault recorded before the CEL wording said, in today's words."""


def _cel_type(v: Any) -> str:
    return _CEL_NAMES.get(type(v), type(v).__name__)


def _no_overload(op: str, a: Any, b: Any) -> TypeError:
    return TypeError(f"no such overload: {_cel_type(a)} {op} {_cel_type(b)}")


_ORDERED: Final = frozenset({bool, int, float, Decimal, str, datetime, timedelta})
"""What CEL orders among the values a request carries (not lists, not null); numbers of any of
the three kinds with each other, anything else only with its own kind."""
_NUMBERS: Final = frozenset({int, float, Decimal})


def _eq(a: Any, b: Any) -> bool:
    """CEL's ``==`` on values that may be dyn: a bool equals only a bool, in a list or map too
    (a review: ``[true] == [1]`` held by Python's equality)."""
    ta, tb = type(a), type(b)
    if (ta is bool) is not (tb is bool):
        return False
    if (ta is tuple or ta is list) and (tb is tuple or tb is list):
        return len(a) == len(b) and all(map(_eq, a, b))
    if ta in _MAPS and tb in _MAPS:
        return a.keys() == b.keys() and all(_eq(v, b[k]) for k, v in a.items())
    return a == b  # type: ignore[no-any-return]  # operands are CEL values of one type, checked by the compiler


def _ne(a: Any, b: Any) -> bool:
    """CEL's ``!=``: the negation of :func:`_eq`."""
    ta, tb = type(a), type(b)
    if (ta is bool) is not (tb is bool):
        return True
    if ta is tuple or ta is list or ta in _MAPS:
        return not _eq(a, b)
    return a != b  # type: ignore[no-any-return]  # operands are CEL values of one type, checked by the compiler


_MAPS: Final = frozenset({dict, MappingProxyType})


# CEL's orderings: Python's own once the operands are known to be of kinds CEL orders (inline,
# not a shared check: a call more made a comparison in a macro's predicate 3x slower).
def _lt(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if (ta is tb and ta in _ORDERED) or (ta in _NUMBERS and tb in _NUMBERS):
        return a < b  # type: ignore[no-any-return]  # operands are CEL values of one type, checked by the compiler
    raise _no_overload("<", a, b)


def _le(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if (ta is tb and ta in _ORDERED) or (ta in _NUMBERS and tb in _NUMBERS):
        return a <= b  # type: ignore[no-any-return]  # operands are CEL values of one type, checked by the compiler
    raise _no_overload("<=", a, b)


def _gt(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if (ta is tb and ta in _ORDERED) or (ta in _NUMBERS and tb in _NUMBERS):
        return a > b  # type: ignore[no-any-return]  # operands are CEL values of one type, checked by the compiler
    raise _no_overload(">", a, b)


def _ge(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if (ta is tb and ta in _ORDERED) or (ta in _NUMBERS and tb in _NUMBERS):
        return a >= b  # type: ignore[no-any-return]  # operands are CEL values of one type, checked by the compiler
    raise _no_overload(">=", a, b)


def _ncmp(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """A comparison of a dyn with a number that is not a literal (either may be a decimal)."""
    if type(a) is Decimal or type(b) is Decimal:
        _numeric_pair(a, b)
    return op(a, b)


def _dlit(op: Callable[[Any, Any], Any], a: Any, as_float: float, as_decimal: Decimal) -> Any:
    """A dyn compared with a double literal: with its written digits when the dyn is a decimal
    (``context.risk >= 0.8`` holds for an exact 0.8), with the double otherwise."""
    return op(a, as_decimal if type(a) is Decimal else as_float)


def _dlitl(op: Callable[[Any, Any], Any], as_float: float, as_decimal: Decimal, b: Any) -> Any:
    """:func:`_dlit` with the literal on the left."""
    return op(as_decimal if type(b) is Decimal else as_float, b)


# Decimal arithmetic (typed, and on decimals in dyn conditions) rounds its result to _DEC's 34
# digits. Its cost grows with the operands' digits, unmetered: two 65,536-digit facts take ~5 ms
# to multiply, once per macro element. So an operand must itself fit 34 significant digits
# (checked in time linear in its digits); a longer one is a fault (``condition_error``), never
# silently rounded: a - b of two long, close values must not become 0.
DECIMAL_DIGITS_REASON: Final = (
    "a decimal operand has more than 34 significant digits (arithmetic works at decimal128 "
    "precision)"
)


DECIMAL_EXPONENT_REASON: Final = (
    "a decimal operand's exponent is out of range (arithmetic works at decimal128 precision: "
    "34 significant digits, exponent from -999,999 to 999,999)"
)
"""A value of few digits and a vast exponent (``1E-999999999999999999``), which rounding to
``_DEC`` changes as it changes a long one: said as what it is, not as too many digits. Decisions
recorded until 2026-12-06 said ``DECIMAL_DIGITS_REASON``: replay takes that wording
(:func:`ledger.core.wordings.earlier_wording`)."""


def _operand(x: Any) -> Decimal:
    if type(x) is int and not INT64_MIN <= x <= INT64_MAX:
        raise OverflowError(_INT_OVERFLOW)
    d = Decimal(x)
    short = _DEC.plus(d)  # the same value when it fits 34 digits and the exponent range
    if short != d:
        # Within the exponent range, only digits beyond 34 change a value (never as_tuple(),
        # a Python int per digit: ~65,000 of them per operand, once per macro element).
        within = _DEC.Emin <= d.adjusted() <= _DEC.Emax
        raise ValueError(DECIMAL_DIGITS_REASON if within else DECIMAL_EXPONENT_REASON)
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
_INT_OPS: Final[dict[str, Callable[[int, int], int]]] = {
    "+": _iadd,
    "-": _isub,
    "*": _imul,
    "/": _idiv,  # CEL's: truncating, as for typed ints (Python's / is true division)
    "%": _imod,  # and its remainder (Python's % floors)
}
_DECIMAL_OPERANDS: Final = (Decimal, int)


_NOT_MULTIPLIED: Final = frozenset({bool, str, bytes, tuple, list, dict})


def _dyn(op: str, a: Any, b: Any) -> Any:
    """A dyn arithmetic operator: on a decimal, the typed decimal operator (fixed context,
    bounded operands) with a decimal or an integer; on two integers, the typed integer one
    (64-bit, truncating division); never on a bool (CEL has no arithmetic on bools); anything
    else as Python does it, its refusal said as CEL says it (``no such overload``)."""
    ta, tb = type(a), type(b)
    if ta is Decimal or tb is Decimal:
        if ta not in _DECIMAL_OPERANDS or tb not in _DECIMAL_OPERANDS:
            raise _no_overload(op, a, b)
        return _DECIMAL_OPS[op](a, b)
    if ta is int and tb is int:
        return _INT_OPS[op](a, b)
    if (
        ta is bool
        or tb is bool
        or (op in ("*", "%") and (ta in _NOT_MULTIPLIED or tb in _NOT_MULTIPLIED))
    ):
        # * and % on text or lists: Python would repeat them ("x" * 10**12) or format text
        # ("%999999d").
        raise _no_overload(op, a, b)
    try:
        return _PLAIN_OPS[op](a, b)
    except TypeError:
        raise _no_overload(op, a, b) from None


def _lit(other: Any, as_float: float, as_decimal: Decimal) -> Any:
    """A number written with a fraction in a condition, as the dyn beside it needs it: its
    written digits beside a decimal (``context.x * 1.1`` for the SDK's ``Decimal``, or the
    exact number ``ledger evaluate --context`` sends; a policy owner found it refused, ``no
    such overload: decimal * double``, so a grant denied the agent that sent money as the
    README says), the double otherwise; as before ``decimal_literals`` when replay asks."""
    if type(other) is Decimal and _RULES.get(_ALL_RULES) > _DECIMAL_LITERALS:
        return as_decimal
    return as_float


def _dynlit(op: str, a: Any, as_float: float, as_decimal: Decimal) -> Any:
    """A dyn arithmetic operator with a number written with a fraction on its right
    (:func:`_lit`)."""
    return _dyn(op, a, _lit(a, as_float, as_decimal))


def _dynlitl(op: str, as_float: float, as_decimal: Decimal, b: Any) -> Any:
    """:func:`_dynlit` with the number on the left."""
    return _dyn(op, _lit(b, as_float, as_decimal), b)


def _catlit(m: Meter, a: Any, as_float: float, as_decimal: Decimal) -> Any:
    """A dyn ``+`` a number written with a fraction, charged as :func:`_cat` charges it."""
    return _cat(m, a, _lit(a, as_float, as_decimal))


def _catlitl(m: Meter, as_float: float, as_decimal: Decimal, b: Any) -> Any:
    """:func:`_catlit` with the number on the left."""
    return _cat(m, _lit(b, as_float, as_decimal), b)


def _dneg(v: Any) -> Any:
    """A dyn unary minus: of a number, as the typed one (0 - v); of anything else (a bool
    included), CEL's fault."""
    if type(v) not in _NUMBERS:
        raise TypeError(f"no such overload: -{_cel_type(v)}")
    return _dyn("-", 0, v)


def _truth(v: Any) -> bool:
    # A dyn value used as a condition must really be a bool; CEL has no truthiness.
    if type(v) is bool:
        return v
    raise TypeError(f"expected a bool, got {_cel_type(v)}")


def _num(v: Any, op: str) -> Any:
    # The left operand of a dyn * or %, refused before the right one is evaluated (as ever);
    # _dyn refuses the right one.
    if type(v) in _NOT_MULTIPLIED:
        raise TypeError(f"no such overload: {_cel_type(v)} {op} …")
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
    if type(s) is not str:  # a context value: CEL's contains() is text's only (a list: `in`)
        raise TypeError(f"contains() is for text, not {_cel_type(s)}")
    if type(t) is str:
        m.left -= _search_units(s, t)
    else:  # a list (or a fault to come: len() of an int raises as it always did)
        m.left -= 1 + len(s) // _CHARS_PER_UNIT
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return t in s


def _starts(m: Meter, s: Any, t: Any) -> bool:
    _texts("startsWith", s, t)
    m.left -= 1 + len(t) // _CHARS_PER_UNIT
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return bool(s.startswith(t))


def _ends(m: Meter, s: Any, t: Any) -> bool:
    _texts("endsWith", s, t)
    m.left -= 1 + len(t) // _CHARS_PER_UNIT
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return bool(s.endswith(t))


def _texts(name: str, s: Any, t: Any) -> None:
    """A text function's operands (context values) are texts, else CEL's fault in CEL's words
    (a fuzzer: "'int' object has no attribute 'startswith'", as contains() once said); before
    2026-12-07, Python's (a list of texts as the argument: any of them)."""
    if (type(s) is not str or type(t) is not str) and not _lists_before():
        raise TypeError(f"{name}() is for text, not {_cel_type(t if type(s) is str else s)}")


def _matches(m: Meter, pattern: Any, weight: int, s: Any) -> bool:
    # UTF-8 bytes in, so the binding skips mapping byte offsets back to characters (we only ask
    # whether there is a match): a third of the cost of searching the str.
    data = s.encode("utf-8")
    m.left -= _REGEX_CALL_UNITS + (len(data) // _CHARS_PER_UNIT) * weight
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    return pattern.search(data) is not None


def _isin(m: Meter, a: Any, b: Any) -> bool:
    if type(b) is str:  # a context value: CEL has no text-in-text `in` ("we" in "web")
        raise TypeError("the right side of 'in' must be a list, got text")
    m.left -= _search_units(b, a) if type(a) is str and type(b) is str else 1 + _units(b)
    if type(a) is str and (type(b) is tuple or type(b) is list):
        # Each element of the same length is compared character by character: bounded by the
        # text's length per element (counted without reading the list).
        m.left -= (len(a) * len(b)) // _COMPARED_CHARS_PER_UNIT
    ta = type(a)
    # A list looked up in a list of lists is compared with each (a review: `sa in [sc]`, two
    # lists of 1,000 texts, was charged one unit for 1,000 elements compared).
    nested = ta is tuple or ta is list or ta in _MAPS
    if nested and not _lists_before() and not set(map(type, b)).isdisjoint(_NESTED):
        cap = max(m.left, 0) // (_W_ELEMENT_EQ * max(len(b), 1)) + 1
        m.left -= _W_ELEMENT_EQ * len(b) * (1 + _deep_items(a, cap))
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    if ta is Decimal or (ta is int and not INT64_MIN <= a <= INT64_MAX):
        # Each element is compared with a number that may need converting: look first, and pay
        # for looking (a step per element in Python).
        m.left -= len(b)
        if m.left < 0:
            raise BudgetExceeded(m.limit)
        for x in b:
            _numeric_pair(a, x)
    found = a in b
    if found and (ta is bool or ta in _NUMBERS or ta is tuple or ta is list or ta in _MAPS):
        # Python found it by its own equality, where true is 1: CEL's says which it was.
        return any(_eq(a, x) for x in b)
    return found


def _inset(m: Meter, a: Any, s: frozenset[Any]) -> bool:
    # Python keeps no hash of a tuple: looking a list up hashes every item again, so a list fact
    # of 500,000 items in a macro over 10,000 others was ~10^10 steps for 8 units each time.
    # A text keeps its hash: it costs what it did.
    ta = type(a)
    m.left -= _W_HASH + (len(a) // _ITEMS_PER_UNIT if ta is tuple or ta is list else 0)
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    # A literal list holds one kind of value (the compiler's check): a bool is found among
    # bools only, a number among numbers only, though Python's true is 1.
    return a in s and (ta is bool) is (type(next(iter(s))) is bool)


def _insetd(m: Meter, a: Any, s: frozenset[Any], exact: frozenset[Any]) -> bool:
    """:func:`_inset` for a dyn in a literal list holding doubles: a decimal is looked up among
    their written digits (``context.x in [0.1, 0.2]`` holds for an exact 0.1, as for the
    SDK's float), anything else among the doubles."""
    return _inset(m, a, exact if type(a) is Decimal else s)


RULE_CHANGES: Final = ("list_costs", "decimal_literals")
"""The changes to how conditions run that a recorded decision may predate, in the order they
were released: ``list_costs`` (2026-12-07: comparing two lists, and a list looked up in a list
of lists, charged what it costs; ``startsWith``/``endsWith`` take text only) and
``decimal_literals`` (later on 2026-12-07: a decimal context value, or a grant condition's
decimal fact, in arithmetic with a number written with a fraction, ``context.x * 1.1``, uses the
number's written digits; before, ``no such overload: decimal * double``). :func:`rules_before`
runs conditions as they ran before one of them."""

_LIST_COSTS: Final = RULE_CHANGES.index("list_costs")
_DECIMAL_LITERALS: Final = RULE_CHANGES.index("decimal_literals")
_ALL_RULES: Final = len(RULE_CHANGES)
_RULES: ContextVar[int] = ContextVar("ledger_cel_rules")
"""How many of :data:`RULE_CHANGES` are in force (all but within :func:`rules_before`)."""


@contextlib.contextmanager
def rules_before(change: str) -> Iterator[None]:
    """Within the block, conditions run as the releases before ``change`` (one of
    :data:`RULE_CHANGES`; it and every later change are off) ran them, for reproducing a
    decision recorded then exactly. Before ``list_costs``, comparing two lists charged a unit
    per 8 elements and the texts' characters only (no reading of their kinds, no charge per
    element compared in Python), a list looked up in a list one unit, and
    ``startsWith``/``endsWith`` took any argument Python's ``str.startswith`` takes (a list of
    texts: any of them). The one run-time switch of the core's evaluation, a parameter of the
    block, never of the process: replay alone sets it (:mod:`ledger.audit.reproduce`)."""
    token = _RULES.set(min(RULE_CHANGES.index(change), _RULES.get(_ALL_RULES)))
    try:
        yield
    finally:
        _RULES.reset(token)


def _lists_before() -> bool:
    """Do conditions run as before ``list_costs`` (reproduction only)?"""
    return _RULES.get(_ALL_RULES) <= _LIST_COSTS


def _cmp(m: Meter, op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    m.left -= 1 + min(_units(a), _units(b))
    ta, tb = type(a), type(b)
    if (ta is tuple or ta is list) and (tb is tuple or tb is list):
        return _lists_cmp(m, op, a, b)
    if (ta is Decimal and tb is float) or (ta is float and tb is Decimal):
        m.left -= _W_EXACT_FLOAT
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    if ta is Decimal or tb is Decimal:
        _numeric_pair(a, b)
    return op(a, b)


def _lists_cmp(m: Meter, op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """Two lists compared, charged for what it costs (a red team: ``context.a == context.b``
    over two lists of 1,000 texts, in a nested macro, held the evaluator 2.3 s per request at
    a tenth of the units it cost). Their kinds are read in C (a unit per 8 elements); lists of
    :data:`_FLAT` elements (texts only, or no text) are then compared in C, their texts'
    characters counted as a memcmp's; any other pair, one element at a time in Python, every
    element of every list inside them counted (:data:`_W_ELEMENT_EQ` each: a review found
    ``[sa] == [sb]`` charged one element for 1,000)."""
    if _lists_before():  # how releases before 2026-12-07 charged it (reproduction only)
        if len(a) == len(b):
            m.left -= min(_text_before(a), _text_before(b)) // _COMPARED_CHARS_PER_UNIT
        if m.left < 0:
            raise BudgetExceeded(m.limit)
        return op(a, b)
    m.left -= _units(a) + _units(b)
    kinds = set(map(type, a))
    kinds.update(map(type, b))
    # Texts beside other kinds (a dyn list) are compared one at a time too: their lengths
    # could only be summed in Python.
    flat = kinds <= _FLAT and (kinds == {str} or str not in kinds)
    if not flat:
        cap = max(m.left, 0) // _W_ELEMENT_EQ + 1  # walked no further than the budget pays
        walked = _deep_items(a, cap)
        walked += _deep_items(b, cap - walked)
        m.left -= _W_ELEMENT_EQ * (2 + walked)
    elif kinds and len(a) == len(b) and str in kinds:
        m.left -= _units(a) + _units(b)  # the lengths summed here, in C
        m.left -= min(sum(map(len, a)), sum(map(len, b))) // _COMPARED_CHARS_PER_UNIT
    if m.left < 0:
        raise BudgetExceeded(m.limit)
    if not flat or (op is not _eq and op is not _ne):
        return op(a, b)  # CEL's equality (a bool is no 1), or no such overload (`<`)
    same = len(a) == len(b) and tuple(a) == tuple(b)
    return same if op is _eq else not same


def _deep_items(v: Any, cap: int) -> int:
    """Elements of ``v`` and of every list or map inside it, and a unit per 2,048 of their
    texts' characters (compared by memcmp): what comparing it one element at a time reads;
    counted no further than past ``cap`` (the walk is itself Python work: a review found a
    condition of a thousand references to a list walked 0.17 s before the budget was looked
    at). Lists inside lists come from a condition's own literals (a request's hold text only),
    so the walk is as deep as the condition is."""
    t = type(v)
    if t is tuple or t is list:
        items: Iterable[Any] = v
    elif t in _MAPS:
        items = v.values()
    else:
        return len(v) // _COMPARED_CHARS_PER_UNIT if t is str else 0
    n = len(v)
    for x in items:
        if n > cap:
            break
        tx = type(x)
        if tx is tuple or tx is list or tx in _MAPS or tx is str:
            n += _deep_items(x, cap - n)
    return n


def _text_before(items: Any) -> int:
    """Characters of the texts among ``items``: the charge before 2026-12-07."""
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
    "_dlit": _dlit,
    "_insetd": _insetd,
    "_dlitl": _dlitl,
    "_imod": _imod,
    "_dadd": _dadd,
    "_dsub": _dsub,
    "_dmul": _dmul,
    "_ddiv": _ddiv,
    "_dmod": _dmod,
    "_truth": _truth,
    "_num": _num,
    "_dyn": _dyn,
    "_dynlit": _dynlit,
    "_dynlitl": _dynlitl,
    "_catlit": _catlit,
    "_catlitl": _catlitl,
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
    "_eq": _eq,
    "_ne": _ne,
    "_lt": _lt,
    "_le": _le,
    "_gt": _gt,
    "_ge": _ge,
    "_dneg": _dneg,
    "__builtins__": {"len": len, "any": any, "all": all},
}
