"""Typed facts: declarations, and the validation/coercion of a request's facts against them.

Validators are built once per policy version (:func:`build_checker`) and run per request; each
declared fact gets one small converter closure, so the hot path is a loop of direct calls.

Accepted inputs per type (anything else is an ill-typed fact):

============== ==================================================================================
``int``        ``int`` (never ``bool``), ``Decimal`` written without a fraction within 64 bits
               (``Decimal("1E+18")``, JSON's ``1e18``; :func:`int_value`)
``decimal``    ``Decimal`` (finite), ``int``, ``str`` of ASCII decimal notation (``"120.50"``,
               ``"-1.5e3"``; :data:`DECIMAL_TEXT`), ``float`` via its shortest repr (``120.5`` →
               ``Decimal("120.5")``); never ``bool``
``float``      ``float``, ``int``, ``Decimal`` (never ``bool``); NaN and infinities are rejected
``bool``       ``bool`` only
``string``     ``str``
``enum``       ``str`` among the declared ``values``
``timestamp``  aware ``datetime`` or ISO 8601 / RFC 3339 text with a zone; normalised to UTC
``list<string>`` list or tuple of ``str``; becomes a tuple
============== ==================================================================================

Sizes are bounded (:mod:`ledger.core.limits`): at most ``facts_keys`` facts, text of at most
``fact_string_chars`` characters, lists of at most ``fact_list_items`` items, decimals of at most
``fact_decimal_digits`` significant digits; the request's context is held to the same bounds
(:func:`context_problems`). Grant conditions see the facts as sent, before any policy converts
them, so their decimals are checked first (:func:`decimal_problems`). Facts over a bound are invalid
facts like any other, each with its reason. :func:`parse_facts_json` reads facts written as JSON
(the CLI's ``--facts``) within ``facts_bytes`` and ``facts_json_depth``.
:func:`facts_recorded_as` says whether a decision's recorded facts are the ones a request sent
(as sent, or as the declared types converted them), for a client that must not act on a
decision answering another request under its id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, TypeAlias

from ledger.core import boundedjson
from ledger.core.cel.lexical import FINER_THAN_MICROSECONDS, finer_than_microseconds
from ledger.core.cel.runtime import INT64_MAX, INT64_MIN
from ledger.core.events import Value
from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.errors import UsageError

__all__ = [
    "FactType",
    "FACT_TYPES",
    "FactSpec",
    "FactsChecker",
    "build_checker",
    "validate_facts",
    "context_problems",
    "decimal_problems",
    "decimal_digits",
    "parse_facts_json",
    "cel_type",
    "same_value",
    "same_values",
    "facts_recorded_as",
    "int_value",
]

FactType: TypeAlias = Literal[
    "int", "decimal", "float", "bool", "string", "enum", "timestamp", "list<string>"
]
FACT_TYPES: Final[tuple[str, ...]] = (
    "int",
    "decimal",
    "float",
    "bool",
    "string",
    "enum",
    "timestamp",
    "list<string>",
)
_CEL_TYPE: Final = {
    "int": "int",
    "decimal": "decimal",
    "float": "double",
    "bool": "bool",
    "string": "string",
    "enum": "string",
    "timestamp": "timestamp",
    "list<string>": "list<string>",
}


_DATE_AND_OFFSET: Final = re.compile(r"\d{4}-\d{2}-\d{2}[+-]\d{2}(?::?\d{2})?")
"""A date followed at once by an offset, which Python reads as that many hours with no zone."""


def cel_type(fact_type: str) -> str:
    """The CEL static type a fact of ``fact_type`` has inside conditions."""
    return _CEL_TYPE[fact_type]


@dataclass(frozen=True, slots=True, kw_only=True)
class FactSpec:
    """One declared fact. ``minimum``/``maximum`` are inclusive (``min``/``max`` in YAML)."""

    name: str
    type: FactType
    optional: bool = False
    values: tuple[str, ...] | None = None
    minimum: int | Decimal | float | None = None
    maximum: int | Decimal | float | None = None
    description: str | None = None


class _Bad:
    """A converter's verdict that the value is not acceptable (cheaper than raising)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _show(v: object) -> str:
    text = repr(list(v)) if type(v) is tuple else repr(v)  # shown as sent (see _got)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(v: object) -> str:
    """What the sender wrote, its kind in JSON's words, not Python's (a policy owner's
    walkthrough: "expected an int, got str '10'"): ``text '10'``, ``the number 1.5``,
    ``the boolean true``, ``null``. A list arrives as a tuple (the record's form of one).
    Decisions recorded before say it in Python's words: :data:`PYTHON_KINDS` maps them."""
    if v is None:
        return "null"
    if type(v) is bool:
        shown = "true" if v else "false"
    elif type(v) is Decimal:  # a JSON number with a fraction: its digits (a review)
        digits = str(v)
        shown = digits if len(digits) <= 60 else digits[:57] + "..."
    else:
        shown = _show(v)
    return f"{_JSON_KINDS.get(type(v), 'a value')} {shown}"


_JSON_KINDS: Final = {
    str: "text",
    int: "the whole number",
    float: "the number",
    Decimal: "the number",
    bool: "the boolean",
    dict: "an object",
    list: "a list",
    tuple: "a list",
    datetime: "a timestamp",
}

PYTHON_KINDS: Final = {
    "str": "text",
    "int": "the whole number",
    "float": "the number",
    "Decimal": "the number",
    "bool": "the boolean",
    "dict": "an object",
    "list": "a list",
    "datetime": "a timestamp",
    "NoneType": "null",
}
"""The kinds of a fact's value as reasons recorded before 2026-12-06 (night) named them, in
today's words (:func:`ledger.core.wordings.earlier_wording` reads old decisions with it)."""


def _long_text(v: str, max_chars: int) -> _Bad:
    return _Bad(
        f"text of {len(v):,} characters; at most {max_chars:,} are accepted (limit fact_string_chars)"
    )


def int_value(v: Any) -> int | None:
    """An ``int`` fact's value (or an ``int`` fact's bound in a policy) as the int it is, else
    ``None``: an ``int`` (never a ``bool``), or an exact decimal written without a fraction
    within CEL's 64 bits (JSON's ``1e18`` read by the CLI as ``Decimal("1E+18")``, or a
    ``Decimal`` the SDK sends). Bounded before ``int()``: ``int(Decimal("1e+10000000"))`` runs
    for minutes. A float is not one (``1e15`` and ``1000000000000000.0`` are the same float,
    and its digits are not what was written): send an int, or the number as text for a
    decimal fact."""
    if type(v) is int:
        return v
    if (
        type(v) is Decimal
        and v.is_finite()
        and int(v.as_tuple().exponent) >= 0
        and v.adjusted() < 19
        and INT64_MIN <= int(v) <= INT64_MAX
    ):
        return int(v)
    return None


BEYOND_64_BITS: Final = (
    "is outside the 64-bit range of an int fact (-9223372036854775808 to 9223372036854775807): "
    "send a decimal fact for larger numbers"
)


def _whole_beyond_64_bits(v: Any) -> bool:
    """A whole number ``int_value`` refused for its size alone (its exponent bounded first,
    as there: a huge one would take long to make an int of)."""
    if type(v) is int:
        return True  # an int reaching here is out of range
    if type(v) is not Decimal or not v.is_finite() or int(v.as_tuple().exponent) < 0:
        return False
    return v.adjusted() < 4_300 and not INT64_MIN <= int(v) <= INT64_MAX


def decimal_digits(d: Decimal) -> int:
    """Significant digits of ``d``'s coefficient (``Decimal("0.0120")`` has 3, ``0`` has 1), in
    time linear in them: ``as_tuple()`` would make a Python int per digit."""
    mantissa = str(d).partition("E")[0].lstrip("-").replace(".", "").lstrip("0")
    return len(mantissa) or 1


def _long_decimal(d: Decimal, max_digits: int) -> _Bad | None:
    """Why ``d`` has too many digits, or ``None``. Its text is never shorter than its digits,
    so a short one is not counted."""
    if len(str(d)) <= max_digits:
        return None
    digits = decimal_digits(d)
    if digits <= max_digits:
        return None
    return _Bad(
        f"a decimal of {digits:,} significant digits; at most {max_digits:,} are accepted "
        "(limit fact_decimal_digits)"
    )


def decimal_problems(
    values: Mapping[str, Any], limits: Limits, prefix: str = ""
) -> tuple[str, ...]:
    """Why decimals among ``values`` (facts, or context with ``prefix="context."``) are longer
    than ``limits.fact_decimal_digits``: comparing them would cost more than the evaluation budget
    counts. Checked on the facts as sent, before grant conditions see them."""
    max_digits = limits.fact_decimal_digits
    for v in values.values():  # on every request: one type test per value, nothing allocated
        if type(v) is Decimal and len(str(v)) > max_digits:
            break
    else:
        return ()
    reasons = []
    for name, v in values.items():
        if type(v) is Decimal:
            bad = _long_decimal(v, max_digits)
            if bad is not None:
                reasons.append(f"{prefix}{name}: {bad.reason}")
    return tuple(reasons)


def _converter(spec: FactSpec, limits: Limits) -> Callable[[Any], Any]:
    lo, hi = spec.minimum, spec.maximum
    max_chars, max_items = limits.fact_string_chars, limits.fact_list_items
    max_digits = limits.fact_decimal_digits

    def bounded(v: Any) -> Any:
        if lo is not None and v < lo:
            return _Bad(f"{v} is below the minimum {lo}")
        if hi is not None and v > hi:
            return _Bad(f"{v} is above the maximum {hi}")
        return v

    t = spec.type
    if t == "int":

        def conv_int(v: Any) -> Any:
            if type(v) is int:
                if lo is None and hi is None:
                    return v
                return bounded(v)
            whole = int_value(v)  # 1e18 from JSON: the int it is
            if whole is None:
                if _whole_beyond_64_bits(v):  # a semantics review: "expected an int" of a whole
                    shown = _got(v).removeprefix("the number ")
                    return _Bad(f"{shown} {BEYOND_64_BITS}")
                return _Bad(f"expected an int, got {_got(v)}")
            return bounded(whole)

        return conv_int
    if t == "decimal":

        def conv_decimal(v: Any) -> Any:
            tv = type(v)
            if tv is Decimal:
                d = v
            elif tv is int or tv is str:
                if tv is str and len(v) > max_chars:
                    return _long_text(v, max_chars)
                if tv is str and DECIMAL_TEXT.fullmatch(v) is None:
                    return _Bad(
                        f"expected a decimal (digits 0-9, sign, point, exponent), got {_show(v)}"
                    )
                try:
                    d = Decimal(v)
                except (InvalidOperation, ValueError):
                    return _Bad(f"expected a decimal, got {_show(v)}")
            elif tv is float:
                d = Decimal(repr(v))  # the shortest text that round-trips: what the sender meant
            else:
                return _Bad(f"expected a decimal, got {_got(v)}")
            if not d.is_finite():
                return _Bad(f"expected a finite decimal, got {_show(v)}")
            # A text no longer than the limit has no more digits; a decimal's text is never
            # shorter than its digits (counted only when it is longer).
            if (tv is not str or len(v) > max_digits) and len(str(d)) > max_digits:
                long = _long_decimal(d, max_digits)
                if long is not None:
                    return long
            if lo is None and hi is None:
                return d
            return bounded(d)

        return conv_decimal
    if t == "float":

        def conv_float(v: Any) -> Any:
            tv = type(v)
            if tv is float or tv is int or tv is Decimal:
                try:
                    x = float(v)
                except OverflowError:
                    return _Bad(f"{_show(v)} is out of range for a float")
                if not math.isfinite(x):
                    return _Bad(f"expected a finite float, got {_show(v)}")
                return bounded(x)
            return _Bad(f"expected a float, got {_got(v)}")

        return conv_float
    if t == "bool":

        def conv_bool(v: Any) -> Any:
            if type(v) is bool:
                return v
            return _Bad(f"expected a bool, got {_got(v)}")

        return conv_bool
    if t == "string":

        def conv_string(v: Any) -> Any:
            if type(v) is str:
                return v if len(v) <= max_chars else _long_text(v, max_chars)
            return _Bad(f"expected a string, got {_got(v)}")

        return conv_string
    if t == "enum":
        allowed = frozenset(spec.values or ())
        listing = ", ".join(spec.values or ())

        def conv_enum(v: Any) -> Any:
            if type(v) is str and v in allowed:
                return v
            if type(v) is str:
                if len(v) > max_chars:
                    return _long_text(v, max_chars)
                return _Bad(f"{_show(v)} is not one of: {listing}")
            return _Bad(f"expected one of: {listing}; got {_got(v)}")

        return conv_enum
    if t == "timestamp":

        def conv_timestamp(v: Any) -> Any:
            if isinstance(v, datetime):
                dt = v
            elif type(v) is str:
                if len(v) > max_chars:
                    return _long_text(v, max_chars)
                try:
                    dt = datetime.fromisoformat(v)
                except ValueError:
                    return _Bad(f"expected an ISO 8601 timestamp, got {_show(v)}")
                if finer_than_microseconds(v):
                    return _Bad(f"timestamp {_show(v)} {FINER_THAN_MICROSECONDS}")
            else:
                return _Bad(f"expected a timestamp, got {_got(v)}")
            if dt.tzinfo is None or dt.utcoffset() is None:
                if type(v) is str and _DATE_AND_OFFSET.fullmatch(v):  # read as hours, no zone
                    return _Bad(
                        f"timestamp {_show(v)} is a date and an offset with no time: write "
                        f"{_show(v[:10] + 'T00:00:00' + v[10:])}"
                    )
                if type(v) is str and len(v) == 10:  # a date alone (a review: told to add Z,
                    # then refused `2026-12-01Z` as no timestamp at all)
                    return _Bad(
                        f"timestamp {_show(v)} is a date with no time: write "
                        f"{_show(v + 'T00:00:00Z')} (or another time and zone)"
                    )
                return _Bad(f"timestamp {_show(v)} has no time zone (add Z or an offset)")
            try:
                return dt.astimezone(UTC)
            except OverflowError:
                return _Bad(f"timestamp {_show(v)} is out of range")

        return conv_timestamp
    if t == "list<string>":

        def conv_list(v: Any) -> Any:
            if type(v) is tuple or type(v) is list:
                if len(v) > max_items:
                    return _Bad(
                        f"list of {len(v):,} items; at most {max_items:,} are accepted "
                        "(limit fact_list_items)"
                    )
                for item in v:
                    if type(item) is not str:
                        return _Bad(f"expected a list of strings, found {_got(item)}")
                    if len(item) > max_chars:
                        return _long_text(item, max_chars)
                return tuple(v)
            return _Bad(f"expected a list of strings, got {_got(v)}")

        return conv_list
    raise ValueError(f"unknown fact type {t!r}")  # unreachable for validated specs


FactsChecker = Callable[[Mapping[str, Any]], "tuple[dict[str, Value], tuple[str, ...]]"]
"""``check(raw) -> (coerced, reasons)``; ``reasons`` is empty exactly when the facts are valid."""

_MISSING: Final = object()

DECIMAL_TEXT: Final = re.compile(
    r"[ \t\n\r]*+[+-]?(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][+-]?[0-9]++)?[ \t\n\r]*+"
)
"""The text a ``decimal`` fact may be sent as: ASCII digits, an optional sign, point and exponent,
and surrounding spaces, tabs or line breaks; the notation DuckDB's ``TRY_CAST(… AS DECIMAL)``
reads too, so an auditor's cast of the recorded text gives the number decided on (within the
precision and scale cast to). Python's ``Decimal`` reads more: ``"١٢٣"`` as 123 and
``"\\x1c5"`` as 5, which the cast reads as NULL; ``"1_0"`` is refused too. Possessive
quantifiers never backtrack: a 65,536-character text is refused in one pass."""


def build_checker(
    specs: Mapping[str, FactSpec], *, limits: Limits = DEFAULT_LIMITS
) -> FactsChecker:
    """Compile the declarations once into a checker run per request. Facts are checked in the
    order of their names, whatever the order declared: a version loaded from its canonical
    document (the evaluator's) and one parsed from its YAML (``policy test``/``eval``) give
    their reasons in one order (a fuzzer found them listed two ways)."""
    plan = tuple(
        (name, _converter(spec, limits), spec.optional) for name, spec in sorted(specs.items())
    )
    declared = frozenset(specs)
    max_keys = limits.facts_keys

    def check(raw: Mapping[str, Any]) -> tuple[dict[str, Value], tuple[str, ...]]:
        if len(raw) > max_keys:
            # Not one reason per fact: that list would be as long as the flood.
            return {}, (
                f"{len(raw):,} facts; a request may carry at most {max_keys:,} (limit facts_keys)",
            )
        out: dict[str, Value] = {}
        reasons: list[str] | None = None
        seen = 0
        for name, conv, optional in plan:
            v = raw.get(name, _MISSING)
            if v is _MISSING:
                if not optional:
                    reasons = reasons or []
                    reasons.append(f"{name}: missing required fact")
                continue
            seen += 1
            r = conv(v)
            if type(r) is _Bad:
                reasons = reasons or []
                reasons.append(f"{name}: {r.reason}")
            else:
                out[name] = r
        if seen != len(raw):
            reasons = reasons or []
            reasons += _unknown(sorted(str(k) for k in raw if k not in declared))
        return out, (tuple(reasons) if reasons else ())

    return check


_UNKNOWN_NAMED: Final = 3
"""Unknown facts a decision names one by one; more are counted in one reason. The sender
chooses them: a reason per fact made a 1.4 KB request of 256 one-letter facts a 14 KB decision
and a 12 KB correction, written where the sender pointed them."""
_NAME_SHOWN: Final = 64
"""Characters of an unknown fact's name a reason quotes (the sender chooses its length)."""


def _unknown(names: list[str]) -> list[str]:
    """The reasons for facts the policy does not declare: bounded whatever the sender sent."""
    shown = [n if len(n) <= _NAME_SHOWN else n[: _NAME_SHOWN - 1] + "…" for n in names]
    if len(shown) <= _UNKNOWN_NAMED:
        return [f"{n}: unknown fact (not declared by the policy)" for n in shown]
    first = ", ".join(shown[:_UNKNOWN_NAMED])
    return [
        f"{len(shown):,} unknown facts (not declared by the policy): {first} and "
        f"{len(shown) - _UNKNOWN_NAMED:,} more"
    ]


def validate_facts(
    specs: Mapping[str, FactSpec], facts: Mapping[str, Any], *, limits: Limits = DEFAULT_LIMITS
) -> tuple[dict[str, Value], tuple[str, ...]]:
    """One-off form of :func:`build_checker`: coerced facts, and the per-fact reasons (if any)."""
    return build_checker(specs, limits=limits)(facts)


def context_problems(
    context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> tuple[str, ...]:
    """Why the request's free-form context is over the facts' bounds (empty when it is not).

    The context is not declared, so only sizes are checked: the number of fields, text length,
    list length (and the length of each text in a list), a decimal's digits; and that a number
    is finite (NaN and the infinities compare false with everything: a deny rule's
    ``context.risk >= 0.8`` would let them through).
    """
    max_keys, max_chars, max_items = (
        limits.facts_keys,
        limits.fact_string_chars,
        limits.fact_list_items,
    )
    if len(context) > max_keys:
        return (
            f"context: {len(context):,} fields; a request may carry at most {max_keys:,} "
            "(limit facts_keys)",
        )
    reasons: list[str] = []
    for name, v in context.items():
        t = type(v)
        if t is str:
            if len(v) > max_chars:
                reasons.append(f"context.{name}: {_long_text(v, max_chars).reason}")
        elif t is tuple or t is list:
            if len(v) > max_items:
                reasons.append(
                    f"context.{name}: list of {len(v):,} items; at most {max_items:,} are "
                    "accepted (limit fact_list_items)"
                )
                continue
            for item in v:
                if type(item) is str and len(item) > max_chars:
                    reasons.append(f"context.{name}: {_long_text(item, max_chars).reason}")
                    break
        elif t is Decimal:
            if not v.is_finite():
                reasons.append(f"context.{name}: expected a finite decimal, got {_show(v)}")
                continue
            long = _long_decimal(v, limits.fact_decimal_digits)
            if long is not None:
                reasons.append(f"context.{name}: {long.reason}")
        elif t is float and not math.isfinite(v):
            # As a declared float fact refuses it: NaN compares false with everything, so
            # `context.risk >= 0.8` let a NaN risk through a deny rule.
            reasons.append(f"context.{name}: expected a finite float, got {_show(v)}")
    return tuple(reasons)


def parse_facts_json(text: str, *, what: str, limits: Limits = DEFAULT_LIMITS) -> dict[str, Value]:
    """Facts (or context) written as a JSON object, read within bounds: ``{name: value}``.

    Refuses, with one :class:`~ledger.errors.UsageError` line naming ``what`` (e.g. ``--facts``):
    text over ``facts_bytes``, nesting over ``facts_json_depth`` (measured before parsing, so deep
    input never reaches the recursive decoder), a key given twice in one object, ``NaN`` and
    ``Infinity``, anything not JSON, and JSON that is not an object. Numbers with a fraction are
    read as exact :class:`~decimal.Decimal` (``120.50`` stays ``120.50``); lists become tuples.
    Whether the values suit a policy is the policy's question (:func:`build_checker`).
    """
    try:
        data = boundedjson.loads(
            text,
            what=what,
            max_bytes=limits.facts_bytes,
            max_depth=limits.facts_json_depth,
            parse_float=Decimal,
        )
    except boundedjson.JSONBoundsError as exc:
        raise UsageError(str(exc)) from None
    except InvalidOperation:  # an exponent past any exact decimal: 1e99999999999999999999999
        raise UsageError(
            f"{what} holds a number whose exponent no exact decimal can hold: write it as "
            "text if you mean it, or check it"
        ) from None
    if not isinstance(data, dict):
        example = '{"channel": "chat"}' if "context" in what else '{"amount": "120.50"}'
        raise UsageError(f"{what} must be a JSON object, e.g. '{example}'")
    for name, value in data.items():
        # A red team: offline answers were given for lists of numbers, which no request can
        # carry (the SDK and Kafka's records refuse them): answers the ledger never gives.
        if isinstance(value, list) and not all(type(item) is str for item in value):
            raise UsageError(
                f"{what}: {name!r:.80} is a list holding other values than text; a request's "
                f'lists hold text only, as Kafka\'s records do: write its items as text ("1")'
            )
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}


def same_value(a: Any, b: Any) -> bool:
    """Whether two fact or context values are the same value of the same type: strict where
    Python is loose (``True == 1``, ``1 == 1.0``, ``Decimal("1") == 1``, ``Decimal("1.0") ==
    Decimal("1.00")`` are all different here). NaN is the same as NaN (a recorded NaN is the
    one sent)."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is Decimal:
        return str(a) == str(b)
    if kind is float:
        return bool(a == b or (a != a and b != b))
    if kind is tuple or kind is list:
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def same_values(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two mappings of values (contexts) hold the same names, each with the
    :func:`same_value`; a name added or dropped is a difference."""
    if len(a) != len(b):
        return False
    return all(name in a and same_value(a[name], value) for name, value in b.items())


_CONVERTING: Final = {
    int: FactSpec(name="int", type="int"),
    Decimal: FactSpec(name="decimal", type="decimal"),
    float: FactSpec(name="float", type="float"),
    datetime: FactSpec(name="timestamp", type="timestamp"),
    tuple: FactSpec(name="list", type="list<string>"),
}
_AS_RECORDED: Final[dict[type, Callable[[Any], Any]]] = {
    kind: _converter(spec, DEFAULT_LIMITS) for kind, spec in _CONVERTING.items()
}
"""The conversion a recorded value's type says it went through, for each type a declared fact
converts to from another (an ``int``, ``bool``, ``string`` or ``enum`` fact takes only its own
type): the fact types' own converters, without a minimum or maximum (a value outside them was
refused, so it is recorded as sent). An ``int`` fact converts only a whole decimal
(:func:`int_value`)."""


def facts_recorded_as(sent: Mapping[str, Any], recorded: Mapping[str, Any]) -> bool:
    """Whether ``recorded`` (a decision's facts) are what the facts ``sent`` became.

    A decision records the facts as evaluated: as sent when no policy converted them (no grant,
    no policy, facts refused), else as the policy's declared types converted them (``"120.50"``
    or ``120`` for a ``decimal`` fact is recorded as a ``Decimal``, an ``int`` for a ``float``
    fact as a float, ISO text for a ``timestamp`` as a UTC datetime). Each recorded value's type
    says which conversion it went through: the value sent must be :func:`same_value` as
    recorded, either as it is or once converted the way that type converts; never loosely
    (``100000`` is not ``1.00``, ``"1"`` is not ``1``), and the same names (a fact added or
    dropped is a difference). ``sent`` is the request as its evaluator decodes it (a list as a
    tuple, a datetime in UTC): a client compares the record it encoded, decoded.
    """
    if len(sent) != len(recorded):
        return False
    for name, value in recorded.items():
        given = sent.get(name, _MISSING)
        if given is _MISSING:
            return False
        if same_value(given, value):
            continue
        convert = _AS_RECORDED.get(type(value))
        if convert is None or not same_value(convert(given), value):
            return False
    return True
