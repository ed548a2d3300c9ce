"""JSON text read within bounds (STYLE §16): size and nesting are checked before parsing.

:func:`json.loads` recurses once per nesting level, so 20,000 ``[`` end in a ``RecursionError``
deep inside the decoder; and it keeps the last of two equal keys without a word. :func:`loads`
measures the text first (its UTF-8 size, then its nesting with one linear scan that stops at the
first level too many), then parses it refusing duplicate keys and the non-JSON constants
``NaN``/``Infinity``. Every refusal is one :class:`JSONBoundsError` whose message is one line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "MAX_INT_DIGITS",
    "JSONBoundsError",
    "int_too_long",
    "loads",
    "nesting_exceeds",
    "preview_number",
    "utf8_size_exceeds",
]

MAX_INT_DIGITS: Final = 4_300
"""The most digits an integer in JSON (or a policy's YAML) may have: Python's default limit on
converting integers to and from decimal text, fixed here so that what is accepted does not depend
on the process's setting (``sys.set_int_max_str_digits``)."""
_INT_BOUND: Final = 10**MAX_INT_DIGITS


def int_too_long(value: int) -> bool:
    """Has ``value`` more than :data:`MAX_INT_DIGITS` decimal digits?"""
    return value.bit_length() > 3 * MAX_INT_DIGITS and abs(value) >= _INT_BOUND


def preview_number(text: str) -> str:
    """The first digits of a long number, for a message of one line."""
    return text if len(text) <= 20 else text[:20] + "…"


class JSONBoundsError(ValueError):
    """The text is not JSON, or not JSON within the bounds asked for (message: one line)."""


# The characters that matter for nesting: brackets, and what starts, escapes or ends a string.
_SIGNIFICANT: Final = re.compile(r'[\[\]{}"\\]')


def utf8_size_exceeds(text: str, limit: int) -> int | None:
    """``None`` when ``text`` fits in ``limit`` UTF-8 bytes, else a lower bound on its size.

    Never encodes more than four times ``limit`` characters' worth: a character is at least one
    byte, so text longer than ``limit`` characters is too large without encoding it.
    """
    if len(text) > limit:
        return len(text)
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else None


def nesting_exceeds(text: str, limit: int) -> bool:
    """Does JSON ``text`` open more than ``limit`` arrays/objects inside one another?

    One pass over the brackets and string delimiters, stopping at the first level too many; text
    that is not JSON is left for the parser to describe.
    """
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _SIGNIFICANT.finditer(text):
        at = match.start()
        if at == escaped_at:
            continue  # the character after a backslash inside a string
        char = text[at]
        if in_string:
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class _DuplicateKey(ValueError):
    pass


class _LongInteger(ValueError):
    pass


def _parse_int(text: str) -> int:
    # The decoder hands every integer's text here (json.loads would raise Python's own advice,
    # "use sys.set_int_max_str_digits()", without a position).
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        raise _LongInteger(text)
    try:
        return int(text)
    except ValueError:  # the process allows fewer digits than the default
        raise _LongInteger(text) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(
    text: str,
    *,
    what: str,
    max_bytes: int,
    max_depth: int,
    parse_float: Callable[[str], Any] | None = None,
) -> Any:
    """Parse ``text`` as JSON within ``max_bytes`` and ``max_depth``; ``what`` names it in errors.

    Raises :class:`JSONBoundsError` (one line) for text over a bound, duplicate keys in an
    object, ``NaN``/``Infinity``, or anything that is not JSON.
    """
    size = utf8_size_exceeds(text, max_bytes)
    if size is not None:
        raise JSONBoundsError(
            f"{what} is {size:,} bytes or more; at most {max_bytes:,} are accepted"
        )
    if nesting_exceeds(text, max_depth):
        raise JSONBoundsError(
            f"{what} nests arrays/objects more than {max_depth} levels deep; "
            f"at most {max_depth} are accepted"
        )
    try:
        return json.loads(
            text,
            parse_float=parse_float,
            parse_int=_parse_int,
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except _LongInteger as exc:
        number = exc.args[0]
        at = text.find(number)  # the first such run of digits: the decoder reads in order
        where = ""
        if at >= 0:
            line = text.count("\n", 0, at) + 1
            column = at - (text.rfind("\n", 0, at) + 1) + 1
            where = f" at line {line}, column {column}"
        digits = len(number) - number.startswith("-")
        raise JSONBoundsError(
            f"{what} has an integer of {digits:,} digits ({preview_number(number)}){where}; "
            f"at most {MAX_INT_DIGITS:,} digits are accepted in a number: shorten it"
        ) from None
    except _DuplicateKey as exc:
        raise JSONBoundsError(
            f"{what} has the key {exc.args[0]!r} more than once in one object; give each key once"
        ) from None
    except (ValueError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise JSONBoundsError(f"{what} is not valid JSON: {first}") from None
