"""The JSON form of ledger events: one rendering for ``--json`` output, exports and hashing.

Every event (and every value inside one) has exactly one JSON form, so what a script reads from
``ledger … --json``, what an analyst queries in an export and what a hash chain covers are the
same text. The rules, stable because hashes depend on them:

- a dataclass (an event, a nested record such as a shadow result) → an object of its fields, in
  field order (:func:`canonical_json` sorts keys anyway);
- ``str``, ``bool``, ``int``, ``None`` → themselves; a finite ``float`` → a JSON number (shortest
  round-trip form); a non-finite float → the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
- ``Decimal`` → its exact decimal string (``"120.50"``: the scale is kept);
- ``datetime`` (aware) → RFC 3339 in UTC with microseconds and ``Z``
  (``"2026-11-26T16:48:26.000000Z"``); a naive datetime is rendered as if it were UTC;
- an enum member → its value; ``bytes`` → lowercase hex;
- a mapping → an object (keys as text); a tuple or list → an array; a set → a sorted array.

:func:`canonical_json` is that form as bytes: UTF-8, keys sorted, no insignificant whitespace,
non-ASCII characters as themselves (RFC 8785-style; reproducible with Python's
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "to_json_value",
    "canonical_json",
    "format_timestamp",
    "parse_instant",
    "zone_given",
    "InstantOutOfRange",
    "json_float",
]


def format_timestamp(value: datetime) -> str:
    """RFC 3339, UTC, microseconds, ``Z``: the one text form of an instant.

    Written field by field, never with ``strftime``: its ``%Y`` pads a year below 1000 to four
    digits on some platforms and Pythons (macOS, Windows, CPython since gh-120713) and not on
    others (glibc), and this text is hashed into the decision chain and signed in commands: a
    red team's request dated year 1 verified intact on Linux and as tampered where ``%Y``
    pads. The year is as recorded chains and signatures hold it (unpadded: ``1-01-01T…``)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return (
        f"{value.year}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond:06d}Z"
    )


def parse_instant(text: str) -> datetime:
    """An instant as people write it: ISO 8601, ``Z`` or an offset, UTC when it has neither
    (``2026-11-26``, ``2026-11-26T12:00:00Z``, ``…z``). Raises ``ValueError``, also for a date
    followed at once by an offset (``2026-12-01+05:00``), which Python reads as 05:00 with no
    zone, ten hours from the instant meant (a review)."""
    if text.endswith("z"):
        text = text[:-1] + "Z"
    if len(text) > 10 and text[4:5] == "-" and text[7:8] == "-" and text[10] in "+-Z":
        raise ValueError(f"{text}: a date with a zone needs its time (T00:00:00)")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00: a red team's traceback
        raise InstantOutOfRange(f"{text} lies outside the years 1-9999 in UTC") from None


def zone_given(text: str) -> bool:
    """Does ``text``, an instant :func:`parse_instant` takes, name its zone (``Z`` or an
    offset)? Without one it is read as UTC, which a grant's window must not be left to."""
    if text.endswith("z"):
        text = text[:-1] + "Z"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None


class InstantOutOfRange(ValueError):
    """An instant written with an offset that puts it outside what a datetime holds in UTC."""


def json_float(value: float) -> float | str:
    """A float's JSON form: itself when finite, else ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"`` (JSON has no such numbers)."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON data (dicts, lists, text, numbers, booleans, null)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return json_float(value)
    if isinstance(value, enum.Enum):
        return to_json_value(value.value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_json_value(v) for v in value), key=canonical_json)
    if isinstance(value, str):  # a str subclass that is not an enum
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return json_float(float(value))
    raise TypeError(f"no JSON form for {kind.__name__}")


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of ``value``'s JSON form (see the module docstring)."""
    return json.dumps(
        to_json_value(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")
