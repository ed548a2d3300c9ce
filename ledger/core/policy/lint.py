"""Rules that can never match: an earlier rule matches every request they would.

Rules are tried in order and the first that matches decides, so a rule whose condition joins,
with ``&&``, every term of an earlier rule's condition (and maybe more) never matches: a request
it matches, the earlier one matched first. This holds whatever the facts: a term that needs an
absent fact leaves both rules unmatched, and a fault in the earlier rule's term decides ``error``
before the later rule is tried. A rule with no ``when`` (or ``when: true``) matches every
request, so nothing after it matches, and the ``default`` never decides.

The check compares terms as written (layout aside): ``amount > 100`` and ``100 < amount`` are
different terms to it, so it finds the shadowing that the order of rules makes, not every rule
that logic could prove dead. A finding is a warning, not a problem: the version is valid and
decides as written; the rule is most likely in the wrong place.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.core.cel import conjuncts
from ledger.core.policy.model import Policy

__all__ = ["Shadowed", "shadowed_rules"]


@dataclass(frozen=True, slots=True)
class Shadowed:
    """Rule number ``index`` (from 0; ``None``: the default) never matches: rule number ``by``
    matches first every request it would match."""

    index: int | None
    by: int

    def message(self, policy: Policy) -> str:
        """The warning in a policy owner's words (said of the rule, which is named beside it)."""
        by = policy.rules[self.by]
        if self.index is None:
            return (
                f"the default never decides: rule {by.id!r} matches every request (it has no "
                "when, or one that is always true)"
            )
        rule = policy.rules[self.index]
        if by.when is None or not conjuncts(by.when):
            why = f"rule {by.id!r} before it matches every request"
        elif rule.when is not None and conjuncts(rule.when) == conjuncts(by.when):
            why = f"rule {by.id!r} before it has the same condition"
        else:
            why = (
                f"rule {by.id!r} before it matches every request this one would (its condition "
                "is part of this one's)"
            )
        return f"never matches: {why}; move it above {by.id!r}, or remove it"


def shadowed_rules(policy: Policy) -> tuple[Shadowed, ...]:
    """Every rule of ``policy`` an earlier rule shadows (each named once, by the first such
    rule), then the default if a rule matches every request. Pure; the policy must be valid."""
    terms = [frozenset() if r.when is None else conjuncts(r.when) for r in policy.rules]
    found: list[Shadowed] = []
    for later, mine in enumerate(terms):
        by = next((i for i in range(later) if terms[i] <= mine), None)
        if by is not None:
            found.append(Shadowed(later, by))
    catch_all = next((i for i, t in enumerate(terms) if not t), None)
    if catch_all is not None:
        found.append(Shadowed(None, catch_all))
    return tuple(found)
