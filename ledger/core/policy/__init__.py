"""Policy documents: parsing, validation, canonical form, and the compiled decision function.

A policy arrives as YAML text (:func:`parse_policy`) or as its canonical JSON text as stored in
``PolicyVersionProposed.document`` (:meth:`Policy.from_canonical`). Both go through the same
validation, which collects *every* problem (with file, rule id, field, line and column where the
input allows) and raises one :class:`~ledger.errors.PolicyError`. Nothing else escapes, whatever
the input.

Both are bounded before the expensive work (STYLE §16, :mod:`ledger.core.limits`): the text's
size first; YAML is composed once by a loader that counts nesting, aliases and the nodes the
aliases expand to, and stops at the first bound crossed, so a 400-byte alias bomb is refused
after a few hundred nodes instead of growing to billions; canonical JSON has its nesting measured
before it is parsed.

The canonical form is deterministic JSON (sorted keys, compact separators, no ``tests`` block);
``content_hash`` is ``sha256:<hex>`` of its UTF-8 bytes. Two documents that differ only in
layout, comments, key order or shorthand have the same canonical form and hash.

A loaded :class:`Policy` carries its conditions already compiled and its fact checker built, so
:meth:`Policy.run` is the whole per-request cost of a policy.

One concept per module; each imports only those before it (a test enforces it):

- :mod:`.model` — the frozen values (:class:`Policy`, :class:`Rule`, ...) and reason codes;
- :mod:`.canonical` — canonical text and content hash;
- :mod:`.runner` — the compiled decision function under the evaluation budget;
- :mod:`.validate` — problems collected with their positions; builds the :class:`Policy`;
- :mod:`.lint` — warnings for the policy owner: rules that can never match, deny rules a
  request passes by leaving out a field they read;
- :mod:`.source` — bounded YAML and canonical-JSON loading, the entry points.

This package's public API is :data:`__all__`; the modules' other names are its internals.
"""

from ledger.core.policy.model import (
    REASON_BUDGET_EXCEEDED,
    REASON_CONDITION_ERROR,
    REASON_DEFAULT,
    REASON_INVALID_FACTS,
    REASON_RULE_MATCHED,
    DefaultDecision,
    Effect,
    Policy,
    PolicyOutcome,
    PolicyTestCase,
    Rule,
)
from ledger.core.policy.source import (
    check_policy,
    load_yaml,
    parse_policy,
    parse_test_cases,
    read_test_cases,
)

__all__ = [
    "Effect",
    "Rule",
    "DefaultDecision",
    "PolicyTestCase",
    "PolicyOutcome",
    "Policy",
    "parse_policy",
    "check_policy",
    "parse_test_cases",
    "read_test_cases",
    "load_yaml",
    "REASON_RULE_MATCHED",
    "REASON_DEFAULT",
    "REASON_INVALID_FACTS",
    "REASON_CONDITION_ERROR",
    "REASON_BUDGET_EXCEEDED",
]
