"""Validation: plain data (from YAML or canonical JSON) in, a :class:`Policy` or every problem out.

Lives here: :class:`Marks` (where each key and value was written, so a problem can name its line
and column), :class:`Validator` (checks one part at a time and *collects* problems rather than
stopping at the first) and :func:`build`, which validates a whole document and assembles the
:class:`Policy` with its canonical form (:mod:`.canonical`) and compiled runner (:mod:`.runner`).
Whatever the data, the only exception that leaves is one :class:`~ledger.errors.PolicyError`.

May import: the stdlib, :mod:`ledger.core.cel`, :mod:`ledger.core.events`,
:mod:`ledger.core.facts`, :mod:`ledger.core.limits`, :mod:`ledger.errors` and, of this package,
:mod:`.model`, :mod:`.canonical` and :mod:`.runner` — never :mod:`.source` (no YAML here).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Final

from ledger.core.cel import (
    INT64_MAX,
    INT64_MIN,
    RESERVED_NAMES,
    CompiledCondition,
    compile_condition,
)
from ledger.core.cel.compiler import RegexBudget
from ledger.core.events import Determination, Value
from ledger.core.facts import FACT_TYPES, FactSpec, FactType, cel_type, int_value
from ledger.core.globs import compile_globs, glob_problems
from ledger.core.limits import Limits
from ledger.core.policy.canonical import (
    YAML11_BOOLEAN_WORDS,
    ambiguous_text,
    canonical_text,
    content_hash,
)
from ledger.core.policy.model import (
    EMPTY,
    DefaultDecision,
    Effect,
    Policy,
    PolicyTestCase,
    Rule,
)
from ledger.core.policy.runner import make_runner
from ledger.core.text import clipped, hidden_at
from ledger.errors import PolicyError, PolicyProblem

__all__ = ["Marks", "Validator", "build"]

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_FACT_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_PROBLEMS: Final = 100
"""Problems listed for one document at most; validation stops there (time and memory stay
bounded for a document of thousands of broken rules, and nobody fixes more at once)."""
_ACTION_RE: Final = re.compile(r"^[A-Za-z0-9_.\-*?:/]+$")
_LEADING_ZERO: Final = re.compile(r"[-+]?0[0-9_]")


class Marks:
    """Line/column of every key and value in the YAML tree, by path (empty for JSON input)."""

    def __init__(self) -> None:
        self.keys: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.values: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.duplicates: list[tuple[tuple[Any, ...], tuple[int, int]]] = []
        self.plain: set[tuple[Any, ...]] = set()  # scalars written without quotes
        self.cut_by_comment: set[tuple[Any, ...]] = set()  # plain scalars a `#` comment ends
        self.base60: dict[tuple[Any, ...], str] = {}  # `12:30`, a number to YAML 1.1: its text
        self.older_numbers: dict[tuple[Any, ...], str] = {}  # `0100`, `1_000`, `0x1F`: its text
        # A folded block (`when: >`) YAML joined into one line: each of its lines, as (line
        # number, length without its indentation), to say a problem at its own line.
        self.folded: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
        self.folded_nodes: dict[int, list[tuple[int, int]]] = {}  # the same, by YAML node

    def at(self, path: tuple[Any, ...]) -> tuple[int | None, int | None]:
        while path:
            if path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return None, None

    def value_at(self, path: tuple[Any, ...]) -> tuple[int | None, int | None]:
        return self.values.get(path) or self.at(path)

    def in_folded(self, path: tuple[Any, ...], column: int) -> tuple[int, int] | None:
        """The line, and the column on it, of ``column`` of a folded block's one line of
        text (its lines joined by a space each); ``None`` when ``path`` is no such block."""
        lines = self.folded.get(path)
        if not lines:
            return None
        at = column - 1
        for line, length in lines:
            if at <= length:
                return line, at + 1
            at -= length + 1
        return lines[-1][0], lines[-1][1] + 1


class Validator:
    """Checks the parts of one document, collecting every problem with where it was written."""

    def __init__(
        self, file: str | None, marks: Marks, limits: Limits, *, new_document: bool = True
    ) -> None:
        self.file = file
        self.marks = marks
        self.limits = limits
        self.new_document = new_document  # false: a recorded version (see compile_condition)
        # Every new pattern of the document together (a red team's: 101 costly ones).
        self.regex_budget = RegexBudget(limits.regex_program) if new_document else None
        self.problems: list[PolicyProblem] = []

    def add(
        self,
        message: str,
        path: tuple[Any, ...],
        *,
        rule: str | None = None,
        field_name: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        if line is None:
            line, column = self.marks.at(path)
        self.problems.append(
            PolicyProblem(
                message=message,
                file=self.file,
                rule=rule,
                field=field_name or (".".join(str(p) for p in path) if path else None),
                line=line,
                column=column,
            )
        )
        if len(self.problems) > MAX_PROBLEMS:  # a document of thousands of broken rules
            stop = PolicyProblem(
                message=f"stopped after {MAX_PROBLEMS} problems: fix these first", file=self.file
            )
            listed = sorted(self.problems[:MAX_PROBLEMS], key=lambda p: p.line or 0)
            raise PolicyError([*listed, stop])

    def base60(self) -> None:
        """A problem for each unquoted base-60 number of the document (a policy owner's
        walkthrough: `time: 12:30` validated, and agents received 750), and each other number
        YAML 1.1 reads by its own rules (``0100``, ``1_000``, ``0x1F``)."""
        for path, text in self.marks.base60.items():
            self.add(
                f"the unquoted {text} is read by YAML as a number in base 60 (12:30 is 750): "
                f'quote it, "{text}", for a time or any text',
                path,
            )
        # A semantics review: `max: 0100` was 64 (and `010` in a test case 8) while `010` in a
        # condition is 10, and nothing said so.
        for path, text in self.marks.older_numbers.items():
            self.add(
                f"the unquoted {text} is a number YAML reads by older rules ("
                + ("a leading 0 makes it octal: 0100 is 64" if _LEADING_ZERO.match(text) else
                   "0x is hexadecimal, 0b binary" if "x" in text.lower() or "b" in text.lower()
                   else f"its _ is dropped: {text} is {text.replace('_', '')}")
                + "), which conditions and JSON do not: write the number plainly (100, 1000), "
                f'or quote it, "{text}", for text',
                path,
            )  # fmt: skip

    def raise_if_any(self) -> None:
        if self.problems:
            # Reading order is what a person fixing the file wants.
            raise PolicyError(sorted(self.problems, key=lambda p: p.line or 0))

    def keys(
        self,
        data: dict[Any, Any],
        path: tuple[Any, ...],
        *,
        allowed: set[str],
        required: set[str],
        rule: str | None = None,
    ) -> None:
        meant: set[str] = set()  # required keys an unknown one misspells: said once, there
        for key in data:
            if key not in allowed:
                close = (
                    difflib.get_close_matches(key, sorted(allowed - data.keys()), n=1, cutoff=0.7)
                    if isinstance(key, str) and len(key) <= 64
                    else []
                )
                if close:
                    meant.add(close[0])
                guess = f"did you mean {close[0]!r}? " if close else ""
                self.add(
                    f"unknown key {key!r} ({guess}allowed: {', '.join(sorted(allowed))})",
                    (*path, key),
                    rule=rule,
                )
        for key in sorted(required - meant):
            if key not in data:
                example = _EXAMPLES.get(f"{path[0]}.{key}" if path else key)
                self.add(
                    f"missing required key {key!r}" + (f" ({example})" if example else ""),
                    path,
                    rule=rule,
                    field_name=".".join(map(str, (*path, key))),
                )

    def _whole(self, pattern: re.Pattern[str], value: str) -> bool:
        """Does ``pattern`` match all of ``value``? ``$`` also matches before a last newline,
        so a name written as a YAML block scalar (``policy: >``) was ``'refund\\n'``, valid,
        and governed nothing anyone asked for (a maintainability review). A recorded version is
        read as it was accepted then."""
        if self.new_document:
            return pattern.fullmatch(value) is not None
        return pattern.match(value) is not None

    def string(
        self,
        value: Any,
        path: tuple[Any, ...],
        *,
        field_name: str | None = None,
        rule: str | None = None,
        pattern: re.Pattern[str] | None = None,
        what: str = "text",
        allowed: str | None = None,
    ) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.add(
                f"expected non-empty {what}, got {_describe(value)}",
                path,
                rule=rule,
                field_name=field_name,
            )
            return None
        if pattern is not None and not self._whole(pattern, value):
            hint = f" ({allowed})" if allowed else ""
            if self._whole(pattern, value.rstrip("\r\n")):
                hint = " (it ends in a line break: write it on its key's line, without > or |)"
            self.add(
                f"{value!r} is not a valid {what}{hint}", path, rule=rule, field_name=field_name
            )
            return None
        return value

    def optional_string(
        self, data: dict[Any, Any], key: str, path: tuple[Any, ...], *, rule: str | None = None
    ) -> str | None:
        if key not in data or data[key] is None:
            return None
        return self.string(data[key], (*path, key), rule=rule)

    def copied_text(
        self, text: str | None, path: tuple[Any, ...], *, what: str, rule: str | None = None
    ) -> None:
        """A text every decision of the policy copies (its name, a rule's id, a reason) held to
        its limit: one problem naming the limit and what to do."""
        if text is None:
            return
        if what == "reason":
            most, limit, fix = (
                self.limits.policy_reason_chars,
                "policy_reason_chars",
                "shorten it, and keep the detail in the rule's or the policy's description, which "
                "decisions do not copy",
            )
        else:
            most, limit, fix = self.limits.policy_id_chars, "policy_id_chars", "shorten it"
        if len(text) > most:
            self.add(
                f"a {what} of {len(text):,} characters; at most {most:,} are accepted (limit "
                f"{limit}): every decision copies it, so {fix}",
                path,
                rule=rule,
            )

    def visible(
        self, text: str | None, path: tuple[Any, ...], *, what: str, rule: str | None = None
    ) -> None:
        """A name people read and type (a rule's id) holding no character they cannot see: a
        no-break space pasted after an id made a test say "expected small-auto (did you mean
        small-auto ?), got small-auto " (a policy owner's walkthrough). New documents only."""
        if text is None or not self.new_document:
            return
        for at, char in enumerate(text):
            hidden = char != " " and (unicodedata.category(char)[0] in "CZ" or hidden_at(text, at))
            if char == " " and at in (0, len(text) - 1):
                self.add(
                    f"the {what} {text!r} begins or ends with a space: remove it", path, rule=rule
                )
                return
            if hidden:
                name = unicodedata.name(char, "a control character")
                self.add(
                    f"the {what} {text!r} holds an invisible character at position {at + 1} "
                    f"(U+{ord(char):04X}, {name.lower()}): retype it",
                    path,
                    rule=rule,
                )
                return

    def shown_as_read(
        self, text: str, path: tuple[Any, ...], *, what: str, rule: str | None = None
    ) -> bool:
        """``text`` (a condition, an enum value) holds no character a reviewer cannot see
        (zero-width, bidi, other format and control characters; spaces other than the plain
        one), else a problem naming the first. A red team approved-by-proxy a deny rule that
        compared with "suspended" and a zero-width space, which `policy diff` showed as
        "suspended" (and bidi controls reorder what an approver reads: "Trojan Source").
        In a CEL string, write such a character as an escape (``\\u200b``). New documents
        only. True when it holds none."""
        if not self.new_document:
            return True
        for at, char in enumerate(text):
            if not hidden_at(text, at):
                continue
            name = unicodedata.name(char, "a control character").lower()
            escape = (
                ", or write it as an escape in a CEL string ("
                + (f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
                + ")"
                if what == "condition"
                else ""
            )
            self.add(
                f"the {what} holds a character nobody sees at position {at + 1} (U+{ord(char):04X}, "
                f"{name}): an approver reads it without it; retype it{escape}",
                path,
                rule=rule,
            )
            return False
        return True

    def effect(self, value: Any, path: tuple[Any, ...], *, rule: str | None) -> Effect | None:
        if isinstance(value, str) and value in ("allow", "deny"):
            return Effect(value)
        hint = ""
        if value == "allow_with_constraints":  # the determination, not an effect
            hint = ": write effect: allow with a constraints: mapping, which is decided as allow_with_constraints"
        elif isinstance(value, str):  # `Allow`, `alow` (a policy owner's walkthrough)
            close = difflib.get_close_matches(value.strip().lower()[:40], ["allow", "deny"], n=1)
            hint = f": did you mean {close[0]}?" if close else ""
        self.add(
            f"unknown effect {_describe(value)} (expected allow or deny){hint}", path, rule=rule
        )
        return None

    def _ambiguous_text(self, item: Any, path: tuple[Any, ...]) -> str | None:
        """Why an unquoted constraint value that reads as text was probably meant otherwise:
        ``no``, ``off``, ``yes`` (YAML 1.1's booleans, text here: an agent's ``if
        constraints["notify"]`` takes ``"no"`` as true) or ``1e3`` (a number to YAML 1.2,
        text here); None when it was quoted, or is not such a word (a policy owner's
        walkthrough: validated, and the agent received ``'no'``)."""
        if isinstance(item, (list, tuple)):  # a list of text: each item as it was written
            for i, x in enumerate(item):  # (one level: a nested list is refused as such)
                why = None if isinstance(x, (list, tuple)) else self._ambiguous_text(x, (*path, i))
                if why is not None:
                    return f"item {i + 1}: {why}"
            return None
        if not self.new_document or not isinstance(item, str) or not ambiguous_text(item):
            return None
        aliased = path not in self.marks.values  # reached through a YAML alias: no mark
        if path not in self.marks.plain and not aliased:
            return None  # quoted
        # Through an alias, whether it was quoted is not known: as if it were not.
        keep = (
            f'write it here, "{item}" (quoted), not through a YAML alias, to keep the text'
            if aliased
            else f'"{item}" (quoted) to keep the text'
        )
        if item.lower() in YAML11_BOOLEAN_WORDS:
            meant = "true" if item.lower() in ("y", "yes", "on") else "false"
            return (
                f"the unquoted {item} is read as the text {item!r}, which an agent's `if` takes as "
                f"true: write {meant} for a boolean, or {keep}"
            )
        return (  # number-like (ambiguous_text said it is one or the other)
            f"the unquoted {item} is read as the text {item!r}, not a number: write it in "
            f"digits (1000, 0.5) for a number, or {keep}"
        )

    def constraints(
        self, value: Any, path: tuple[Any, ...], *, rule: str | None
    ) -> Mapping[str, Value]:
        if value is None:
            return EMPTY
        if not isinstance(value, dict):
            self.add(f"constraints must be a mapping, got {_describe(value)}", path, rule=rule)
            return EMPTY
        out: dict[str, Value] = {}
        for key in sorted(value, key=str):
            item = value[key]
            sub = (*path, key)
            if not isinstance(key, str) or not key:
                self.add(f"constraint names must be text, got {_describe(key)}", sub, rule=rule)
                continue
            if type(item) is Decimal:
                exact = _yaml_number(item)
                if type(exact) is Decimal and self.new_document and math.isfinite(float(item)):
                    self.add(
                        f"constraint {key!r}: a number with a fraction reaches the agent as a "
                        f"binary float, which cannot hold {_describe(item)} (it would be "
                        f'{float(item)!r}): write it as text, {key}: "{item}", for the tool to '
                        "read exactly",
                        sub,
                        rule=rule,
                    )
                    continue
                item = float(item)  # a number with a fraction reaches the agent as a float
            converted = _constraint_value(item)
            unquoted = self._ambiguous_text(item, sub)
            if unquoted is not None:
                self.add(f"constraint {key!r}: {unquoted}", sub, rule=rule)
                continue
            if type(converted) is int and self.new_document and not -(2**63) <= converted < 2**63:
                # A red team: validated, then every request it decided was dead-lettered
                # unanswered, as no decision could record it (a 64-bit long).
                self.add(
                    f"constraint {key!r}: the integer {clipped(str(item), 40)} is beyond what a "
                    "decision records (from -2^63 to 2^63-1): write it as text, quoted",
                    sub,
                    rule=rule,
                )
                continue
            if converted is _INVALID:
                self.add(
                    f"constraint {key!r} must be text, a number, a bool, null or a list of text; got {_describe(item)}",
                    sub,
                    rule=rule,
                )
                continue
            texts = [key, *(converted if isinstance(converted, (list, tuple)) else [converted])]
            if not all(  # what the tool acts on, as an approver reads it (a review)
                self.shown_as_read(t, sub, what=f"constraint {key!r}", rule=rule)
                for t in texts
                if isinstance(t, str)
            ):
                continue
            out[key] = converted  # type: ignore[assignment]  # _INVALID was ruled out above; a sentinel does not narrow
        total = sum(len(k) + _text_chars(x) for k, x in out.items())
        if total > self.limits.policy_constraints_chars:
            self.add(
                f"the constraints total {total:,} characters (names and values); at most "
                f"{self.limits.policy_constraints_chars:,} are accepted (limit "
                "policy_constraints_chars): every decision copies them, so keep long values "
                "with the tool and name them here",
                path,
                rule=rule,
            )
        return MappingProxyType(out)

    def number(
        self, value: Any, path: tuple[Any, ...], fact_type: str
    ) -> int | Decimal | float | None:
        if isinstance(value, bool):
            self.add(f"must be a number, got {_describe(value)}", path)
            return None
        if type(value) is Decimal:
            value = _yaml_number(value)
        try:
            if fact_type == "int":
                if isinstance(value, int):
                    if self.new_document and not INT64_MIN <= value <= INT64_MAX:
                        # No int fact holds it (CEL's ints are 64-bit): a bound beyond is a
                        # mistake. A recorded version loads as it was accepted.
                        written = str(value)  # at most 4,300 digits (the YAML reader's limit)
                        if len(written) > 40:
                            written = f"{written[:20]}… ({len(written.lstrip('-')):,} digits)"
                        self.add(
                            f"{written} is outside the 64-bit range of an int fact ({INT64_MIN} "
                            f"to {INT64_MAX}): write a bound within it, or leave it out",
                            path,
                        )
                        return None
                    return value
                # A Decimal written without a fraction (1e3), as an int fact's value is taken:
                # a YAML number with a fraction is an exact Decimal now (refused here, as its
                # float was).
                whole = int_value(value)
                if whole is not None:
                    return whole
                self.add(f"must be an integer for an int fact, got {_describe(value)}", path)
                return None
            if fact_type == "decimal":
                if isinstance(value, float):
                    d = Decimal(repr(value))
                elif isinstance(value, (int, str, Decimal)):
                    d = Decimal(value)
                else:
                    raise InvalidOperation
                if not d.is_finite():
                    raise InvalidOperation
                return d
            if isinstance(value, (int, float, Decimal)):
                f = float(value)
                if math.isfinite(f):
                    return f
        except (InvalidOperation, ValueError, OverflowError):
            pass
        if isinstance(value, (float, Decimal)) and not math.isfinite(float(value)):
            self.add(f"must be a finite number, got {value}", path)  # not "number NaN"
        else:
            self.add(f"must be a number, got {_describe(value)}", path)
        return None

    def fact(self, name: Any, spec: Any, path: tuple[Any, ...]) -> FactSpec | None:
        ok = True
        if not isinstance(name, str) or not self._whole(_FACT_RE, name):
            self.add(
                f"fact name {_describe(name)} may hold only ASCII letters, digits and _, and "
                "may not start with a digit (amount_eur, not amount-eur or 2fa)",
                path,
            )
            return None
        if name in RESERVED_NAMES:
            self.add(f"fact name {name!r} is reserved", path)
            ok = False
        if isinstance(spec, str):
            spec = {"type": spec}  # shorthand: `amount: decimal`
        if not isinstance(spec, dict):
            self.add(
                f"fact {name!r} must be a mapping like {{type: int}}, got {_describe(spec)}", path
            )
            return None
        self.keys(
            spec,
            path,
            allowed={"type", "optional", "values", "min", "max", "description"},
            required={"type"},
        )
        fact_type = spec.get("type")
        if fact_type not in FACT_TYPES:
            if "type" in spec:
                named = repr(fact_type) if isinstance(fact_type, str) else _describe(fact_type)
                self.add(
                    f"unknown fact type {named} (expected one of: {', '.join(FACT_TYPES)})",
                    (*path, "type"),
                )
            return None
        optional = spec.get("optional", False)
        if not isinstance(optional, bool):
            self.add(
                f"optional must be true or false, got {_describe(optional)}", (*path, "optional")
            )
            ok = False
        values: tuple[str, ...] | None = None
        if fact_type == "enum":
            raw = spec.get("values")
            if (
                not isinstance(raw, list)
                or not raw
                or not all(isinstance(x, str) and x for x in raw)
            ):
                unquoted = isinstance(raw, list) and any(
                    isinstance(x, (bool, int, float, Decimal)) for x in raw
                )
                self.add(
                    "an enum fact needs values: a non-empty list of text"
                    + (
                        ": quote numbers and true/false to make them text ('1', 'true')"
                        if unquoted
                        else ""
                    ),
                    (*path, "values") if "values" in spec else path,
                )
                ok = False
            elif len(set(raw)) != len(raw):
                self.add("enum values must be unique", (*path, "values"))
                ok = False
            elif not all(
                self.shown_as_read(x, (*path, "values", i), what="enum value")
                for i, x in enumerate(raw)
            ):
                ok = False
            else:
                values = tuple(raw)
        elif "values" in spec:
            self.add("values is only allowed on enum facts", (*path, "values"))
            ok = False
        bounds: dict[str, int | Decimal | float | None] = {"min": None, "max": None}
        for key in ("min", "max"):
            if key in spec:
                if fact_type not in ("int", "decimal", "float"):
                    self.add(f"{key} is only allowed on int, decimal and float facts", (*path, key))
                    ok = False
                    continue
                bounds[key] = self.number(spec[key], (*path, key), fact_type)
                ok = ok and bounds[key] is not None
        lo, hi = bounds["min"], bounds["max"]
        if lo is not None and hi is not None and lo > hi:
            self.add(f"min {lo} is greater than max {hi}", (*path, "max"))
            ok = False
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            self.add("description must be text", (*path, "description"))
            ok = False
        if not ok:
            return None
        ft: FactType = fact_type
        return FactSpec(
            name=name,
            type=ft,
            optional=optional,
            values=values,
            minimum=lo,
            maximum=hi,
            description=description,
        )

    def conditions_within_limit(self, rules: Iterable[Any]) -> bool:
        """Whether the rules' conditions together are within ``policy_condition_chars``: checked
        before any is compiled, since compiling is what the limit bounds (one problem if not)."""
        total = sum(
            len(r["when"]) for r in rules if isinstance(r, dict) and isinstance(r.get("when"), str)
        )
        if total <= self.limits.policy_condition_chars:
            return True
        self.add(
            f"the rules' conditions total {total:,} characters; at most "
            f"{self.limits.policy_condition_chars:,} are accepted in one policy (limit "
            "policy_condition_chars): shorten them, or govern some of the actions with a second "
            "policy",
            ("rules",),
        )
        return False

    def condition(
        self,
        text: Any,
        path: tuple[Any, ...],
        *,
        rule: str | None,
        facts: Mapping[str, str] | None,
        enums: Mapping[str, tuple[str, ...]] | None = None,
        optional: Collection[str] | None = None,
    ) -> CompiledCondition | None:
        if text is None or (isinstance(text, str) and not text.strip()):
            self.add(
                "when is empty: write the condition, or remove the when key for a rule that "
                "matches every request",
                path,
                rule=rule,
            )
            return None
        if not isinstance(text, str):
            self.add(
                f"when must be a CEL expression (text), got {_describe(text)}: quote it",
                path,
                rule=rule,
            )
            return None
        if not self.shown_as_read(text, path, what="condition", rule=rule):
            return None
        try:
            return compile_condition(
                text,
                facts=facts,
                enums=enums,
                limits=self.limits,
                optional=optional,
                new_document=self.new_document,
                regex_budget=self.regex_budget,
            )
        except PolicyError as exc:
            line, column = self.marks.value_at(path)
            cut = (
                "; a ' #' on its line starts a YAML comment and ends the condition there: if it "
                "goes on after the #, quote the whole condition"
                if path in self.marks.cut_by_comment
                else ""
            )  # a policy owner's walkthrough: told of an unclosed parenthesis, nothing more
            for p in exc.problems:
                where = ""
                if p.column is not None:
                    where = f" (at column {p.column} of the condition)"
                where += cut
                abs_line = line
                folded = (
                    self.marks.in_folded(path, p.column)
                    if p.column is not None and p.line in (None, 1)
                    else None
                )
                if folded is not None:  # a review: said at the `>` line, at a joined column
                    abs_line, on_line = folded
                    where = f" (at column {on_line} of its line){cut}"
                elif line is not None and p.line is not None and p.line > 1:
                    abs_line = line + p.line - 1
                self.add(
                    p.message + where,
                    path,
                    rule=rule,
                    field_name="when",
                    line=abs_line,
                    column=column,
                )
            return None

    def _name_case(self, item: Any, since: int) -> None:
        """Say which case each problem found since ``since`` is about, by its name (a policy
        owner's walkthrough: ``cases.4.expect`` counted the cases from 0)."""
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name.strip():
            return
        said = f"case {clipped(repr(name), 60)}: "
        self.problems[since:] = [
            p if p.message.startswith(said) else dataclasses.replace(p, message=said + p.message)
            for p in self.problems[since:]
        ]

    def test_cases(self, items: Any, path: tuple[Any, ...]) -> tuple[PolicyTestCase, ...]:
        if items is None:
            return ()
        if not isinstance(items, list):
            self.add(f"tests must be a list of cases, got {_describe(items)}", path)
            return ()
        cases: list[PolicyTestCase] = []
        names: set[str] = set()
        for i, item in enumerate(items):
            sub = (*path, i)
            before = len(self.problems)
            try:
                if not isinstance(item, dict):
                    self.add(f"a test case must be a mapping, got {_describe(item)}", sub)
                    continue
                self.keys(
                    item,
                    sub,
                    allowed={
                        "name",
                        "facts",
                        "context",
                        "principal",
                        "action",
                        "resource",
                        "expect",
                    },
                    required={"name", "expect"},
                )
                name = (
                    self.string(item.get("name"), (*sub, "name"), what="test name")
                    if "name" in item
                    else None
                )
                if name is not None:
                    if name in names:
                        self.add(f"duplicate test name {name!r}", (*sub, "name"))
                    names.add(name)
                facts = self.value_map(item.get("facts"), (*sub, "facts"))
                context = self.value_map(item.get("context"), (*sub, "context"))
                optional: dict[str, str | None] = {}
                for key in ("principal", "action", "resource"):
                    optional[key] = (
                        self.string(item[key], (*sub, key)) if item.get(key) is not None else None
                    )
                expect = item.get("expect")
                if not isinstance(expect, dict):
                    if "expect" in item:
                        self.add(
                            f"expect must be a mapping, got {_describe(expect)}", (*sub, "expect")
                        )
                    continue
                esub = (*sub, "expect")
                self.keys(
                    expect,
                    esub,
                    allowed={"determination", "rule", "constraints", "reason_code"},
                    required={"determination"},
                )
                det_raw = expect.get("determination")
                try:
                    determination = Determination(str(det_raw))
                except ValueError:
                    if "determination" in expect:
                        kinds = [d.value for d in Determination]
                        close = difflib.get_close_matches(
                            str(det_raw).strip().lower()[:40], kinds, n=1
                        )
                        meant = f"; did you mean {close[0]}?" if close else ""
                        self.add(
                            f"unknown determination {_describe(det_raw)} (expected one of: "
                            f"{', '.join(kinds)}){meant}",
                            (*esub, "determination"),
                        )
                    continue
                check_rule = "rule" in expect
                rule = expect.get("rule")
                if rule is not None and not isinstance(rule, str):
                    self.add(
                        f"expect.rule must be a rule id or null, got {_describe(rule)}",
                        (*esub, "rule"),
                    )
                    continue
                constraints = None
                if "constraints" in expect:
                    constraints = self.constraints(
                        expect["constraints"], (*esub, "constraints"), rule=None
                    )
                reason_code = expect.get("reason_code")
                if reason_code is not None and not isinstance(reason_code, str):
                    self.add("expect.reason_code must be text", (*esub, "reason_code"))
                    continue
                if name is None or facts is None or context is None:
                    continue
                cases.append(
                    PolicyTestCase(
                        name=name,
                        facts=facts,
                        context=context,
                        principal=optional["principal"],
                        action=optional["action"],
                        resource=optional["resource"],
                        expect_determination=determination,
                        check_rule=check_rule,
                        expect_rule=rule,
                        expect_constraints=constraints,
                        expect_reason_code=reason_code,
                        file=self.file,
                        line=self.marks.at(sub)[0],
                    )
                )
            finally:
                self._name_case(item, before)
        return tuple(cases)

    def value_map(self, value: Any, path: tuple[Any, ...]) -> Mapping[str, Value] | None:
        if value is None:
            return EMPTY
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            self.add(f"must be a mapping of names to values, got {_describe(value)}", path)
            return None
        out: dict[str, Value] = {}
        for k, v in value.items():
            converted = _constraint_value(_yaml_number(v) if type(v) is Decimal else v)
            if converted is _INVALID:
                self.add(f"{k!r}: unsupported value {_describe(v)}", (*path, k))
                return None
            out[k] = converted  # type: ignore[assignment]  # _INVALID was ruled out above; a sentinel does not narrow
        return MappingProxyType(out)


_INVALID: Final = object()


def _text_chars(value: Value) -> int:
    """Characters of a constraint's value as a decision records it (each text of a list)."""
    if isinstance(value, tuple):
        return sum(len(x) for x in value)
    return len(value) if isinstance(value, str) else len(str(value))


def _yaml_number(exact: Decimal) -> float | Decimal:
    """A YAML number with a fraction, which the loader reads as the exact Decimal of its
    digits (:mod:`.source`): YAML's float when that float is the number written (``0.1``,
    ``5000.00``, ``1.5e+3``: read, hashed and decided on as always), else the exact Decimal
    (``499.99999999999999999``, which a float makes 500.0), as JSON facts are read. Where a
    decimal is expected, the value is then exact; where a float is, it is the float nearest."""
    nearest = float(exact)
    if math.isfinite(nearest) and Decimal(repr(nearest)) == exact:
        return nearest
    return exact


def _constraint_value(v: Any) -> object:
    if v is None or isinstance(v, (bool, int, str, Decimal)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else _INVALID
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return tuple(v)
    return _INVALID


_YAML_KINDS: Final = {
    bool: "boolean",
    int: "integer",
    float: "number",
    Decimal: "number",
    str: "text",
    list: "list",
    dict: "mapping",
    datetime: "timestamp",
    date: "date",
}


def _describe(v: Any) -> str:
    """A value as a policy author wrote it, with its YAML kind (never a Python class name)."""
    if v is None:
        return "nothing"
    kind = _YAML_KINDS.get(type(v), "value")
    if isinstance(v, str):
        text = repr(v)
    elif isinstance(v, Decimal):
        text = str(v)
    else:
        text = json.dumps(v, default=str)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


_TOP_KEYS: Final = {
    "policy",
    "governs",
    "owner",
    "description",
    "facts",
    "rules",
    "default",
    "tests",
}
# What a missing required key is for, as a line to copy: by the section it is missing from
# (top level, a rule, the default, a fact) and its name.
_EXAMPLES: Final = {
    "policy": "the policy's name, e.g. `policy: refund`",
    "governs": "the actions it decides, e.g. `governs: [refund.issue]`",
    "owner": "the team that owns it, e.g. `owner: customer-success`",
    "default": "what applies when no rule matches, e.g. `default: {effect: deny}`",
    "default.effect": "`effect: deny` or `effect: allow`",
    "rules.id": "a name unique in the policy, e.g. `id: auto-refund`",
    "rules.effect": "`effect: allow` or `effect: deny`",
    "facts.type": f"one of {', '.join(FACT_TYPES)}, e.g. `type: int`",
}
_RULE_KEYS: Final = {"id", "when", "effect", "constraints", "reason", "description"}
_DEFAULT_KEYS: Final = {"effect", "reason", "constraints"}


def _governs(v: Validator, data: dict[Any, Any]) -> list[str]:
    """The document's ``governs``: action names and globs, each once, in order."""
    governs: list[str] = []
    raw_governs = data.get("governs")
    if isinstance(raw_governs, str):
        raw_governs = [raw_governs]
    if "governs" in data:
        if not isinstance(raw_governs, list) or not raw_governs:
            v.add("governs must be a non-empty list of action names (globs allowed)", ("governs",))
        elif len(raw_governs) > v.limits.policy_governs:
            # Before any entry is checked: each becomes a pattern every evaluator matches.
            v.add(
                f"governs lists {len(raw_governs):,} actions; at most "
                f"{v.limits.policy_governs:,} are accepted in one policy (limit policy_governs): "
                "use globs (refund.*), or govern some of the actions with a second policy",
                ("governs",),
            )
        else:
            seen: set[str] = set()
            for i, action in enumerate(raw_governs):
                a = v.string(
                    action,
                    ("governs", i),
                    pattern=_ACTION_RE,
                    what="action name",
                    allowed="letters, digits and _ . - : / with * and ? as wildcards",
                )
                if a is not None and len(a) > v.limits.request_name_chars:
                    # No request names a longer action; and each entry is a pattern every
                    # evaluator compiles and every promotion's notes compare.
                    v.add(
                        f"an action of {len(a):,} characters; at most "
                        f"{v.limits.request_name_chars:,} (limit request_name_chars, as a "
                        "request's action)",
                        ("governs", i),
                    )
                elif a is not None and (
                    problems := glob_problems(
                        a,
                        place="governs",
                        most_wildcards=v.limits.glob_wildcards,
                        longest_glob=v.limits.glob_chars,
                        longest_class_glob=v.limits.glob_class_chars,
                    )
                ):
                    for problem in problems:  # each on its line: one edit fixes them all
                        v.add(problem, ("governs", i))
                elif a is not None and a not in seen:
                    seen.add(a)
                    governs.append(a)
    return governs


def _facts(v: Validator, data: dict[Any, Any]) -> tuple[dict[str, FactSpec], set[str]]:
    """The declared facts, and the names of those whose declaration is broken (still declared:
    conditions may use them, as ``dyn``, without a second, misleading "undeclared fact")."""
    facts: dict[str, FactSpec] = {}
    broken_facts: set[str] = set()
    raw_facts = data.get("facts")
    if raw_facts is not None and not isinstance(raw_facts, dict):
        v.add(
            f"facts must be a mapping of fact names to declarations, got {_describe(raw_facts)}",
            ("facts",),
        )
    for fname, fspec in (raw_facts or {}).items() if isinstance(raw_facts, dict) else ():
        spec = v.fact(fname, fspec, ("facts", fname))
        if spec is None:
            if isinstance(fname, str):
                broken_facts.add(fname)
        else:
            facts[spec.name] = spec
    return facts, broken_facts


def _rules(
    v: Validator, data: dict[Any, Any], facts: dict[str, FactSpec], broken_facts: set[str]
) -> list[Rule]:
    """The rules, each checked and its condition compiled against the declared facts."""
    # A fact whose declaration is broken is still declared: conditions may use it (as dyn)
    # without a second, misleading "undeclared fact" problem.
    cel_types = {n: cel_type(s.type) for n, s in facts.items()} | {n: "dyn" for n in broken_facts}
    enums = {n: s.values for n, s in facts.items() if s.values}
    # Only these can be absent when a condition runs (a required fact is checked first): a
    # condition that reads none of them needs no commutative form for absence.
    optional = {n for n, s in facts.items() if s.optional} | broken_facts

    rules: list[Rule] = []
    raw_rules = data.get("rules")
    if raw_rules is not None and not isinstance(raw_rules, list):
        v.add(f"rules must be a list, got {_describe(raw_rules)}", ("rules",))
        raw_rules = []
    seen_ids: set[str] = set()
    compiling = v.conditions_within_limit(raw_rules or ())
    for i, raw in enumerate(raw_rules or ()):
        path = ("rules", i)
        if not isinstance(raw, dict):
            v.add(f"a rule must be a mapping, got {_describe(raw)}", path)
            continue
        rid = raw.get("id")
        rule_id = rid if isinstance(rid, str) and rid.strip() else None
        v.keys(raw, path, allowed=_RULE_KEYS, required={"id", "effect"}, rule=rule_id)
        if "id" in raw and rule_id is None:
            v.add(f"rule id must be non-empty text, got {_describe(rid)}", (*path, "id"))
        v.copied_text(rule_id, (*path, "id"), what="rule id", rule=rule_id)
        v.visible(rule_id, (*path, "id"), what="rule id", rule=rule_id)
        if rule_id is not None:
            if rule_id in seen_ids:
                v.add(f"duplicate rule id {rule_id!r}", (*path, "id"), rule=rule_id)
            seen_ids.add(rule_id)
        effect = (
            v.effect(raw["effect"], (*path, "effect"), rule=rule_id) if "effect" in raw else None
        )
        constraints = v.constraints(raw.get("constraints"), (*path, "constraints"), rule=rule_id)
        if effect is Effect.DENY and constraints:
            v.add("constraints only apply to allow rules", (*path, "constraints"), rule=rule_id)
        reason = v.optional_string(raw, "reason", path, rule=rule_id)
        v.copied_text(reason, (*path, "reason"), what="reason", rule=rule_id)
        v.optional_string(raw, "description", path, rule=rule_id)
        when = raw.get("when")
        condition = None
        if "when" in raw and compiling:  # present but empty is a mistake, never "always"
            condition = v.condition(
                when, (*path, "when"), rule=rule_id, facts=cel_types, enums=enums, optional=optional
            )
        if rule_id is not None and effect is not None:
            rules.append(
                Rule(
                    id=rule_id,
                    effect=effect,
                    when=when if isinstance(when, str) else None,
                    constraints=constraints,
                    reason=reason,
                    condition=condition,
                )
            )
    return rules


def _default(v: Validator, data: dict[Any, Any]) -> DefaultDecision | None:
    """The default decision (``None`` when absent or broken: reported)."""
    default: DefaultDecision | None = None
    raw_default = data.get("default")
    if "default" in data:
        if not isinstance(raw_default, dict):
            v.add(
                f"default must be a mapping like {{effect: deny}}, got {_describe(raw_default)}",
                ("default",),
            )
        else:
            v.keys(raw_default, ("default",), allowed=_DEFAULT_KEYS, required={"effect"})
            d_effect = (
                v.effect(raw_default["effect"], ("default", "effect"), rule=None)
                if "effect" in raw_default
                else None
            )
            d_constraints = v.constraints(
                raw_default.get("constraints"), ("default", "constraints"), rule=None
            )
            if d_effect is Effect.DENY and d_constraints:
                v.add("constraints only apply to an allow default", ("default", "constraints"))
            d_reason = v.optional_string(raw_default, "reason", ("default",))
            v.copied_text(d_reason, ("default", "reason"), what="reason")
            if d_effect is not None:
                default = DefaultDecision(
                    effect=d_effect, reason=d_reason, constraints=d_constraints
                )
    return default


def build(
    data: Any,
    *,
    file: str | None,
    marks: Marks,
    allow_tests: bool,
    limits: Limits,
    new_document: bool = True,
) -> Policy:
    """Validate one policy document's data and build the :class:`Policy` (compiled, hashed).

    ``tests`` are accepted only with ``allow_tests`` (YAML input; the canonical form has none).
    ``new_document`` false (a recorded version read back) leaves out the checks that came later
    (see :func:`~ledger.core.cel.compile_condition`). Raises
    :class:`~ledger.errors.PolicyError` listing every problem, in reading order.
    """
    v = Validator(file, marks, limits, new_document=new_document)
    for path, (line, column) in marks.duplicates:
        v.add(f"duplicate key {path[-1]!r}", path, line=line, column=column)
    if new_document:
        v.base60()
    if not isinstance(data, dict):
        v.add(f"a policy document must be a mapping, got {_describe(data)}", ())
        v.raise_if_any()
        raise AssertionError("unreachable")
    if "cases" in data and "governs" not in data:  # a tests file read as a policy
        name = data.get("policy") if isinstance(data.get("policy"), str) else None
        stem = name if name and len(name) <= 64 else "refund"
        v.add(
            "this looks like a tests file (it has cases:, no governs:): name it after its "
            f"policy's file, {stem}.yaml -> {stem}.tests.yaml",
            (),
        )
        v.raise_if_any()
    allowed = set(_TOP_KEYS) if allow_tests else _TOP_KEYS - {"tests"}
    v.keys(data, (), allowed=allowed, required={"policy", "governs", "owner", "default"})

    name = (
        v.string(
            data["policy"],
            ("policy",),
            pattern=_NAME_RE,
            what="policy name",
            allowed="ASCII letters, digits, '_', '.' and '-', starting with a letter or digit",
        )
        if "policy" in data
        else None
    )
    v.copied_text(name, ("policy",), what="policy name")
    owner = v.string(data["owner"], ("owner",), what="owner") if "owner" in data else None
    description = v.optional_string(data, "description", ())

    governs = _governs(v, data)
    facts, broken_facts = _facts(v, data)
    rules = _rules(v, data, facts, broken_facts)
    default = _default(v, data)

    tests: tuple[PolicyTestCase, ...] = ()
    if allow_tests and "tests" in data:
        tests = v.test_cases(data["tests"], ("tests",))

    v.raise_if_any()
    assert name is not None and owner is not None and default is not None
    canonical = canonical_text(name, tuple(governs), owner, description, facts, rules, default)
    digest = content_hash(canonical)
    frozen_facts = MappingProxyType(dict(facts))
    rule_tuple = tuple(rules)
    return Policy(
        name=name,
        governs=tuple(governs),
        owner=owner,
        description=description,
        facts=frozen_facts,
        rules=rule_tuple,
        default=default,
        tests=tests,
        canonical=canonical,
        content_hash=digest,
        source_file=file,
        _runner=make_runner(frozen_facts, rule_tuple, default, limits),
        _governs_re=compile_globs(governs),
    )
