"""Rules that can never match: earlier rules match every request they would.

Rules are tried in order and the first that matches decides. A condition is read as the
alternatives it joins with ``||``, each a set of terms joined with ``&&``
(:func:`~ledger.core.cel.alternatives`). A rule never matches when each of its alternatives
holds every term of some alternative of an earlier rule: whenever it would hold, that earlier
rule holds too (CEL's ``||`` is true when one side is, whatever the others) and matched first.
This holds whatever the facts: a term that needs an absent fact leaves both rules unmatched,
and a fault in an earlier rule's term decides ``error`` before the later rule is tried. A rule
with no ``when`` (or one with an alternative that is always true) matches every request, so
nothing after it matches, and the ``default`` never decides.

The check compares terms as written (layout aside): ``amount > 100`` and ``100 < amount`` are
different terms to it, so it finds the shadowing that the order of rules makes, not every rule
that logic could prove dead. A finding is a warning, not a problem: the version is valid and
decides as written; the rule is most likely in the wrong place.

Rules whose condition bounds a fact by numbers no value meets (:func:`impossible_rules`):
``amount < 10 && amount > 50`` never holds. Only a comparison of a fact with a number
written as digits is read (``amount > 50``, ``50 < amount``); anything else is left alone.
A warning too.

Deny rules a request passes by leaving a field out (:func:`unguarded_denials`): a condition
that reads an optional fact, or a field of the request's context, is not true for a request
without it, so a deny rule that reads one outside a ``has()`` guard does not match such a
request, which goes on to the next rule or the default: an allow, most often, that the rule
was written to stop. ``has(x) && …`` (the rule is meant for requests with ``x``) and
``!has(x) || …`` (denied without it) say what absence means, and are not warned about (see
:func:`~ledger.core.cel.unguarded_reads` for the guards recognised). An allow rule is not: a
request it skips gets no more than the rules after it give. A warning too.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from ledger.core.cel import alternatives, unguarded_reads
from ledger.core.facts import FactSpec
from ledger.core.policy.model import Effect, Policy, Rule
from ledger.core.text import clipped

__all__ = [
    "Impossible",
    "Overtaken",
    "overtaken_denials",
    "impossible_rules",
    "Shadowed",
    "shadowed_rules",
    "Unguarded",
    "unguarded_denials",
]

_ALWAYS: tuple[frozenset[str], ...] = (frozenset(),)


def _alternatives(rule: Rule) -> tuple[frozenset[str], ...]:
    return _ALWAYS if rule.when is None else _parsed(rule.when)


@functools.lru_cache(maxsize=4096)
def _parsed(when: str) -> tuple[frozenset[str], ...]:
    """A condition's alternatives, parsed once for every check of a file (parsing is the
    cost of the lint: each check parsed every condition again)."""
    return alternatives(when)


@dataclass(frozen=True, slots=True)
class Shadowed:
    """Rule number ``index`` (from 0; ``None``: the default) never matches: the rules numbered
    ``by`` match first every request it would match."""

    index: int | None
    by: tuple[int, ...]

    def message(self, policy: Policy) -> str:
        """The warning in a policy owner's words (said of the rule, which is named beside it)."""
        first = policy.rules[self.by[0]]
        if self.index is None:
            return (
                f"the default never decides: rule {first.id!r} matches every request (it has no "
                "when, or one that is always true)"
            )
        rule = policy.rules[self.index]
        names = ", ".join(repr(policy.rules[i].id) for i in self.by)
        if len(self.by) > 1:
            why = f"rules {names} before it match every request this one would"
        elif not all(_alternatives(first)):
            why = f"rule {names} before it matches every request"
        elif set(_alternatives(rule)) == set(_alternatives(first)):
            return (
                f"never matches: rule {names} before it has the same condition; keep one of the two"
            )
        else:
            why = f"rule {names} before it matches every request this one would"
        return (
            f"never matches: {why}; if it should decide those requests, put it before "
            f"{first.id!r}, else remove it"
        )


def shadowed_rules(policy: Policy) -> tuple[Shadowed, ...]:
    """Every rule of ``policy`` that earlier rules shadow (naming, for each of its alternatives,
    the first rule that covers it), then the default if a rule matches every request. Pure; the
    policy must be valid."""
    alts = [_alternatives(r) for r in policy.rules]
    found = [Shadowed(later, by) for later, by in _shadowing(alts)]
    catch_all = next((i for i, a in enumerate(alts) if not all(a)), None)
    if catch_all is not None:
        found.append(Shadowed(None, (catch_all,)))
    return tuple(found)


_Alternatives = tuple[frozenset[str], ...]


def _shadowing(alts: Sequence[_Alternatives]) -> Iterator[tuple[int, tuple[int, ...]]]:
    """``(rule, the earlier rules covering its alternatives)`` for each rule that earlier
    rules shadow, given each rule's alternatives. An earlier alternative covers a later one
    only if each of its terms is there, so each is filed under one of its terms (its rarest)
    and looked up by the later one's terms: about linear in the terms, where comparing every
    pair of rules took 3 s for 2,300 (a red team)."""
    uses = Counter(term for mine in alts for alt in mine for term in alt)
    filed: dict[str, list[tuple[int, frozenset[str]]]] = {}
    always: int | None = None  # the first rule with an alternative that always holds
    for later, mine in enumerate(alts):
        covering: list[int] = []
        for alt in mine:
            by = _first_covering(alt, filed, always)
            if by is None:
                break
            covering.append(by)
        else:
            yield later, tuple(sorted(set(covering)))
        for alt in mine:
            if not alt:
                always = later if always is None else always
            else:
                rarest = min(alt, key=lambda term: (uses[term], term))
                filed.setdefault(rarest, []).append((later, alt))


def _first_covering(
    alt: frozenset[str], filed: dict[str, list[tuple[int, frozenset[str]]]], always: int | None
) -> int | None:
    """The first earlier rule with an alternative whose terms ``alt`` all holds, or ``None``
    (each list in ``filed`` is in rule order, so its first match is its earliest)."""
    first = always
    for term in alt:
        for i, earlier in filed.get(term, ()):
            if first is not None and i >= first:
                break
            if earlier <= alt:
                first = i
                break
    return first


@dataclass(frozen=True, slots=True)
class Unguarded:
    """Deny rule number ``index`` (from 0) reads ``field``, an optional fact or
    ``context.NAME``, outside a ``has()`` guard: a request without it passes the rule."""

    index: int
    field: str

    def message(self) -> str:
        """The warning in a policy owner's words (said of the rule, which is named beside it)."""
        if self.field.startswith("context."):
            what = self.field
            without = f"whose context has no {self.field.removeprefix('context.')}"
        else:
            what, without = f"optional fact {self.field}", "without it"
        return (
            f"reads {what} outside has(): a request {without} does not match this deny rule "
            f"and goes on to the next rule or the default (to deny it, write "
            f"(!has({self.field}) || …) where it is read; to let it go on, "
            f"(has({self.field}) && …))"
        )


def unguarded_denials(policy: Policy) -> tuple[Unguarded, ...]:
    """Each deny rule's reads of an optional fact or a context field outside a ``has()`` guard,
    in rule order, each field once a rule. Pure; the policy must be valid."""
    optional = {name for name, spec in policy.facts.items() if spec.optional}
    found: list[Unguarded] = []
    for index, rule in enumerate(policy.rules):
        if rule.effect is not Effect.DENY or rule.when is None:
            continue
        compiled = rule.condition
        if compiled is not None and not (compiled.references & optional or compiled.context_fields):
            continue  # reads nothing that may be absent: no second parse
        found.extend(Unguarded(index, name) for name in unguarded_reads(rule.when, optional))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Overtaken:
    """Deny rule number ``index`` (from 0) comes after allow rule number ``by``, and the two
    conditions read no fact or context field in common: whatever each asks of its own, a request
    can meet both, and the allow rule, tried first, decides it."""

    index: int
    by: int

    def message(self, policy: Policy) -> str:
        """The warning in a policy owner's words (said of the deny rule, named beside it)."""
        first, later = policy.rules[self.by], policy.rules[self.index]
        return (
            f"a request that also meets allow rule {first.id!r} before it ({_shown(first)}) is "
            f"allowed there, whatever this rule says ({_shown(later)}): they read different "
            f"facts, so such requests exist; if this rule must deny them, put it before "
            f"{first.id!r}"
        )


def _shown(rule: Rule) -> str:
    """A rule's condition in a warning: on one line, and cut (a condition may be 4,096
    characters of several lines)."""
    return clipped(" ".join((rule.when or "").split()), 120)


def overtaken_denials(policy: Policy) -> tuple[Overtaken, ...]:
    """Each deny rule an earlier allow rule overtakes on some requests (:class:`Overtaken`,
    the first such allow rule), the deny rules that never match left to
    :func:`shadowed_rules`. Conditions are compared by what they read, not by their terms, so
    only rules that read nothing in common are found (a policy owner's walkthrough: `small`
    (`amount <= 100`, allow) put before `blocked-region` (`region == "RU"`, deny) allowed small
    refunds to the sanctioned region, and `validate` said `ok`). Pure; the policy must be
    valid."""
    never = {found.index for found in shadowed_rules(policy)}
    never |= {found.index for found in impossible_rules(policy)}  # such allow rules allow none
    read: list[frozenset[str] | None] = []
    for rule in policy.rules:
        compiled = rule.condition
        names = None if compiled is None else compiled.references | compiled.context_fields
        read.append(names or None)  # no condition, or one that reads nothing: not compared
    found: list[Overtaken] = []
    for index, rule in enumerate(policy.rules):
        mine = read[index]
        if rule.effect is not Effect.DENY or mine is None or index in never:
            continue
        for by in range(index):
            theirs = read[by]
            allows = policy.rules[by].effect is Effect.ALLOW and by not in never
            if allows and theirs and not theirs & mine:
                found.append(Overtaken(index, by))
                break
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Impossible:
    """Rule number ``index`` (from 0) never matches: each of its alternatives bounds a fact
    by numbers no value meets; ``low`` and ``high`` are the first such pair, as written."""

    index: int
    low: str
    high: str

    def message(self) -> str:
        """The warning in a policy owner's words (said of the rule, which is named beside it)."""
        if _DECLARED in self.low or _DECLARED in self.high:
            return (
                f"never matches: no value is both {self.low} and {self.high}: requests "
                "outside the declared bounds are refused before any rule is read; check the "
                "number, or the fact's min/max"
            )
        return (
            f"never matches: no value is both {self.low} and {self.high}; did you mean || "
            "(either one), or the other comparison?"
        )


_DECLARED: Final = "(its declared "


_BOUND: Final = re.compile(
    r"relation\(relation_(lt|le|gt|ge|eq)\("
    r"(?:ident\((\w+)\)|literal\((-?[0-9]{1,40}(?:\.[0-9]{1,40})?)\))\),"
    r"(?:ident\((\w+)\)|literal\((-?[0-9]{1,40}(?:\.[0-9]{1,40})?)\))\)"
)
_FLIPPED: Final = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq"}
_SYMBOL: Final = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}


def _declared(bound: int | Decimal | float | None, kind: str) -> Decimal | float | None:
    """A fact's declared ``min`` or ``max`` as :func:`_clash` compares numbers of its type."""
    if bound is None:
        return None
    return float(bound) if kind == "float" else Decimal(bound)


def impossible_rules(policy: Policy) -> tuple[Impossible, ...]:
    """Every rule of ``policy`` whose every alternative bounds some fact by numbers no value
    meets (``amount < 10 && amount > 50``). Pure; the policy must be valid."""
    found = []
    for index, rule in enumerate(policy.rules):
        if rule.when is None:
            continue
        clashes = [_clash(alt, policy.facts) for alt in _alternatives(rule)]
        first = clashes[0] if clashes else None
        if first is not None and all(c is not None for c in clashes):
            found.append(Impossible(index, *first))
    return tuple(found)


def _clash(terms: frozenset[str], facts: Mapping[str, FactSpec]) -> tuple[str, str] | None:
    """Two of ``terms`` (an alternative) that bound one fact so that no value meets both, as
    written, or ``None``. Numbers compare as the runtime compares them with the fact: exactly
    for a decimal, as binary floats for a float, and for an int only whole numbers are read
    (a review: a literal past a double's digits was warned of, and matched)."""
    lows: dict[str, tuple[Decimal | float, bool, str]] = {}  # fact: (bound, inclusive, text)
    highs: dict[str, tuple[Decimal | float, bool, str]] = {}
    for term in sorted(terms):
        bound = _BOUND.fullmatch(term)
        if bound is None:
            continue
        op, left, left_number, right, right_number = bound.groups()
        if left is not None and right_number is not None:
            name, number = left, right_number
        elif left_number is not None and right is not None:
            name, number, op = right, left_number, _FLIPPED[op]
        else:
            continue
        kind = facts[name].type if name in facts else None
        if kind == "decimal" or (kind == "int" and "." not in number):
            value: Decimal | float = Decimal(number)
        elif kind == "float":
            value = float(number)
        else:  # context, an int against a fraction, other types: not read
            continue
        written = f"{name} {_SYMBOL[op]} {number}"
        if op in ("gt", "ge", "eq"):
            low = lows.get(name)
            if low is None or value > low[0] or (value == low[0] and op == "gt"):
                lows[name] = (value, op != "gt", written)
        if op in ("lt", "le", "eq"):
            high = highs.get(name)
            if high is None or value < high[0] or (value == high[0] and op == "lt"):
                highs[name] = (value, op != "lt", written)
    # An auditor's walkthrough: `sent_today < 0` of a fact declared `min: 0` was valid without
    # a word; a request outside the declared bounds is invalid_facts before any rule is read.
    for name in {*lows, *highs}:
        spec = facts[name]
        floor, ceiling = _declared(spec.minimum, spec.type), _declared(spec.maximum, spec.type)
        low, high = lows.get(name), highs.get(name)
        if floor is not None and (low is None or floor > low[0]):
            lows[name] = (floor, True, f"{name} >= {spec.minimum} {_DECLARED}min)")
        if ceiling is not None and (high is None or ceiling < high[0]):
            highs[name] = (ceiling, True, f"{name} <= {spec.maximum} {_DECLARED}max)")
    for name, (least, least_in, least_text) in lows.items():
        above = highs.get(name)
        if above is None:
            continue
        most, most_in, most_text = above
        if least > most or (least == most and not (least_in and most_in)):
            return least_text, most_text
    return None
