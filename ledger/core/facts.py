"""Typed facts: declarations, and the validation/coercion of a request's facts against them.

Validators are built once per policy version (:func:`build_checker`) and run per request; each
declared fact gets one small converter closure, so the hot path is a loop of direct calls.

Accepted inputs per type (anything else is an ill-typed fact):

============== ==================================================================================
``int``        ``int`` (never ``bool``)
``decimal``    ``Decimal`` (finite), ``int``, numeric ``str`` (``"120.50"``), ``float`` via its
               shortest repr (``120.5`` → ``Decimal("120.5")``); never ``bool``
``float``      ``float``, ``int``, ``Decimal`` (never ``bool``); NaN and infinities are rejected
``bool``       ``bool`` only
``string``     ``str``
``enum``       ``str`` among the declared ``values``
``timestamp``  aware ``datetime`` or ISO 8601 / RFC 3339 text with a zone; normalised to UTC
``list<string>`` list or tuple of ``str``; becomes a tuple
============== ==================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, TypeAlias

from ledger.core.events import Value

__all__ = [
    "FactType",
    "FACT_TYPES",
    "FactSpec",
    "FactsChecker",
    "build_checker",
    "validate_facts",
    "cel_type",
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
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(v: object) -> str:
    return type(v).__name__


def _converter(spec: FactSpec) -> Callable[[Any], Any]:
    lo, hi = spec.minimum, spec.maximum

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
            return _Bad(f"expected an int, got {_type_name(v)} {_show(v)}")

        return conv_int
    if t == "decimal":

        def conv_decimal(v: Any) -> Any:
            tv = type(v)
            if tv is Decimal:
                d = v
            elif tv is int or tv is str:
                try:
                    d = Decimal(v.strip() if tv is str else v)
                except (InvalidOperation, ValueError):
                    return _Bad(f"expected a decimal, got {_show(v)}")
            elif tv is float:
                d = Decimal(repr(v))  # the shortest text that round-trips: what the sender meant
            else:
                return _Bad(f"expected a decimal, got {_type_name(v)} {_show(v)}")
            if not d.is_finite():
                return _Bad(f"expected a finite decimal, got {_show(v)}")
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
            return _Bad(f"expected a float, got {_type_name(v)} {_show(v)}")

        return conv_float
    if t == "bool":

        def conv_bool(v: Any) -> Any:
            if type(v) is bool:
                return v
            return _Bad(f"expected a bool, got {_type_name(v)} {_show(v)}")

        return conv_bool
    if t == "string":

        def conv_string(v: Any) -> Any:
            if type(v) is str:
                return v
            return _Bad(f"expected a string, got {_type_name(v)} {_show(v)}")

        return conv_string
    if t == "enum":
        allowed = frozenset(spec.values or ())
        listing = ", ".join(spec.values or ())

        def conv_enum(v: Any) -> Any:
            if type(v) is str and v in allowed:
                return v
            if type(v) is str:
                return _Bad(f"{_show(v)} is not one of: {listing}")
            return _Bad(f"expected one of: {listing}; got {_type_name(v)} {_show(v)}")

        return conv_enum
    if t == "timestamp":

        def conv_timestamp(v: Any) -> Any:
            if isinstance(v, datetime):
                dt = v
            elif type(v) is str:
                try:
                    dt = datetime.fromisoformat(v)
                except ValueError:
                    return _Bad(f"expected an ISO 8601 timestamp, got {_show(v)}")
            else:
                return _Bad(f"expected a timestamp, got {_type_name(v)} {_show(v)}")
            if dt.tzinfo is None or dt.utcoffset() is None:
                return _Bad(f"timestamp {_show(v)} has no time zone (add Z or an offset)")
            try:
                return dt.astimezone(UTC)
            except OverflowError:
                return _Bad(f"timestamp {_show(v)} is out of range")

        return conv_timestamp
    if t == "list<string>":

        def conv_list(v: Any) -> Any:
            if type(v) is tuple or type(v) is list:
                for item in v:
                    if type(item) is not str:
                        return _Bad(
                            f"expected a list of strings, found {_type_name(item)} {_show(item)}"
                        )
                return tuple(v)
            return _Bad(f"expected a list of strings, got {_type_name(v)} {_show(v)}")

        return conv_list
    raise ValueError(f"unknown fact type {t!r}")  # unreachable for validated specs


FactsChecker = Callable[[Mapping[str, Any]], "tuple[dict[str, Value], tuple[str, ...]]"]
"""``check(raw) -> (coerced, reasons)``; ``reasons`` is empty exactly when the facts are valid."""

_MISSING: Final = object()


def build_checker(specs: Mapping[str, FactSpec]) -> FactsChecker:
    """Compile the declarations once into a checker run per request."""
    plan = tuple((name, _converter(spec), spec.optional) for name, spec in specs.items())
    declared = frozenset(specs)

    def check(raw: Mapping[str, Any]) -> tuple[dict[str, Value], tuple[str, ...]]:
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
            for name in sorted(str(k) for k in raw if k not in declared):
                reasons.append(f"{name}: unknown fact (not declared by the policy)")
        return out, (tuple(reasons) if reasons else ())

    return check


def validate_facts(
    specs: Mapping[str, FactSpec], facts: Mapping[str, Any]
) -> tuple[dict[str, Value], tuple[str, ...]]:
    """One-off form of :func:`build_checker`: coerced facts, and the per-fact reasons (if any)."""
    return build_checker(specs)(facts)
