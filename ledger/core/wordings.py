"""Reasons one release words otherwise than another, meaning the same (DESIGN §9): replay and
``audit reproduce`` take a recorded reason in an earlier wording for the one given now, and say
so (:func:`earlier_wording`). A new wording of a reason a decision records gets its entry here,
beside the ones before it, so that decisions recorded with the old words still reproduce.
"""

from __future__ import annotations

import re
from typing import Any, Final

from ledger.core.cel import DECIMAL_DIGITS_REASON, DECIMAL_EXPONENT_REASON, TYPE_NAMES_OF_PYTHON
from ledger.core.facts import BEYOND_64_BITS, PYTHON_KINDS

__all__ = ["earlier_wording"]


_FAILED: Final = r"(?P<rule>condition of rule .+ failed: )"
_OVERLOAD: Final = r"no such overload: (?P<ta>\w+) (?P<op>\S+) (?P<tb>\w+)"
_IN_PYTHONS_WORDS: Final = (
    "a condition's type mismatch on a context value, in Python's words (before 2026-12-06)"
)
_IN_PYTHONS_WORDS_TOO: Final = (
    "a condition's value of the wrong type, named in Python's words (before 2026-12-07)"
)
_TEXT_FUNCTIONS: Final = "a text function's value not text, in Python's words (before 2026-12-07)"
_SHARE: Final = r".+ v\d+ \((?:active|canary, \d+% of requests)\) decides this request's share "
_EARLIER_WORDINGS: Final = (
    (
        re.compile(r"(?P<fact>.+): (?P<n>\S+) " + re.escape(BEYOND_64_BITS)),
        re.compile(r"(?P<fact>.+): expected an int, got the number (?P<n>\S+)"),
        "an int fact beyond 64 bits, worded as no int (before 2026-12-07, evening)",
    ),
    (
        re.compile(_SHARE + r"and does not govern (?P<action>.+)"),
        re.compile(r"no active policy governs (?P<action>.+)"),
        "an ungoverned action in a canary's share",
    ),
    (
        re.compile(r"no active policy governs (?P<action>.+)"),
        re.compile(_SHARE + r"and does not govern (?P<action>.+)"),
        "an ungoverned action, in the wording of the release of 2026-12-05 (c3896f6)",
    ),
    (
        re.compile(
            r"item .+: (?P<problem>the request's \w+ is longer than .+); no item was evaluated"
        ),
        re.compile(r"(?P<problem>the request's \w+ is longer than .+)"),
        "a pre-evaluation's names over their limit, worded before the item was named",
    ),
    (
        re.compile(r"(?P<reason>.+) \(this pre-evaluation's items share that budget, .+\)"),
        re.compile(r"(?P<reason>.+)"),
        "a pre-evaluation's shared budget, worded before it said so",
    ),
    (
        re.compile(_FAILED + re.escape(DECIMAL_EXPONENT_REASON)),
        re.compile(_FAILED + re.escape(DECIMAL_DIGITS_REASON)),
        "a decimal operand's exponent out of range, worded as too many digits (before 2026-12-06)",
    ),
    (
        re.compile(
            r"(?P<head>.*expected .+?[,;] (?:got|found) )(?P<kind>text|the whole number"
            r"|the number|the boolean|an object|a list|a timestamp|a value|null)"
            r"(?: (?P<shown>.*))?"
        ),
        re.compile(r"(?P<head>.*expected .+?[,;] (?:got|found) )(?P<kind>\w+) (?P<shown>.*)"),
        "a fact's value of the wrong kind, named in Python's words (before 2026-12-06, night)",
    ),
    *(
        (re.compile(_FAILED + now), re.compile(_FAILED + then), _IN_PYTHONS_WORDS)
        for now, then in (
            (
                _OVERLOAD,
                r"'(?P<op>\S+)' not supported between instances of '(?P<ta>[\w.]+)' and "
                r"'(?P<tb>[\w.]+)'",
            ),
            (
                _OVERLOAD,
                r"unsupported operand type\(s\) for (?P<op>\S+): '(?P<ta>[\w.]+)' and "
                r"'(?P<tb>[\w.]+)'",
            ),
            (_OVERLOAD, r"cannot (?P<op>\S+) (?P<ta>\w+) and (?P<tb>\w+)"),
            (
                r"no such overload: (?P<ta>\w+) \+ (?P<tb>\w+)",
                r'can only concatenate (?P<ta>\w+) \(not "(?P<tb>[\w.]+)"\) to \w+',
            ),
            (r"no such overload: (?P<ta>\w+) [*%] …", r"expected a number, got (?P<ta>\w+)"),
            (r"no such overload: \w+ [*%] (?P<ta>\w+)", r"expected a number, got (?P<ta>\w+)"),
            (
                r"no such overload: -(?P<tb>\w+)",
                r"unsupported operand type\(s\) for -: 'int' and '(?P<tb>[\w.]+)'",
            ),
        )
    ),
    (  # a README check: a date and an offset, told it had no zone
        re.compile(
            r"(?P<head>.*)timestamp (?P<shown>'.+') is a date (?:and an offset )?with no time: "
            r"write '.+?'(?: \(or another time and zone\))?"
        ),
        re.compile(
            r"(?P<head>.*)timestamp (?P<shown>'.+') has no time zone \(add Z or an offset\)"
        ),
        "a timestamp fact of a date (and an offset), said to have no zone (before 2026-12-07)",
    ),
    *(  # a fuzzer: Python's words for startsWith()/endsWith() on a value not text
        (re.compile(_FAILED + now), re.compile(_FAILED + then), _TEXT_FUNCTIONS)
        for now, then in (
            (
                r"startsWith\(\) is for text, not (?P<ta>\w+)",
                r"'(?P<ta>\w+)' object has no attribute 'startswith'",
            ),
            (
                r"endsWith\(\) is for text, not (?P<ta>\w+)",
                r"'(?P<ta>\w+)' object has no attribute 'endswith'",
            ),
            (
                r"startsWith\(\) is for text, not (?P<ta>\w+)",
                r"startswith first arg must be str or a tuple of str, not (?P<ta>\w+)",
            ),
            (
                r"endsWith\(\) is for text, not (?P<ta>\w+)",
                r"endswith first arg must be str or a tuple of str, not (?P<ta>\w+)",
            ),
        )
    ),
    (  # a fuzzer: a grant condition's fault was told to send numbers as numbers, whatever it was
        re.compile(
            r"(?P<head>grant .+ holds only when `.*`), which cannot be evaluated on these "
            r"facts: .+"
        ),
        re.compile(
            r"(?P<head>grant .+ holds only when `.*`), which cannot be evaluated on these "
            r"facts \(a type mismatch\? send numbers as numbers or Decimal, not strings\)"
        ),
        "a grant condition's fault, worded before it said which (before 2026-12-07)",
    ),
    (  # a README check: the advice about strings was given whatever types met
        re.compile(
            r"(?P<head>grant .+ holds only when `.*`, which cannot be evaluated on these "
            r"facts: .*no such overload: [^()]+?)(?: \(a Decimal and a float do not combine "
            r"in arithmetic: send both as Decimal\))?"
        ),
        re.compile(
            r"(?P<head>grant .+ holds only when `.*`, which cannot be evaluated on these "
            r"facts: .*no such overload: [^()]+?) \(send numbers as numbers or Decimal, not "
            r"strings\)"
        ),
        "a grant condition's type mismatch, advised to send numbers not strings whatever "
        "the types (before a later release of 2026-12-07)",
    ),
    *(  # a README check: "contains() is for text, not tuple", Python's name for a list
        (re.compile(_FAILED + pattern), re.compile(_FAILED + pattern), _IN_PYTHONS_WORDS_TOO)
        for pattern in (
            r"contains\(\) is for text, not (?P<ta>\w+)",
            r"expected a bool, got (?P<ta>\w+)",
        )
    ),
)
"""Reasons one release words otherwise than another, meaning the same: each wording given
now, a wording recorded earlier, and what it is about; the named groups must agree (a type's
name, group ``ta`` or ``tb``, in Python's word for it then, CEL's now). Replay takes a recorded
reason in an earlier wording for the one it gives now, and says so."""


def earlier_wording(reason: str, recorded: str) -> str | None:
    """What ``recorded`` is, when it is an earlier release's wording of ``reason`` (an
    ungoverned action in a canary's share, say), else ``None``."""
    for now_said, then_said, what in _EARLIER_WORDINGS:
        given, held = now_said.fullmatch(reason), then_said.fullmatch(recorded)
        if given is not None and held is not None and given.groupdict() == _in_cel(held):
            return what
    return None


def _in_cel(held: re.Match[str]) -> dict[str, str | Any]:
    """The groups of a recorded reason, with a type Python named (``str``) named as CEL does,
    and a fact value's kind and value (``bool True``) as the facts' reasons say them now."""
    groups: dict[str, str | Any] = {
        k: TYPE_NAMES_OF_PYTHON.get(v, v) if k in ("ta", "tb") else v
        for k, v in held.groupdict().items()
    }
    if "kind" in groups:
        kind, shown = str(groups["kind"]), str(groups.get("shown"))
        # Only what a release wrote (a review: `bool true`, or an unknown kind, matched too).
        groups["kind"] = PYTHON_KINDS.get(kind, _NEVER)
        if kind == "bool":
            groups["shown"] = {"True": "true", "False": "false"}.get(shown, _NEVER)
        elif kind == "NoneType":
            groups["shown"] = None if shown == "None" else _NEVER
        elif kind == "Decimal":  # `Decimal Decimal('1.5')`, now `the number 1.5`
            digits = _DECIMAL_REPR.fullmatch(shown)
            groups["shown"] = digits.group(1) if digits else _NEVER
    return groups


_NEVER: Final = object()
"""What no reason's group equals: a recorded wording no release wrote matches nothing."""
_DECIMAL_REPR: Final = re.compile(r"Decimal\('([^']*)'\)")
