"""The words and literal text of the condition language: the names a fact may not take, and
the decoding of string, ``duration(...)`` and ``timestamp(...)`` literals."""

from __future__ import annotations

import contextlib
import datetime as _dt
import re
from decimal import Decimal
from typing import Final

__all__ = ["RESERVED_NAMES", "parse_duration", "parse_timestamp"]

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
    r"\\(?:([abfnrtv\"'\\`?])|([0-3][0-7]{2})|[xX]([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})"
    r"|(.|$))",
    re.DOTALL,
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


def _decode_string(token: str, *, strict: bool = True) -> str:
    """A CEL string literal's text. ``strict``: a backslash before anything CEL does not
    escape is refused, as CEL refuses it (a semantics review: `"a\\qb"` was kept as written);
    false keeps it, as a version recorded before was read. ``\\X41`` is ``A``, as ``\\x41``."""
    raw = token[0] in "rR"
    body = token[1:] if raw else token
    quote = 3 if body[:3] in ('"""', "'''") else 1
    body = body[quote:-quote]
    if raw:
        return body

    def repl(m: re.Match[str]) -> str:
        simple, octal, hex2, u4, u8, other = m.groups()
        if simple is not None:
            return _ESCAPES[simple]
        if strict and m.group(0)[1] == "X":  # CEL's, but read as two characters before
            raise ValueError(
                f"write {m.group(0).replace('X', 'x', 1)}, with a lowercase x: a version "
                f"recorded before the ledger knew {m.group(0)[:2]} reads it as two characters, "
                "so the version would decide otherwise than its tests"
            )
        if other is not None or m.group(0)[1] == "X":
            if strict:
                shown = "a \\ at the end" if not other else "\\" + repr(other)[1:-1]
                raise ValueError(
                    f"{shown} is no escape CEL knows (\\n \\t \\\\ \\\" \\' \\xHH "
                    "\\uHHHH …): write \\\\ for a backslash, or use a raw string, r'…'"
                )
            return m.group(0)  # as a version recorded before read it
        code = int(octal, 8) if octal else int(hex2 or u4 or u8, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"escape {m.group(0)} is not a Unicode character")
        return chr(code)

    return _ESCAPE_RE.sub(repl, body)


_DURATION_HELP: Final = ' (units h, m, s, ms, us, ns, as in "1h30m"; no days: 30 days is "720h")'
"""What an invalid duration's message adds (a policy owner wrote ``duration("30d")``)."""


def parse_duration(text: str, *, exact: bool = True) -> _dt.timedelta:
    """CEL duration text (``"1h30m"``, ``"-2.5s"``, ``"90m"``) → timedelta. ``exact``: refuse
    one finer than a microsecond (false: cut there, as a version recorded before was read)."""
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in "+-" else text
    pos, micros = 0, Decimal(0)
    if not body:
        raise ValueError(f"invalid duration {text!r}{_DURATION_HELP}")
    for m in _DURATION_RE.finditer(body):
        if m.start() != pos:
            raise ValueError(f"invalid duration {text!r}{_DURATION_HELP}")
        micros += Decimal(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(body):
        raise ValueError(f"invalid duration {text!r}{_DURATION_HELP}")
    if exact and micros != int(micros):  # a semantics review: `999ns` was 0, silently
        raise ValueError(
            f"duration {text!r} is not a whole number of microseconds, the finest time the "
            "ledger keeps: write it in us (1us) or coarser"
        )
    try:
        return _dt.timedelta(microseconds=int(micros) * sign)
    except OverflowError:  # timedelta holds at most 999,999,999 days
        raise ValueError(
            f"duration {text!r} is longer than any timestamp arithmetic can use "
            "(at most 999,999,999 days)"
        ) from None


def parse_timestamp(text: str, *, exact: bool = True) -> _dt.datetime:
    """RFC 3339 text with a zone (``Z`` or offset) → aware UTC datetime. ``exact``: refuse one
    finer than a microsecond (false: cut there, as a version recorded before was read)."""
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:  # Python's "Invalid isoformat string" (a policy owner's walkthrough)
        raise ValueError(
            f"timestamp {text!r} is not a date and time with a zone: write it as "
            f"{timestamp_example(text)}"
        ) from None
    if value.tzinfo is None:
        raise ValueError(
            f"timestamp {text!r} has no time zone: write it as {timestamp_example(text)}"
        )
    if exact and finer_than_microseconds(text):
        raise ValueError(f"timestamp {text!r} {FINER_THAN_MICROSECONDS}")
    return value.astimezone(_dt.UTC)


_FRACTION: Final = re.compile(r"[0-9]{2}[.,]([0-9]{7,})")  # `:SS.` and basic `HHMMSS.` alike
FINER_THAN_MICROSECONDS: Final = (
    "is more precise than a microsecond, the finest time the ledger keeps: write at most six "
    "digits after the seconds' point"
)


def finer_than_microseconds(text: str) -> bool:
    """Does timestamp ``text`` carry a fraction of a second finer than a microsecond (a digit
    past the sixth that is not 0)? Python reads it cut to microseconds; CEL keeps nanoseconds
    (a semantics review: `00:00:00Z < timestamp("…00.0000001Z")` was false, and a fact sent
    as `…00.000000999Z` was recorded as `…00.000000Z`)."""
    found = _FRACTION.search(text)
    return found is not None and found.group(1)[6:].strip("0") != ""


_DATE_START: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def timestamp_example(text: str) -> str:
    """What ``text`` is probably meant as, written as a timestamp that parses: a date alone
    (``2026-01-01``, ``2026-01-01Z``) at midnight UTC, a time without a zone in UTC; else an
    example (``"2026-01-01T00:00:00Z"``)."""
    date = _DATE_START.match(text)
    if date is not None:
        rest = text[date.end() :]
        if rest.upper() in ("", "Z"):
            candidate = f"{date.group()}T00:00:00Z"
        elif rest[:1] in ("T", "t", " ") and rest[-1:].upper() != "Z" and "+" not in rest:
            candidate = f"{date.group()}T{rest[1:]}Z"
        else:
            candidate = ""
        with contextlib.suppress(ValueError):
            if candidate and _dt.datetime.fromisoformat(candidate).tzinfo is not None:
                return f'timestamp("{candidate}")'
    return 'timestamp("2026-01-01T00:00:00Z") (a date, T, a time, and Z for UTC or an offset)'
